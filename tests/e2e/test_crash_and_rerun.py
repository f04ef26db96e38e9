"""A push killed half-way, or run twice, converges to the right Klaviyo state and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox.harness import REPO, AirflowEnvironment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import expected_from_export
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches, chosen_names

pytestmark = pytest.mark.e2e

RUNNER = REPO / "tests" / "e2e" / "run_operator.py"
BATCH = 200


def start(airflow: AirflowEnvironment, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *args],
        env=airflow.env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def result(process: subprocess.Popen[str]) -> Any:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    line = next(line for line in output.splitlines() if line.startswith("RESULT-JSON"))
    return json.loads(line.removeprefix("RESULT-JSON"))


def accepted_jobs(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [
        entry
        for entry in sandbox.requests_log()
        if entry["method"] == "POST"
        and entry["path"] == "/api/profile-bulk-import-jobs"
        and entry["status"] == 202
    ]


def test_push_killed_after_its_first_job_then_rerun_converges(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    first, _ = generated
    specs = result(start(airflow, "plan", json.dumps(airflow.config)))
    biggest = max(specs, key=lambda spec: spec["contacts_to_write"])
    batches = -(-biggest["contacts_to_write"] // BATCH)
    assert batches >= 3, "the test needs a push with several bulk jobs"

    # Every bulk import POST takes a while to answer, so the kill lands while the second is in flight.
    sandbox.add_fault(
        {"kind": "delay", "method": "POST", "path": "/api/profile-bulk-import-jobs", "seconds": 2}
    )
    mark = sandbox.write_mark()
    worker = start(airflow, "push", json.dumps([biggest]), str(BATCH))
    deadline = time.monotonic() + 60
    while not accepted_jobs(sandbox):
        assert time.monotonic() < deadline, "the first bulk job was never accepted"
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    sandbox.clear_faults()

    rerun, again = result(start(airflow, "push", json.dumps([biggest, biggest]), str(BATCH)))
    assert rerun["written"] == biggest["contacts_to_write"]
    assert again.get("written") is None
    assert again["outcome"] == "nothing_to_do"

    result(start(airflow, "push", json.dumps([spec for spec in specs if spec["key"] != biggest["key"]])))

    expected = expected_from_export(first / "export.jsonl.gz", chosen_names(first))
    assert_klaviyo_matches(sandbox.state(), expected)
    writes = Counter(write["email"] for write in sandbox.writes(mark))
    first_job = accepted_jobs(sandbox)[0]
    assert first_job["status"] == 202
    # The job accepted before the kill was waited for, not resubmitted: nobody was imported three times,
    # and the killed task's first batch was imported exactly once.
    assert max(writes.values()) <= 2
    assert sum(1 for count in writes.values() if count == 1) >= BATCH


def test_a_push_run_again_after_success_changes_nothing(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    specs = result(start(airflow, "plan", json.dumps(airflow.config)))
    result(start(airflow, "push", json.dumps(specs)))
    before = sandbox.state()
    mark = len(sandbox.requests_log())

    for summary in result(start(airflow, "push", json.dumps(specs))):
        assert summary["outcome"] == "nothing_to_do"

    assert [e for e in sandbox.requests_log(since=mark) if e["method"] != "GET"] == []
    assert sandbox.state()["profiles"] == before["profiles"]
