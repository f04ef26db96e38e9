from __future__ import annotations

import gzip
import io
import json

import pytest

from airflow_provider_klaviyo_nosto.sync.export import (
    EmptyExportError,
    ExportSnapshot,
    IncompleteExportError,
    open_export_stream,
    read_export,
    require_contacts,
)


def _export(*entries: object) -> bytes:
    return b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)


def _read(data: bytes, segments_key: str = "nosto_segments") -> ExportSnapshot:
    return read_export(open_export_stream(io.BytesIO(data)), segments_key)


EXPORT = _export(
    {"email": "ana@example.com", "nosto_segments": ["Category affinity: Kombai", "VIP"]},
    {"email": "bob@example.com", "nosto_segments": []},
    {"email": "carol+news@example.com"},
)


@pytest.mark.parametrize(
    "data",
    [pytest.param(EXPORT, id="plain"), pytest.param(gzip.compress(EXPORT), id="gzip")],
)
def test_reads_plain_and_gzip_alike(data: bytes) -> None:
    snapshot = _read(data)

    assert snapshot.contacts == {
        "ana@example.com": frozenset({"Category affinity: Kombai", "VIP"}),
        "bob@example.com": frozenset(),
        "carol+news@example.com": frozenset(),
    }
    assert snapshot.lines == 3
    assert snapshot.malformed_lines == 0
    assert not snapshot.truncated


def test_non_seekable_stream_is_read() -> None:
    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
            chunk = self._data.read(min(len(buffer), 7))
            buffer[: len(chunk)] = chunk
            return len(chunk)

        def seekable(self) -> bool:
            return False

    snapshot = read_export(open_export_stream(io.BufferedReader(OneWay(gzip.compress(EXPORT)))))

    assert len(snapshot.contacts) == 3


def test_b09_duplicates_differing_by_case_and_space_merge() -> None:
    data = _export(
        {"email": "Ana@Example.com", "nosto_segments": ["VIP"]},
        {"email": " ana@example.com", "nosto_segments": ["New"]},
        {"email": "BOB@example.com\t", "nosto_segments": ["VIP"]},
        {"email": "bob@example.com", "nosto_segments": ["VIP"]},
    )

    snapshot = _read(data)

    assert snapshot.contacts == {
        "ana@example.com": frozenset({"VIP", "New"}),
        "bob@example.com": frozenset({"VIP"}),
    }
    assert snapshot.duplicates_merged == 2


def test_b03_invalid_email_is_counted_with_reason_and_masked_sample() -> None:
    data = _export(
        {"email": "ana@example.com", "nosto_segments": ["vip"]},
        {"email": "bob@example", "nosto_segments": ["vip"]},
        {"email": "o'neil@example.com", "nosto_segments": ["vip"]},
        {"email": "carol+news@example.com", "nosto_segments": ["vip"]},
    )

    snapshot = _read(data)

    assert set(snapshot.contacts) == {"ana@example.com", "o'neil@example.com", "carol+news@example.com"}
    assert sum(snapshot.invalid_emails.values()) == 1
    assert len(snapshot.invalid_samples) == 1
    assert snapshot.invalid_samples[0].startswith("line 2: ")
    assert "bob@example" not in snapshot.invalid_samples[0]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["ana@example.com"]', id="not-an-object"),
        pytest.param(b'{"nosto_segments": ["VIP"]}', id="no-email"),
        pytest.param(b'{"email": 42}', id="email-not-string"),
        pytest.param(b'{"email": "ana@example.com", "nosto_segments": "VIP"}', id="segments-not-list"),
        pytest.param(b'{"email": "ana@example.com", "nosto_segments": [1]}', id="segment-not-string"),
        pytest.param(
            b'{"email": "ana@example.com", "nosto_segments": []} {"email": "carol@example.com"}',
            id="two-objects-on-one-line",
        ),
    ],
)
def test_malformed_line_is_counted_and_skipped(line: bytes) -> None:
    data = line + b"\n" + _export({"email": "bob@example.com", "nosto_segments": ["VIP"]})

    snapshot = _read(data)

    assert snapshot.malformed_lines == 1
    assert snapshot.contacts == {"bob@example.com": frozenset({"VIP"})}


def test_truncated_last_line_is_malformed() -> None:
    data = EXPORT + b'{"email": "dave@example.com", "nosto_seg'

    snapshot = _read(data)

    assert snapshot.malformed_lines == 1
    assert snapshot.truncated
    assert len(snapshot.contacts) == 3


def test_last_line_without_newline_is_fine() -> None:
    snapshot = _read(EXPORT.rstrip(b"\n"))

    assert len(snapshot.contacts) == 3
    assert not snapshot.truncated


