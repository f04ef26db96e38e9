"""Planning a run: what each contact should hold, compared with what Klaviyo was confirmed to hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, is_not

from airflow_provider_klaviyo_nosto.sync.export import ExportSnapshot
from airflow_provider_klaviyo_nosto.sync.model import (
    ADDRESS_BOOK_KEY,
    EMPTY_RECORD,
    ContactChange,
    ContactRecord,
    Segment,
)
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState


@dataclass
class SegmentDiff:
    """Counts of one segment's (or the address book's) membership change in a plan.

    ``joined`` and ``left`` count every contact whose membership changed, whichever push task owns
    the contact's write.

    :param segment_id: the Nosto segment id, or ``address-book``.
    :param name: the segment's current catalogue name (the last applied one for a segment removed
        from the configuration).
    :param joined: contacts entering the segment (added to the list, for the address book).
    :param left: contacts leaving it (removed from the list, for the address book).
    :param members_before: members according to the applied state.
    :param members_after: members once the plan is applied.
    :param export_name: the name looked up in the export, ``None`` when the segment was not read
        from the export this run.
    :param warnings: what the operator should be told about this segment.
    :param refreshed: whether this run took the segment's membership from the export.
    :param removed_from_configuration: the segment is no longer chosen; its name leaves every value.
    """

    segment_id: str
    name: str
    joined: int = 0
    left: int = 0
    members_before: int = 0
    members_after: int = 0
    export_name: str | None = None
    warnings: list[str] = field(default_factory=list)
    refreshed: bool = False
    removed_from_configuration: bool = False


@dataclass
class SyncPlan:
    """Everything one run will write, split by the push task that writes it.

    :param generation: this plan's generation, one above the applied state's.
    :param changes_by_key: push key (segment id or ``address-book``) -> the changes it writes, sorted
        by email. Every chosen segment and ``address-book`` has a key, possibly with no changes;
        every changed contact is in exactly one list.
    :param segment_diffs: segment id -> counts, for chosen segments and those removed from the
        configuration.
    :param address_book: counts for the address-book list.
    :param unchanged: nothing at all changes.
    :param warnings: every warning of the segments and the address book.
    :param segment_states: what ``meta.json`` should remember per chosen segment once this plan is
        handed to the push tasks.
    """

    generation: int
    changes_by_key: dict[str, list[ContactChange]]
    segment_diffs: dict[str, SegmentDiff]
    address_book: SegmentDiff
    unchanged: bool
    warnings: list[str]
    segment_states: dict[str, SegmentState] = field(default_factory=dict)

    @property
    def changed_contacts(self) -> int:
        return sum(len(changes) for changes in self.changes_by_key.values())

    def planned_meta(self, applied: AppliedState) -> AppliedState:
        """Return the ``meta.json`` content to write when handing this plan out (no contacts).

        Every key's generation moves to this plan's, so a push still holding an older diff is stale
        and cannot overwrite what this plan writes.

        :param applied: the state the plan was made from; its list and properties are kept.
        """
        return AppliedState(
            list_id=applied.list_id,
            list_name=applied.list_name,
            property_name=applied.property_name,
            generation=self.generation,
            segments=dict(self.segment_states),
            former_properties=applied.former_properties,
        )


@dataclass(slots=True)
class _Outcome:
    """What happens to every contact sharing one (export names, applied record) pair."""

    new: ContactRecord
    owner: str | None
    joined: tuple[str, ...]
    left: tuple[str, ...]
    joins_book: bool = False
    leaves_book: bool = False
    contacts: int = 0


def plan_sync(
    snapshot: ExportSnapshot,
    chosen: Sequence[Segment],
    applied: AppliedState,
    *,
    refresh: Collection[str] | None = None,
) -> SyncPlan:
    """Compare the export with the applied state and decide every contact's new record and owner.

    A contact's new record has ``in_address_book`` set when the contact is in the export; its
    segments are the export's membership for refreshed segments and the applied membership for
    chosen segments this run does not refresh; its value is the sorted current names of those
    segments. Segments no longer chosen drop out of every record. A contact whose new record
    differs from the applied one is written once, by the smallest chosen segment id whose
    membership or name changed for it, else by ``address-book``.

    :param snapshot: the parsed export.
    :param chosen: the configured segments with their current catalogue names.
    :param applied: what Klaviyo was confirmed to hold (or, for a full resync, what it holds).
    :param refresh: ids of the chosen segments to take from the export this run; ``None`` for all.
    """
    current_names = _chosen_names(chosen)
    refreshed = _refreshed_ids(current_names, refresh)
    kept = frozenset(current_names) - refreshed

    # Records are shared objects: counting them by identity first hashes each distinct record once
    # instead of once per contact.
    applied_values = applied.contacts.values()
    record_by_id = dict(zip(map(id, applied_values), applied_values, strict=True))
    applied_records: Counter[ContactRecord] = Counter()
    for record_id, count in Counter(map(id, applied_values)).items():
        applied_records[record_by_id[record_id]] += count
    members_before = _members_before(applied_records)
    removed = sorted((set(applied.segments) | set(members_before)) - set(current_names))

    name_sizes = snapshot.segment_sizes()
    diffs = {
        segment_id: _chosen_diff(
            segment_id, name, segment_id in refreshed, applied, members_before, name_sizes
        )
        for segment_id, name in sorted(current_names.items())
    }
    for segment_id in removed:
        diffs[segment_id] = _removed_diff(segment_id, applied, members_before)
    address_book = SegmentDiff(
        ADDRESS_BOOK_KEY,
        ADDRESS_BOOK_KEY,
        members_before=sum(count for record, count in applied_records.items() if record.in_address_book),
        refreshed=True,
    )
    warnings = _duplicate_export_names(diffs)

    planner = _ContactPlanner(current_names, kept, diffs)
    changes_by_key: dict[str, list[ContactChange]] = {
        key: [] for key in [*sorted(current_names), ADDRESS_BOOK_KEY]
    }
    outcomes: dict[tuple[int | None, int], _Outcome] = {}
    export_contacts = snapshot.contacts
    applied_contacts = applied.contacts

    # One look-up per export contact, inside map(), takes its applied record out of a copy of the applied
    # contacts, so what is left in the copy afterwards are the contacts gone from the export.
    emails, export_names = list(export_contacts), list(export_contacts.values())
    gone = applied_contacts.copy()
    olds = list(map(gone.pop, emails, repeat(EMPTY_RECORD)))

    # Contacts sharing an export name set and an applied record share an outcome, so the work per
    # contact is a dictionary look-up; only changed contacts cost an object each. On a normal run the
    # loop sees only the contacts that may have changed.
    found: Iterable[tuple[str, frozenset[str], ContactRecord]] = zip(emails, export_names, olds, strict=True)
    if not kept:
        found = compress(found, planner.may_differ(export_names, olds, applied_records))
    for email, names, old in found:
        outcome_key: tuple[int | None, int] = (id(names), id(old))
        outcome = outcomes.get(outcome_key)
        if outcome is None:
            outcome = outcomes[outcome_key] = planner.outcome(names, old)
        outcome.contacts += 1
        if outcome.owner is not None:
            changes_by_key[outcome.owner].append(ContactChange(email, old, outcome.new))

    unreadable = snapshot.unreadable
    # A contact on a line with unreadable segment names is still in Nosto: it keeps what was applied.
    for email, old in gone.items():
        if email in unreadable:
            continue
        gone_key: tuple[int | None, int] = (None, id(old))
        outcome = outcomes.get(gone_key)
        if outcome is None:
            outcome = outcomes[gone_key] = planner.outcome(None, old)
        outcome.contacts += 1
        if outcome.owner is not None:
            changes_by_key[outcome.owner].append(ContactChange(email, old, outcome.new))

    _count_changes(outcomes.values(), diffs, address_book)
    for changes in changes_by_key.values():
        changes.sort(key=attrgetter("email"))

    generation = applied.generation + 1
    for diff in diffs.values():
        warnings.extend(diff.warnings)
    return SyncPlan(
        generation=generation,
        changes_by_key=changes_by_key,
        segment_diffs=diffs,
        address_book=address_book,
        unchanged=not any(changes_by_key.values()),
        warnings=warnings,
        segment_states=_segment_states(current_names, diffs, applied, generation),
    )


def check_removal_threshold(plan: SyncPlan, threshold: float) -> list[str]:
    """Return one message per list or segment that would lose more than ``threshold`` of its members.

    An empty list means the plan may be applied. Segments removed from the configuration are left
    out: emptying them is what removing them asks for.

    :param plan: the plan to check.
    :param threshold: the largest allowed share of removals, e.g. ``0.10``.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"the removal threshold must be between 0 and 1, got {threshold}")
    problems = []
    for diff in [plan.address_book, *plan.segment_diffs.values()]:
        if diff.removed_from_configuration or diff.members_before == 0:
            continue
        share = diff.left / diff.members_before
        if share > threshold:
            label = (
                "address book"
                if diff.segment_id == ADDRESS_BOOK_KEY
                else f"segment {diff.name!r} ({diff.segment_id})"
            )
            problems.append(
                f"{label}: {diff.left} of {diff.members_before} members would be removed ({share:.1%}), "
                f"more than the allowed {threshold:.1%}"
            )
    return problems


