"""Klaviyo-style fixed-window rate limiting, shared by every key of the one sandbox account."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.openapi import RateLimitSpec

#: Window lengths in real seconds before scaling: burst, steady, daily.
BURST_WINDOW = 1.0
STEADY_WINDOW = 60.0
DAILY_WINDOW = 86_400.0


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one check. ``retry_after`` is set only when the request is refused."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int | None = None


class RateLimiter:
    """Fixed windows, as Klaviyo documents them, counted from when the limiter was (re)set.

    Counting from the reset rather than from the epoch makes a test that has just changed the scale
    start at the beginning of every window, so a daily cap cannot roll over half-way through it.

    :param scale: multiplies every window length, so tests can run through a minute's window in a
        fraction of a second without changing the limits themselves
    :param clock: seconds since the epoch; replaceable in tests
    """

    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.scale = scale
        self.enabled = True
        self._clock = clock
        self._counters: dict[tuple[str, str], tuple[int, int]] = {}
        self._origin = clock()

    def reset(self) -> None:
        self._counters.clear()
        self._origin = self._clock()

    def _windows(self, spec: RateLimitSpec) -> list[tuple[str, float, int]]:
        windows = [("burst", BURST_WINDOW, spec.burst), ("steady", STEADY_WINDOW, spec.steady)]
        if spec.daily is not None:
            windows.append(("daily", DAILY_WINDOW, spec.daily))
        return [(name, length * self.scale, limit) for name, length, limit in windows]

    def check(self, bucket: str, spec: RateLimitSpec) -> RateDecision:
        """Count one request against ``bucket`` unless a window is already full."""
        now = self._clock() - self._origin
        windows = self._windows(spec)
        counts: list[tuple[str, int, int, int, float]] = []
        for name, length, limit in windows:
            index = math.floor(now / length)
            stored_index, count = self._counters.get((bucket, name), (index, 0))
            if stored_index != index:
                count = 0
            window_end = (index + 1) * length
            counts.append((name, index, count, limit, window_end))

        if self.enabled:
            full = [(end, limit) for _name, _index, count, limit, end in counts if count >= limit]
            if full:
                # The longest wait decides: being allowed by the burst window alone is no help.
                wait = max(end - now for end, _limit in full)
                return RateDecision(False, spec.steady, 0, 0, retry_after=max(1, math.ceil(wait)))

        for name, index, count, _limit, _end in counts:
            self._counters[(bucket, name)] = (index, count + 1)
        _name, _index, steady_count, steady_limit, steady_end = counts[1]
        return RateDecision(
            True,
            limit=steady_limit,
            remaining=max(0, steady_limit - steady_count - 1),
            reset=max(0, math.ceil(steady_end - now)),
        )
