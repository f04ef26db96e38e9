"""Running the example DAG under Airflow (``airflow dags test``) for the fault matrix, and reading what it left.

The DAG file is copied with its retry delay shortened from a minute to a second, so that Airflow's own
retries happen within a test; everything else is the example DAG as users get it.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox.harness import DEMO_KLAVIYO_KEY, REPO, AirflowEnvironment, evolve_data
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import ExpectedKlaviyo, expected_from_export, export_emails
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches

DAG_FILE = REPO / "dags" / "nosto_klaviyo_segment_sync.py"
RETRY_DELAY = '"retry_delay": timedelta(minutes=1)'


def fast_retry_environment(sandbox: Sandbox, data: Path, root: Path) -> AirflowEnvironment:
    """A migrated Airflow home of its own under ``root`` running the example DAG with a one-second retry
    delay against ``sandbox``, which is reset and loaded with ``data``."""
    source = DAG_FILE.read_text()
    assert RETRY_DELAY in source, "the example DAG's retry delay moved; update this helper"
    dags = root / "dags"
    dags.mkdir(parents=True)
    (dags / DAG_FILE.name).write_text(source.replace(RETRY_DELAY, '"retry_delay": timedelta(seconds=1)'))

    sandbox.reset()
    sandbox.load_export(data)
    requests.put(
        f"{sandbox.klaviyo}/__sandbox/config", json={"job_delay_base": 0.05}, timeout=30
    ).raise_for_status()
    catalogue = json.loads((data / "catalogue.json").read_text())
    airflow = AirflowEnvironment(
        home=root / "airflow",
        klaviyo_url=sandbox.klaviyo,
        nosto_url=sandbox.nosto,
        config={"segments": [s["id"] for s in catalogue], "state_uri": f"file://{root / 'state'}"},
        extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
    )
    airflow.setup()
    return airflow


@dataclass
class StoredRun:
    """What the latest DAG run left in the metadata database."""

    #: ``task_id[map_index]`` -> (try number, state)
    tasks: dict[str, tuple[int, str]]
    xcoms: list[Any]
    rendered: list[Any]

    def failed(self) -> list[str]:
        return sorted(task for task, (_try, state) in self.tasks.items() if state.endswith("failed"))

    def all_succeeded(self) -> bool:
        """Every task succeeded; the run's failure check is skipped when no push failed."""
        return all(
            state.endswith("success")
            or (task.startswith("fail_if_a_push_failed") and state.endswith("skipped"))
            for task, (_try, state) in self.tasks.items()
        )


def stored_run(airflow: AirflowEnvironment) -> StoredRun:
    """Every task instance's try number and state, every XCom value and every rendered template field of
    the latest run, read in one process."""
    script = (
        "import json\n"
        "from sqlalchemy import select\n"
        "from airflow.models.dagrun import DagRun\n"
        "from airflow.models.taskinstance import TaskInstance as TI\n"
        "from airflow.models.xcom import XComModel as X\n"
        "from airflow.models.renderedtifields import RenderedTaskInstanceFields as R\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        "    run = s.scalars(select(DagRun).order_by(DagRun.id.desc()).limit(1)).first()\n"
        "    tis = s.execute(select(TI.task_id, TI.map_index, TI.try_number, TI.state)"
        ".where(TI.run_id == run.run_id)).all()\n"
        "    xcoms = [r.value for r in s.scalars(select(X).where(X.run_id == run.run_id)).all()]\n"
        "    rendered = [r.rendered_fields for r in s.scalars(select(R).where(R.run_id == run.run_id)).all()]\n"
        "print('RESULT-JSON' + json.dumps({'tis': [[f'{t[0]}[{t[1]}]', t[2], str(t[3])] for t in tis],"
        " 'xcoms': xcoms, 'rendered': rendered}, default=str))\n"
    )
    completed = subprocess.run(
        [airflow.python, "-c", script],
        env=airflow.env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT-JSON"))
    found = json.loads(line.removeprefix("RESULT-JSON"))
    return StoredRun(
        tasks={task: (tries, state) for task, tries, state in found["tis"]},
        xcoms=found["xcoms"],
        rendered=found["rendered"],
    )


def assert_run_leaks_nothing(
    airflow: AirflowEnvironment, run_output: str, stored: StoredRun, export: Path
) -> None:
    """No key in the run's output, task logs, XCom or rendered templates; no email of ``export`` there at
    INFO or above, plain or URL-encoded."""
    assert stored.rendered, "no rendered template fields were stored: the scan would prove nothing"
    texts = {"cli": run_output}
    for path in (airflow.home / "logs").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    xcom = json.dumps(stored.xcoms)
    texts["xcom"] = xcom
    texts["rendered templates"] = json.dumps(stored.rendered)
    assert "@" not in xcom
    assert [where for where, text in texts.items() if DEMO_KLAVIYO_KEY in text] == []
    emails = export_emails(export)
    pattern = re.compile("|".join(re.escape(e) for e in sorted(emails, key=len, reverse=True)))
    leaks = [
        (where, line[:80])
        for where, text in texts.items()
        for line in text.splitlines()
        if "[debug" not in line and " DEBUG " not in line and pattern.search(line)
    ]
    assert leaks == [], "an email address appears at INFO or above (shown truncated)"


@dataclass
class SyncedAccount:
    """An Airflow home whose first DAG run synced ``data``; the sandbox now serves the next day's export."""

    airflow: AirflowEnvironment
    sandbox: Sandbox
    data: Path
    next_day: Path
    state: Path

    @property
    def names(self) -> set[str]:
        return {segment["name"] for segment in json.loads((self.data / "catalogue.json").read_text())}

    def expected(self, data: Path) -> ExpectedKlaviyo:
        return expected_from_export(data / "export.jsonl.gz", self.names)

    def klaviyo_held(self) -> dict[str, Any]:
        state = self.sandbox.state()
        return {"profiles": state["profiles"], "lists": state["lists"]}

    def state_files(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.state)): path.read_bytes()
            for path in self.state.rglob("*")
            if path.is_file()
        }

    def run(self, conf: dict[str, Any] | None = None) -> tuple[int, str, StoredRun]:
        """Run the DAG once (with ``conf`` as the run's params) and check that it leaked nothing."""
        run = self.airflow.run_dag(conf, check=False)
        output = run.output
        stored = stored_run(self.airflow)
        assert_run_leaks_nothing(self.airflow, output, stored, self.next_day / "export.jsonl.gz")
        assert_run_leaks_nothing(self.airflow, output, stored, self.data / "export.jsonl.gz")
        return run.returncode, output, stored


def synced_account(sandbox: Sandbox, data: Path, root: Path) -> SyncedAccount:
    """Sync ``data`` with a first DAG run, check it, and serve the next day's export."""
    airflow = fast_retry_environment(sandbox, data, root)
    # A short read timeout, so that a delayed answer is a read timeout within seconds.
    airflow.extra_env["AIRFLOW_CONN_KLAVIYO_DEFAULT"] = json.dumps(
        {
            "conn_type": "klaviyo",
            "host": sandbox.klaviyo,
            "password": DEMO_KLAVIYO_KEY,
            "extra": {"timeout": [5, 2]},
        }
    )
    # The next day's export takes up to about 12% from a segment of a few dozen members; half an export
    # takes about half of every segment.
    airflow.config["removal_threshold"] = 0.3
    airflow.run_dag()
    next_day = evolve_data(data, root / "next-day", seed=32)
    synced = SyncedAccount(airflow, sandbox, data, next_day, root / "state")
    assert_klaviyo_matches(sandbox.state(), synced.expected(data))
    sandbox.load_export(next_day)
    return synced
