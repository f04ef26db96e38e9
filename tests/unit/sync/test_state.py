from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactChange, ContactRecord
from airflow_provider_klaviyo_nosto.sync.state import (
    AppliedState,
    SegmentState,
    StateFileError,
    diff_path,
    dump_meta,
    fold_journals,
    journal_name,
    load_meta,
    parse_journal_name,
    read_contacts,
    read_diff,
    read_journal,
    write_contacts,
    write_diff,
    write_journal,
)

VIP_AND_NEW = ContactRecord(True, ("5b1a", "5c2b"), ("New", "VIP"))
NEW_ONLY = ContactRecord(True, ("5c2b",), ("New",))
BOOK_ONLY = ContactRecord(True, (), ())


def _contacts_bytes(contacts: Mapping[str, ContactRecord]) -> bytes:
    stream = io.BytesIO()
    write_contacts(stream, contacts)
    return stream.getvalue()


def test_meta_round_trip() -> None:
    state = AppliedState(
        list_id="XyZ123",
        list_name="Nosto Customers",
        property_name="nosto_segment",
        generation=7,
        segments={"5b1a": SegmentState("Category affinity: Kombai", 7), "5c2b": SegmentState("VIP", 6)},
    )

    assert load_meta(dump_meta(state)) == state


def test_meta_round_trip_keeps_the_properties_migrations_are_moving_from() -> None:
    state = AppliedState(
        "XyZ123", "Nosto Customers", "nosto_segments", 8, former_properties=("nosto_segment", "segments")
    )

    assert load_meta(dump_meta(state)).former_properties == ("nosto_segment", "segments")
    assert b"former_properties" not in dump_meta(
        AppliedState("XyZ123", "Nosto Customers", "nosto_segments", 8)
    )


def test_empty_state() -> None:
    state = load_meta(dump_meta(AppliedState.empty()))

    assert state.generation == 0
    assert state.list_id is None
    assert state.contacts == {}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{", id="not-json"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"format": 99, "generation": 1, "segments": {}}', id="unknown-format"),
        pytest.param(b'{"format": 1, "generation": "1", "segments": {}}', id="generation-not-int"),
        pytest.param(b'{"format": 1, "generation": 1, "segments": {"a": {"name": 3}}}', id="bad-segment"),
        pytest.param(
            b'{"format": 1, "generation": 1, "segments": {}, "former_properties": "nosto_segment"}',
            id="former-properties-not-a-list",
        ),
    ],
)
def test_corrupt_meta_is_refused(data: bytes) -> None:
    with pytest.raises(StateFileError, match=r"meta\.json"):
        load_meta(data)


def test_contacts_round_trip_and_share_records() -> None:
    contacts = {"ana@example.com": VIP_AND_NEW, "bob@example.com": NEW_ONLY, "carol@example.com": VIP_AND_NEW}

    loaded = read_contacts(io.BytesIO(_contacts_bytes(contacts)))

    assert loaded == contacts
    assert loaded["ana@example.com"] is loaded["carol@example.com"]


def test_contacts_file_is_gzip_of_documented_lines() -> None:
    data = _contacts_bytes({"bob@example.com": NEW_ONLY, "ana@example.com": BOOK_ONLY})

    assert gzip.decompress(data).decode().splitlines() == [
        '[1,["5c2b"],["New"],["bob@example.com"]]',
        '[1,[],[],["ana@example.com"]]',
    ]


def test_contacts_sharing_a_record_share_a_line_of_at_most_ten_thousand() -> None:
    contacts = {f"user{n:05d}@example.com": NEW_ONLY for n in range(10_001)}
    contacts["ana@example.com"] = BOOK_ONLY

    lines = gzip.decompress(_contacts_bytes(contacts)).decode().splitlines()

    assert [json.loads(line)[:3] for line in lines] == [[1, ["5c2b"], ["New"]]] * 2 + [[1, [], []]]
    assert json.loads(lines[0])[3] == [f"user{n:05d}@example.com" for n in range(10_000)]
    assert json.loads(lines[1])[3] == ["user10000@example.com"]
    assert read_contacts(io.BytesIO(_contacts_bytes(contacts))) == contacts


def test_snapshot_in_one_line_per_contact_is_still_read() -> None:
    data = b'["bob@example.com",1,["5c2b"],["New"]]\n[1,["5c2b"],["New"],["ana@example.com"]]\n'

    assert read_contacts(io.BytesIO(gzip.compress(data))) == {
        "ana@example.com": NEW_ONLY,
        "bob@example.com": NEW_ONLY,
    }


