from __future__ import annotations

import contextlib
import io
import json

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, KlaviyoError, KlaviyoPermissionError
from airflow_provider_klaviyo_nosto.sync.export import IncompleteExportError
from airflow_provider_klaviyo_nosto.sync.model import Segment
from tests.unit.operators.world import KLAVIYO_WRITES, NEW, VIP, SyncWorld, spec_for

ANA = "ana@example.com"
BOB = "bob@example.com"


def _new_values(world: SyncWorld, specs: list[dict]) -> dict[str, list[list[str]]]:
    """Email -> every value the run's diffs write for it (one entry per push task that writes it)."""
    values: dict[str, list[list[str]]] = {}
    for changes in world.diffs(specs).values():
        for email, value in changes.items():
            values.setdefault(email, []).append(value)
    return values


# -- XCom (B17) --------------------------------------------------------------------------------------


def test_b17_xcom_for_5000_members_is_small_and_holds_no_email(world: SyncWorld) -> None:
    world.export({f"buyer{i:05d}@example.com": ["vip"] for i in range(5_000)})

    specs = world.sync()

    assert spec_for(specs, VIP.id)["contacts_to_write"] == 5_000
    assert len(json.dumps(specs).encode()) < 48 * 1024
    assert all(len(json.dumps(spec).encode()) < 4 * 1024 for spec in specs)
    assert "@" not in json.dumps(specs)


# -- one whole value per contact (B13) ---------------------------------------------------------------


def test_b13_contact_joining_two_segments_is_in_one_diff_with_the_sorted_union(world: SyncWorld) -> None:
    world.export({ANA: ["vip", "new"], BOB: ["new"]})

    diffs = world.diffs(world.sync())

    assert diffs == {VIP.id: {ANA: ["new", "vip"]}, NEW.id: {BOB: ["new"]}}


@pytest.mark.parametrize(
    ("names_now", "value"),
    [(["new"], ["new"]), ([], [])],
    ids=["left-one-segment", "left-every-segment"],
)
def test_b13_contact_leaving_segments_gets_the_rest_once(
    world: SyncWorld, names_now: list[str], value: list[str]
) -> None:
    world.apply({ANA: ["vip", "new"], BOB: ["vip", "new"]})
    world.export({ANA: names_now, BOB: ["vip", "new"]})

    values = _new_values(world, world.sync(allow_removals=True))

    assert values == {ANA: [value]}


# -- narrowed runs, unchanged exports, dry runs -------------------------------------------------------


@pytest.mark.parametrize("segment_ids", [[NEW.id], [NEW.name], NEW.id], ids=["id", "name", "rendered-text"])
def test_narrowed_run_keeps_the_other_segments_values(world: SyncWorld, segment_ids: list[str] | str) -> None:
    world.apply({ANA: ["vip", "new"], BOB: ["vip"]})
    world.export({ANA: ["vip"], BOB: []})

    specs = world.sync(segment_ids=segment_ids, allow_removals=True)

    assert _new_values(world, specs) == {ANA: [["vip"]]}
    assert spec_for(specs, VIP.id)["contacts_to_write"] == 0


