"""Splitting a push task's changes into requests within Klaviyo's documented limits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_klaviyo_nosto.sync.model import ContactChange

T = TypeVar("T")

#: Klaviyo accepts at most 10,000 profiles in one bulk import job.
MAX_PROFILES_PER_IMPORT = 10_000
# Klaviyo caps a request body at 5 MB; the margin covers the envelope and any difference between
# this estimate and the encoder the hook uses.
MAX_IMPORT_BYTES = 4_500_000
#: List relationship calls take at most 1,000 profile ids.
MAX_IDS_PER_LIST_CALL = 1_000
#: Profile look-ups by email return pages of at most 100, so a filter holds at most 100 emails.
MAX_EMAILS_PER_LOOKUP = 100

# The job envelope around the profiles: type, attributes, the list relationship and brackets.
_ENVELOPE_BYTES = 512


@dataclass
class BulkImportBatch:
    """The profiles of one bulk import job.

    :param add_to_list: whether the job attaches the address-book list, adding every profile in it.
    :param changes: the changes whose new record the job writes, sorted by email.
    """

    add_to_list: bool
    changes: list[ContactChange]

    @property
    def emails(self) -> list[str]:
        return [change.email for change in self.changes]


def needs_profile_write(change: ContactChange) -> bool:
    """Whether a change needs a bulk import at all.

    A contact staying in or joining the address book gets its whole value written. A contact
    leaving it is only written when its value changes; otherwise the list removal is all there is
    to do, and an import would re-create a profile deleted in Klaviyo.

    :param change: one planned change.
    """
    return change.new.in_address_book or change.value_changed


def plan_bulk_batches(
    changes: Sequence[ContactChange],
    property_name: str,
    *,
    max_profiles: int = MAX_PROFILES_PER_IMPORT,
    max_bytes: int = MAX_IMPORT_BYTES,
) -> list[BulkImportBatch]:
    """Group changes into bulk import jobs of at most ``max_profiles`` profiles and ``max_bytes``.

    Contacts in the address book after the change go in jobs that attach the list; contacts leaving
    it whose value changes go in jobs without the list (their removal is a separate call).
    Contacts whose only change is leaving the list are in no job. Output is sorted by email, so
    equal changes give equal batches.

    :param changes: one push task's changes.
    :param property_name: the profile property holding the segment names.
    :param max_profiles: profiles per job.
    :param max_bytes: estimated request body size per job.
    """
    if max_profiles < 1:
        raise ValueError("max_profiles must be at least 1")
    ordered = sorted(
        (change for change in changes if needs_profile_write(change)), key=lambda change: change.email
    )
    joining = [change for change in ordered if change.new.in_address_book]
    leaving = [change for change in ordered if not change.new.in_address_book]
    return [
        *_pack(joining, True, property_name, max_profiles, max_bytes),
        *_pack(leaving, False, property_name, max_profiles, max_bytes),
    ]


def list_removals(changes: Iterable[ContactChange]) -> list[ContactChange]:
    """Return the changes that take a contact off the address-book list, sorted by email.

    :param changes: one push task's changes.
    """
    return sorted(
        (change for change in changes if change.leaves_address_book), key=lambda change: change.email
    )


def profile_payload(change: ContactChange, property_name: str) -> dict[str, Any]:
    """Return the JSON:API profile object a bulk import job carries for one change.

    Only the email and the segment property are sent: nothing else of the profile is ever touched.
    An empty value is written as ``[]`` because Klaviyo ignores ``null`` in imports.

    :param change: one planned change.
    :param property_name: the profile property holding the segment names.
    """
    return {
        "type": "profile",
        "attributes": {"email": change.email, "properties": {property_name: list(change.new.value)}},
    }


def estimated_profile_bytes(change: ContactChange, property_name: str) -> int:
    """Estimate the bytes a profile adds to a request body, including its separating comma.

    :param change: one planned change.
    :param property_name: the profile property holding the segment names.
    """
    # Default separators include spaces, as most encoders write them; counting them overestimates.
    return len(json.dumps(profile_payload(change, property_name)).encode("utf-8")) + 2


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield consecutive lists of at most ``size`` items.

    :param items: anything iterable, consumed once.
    :param size: the largest chunk, e.g. 1,000 ids per list call or 100 emails per look-up.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pack(
    changes: list[ContactChange],
    add_to_list: bool,
    property_name: str,
    max_profiles: int,
    max_bytes: int,
) -> Iterator[BulkImportBatch]:
    batch: list[ContactChange] = []
    size = _ENVELOPE_BYTES
    for change in changes:
        profile_bytes = estimated_profile_bytes(change, property_name)
        if _ENVELOPE_BYTES + profile_bytes > max_bytes:
            raise ValueError(
                f"one profile needs {profile_bytes} bytes, more than the {max_bytes} allowed per job"
            )
        if batch and (len(batch) >= max_profiles or size + profile_bytes > max_bytes):
            yield BulkImportBatch(add_to_list, batch)
            batch, size = [], _ENVELOPE_BYTES
        batch.append(change)
        size += profile_bytes
    if batch:
        yield BulkImportBatch(add_to_list, batch)