class _ContactPlanner:
    """Computes the outcome for one (export names, applied record) pair."""

    def __init__(
        self, current_names: dict[str, str], kept: frozenset[str], diffs: dict[str, SegmentDiff]
    ) -> None:
        self._current_names = current_names
        self._kept = kept
        self._ids_by_export_name: dict[str, list[str]] = {}
        for diff in diffs.values():
            if diff.refreshed and diff.export_name is not None:
                self._ids_by_export_name.setdefault(diff.export_name, []).append(diff.segment_id)
        self._records: dict[ContactRecord, ContactRecord] = {}
        # With every chosen segment refreshed, the desired record depends on the export names alone.
        self._by_export_names: dict[frozenset[str] | None, ContactRecord] = {}

    def outcome(self, export_names: frozenset[str] | None, old: ContactRecord) -> _Outcome:
        new = self._desired(export_names, old)
        if new == old:
            return _Outcome(old, None, (), ())

        old_ids, new_ids = set(old.segment_ids), set(new.segment_ids)
        joined = tuple(sorted(new_ids - old_ids))
        left = tuple(sorted(old_ids - new_ids))
        renamed = {
            segment_id for segment_id in new_ids & old_ids if self._current_names[segment_id] not in old.value
        }
        leaves_book = old.in_address_book and not new.in_address_book
        owners = (set(joined) | set(left) | renamed) & self._current_names.keys()
        # Contacts gone from Nosto are the address book's: one task looks up and removes them all, in the
        # fewest calls, instead of each segment they were in doing its own.
        owner = min(owners) if owners and not leaves_book else ADDRESS_BOOK_KEY
        return _Outcome(
            new,
            owner,
            joined,
            left,
            joins_book=new.in_address_book and not old.in_address_book,
            leaves_book=leaves_book,
        )

    def may_differ(
        self,
        export_names: list[frozenset[str]],
        olds: list[ContactRecord],
        applied_records: Iterable[ContactRecord],
    ) -> Iterator[bool]:
        """Say, for each contact, whether its desired record is not its applied record object.

        Only for runs that refresh every chosen segment, where the desired record depends on the export
        names alone. Desired records are the applied record objects wherever they are equal, so an
        unchanged contact is told by identity, inside ``map``, without a Python step per contact.
        A contact marked may still turn out unchanged (records equal but not shared).
        """
        for record in (EMPTY_RECORD, *applied_records):
            self._records.setdefault(record, record)
        desired = {names: self._desired(names, EMPTY_RECORD) for names in set(export_names)}
        return map(is_not, map(desired.__getitem__, export_names), olds)

    def _desired(self, export_names: frozenset[str] | None, old: ContactRecord) -> ContactRecord:
        if not self._kept and export_names in self._by_export_names:
            return self._by_export_names[export_names]
        segment_ids = {segment_id for segment_id in old.segment_ids if segment_id in self._kept}
        if export_names is not None:
            for name in export_names:
                segment_ids.update(self._ids_by_export_name.get(name, ()))
        record = ContactRecord(
            in_address_book=export_names is not None,
            segment_ids=tuple(sorted(segment_ids)),
            value=tuple(sorted({self._current_names[segment_id] for segment_id in segment_ids})),
        )
        record = self._records.setdefault(record, record)
        if not self._kept:
            self._by_export_names[export_names] = record
        return record


