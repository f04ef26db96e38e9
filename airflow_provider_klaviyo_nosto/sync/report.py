"""What a plan would do, per segment and for the address book: counts and a few example contacts."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, ContactChange
from airflow_provider_klaviyo_nosto.sync.plan import SyncPlan

#: How many example contacts a report keeps per kind of change.
EXAMPLES = 3


@dataclass
class ChangeCounts:
    """One segment's (or the address book's) share of a plan, from the contacts' point of view.

    :param key: the segment id, or ``address-book``.
    :param added: contacts entering the segment (joining the list, for the address book).
    :param removed: contacts leaving it.
    :param updated: contacts staying in it whose written value changes (a rename, another segment,
        a repair).
    :param examples: ``added``/``removed``/``updated`` -> the first few emails, sorted; normalised
        addresses, to be masked before they are shown anywhere.
    """

    key: str
    added: int = 0
    removed: int = 0
    updated: int = 0
    examples: dict[str, list[str]] = field(
        default_factory=lambda: {"added": [], "removed": [], "updated": []}
    )

    def count(self, kind: str, email: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(email)


def change_report(plan: SyncPlan) -> dict[str, ChangeCounts]:
    """Count, for every segment of the plan and the address book, who is added, removed and updated.

    A contact is counted under every segment it enters, leaves or stays in with a new value, whichever
    push task writes it, so the numbers answer "what happens to this segment's members".

    :param plan: the plan to describe.
    """
    report = {key: ChangeCounts(key) for key in [*plan.segment_diffs, ADDRESS_BOOK_KEY]}
    changes = sorted(
        (change for key_changes in plan.changes_by_key.values() for change in key_changes),
        key=lambda change: change.email,
    )
    for change in changes:
        _count_address_book(report[ADDRESS_BOOK_KEY], change)
        old_ids, new_ids = set(change.old.segment_ids), set(change.new.segment_ids)
        for segment_id in old_ids | new_ids:
            counts = report.get(segment_id)
            if counts is None:
                continue
            if segment_id not in old_ids:
                counts.count("added", change.email)
            elif segment_id not in new_ids:
                counts.count("removed", change.email)
            elif change.value_changed:
                counts.count("updated", change.email)
    return report


def _count_address_book(counts: ChangeCounts, change: ContactChange) -> None:
    if change.joins_address_book:
        counts.count("added", change.email)
    elif change.leaves_address_book:
        counts.count("removed", change.email)
    elif change.value_changed:
        counts.count("updated", change.email)
