from __future__ import annotations

import random

import aiohttp
import pytest
import requests
import tenacity
from urllib3.exceptions import MaxRetryError, NewConnectionError

from airflow_provider_klaviyo_nosto.hooks.pacing import KlaviyoPacer, endpoint_template, tier_of
from airflow_provider_klaviyo_nosto.hooks.retry import (
    RetryAfterTooLongError,
    RetryPolicy,
    is_retryable,
    parse_retry_after,
)
from tests.unit.hooks.klaviyo_fixtures import FakeClock


class TestIsRetryable:
    def test_read_timeout_needs_idempotency(self):
        assert is_retryable(requests.ReadTimeout(), idempotent=True)
        assert not is_retryable(requests.ReadTimeout(), idempotent=False)

    def test_never_sent_is_always_retryable(self):
        refused = requests.ConnectionError(
            MaxRetryError(None, "/api/lists", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
        )
        assert is_retryable(requests.ConnectTimeout(), idempotent=False)
        assert is_retryable(refused, idempotent=False)

    def test_reset_after_sending_needs_idempotency(self):
        reset = requests.ConnectionError(ConnectionResetError(104, "reset"))
        assert is_retryable(reset, idempotent=True)
        assert not is_retryable(reset, idempotent=False)

    def test_aiohttp_errors(self):
        assert is_retryable(aiohttp.ServerDisconnectedError(), idempotent=True)
        assert not is_retryable(aiohttp.ServerDisconnectedError(), idempotent=False)
        assert is_retryable(TimeoutError(), idempotent=True)

    def test_unrelated_errors_are_terminal(self):
        assert not is_retryable(ValueError("boom"))
        assert not is_retryable(KeyError("x"))


@pytest.mark.parametrize(
    ("value", "expected"), [("2", 2.0), (" 1.5 ", 1.5), (None, None), ("soon", None), ("-1", None)]
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


class Throttled(Exception):
    status = 429

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


class TestPolicy:
    def _run(self, policy: RetryPolicy, errors: list[Exception]) -> int:
        calls = []

        def call() -> str:
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "ok"

        policy.retrying(idempotent=True)(call)
        return len(calls)

    def test_retry_after_is_waited_at_least(self):
        clock = FakeClock()
        policy = RetryPolicy(sleep=clock.sleep, rng=random.Random(1))
        assert self._run(policy, [Throttled(7)]) == 2
        assert 7 <= clock.sleeps[0] <= 8

    def test_ceiling_raises_without_sleeping(self):
        clock = FakeClock()
        policy = RetryPolicy(sleep=clock.sleep, max_retry_wait=60)
        with pytest.raises(RetryAfterTooLongError, match="86400"):
            self._run(policy, [Throttled(86400)])
        assert clock.sleeps == []

    def test_backoff_grows_with_jitter_and_stops(self):
        clock = FakeClock()
        policy = RetryPolicy(sleep=clock.sleep, max_attempts=4, rng=random.Random(3))
        with pytest.raises(Throttled):
            self._run(policy, [Throttled(None) for _ in range(10)])
        assert len(clock.sleeps) == 3
        for attempt, pause in enumerate(clock.sleeps):
            assert 2**attempt <= pause <= 1.5 * 2**attempt

    async def _arun(self, policy: RetryPolicy, errors: list[Exception]) -> int:
        calls = []

        async def call() -> str:
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "ok"

        await policy.async_retrying(idempotent=True)(call)
        return len(calls)

    @pytest.mark.asyncio
    async def test_async_uses_the_same_rules(self):
        clock = FakeClock()
        policy = RetryPolicy(async_sleep=clock.async_sleep, rng=random.Random(1))
        assert await self._arun(policy, [Throttled(3), Throttled(None)]) == 3
        assert clock.sleeps[0] >= 3

    def test_invalid_settings(self):
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy(max_attempts=0)

    def test_reraises_the_real_exception(self):
        policy = RetryPolicy(sleep=lambda _s: None, max_attempts=2)
        with pytest.raises(Throttled):
            self._run(policy, [Throttled(0), Throttled(0)])
        assert not issubclass(Throttled, tenacity.RetryError)


class TestEndpointTable:
    @pytest.mark.parametrize(
        ("method", "path", "template", "tier"),
        [
            ("GET", "/api/accounts", "/api/accounts", "XS"),
            ("GET", "/api/lists", "/api/lists", "L"),
            ("POST", "/api/lists", "/api/lists", "M"),
            (
                "GET",
                "https://a.klaviyo.com/api/lists/L1/relationships/profiles/?page%5Bcursor%5D=c2",
                "/api/lists/{id}/relationships/profiles",
                "L",
            ),
            ("DELETE", "/api/lists/L1/relationships/profiles", "/api/lists/{id}/relationships/profiles", "M"),
            ("GET", "/api/lists/L1/flow-triggers", "/api/lists/{id}/flow-triggers", "S"),
            ("PATCH", "/api/profiles/P1", "/api/profiles/{id}", "L"),
            (
                "GET",
                "/api/profile-bulk-import-jobs/J1/import-errors",
                "/api/profile-bulk-import-jobs/{id}/import-errors",
                "M",
            ),
        ],
    )
    def test_templates_and_tiers(self, method, path, template, tier):
        assert endpoint_template(method, path) == (method, template)
        assert tier_of(method, path) == tier

    def test_unknown_endpoint_is_paced_conservatively(self):
        assert tier_of("GET", "/api/metrics") == "S"


class TestPacer:
    def test_limits_are_divided_by_concurrency(self):
        pacer = KlaviyoPacer(concurrency=3)
        assert pacer.limits("M") == (3, 50)
        assert pacer.limits("L") == (25, 250)
        assert pacer.limits("XS") == (1, 5)
        assert KlaviyoPacer(concurrency=1).limits("L") == (75, 750)
        assert KlaviyoPacer(concurrency=500).limits("M") == (1, 1)

    def test_burst_window(self):
        clock = FakeClock()
        pacer = KlaviyoPacer(clock=clock, sleep=clock.sleep)
        for _ in range(10):
            pacer.wait("POST", "/api/profile-bulk-import-jobs")
        assert clock.sleeps == []
        pacer.wait("POST", "/api/profile-bulk-import-jobs")
        assert clock.sleeps == [pytest.approx(1.0)]

    def test_steady_window_shared_by_slots(self):
        clock = FakeClock()
        pacer = KlaviyoPacer(concurrency=5, clock=clock, sleep=clock.sleep)
        start = clock()
        for _ in range(31):
            pacer.wait("POST", "/api/lists/L1/relationships/profiles")
        # M is 150/min; a fifth of it is 30 calls per minute, so the 31st waits for the window.
        assert clock() - start >= 60

    def test_endpoints_have_separate_windows(self):
        clock = FakeClock()
        pacer = KlaviyoPacer(clock=clock, sleep=clock.sleep)
        pacer.wait("GET", "/api/accounts")
        pacer.wait("GET", "/api/lists")
        assert clock.sleeps == []

    def test_slows_down_when_remaining_is_low(self):
        clock = FakeClock()
        pacer = KlaviyoPacer(clock=clock, sleep=clock.sleep)
        headers = {"RateLimit-Limit": "750", "RateLimit-Remaining": "5", "RateLimit-Reset": "30"}
        pacer.observe("GET", "/api/profiles", headers)
        assert pacer.delay("GET", "/api/profiles") == pytest.approx(6.0)
        pacer.wait("GET", "/api/profiles")
        assert clock.sleeps == [pytest.approx(6.0)]

    def test_waits_for_reset_when_nothing_remains(self):
        clock = FakeClock()
        pacer = KlaviyoPacer(concurrency=2, clock=clock, sleep=clock.sleep)
        pacer.observe(
            "GET",
            "/api/profiles",
            {"RateLimit-Limit": "750", "RateLimit-Remaining": "0", "RateLimit-Reset": "42"},
        )
        assert pacer.delay("GET", "/api/profiles") == pytest.approx(42.0)

    def test_plenty_remaining_changes_nothing(self):
        pacer = KlaviyoPacer()
        pacer.observe(
            "GET",
            "/api/profiles",
            {"RateLimit-Limit": "750", "RateLimit-Remaining": "500", "RateLimit-Reset": "30"},
        )
        pacer.observe("GET", "/api/profiles", {})
        assert pacer.delay("GET", "/api/profiles") == 0

    def test_concurrency_must_be_positive(self):
        with pytest.raises(ValueError, match="concurrency"):
            KlaviyoPacer(concurrency=0)
