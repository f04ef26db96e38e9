"""
Field case B20: a failed push is cleared with upstream after the configuration gained a segment.

Run 1 maps the push task over two chosen segments and the address book; the first segment's bulk import is
refused, so its push fails. Before the clear, a third segment whose id sorts before both is chosen, so the
re-planned map indexes shift by one: the failed instance's index 0 now belongs to the new segment. Each push
must still work on its own segment (its label, its diff, its progress file), nothing may be imported twice,
and Klaviyo must end up exactly as the export says for the three segments.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.conftest import catalogue, start_fresh
from tests.deployment.deployment import CONFIG_VARIABLE, DAG_ID, AirflowDeployment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import canonical_email, expected_from_export
from tests.e2e.test_sync_end_to_end import LIST_NAME, PROPERTY, assert_klaviyo_matches

pytestmark = pytest.mark.deployment

PUSH = "push_segment"


def contact_in_one_but_not_the_other(data: Path, inside: str, outside: str) -> str:
    """An email (as the export and Klaviyo spell it) in segment ``inside`` and not in ``outside``."""
    seeded = {profile["email"] for profile in json.loads((data / "klaviyo-seed.json").read_text())}
    spelled_otherwise = {canonical_email(email) for email in seeded} - seeded
    with gzip.open(data / "export.jsonl.gz", "rt") as lines:
        for line in lines:
            item = json.loads(line)
            names = item.get("nosto_segments")
            email = item.get("email")
            if not (isinstance(names, list) and isinstance(email, str)):
                continue
            plain = canonical_email(email) == email and email not in spelled_otherwise
            if plain and inside in names and outside not in names:
                return email
    raise AssertionError(f"the generated export has no contact in {inside!r} and not in {outside!r}")


def klaviyo_values(state: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    """Per canonical email: whether the profile is in the address-book list, and its segment property."""
    [book] = [item for item in state["lists"] if item["name"] == LIST_NAME]
    members = set(book["members"])
    return {
        canonical_email(profile["email"]) or profile["email"]: (
            profile["id"] in members,
            profile["properties"].get(PROPERTY),
        )
        for profile in state["profiles"]
    }


def test_a_push_cleared_with_upstream_after_a_segment_was_added_pushes_each_segment_once(
    deployment: AirflowDeployment, sandbox: Sandbox, data: Path
) -> None:
    new, failing, other = sorted(catalogue(data), key=lambda segment: segment["id"])
    start_fresh(deployment, sandbox, data, "clear-with-upstream")
    config = json.loads(deployment.call("GET", f"/variables/{CONFIG_VARIABLE}")["value"])
    deployment.set_config({**config, "segments": [other["id"], failing["id"]]})
    email = contact_in_one_but_not_the_other(data, failing["name"], other["name"])
    # Only the failing segment's push carries this contact (it owns every change of the contact).
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
    first = deployment.task_instances(run_id, PUSH)
    assert [(ti["rendered_map_index"], ti["state"]) for ti in first] == [
        (failing["name"], "failed"),
        (other["name"], "success"),
        ("Address book", "success"),
    ]
    after_first = klaviyo_values(sandbox.state())

    # The configuration gains a segment whose id sorts first: re-planned, the failed index 0 is its.
    sandbox.clear_faults()
    deployment.set_config({**config, "segments": [other["id"], failing["id"], new["id"]]})
    write_mark = sandbox.write_mark()
    cleared = deployment.call(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dag_run_id": run_id,
            "task_ids": [[PUSH, 0]],
            "dry_run": False,
            "only_failed": False,
            "include_downstream": True,
            "include_upstream": True,
            "reset_dag_runs": True,
        },
    )
    # Airflow clears the upstream plan and, the plan being upstream of every mapped push, every sibling
    # too: a new plan supersedes every diff of the old one, so every push must run again on the new specs.
    # (Clearing the one instance without upstream re-runs that push alone: test_retry_one_segment.py.)
    assert sorted((ti["task_id"], ti["map_index"]) for ti in cleared["task_instances"]) == [
        ("fail_if_a_push_failed", -1),
        ("plan_sync", -1),
        (PUSH, 0),
        (PUSH, 1),
        (PUSH, 2),
        ("sync_segment_lists", -1),
    ]
    assert deployment.wait_for_run(run_id) == "success"

    specs: list[dict[str, Any]] = deployment.xcom(run_id, "plan_sync")
    pushes = deployment.task_instances(run_id, PUSH)
    # Re-expanded over the new plan: one more instance, each labelled with the segment it now pushes.
    names = [new["name"], failing["name"], other["name"], "Address book"]
    assert [ti["rendered_map_index"] for ti in pushes] == names
    assert [spec["segment_name"] for spec in specs] == names
    assert {ti["state"] for ti in pushes} == {"success"}
    # Each instance ran its own spec. (Its summary's counts are not asserted: Airflow sometimes runs a push
    # that resumed from its deferral once more, and that try finds its diff applied: "nothing_to_do".)
    for spec, ti in zip(specs, pushes, strict=True):
        summary = deployment.xcom(run_id, PUSH, ti["map_index"])
        assert (summary["segment_id"], summary["generation"]) == (spec["segment_id"], spec["generation"])
    # The segment applied in run 1, and the address book, have nothing left to do in the new plan.
    assert [spec["contacts_to_write"] for spec in specs[2:]] == [0, 0]

    chosen = {new["name"], failing["name"], other["name"]}
    expected = expected_from_export(data / "export.jsonl.gz", chosen)
    # Nothing imported twice: after the clear, each contact is written at most once, and exactly the
    # contacts whose state in Klaviyo after run 1 (in the address book, with their segments) was not their
    # final one: the failed segment's, and the new segment's members.
    writes = Counter(canonical_email(write["email"]) for write in sandbox.writes(write_mark))
    assert set(writes.values()) == {1}
    behind = {email for email, value in expected.values.items() if after_first.get(email) != (True, value)}
    assert set(writes) == behind
    assert all({new["name"], failing["name"]} & set(expected.values[email]) for email in writes)

    assert_klaviyo_matches(sandbox.state(), expected)
