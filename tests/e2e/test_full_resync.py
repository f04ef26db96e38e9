"""
A full resync (SPEC 1.7) compares with what Klaviyo holds, not with the applied state, and repairs the
difference: a deleted address-book list, values edited by hand, list membership changed by hand.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from tests.e2e.conftest import Sandbox
from tests.e2e.inprocess import (
    LIST_NAME,
    PROPERTY,
    THREE_SEGMENT_CATALOGUE,
    THREE_SEGMENT_EXPORT,
    SyncRunner,
    email,
    synced_three_segment_runner,
)

pytestmark = pytest.mark.e2e

CATALOGUE = THREE_SEGMENT_CATALOGUE
EXPORT = THREE_SEGMENT_EXPORT
EXPECTED = {address: sorted(names) for address, names in EXPORT.items()}


@pytest.fixture
def runner(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncRunner:
    runner = synced_three_segment_runner(sandbox, tmp_path, monkeypatch)
    assert runner.klaviyo().values() == EXPECTED
    return runner


def edit_profile(runner: SyncRunner, address: str, properties: dict[str, Any]) -> None:
    profile_id = runner.klaviyo().profiles[address]["id"]
    body = {"data": {"type": "profile", "id": profile_id, "attributes": {"properties": properties}}}
    runner.klaviyo_api("PATCH", f"/api/profiles/{profile_id}", body).raise_for_status()


def test_deleted_list_stops_a_normal_run_and_a_full_resync_rebuilds_it(runner: SyncRunner) -> None:
    list_id = runner.klaviyo().lists_named(LIST_NAME)[0]["id"]
    runner.klaviyo_api("DELETE", f"/api/lists/{list_id}").raise_for_status()
    runner.nosto(CATALOGUE, {**EXPORT, email(60): ["Loyal Customers"]})
    mark = runner.request_mark()

    with pytest.raises(KlaviyoError) as stopped:
        runner.plan()
    assert list_id in str(stopped.value)
    assert "full_resync=true" in str(stopped.value)
    assert runner.write_calls_since(mark) == []

    runner.run(full_resync=True)

    view = runner.klaviyo()
    assert len(view.lists_named(LIST_NAME)) == 1
    assert view.members() == set(EXPORT) | {email(60)}
    assert view.values() == {**EXPECTED, email(60): ["Loyal Customers"]}
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == []


def test_values_and_membership_edited_by_hand_are_repaired_and_nothing_else_is_written(
    runner: SyncRunner,
) -> None:
    # Contact 5 unsubscribed and was suppressed since, and someone edited its value (B15: consent stays).
    runner.sandbox.seed_profiles(
        [
            {
                "email": email(5),
                "consent": "UNSUBSCRIBED",
                "suppressed": "HARD_BOUNCE",
                "properties": {PROPERTY: ["Loyal Customers"]},
            }
        ]
    )
    edit_profile(runner, email(25), {PROPERTY: "Brand fans: Nike"})
    edit_profile(runner, email(45), {PROPERTY: None})
    list_id = runner.klaviyo().lists_named(LIST_NAME)[0]["id"]
    member_50 = runner.klaviyo().profiles[email(50)]["id"]
    runner.klaviyo_api(
        "DELETE",
        f"/api/lists/{list_id}/relationships/profiles",
        {"data": [{"type": "profile", "id": member_50}]},
    ).raise_for_status()
    runner.sandbox.seed_profiles([{"email": "stranger@example.org", "lists": [LIST_NAME]}])
    edited = runner.klaviyo()
    assert edited.profiles[email(5)]["suppressed"]
    assert edited.values()[email(5)] == ["Loyal Customers"]

    # A normal run compares with the applied state, which knows nothing of the edits.
    mark = runner.request_mark()
    assert runner.run() == ([], [])
    assert runner.write_calls_since(mark) == []

    # A dry full resync finds every difference and writes nothing.
    specs = runner.plan(full_resync=True, dry_run=True)
    book = next(spec for spec in specs if spec["key"] == "address-book")
    assert (book["joined"], book["left"], book["updated"]) == (1, 0, 3)
    assert runner.write_calls_since(mark) == []
    assert runner.klaviyo().state["profiles"] == edited.state["profiles"]

    writes = runner.sandbox.write_mark()
    runner.run(full_resync=True)

    view = runner.klaviyo()
    # The stranger was added to the list by someone else: a sync only removes what it added (B14).
    assert view.members() == set(EXPORT) | {"stranger@example.org"}
    assert {address: value for address, value in view.values().items() if address in EXPORT} == EXPECTED
    consent = ("subscriptions", "suppressed", "suppression")
    assert {k: view.profiles[email(5)][k] for k in consent} == {
        k: edited.profiles[email(5)][k] for k in consent
    }
    assert view.state["subscription_calls"] == []
    written = Counter(write["email"] for write in runner.sandbox.writes(writes))
    assert written == Counter({email(5): 1, email(25): 1, email(45): 1, email(50): 1})
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == []
