"""A full resync fills each segment list from what Klaviyo and the export say, not from a lost applied state."""

from __future__ import annotations

from airflow_provider_klaviyo_nosto.operators.segment_targets import TargetFiles
from tests.unit.operators.world import LIST_ID, VIP, SyncWorld

ANA = "ana@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"


def test_full_resync_over_an_empty_state_keeps_every_segment_member_in_the_segment_list(
    world: SyncWorld,
) -> None:
    # The state folder is new (docs/state-store.md: point state_uri at a new folder), while Klaviyo already
    # holds the address book with the right values; the export agrees with Klaviyo for Ana and Bob.
    world.configure(segment_lists=[VIP.id])
    world.export({ANA: ["vip"], BOB: ["vip"], CAROL: ["vip"]})
    world.klaviyo.iter_list_profiles.side_effect = lambda list_id, prop: iter(
        [(ANA, ["vip"]), (BOB, ["vip"])] if list_id == LIST_ID else []
    )
    world.klaviyo.iter_profiles.side_effect = lambda emails, prop: iter([])
    world.klaviyo.iter_profile_emails.side_effect = lambda updated_after=None: iter([])
    world.klaviyo.find_lists_by_name.return_value = []
    world.klaviyo.create_list.return_value = "VIPLIST"

    specs = world.sync(full_resync=True)

    diff = TargetFiles(world.state_uri).read_diff(specs[0]["generation"], VIP.id)
    assert diff is not None
    assert diff.reconcile
    # The list is made to hold exactly the segment's members: all three, not only the one being written.
    assert sorted(diff.add) == [ANA, BOB, CAROL]
