"""Optional Klaviyo targets per Nosto segment: a list that mirrors its members, a Klaviyo segment on the property.

Pure logic only: which chosen segments get a target, the targets' names and definitions, what the applied
state remembers about them (``targets.json``), and each list's membership diff. The operators do the I/O.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_klaviyo_nosto.sync.model import ContactChange, ContactRecord, Segment

TARGETS_FORMAT = 1
TARGETS_FILE = "targets.json"
#: Folder of the per-list membership files: ``segment-lists/<segment id>.json.gz``.
MEMBERS_DIR = "segment-lists"
#: Diff key prefix of a segment list's membership diff: ``diffs/<generation>/list-<segment id>.json.gz``.
LIST_DIFF_PREFIX = "list-"

DEFAULT_LIST_PREFIX = "Nosto list: "
DEFAULT_SEGMENT_PREFIX = "Nosto: "


@dataclass(frozen=True)
class RememberedList:
    """A segment list the sync found or created.

    :param id: the Klaviyo list id.
    :param name: the list's name when the sync last named it.
    """

    id: str
    name: str


@dataclass(frozen=True)
class RememberedSegment:
    """A Klaviyo segment the sync found or created, and the definition it last gave it.

    :param id: the Klaviyo segment id.
    :param name: the Klaviyo segment's name.
    :param value: the Nosto segment name its condition looks for.
    :param property_name: the profile property its condition reads.
    """

    id: str
    name: str
    value: str
    property_name: str


@dataclass
class TargetState:
    """What ``targets.json`` remembers, keyed by Nosto segment id."""

    lists: dict[str, RememberedList] = field(default_factory=dict)
    segments: dict[str, RememberedSegment] = field(default_factory=dict)


@dataclass
class ListDiff:
    """How one segment list's membership must change.

    :param segment_id: the Nosto segment id.
    :param add: emails (normalised) to add.
    :param remove: emails to remove.
    :param reconcile: the list's membership is not known (new, found by name, or an earlier update did not
        finish): ``add`` holds every member, and whoever applies it also removes every other profile the
        list holds.
    """

    segment_id: str
    add: list[str]
    remove: list[str]
    reconcile: bool = False

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.reconcile)


def select_segments(
    option: bool | Sequence[str],
    chosen: Sequence[Segment],
    key: str,
    previous_names: Mapping[str, str] | None = None,
    deleted: Mapping[str, str] | None = None,
) -> list[Segment]:
    """Return the chosen segments an option applies to: ``True`` = all, a list = those ids or names.

    :param option: the configured value.
    :param chosen: the chosen segments, with their current names.
    :param key: the option's name, for the error.
    :param previous_names: name last applied -> segment id, so that a segment named in the option keeps
        being found after it is renamed in Nosto (current ids and names win).
    :param deleted: id or name -> id of segments deleted in Nosto; entries naming them are skipped (see
        :func:`deleted_entries`).
    :raises ValueError: when the list names a segment that is not chosen.
    """
    if option is True:
        return list(chosen)
    if not option:
        return []
    by_key = _by_key(chosen, previous_names)
    unknown = [item for item in option if item not in by_key and item not in (deleted or {})]
    if unknown:
        raise ValueError(
            f"{key!r} names {', '.join(map(repr, unknown))}, which is not among the chosen 'segments'; "
            "list chosen segment ids (or names), or set it to true for all of them"
        )
    picked = {by_key[item].id: by_key[item] for item in option if item in by_key}
    return sorted(picked.values(), key=lambda segment: segment.id)


def deleted_entries(
    option: bool | Sequence[str],
    chosen: Sequence[Segment],
    deleted: Mapping[str, str],
    previous_names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The entries of an option's list that name a segment deleted in Nosto (and no chosen one): entry -> id.

    :param deleted: id or name -> id of the segments deleted in Nosto.
    """
    if isinstance(option, bool):
        return {}
    by_key = _by_key(chosen, previous_names)
    return {item: deleted[item] for item in option if item not in by_key and item in deleted}


def _by_key(chosen: Sequence[Segment], previous_names: Mapping[str, str] | None) -> dict[str, Segment]:
    """Every id and name an option may name a chosen segment by; current ids, then current names, win."""
    by_id = {segment.id: segment for segment in chosen}
    return (
        {
            name: by_id[segment_id]
            for name, segment_id in (previous_names or {}).items()
            if segment_id in by_id
        }
        | by_id
        | {segment.name: segment for segment in chosen}
    )