def _chosen_names(chosen: Sequence[Segment]) -> dict[str, str]:
    names: dict[str, str] = {}
    for segment in chosen:
        if segment.id in names:
            raise ValueError(f"segment {segment.id} is chosen twice")
        if segment.id == ADDRESS_BOOK_KEY:
            raise ValueError(f"{ADDRESS_BOOK_KEY!r} is reserved and cannot be a segment id")
        names[segment.id] = segment.name
    return names


def _refreshed_ids(current_names: dict[str, str], refresh: Collection[str] | None) -> frozenset[str]:
    if refresh is None:
        return frozenset(current_names)
    unknown = sorted(set(refresh) - current_names.keys())
    if unknown:
        # A narrowed run may only pick among chosen segments; it never adds or removes one.
        raise ValueError(f"segments to refresh are not chosen in the configuration: {', '.join(unknown)}")
    return frozenset(refresh)


def _members_before(applied_records: Counter[ContactRecord]) -> Counter[str]:
    members: Counter[str] = Counter()
    for record, count in applied_records.items():
        for segment_id in record.segment_ids:
            members[segment_id] += count
    return members


def _chosen_diff(
    segment_id: str,
    name: str,
    refreshed: bool,
    applied: AppliedState,
    members_before: Counter[str],
    name_sizes: Counter[str],
) -> SegmentDiff:
    diff = SegmentDiff(segment_id, name, members_before=members_before[segment_id], refreshed=refreshed)
    if not refreshed:
        return diff

    previous = applied.segments.get(segment_id)
    if name_sizes[name] > 0:
        diff.export_name = name
    elif previous is not None and previous.name != name and name_sizes[previous.name] > 0:
        # The export is written once a day and can predate a rename in the catalogue; reading the
        # old name keeps the members instead of removing them all.
        diff.export_name = previous.name
        diff.warnings.append(
            f"segment {name!r} ({segment_id}) is not in the export under its current name; "
            f"used its previous name {previous.name!r} (the export is older than the catalogue)"
        )
    else:
        diff.export_name = name
        if diff.members_before > 0:
            diff.warnings.append(
                f"segment {name!r} ({segment_id}) has no members in the export "
                f"(it had {diff.members_before}); it now looks empty"
            )
    return diff


