"""One retry policy for every call the hooks make, synchronous (requests) or asynchronous (aiohttp).

The rules follow what Klaviyo documents and what integrators learned the hard way:

* 429 and 503 mean the server did not act on the request, so they are retried for every method;
  Klaviyo asks clients never to retry before ``Retry-After`` has passed, so that wait is a floor.
* A ``Retry-After`` longer than the ceiling (60 s by default) is not slept through: daily caps such as
  150 list creations a day answer with waits of hours, and a worker slot sleeping for a day is worse
  than a failed try that Airflow retries on its own schedule.
* 500, 502, 504, read timeouts and connections dropped after the request was sent leave the outcome
  unknown: the server may have acted. They are retried only for calls marked idempotent, so a retried
  ``POST /api/lists`` never makes a second list.
* A connection that could not be opened at all is always retried: nothing was sent.
* Every other status (400, 401, 403, 404, 409, ...) is terminal: repeating the same request gives
  the same answer and only burns quota.

This module imports neither Airflow nor the exception classes; it reads ``status``, ``retry_after``
and ``retryable`` from whatever the hooks raise, so the same predicate serves both services.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp
import requests
import tenacity
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

#: Statuses that say the server did not process the request: safe to repeat for any method.
ALWAYS_RETRYABLE_STATUSES = frozenset({429, 503})
#: Statuses after which the server may or may not have acted: repeated only for idempotent calls.
IDEMPOTENT_RETRYABLE_STATUSES = frozenset({500, 502, 504})

DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_RETRY_WAIT = 60.0


class RetryAfterTooLongError(RuntimeError):
    """Raised by the wait when the server asks for a longer wait than the ceiling allows."""

    def __init__(self, retry_after: float, ceiling: float) -> None:
        super().__init__(
            f"The server asked to wait {retry_after:.0f} s, more than the {ceiling:.0f} s ceiling"
        )
        self.retry_after = retry_after
        self.ceiling = ceiling


def status_of(exc: BaseException) -> int | None:
    """Return the HTTP status an exception carries, whichever library raised it."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    status_code = getattr(response, "status_code", None)
    return status_code if isinstance(status_code, int) else None


def _never_sent(exc: BaseException) -> bool:
    """Tell whether a transport error happened before any byte of the request left."""
    if isinstance(exc, requests.ConnectTimeout | aiohttp.ClientConnectorError):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        # requests wraps urllib3's MaxRetryError, whose ``reason`` is the underlying fault.
        cause = exc.args[0]
        reason = getattr(cause, "reason", cause)
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def certificate_refused(exc: BaseException) -> bool:
    """Tell whether a transport error is the server's TLS certificate failing verification: a setting to fix
    (the connection's CA), not a fault that goes away by itself."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return True
    cause: object = exc
    for _ in range(4):  # requests -> urllib3's MaxRetryError -> its SSLError -> the ssl module's error
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        reason = getattr(cause, "reason", None)
        args = getattr(cause, "args", ())
        cause = reason if reason is not None else (args[0] if args else None)
    return False


class _Retrying(Protocol):
    retry_policy: RetryPolicy


@contextmanager
def single_attempt(hook: _Retrying) -> Iterator[None]:
    """Give ``hook`` one attempt per call inside the block, then its own policy back: for a connection test,
    where a person is waiting for the answer and no task retries."""
    policy = hook.retry_policy
    hook.retry_policy = replace(policy, max_attempts=1)
    try:
        yield
    finally:
        hook.retry_policy = policy


def is_retryable(exc: BaseException, *, idempotent: bool = True) -> bool:
    """Decide whether repeating the call that raised ``exc`` can succeed and is safe.

    :param exc: the exception the hook raised: one of the package's Klaviyo/Nosto errors, or a
        transport error from requests or aiohttp.
    :param idempotent: whether repeating the call cannot change the outcome (reads, list membership
        changes, whole-value writes). For calls that create something it must be ``False``.
    """
    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return explicit

    status = status_of(exc)
    if status is not None:
        if status in ALWAYS_RETRYABLE_STATUSES:
            return True
        return idempotent and status in IDEMPOTENT_RETRYABLE_STATUSES

    if certificate_refused(exc):
        return False
    if _never_sent(exc):
        return True
    transport_errors = (
        requests.ConnectionError,
        requests.Timeout,
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
        asyncio.TimeoutError,
        ConnectionError,
    )
    return idempotent and isinstance(exc, transport_errors)


def retry_after_of(exc: BaseException | None) -> float | None:
    """Return the ``Retry-After`` wait carried by ``exc``, in seconds, if any."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header given in seconds; Klaviyo never sends the HTTP-date form.

    :param value: the raw header value, or ``None`` when absent.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass
