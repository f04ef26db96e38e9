"""The applied state: what Klaviyo confirmed, kept as files in object storage.

Layout under the state folder (see ``docs/architecture.md``)::

    meta.json                                 list, property, generation, segments {id: {name, generation}}
    contacts.jsonl.gz                         [in_address_book (0|1), [segment ids], [value names], [emails]]
    journal/<generation:08d>-<key>.jsonl.gz   [email, in_address_book, [segment ids], [value names]]: what one
                                              push task got confirmed
    diffs/<generation:08d>/<key>.jsonl.gz     [email, new_in_book, [new ids], [new names],
                                               old_in_book, [old ids], [old names]]
    progress/<generation:08d>-<key>.json      {"batches": {index: {"job_id", ...}}, ...} of one push
    email-aliases.json                        {"scanned_at", "aliases": {normalised email: Klaviyo's spelling}}

Every reader and writer here takes a binary stream, so the caller decides where the bytes live;
gzip is written always and detected on read. A corrupt file raises :class:`StateFileError` naming
the file and line, never the email on it.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import contains
from typing import IO, Any

import msgspec

from airflow_provider_klaviyo_nosto.sync.export import open_export_stream, read_lines
from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactChange, ContactRecord

META_FORMAT = 1
META_FILE = "meta.json"
CONTACTS_FILE = "contacts.jsonl.gz"
ALIASES_FILE = "email-aliases.json"
JOURNAL_DIR = "journal"
DIFFS_DIR = "diffs"

# An email written by json.dumps with escapes (or quotes) in it must go through the JSON decoder.
_NEEDS_JSON = re.compile(rb'[\\"\x00-\x1f]')
_JOURNAL_NAME = re.compile(r"(?P<generation>\d{8})-(?P<key>[^/]+)\.jsonl\.gz")
# Gzip level 6 costs a third of level 9's time for nearly the same size on these repetitive lines.
_GZIP_LEVEL = 6
# Emails per line of the contacts snapshot: lines stay a few hundred kilobytes.
_GROUP_EMAILS = 10_000
_GROUP_DECODER = msgspec.json.Decoder(tuple[int, list[str], list[str], list[str]])
_WRITE_CHUNK_LINES = 10_000


class StateFileError(ValueError):
    """An applied-state file that cannot be read as written.

    :param part: which file (or which kind of file) is corrupt.
    :param line: 1-based line number, or ``None`` when the whole file is unusable.
    :param problem: what is wrong, without any email address.
    :param remedy: what to do about it, when the file can safely be rebuilt.
    """

    def __init__(self, part: str, line: int | None, problem: str, *, remedy: str = "") -> None:
        where = part if line is None else f"{part}, line {line}"
        super().__init__(f"corrupt applied-state file {where}: {problem}" + (f". {remedy}" if remedy else ""))
        self.part = part
        self.line = line
        self.problem = problem


@dataclass
class SegmentState:
    """What the applied state remembers about one chosen segment.

    :param name: the name under which the segment was last found in the export; the next run
        falls back to it while the export still lags behind a rename in the catalogue.
    :param generation: the last generation planned for this segment's key; a push holding an older
        diff for it is stale.
    :param former_names: names it was synced under before ``name``, so that a configuration naming it
        (rather than giving its id) keeps finding it after any number of renames in Nosto.
    """

    name: str
    generation: int
    former_names: tuple[str, ...] = ()


@dataclass
class AppliedState:
    """Everything the sync knows Klaviyo holds.

    :param list_id: the address-book list's Klaviyo id, once found or created.
    :param list_name: the address-book list's name when it was found or created.
    :param property_name: the profile property the segment names are written to.
    :param generation: the last planned generation; each plan takes the next one.
    :param segments: segment id -> its remembered name and generation.
    :param contacts: normalised email -> the record Klaviyo confirmed.
    :param former_properties: the properties migrations moved away from, while some contacts still have
        their value there (they were not written in the migrating run): the runs that write them empty them.
    """

    list_id: str | None
    list_name: str | None
    property_name: str | None
    generation: int
    segments: dict[str, SegmentState] = field(default_factory=dict)
    contacts: dict[str, ContactRecord] = field(default_factory=dict)
    former_properties: tuple[str, ...] = ()

    @classmethod
    def empty(cls) -> AppliedState:
        """Return the state of a sync that never ran."""
        return cls(list_id=None, list_name=None, property_name=None, generation=0)


def dump_meta(state: AppliedState) -> bytes:
    """Serialise everything but the contacts to ``meta.json``'s bytes.

    :param state: the state to write.
    """
    document: dict[str, Any] = {
        "format": META_FORMAT,
        "list_id": state.list_id,
        "list_name": state.list_name,
        "property_name": state.property_name,
        "generation": state.generation,
        "segments": {
            segment_id: {"name": segment.name, "generation": segment.generation}
            | ({"former_names": list(segment.former_names)} if segment.former_names else {})
            for segment_id, segment in sorted(state.segments.items())
        },
    }
    if state.former_properties:
        document["former_properties"] = list(state.former_properties)
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def load_meta(data: bytes, *, part: str = META_FILE) -> AppliedState:
    """Parse ``meta.json``; the returned state has no contacts yet.

    :param data: the file's bytes.
    :param part: the file's name, used in errors.
    """
    document = _json_object(data, part)
    if document.get("format") != META_FORMAT:
        raise StateFileError(part, None, f"unknown format {document.get('format')!r}")

    segments: dict[str, SegmentState] = {}
    raw_segments = document.get("segments")
    if not isinstance(raw_segments, dict):
        raise StateFileError(part, None, "'segments' is not an object")
    for segment_id, raw in raw_segments.items():
        if not (
            isinstance(raw, dict) and isinstance(raw.get("name"), str) and _is_int(raw.get("generation"))
        ):
            raise StateFileError(
                part, None, f"segment {segment_id!r} needs a string name and an integer generation"
            )
        former = raw.get("former_names", [])
        if not _is_string_list(former):
            raise StateFileError(
                part, None, f"segment {segment_id!r}: 'former_names' is not a list of strings"
            )
        segments[segment_id] = SegmentState(
            name=raw["name"], generation=raw["generation"], former_names=tuple(former)
        )

    for key in ("list_id", "list_name", "property_name"):
        if not isinstance(document.get(key), str | None):
            raise StateFileError(part, None, f"{key!r} is not a string")
    former_properties = document.get("former_properties", [])
    if not _is_string_list(former_properties):
        raise StateFileError(part, None, "'former_properties' is not a list of strings")
    if not _is_int(document.get("generation")):
        raise StateFileError(part, None, "'generation' is not an integer")
    return AppliedState(
        list_id=document.get("list_id"),
        list_name=document.get("list_name"),
        property_name=document.get("property_name"),
        generation=document["generation"],
        segments=segments,
        former_properties=tuple(former_properties),
    )


def dump_email_aliases(scanned_at: str, aliases: Mapping[str, str]) -> bytes:
    """Serialise ``email-aliases.json``: the last profile scan's watermark and the stored spellings."""
    return json.dumps({"scanned_at": scanned_at, "aliases": dict(aliases)}, sort_keys=True).encode()