def target_name(prefix: str, segment_name: str) -> str:
    """The Klaviyo name of a segment's list or Klaviyo segment: the prefix, then the Nosto name."""
    return f"{prefix}{segment_name}"


def contains_definition(property_name: str, value: str) -> dict[str, Any]:
    """A Klaviyo segment definition: the list-valued custom property contains ``value``.

    Written as Klaviyo's schema spells it (``ProfilePropertyCondition`` with a
    ``ListContainsOperatorListContainsFilter``); custom properties are addressed ``properties['name']``.

    :raises ValueError: for a property name the ``properties['...']`` form cannot hold.
    """
    if "'" in property_name or "]" in property_name:
        raise ValueError(f"the property name {property_name!r} cannot be used in a Klaviyo segment condition")
    condition = {
        "type": "profile-property",
        "property": f"properties['{property_name}']",
        "filter": {"type": "list", "operator": "contains", "value": value},
    }
    return {"condition_groups": [{"conditions": [condition]}]}


def desired_members(
    contacts: Mapping[str, ContactRecord],
    changes: Iterable[ContactChange],
    segment_ids: Collection[str],
) -> dict[str, set[str]]:
    """Each segment's members once a plan is applied: the applied records, overridden by the changes.

    :param contacts: the applied state's contacts.
    :param changes: every change of the plan (all push keys).
    :param segment_ids: the segments to compute.
    """
    wanted = set(segment_ids)
    members: dict[str, set[str]] = {segment_id: set() for segment_id in wanted}
    changed = {change.email: change.new for change in changes}
    by_record: dict[ContactRecord, tuple[str, ...]] = {}

    def add(email: str, record: ContactRecord) -> None:
        ids = by_record.get(record)
        if ids is None:
            ids = by_record[record] = tuple(s for s in record.segment_ids if s in wanted)
        for segment_id in ids:
            members[segment_id].add(email)

    for email, record in contacts.items():
        add(email, changed.get(email, record))
    for email, record in changed.items():
        if email not in contacts:
            add(email, record)
    return members


def list_diff(segment_id: str, desired: set[str], remembered: set[str] | None) -> ListDiff:
    """Compare a list's desired members with those remembered; ``None`` = unknown, reconcile.

    :param segment_id: the Nosto segment id.
    :param desired: the members it should hold.
    :param remembered: the members it was confirmed to hold, or ``None``.
    """
    if remembered is None:
        return ListDiff(segment_id, sorted(desired), [], reconcile=True)
    return ListDiff(segment_id, sorted(desired - remembered), sorted(remembered - desired))


def dump_targets(state: TargetState) -> bytes:
    document = {
        "format": TARGETS_FORMAT,
        "lists": {key: {"id": item.id, "name": item.name} for key, item in sorted(state.lists.items())},
        "segments": {
            key: {"id": item.id, "name": item.name, "value": item.value, "property_name": item.property_name}
            for key, item in sorted(state.segments.items())
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def load_targets(data: bytes) -> TargetState:
    """Parse ``targets.json``.

    :raises ValueError: naming what is wrong.
    """
    try:
        document = json.loads(data)
        if document.get("format") != TARGETS_FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        return TargetState(
            lists={key: RememberedList(str(v["id"]), str(v["name"])) for key, v in document["lists"].items()},
            segments={
                key: RememberedSegment(str(v["id"]), str(v["name"]), str(v["value"]), str(v["property_name"]))
                for key, v in document["segments"].items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"corrupt applied-state file {TARGETS_FILE}: {err}") from None


def dump_list_diff(diff: ListDiff) -> bytes:
    document = {
        "segment_id": diff.segment_id,
        "reconcile": diff.reconcile,
        "add": diff.add,
        "remove": diff.remove,
    }
    return _gzip_json(document)


def load_list_diff(data: bytes) -> ListDiff:
    document = _gunzip_json(data, "list diff")
    return ListDiff(
        str(document["segment_id"]),
        list(document["add"]),
        list(document["remove"]),
        bool(document["reconcile"]),
    )


def dump_members(emails: Iterable[str]) -> bytes:
    return _gzip_json(sorted(set(emails)))


def load_members(data: bytes) -> set[str]:
    return set(_gunzip_json(data, "segment list members"))


def _gzip_json(document: Any) -> bytes:
    buffer = io.BytesIO()
    # mtime 0: equal content, equal bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return buffer.getvalue()


def _gunzip_json(data: bytes, part: str) -> Any:
    try:
        return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"corrupt applied-state file ({part}): {err}") from None