def test_contacts_written_to_a_named_file_give_the_same_bytes_whatever_its_name(tmp_path: Path) -> None:
    contacts = {"ana@example.com": NEW_ONLY}
    for name in ("one.tmp-1", "other.tmp-2"):
        with (tmp_path / name).open("wb") as stream:
            write_contacts(stream, contacts)

    assert (
        (tmp_path / "one.tmp-1").read_bytes()
        == (tmp_path / "other.tmp-2").read_bytes()
        == _contacts_bytes(contacts)
    )


def test_equal_contacts_give_equal_bytes() -> None:
    first = _contacts_bytes({"ana@example.com": NEW_ONLY, "bob@example.com": BOOK_ONLY})
    second = _contacts_bytes({"bob@example.com": BOOK_ONLY, "ana@example.com": NEW_ONLY})

    assert first == second


def test_plain_contacts_file_is_read() -> None:
    data = b'["ana@example.com",1,["5c2b"],["New"]]\n'

    assert read_contacts(io.BytesIO(data)) == {"ana@example.com": NEW_ONLY}


@pytest.mark.parametrize(
    ("data", "line"),
    [
        pytest.param(b'["ana@example.com",1,[],[]]\nnot json\n', 2, id="not-json"),
        pytest.param(b'["ana@example.com",1,[]]\n', 1, id="too-short"),
        pytest.param(b'["ana@example.com",2,[],[]]\n', 1, id="bad-flag"),
        pytest.param(b'["ana@example.com",1,"5c2b",[]]\n', 1, id="ids-not-list"),
        pytest.param(b'["ana@example.com",1,[],[7]]\n', 1, id="name-not-string"),
        pytest.param(b"[42,1,[],[]]\n", 1, id="no-email"),
        pytest.param(b'["ana@example.com",1,[],[]]\n["bob@exa', 2, id="cut-off"),
        pytest.param(
            b'[1,[],[],["ana@example.com"]]\n[1,[],[],["bob@example.com",7]]\n', 2, id="group-not-email"
        ),
        pytest.param(b'[1,[],[],["ana@example.com","bob.example.com"]]\n', 1, id="group-no-at"),
        pytest.param(b'[1,[],[],"ana@example.com"]\n', 1, id="group-emails-not-list"),
        pytest.param(b"[1,[],[]]\n", 1, id="group-too-short"),
        pytest.param(b'[1,[],[7],["ana@example.com"]]\n', 1, id="group-name-not-string"),
        pytest.param(b'[0,[],[],["ana@example.com"]]x\n', 1, id="group-trailing-garbage"),
    ],
)
def test_corrupt_contacts_name_part_and_line_but_no_email(data: bytes, line: int) -> None:
    with pytest.raises(StateFileError) as caught:
        read_contacts(io.BytesIO(gzip.compress(data)), part="contacts.jsonl.gz")

    assert caught.value.line == line
    assert "contacts.jsonl.gz" in str(caught.value)
    assert f"line {line}" in str(caught.value)
    assert "@" not in str(caught.value)