def load_email_aliases(data: bytes, *, part: str = ALIASES_FILE) -> tuple[str | None, dict[str, str]]:
    """Parse ``email-aliases.json`` into the scan's watermark and ``{normalised email: Klaviyo's spelling}``.

    :param data: the file's bytes.
    :param part: the file's name, used in errors.
    """
    # Without the file the next plan reads every profile's spelling again, so deleting it is always safe.
    remedy = f"Delete {part}: the next run reads the spelling of every Klaviyo profile again"
    document = _json_object(data, part, remedy=remedy)
    scanned_at = document.get("scanned_at")
    aliases = document.get("aliases", {})
    if not isinstance(scanned_at, str | None):
        raise StateFileError(part, None, "'scanned_at' is not a string", remedy=remedy)
    if not (isinstance(aliases, dict) and all(_strings([key, value]) for key, value in aliases.items())):
        raise StateFileError(part, None, "'aliases' does not map emails to emails", remedy=remedy)
    return scanned_at, dict(aliases)


def load_progress(data: bytes, *, part: str) -> dict[str, Any]:
    """Parse one push's progress file: the bulk jobs Klaviyo already accepted for its diff.

    :param data: the file's bytes.
    :param part: the file's name, used in errors.
    """
    # Without the file the push submits its bulk jobs again, which writes the same whole values once more.
    remedy = f"Delete {part}: the push then submits its bulk jobs again, writing the same values"
    document = _json_object(data, part, remedy=remedy)
    batches = document.get("batches", {})
    if not (isinstance(batches, dict) and all(isinstance(batch, dict) for batch in batches.values())):
        raise StateFileError(part, None, "'batches' is not an object of objects", remedy=remedy)
    return document


