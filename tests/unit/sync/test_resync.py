"""What Klaviyo holds as records (full resync, migration) and the per-segment change report (dry run)."""

from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.sync.export import ExportSnapshot
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, ContactRecord, Segment
from airflow_provider_klaviyo_nosto.sync.plan import plan_sync
from airflow_provider_klaviyo_nosto.sync.report import change_report
from airflow_provider_klaviyo_nosto.sync.resync import mark_not_written, observed_state, observed_value
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState

VIP = Segment("101", "vip")
NEW = Segment("102", "new")


def _applied(contacts: dict[str, ContactRecord]) -> AppliedState:
    return AppliedState(
        list_id="LIST1",
        list_name="Nosto Customers",
        property_name="nosto_segment",
        generation=4,
        segments={VIP.id: SegmentState("vip", 4), NEW.id: SegmentState("new", 4)},
        contacts=contacts,
    )


def _snapshot(contacts: dict[str, set[str]]) -> ExportSnapshot:
    return ExportSnapshot(contacts={email: frozenset(names) for email, names in contacts.items()})


@pytest.mark.parametrize(
    ("raw", "equal_to_sorted_value"),
    [
        (["new", "vip"], True),
        (None, True),
        ([], True),
        (["vip", "new"], False),
        (["vip", "vip"], False),
        ("vip", False),
        ([1, 2], False),
        ({"vip": True}, False),
    ],
    ids=["sorted", "missing", "empty", "unsorted", "duplicated", "string", "numbers", "object"],
)
def test_only_a_sorted_list_of_distinct_names_reads_as_a_value_a_plan_can_want(
    raw: object, equal_to_sorted_value: bool
) -> None:
    wanted = () if raw in (None, []) else ("new", "vip")
    assert (observed_value(raw) == wanted) is equal_to_sorted_value


def test_full_resync_repairs_edits_made_in_klaviyo_and_nothing_else() -> None:
    both = ContactRecord(True, (VIP.id, NEW.id), ("new", "vip"))
    applied = _applied({"ana@example.com": both, "bob@example.com": both, "cy@example.com": both})
    members = [("ana@example.com", ["new", "vip"]), ("Bob@Example.com", ["vip"]), ("x@example.com", None)]
    export = _snapshot(
        {email: {"vip", "new"} for email in ("ana@example.com", "bob@example.com", "cy@example.com")}
    )
    known = set(applied.contacts) | set(export.contacts)
    observed, left_alone = observed_state(applied, members, [], {"vip": VIP.id, "new": NEW.id}, known)

    plan = plan_sync(export, [VIP, NEW], observed)

    changed = {change.email for changes in plan.changes_by_key.values() for change in changes}
    # bob lost a name by hand, cy was taken off the list by hand; x, added by someone else, stays (B14).
    assert changed == {"bob@example.com", "cy@example.com"}
    assert left_alone == 1
    assert (plan.address_book.joined, plan.address_book.left) == (1, 0)


def test_marked_records_are_all_written_again_with_their_value() -> None:
    vip = ContactRecord(True, (VIP.id,), ("vip",))
    book_only = ContactRecord(True, (), ())
    applied = _applied({"ana@example.com": vip, "bob@example.com": book_only})
    marked = AppliedState(**{**applied.__dict__, "contacts": mark_not_written(applied.contacts)})

    plan = plan_sync(_snapshot({"ana@example.com": {"vip"}, "bob@example.com": set()}), [VIP, NEW], marked)

    new = {change.email: change.new for changes in plan.changes_by_key.values() for change in changes}
    assert new == {"ana@example.com": vip, "bob@example.com": book_only}
    assert (plan.segment_diffs[VIP.id].joined, plan.segment_diffs[VIP.id].left) == (0, 0)


def test_change_report_counts_added_removed_and_updated_members_per_segment() -> None:
    vip = ContactRecord(True, (VIP.id,), ("vip",))
    both = ContactRecord(True, (VIP.id, NEW.id), ("new", "vip"))
    applied = _applied({"ana@example.com": vip, "bob@example.com": both, "cy@example.com": vip})
    # ana joins new, bob leaves new, cy is gone from Nosto, dan is new in vip.
    export = _snapshot(
        {"ana@example.com": {"vip", "new"}, "bob@example.com": {"vip"}, "dan@example.com": {"vip"}}
    )

    report = change_report(plan_sync(export, [VIP, NEW], applied))

    counts = {key: (c.added, c.removed, c.updated) for key, c in report.items()}
    assert counts == {VIP.id: (1, 1, 2), NEW.id: (1, 1, 0), ADDRESS_BOOK_KEY: (1, 1, 2)}
    assert report[VIP.id].examples == {
        "added": ["dan@example.com"],
        "removed": ["cy@example.com"],
        "updated": ["ana@example.com", "bob@example.com"],
    }
