"""Reading Nosto's Segment Export: one JSON object per line with an email and its segment names."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import IO, Any, cast

import msgspec

from airflow_provider_klaviyo_nosto.sync.emails import InvalidEmail, normalise_email, normalise_plain_emails
from airflow_provider_klaviyo_nosto.sync.masking import mask_email

_GZIP_MAGIC = b"\x1f\x8b"
_READ_BLOCK = 1 << 20
_NO_SEGMENTS: frozenset[str] = frozenset()
# What decoding a line may raise: besides malformed JSON, values nested deeper than the decoder's
# recursion limit. Either way the line is malformed, never the end of the read.
_UNDECODABLE = (msgspec.MsgspecError, RecursionError)
_UNPARSABLE = (ValueError, RecursionError)
_email_of = attrgetter("email")
_names_of = attrgetter("names")
# Enough examples to show what kind of addresses are wrong without turning a report into a dump.
_MAX_INVALID_SAMPLES = 5
_MAX_SAMPLE_CHARS = 80


class EmptyExportError(ValueError):
    """The export holds no valid contact; syncing it would empty the address book."""


class IncompleteExportError(ValueError):
    """The export is cut off, or carries no segments under the configured key; syncing it would remove contacts."""


@dataclass
class ExportSnapshot:
    """What one export file says, reduced to normalised contacts and counts of what was skipped.

    :param contacts: normalised email -> names of the segments the contact is in, as Nosto spells
        them. Equal name sets are one shared object, because a few thousand sets cover millions of
        contacts.
    :param lines: non-blank lines read (line numbers in samples count blank lines too).
    :param invalid_emails: reason -> number of lines whose email could not be used.
    :param malformed_lines: lines that are not a JSON object with a string email and a list of
        string segment names, including a last line cut off mid-way.
    :param duplicates_merged: lines whose normalised email was already seen; their segment names
        were added to the first line's.
    :param invalid_samples: a few masked examples of invalid emails with their line numbers.
    :param truncated: the file ended mid-line or mid-gzip-stream, so contacts may be missing.
    :param lines_with_segments_key: lines that carry the configured segments key at all; none at all
        means the key is misconfigured, not that nobody is in a segment.
    :param unreadable: normalised emails of malformed lines whose email is usable but whose segment
        names are not (``null``, a string, a number in the list): the contact is still in Nosto, so
        what was last applied for it is kept rather than removed.
    """

    contacts: dict[str, frozenset[str]] = field(default_factory=dict)
    lines: int = 0
    invalid_emails: Counter[str] = field(default_factory=Counter)
    malformed_lines: int = 0
    duplicates_merged: int = 0
    invalid_samples: list[str] = field(default_factory=list)
    truncated: bool = False
    lines_with_segments_key: int = 0
    unreadable: set[str] = field(default_factory=set)

    @property
    def invalid_count(self) -> int:
        return sum(self.invalid_emails.values())

    def segment_sizes(self) -> Counter[str]:
        """Return the number of contacts per segment name found in the export."""
        sets = Counter(self.contacts.values())
        sizes: Counter[str] = Counter()
        for names, members in sets.items():
            for name in names:
                sizes[name] += members
        return sizes


def open_export_stream(raw: IO[bytes]) -> IO[bytes]:
    """Return a stream of the export's bytes, gunzipped when the data starts with the gzip magic.

    Exports arrive compressed or not depending on where they are stored, and object stores do not
    reliably say which, so the content decides.

    :param raw: a binary stream positioned at the start of the export; it need not be seekable.
    """
    head = raw.read(len(_GZIP_MAGIC))
    buffered = io.BufferedReader(_PrefixedStream(head, raw))
    if head == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    return cast(IO[bytes], buffered)


def read_export(stream: IO[bytes], segments_key: str = "nosto_segments") -> ExportSnapshot:
    """Parse an export; a bad line is counted and skipped, never fatal.

    Memory grows with the number of contacts, not the file size.

    :param stream: the export's (already decompressed) bytes, e.g. from :func:`open_export_stream`.
    :param segments_key: the identifier chosen in Nosto's Segment Export settings; a line without it
        is a contact in no segment.
    """
    reader = _ExportReader(segments_key)
    for before, block, complete in read_blocks(stream, reader.cut):
        if not (complete and reader.read_plain_block(block, before)):
            reader.read_lines(block, before, complete)
    return reader.snapshot


def require_contacts(snapshot: ExportSnapshot, segments_key: str = "nosto_segments") -> ExportSnapshot:
    """Return ``snapshot`` if it is complete and holds at least one valid contact.

    An empty, cut-off or key-less export most likely means Nosto (or the transfer) produced a broken
    file; syncing it would remove contacts from the address book or their segments.

    :param snapshot: the parsed export.
    :param segments_key: the configured segments key, named in the error when no line carries it.
    :raises IncompleteExportError: when the file is cut off or no line carries ``segments_key``.
    :raises EmptyExportError: when no line holds a usable contact.
    """
    if snapshot.truncated:
        raise IncompleteExportError(
            f"the export ends in the middle of a line or of its gzip stream after {snapshot.lines} lines, so "
            "contacts are missing; nothing was written. Check the export's source and run again once the "
            "file is complete"
        )
    if snapshot.contacts and not snapshot.lines_with_segments_key:
        raise IncompleteExportError(
            f"no line of the export carries the segments key {segments_key!r}, so every contact would "
            "lose its segments; nothing was written. Set 'segments_key' in the sync configuration to the "
            "identifier chosen in Nosto's Segment Export settings"
        )
    if not snapshot.contacts:
        raise EmptyExportError(
            f"the export holds no valid contact ({snapshot.lines} lines, "
            f"{snapshot.invalid_count} invalid emails, {snapshot.malformed_lines} malformed lines); "
            "refusing to sync an empty address book"
        )
    return snapshot


def read_lines(stream: IO[bytes], on_cut: Callable[[int], None]) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line number, line, ends with a newline)`` for every non-blank line, reading large blocks.

    When the gzip data breaks off, ``on_cut`` gets the number of the last line read whole (it may raise);
    a last line without its newline is still yielded afterwards, flagged ``False``.
    """
    for before, block, complete in read_blocks(stream, on_cut):
        lines = block.split(b"\n")
        if complete:
            lines.pop()
        for line_number, line in enumerate(lines, before + 1):
            if line.strip():
                yield line_number, line, complete


