"""The floor: the fewest calls Klaviyo's documented batch sizes allow for a mix of changes, and the least time
its documented rate limits allow for those calls. ``docs/performance.md`` derives the same formulas."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

#: Documented batch sizes (Klaviyo API reference, revision 2026-07-15).
PROFILES_PER_BULK_JOB = 10_000
IDS_PER_LIST_CALL = 1_000
EMAILS_PER_LOOKUP = 100
#: Documented tiers as (burst per second, steady per minute).
TIER_M = (10, 150)
TIER_L = (75, 750)

BULK_JOBS = "POST /api/profile-bulk-import-jobs"
LOOKUPS = "GET /api/profiles"
LIST_REMOVALS = "DELETE /api/lists/{id}/relationships/profiles"
LIST_ADDS = "POST /api/lists/{id}/relationships/profiles"
PROFILE_UPSERTS = "POST /api/profile-import"
TIERS = {
    BULK_JOBS: TIER_M,
    LOOKUPS: TIER_L,
    LIST_REMOVALS: TIER_M,
    LIST_ADDS: TIER_M,
    PROFILE_UPSERTS: TIER_L,
}


@dataclass(frozen=True)
class ChangeMix:
    """What one run has to apply.

    :param joins: contacts joining the address-book list (their value is written too).
    :param value_changes: contacts staying in the list whose value changes.
    :param removals: contacts leaving the list (their value is cleared too).
    """

    joins: int
    value_changes: int
    removals: int


def floor_calls(mix: ChangeMix) -> dict[str, int]:
    """The fewest calls per endpoint: bulk jobs for every value, lookups and list removals for leavers."""
    calls = {
        # Joins and value changes share jobs that attach the list (re-adding a member changes nothing);
        # the cleared values of leavers need a job without the list, or it would add them back.
        BULK_JOBS: math.ceil((mix.joins + mix.value_changes) / PROFILES_PER_BULK_JOB)
        + math.ceil(mix.removals / PROFILES_PER_BULK_JOB),
        # List removal takes profile ids; an email becomes an id through a look-up of 100 per call.
        LOOKUPS: math.ceil(mix.removals / EMAILS_PER_LOOKUP),
        LIST_REMOVALS: math.ceil(mix.removals / IDS_PER_LIST_CALL),
    }
    return {endpoint: count for endpoint, count in calls.items() if count}


def split_floor_calls(shares: Iterable[ChangeMix]) -> dict[str, int]:
    """The fewest calls when each share is applied by its own task in calls of its own.

    The specification has one push task per segment (and one for the address book), each writing the contacts
    it owns in its own bulk jobs and removing its own leavers: every task with work pays at least one call of
    each kind it needs, so this floor is the sum of each share's floor. The gap between it and
    :func:`floor_calls` of the whole mix is the price of that split, not of how the tasks make their calls.
    """
    total: Counter[str] = Counter()
    for share in shares:
        total.update(floor_calls(share))
    return dict(total)


def endpoint_seconds(calls: int, tier: tuple[int, int], scale: float = 1.0) -> float:
    """The least time ``calls`` calls to one endpoint take under fixed 1-s and 60-s windows.

    The first call goes at 0; every window holds at most its limit, so the last call goes at the start of
    the last window it needs. ``scale`` multiplies window lengths, as the sandbox's ``--rate-scale`` does.
    """
    if calls <= 0:
        return 0.0
    burst, steady = tier
    return scale * max((math.ceil(calls / burst) - 1) * 1.0, (math.ceil(calls / steady) - 1) * 60.0)


def floor_seconds(calls: dict[str, int], scale: float = 1.0) -> float:
    """The least time for ``calls``: endpoints have separate limits, so the slowest endpoint decides."""
    return max((endpoint_seconds(n, TIERS[endpoint], scale) for endpoint, n in calls.items()), default=0.0)


def peer_calls(mix: ChangeMix) -> dict[str, int]:
    """Calls of the loop a user writes with the SDK: one upsert per changed contact, list calls of 1,000 ids."""
    calls = {
        PROFILE_UPSERTS: mix.joins + mix.value_changes + mix.removals,
        LIST_ADDS: math.ceil(mix.joins / IDS_PER_LIST_CALL),
        LIST_REMOVALS: math.ceil(mix.removals / IDS_PER_LIST_CALL),
    }
    return {endpoint: count for endpoint, count in calls.items() if count}
