"""The example DAG, run by Airflow, converges through Airflow's own task retries, and leaks nothing.

Faults whose cure is Airflow retrying the task (a ``Retry-After`` longer than a task should sleep, a
cancelled bulk job) are injected together into one ``airflow dags test`` run of the example DAG, with the
DAG's retry delay shortened from a minute to a second so that the retries happen within the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.harness import AirflowEnvironment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import expected_from_export
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches, assert_protocol_clean
from tests.faults.dag_runs import assert_run_leaks_nothing, fast_retry_environment, stored_run


@pytest.fixture
def fast_retry_airflow(fault_sandbox: Sandbox, fault_data: Path, tmp_path: Path) -> AirflowEnvironment:
    return fast_retry_environment(fault_sandbox, fault_data, tmp_path)


def test_faults_cured_by_airflow_retries_converge_in_one_dag_run_without_leaks(
    fast_retry_airflow: AirflowEnvironment, fault_sandbox: Sandbox, fault_data: Path
) -> None:
    airflow = fast_retry_airflow
    bulk = "^/api/profile-bulk-import-jobs$"
    fault_sandbox.add_fault(
        {"kind": "status", "method": "POST", "path": bulk, "status": 429, "retry_after": 3600, "times": 1}
    )
    fault_sandbox.add_fault({"kind": "job_cancel", "times": 1})
    fault_sandbox.add_fault(
        {"kind": "status", "method": "GET", "path": "^/api/lists$", "status": 503, "times": 1}
    )

    run = airflow.run_dag(check=False)

    assert run.returncode == 0, run.output[-3000:]
    output = run.output
    assert "asked to wait 3600 s" in output
    assert "cancelled bulk import job" in output
    stored = stored_run(airflow)
    assert stored.all_succeeded(), stored.tasks
    tries = {task: count for task, (count, _state) in stored.tasks.items()}
    assert tries["fail_if_a_push_failed[-1]"] == 0, "no push failed, so the run's failure check never ran"
    retried = sorted(task for task, count in tries.items() if count > 1)
    assert retried, f"no task needed an Airflow retry: {tries}"
    assert all(task.startswith("push_segment") for task in retried)
    assert tries["plan_sync[-1]"] == 1, "the 503 on a read was retried inside the task"

    chosen = {segment["name"] for segment in json.loads((fault_data / "catalogue.json").read_text())}
    assert_klaviyo_matches(
        fault_sandbox.state(), expected_from_export(fault_data / "export.jsonl.gz", chosen)
    )
    assert_protocol_clean(fault_sandbox)
    # Keys and emails: nowhere in the run's output, task logs, XCom or rendered templates.
    assert_run_leaks_nothing(airflow, output, stored, fault_data / "export.jsonl.gz")
