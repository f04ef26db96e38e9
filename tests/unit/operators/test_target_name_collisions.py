"""Per-segment list names that collide with the address book's or with each other stop the run before writing."""

from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.sync.model import Segment
from tests.unit.operators.world import KLAVIYO_WRITES, LIST_ID, NEW, VIP, SyncWorld

ANA = "ana@example.com"
BOB = "bob@example.com"


def test_a_segment_list_named_like_the_address_book_stops_before_writing(world: SyncWorld) -> None:
    # An empty prefix makes segment "vip"'s list name equal the address book's: matching that list to the
    # segment would remove every other contact from the address book.
    world.configure(list_name="vip", segment_lists=[VIP.id], segment_list_prefix="")
    world.export({ANA: ["vip"], BOB: []})
    world.klaviyo.find_lists_by_name.return_value = [LIST_ID]

    with pytest.raises(KlaviyoConfigError, match="'vip'.*address book|address book.*'vip'"):
        world.sync()

    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


def test_two_segment_lists_with_one_name_stop_before_writing(world: SyncWorld) -> None:
    world.nosto.get_segments.return_value = [VIP, Segment(NEW.id, VIP.name)]
    world.configure(segment_lists=True)
    world.export({ANA: ["vip"], BOB: []})

    with pytest.raises(KlaviyoConfigError, match=f"{VIP.id}.*{NEW.id}"):
        world.sync()

    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


def test_two_klaviyo_segments_with_one_name_stop_before_writing(world: SyncWorld) -> None:
    # Both would be created as 'Nosto: vip', and a later run could not tell which one is whose.
    world.nosto.get_segments.return_value = [VIP, Segment(NEW.id, VIP.name)]
    world.configure(klaviyo_segments=True)
    world.export({ANA: ["vip"], BOB: []})

    with pytest.raises(
        KlaviyoConfigError, match=f"Klaviyo segments.*'Nosto: vip' for segments {VIP.id}, {NEW.id}"
    ):
        world.sync()

    for write in (*KLAVIYO_WRITES, "create_segment"):
        getattr(world.klaviyo, write).assert_not_called()


@pytest.mark.parametrize(
    ("config", "segments"),
    [
        ({"klaviyo_segments": True}, [VIP, Segment(NEW.id, VIP.name)]),
        ({"segment_lists": True}, [VIP, Segment(NEW.id, VIP.name)]),
        ({"list_name": "vip", "segment_lists": [VIP.id], "segment_list_prefix": ""}, None),
    ],
    ids=["two-klaviyo-segments", "two-segment-lists", "segment-list-named-like-the-address-book"],
)
def test_a_dry_run_reports_a_name_collision_in_the_real_runs_words_and_plans_no_target(
    world: SyncWorld, capsys: pytest.CaptureFixture[str], config: dict, segments: list[Segment] | None
) -> None:
    if segments:
        world.nosto.get_segments.return_value = segments
    world.configure(**config)
    world.export({ANA: ["vip"], BOB: []})
    world.klaviyo.find_lists_by_name.return_value = [LIST_ID]
    with pytest.raises(KlaviyoConfigError) as stopped:
        world.sync()
    capsys.readouterr()

    world.sync(dry_run=True)

    out = capsys.readouterr().out
    assert f"A real run would stop: {stopped.value}" in out
    # Nothing the real run refuses is described as if it would happen (such as adopting the address book).
    rest = out.replace(str(stopped.value), "")
    assert "Segment list " not in rest
    assert "Klaviyo segment " not in rest
    assert "for segment" not in rest
    for write in (*KLAVIYO_WRITES, "create_segment"):
        getattr(world.klaviyo, write).assert_not_called()