def _removed_diff(segment_id: str, applied: AppliedState, members_before: Counter[str]) -> SegmentDiff:
    previous = applied.segments.get(segment_id)
    name = previous.name if previous is not None else segment_id
    diff = SegmentDiff(
        segment_id,
        name,
        members_before=members_before[segment_id],
        removed_from_configuration=True,
    )
    if diff.members_before:
        diff.warnings.append(
            f"segment {name!r} ({segment_id}) is no longer chosen; "
            f"its name leaves the value of its {diff.members_before} members"
        )
    return diff


def _duplicate_export_names(diffs: dict[str, SegmentDiff]) -> list[str]:
    ids_by_name: dict[str, list[str]] = {}
    for diff in diffs.values():
        if diff.export_name is not None:
            ids_by_name.setdefault(diff.export_name, []).append(diff.segment_id)
    return [
        f"segments {', '.join(ids)} share the export name {name!r}; they get the same members"
        for name, ids in sorted(ids_by_name.items())
        if len(ids) > 1
    ]


def _count_changes(
    outcomes: Collection[_Outcome], diffs: dict[str, SegmentDiff], address_book: SegmentDiff
) -> None:
    for outcome in outcomes:
        if outcome.owner is None:
            continue
        for segment_id in outcome.joined:
            diffs[segment_id].joined += outcome.contacts
        for segment_id in outcome.left:
            diffs[segment_id].left += outcome.contacts
        if outcome.joins_book:
            address_book.joined += outcome.contacts
        if outcome.leaves_book:
            address_book.left += outcome.contacts
    for diff in diffs.values():
        diff.members_after = diff.members_before + diff.joined - diff.left
    address_book.members_after = address_book.members_before + address_book.joined - address_book.left


def _segment_states(
    current_names: dict[str, str],
    diffs: dict[str, SegmentDiff],
    applied: AppliedState,
    generation: int,
) -> dict[str, SegmentState]:
    states = {}
    for segment_id, name in sorted(current_names.items()):
        previous = applied.segments.get(segment_id)
        # Remember the name the export used, so that a run before the export catches up with a
        # rename still finds the members; unrefreshed segments keep what they had.
        remembered = diffs[segment_id].export_name or (previous.name if previous is not None else name)
        former: tuple[str, ...] = ()
        if previous is not None:
            former = tuple(
                dict.fromkeys(item for item in (*previous.former_names, previous.name) if item != remembered)
            )
        states[segment_id] = SegmentState(name=remembered, generation=generation, former_names=former)
    return states
