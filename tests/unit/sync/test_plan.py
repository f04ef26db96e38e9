from __future__ import annotations

import io
import json
import random

import pytest

from airflow_provider_klaviyo_nosto.sync.export import ExportSnapshot, read_export
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, EMPTY_RECORD, ContactRecord, Segment
from airflow_provider_klaviyo_nosto.sync.plan import SyncPlan, check_removal_threshold, plan_sync
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState

VIP = Segment("5b0000000000000000000001", "vip")
NEW = Segment("5b0000000000000000000002", "new")


def _snapshot(contacts: dict[str, set[str]]) -> ExportSnapshot:
    return ExportSnapshot(contacts={email: frozenset(names) for email, names in contacts.items()})


def _applied(contacts: dict[str, ContactRecord], *segments: Segment, generation: int = 3) -> AppliedState:
    return AppliedState(
        list_id="LIST1",
        list_name="Nosto Customers",
        property_name="nosto_segment",
        generation=generation,
        segments={segment.id: SegmentState(segment.name, generation) for segment in segments},
        contacts=contacts,
    )


def _in(*segments: Segment) -> ContactRecord:
    ordered = sorted(segments, key=lambda segment: segment.id)
    return ContactRecord(True, tuple(s.id for s in ordered), tuple(sorted(s.name for s in ordered)))


def _new_values(plan: SyncPlan) -> dict[str, tuple[str, ...]]:
    return {change.email: change.new.value for changes in plan.changes_by_key.values() for change in changes}


def _owners(plan: SyncPlan) -> dict[str, str]:
    return {change.email: key for key, changes in plan.changes_by_key.items() for change in changes}


def test_b09_normalised_duplicates_give_zero_changes() -> None:
    lines = [
        {"email": "Ana@Example.com", "nosto_segments": ["vip"]},
        {"email": " ana@example.com", "nosto_segments": ["vip"]},
        {"email": "BOB@example.com\t", "nosto_segments": ["vip"]},
        {"email": "bob@example.com", "nosto_segments": ["vip"]},
    ]
    snapshot = read_export(io.BytesIO(b"".join(json.dumps(line).encode() + b"\n" for line in lines)))
    applied = _applied({"ana@example.com": _in(VIP), "bob@example.com": _in(VIP)}, VIP)

    plan = plan_sync(snapshot, [VIP], applied)

    assert plan.unchanged
    assert plan.segment_diffs[VIP.id].joined == 0
    assert plan.segment_diffs[VIP.id].left == 0
    assert plan.address_book.joined == plan.address_book.left == 0


def test_first_run_adds_everyone() -> None:
    snapshot = _snapshot({"ana@example.com": {"vip", "new"}, "bob@example.com": set()})

    plan = plan_sync(snapshot, [VIP, NEW], AppliedState.empty())

    assert plan.generation == 1
    assert _new_values(plan) == {"ana@example.com": ("new", "vip"), "bob@example.com": ()}
    assert _owners(plan) == {"ana@example.com": VIP.id, "bob@example.com": ADDRESS_BOOK_KEY}
    assert plan.address_book.joined == 2
    assert plan.segment_diffs[VIP.id].joined == 1
    assert plan.segment_diffs[NEW.id].members_after == 1


def test_b13_value_is_sorted_union_across_segments() -> None:
    snapshot = _snapshot({"ana@example.com": {"vip", "new", "not chosen"}})

    plan = plan_sync(snapshot, [VIP, NEW], AppliedState.empty())

    (change,) = plan.changes_by_key[VIP.id]
    assert change.new.value == ("new", "vip")
    assert change.new.segment_ids == (VIP.id, NEW.id)
    assert plan.changes_by_key[NEW.id] == []