def read_blocks(stream: IO[bytes], on_cut: Callable[[int], None]) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(lines before it, block, complete)`` for blocks of whole lines, each ending with a newline.

    The last block is the rest of a file that does not end with a newline, flagged ``False``. When the
    gzip data breaks off, ``on_cut`` gets the number of the last line read whole (it may raise) before
    that rest is yielded.
    """
    line_number = 0
    rest = b""
    cut = False
    # read1 hands over what one decompression step produced, so a stream cut off later still yields
    # every line before the cut.
    read = getattr(stream, "read1", stream.read)
    try:
        while data := read(_READ_BLOCK):
            data = rest + data
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            if end:
                yield line_number, data[:end], True
                line_number += data.count(b"\n", 0, end)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        cut = True
    if cut:
        on_cut(line_number)
    if rest.strip():
        yield line_number, rest, False


class _ExportReader:
    """Reads an export block by block into one :class:`ExportSnapshot`.

    Millions of lines share a few thousand spellings of their segment list: each spelling is decoded and
    checked once. A block whose every line is a plain contact (an object with a string email and a list
    of segment names, one per line, no duplicate emails) is taken in whole-block passes; any other
    block is read line by line, which alone decides what is malformed, so both ways accept exactly the
    same lines.
    """

    def __init__(self, segments_key: str) -> None:
        self.snapshot = ExportSnapshot()
        self._segments_key = segments_key
        decoder = _line_decoder(segments_key)
        self._decode = decoder.decode
        self._shared_sets: dict[frozenset[str], frozenset[str]] = {}
        self._names_by_spelling: dict[bytes, frozenset[str] | None] = {}

    def cut(self, _line_number: int) -> None:
        # A gzip stream cut off in transfer: what was read stays usable, and the flag lets the
        # caller refuse a partial snapshot.
        self.snapshot.truncated = True

    def read_plain_block(self, block: bytes, before: int) -> bool:
        """Take in a block of whole lines if every line is a plain contact; ``False`` leaves it unread."""
        lines = block.split(b"\n")
        lines.pop()
        try:
            # The decoder of the line-by-line way, once per line but inside map(): a blank line, a line
            # holding two values or part of one fails here as it does there, and positions are line numbers.
            entries = list(map(self._decode, lines))
        except _UNDECODABLE:
            return False
        spellings = list(map(_names_of, entries))
        if msgspec.UNSET in spellings:
            return False
        decoded = self._names(list(map(bytes, spellings)))
        if None in decoded:
            return False
        names = cast(list[frozenset[str]], decoded)

        snapshot = self.snapshot
        snapshot.lines += len(entries)
        snapshot.lines_with_segments_key += len(entries)
        raw_emails = list(map(_email_of, entries))
        emails, others = normalise_plain_emails(raw_emails)
        invalid = []
        for index in others:
            try:
                emails[index] = normalise_email(raw_emails[index])
            except InvalidEmail as error:
                _count_invalid(snapshot, before + index + 1, raw_emails[index], error.reason)
                invalid.append(index)
        for index in reversed(invalid):
            del emails[index], names[index]

        contacts = snapshot.contacts
        found = dict(zip(emails, names, strict=True))
        if len(found) == len(emails) and contacts.keys().isdisjoint(found):
            contacts.update(found)
        else:
            for email, contact_names in zip(emails, names, strict=True):
                self._add(email, contact_names)
        return True

    def read_lines(self, block: bytes, before: int, complete: bool) -> None:
        """Take in a block line by line; ``complete`` is ``False`` for a last line without its newline."""
        lines = block.split(b"\n")
        if complete:
            lines.pop()
        for line_number, line in enumerate(lines, before + 1):
            if line.strip():
                self._read_line(line_number, line, complete)

    def _read_line(self, line_number: int, line: bytes, complete: bool) -> None:
        snapshot = self.snapshot
        snapshot.lines += 1
        names: frozenset[str] | None
        try:
            entry = self._decode(line)
        except _UNDECODABLE:
            parsed = _parse_line(line, self._segments_key)
            raw_email, names, has_key = parsed if parsed is not None else (None, None, False)
        else:
            raw_email = entry.email
            if entry.names is msgspec.UNSET:
                names, has_key = _NO_SEGMENTS, False
            else:
                names, has_key = self._names([bytes(entry.names)])[0], True
        if names is None:
            snapshot.malformed_lines += 1
            if not complete:
                snapshot.truncated = True
            else:
                _remember_unreadable(snapshot, line)
            return
        snapshot.lines_with_segments_key += has_key

        try:
            email = normalise_email(raw_email)
        except InvalidEmail as invalid:
            _count_invalid(snapshot, line_number, raw_email, invalid.reason)
            return
        self._add(email, names)

    def _names(self, spellings: list[bytes]) -> list[frozenset[str] | None]:
        """Return the segment names each spelling stands for, ``None`` where it is not a list of strings."""
        known = self._names_by_spelling
        for spelling in set(spellings).difference(known):
            names = _segment_names(spelling)
            known[spelling] = names if names is None else self._shared_sets.setdefault(names, names)
        return list(map(known.__getitem__, spellings))

    def _add(self, email: str, names: frozenset[str]) -> None:
        contacts = self.snapshot.contacts
        previous = contacts.get(email)
        if previous is not None:
            self.snapshot.duplicates_merged += 1
            names = previous | names
        contacts[email] = self._shared_sets.setdefault(names, names)


def _line_decoder(segments_key: str) -> msgspec.json.Decoder[Any]:
    line_type = msgspec.defstruct(
        "ExportLine",
        [("email", str), ("names", msgspec.Raw, msgspec.UNSET)],
        rename={"email": "email", "names": segments_key},
    )
    return msgspec.json.Decoder(line_type)


def _segment_names(spelling: bytes) -> frozenset[str] | None:
    """Return the segment names a JSON list spells, or ``None`` when it is not a list of strings."""
    try:
        names = json.loads(spelling)
    except _UNPARSABLE:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return frozenset(names)


def _parse_line(line: bytes, segments_key: str) -> tuple[object, frozenset[str], bool] | None:
    try:
        entry = json.loads(line)
    except _UNPARSABLE:
        return None
    if not isinstance(entry, dict) or "email" not in entry:
        return None
    names = entry.get(segments_key, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    raw_email = entry["email"]
    if not isinstance(raw_email, str):
        return None
    return raw_email, frozenset(names), segments_key in entry


def _remember_unreadable(snapshot: ExportSnapshot, line: bytes) -> None:
    try:
        entry = json.loads(line)
        email = normalise_email(entry["email"]) if isinstance(entry, dict) and "email" in entry else None
    except (*_UNPARSABLE, InvalidEmail):
        return
    if email is not None:
        snapshot.unreadable.add(email)


def _count_invalid(snapshot: ExportSnapshot, line_number: int, raw_email: object, reason: str) -> None:
    snapshot.invalid_emails[reason] += 1
    if len(snapshot.invalid_samples) < _MAX_INVALID_SAMPLES:
        shown = mask_email(str(raw_email).strip()[:_MAX_SAMPLE_CHARS])
        snapshot.invalid_samples.append(f"line {line_number}: {shown} ({reason})")


class _PrefixedStream(io.RawIOBase):
    """A raw stream that replays bytes already read from ``rest`` before reading on from it."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)
