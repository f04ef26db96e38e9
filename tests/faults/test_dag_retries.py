"""The example DAG, run by Airflow, converges through Airflow's own task retries, and leaks nothing.

Faults whose cure is Airflow retrying the task (a ``Retry-After`` longer than a task should sleep, a
cancelled bulk job) are injected together into one ``airflow dags test`` run of the example DAG, with the
DAG's retry delay shortened from a minute to a second so that the retries happen within the test.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from sandbox.harness import DEMO_KLAVIYO_KEY, REPO, AirflowEnvironment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import expected_from_export
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches, assert_protocol_clean
from tests.faults.conftest import export_emails

DAG_FILE = REPO / "dags" / "nosto_klaviyo_segment_sync.py"
RETRY_DELAY = '"retry_delay": timedelta(minutes=1)'


@pytest.fixture
def fast_retry_airflow(fault_sandbox: Sandbox, fault_data: Path, tmp_path: Path) -> AirflowEnvironment:
    """The example DAG with a one-second retry delay, in a migrated Airflow home of its own."""
    source = DAG_FILE.read_text()
    assert RETRY_DELAY in source, "the example DAG's retry delay moved; update this test"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / DAG_FILE.name).write_text(source.replace(RETRY_DELAY, '"retry_delay": timedelta(seconds=1)'))

    fault_sandbox.reset()
    fault_sandbox.load_export(fault_data)
    requests.put(
        f"{fault_sandbox.klaviyo}/__sandbox/config", json={"job_delay_base": 0.05}, timeout=30
    ).raise_for_status()
    catalogue = json.loads((fault_data / "catalogue.json").read_text())
    airflow = AirflowEnvironment(
        home=tmp_path / "airflow",
        klaviyo_url=fault_sandbox.klaviyo,
        nosto_url=fault_sandbox.nosto,
        config={"segments": [s["id"] for s in catalogue], "state_uri": f"file://{tmp_path / 'state'}"},
        extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
    )
    airflow.setup()
    return airflow


def tries_and_stored(airflow: AirflowEnvironment) -> tuple[dict[str, int], list[object], list[object]]:
    """Every task instance's try number (all must have succeeded), every XCom value and every rendered
    template field, read in one process."""
    script = (
        "import json\n"
        "from sqlalchemy import select\n"
        "from airflow.models.taskinstance import TaskInstance\n"
        "from airflow.models.xcom import XComModel\n"
        "from airflow.models.renderedtifields import RenderedTaskInstanceFields\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        "    tis = s.execute(select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.try_number,"
        " TaskInstance.state)).all()\n"
        "    xcoms = [row.value for row in s.scalars(select(XComModel)).all()]\n"
        "    rendered = [row.rendered_fields for row in s.scalars(select(RenderedTaskInstanceFields)).all()]\n"
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
    # Every task succeeded; the run's failure check is skipped when nothing failed.
    assert all(
        state.endswith("success") or (task.startswith("fail_if_a_push_failed") and state.endswith("skipped"))
        for task, _try, state in found["tis"]
    ), found["tis"]
    assert found["rendered"], "no rendered template fields were stored: the scan would prove nothing"
    return {task: tries for task, tries, _state in found["tis"]}, found["xcoms"], found["rendered"]


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
    tries, xcoms, rendered = tries_and_stored(airflow)
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
    texts = {"cli": output}
    for path in (airflow.home / "logs").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    xcom = json.dumps(xcoms)
    texts["xcom"] = xcom
    texts["rendered templates"] = json.dumps(rendered)
    assert "@" not in xcom
    assert [where for where, text in texts.items() if DEMO_KLAVIYO_KEY in text] == []
    emails = export_emails(fault_data / "export.jsonl.gz")
    pattern = re.compile("|".join(re.escape(e) for e in sorted(emails, key=len, reverse=True)))
    leaks = [
        (where, line[:80])
        for where, text in texts.items()
        for line in text.splitlines()
        if "[debug" not in line and " DEBUG " not in line and pattern.search(line)
    ]
    assert leaks == [], "an email address appears at INFO or above (shown truncated)"
