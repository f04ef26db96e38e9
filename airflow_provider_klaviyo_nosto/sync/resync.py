"""What Klaviyo really holds, as applied-state records: the base of a full resync and of a migration.

A normal run plans against the applied state, what Klaviyo confirmed. A full resync plans against what
Klaviyo holds now, read from the address-book list and the profiles, so that anything changed in Klaviyo
by hand (a deleted list, an edited value) shows up as a difference and is repaired. A migration to another
property name plans against records marked as not written, so that every contact is written again.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from dataclasses import replace
from typing import Any

from airflow_provider_klaviyo_nosto.sync.emails import InvalidEmail, normalise_email
from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactRecord
from airflow_provider_klaviyo_nosto.sync.state import AppliedState

#: Prefix of a value item that no Nosto segment name can be (names never hold a NUL character); a
#: record carrying it always differs from the record a plan wants, so its contact is written again.
NOT_A_SEGMENT = "\x00"
#: The item that marks a record as not confirmed under the configured property.
NOT_WRITTEN = NOT_A_SEGMENT + "not written under the configured property"


def observed_value(raw: Any) -> tuple[str, ...]:
    """Return the record value for a property value read from Klaviyo.

    A missing property counts as empty. A list of distinct strings in sorted order is taken as it is;
    anything else (unsorted, duplicated, not a list, not strings: a hand edit) becomes a value that no
    plan wants, so the contact's value is written again.

    :param raw: the property's JSON value, ``None`` when the profile lacks it.
    """
    if raw is None:
        return ()
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        if list(raw) == sorted(set(raw)):
            return tuple(raw)
        return (*raw, NOT_A_SEGMENT + "unsorted")
    return (NOT_A_SEGMENT + json.dumps(raw, sort_keys=True, default=str),)


def observed_state(
    applied: AppliedState,
    list_members: Iterable[tuple[str, Any]],
    other_profiles: Iterable[tuple[str, Any]],
    ids_by_name: Mapping[str, str],
    known: Container[str],
) -> tuple[AppliedState, int]:
    """Build the state Klaviyo holds from what was read, keeping the applied state's list and segments.

    Only contacts of this sync count: a list member that is neither in the export nor in the applied state
    was added by someone else, and a sync only ever removes what it added.

    :param applied: the applied state; only its list, property, generation and segments are kept.
    :param list_members: ``(email as Klaviyo stores it, property value)`` of every address-book member.
    :param other_profiles: the same for profiles outside the list whose value matters (contacts the
        applied state knows and the export no longer lists).
    :param ids_by_name: segment name -> id, for every name a value may hold (current and remembered).
    :param known: the normalised emails of this sync's contacts (the export's and the applied state's).
    :return: the observed state, and how many members were left out (unusable email, or not this sync's).
    """
    contacts: dict[str, ContactRecord] = {}
    records: dict[ContactRecord, ContactRecord] = {}
    unusable = 0
    for in_book, profiles in ((True, list_members), (False, other_profiles)):
        for stored, raw in profiles:
            try:
                email = normalise_email(stored)
            except InvalidEmail:
                unusable += 1
                continue
            if email not in known:
                unusable += 1
                continue
            if not in_book and email in contacts:
                continue
            value = observed_value(raw)
            ids = tuple(sorted({ids_by_name[name] for name in value if name in ids_by_name}))
            record = ContactRecord(in_book, ids, value)
            if record != EMPTY_RECORD:
                contacts[email] = records.setdefault(record, record)
    observed = replace(applied, segments=dict(applied.segments), contacts=contacts)
    return observed, unusable


def any_not_written(contacts: Mapping[str, ContactRecord]) -> bool:
    """Whether some contact still carries the mark of :func:`mark_not_written`.

    :param contacts: normalised email -> applied record (shared objects: each distinct one is checked once).
    """
    distinct = {id(record): record for record in contacts.values()}
    return any(NOT_WRITTEN in record.value for record in distinct.values())


def mark_not_written(contacts: Mapping[str, ContactRecord]) -> dict[str, ContactRecord]:
    """Return the contacts with every record marked as not written, so a plan writes each one again.

    Used when the property name changes: the applied records say what the old property holds. Saved as
    the snapshot, the marks also make a contact Klaviyo rejected during the migration be written again
    on the next run.

    :param contacts: normalised email -> applied record.
    """
    marked: dict[ContactRecord, ContactRecord] = {}
    result = {}
    for email, record in contacts.items():
        new = marked.get(record)
        if new is None:
            new = marked[record] = ContactRecord(
                record.in_address_book, record.segment_ids, (*record.value, NOT_WRITTEN)
            )
        result[email] = new
    return result
