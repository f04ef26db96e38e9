"""The run params (``segments``, ``full_resync``, ``allow_removals``, ``migrate``) reach the sync through the
example DAG under Airflow (``airflow dags test --conf``), on an account a first DAG run synced; the tests run in
order on that account, each starting from what the one before left."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from tests.e2e.expected import canonical_email, expected_from_export
from tests.e2e.test_sync_end_to_end import (
    PROPERTY,
    address_book,
    assert_klaviyo_matches,
    assert_protocol_clean,
)
from tests.faults.dag_runs import SyncedAccount

NEW_PROPERTY = "nosto_segments"


def values(account: SyncedAccount, prop: str = PROPERTY) -> dict[str, Any]:
    """Canonical email -> the property's value, for every profile in Klaviyo."""
    return {
        canonical_email(profile["email"]) or profile["email"]: profile["properties"].get(prop)
        for profile in account.sandbox.state()["profiles"]
    }


def members(holding: dict[str, Any], name: str) -> set[str]:
    return {email for email, value in holding.items() if isinstance(value, list) and name in value}


def push_summaries(stored_xcoms: list[Any]) -> dict[str, dict[str, Any]]:
    return {
        value["segment_name"]: value
        for value in stored_xcoms
        if isinstance(value, dict) and "segment_name" in value and "joined" in value
    }


def test_a_narrowed_run_refreshes_only_the_named_segment(account: SyncedAccount) -> None:
    before = account.expected(account.data).values
    after = account.expected(account.next_day).values
    narrowed, *others = sorted(account.names)

    returncode, output, stored = account.run({"segments": [narrowed]})

    assert returncode == 0, output[-3000:]
    held = values(account)
    # The named segment follows the new export; the others stay exactly as they were, even for contacts gone
    # from Nosto (a later full run clears those); the address book is not narrowed.
    assert members(held, narrowed) == members(after, narrowed)
    for name in others:
        assert members(held, name) == members(before, name), name
    assert address_book(account.sandbox.state()) == after.keys()
    summaries = push_summaries(stored.xcoms)
    assert {name: (summaries[name]["joined"], summaries[name]["left"]) for name in others} == dict.fromkeys(
        others, (0, 0)
    )


def test_the_next_run_without_params_applies_every_segment(account: SyncedAccount) -> None:
    returncode, output, _stored = account.run()

    assert returncode == 0, output[-3000:]
    assert_klaviyo_matches(account.sandbox.state(), account.expected(account.next_day))


def test_full_resync_repairs_values_edited_by_hand_in_klaviyo(account: SyncedAccount) -> None:
    expected = account.expected(account.next_day)
    edited = sorted(email for email, value in expected.values.items() if value)[:2]
    account.sandbox.seed_profiles(
        [{"email": email, "properties": {PROPERTY: ["Edited by hand"]}} for email in edited]
    )

    returncode, output, _stored = account.run({"full_resync": True})

    assert returncode == 0, output[-3000:]
    assert_klaviyo_matches(account.sandbox.state(), expected)


def test_allow_removals_lets_a_removal_over_the_threshold_through(
    account: SyncedAccount, tmp_path: Path
) -> None:
    lines = gzip.decompress((account.next_day / "export.jsonl.gz").read_bytes()).splitlines(keepends=True)
    half = tmp_path / "export.jsonl.gz"
    half.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))
    account.sandbox.load_export(account.next_day, half)

    stopped, output, _stored = account.run()
    assert stopped != 0
    assert "allow_removals=true" in output
    returncode, output, _stored = account.run({"allow_removals": True})

    assert returncode == 0, output[-3000:]
    assert_klaviyo_matches(account.sandbox.state(), expected_from_export(half, account.names))
    account.sandbox.load_export(account.next_day)
    returncode, output, _stored = account.run({"allow_removals": True})
    assert returncode == 0, output[-3000:]


def test_migrate_moves_every_value_to_a_new_property_name(account: SyncedAccount) -> None:
    expected = account.expected(account.next_day).values
    account.airflow.config["property_name"] = NEW_PROPERTY

    stopped, output, _stored = account.run()
    assert stopped != 0
    assert f"from {PROPERTY!r} to {NEW_PROPERTY!r}" in output
    returncode, output, _stored = account.run({"migrate": True})

    assert returncode == 0, output[-3000:]
    moved = values(account, NEW_PROPERTY)
    assert {email: moved[email] for email in expected} == expected
    old = values(account)
    assert {email: old[email] for email in expected} == dict.fromkeys(expected, [])
    assert_protocol_clean(account.sandbox)
