"""One segment's pushes fail in the deployment; clearing that one task instance through the REST API fixes it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.conftest import catalogue, start_fresh
from tests.deployment.deployment import DAG_ID, AirflowDeployment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import canonical_email, expected_from_export
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches

pytestmark = pytest.mark.deployment

PUSH = "push_segment"


def contact_only_in_one_segment(data: Path) -> tuple[str, str]:
    """An email (already in canonical form) whose only segment is one of the chosen ones, and that segment."""
    names = {segment["name"] for segment in catalogue(data)}
    with gzip.open(data / "export.jsonl.gz", "rt") as lines:
        for line in lines:
            item = json.loads(line)
            segments = item.get("nosto_segments")
            email = item.get("email")
            single = isinstance(segments, list) and len(segments) == 1 and segments[0] in names
            if single and isinstance(email, str) and canonical_email(email) == email:
                return email, segments[0]
    raise AssertionError("the generated export has no contact in exactly one segment")


def by_map_index(instances: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {ti["map_index"]: ti for ti in instances}


def test_a_failed_segment_is_rerun_alone_by_clearing_its_task_instance(
    deployment: AirflowDeployment, sandbox: Sandbox, data: Path
) -> None:
    start_fresh(deployment, sandbox, data, "retry-one-segment")
    email, segment = contact_only_in_one_segment(data)
    # Every bulk import carrying this contact is refused: only the push task of its segment sends it.
    sandbox.add_fault(
        {
            "kind": "status",
            "method": "POST",
            "path": "^/api/profile-bulk-import-jobs$",
            "body_contains": email,
            "status": 400,
        }
    )

    run_id = deployment.trigger()
    assert deployment.wait_for_run(run_id) == "failed"
    first = by_map_index(deployment.task_instances(run_id, PUSH))
    failed = [ti for ti in first.values() if ti["state"] == "failed"]
    assert [ti["rendered_map_index"] for ti in failed] == [segment]
    assert {ti["state"] for ti in first.values() if ti not in failed} == {"success"}
    [victim] = failed
    # A request Klaviyo refuses (400) fails at once: Airflow's retries would only repeat it.
    assert victim["try_number"] == 1

    sandbox.clear_faults()
    cleared = deployment.call(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dag_run_id": run_id,
            "task_ids": [[PUSH, victim["map_index"]]],
            "dry_run": False,
            "only_failed": False,
            "include_downstream": True,
            "include_upstream": False,
            "reset_dag_runs": True,
        },
    )
    # That push and what runs after it (the segment-list task and the run's failure check); no other push.
    assert sorted((ti["task_id"], ti["map_index"]) for ti in cleared["task_instances"]) == [
        ("fail_if_a_push_failed", -1),
        (PUSH, victim["map_index"]),
        ("sync_segment_lists", -1),
    ]
    assert deployment.wait_for_run(run_id) == "success"

    second = by_map_index(deployment.task_instances(run_id, PUSH))
    assert {ti["state"] for ti in second.values()} == {"success"}
    # A new attempt ran (Airflow may count more than one when a resumed deferral races its heartbeat).
    assert second[victim["map_index"]]["try_number"] > victim["try_number"]
    for index, ti in first.items():
        if index != victim["map_index"]:
            assert (second[index]["try_number"], second[index]["end_date"]) == (
                ti["try_number"],
                ti["end_date"],
            )
    assert deployment.task_instances(run_id, "plan_sync")[0]["try_number"] == 1

    chosen = {item["name"] for item in catalogue(data)}
    assert_klaviyo_matches(sandbox.state(), expected_from_export(data / "export.jsonl.gz", chosen))
