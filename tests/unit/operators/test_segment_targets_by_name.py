"""A segment list or Klaviyo segment chosen by name keeps working after the segment is renamed in Nosto."""

from __future__ import annotations

from airflow_provider_klaviyo_nosto.sync.model import Segment
from tests.unit.operators.world import NEW, VIP, SyncWorld

ANA = "ana@example.com"


def test_segment_list_chosen_by_name_follows_a_rename_in_nosto(world: SyncWorld) -> None:
    # Like 'segments' (a name resolved once keeps its id), a rename in Nosto must not stop the twice-daily sync.
    world.configure(segments=["vip", NEW.id], segment_lists=["vip"], klaviyo_segments=["vip"])
    world.klaviyo.find_lists_by_name.return_value = []
    world.klaviyo.create_list.return_value = "VIPLIST"
    world.klaviyo.find_segment_by_name.return_value = None
    world.klaviyo.create_segment.return_value = "KSEG"
    world.klaviyo.get_segment_flow_triggers.return_value = []
    world.klaviyo.iter_profile_emails.side_effect = lambda updated_after=None: iter([])
    world.apply({ANA: ["vip"]})
    world.nosto.get_segments.return_value = [Segment(VIP.id, "vip renamed"), NEW]
    world.export({ANA: ["vip renamed"]})

    world.sync()

    world.klaviyo.rename_list.assert_called_once_with("VIPLIST", "Nosto list: vip renamed")
    world.klaviyo.update_segment.assert_called_once()
    assert world.klaviyo.update_segment.call_args.args[:2] == ("KSEG", "Nosto: vip renamed")


def test_segment_chosen_by_name_keeps_syncing_on_every_run_after_renames_in_nosto(world: SyncWorld) -> None:
    # SPEC 2: a name is resolved to its id once; the operator's promise: renaming it in Nosto does not stop
    # the sync. Not only the first run after the rename: every later one, and after a second rename.
    world.configure(segments=["vip", NEW.id], segment_lists=["vip"])
    world.klaviyo.find_lists_by_name.return_value = []
    world.klaviyo.create_list.return_value = "VIPLIST"
    world.klaviyo.iter_profile_emails.side_effect = lambda updated_after=None: iter([])
    world.apply({ANA: ["vip"]})
    world.nosto.get_segments.return_value = [Segment(VIP.id, "vip renamed"), NEW]
    world.apply({ANA: ["vip renamed"]})
    world.apply({ANA: ["vip renamed"], "bob@example.com": ["vip renamed"]})
    world.nosto.get_segments.return_value = [Segment(VIP.id, "vip again"), NEW]
    world.apply({ANA: ["vip again"]})
    world.export({ANA: ["vip again"], "bob@example.com": ["vip again"]})

    specs = world.sync()

    assert world.diffs(specs) == {VIP.id: {"bob@example.com": ["vip again"]}}
