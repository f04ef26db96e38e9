"""The fault matrix: the provider's operators and hooks, run in this process against the sandbox with faults.

Starting Airflow for every fault would take most of a minute each, so each test runs the plan and push
operators in-process as a worker runs them (``execute``, and for deferrable pushes the trigger and
``execute_complete``), with the real hooks talking HTTP to the sandbox. Where Airflow's own retry is the
mechanism, a test runs the task again as Airflow's retry would (same operator, same spec); the example DAG
itself, with real retries, is run in ``test_dag_retries.py``.

Every log record at INFO or above, and every error text, of every test here is scanned for the API key and
for every email of the export, plain and URL-encoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator
from airflow_provider_klaviyo_nosto.state_store import StateStore
from sandbox.harness import DEMO_KLAVIYO_KEY, DEMO_NOSTO_APPS_TOKEN, DEMO_NOSTO_EXPORT_TOKEN, generate_data
from sandbox.runner import running_sandbox
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import ExpectedKlaviyo, expected_from_export, export_emails
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches, assert_protocol_clean
from tests.faults.dag_runs import SyncedAccount, synced_account

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

#: A few hundred contacts: several segments and bulk jobs, and the whole matrix stays within minutes.
CONTACTS = 300
SEGMENTS = 4
#: Profiles per bulk job, so that every push sends a few jobs and a fault can hit one of them.
BATCH = 60


@pytest.fixture(scope="session")
def fault_sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as urls:
        yield Sandbox(urls.klaviyo, urls.nosto)


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_data(tmp_path_factory.mktemp("fault-data"), contacts=CONTACTS, segments=SEGMENTS, seed=31)


@dataclass
class FaultWorld:
    """A clean sandbox loaded with the export, connections pointing at it, and an empty applied state."""

    sandbox: Sandbox
    data: Path
    state: Path
    config: dict[str, Any]
    errors: list[str] = field(default_factory=list)

    @property
    def catalogue(self) -> list[dict[str, str]]:
        catalogue: list[dict[str, str]] = json.loads((self.data / "catalogue.json").read_text())
        return catalogue

    def expected(self, export: Path | None = None) -> ExpectedKlaviyo:
        names = {segment["name"] for segment in self.catalogue}
        return expected_from_export(export or self.data / "export.jsonl.gz", names)

    def plan(self) -> list[dict[str, Any]]:
        operator = NostoSegmentSyncOperator(task_id="plan_sync", config_variable="", defaults=self.config)
        specs: list[dict[str, Any]] = operator.execute({})  # type: ignore[arg-type, assignment]
        return specs

    def push(
        self,
        spec: dict[str, Any],
        *,
        deferrable: bool = False,
        job_timeout: timedelta = timedelta(minutes=2),
        batch: int = BATCH,
    ) -> dict[str, Any]:
        """Run one push task as a worker would; a deferred one resumes after its trigger, as in Airflow."""
        operator = KlaviyoSegmentPushOperator(
            task_id="push_segment",
            push=spec,
            deferrable=deferrable,
            poll_interval=0.1,
            job_timeout=job_timeout,
            max_batch_profiles=batch,
        )
        context: Any = {}
        try:
            return operator.execute(context)
        except TaskDeferred as deferred:
            event = asyncio.run(_first_event(deferred.trigger))
            resumed: dict[str, Any] = getattr(operator, deferred.method_name)(context, event=event)
            return resumed

    def sync(self) -> list[dict[str, Any]]:
        return [self.push(spec) for spec in self.plan()]

    def sync_with_task_retries(self, retries: int = 2, **push_options: Any) -> list[dict[str, Any]]:
        """Plan, then run each push, running a failed one again as Airflow's retry would (same spec).

        Error texts of the failed tries are kept in :attr:`errors`. An ``AirflowFailException`` is raised at
        once, as Airflow spends no retry on it.
        """
        summaries = []
        for spec in self.plan():
            for attempt in range(retries + 1):
                try:
                    summaries.append(self.push(spec, **push_options))
                    break
                except Exception as failure:
                    self.errors.append(f"{type(failure).__name__}: {failure}")
                    if attempt == retries or isinstance(failure, AirflowFailException):
                        raise
        return summaries

    def fails(self, action: Callable[[], Any], error: type[BaseException] = Exception) -> str:
        """Run ``action``, which must fail with ``error``; return the error text (kept for the leak scan)."""
        with pytest.raises(error) as failure:
            action()
        text = f"{type(failure.value).__name__}: {failure.value}"
        self.errors.append(text)
        return text

    def assert_converged(self, export: Path | None = None) -> None:
        assert_klaviyo_matches(self.sandbox.state(), self.expected(export))
        assert_protocol_clean(self.sandbox)

    def diff_kept(self, spec: dict[str, Any]) -> bool:
        """Whether the push's diff is still there for a retry (it is deleted once applied)."""
        return StateStore(spec["state_uri"]).diff_path(spec["generation"], spec["key"]).exists()

    def fired(self) -> list[str]:
        """The kinds of the faults that acted, one entry per request they acted on."""
        return [entry["fault"] for entry in self.sandbox.requests_log() if entry.get("fault")]

    def klaviyo_calls(self, status: int | None = None) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.sandbox.requests_log()
            if entry["path"].startswith("/api/") and (status is None or entry["status"] == status)
        ]


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