class RetryAfterOrBackoff(tenacity.wait.wait_base):
    """Wait ``Retry-After`` when the server gave one, else exponential backoff with jitter.

    The server's wait is a floor (a little jitter is added on top so that tasks sharing the account
    do not all come back in the same second), capped by ``ceiling``: beyond it the wait raises
    ``ceiling_error`` at once instead of sleeping.

    :param ceiling: the longest ``Retry-After`` that is slept through, in seconds.
    :param initial: the backoff before the second attempt, in seconds.
    :param maximum: the longest backoff, in seconds.
    :param ceiling_error: builds the exception raised when ``Retry-After`` exceeds ``ceiling``; gets
        the exception that carried the wait, the wait and the ceiling.
    :param rng: random source for the jitter (injectable for tests).
    """

    ceiling: float = DEFAULT_MAX_RETRY_WAIT
    initial: float = 1.0
    maximum: float = 30.0
    ceiling_error: Callable[[BaseException | None, float, float], BaseException] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = retry_after_of(exc)
        if retry_after is not None:
            if retry_after > self.ceiling:
                if self.ceiling_error is not None:
                    raise self.ceiling_error(exc, retry_after, self.ceiling)
                raise RetryAfterTooLongError(retry_after, self.ceiling)
            return retry_after + self.rng.uniform(0.0, min(1.0, retry_after * 0.1 + 0.1))
        # The exponential step is a floor and the jitter goes on top (up to half a step), so a
        # caller that sets ``initial`` to its poll interval never polls faster than that.
        step = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        return step + self.rng.uniform(0.0, step / 2)


@dataclass
class RetryPolicy:
    """The shared retry policy, turned into tenacity controllers for one call at a time.

    :param max_attempts: attempts in total, the first included.
    :param max_retry_wait: the ``Retry-After`` ceiling, in seconds.
    :param initial_backoff: the first backoff step, in seconds.
    :param max_backoff: the longest backoff step, in seconds.
    :param ceiling_error: see :class:`RetryAfterOrBackoff`.
    :param sleep: blocking sleep used by the synchronous path (injectable for tests).
    :param async_sleep: sleep used by the asynchronous path (injectable for tests).
    :param rng: random source for the jitter.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    ceiling_error: Callable[[BaseException | None, float, float], BaseException] | None = None
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.max_retry_wait < 0:
            raise ValueError(f"max_retry_wait must not be negative, got {self.max_retry_wait}")

    def wait(self) -> RetryAfterOrBackoff:
        return RetryAfterOrBackoff(
            ceiling=self.max_retry_wait,
            initial=self.initial_backoff,
            maximum=self.max_backoff,
            ceiling_error=self.ceiling_error,
            rng=self.rng,
        )

    def _kwargs(
        self, idempotent: bool, before_sleep: Callable[[tenacity.RetryCallState], None] | None
    ) -> dict[str, Any]:
        return {
            "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, idempotent=idempotent)),
            "wait": self.wait(),
            "stop": tenacity.stop_after_attempt(self.max_attempts),
            # The caller wants its own exception (status, pointers), not tenacity's RetryError.
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def retrying(
        self,
        *,
        idempotent: bool,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """Return a synchronous controller: ``policy.retrying(idempotent=True)(func, *args)``.

        :param idempotent: see :func:`is_retryable`.
        :param before_sleep: called before every sleep, typically to log a warning.
        """
        return tenacity.Retrying(sleep=self.sleep, **self._kwargs(idempotent, before_sleep))

    def async_retrying(
        self,
        *,
        idempotent: bool,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.AsyncRetrying:
        """Return an asynchronous controller: ``await policy.async_retrying(idempotent=True)(coro_fn)``.

        :param idempotent: see :func:`is_retryable`.
        :param before_sleep: called before every sleep, typically to log a warning.
        """
        return tenacity.AsyncRetrying(sleep=self.async_sleep, **self._kwargs(idempotent, before_sleep))