def write_contacts(stream: IO[bytes], contacts: Mapping[str, ContactRecord]) -> None:
    """Write the contacts snapshot: one line per record with the emails that hold it.

    A line is ``[in_address_book, [ids], [names], [emails]]`` with at most ``_GROUP_EMAILS`` emails,
    sorted; lines are ordered by record, so equal states give equal files. Millions of contacts share
    a few thousand records, so the file carries each record once per group and loads in large pieces.

    :param stream: where the gzip bytes go; it is not closed.
    :param contacts: normalised email -> confirmed record.
    """
    # Spellings are cached by the record object's id (contacts share a few thousand records, and hashing
    # a record is slow); each cached record is kept alive with its spelling, so its id is never reused.
    spellings: dict[int, tuple[ContactRecord, str]] = {}
    groups: dict[str, list[str]] = {}
    for email in sorted(contacts):
        record = contacts[email]
        cached = spellings.get(id(record))
        if cached is None:
            cached = spellings[id(record)] = (record, _record_json(record))
        groups.setdefault(cached[1], []).append(email)
    _write_lines(
        stream,
        (
            f"[{spelling},{json.dumps(emails[start : start + _GROUP_EMAILS], separators=(',', ':'))}]\n"
            for spelling, emails in sorted(groups.items())
            for start in range(0, len(emails), _GROUP_EMAILS)
        ),
    )


def read_contacts(stream: IO[bytes], *, part: str = CONTACTS_FILE) -> dict[str, ContactRecord]:
    """Read a contacts snapshot; contacts with equal records share one record object.

    Both line kinds are read: a record with its emails, and one ``[email, record...]`` per contact
    (the journal's, which snapshots were written in before).

    :param stream: the file's bytes, gzip or plain.
    :param part: the file's name, used in errors.
    """
    contacts: dict[str, ContactRecord] = {}
    for emails, record in _entries(stream, part):
        contacts.update(zip(emails, repeat(record)))
    return contacts


def write_journal(stream: IO[bytes], records: Iterable[tuple[str, ContactRecord]]) -> None:
    """Write ``(email, record)`` pairs, one JSON array per line, gzip-compressed.

    :param stream: where the gzip bytes go; it is not closed.
    :param records: the pairs, in the order to write them.
    """
    encoded: dict[ContactRecord, str] = {}

    def line(email: str, record: ContactRecord) -> str:
        tail = encoded.get(record)
        if tail is None:
            tail = encoded[record] = _record_json(record)
        return f"[{json.dumps(email)},{tail}]\n"

    _write_lines(stream, (line(email, record) for email, record in records))


def read_journal(stream: IO[bytes], *, part: str = "journal") -> Iterator[tuple[str, ContactRecord]]:
    """Yield the ``(email, record)`` pairs of a journal (or snapshot) file, in the file's order.

    :param stream: the file's bytes, gzip or plain.
    :param part: the file's name, used in errors.
    """
    for emails, record in _entries(stream, part):
        for email in emails:
            yield email, record