@pytest.fixture
def world(
    fault_sandbox: Sandbox,
    fault_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[FaultWorld]:
    fault_sandbox.reset()
    fault_sandbox.load_export(fault_data)
    # Jobs finish quickly; rate limits stay at Klaviyo's documented values.
    put_config(fault_sandbox, {"job_delay_base": 0.05, "job_delay_per_1000": 0.05})
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT",
        # A short read timeout so that the read-timeout faults take seconds, not minutes.
        json.dumps(
            {
                "conn_type": "klaviyo",
                "host": fault_sandbox.klaviyo,
                "password": DEMO_KLAVIYO_KEY,
                "extra": {"timeout": [5, 2]},
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOSTO_DEFAULT",
        json.dumps(
            {
                "conn_type": "nosto",
                "host": fault_sandbox.nosto,
                "password": DEMO_NOSTO_APPS_TOKEN,
                "extra": {"export_token": DEMO_NOSTO_EXPORT_TOKEN},
            }
        ),
    )
    config = {
        "segments": [segment["id"] for segment in json.loads((fault_data / "catalogue.json").read_text())],
        "state_uri": f"file://{tmp_path / 'state'}",
        # One slot: each task may use the whole documented limit, so the matrix does not wait on pacing;
        # test_pacing.py runs pushes side by side with the example DAG's four slots.
        "klaviyo_pool_slots": 1,
    }
    caplog.set_level(logging.INFO)
    world = FaultWorld(fault_sandbox, fault_data, tmp_path / "state", config)
    yield world

    # Whatever the fault, every request the hooks sent was one Klaviyo's schema accepts.
    assert_protocol_clean(fault_sandbox)
    fault_sandbox.clear_faults()
    requests.delete(f"{fault_sandbox.nosto}/__sandbox/faults", timeout=30).raise_for_status()
    # Task logs go through Airflow's structlog set-up to stdout here, stdlib records to caplog.
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    records = [(r.levelname, _record_text(r)) for r in caplog.records if r.levelno >= logging.INFO]
    # Written back so that a failing test still shows its log.
    sys.stdout.write(captured.out)
    assert_no_secret_or_email(world, lines, records, export_emails(fault_data / "export.jsonl.gz"))


@pytest.fixture(scope="module")
def account(
    fault_sandbox: Sandbox, fault_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncedAccount]:
    """For the DAG-run modules: an account their first DAG run synced, serving the next day's export."""
    yield synced_account(fault_sandbox, fault_data, tmp_path_factory.mktemp("dag-account"))
    fault_sandbox.clear_faults()
    requests.delete(f"{fault_sandbox.nosto}/__sandbox/faults", timeout=30).raise_for_status()


def put_config(sandbox: Sandbox, changes: dict[str, Any]) -> None:
    requests.put(f"{sandbox.klaviyo}/__sandbox/config", json=changes, timeout=30).raise_for_status()


def assert_no_secret_or_email(
    world: FaultWorld, lines: list[str], records: list[tuple[str, str]], emails: set[str]
) -> None:
    """No key or token anywhere, and no email at INFO or above, in the logs and error texts of the test."""
    pattern = re.compile("|".join(re.escape(e) for e in sorted(emails, key=len, reverse=True)))
    texts = [("LOG", line) for line in lines if not _below_info(line)] + records
    assert any("Klaviyo" in text or "Nosto" in text for _level, text in texts), (
        "no log line of the provider was captured: the scan would prove nothing"
    )
    texts += [("ERROR", text) for text in world.errors]
    for secret in (DEMO_KLAVIYO_KEY, DEMO_NOSTO_APPS_TOKEN, DEMO_NOSTO_EXPORT_TOKEN):
        assert not [text for _level, text in texts if secret in text], "a key or token appears in a log"
    leaks = [(level, text[:100]) for level, text in texts if pattern.search(text)]
    assert leaks == [], "an email appears in a log at INFO or above or in an error (shown truncated)"


def _below_info(line: str) -> bool:
    return "[debug" in line or " DEBUG " in line


def _record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return text
