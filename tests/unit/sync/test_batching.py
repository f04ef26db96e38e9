from __future__ import annotations

import json

import pytest

from airflow_provider_klaviyo_nosto.sync.batching import (
    chunked,
    list_removals,
    plan_bulk_batches,
    profile_payload,
)
from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactChange, ContactRecord

VIP = ContactRecord(True, ("5b01",), ("vip",))
BOOK_ONLY = ContactRecord(True, (), ())


def _joining(count: int) -> list[ContactChange]:
    return [ContactChange(f"user{n:05d}@example.com", EMPTY_RECORD, VIP) for n in range(count)]


def test_profile_payload_carries_only_email_and_property() -> None:
    change = ContactChange("ana@example.com", EMPTY_RECORD, ContactRecord(True, ("1", "2"), ("new", "vip")))

    assert profile_payload(change, "nosto_segment") == {
        "type": "profile",
        "attributes": {"email": "ana@example.com", "properties": {"nosto_segment": ["new", "vip"]}},
    }


def test_b13_empty_value_is_an_empty_list() -> None:
    change = ContactChange("ana@example.com", VIP, BOOK_ONLY)

    assert profile_payload(change, "nosto_segment")["attributes"]["properties"] == {"nosto_segment": []}


def test_10001_profiles_make_two_jobs() -> None:
    batches = plan_bulk_batches(_joining(10_001), "nosto_segment")

    assert [len(batch.changes) for batch in batches] == [10_000, 1]
    assert all(batch.add_to_list for batch in batches)


def test_byte_cap_splits_jobs() -> None:
    changes = _joining(100)
    one_profile = len(json.dumps(profile_payload(changes[0], "nosto_segment")))

    batches = plan_bulk_batches(changes, "nosto_segment", max_bytes=30 * one_profile)

    assert len(batches) > 1
    for batch in batches:
        body = json.dumps([profile_payload(change, "nosto_segment") for change in batch.changes])
        assert len(body) <= 30 * one_profile
    assert sum(len(batch.changes) for batch in batches) == 100


def test_profile_too_large_for_any_job_is_refused() -> None:
    with pytest.raises(ValueError, match="bytes"):
        plan_bulk_batches(_joining(1), "nosto_segment", max_bytes=100)


def test_leaving_contacts_go_in_jobs_without_the_list() -> None:
    changes = [
        ContactChange("zed@example.com", EMPTY_RECORD, VIP),
        ContactChange("carol@example.com", VIP, EMPTY_RECORD),
        ContactChange("ana@example.com", BOOK_ONLY, VIP),
    ]

    batches = plan_bulk_batches(changes, "nosto_segment")

    assert [(batch.add_to_list, batch.emails) for batch in batches] == [
        (True, ["ana@example.com", "zed@example.com"]),
        (False, ["carol@example.com"]),
    ]
    assert [change.email for change in list_removals(changes)] == ["carol@example.com"]


def test_b14_leaving_without_value_change_is_only_a_list_removal() -> None:
    change = ContactChange("carol@example.com", BOOK_ONLY, EMPTY_RECORD)

    assert plan_bulk_batches([change], "nosto_segment") == []
    assert list_removals([change]) == [change]


def test_batches_are_sorted_by_email() -> None:
    changes = list(reversed(_joining(5)))

    (batch,) = plan_bulk_batches(changes, "nosto_segment")

    assert batch.emails == sorted(batch.emails)


@pytest.mark.parametrize(
    ("count", "size", "lengths"),
    [
        pytest.param(2_500, 1_000, [1_000, 1_000, 500], id="b14-removals-by-1000"),
        pytest.param(250, 100, [100, 100, 50], id="lookups-by-100"),
        pytest.param(0, 100, [], id="nothing"),
    ],
)
def test_chunked(count: int, size: int, lengths: list[int]) -> None:
    chunks = list(chunked(range(count), size))

    assert [len(chunk) for chunk in chunks] == lengths
    assert [item for chunk in chunks for item in chunk] == list(range(count))