def _entries(stream: IO[bytes], part: str) -> Iterator[tuple[Sequence[str], ContactRecord]]:
    """Yield ``(emails, record)`` for every line of a snapshot or journal, checking each line."""
    records = _RecordCache(part)
    # Millions of per-contact lines share a few thousand record spellings; parsing each spelling once
    # and slicing the email out of the line is several times faster than decoding every line.
    by_spelling: dict[bytes, ContactRecord] = {}
    decode_group = _GROUP_DECODER.decode
    for line_number, line in _raw_lines(stream, part):
        if line.startswith((b"[0,", b"[1,")):
            try:
                in_book, ids, names, emails = decode_group(line)
            except (msgspec.MsgspecError, RecursionError):
                pass
            else:
                if not all(map(contains, emails, repeat("@"))):
                    raise StateFileError(
                        part, line_number, "an item of the email list is not an email address"
                    )
                yield emails, records.typed(in_book, ids, names, line_number)
                continue
            entry = _parse(line, part, line_number)
            if not isinstance(entry, list) or len(entry) != 4 or not _is_string_list(entry[3]):
                raise StateFileError(
                    part, line_number, "expected [in_address_book, [ids], [names], [emails]]"
                )
            for email in entry[3]:
                _email(email, part, line_number)
            yield entry[3], records.get(entry[:3], line_number)
            continue

        end = line.find(b'",', 2)
        email_bytes = line[2:end]
        if line.startswith(b'["') and end > 2 and line.endswith(b"]") and not _NEEDS_JSON.search(email_bytes):
            spelling = line[end + 2 : -1]
            record = by_spelling.get(spelling)
            if record is None:
                items = _parse(b"[" + spelling + b"]", part, line_number)
                if not isinstance(items, list) or len(items) != 3:
                    raise StateFileError(
                        part, line_number, "expected [email, in_address_book, [ids], [names]]"
                    )
                record = by_spelling[spelling] = records.get(items, line_number)
            yield (_email(email_bytes.decode("utf-8", "replace"), part, line_number),), record
            continue

        entry = _parse(line, part, line_number)
        if not isinstance(entry, list) or len(entry) != 4:
            raise StateFileError(part, line_number, "expected [email, in_address_book, [ids], [names]]")
        yield (_email(entry[0], part, line_number),), records.get(entry[1:4], line_number)


def write_diff(stream: IO[bytes], changes: Iterable[ContactChange]) -> None:
    """Write a push task's changes, one JSON array per line, gzip-compressed.

    :param stream: where the gzip bytes go; it is not closed.
    :param changes: the changes, in the order to write them.
    """
    encoded: dict[ContactRecord, str] = {}

    def encode(record: ContactRecord) -> str:
        text = encoded.get(record)
        if text is None:
            text = encoded[record] = _record_json(record)
        return text

    _write_lines(
        stream,
        (f"[{json.dumps(change.email)},{encode(change.new)},{encode(change.old)}]\n" for change in changes),
    )


def read_diff(stream: IO[bytes], *, part: str = "diff") -> Iterator[ContactChange]:
    """Yield the changes of a diff file.

    :param stream: the file's bytes, gzip or plain.
    :param part: the file's name, used in errors.
    """
    records = _RecordCache(part)
    for line_number, line in _raw_lines(stream, part):
        entry = _parse(line, part, line_number)
        if not isinstance(entry, list) or len(entry) != 7:
            raise StateFileError(
                part,
                line_number,
                "expected [email, new_in_book, [new ids], [new names], old_in_book, [old ids], [old names]]",
            )
        email = _email(entry[0], part, line_number)
        new = records.get(entry[1:4], line_number)
        old = records.get(entry[4:7], line_number)
        yield ContactChange(email, old, new)


def journal_name(generation: int, key: str) -> str:
    """Return the file name of one push task's journal, e.g. ``00000007-address-book.jsonl.gz``.

    :param generation: the generation of the diff the push applied.
    :param key: the push task's key: a segment id or ``address-book``.
    """
    if generation < 0 or "/" in key or not key:
        raise ValueError("a journal needs a non-negative generation and a key without '/'")
    return f"{generation:08d}-{key}.jsonl.gz"


def parse_journal_name(name: str) -> tuple[int, str]:
    """Return ``(generation, key)`` from a name made by :func:`journal_name`.

    :param name: the file name, without its folder.
    """
    match = _JOURNAL_NAME.fullmatch(name)
    if match is None:
        raise StateFileError(name, None, "not a journal file name")
    return int(match["generation"]), match["key"]