def test_b13_leaving_one_segment_keeps_the_other_name() -> None:
    applied = _applied({"ana@example.com": _in(VIP, NEW)}, VIP, NEW)
    snapshot = _snapshot({"ana@example.com": {"new"}})

    plan = plan_sync(snapshot, [VIP, NEW], applied)

    assert _new_values(plan) == {"ana@example.com": ("new",)}
    assert _owners(plan) == {"ana@example.com": VIP.id}
    assert plan.segment_diffs[VIP.id].left == 1
    assert plan.segment_diffs[NEW.id].left == 0


def test_b13_leaving_every_segment_empties_the_value() -> None:
    applied = _applied({"ana@example.com": _in(NEW)}, VIP, NEW)
    snapshot = _snapshot({"ana@example.com": set()})

    plan = plan_sync(snapshot, [VIP, NEW], applied)

    (change,) = plan.changes_by_key[NEW.id]
    assert change.new == ContactRecord(True, (), ())
    assert not change.leaves_address_book


def test_b13_two_segments_changed_give_one_change_owned_by_smaller_id() -> None:
    applied = _applied({"ana@example.com": _in(VIP)}, VIP, NEW)
    snapshot = _snapshot({"ana@example.com": {"new"}})

    plan = plan_sync(snapshot, [NEW, VIP], applied)

    assert [change.email for change in plan.changes_by_key[VIP.id]] == ["ana@example.com"]
    assert plan.changes_by_key[NEW.id] == []
    assert _new_values(plan) == {"ana@example.com": ("new",)}
    assert plan.segment_diffs[VIP.id].left == 1
    assert plan.segment_diffs[NEW.id].joined == 1


def test_b14_contact_gone_from_nosto_leaves_address_book_and_value() -> None:
    applied = _applied(
        {"ana@example.com": _in(VIP), "bob@example.com": _in(VIP), "carol@example.com": _in(VIP)}, VIP
    )
    snapshot = _snapshot({"ana@example.com": {"vip"}, "bob@example.com": {"vip"}})

    plan = plan_sync(snapshot, [VIP], applied)

    # The address book's task removes every contact gone from Nosto, whatever segments it was in.
    assert plan.changes_by_key[VIP.id] == []
    (change,) = plan.changes_by_key[ADDRESS_BOOK_KEY]
    assert change.email == "carol@example.com"
    assert change.leaves_address_book
    assert change.new == EMPTY_RECORD
    assert plan.address_book.left == 1
    assert plan.address_book.members_after == 2
    assert plan.segment_diffs[VIP.id].members_after == 2


def test_contact_gone_with_only_address_book_is_owned_by_address_book() -> None:
    applied = _applied({"ana@example.com": _in(), "bob@example.com": _in()}, VIP)
    snapshot = _snapshot({"ana@example.com": set()})

    plan = plan_sync(snapshot, [VIP], applied)

    assert _owners(plan) == {"bob@example.com": ADDRESS_BOOK_KEY}


def test_rename_with_old_name_in_export_removes_nobody_and_warns() -> None:
    renamed = Segment(VIP.id, "VIP customers")
    applied = _applied({"ana@example.com": _in(VIP), "bob@example.com": _in(VIP)}, VIP)
    snapshot = _snapshot({"ana@example.com": {"vip"}, "bob@example.com": {"vip"}})

    plan = plan_sync(snapshot, [renamed], applied)

    diff = plan.segment_diffs[VIP.id]
    assert diff.left == 0
    assert diff.export_name == "vip"
    assert diff.warnings
    assert plan.warnings
    # The value carries the current name, so every member is rewritten once.
    assert _new_values(plan) == {"ana@example.com": ("VIP customers",), "bob@example.com": ("VIP customers",)}
    assert plan.segment_states[VIP.id].name == "vip"
    assert check_removal_threshold(plan, 0.10) == []