def test_truncated_gzip_is_corrupt() -> None:
    data = _contacts_bytes({f"user{n}@example.com": NEW_ONLY for n in range(500)})

    with pytest.raises(StateFileError):
        read_contacts(io.BytesIO(data[: len(data) // 2]))


def test_journal_round_trip_keeps_order() -> None:
    records = [("bob@example.com", NEW_ONLY), ("ana@example.com", EMPTY_RECORD)]
    stream = io.BytesIO()

    write_journal(stream, records)

    assert list(read_journal(io.BytesIO(stream.getvalue()))) == records


def test_diff_round_trip() -> None:
    changes = [
        ContactChange("ana@example.com", VIP_AND_NEW, NEW_ONLY),
        ContactChange("bob@example.com", EMPTY_RECORD, BOOK_ONLY),
    ]
    stream = io.BytesIO()

    write_diff(stream, changes)

    assert list(read_diff(io.BytesIO(stream.getvalue()))) == changes
    assert gzip.decompress(stream.getvalue()).decode().splitlines()[0] == (
        '["ana@example.com",1,["5c2b"],["New"],1,["5b1a","5c2b"],["New","VIP"]]'
    )


def test_diff_with_journal_line_is_corrupt() -> None:
    with pytest.raises(StateFileError, match="line 1"):
        list(read_diff(io.BytesIO(b'["ana@example.com",1,[],[]]\n'), part="diffs/00000003/5c2b.jsonl.gz"))


@pytest.mark.parametrize(
    ("generation", "key", "name"),
    [
        pytest.param(7, "address-book", "00000007-address-book.jsonl.gz", id="address-book"),
        pytest.param(
            12345, "5b1a2c3d4e5f60718293a4b5", "00012345-5b1a2c3d4e5f60718293a4b5.jsonl.gz", id="segment"
        ),
    ],
)
def test_journal_names(generation: int, key: str, name: str) -> None:
    assert journal_name(generation, key) == name
    assert parse_journal_name(name) == (generation, key)


@pytest.mark.parametrize(
    "name",
    [pytest.param("7-vip.jsonl.gz", id="short-generation"), pytest.param("00000007-vip.json", id="suffix")],
)
def test_bad_journal_names(name: str) -> None:
    with pytest.raises(StateFileError):
        parse_journal_name(name)


def test_diff_path() -> None:
    assert diff_path(3, "address-book") == "diffs/00000003/address-book.jsonl.gz"


def test_fold_journals_applies_generations_in_order() -> None:
    contacts = {"ana@example.com": VIP_AND_NEW, "carol@example.com": NEW_ONLY}
    # Given newest first, as an object store might list them.
    journals = [
        (9, "5c2b", [("ana@example.com", BOOK_ONLY)]),
        (8, "address-book", [("ana@example.com", NEW_ONLY), ("bob@example.com", BOOK_ONLY)]),
        (8, "5b1a", [("carol@example.com", EMPTY_RECORD)]),
    ]

    applied = fold_journals(contacts, journals)

    assert applied == 4
    assert contacts == {"ana@example.com": BOOK_ONLY, "bob@example.com": BOOK_ONLY}


def test_fold_journals_read_from_files() -> None:
    contacts: dict[str, ContactRecord] = {}
    files = {}
    for generation, record in [(2, BOOK_ONLY), (1, NEW_ONLY)]:
        stream = io.BytesIO()
        write_journal(stream, [("ana@example.com", record)])
        files[journal_name(generation, "address-book")] = stream.getvalue()

    fold_journals(
        contacts,
        (
            (*parse_journal_name(name), read_journal(io.BytesIO(data), part=name))
            for name, data in files.items()
        ),
    )

    assert contacts == {"ana@example.com": BOOK_ONLY}


def test_escaped_email_round_trips() -> None:
    contacts = {"ana@bücher.example": NEW_ONLY, 'we"ird@example.com': NEW_ONLY, "bob@example.com": NEW_ONLY}

    assert read_contacts(io.BytesIO(_contacts_bytes(contacts))) == contacts


def test_trailing_garbage_after_record_is_corrupt() -> None:
    data = b'["ana@example.com",1,[],[]]x]\n'

    with pytest.raises(StateFileError, match="line 1"):
        read_contacts(io.BytesIO(data))


def test_contacts_nested_past_the_decoders_depth_are_corrupt_at_their_line() -> None:
    data = b'[1,[],[],["ana@example.com"]]\n[1,' + b"[" * 5000 + b"]" * 5000 + b',[],["bob@example.com"]]\n'

    with pytest.raises(StateFileError, match="line 2") as caught:
        read_contacts(io.BytesIO(data), part="contacts.jsonl.gz")

    assert "@" not in str(caught.value)


def test_contacts_given_as_a_mapping_of_fresh_records_are_written_as_given() -> None:
    class FreshRecords(Mapping[str, ContactRecord]):
        """Builds a new record object on every look-up, so no two look-ups share one."""

        def __init__(self, fields: dict[str, tuple[bool, tuple[str, ...], tuple[str, ...]]]) -> None:
            self._fields = fields

        def __getitem__(self, email: str) -> ContactRecord:
            return ContactRecord(*self._fields[email])

        def __iter__(self) -> Iterator[str]:
            return iter(self._fields)

        def __len__(self) -> int:
            return len(self._fields)

    kinds = [(True, ("5b1a",), ("VIP",)), (True, ("5c2b",), ("New",)), (True, (), ())]
    fields = {f"user{n:02d}@example.com": kinds[n % 3] for n in range(30)}

    loaded = read_contacts(io.BytesIO(_contacts_bytes(FreshRecords(fields))))

    assert loaded == {email: ContactRecord(*item) for email, item in fields.items()}
