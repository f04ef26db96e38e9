"""The hook paces every call: the tier's limit divided by the pool's slots, slower when Klaviyo says little is left."""

from __future__ import annotations

import pytest

from tests.unit.hooks.klaviyo_fixtures import BASE, FakeClock, make_hook

LISTS = f"{BASE}/api/lists"
JOBS = f"{BASE}/api/profile-bulk-import-jobs"


def _headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }


@pytest.mark.parametrize(
    ("remaining", "expected_wait"),
    [
        # 10 left of 750 (under 10 %), 30 s to the window's reset, two slots sharing what is left:
        # one call every 30 * 2 / 10 = 6 s.
        (10, 6.0),
        # Nothing left: wait for the window to reset.
        (0, 30.0),
        # Plenty left: only the tier's own pace (L: 75/s over 2 slots) applies, no extra wait.
        (700, 0.0),
    ],
)
def test_low_remaining_spreads_the_next_calls(
    klaviyo_conn, clock: FakeClock, requests_mock, remaining: int, expected_wait: float
) -> None:
    hook = make_hook(clock, concurrency=2)
    requests_mock.get(LISTS, json={"data": []}, headers=_headers(750, remaining, 30))

    hook.request("GET", "/api/lists")
    before = clock.now
    hook.request("GET", "/api/lists")

    assert clock.now - before == pytest.approx(expected_wait)


def test_each_slot_takes_its_share_of_the_tier(klaviyo_conn, clock: FakeClock, requests_mock) -> None:
    # The bulk import endpoint is tier M, 10 calls a second; with the pool's 4 slots each task may send 2.
    hook = make_hook(clock, concurrency=4)
    requests_mock.post(JOBS, status_code=202, json={"data": {"type": "profile-bulk-import-job", "id": "J"}})
    profiles = [{"type": "profile", "attributes": {"email": "a@example.com"}}]

    started = clock.now
    for _ in range(5):
        hook.submit_bulk_import(profiles, None)

    # Calls 1-2 in the first second, 3-4 in the second, 5 in the third.
    assert clock.now - started == pytest.approx(2.0)
    assert hook.throttled == 0