def test_rename_with_new_name_in_export_rewrites_every_value() -> None:
    renamed = Segment(VIP.id, "VIP customers")
    applied = _applied({"ana@example.com": _in(VIP, NEW), "bob@example.com": _in(VIP)}, VIP, NEW)
    snapshot = _snapshot({"ana@example.com": {"VIP customers", "new"}, "bob@example.com": {"VIP customers"}})

    plan = plan_sync(snapshot, [renamed, NEW], applied)

    assert _new_values(plan) == {
        "ana@example.com": ("VIP customers", "new"),
        "bob@example.com": ("VIP customers",),
    }
    assert _owners(plan) == {"ana@example.com": VIP.id, "bob@example.com": VIP.id}
    assert plan.segment_diffs[VIP.id].left == 0
    assert plan.segment_diffs[VIP.id].warnings == []
    assert plan.segment_states[VIP.id].name == "VIP customers"


def test_segment_missing_from_export_under_any_name_warns_that_it_looks_empty() -> None:
    applied = _applied({"ana@example.com": _in(VIP)}, VIP)
    snapshot = _snapshot({"ana@example.com": set()})

    plan = plan_sync(snapshot, [VIP], applied)

    assert plan.segment_diffs[VIP.id].left == 1
    assert plan.segment_diffs[VIP.id].warnings
    assert check_removal_threshold(plan, 0.10) != []


def test_narrowed_refresh_leaves_other_segments_as_they_were() -> None:
    applied = _applied({"ana@example.com": _in(VIP), "bob@example.com": _in(NEW)}, VIP, NEW)
    # Per the export ana left vip and bob left new; only new is pushed this run.
    snapshot = _snapshot({"ana@example.com": {"new"}, "bob@example.com": set()})

    plan = plan_sync(snapshot, [VIP, NEW], applied, refresh=[NEW.id])

    assert _new_values(plan) == {"ana@example.com": ("new", "vip"), "bob@example.com": ()}
    assert plan.segment_diffs[VIP.id].joined == plan.segment_diffs[VIP.id].left == 0
    assert plan.segment_diffs[VIP.id].export_name is None
    assert plan.segment_diffs[NEW.id].joined == 1
    assert plan.segment_diffs[NEW.id].left == 1
    assert set(plan.changes_by_key) == {VIP.id, NEW.id, ADDRESS_BOOK_KEY}


def test_narrowed_refresh_of_unchosen_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="not chosen"):
        plan_sync(_snapshot({"ana@example.com": set()}), [VIP], AppliedState.empty(), refresh=[NEW.id])


def test_segment_removed_from_configuration_leaves_every_value() -> None:
    applied = _applied({"ana@example.com": _in(VIP, NEW), "bob@example.com": _in(NEW)}, VIP, NEW)
    snapshot = _snapshot({"ana@example.com": {"vip", "new"}, "bob@example.com": {"new"}})

    plan = plan_sync(snapshot, [VIP], applied)

    assert _new_values(plan) == {"ana@example.com": ("vip",), "bob@example.com": ()}
    # The removed segment has no push task, so its changes go to a chosen key or the address book.
    assert _owners(plan) == {"ana@example.com": ADDRESS_BOOK_KEY, "bob@example.com": ADDRESS_BOOK_KEY}
    removed = plan.segment_diffs[NEW.id]
    assert removed.removed_from_configuration
    assert removed.left == 2
    assert removed.members_after == 0
    assert NEW.id not in plan.segment_states
    assert check_removal_threshold(plan, 0.10) == []


def test_generation_moves_every_key_forward() -> None:
    applied = _applied({"ana@example.com": _in(VIP)}, VIP, NEW, generation=8)

    plan = plan_sync(_snapshot({"ana@example.com": {"vip"}}), [VIP, NEW], applied, refresh=[VIP.id])

    assert plan.generation == 9
    assert {key: state.generation for key, state in plan.segment_states.items()} == {VIP.id: 9, NEW.id: 9}
    assert plan.planned_meta(applied).generation == 9
    assert plan.planned_meta(applied).list_id == "LIST1"


def test_duplicate_chosen_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        plan_sync(_snapshot({"ana@example.com": set()}), [VIP, VIP], AppliedState.empty())


