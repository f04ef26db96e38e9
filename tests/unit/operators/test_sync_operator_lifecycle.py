"""The sync operator's safety switches and segment life cycle, against mocked hooks (fast, exact calls)."""

from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.sync.model import Segment
from tests.unit.operators.world import KLAVIYO_WRITES, LIST_ID, NEW, VIP, SyncWorld, spec_for

ANA = "ana@example.com"
BOB = "bob@example.com"


def test_dry_run_over_the_removal_threshold_reports_instead_of_failing(world: SyncWorld) -> None:
    book = {f"c{i}@example.com": ["vip"] for i in range(10)}
    world.apply(book)
    world.export(dict(list(book.items())[3:]))
    files = world.files()

    specs = world.sync(dry_run=True)

    assert spec_for(specs, "address-book")["left"] == 3
    assert world.files() == files
    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


def test_segment_never_synced_and_missing_from_the_catalogue_is_a_typo(world: SyncWorld) -> None:
    world.configure(segments=[VIP.id, "999"])
    world.export({ANA: ["vip"]})

    with pytest.raises(KlaviyoConfigError, match="no segment '999'"):
        world.sync()


def test_empty_catalogue_does_not_read_as_every_segment_deleted(world: SyncWorld) -> None:
    world.apply({ANA: ["vip", "new"]})
    world.nosto.get_segments.return_value = []

    with pytest.raises(KlaviyoConfigError, match="catalogue is empty"):
        world.sync()


def test_segment_deleted_in_nosto_is_dropped_from_values_and_stays_remembered(world: SyncWorld) -> None:
    world.apply({ANA: ["vip", "new"], BOB: ["new"]})
    world.nosto.get_segments.return_value = [VIP]

    specs = world.sync()

    # No chosen segment changed for them, so the address-book task writes both whole values.
    assert world.diffs(specs) == {"address-book": {ANA: ["vip"], BOB: []}}
    meta = world.state_dir / "meta.json"
    assert f'"{NEW.id}"' in meta.read_text()


def test_full_resync_cannot_be_narrowed(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"]})

    with pytest.raises(KlaviyoConfigError, match="cannot be narrowed"):
        world.sync(full_resync=True, segment_ids=[VIP.id])


def test_list_rename_refused_when_another_list_has_the_new_name(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"]})
    world.configure(list_name="Nosto Shoppers")
    world.klaviyo.find_list_by_name.return_value = "OTHER"

    with pytest.raises(KlaviyoConfigError, match="list OTHER already has that name"):
        world.sync(migrate=True)

    world.klaviyo.rename_list.assert_not_called()


def test_property_migration_writes_every_contact_and_clears_the_old_property(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"], BOB: []})
    world.configure(property_name="segments")

    specs = world.sync(migrate=True)
    for spec in specs:
        world.push(spec)

    profiles = [
        profile for call in world.klaviyo.submit_bulk_import.call_args_list for profile in call.args[0]
    ]
    assert sorted((p["attributes"]["email"], p["attributes"]["properties"]) for p in profiles) == [
        (ANA, {"segments": ["vip"], "nosto_segment": []}),
        (BOB, {"segments": [], "nosto_segment": []}),
    ]
    assert {call.args[1] for call in world.klaviyo.submit_bulk_import.call_args_list} == {LIST_ID}


def test_migrate_without_a_changed_name_changes_nothing(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"]})

    assert world.sync(migrate=True) == []
    world.klaviyo.rename_list.assert_not_called()


def test_renamed_segment_in_the_report_counts_its_members_as_updated(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"], BOB: ["vip", "new"]})
    world.nosto.get_segments.return_value = [Segment(VIP.id, "VIP customers"), NEW]

    specs = world.sync(dry_run=True)

    assert (spec_for(specs, VIP.id)["joined"], spec_for(specs, VIP.id)["updated"]) == (0, 2)
    assert spec_for(specs, NEW.id)["updated"] == 1


def test_property_migration_with_unset_removes_the_old_property_of_every_contact(world: SyncWorld) -> None:
    world.configure(empty_value="unset")
    world.apply({ANA: ["vip"], BOB: []})
    world.configure(empty_value="unset", property_name="segments")
    world.klaviyo.get_profile_ids_by_email.side_effect = lambda emails: {
        email: f"id-{email}" for email in emails
    }

    for spec in world.sync(migrate=True):
        world.push(spec)

    profiles = [
        profile for call in world.klaviyo.submit_bulk_import.call_args_list for profile in call.args[0]
    ]
    assert all("nosto_segment" not in p["attributes"]["properties"] for p in profiles)
    unset = sorted(call.args for call in world.klaviyo.unset_profile_property.call_args_list)
    assert (f"id-{ANA}", "nosto_segment") in unset
    assert (f"id-{BOB}", "nosto_segment") in unset
