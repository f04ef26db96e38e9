"""
Segments change over time (SPEC 2, 3): renames, removal from the configuration or from Nosto, narrowed runs,
and a changed list or property name, each shown against the sandbox with a small hand-written export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoAuthError, KlaviyoConfigError
from tests.e2e.conftest import Sandbox
from tests.e2e.inprocess import (
    LIST_NAME,
    PROPERTY,
    THREE_SEGMENT_CATALOGUE,
    THREE_SEGMENT_EXPORT,
    SyncRunner,
    email,
    new_runner,
    synced_three_segment_runner,
)

pytestmark = pytest.mark.e2e

CATALOGUE = THREE_SEGMENT_CATALOGUE
EXPORT = THREE_SEGMENT_EXPORT


@pytest.fixture
def runner(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncRunner:
    runner = synced_three_segment_runner(sandbox, tmp_path, monkeypatch)
    assert runner.klaviyo().values()[email(25)] == ["Brand fans: Nike", "Discount seekers"]
    return runner


def test_renamed_segment_keeps_every_member_and_their_values_take_the_new_name(runner: SyncRunner) -> None:
    renamed = {**CATALOGUE, "seg-b": "Brand fans: Nike (EU)"}

    # The catalogue already has the new name; the export, written once a day, still has the old one.
    runner.nosto(renamed, EXPORT)
    runner.run()
    view = runner.klaviyo()
    assert view.members() == set(EXPORT)
    assert view.values()[email(5)] == ["Brand fans: Nike (EU)", "Loyal Customers"]
    assert view.values()[email(25)] == ["Brand fans: Nike (EU)", "Discount seekers"]

    # The export catches up: nothing to change, nobody removed.
    renamed_export = {
        address: sorted(name.replace("Brand fans: Nike", "Brand fans: Nike (EU)") for name in names)
        for address, names in EXPORT.items()
    }
    runner.nosto(renamed, renamed_export)
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == []
    assert runner.klaviyo().values() == view.values()
    assert runner.klaviyo().members() == set(EXPORT)


def test_segment_removed_from_the_configuration_leaves_only_its_members_values(runner: SyncRunner) -> None:
    before = runner.klaviyo().values()

    runner.configure(segments=["seg-a", "seg-c"], klaviyo_pool_slots=1)
    runner.run()

    after = runner.klaviyo().values()
    assert after == {
        address: [name for name in value if name != "Brand fans: Nike"] for address, value in before.items()
    }
    assert runner.klaviyo().members() == set(EXPORT)


def test_segment_deleted_in_nosto_leaves_its_members_values_with_a_warning(
    runner: SyncRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    before = runner.klaviyo().values()
    without_nike = {ident: name for ident, name in CATALOGUE.items() if ident != "seg-b"}
    runner.nosto(without_nike, EXPORT)
    capsys.readouterr()

    runner.run()

    warnings = [line for line in capsys.readouterr().out.splitlines() if "deleted in Nosto" in line]
    assert len(warnings) == 1
    assert "[warning" in warnings[0]
    assert "'Brand fans: Nike' (seg-b)" in warnings[0]
    assert runner.klaviyo().values() == {
        address: [name for name in value if name != "Brand fans: Nike"] for address, value in before.items()
    }

    # The id is still configured: the next run warns again instead of failing, and writes nothing.
    mark = runner.request_mark()
    runner.run()
    assert "deleted in Nosto" in capsys.readouterr().out
    assert runner.write_calls_since(mark) == []


def test_narrowed_run_leaves_the_other_segments_exactly_as_they_were(runner: SyncRunner) -> None:
    before = runner.klaviyo().values()
    # Next day: 0-1 leave Loyal, 40-43 leave Discount seekers and join Loyal (10% of each, the threshold).
    changed = dict(EXPORT)
    for n in range(2):
        changed[email(n)] = ["Brand fans: Nike"]
    for n in range(40, 44):
        changed[email(n)] = ["Loyal Customers"]
    runner.nosto(CATALOGUE, changed)

    runner.run(segment_ids=["Loyal Customers"])

    after = runner.klaviyo().values()
    assert [after[email(n)] for n in (0, 40, 44)] == [
        ["Brand fans: Nike"],
        # Still a discount seeker as far as Klaviyo knows: that segment was not part of this run.
        ["Discount seekers", "Loyal Customers"],
        ["Discount seekers"],
    ]
    untouched = set(EXPORT) - {email(n) for n in [*range(2), *range(40, 44)]}
    assert {address: after[address] for address in untouched} == {
        address: before[address] for address in untouched
    }

    runner.run()
    assert runner.klaviyo().values()[email(40)] == ["Loyal Customers"]


def test_changed_list_name_stops_then_migrate_renames_the_same_list(runner: SyncRunner) -> None:
    old = runner.klaviyo().lists_named(LIST_NAME)[0]
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, list_name="Nosto Shoppers")
    mark = runner.request_mark()

    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()
    assert "'Nosto Customers'" in str(stopped.value)
    assert "'Nosto Shoppers'" in str(stopped.value)
    assert "migrate=true" in str(stopped.value)
    assert runner.write_calls_since(mark) == []

    runner.run(migrate=True)

    view = runner.klaviyo()
    assert view.lists_named(LIST_NAME) == []
    assert [item["id"] for item in view.lists_named("Nosto Shoppers")] == [old["id"]]
    assert view.members("Nosto Shoppers") == set(EXPORT)
    # Membership did not change, so no contact was re-added (no flow could fire); only the list was renamed.
    assert [(e["method"], e["template"]) for e in runner.write_calls_since(mark)] == [
        ("PATCH", "/api/lists/{id}")
    ]
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == []


def test_changed_property_name_stops_then_migrate_moves_every_value(runner: SyncRunner) -> None:
    before = runner.klaviyo().values()
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name="nosto_segments")

    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()
    assert "'nosto_segment'" in str(stopped.value)
    assert "'nosto_segments'" in str(stopped.value)

    runner.run(migrate=True)

    view = runner.klaviyo()
    assert view.values("nosto_segments") == before
    assert view.values(PROPERTY) == dict.fromkeys(before, [])
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == []


def test_a_contact_the_migration_could_not_write_has_its_old_property_emptied_when_written(
    runner: SyncRunner,
) -> None:
    before = runner.klaviyo().values()
    refused = email(5)
    runner.sandbox.add_fault({"kind": "job_fail_emails", "emails": [refused], "times": 1})
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name="nosto_segments")

    runner.run(migrate=True)

    view = runner.klaviyo()
    assert "nosto_segments" not in view.profiles[refused]["properties"]
    assert view.values(PROPERTY)[refused] == before[refused], "its only value stays where it was"

    runner.run()

    view = runner.klaviyo()
    assert view.values("nosto_segments") == before
    assert view.values(PROPERTY) == dict.fromkeys(before, [])


def _start_a_migration_whose_push_is_lost(runner: SyncRunner) -> dict[str, Any]:
    """Start moving every value to 'nosto_segments', then lose the push carrying the move (its worker died and its
    retries were spent); return the values before."""
    before = runner.klaviyo().values()
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name="nosto_segments")
    specs = runner.plan(migrate=True)
    # Every contact's only change is the property, so the address book's push carries the whole migration.
    assert [spec["key"] for spec in specs if spec["contacts_to_write"]] == ["address-book"]
    runner.push([spec for spec in specs if spec["key"] != "address-book"])
    return before


def test_a_migration_whose_push_never_ran_is_finished_by_the_next_run(runner: SyncRunner) -> None:
    before = _start_a_migration_whose_push_is_lost(runner)

    runner.run()  # the next scheduled run plans anew

    view = runner.klaviyo()
    assert view.values("nosto_segments") == before
    assert view.values(PROPERTY) == dict.fromkeys(before, [])
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == [], "the migration is finished: nothing is left to write"


def test_a_full_resync_during_an_unfinished_migration_empties_the_old_property(runner: SyncRunner) -> None:
    before = _start_a_migration_whose_push_is_lost(runner)

    runner.run(full_resync=True)

    view = runner.klaviyo()
    assert view.values("nosto_segments") == before
    assert view.values(PROPERTY) == dict.fromkeys(before, [])


def test_a_second_migration_before_the_first_finished_empties_both_old_properties(runner: SyncRunner) -> None:
    before = _start_a_migration_whose_push_is_lost(runner)
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name="nosto_tags")

    runner.run(migrate=True)

    view = runner.klaviyo()
    assert view.values("nosto_tags") == before
    assert view.values(PROPERTY) == dict.fromkeys(before, [])
    assert view.values("nosto_segments") == dict.fromkeys(before, [])
    mark = runner.request_mark()
    runner.run()
    assert runner.write_calls_since(mark) == [], "both migrations are finished: nothing is left to write"


def test_migrating_back_to_the_first_name_before_the_move_finished_keeps_the_values_there(
    runner: SyncRunner,
) -> None:
    before = _start_a_migration_whose_push_is_lost(runner)
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name=PROPERTY)

    runner.run(migrate=True)

    view = runner.klaviyo()
    assert view.values(PROPERTY) == before
    assert view.values("nosto_segments") == dict.fromkeys(before, [])


def _synced_with_a_mixed_case_profile(runner: SyncRunner, sandbox: Sandbox) -> str:
    """The export's contact 5, stored by Klaviyo as 'Contact0005@Example.com' before the first run."""
    stored = email(5).replace("contact", "Contact").replace("example", "Example")
    sandbox.seed_profiles([{"email": stored}])
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, empty_value="unset")
    runner.nosto(CATALOGUE, EXPORT)
    runner.run()
    assert runner.klaviyo().profiles[stored]["properties"][PROPERTY] == sorted(EXPORT[email(5)])
    return stored


