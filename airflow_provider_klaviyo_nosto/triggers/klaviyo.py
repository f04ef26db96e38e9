"""Trigger that waits for Klaviyo bulk import jobs without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import BulkImportJob, KlaviyoHook

EVENT_STATUSES = frozenset({"success", "error", "timeout"})

#: Seconds before the second look at a job; later looks back off to ``poll_interval``.
FIRST_POLL_DELAY = 1.0


def _seconds(value: float | int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _epoch(value: float | int | datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("deadline must be timezone-aware; a naive datetime has no single instant")
        return value.timestamp()
    return float(value)


class KlaviyoBulkImportJobTrigger(BaseTrigger):
    """Poll Klaviyo bulk import jobs until every one is ``complete`` or ``cancelled``.

    Its arguments are JSON-native on purpose: they are stored in the metadata database and rebuilt
    in the triggerer, and since Airflow 3.2 anything else either fails to serialise or comes back as
    another type. A ``datetime`` deadline or ``timedelta`` interval is accepted and stored as epoch
    seconds and seconds.

    Faults are handled by the hook's shared retry policy, with its backoff starting at the poll
    interval, so a 503 or a 429 never makes the trigger poll faster than it would anyway and a
    ``Retry-After`` is always waited out. A terminal answer (401, 403, 404, ...) ends the wait at
    once with an error event. It yields exactly one event:
    ``{"status": "success" | "error" | "timeout", "message": str, "jobs": [job summaries]}``.

    :param job_ids: the bulk import job ids to wait for.
    :param conn_id: the Klaviyo connection id.
    :param poll_interval: seconds between polls of a job that is not finished yet.
    :param deadline: when to give up (epoch seconds, UTC), or ``None`` for no deadline.
    """

    def __init__(
        self,
        job_ids: Iterable[str],
        conn_id: str,
        poll_interval: float | timedelta,
        deadline: float | datetime | None,
    ) -> None:
        super().__init__()
        self.job_ids = [str(job_id) for job_id in job_ids]
        self.conn_id = conn_id
        self.poll_interval = _seconds(poll_interval)
        self.deadline = _epoch(deadline)
        # Not serialised: injectable for tests.
        self._sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self._clock: Callable[[], float] = time.time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": list(self.job_ids),
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def _hook(self) -> KlaviyoHook:
        hook = KlaviyoHook(self.conn_id)
        hook.retry_policy = replace(
            hook.retry_policy,
            initial_backoff=max(self.poll_interval, 1.0),
            max_backoff=max(self.poll_interval * 4, 30.0),
            async_sleep=self._sleep,
        )
        return hook

    def _event(self, status: str, message: str, jobs: dict[str, BulkImportJob]) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "message": message, "jobs": [job.to_dict() for job in jobs.values()]}
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if not self.job_ids or not all(job_id.strip() for job_id in self.job_ids):
            yield self._event("error", f"No usable bulk import job id to wait for: {self.job_ids!r}", {})
            return

        hook = self._hook()
        jobs: dict[str, BulkImportJob] = {}
        # Small jobs finish within seconds: look again after one second, then twice as long each time,
        # up to poll_interval, so a short job is not waited on for a whole interval.
        delay = min(FIRST_POLL_DELAY, self.poll_interval)
        while True:
            for job_id in self.job_ids:
                if job_id in jobs and jobs[job_id].status.is_terminal:
                    continue
                try:
                    jobs[job_id] = await hook.aget_bulk_import_job(job_id)
                except (KlaviyoError, ValueError) as exc:
                    yield self._event("error", f"Bulk import job {job_id}: {exc}", jobs)
                    return

            pending = [job_id for job_id in self.job_ids if not jobs[job_id].status.is_terminal]
            if not pending:
                failed = sum(job.failed_count for job in jobs.values())
                yield self._event(
                    "success",
                    f"{len(jobs)} bulk import job(s) finished; {failed} profile(s) failed",
                    jobs,
                )
                return

            if self.deadline is not None and self._clock() + delay > self.deadline:
                yield self._event(
                    "timeout",
                    f"Bulk import job(s) {', '.join(pending)} not finished by the deadline. Retry the task: it "
                    "waits for the same jobs without submitting them again (raise the operator's job_timeout "
                    "if Klaviyo is only slow)",
                    jobs,
                )
                return
            self.log.info("Waiting for %d bulk import job(s); next poll in %.0f s", len(pending), delay)
            await self._sleep(delay)
            delay = min(delay * 2, self.poll_interval)


def validate_bulk_import_event(event: dict[str, Any] | None) -> dict[str, Any]:
    """Check a resumed task's trigger event and return it; raise unless it reports success.

    :param event: the payload of :class:`KlaviyoBulkImportJobTrigger`'s event.
    :raises KlaviyoError: on a missing or malformed event, an unknown status, an error or a timeout.
    """
    if not isinstance(event, dict):
        raise KlaviyoError(f"Resumed without a bulk import event (got {type(event).__name__})")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise KlaviyoError(f"Bulk import event has unknown status {status!r}")
    if status != "success":
        raise KlaviyoError(f"Waiting for the bulk import ended with {status}: {event.get('message', '')}")
    if not isinstance(event.get("jobs"), list):
        raise KlaviyoError("Bulk import event carries no job list")
    return event