def test_unchanged_export_plans_nothing_and_writes_nothing(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"], BOB: ["new"]})
    world.export({ANA: ["vip"], BOB: ["new"]})

    assert world.sync() == []
    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


@pytest.mark.parametrize("dry_run", [True, "true"], ids=["bool", "rendered-param"])
def test_dry_run_reports_changes_and_writes_nothing(world: SyncWorld, dry_run: bool | str) -> None:
    world.apply({ANA: ["vip"]})
    world.export({ANA: ["vip", "new"], BOB: ["new"]})
    files_before = world.files()

    specs = world.sync(dry_run=dry_run)

    assert all(spec["dry_run"] is True for spec in specs)
    assert spec_for(specs, NEW.id)["joined"] == 2
    assert world.files() == files_before
    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


# -- guards that stop a run before it writes ----------------------------------------------------------


def test_removing_20_percent_of_the_address_book_stops_naming_the_numbers(world: SyncWorld) -> None:
    book = {f"c{i}@example.com": ["vip"] for i in range(10)}
    world.apply(book)
    world.export(dict(list(book.items())[2:]))

    with pytest.raises(KlaviyoConfigError) as raised:
        world.sync()

    assert "2 of 10" in str(raised.value)
    assert "allow_removals" in str(raised.value)
    world.klaviyo.submit_bulk_import.assert_not_called()


@pytest.mark.parametrize("allow_removals", [True, "true"], ids=["bool", "rendered-param"])
def test_allow_removals_lets_a_large_removal_through(world: SyncWorld, allow_removals: bool | str) -> None:
    book = {f"c{i}@example.com": ["vip"] for i in range(10)}
    world.apply(book)
    world.export(dict(list(book.items())[2:]))

    specs = world.sync(allow_removals=allow_removals)

    assert spec_for(specs, "address-book")["left"] == 2


def test_flow_triggered_by_the_list_stops_the_run_naming_it(world: SyncWorld) -> None:
    world.klaviyo.get_list_flow_triggers.return_value = [
        {"id": "FLOW1", "name": "Welcome series", "status": "live"}
    ]
    world.export({ANA: ["vip"]})

    with pytest.raises(KlaviyoConfigError) as raised:
        world.sync()

    assert "Welcome series" in str(raised.value)
    assert "FLOW1" in str(raised.value)
    assert "allowed_flows" in str(raised.value)


def test_allowed_flow_lets_the_run_through(world: SyncWorld) -> None:
    world.configure(allowed_flows=["FLOW1"])
    world.klaviyo.get_list_flow_triggers.return_value = [
        {"id": "FLOW1", "name": "Welcome series", "status": "live"}
    ]
    world.export({ANA: ["vip"]})

    assert spec_for(world.sync(), VIP.id)["contacts_to_write"] == 1


def test_key_without_flows_read_stops_the_run_saying_how_to_fix_it(world: SyncWorld) -> None:
    world.klaviyo.get_list_flow_triggers.side_effect = KlaviyoPermissionError(
        "klaviyo_default", "reading flow triggers", ["flows:read"]
    )
    world.export({ANA: ["vip"]})

    with pytest.raises(KlaviyoConfigError) as raised:
        world.sync()

    assert "flows:read" in str(raised.value)
    assert "check_flows" in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "old", "new", "move", "not_said"),
    [
        ("list_name", "Nosto Customers", "Nosto Buyers", "renames the Klaviyo list in place", "property"),
        (
            "property_name",
            "nosto_segment",
            "segments",
            "writes every contact's value under the new",
            "renames",
        ),
    ],
    ids=["list-name", "property-name"],
)
def test_name_changed_since_the_applied_state_stops_naming_both_and_what_migrate_does(
    world: SyncWorld, setting: str, old: str, new: str, move: str, not_said: str
) -> None:
    world.apply({ANA: ["vip"]})
    world.configure(**{setting: new})
    world.export({ANA: ["vip"], BOB: ["vip"]})

    with pytest.raises(KlaviyoConfigError) as raised:
        world.sync()

    message = str(raised.value)
    assert f"changes the {setting.replace('_', ' ')} from {old!r} to {new!r}" in message
    assert f"trigger one run with the param migrate=true: it {move}" in message
    assert not_said not in message.split("migrate=true")[1], "it describes only what this migration moves"


def test_a_dry_run_with_a_changed_name_reports_the_stop_and_plans_nothing(
    world: SyncWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    world.apply({ANA: ["vip"]})
    world.configure(property_name="segments")
    world.export({ANA: ["vip"], BOB: ["vip"]})
    with pytest.raises(KlaviyoConfigError) as stopped:
        world.sync()
    capsys.readouterr()

    assert world.sync(dry_run=True) == []

    assert f"A real run would stop: {stopped.value}" in capsys.readouterr().out
    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


# -- review findings: renames of name-configured segments, deleted list, cut-off export ---------------


def test_segment_configured_by_name_survives_its_rename_in_nosto(world: SyncWorld) -> None:
    world.configure(segments=["vip"])
    world.apply({ANA: ["vip"], BOB: ["vip"]})
    renamed = Segment(VIP.id, "VIP customers")
    world.nosto.get_segments.return_value = [renamed, NEW]
    world.export({ANA: ["VIP customers"], BOB: ["VIP customers"]})

    specs = world.sync()

    # Same id, new name: nobody leaves; every member's value carries the new name.
    assert spec_for(specs, VIP.id)["left"] == 0
    assert world.diffs(specs)[VIP.id] == {ANA: ["VIP customers"], BOB: ["VIP customers"]}


def test_deleted_address_book_list_says_how_to_rebuild_it(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"]})
    world.klaviyo.get_list.return_value = None
    world.export({ANA: ["vip"], BOB: ["vip"]})

    with pytest.raises(KlaviyoError, match="Trigger one run with the param full_resync=true"):
        world.sync()


def test_cut_off_export_stops_before_anything_is_written(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"], BOB: ["vip"]})
    data = b'{"email": "ana@example.com", "nosto_segments": ["vip"]}\n{"email": "bob@exa'
    world.nosto.open_export.side_effect = lambda uri=None: contextlib.nullcontext(io.BytesIO(data))
    before = world.files()

    with pytest.raises(IncompleteExportError, match="middle of a line"):
        world.sync()

    assert world.files() == before
    assert all(not getattr(world.klaviyo, name).called for name in KLAVIYO_WRITES)