def test_unset_migration_removes_the_old_property_of_a_profile_stored_in_other_letter_case(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = new_runner(sandbox, tmp_path, monkeypatch)
    stored = _synced_with_a_mixed_case_profile(runner, sandbox)
    runner.configure(
        segments=list(CATALOGUE), klaviyo_pool_slots=1, empty_value="unset", property_name="nosto_segments"
    )

    runner.run(migrate=True)

    properties = runner.klaviyo().profiles[stored]["properties"]
    assert properties["nosto_segments"] == sorted(EXPORT[email(5)])
    assert PROPERTY not in properties


def test_unset_removes_the_emptied_property_of_a_profile_stored_in_other_letter_case(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = new_runner(sandbox, tmp_path, monkeypatch)
    stored = _synced_with_a_mixed_case_profile(runner, sandbox)

    runner.nosto(CATALOGUE, {**EXPORT, email(5): []})
    runner.run()

    assert PROPERTY not in runner.klaviyo().profiles[stored]["properties"]


def test_a_dry_run_names_every_old_property_a_real_run_would_clear(
    runner: SyncRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    _start_a_migration_whose_push_is_lost(runner)
    capsys.readouterr()

    mark = runner.request_mark()
    runner.plan(dry_run=True)
    assert (
        "the contacts an unfinished migration has not written yet would be written under 'nosto_segments', "
        "clearing 'nosto_segment'." in capsys.readouterr().out
    )

    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, property_name="nosto_tags")
    runner.plan(dry_run=True, migrate=True)
    assert (
        "would write every contact's value under 'nosto_tags' and clear 'nosto_segment', 'nosto_segments'."
        in capsys.readouterr().out
    )
    assert runner.write_calls_since(mark) == []


def test_a_push_summary_after_a_retry_counts_the_calls_of_the_failed_try(runner: SyncRunner) -> None:
    # Contact 5 leaves Nosto (a list removal) and contact 90 joins (a bulk import), both in one push.
    export = {address: names for address, names in EXPORT.items() if address != email(5)}
    runner.nosto(CATALOGUE, {**export, email(90): ["Loyal Customers"]})
    specs = [spec for spec in runner.plan() if spec["contacts_to_write"]]
    mark = runner.request_mark()
    # The first try's import is refused after its list removal went through.
    runner.sandbox.add_fault(
        {
            "kind": "status",
            "method": "POST",
            "path": "^/api/profile-bulk-import-jobs$",
            "status": 401,
            "times": 1,
        }
    )
    with pytest.raises(KlaviyoAuthError):
        runner.push(specs)
    runner.sandbox.clear_faults()

    summaries = runner.push(specs)

    # The job polls of a push that waits inline are not counted (a deferred push polls from the triggerer).
    polls = "/api/profile-bulk-import-jobs/{job_id}"
    made = [entry for entry in runner.sandbox.requests_log(since=mark) if entry["template"] != polls]
    assert sum(summary["calls"] for summary in summaries) == len(made)
    assert runner.klaviyo().members() == set(export) | {email(90)}