def test_truncated_gzip_keeps_what_was_read_and_says_so() -> None:
    lines = _export(*({"email": f"user{n}@example.com", "nosto_segments": ["VIP"]} for n in range(2000)))
    compressed = gzip.compress(lines)

    snapshot = _read(compressed[: len(compressed) // 2])

    assert snapshot.truncated
    assert 0 < len(snapshot.contacts) < 2000


def test_blank_lines_are_ignored() -> None:
    snapshot = _read(b"\n" + EXPORT + b"\n\n")

    assert snapshot.lines == 3
    assert snapshot.malformed_lines == 0


def test_custom_segments_key() -> None:
    data = _export({"email": "ana@example.com", "segments": ["VIP"], "nosto_segments": ["Other"]})

    assert _read(data, "segments").contacts == {"ana@example.com": frozenset({"VIP"})}


def test_equal_name_sets_share_one_object() -> None:
    data = _export(*({"email": f"user{n}@example.com", "nosto_segments": ["VIP", "New"]} for n in range(3)))

    sets = list(_read(data).contacts.values())

    assert sets[0] is sets[1] is sets[2]


def test_segment_sizes() -> None:
    assert _read(EXPORT).segment_sizes() == {"Category affinity: Kombai": 1, "VIP": 1}


def test_empty_export_is_refused() -> None:
    snapshot = _read(_export({"email": "bob@example"}))

    with pytest.raises(EmptyExportError):
        require_contacts(snapshot)


def test_export_with_contacts_is_accepted() -> None:
    snapshot = _read(EXPORT)

    assert require_contacts(snapshot) is snapshot


def test_export_cut_mid_line_is_refused_before_anything_is_planned() -> None:
    body = b'{"email": "ana@example.com", "nosto_segments": ["vip"]}\n{"email": "bob@exa'

    snapshot = read_export(io.BytesIO(body))

    with pytest.raises(IncompleteExportError, match="middle of a line"):
        require_contacts(snapshot)


def test_export_cut_mid_gzip_stream_is_refused() -> None:
    lines = b"".join(
        b'{"email": "user%d@example.com", "nosto_segments": ["vip"]}\n' % number for number in range(2000)
    )
    compressed = gzip.compress(lines)

    snapshot = read_export(open_export_stream(io.BytesIO(compressed[: len(compressed) * 3 // 4])))

    assert snapshot.contacts, "what was read before the cut stays readable"
    with pytest.raises(IncompleteExportError, match="gzip"):
        require_contacts(snapshot)


def test_export_without_the_configured_segments_key_names_the_setting() -> None:
    body = (
        b'{"email": "ana@example.com", "segments": ["vip"]}\n{"email": "bob@example.com", "segments": []}\n'
    )

    snapshot = read_export(io.BytesIO(body), segments_key="nosto_segments")

    with pytest.raises(IncompleteExportError, match="segments_key"):
        require_contacts(snapshot, "nosto_segments")


def test_contacts_in_no_segment_are_fine_when_others_carry_the_key() -> None:
    body = b'{"email": "ana@example.com", "nosto_segments": ["vip"]}\n{"email": "bob@example.com"}\n'

    snapshot = require_contacts(read_export(io.BytesIO(body)))

    assert snapshot.contacts == {"ana@example.com": frozenset({"vip"}), "bob@example.com": frozenset()}


def test_export_of_many_blocks_merges_and_numbers_lines_across_them() -> None:
    # About 2.4 MB, so the reader takes it in several blocks.
    entries: list[dict[str, object]] = [
        {"email": f"user{n:05d}@example.com", "nosto_segments": ["VIP"]} for n in range(1, 40_001)
    ]
    entries[19_999] = {"email": "bob@example", "nosto_segments": ["VIP"]}  # line 20,000
    entries[29_999] = {"email": " USER00001@Example.com", "nosto_segments": ["New"]}  # line 30,000
    entries[34_999] = {"email": "ana@bücher.example", "nosto_segments": ["New"]}  # line 35,000

    snapshot = _read(gzip.compress(_export(*entries)))

    assert snapshot.lines == 40_000
    assert len(snapshot.contacts) == 40_000 - 3 + 1  # less the invalid, the merged, user30000 and user35000
    assert snapshot.contacts["user00001@example.com"] == frozenset({"VIP", "New"})
    assert snapshot.contacts["ana@xn--bcher-kva.example"] == frozenset({"New"})
    assert "user30000@example.com" not in snapshot.contacts
    assert snapshot.duplicates_merged == 1
    assert sum(snapshot.invalid_emails.values()) == 1
    assert [sample.split(":")[0] for sample in snapshot.invalid_samples] == ["line 20000"]


ANA_LINE = b'{"email": "ana@example.com", "nosto_segments": ["VIP"]}'
BOB_LINE = b'{"email": "bob@example.com", "nosto_segments": []}'


@pytest.mark.parametrize(
    ("data", "lines", "malformed"),
    [
        pytest.param(ANA_LINE + b" " + BOB_LINE + b"\n\n", 1, 1, id="two-values-then-a-blank-line"),
        pytest.param(ANA_LINE + b"\r" + BOB_LINE + b"\n \n", 1, 1, id="two-values-then-a-space-line"),
        pytest.param(
            b'{"email": "carol@example.com",\n"nosto_segments": ["VIP"]}\n' + ANA_LINE + BOB_LINE + b"\n",
            3,
            3,
            id="a-value-over-two-lines-beside-two-values-on-one",
        ),
        pytest.param(
            b'{"email": "carol@exam\nple.com", "nosto_segments": []}\n' + ANA_LINE + b"," + BOB_LINE + b"\n",
            3,
            3,
            id="a-string-over-two-lines-beside-two-values-on-one",
        ),
    ],
)
def test_lines_that_are_not_one_json_value_each_are_malformed_wherever_they_meet(
    data: bytes, lines: int, malformed: int
) -> None:
    snapshot = _read(data)

    assert (snapshot.lines, snapshot.malformed_lines) == (lines, malformed)
    assert snapshot.contacts == {}
    assert snapshot.invalid_samples == []


def test_line_nested_past_the_decoders_depth_is_malformed_not_fatal() -> None:
    deep = b'{"email": "carol@example.com", "nosto_segments": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    snapshot = _read(deep + b"\n" + ANA_LINE + b"\n")

    assert snapshot.malformed_lines == 1
    assert snapshot.contacts == {"ana@example.com": frozenset({"VIP"})}