def diff_path(generation: int, key: str) -> str:
    """Return a diff file's path relative to the state folder, e.g. ``diffs/00000007/address-book.jsonl.gz``.

    :param generation: the plan's generation.
    :param key: the push task's key.
    """
    if generation < 0 or "/" in key or not key:
        raise ValueError("a diff needs a non-negative generation and a key without '/'")
    return f"{DIFFS_DIR}/{generation:08d}/{key}.jsonl.gz"


def fold_journals(
    contacts: dict[str, ContactRecord],
    journals: Iterable[tuple[int, str, Iterable[tuple[str, ContactRecord]]]],
) -> int:
    """Apply journals to a contacts snapshot in generation order (then key order); return records applied.

    A later generation wins for a contact written by two journals. A record equal to
    ``EMPTY_RECORD`` means Klaviyo holds nothing of ours for the contact any more, so it is dropped.

    :param contacts: the snapshot, changed in place.
    :param journals: ``(generation, key, records)`` triples, e.g. from :func:`parse_journal_name`
        and :func:`read_journal`; the records are only iterated once sorted.
    """
    applied = 0
    for _generation, _key, records in sorted(journals, key=lambda journal: (journal[0], journal[1])):
        for email, record in records:
            if record == EMPTY_RECORD:
                contacts.pop(email, None)
            else:
                contacts[email] = record
            applied += 1
    return applied


def _record_json(record: ContactRecord) -> str:
    """Return the record's three line items, comma-separated, to be spliced into a line's array."""
    return json.dumps(
        [int(record.in_address_book), list(record.segment_ids), list(record.value)], separators=(",", ":")
    )[1:-1]


def _write_lines(stream: IO[bytes], lines: Iterable[str]) -> None:
    # No time and no file name in the gzip header (GzipFile would take the name of a temporary file from
    # the stream) keep the bytes identical for identical content, so retries are idempotent.
    with gzip.GzipFile(
        filename="", fileobj=stream, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0
    ) as compressed:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= _WRITE_CHUNK_LINES:
                compressed.write("".join(chunk).encode("utf-8"))
                chunk.clear()
        compressed.write("".join(chunk).encode("utf-8"))


def _raw_lines(stream: IO[bytes], part: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, line without its newline)`` for every non-blank line, reading large blocks."""

    def cut(line_number: int) -> None:
        raise StateFileError(part, line_number + 1, "gzip data is truncated or corrupt")

    for line_number, line, complete in read_lines(open_export_stream(stream), cut):
        if not complete:
            raise StateFileError(part, line_number, "last line is cut off")
        yield line_number, line


def _parse(line: bytes, part: str, line_number: int) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise StateFileError(part, line_number, "not JSON") from None


def _json_object(data: bytes, part: str, *, remedy: str = "") -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise StateFileError(part, None, "not JSON", remedy=remedy) from None
    if not isinstance(document, dict):
        raise StateFileError(part, None, "not a JSON object", remedy=remedy)
    return document


def _email(value: object, part: str, line_number: int) -> str:
    if not isinstance(value, str) or "@" not in value:
        raise StateFileError(part, line_number, "first item is not an email address")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class _RecordCache:
    """Builds records from JSON items, returning one shared object per distinct record."""

    def __init__(self, part: str) -> None:
        self._part = part
        self._records: dict[tuple[object, ...], ContactRecord] = {}

    def get(self, items: list[Any], line_number: int) -> ContactRecord:
        in_book, ids, names = items
        if in_book not in (0, 1) or isinstance(in_book, float):
            raise StateFileError(self._part, line_number, "address-book flag is not 0 or 1")
        if not (_strings(ids) and _strings(names)):
            raise StateFileError(self._part, line_number, "segment ids and names must be lists of strings")
        return self.typed(in_book, ids, names, line_number)

    def typed(self, in_book: int, ids: list[str], names: list[str], line_number: int) -> ContactRecord:
        """Like :meth:`get`, for items already known to be an int and two lists of strings."""
        if in_book not in (0, 1):
            raise StateFileError(self._part, line_number, "address-book flag is not 0 or 1")
        key = (bool(in_book), *ids, None, *names)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = ContactRecord(bool(in_book), tuple(ids), tuple(names))
        return record


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
