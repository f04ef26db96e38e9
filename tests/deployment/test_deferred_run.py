"""
An API-triggered run in the deployment: push tasks wait deferred in the triggerer, in the Klaviyo pool.

One run serves every test here: the sandbox holds the bulk import jobs in ``processing`` until the test
has seen each waiting push task deferred, then lets them finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deployment.conftest import catalogue, start_fresh
from tests.deployment.deployment import DAG_ID, POOL, POOL_SLOTS, AirflowDeployment, wait_for
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import expected_from_export
from tests.e2e.test_sync_end_to_end import LIST_NAME, assert_klaviyo_matches

pytestmark = pytest.mark.deployment

PUSH = "push_segment"


@dataclass
class ObservedRun:
    run_id: str
    specs: list[dict[str, Any]]
    #: The push task instances at the moment every one that had jobs to wait for was deferred.
    waiting: list[dict[str, Any]]
    #: The Klaviyo pool at that moment.
    pool_while_waiting: dict[str, Any]
    jobs_while_waiting: list[dict[str, Any]]
    final_state: str
    pushes: list[dict[str, Any]]
    klaviyo: dict[str, Any]


def all_waiting(deployment: AirflowDeployment, run_id: str, writers: set[int]) -> list[dict[str, Any]] | None:
    instances = deployment.task_instances(run_id, PUSH)
    failed = [ti for ti in instances if ti["state"] in ("failed", "upstream_failed")]
    assert failed == [], f"push tasks failed while their jobs were held: {failed}"
    # Deferred, and the trigger picked up by a triggerer (it assigns new triggers on its next loop).
    waiting = {
        ti["map_index"]
        for ti in instances
        if ti["state"] == "deferred" and (ti["trigger"] or {}).get("triggerer_id") is not None
    }
    return instances if waiting == writers else None


@pytest.fixture(scope="module")
def observed(deployment: AirflowDeployment, sandbox: Sandbox, data: Path) -> ObservedRun:
    start_fresh(deployment, sandbox, data, "deferred-run")
    sandbox.add_fault({"kind": "hold_jobs"})
    run_id = deployment.trigger()

    wait_for(
        "the plan task",
        lambda: deployment.task_instances(run_id, "plan_sync")[0]["state"] == "success",
        timeout=180,
    )
    specs: list[dict[str, Any]] = deployment.xcom(run_id, "plan_sync")
    writers = {index for index, spec in enumerate(specs) if spec["contacts_to_write"]}
    waiting = wait_for(
        "the push tasks to wait deferred", lambda: all_waiting(deployment, run_id, writers), 180
    )
    pool = deployment.call("GET", f"/pools/{POOL}")
    jobs = sandbox.state()["jobs"]

    sandbox.clear_faults()
    requests.post(f"{sandbox.klaviyo}/__sandbox/jobs/release", timeout=30).raise_for_status()
    final_state = deployment.wait_for_run(run_id)
    return ObservedRun(
        run_id=run_id,
        specs=specs,
        waiting=waiting,
        pool_while_waiting=pool,
        jobs_while_waiting=jobs,
        final_state=final_state,
        pushes=deployment.task_instances(run_id, PUSH),
        klaviyo=sandbox.state(),
    )


def test_push_tasks_wait_deferred_in_the_triggerer_then_the_run_completes(
    observed: ObservedRun, data: Path
) -> None:
    writers = [ti for ti in observed.waiting if observed.specs[ti["map_index"]]["contacts_to_write"]]
    # Every segment gets members on a first sync, so each segment's push had jobs to wait for.
    assert len(writers) >= len(catalogue(data))
    for ti in writers:
        assert ti["state"] == "deferred"
        assert ti["trigger"]["classpath"].endswith("KlaviyoBulkImportJobTrigger")
        assert ti["trigger"]["triggerer_id"] is not None, "no triggerer picked the trigger up"
    assert observed.jobs_while_waiting, "no bulk import job reached the sandbox"
    assert {job["status"] for job in observed.jobs_while_waiting} == {"processing"}

    assert observed.final_state == "success"
    assert [ti["state"] for ti in observed.pushes] == ["success"] * len(observed.specs)
    chosen = {segment["name"] for segment in catalogue(data)}
    assert_klaviyo_matches(observed.klaviyo, expected_from_export(data / "export.jsonl.gz", chosen))


def test_each_push_task_is_named_after_its_segment_and_links_to_the_klaviyo_list(
    observed: ObservedRun, deployment: AirflowDeployment, data: Path
) -> None:
    names = sorted(ti["rendered_map_index"] for ti in observed.pushes)
    assert names == sorted([*(segment["name"] for segment in catalogue(data)), "Address book"])

    [address_book] = [item for item in observed.klaviyo["lists"] if item["name"] == LIST_NAME]
    for ti in observed.pushes:
        links = deployment.call(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{observed.run_id}/taskInstances/{PUSH}/links",
            params={"map_index": ti["map_index"]},
        )
        assert links["extra_links"] == {"Klaviyo list": f"https://www.klaviyo.com/list/{address_book['id']}"}


def test_the_documented_pool_exists_counts_deferred_tasks_and_the_klaviyo_tasks_use_it(
    observed: ObservedRun, deployment: AirflowDeployment
) -> None:
    pool = deployment.call("GET", f"/pools/{POOL}")
    assert (pool["slots"], pool["include_deferred"]) == (POOL_SLOTS, True)

    tasks = {task["task_id"]: task for task in deployment.call("GET", f"/dags/{DAG_ID}/tasks")["tasks"]}
    assert {task_id: task["pool"] for task_id, task in tasks.items()} == {
        "plan_sync": POOL,
        PUSH: POOL,
        "sync_segment_lists": POOL,
        # Calls nothing: it only fails the run when a push failed.
        "fail_if_a_push_failed": "default_pool",
    }
    assert {ti["pool"] for ti in observed.pushes} == {POOL}

    deferred = sum(1 for ti in observed.waiting if ti["state"] == "deferred")
    assert observed.pool_while_waiting["deferred_slots"] == deferred
    assert observed.pool_while_waiting["occupied_slots"] >= deferred
