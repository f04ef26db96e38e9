"""Client-side pacing to Klaviyo's rate-limit tiers.

Klaviyo limits every endpoint per account with two fixed windows, a burst (1 s) and a steady (60 s)
one, and all private keys of an account share them. Waiting for 429s to tell us is expensive (the
answer carries a wait of its own and the call is lost), so each hook paces itself before it sends:

* to its endpoint's tier, divided by ``concurrency``, the number of Klaviyo pool slots that may call
  the same account at the same time, so that the slots together stay within the account's quota;
* and further when a response says the account's steady window is nearly used up
  (``RateLimit-Remaining`` under 10 % of ``RateLimit-Limit``): the remaining calls are then spread
  over the seconds left in the window (``RateLimit-Reset``), because other tasks and other tools
  using the same account are invisible to this process.

The windows are tracked as sliding logs of send times, which is stricter than Klaviyo's fixed windows,
so a paced task never exceeds them. This module imports nothing from Airflow.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Tier:
    """A documented Klaviyo rate-limit tier.

    :param burst: calls allowed per second.
    :param steady: calls allowed per minute.
    """

    burst: int
    steady: int


#: The tiers from Klaviyo's rate-limit documentation. L's steady limit is 750/m, as annotated in the
#: OpenAPI spec from revision 2026-01-15 on (older docs say 700/m).
TIERS: dict[str, Tier] = {
    "XS": Tier(burst=1, steady=15),
    "S": Tier(burst=3, steady=60),
    "M": Tier(burst=10, steady=150),
    "L": Tier(burst=75, steady=750),
    "XL": Tier(burst=350, steady=3500),
}

#: The tier of every endpoint the hooks call, from the spec's ``x-klaviyo-ratelimit`` (2026-07-15).
ENDPOINT_TIERS: dict[tuple[str, str], str] = {
    ("GET", "/api/accounts"): "XS",
    ("GET", "/api/lists"): "L",
    ("POST", "/api/lists"): "M",
    ("GET", "/api/lists/{id}"): "L",
    ("PATCH", "/api/lists/{id}"): "M",
    ("GET", "/api/lists/{id}/profiles"): "L",
    ("GET", "/api/lists/{id}/relationships/profiles"): "L",
    ("POST", "/api/lists/{id}/relationships/profiles"): "M",
    ("DELETE", "/api/lists/{id}/relationships/profiles"): "M",
    ("GET", "/api/lists/{id}/flow-triggers"): "S",
    ("GET", "/api/lists/{id}/relationships/flow-triggers"): "S",
    ("GET", "/api/profiles"): "L",
    ("POST", "/api/profiles"): "L",
    ("PATCH", "/api/profiles/{id}"): "L",
    ("POST", "/api/profile-import"): "L",
    ("POST", "/api/profile-bulk-import-jobs"): "M",
    ("GET", "/api/profile-bulk-import-jobs"): "M",
    ("GET", "/api/profile-bulk-import-jobs/{id}"): "M",
    ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors"): "M",
    ("GET", "/api/profile-bulk-import-jobs/{id}/profiles"): "M",
    ("GET", "/api/profile-bulk-import-jobs/{id}/relationships/profiles"): "M",
    ("GET", "/api/profile-bulk-import-jobs/{id}/lists"): "M",
}

#: Endpoints missing from the table are paced as tier S: too slow costs time, too fast costs 429s.
DEFAULT_TIER = "S"

#: Below this share of the steady window left, calls are spread over the rest of the window.
LOW_REMAINING_RATIO = 0.10

_TEMPLATE_SEGMENT = re.compile(r"^\{[^/]+\}$")


def endpoint_template(method: str, path_or_url: str) -> tuple[str, str]:
    """Return the ``(method, path template)`` key of a request, e.g. ``("GET", "/api/lists/{id}")``.

    Ids are recognised by position: any segment where the table has a placeholder. Query strings,
    hosts and a trailing slash (``links.next`` URLs sometimes carry one) are ignored.

    :param method: the HTTP method.
    :param path_or_url: a path such as ``/api/lists/Y6nRLr`` or a full URL.
    """
    method = method.upper()
    path = urlsplit(path_or_url).path.rstrip("/") or "/"
    segments = path.split("/")
    for known_method, template in ENDPOINT_TIERS:
        if known_method != method:
            continue
        template_segments = template.split("/")
        if len(template_segments) == len(segments) and all(
            t == s or _TEMPLATE_SEGMENT.match(t) for t, s in zip(template_segments, segments, strict=True)
        ):
            return method, template
    return method, path


def tier_of(method: str, path_or_url: str) -> str:
    """Return the tier name of a request (see :data:`ENDPOINT_TIERS`)."""
    return ENDPOINT_TIERS.get(endpoint_template(method, path_or_url), DEFAULT_TIER)


def _leading_number(value: str | None) -> float | None:
    # Some deployments send structured values such as "750, 750;w=60"; the first number is the window's.
    if not value:
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)?)", value)
    return float(match.group(1)) if match else None


class _SlidingWindow:
    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.sent: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        while self.sent and self.sent[0] <= now - self.seconds:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[len(self.sent) - self.limit] + self.seconds - now

    def record(self, now: float) -> None:
        self.sent.append(now)


class KlaviyoPacer:
    """Blocks before each call until the endpoint's windows allow it.

    One pacer belongs to one hook (one task); ``concurrency`` tells it how many such tasks may run
    against the account at once, so each takes its share.

    :param concurrency: the number of Klaviyo pool slots sharing the account; limits are divided by it.
    :param clock: monotonic clock in seconds (injectable for tests).
    :param sleep: blocking sleep (injectable for tests).
    """

    def __init__(
        self,
        concurrency: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.clock = clock
        self.sleep = sleep
        self._windows: dict[tuple[str, str], tuple[_SlidingWindow, _SlidingWindow]] = {}
        self._not_before: dict[tuple[str, str], float] = {}

    def limits(self, tier: str) -> tuple[int, int]:
        """Return this pacer's ``(burst, steady)`` share of a tier; never below one call per window."""
        documented = TIERS[tier]
        return (
            max(1, math.floor(documented.burst / self.concurrency)),
            max(1, math.floor(documented.steady / self.concurrency)),
        )

    def _windows_for(self, key: tuple[str, str]) -> tuple[_SlidingWindow, _SlidingWindow]:
        if key not in self._windows:
            burst, steady = self.limits(ENDPOINT_TIERS.get(key, DEFAULT_TIER))
            self._windows[key] = (_SlidingWindow(burst, 1.0), _SlidingWindow(steady, 60.0))
        return self._windows[key]

    def delay(self, method: str, path_or_url: str) -> float:
        """Return how long the next call to this endpoint would have to wait now, in seconds."""
        key = endpoint_template(method, path_or_url)
        now = self.clock()
        burst, steady = self._windows_for(key)
        feedback = self._not_before.get(key, now) - now
        return max(0.0, burst.wait_time(now), steady.wait_time(now), feedback)

    def wait(self, method: str, path_or_url: str) -> float:
        """Block until a call to this endpoint is allowed, then count it. Returns the time slept.

        :param method: the HTTP method.
        :param path_or_url: the request path or URL.
        """
        key = endpoint_template(method, path_or_url)
        slept = 0.0
        # Loop because one window's wait may end inside another's.
        while (pause := self.delay(method, path_or_url)) > 0:
            self.sleep(pause)
            slept += pause
        now = self.clock()
        for window in self._windows_for(key):
            window.record(now)
        return slept

    def observe(self, method: str, path_or_url: str, headers: Mapping[str, str]) -> None:
        """Slow down further when a response says the account's steady window is nearly used up.

        :param method: the HTTP method of the call that was answered.
        :param path_or_url: its path or URL.
        :param headers: the response headers (``RateLimit-Limit``, ``-Remaining``, ``-Reset``).
        """
        limit = _leading_number(headers.get("RateLimit-Limit"))
        remaining = _leading_number(headers.get("RateLimit-Remaining"))
        reset = _leading_number(headers.get("RateLimit-Reset"))
        if not limit or remaining is None or reset is None:
            return
        if remaining >= limit * LOW_REMAINING_RATIO:
            return
        key = endpoint_template(method, path_or_url)
        # With none left, wait for the window to reset; otherwise spread what is left, which every
        # slot shares, so each slot gets 1/concurrency of it.
        spacing = reset if remaining < 1 else min(reset, reset * self.concurrency / remaining)
        self._not_before[key] = max(self._not_before.get(key, 0.0), self.clock() + spacing)