def test_removal_threshold_messages_carry_numbers_not_emails() -> None:
    contacts = {f"user{n}@example.com": _in(VIP) for n in range(20)}
    # 15 stay in vip, one stays in Nosto outside vip, four are gone from Nosto.
    snapshot = _snapshot({f"user{n}@example.com": {"vip"} for n in range(15)} | {"user15@example.com": set()})

    plan = plan_sync(snapshot, [VIP], _applied(contacts, VIP))

    messages = check_removal_threshold(plan, 0.10)
    assert len(messages) == 2
    book, segment = messages
    assert "address book" in book
    assert "4 of 20" in book
    assert "vip" in segment
    assert "5 of 20" in segment
    assert not any("@" in message for message in messages)
    (over_twenty_percent,) = check_removal_threshold(plan, 0.20)
    assert "5 of 20" in over_twenty_percent
    assert check_removal_threshold(plan, 0.25) == []


def test_removal_threshold_allows_exactly_the_threshold() -> None:
    contacts = {f"user{n}@example.com": _in() for n in range(10)}
    snapshot = _snapshot({f"user{n}@example.com": set() for n in range(9)})

    plan = plan_sync(snapshot, [VIP], _applied(contacts, VIP))

    assert check_removal_threshold(plan, 0.10) == []


def test_plan_is_deterministic() -> None:
    applied = _applied({"zed@example.com": _in(VIP), "ana@example.com": _in(NEW)}, VIP, NEW)
    first = plan_sync(
        _snapshot({"bob@example.com": {"vip"}, "ana@example.com": {"vip"}}), [VIP, NEW], applied
    )
    second = plan_sync(
        _snapshot({"ana@example.com": {"vip"}, "bob@example.com": {"vip"}}), [NEW, VIP], applied
    )

    assert first == second
    assert [change.email for change in first.changes_by_key[VIP.id]] == ["ana@example.com", "bob@example.com"]
    assert [change.email for change in first.changes_by_key[ADDRESS_BOOK_KEY]] == ["zed@example.com"]


@pytest.mark.parametrize("seed", range(25))
def test_every_changed_contact_has_exactly_one_owner(seed: int) -> None:
    rng = random.Random(seed)
    segments = [Segment(f"5b{n:022d}", f"segment {n}") for n in range(5)]
    emails = [f"user{n}@example.com" for n in range(60)]
    catalogue = [Segment(s.id, rng.choice([s.name, s.name + " renamed"])) for s in segments]
    chosen = rng.sample(catalogue, rng.randint(1, 5))
    previously = rng.sample(segments, rng.randint(0, 5))
    applied = _applied(
        {
            email: _in(*rng.sample(previously, rng.randint(0, len(previously))))
            for email in rng.sample(emails, 30)
        },
        *previously,
    )
    export_names = [s.name for s in catalogue] + [s.name for s in segments]
    snapshot = _snapshot(
        {email: set(rng.sample(export_names, rng.randint(0, 4))) for email in rng.sample(emails, 40)}
    )
    refresh = rng.choice([None, [s.id for s in rng.sample(chosen, rng.randint(0, len(chosen)))]])

    plan = plan_sync(snapshot, chosen, applied, refresh=refresh)

    seen = [change.email for changes in plan.changes_by_key.values() for change in changes]
    assert len(seen) == len(set(seen))
    assert set(plan.changes_by_key) <= {s.id for s in chosen} | {ADDRESS_BOOK_KEY}
    newcomers = set(snapshot.contacts) - set(applied.contacts)
    departures = {e for e, record in applied.contacts.items() if record.in_address_book} - set(
        snapshot.contacts
    )
    assert newcomers | departures <= set(seen)
    for changes in plan.changes_by_key.values():
        for change in changes:
            assert change.new != change.old
            assert change.new.in_address_book == (change.email in snapshot.contacts)
            assert change.new.value == tuple(
                sorted({s.name for s in chosen if s.id in change.new.segment_ids})
            )
    assert plan.unchanged == (not seen)
