"""Sensor that waits for Klaviyo bulk import jobs to finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.triggers.klaviyo import (
    KlaviyoBulkImportJobTrigger,
    validate_bulk_import_event,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class KlaviyoBulkImportJobSensor(BaseSensorOperator):
    """Wait until Klaviyo bulk import jobs are ``complete`` or ``cancelled``.

    Both modes classify Klaviyo's answers with the same hook and retry policy: 429 and 503 are
    waited out (never sooner than ``Retry-After``), a terminal answer such as 401 or 404 fails the
    task at once. Deferred, the wait runs in the triggerer and holds no worker slot; it ends at the
    sensor's ``timeout``. The task returns one summary per job (id, status, counts; no emails).
    A job that finished with ``failed_count > 0`` still succeeds here: the per-profile reasons are
    read with :meth:`~airflow_provider_klaviyo_nosto.hooks.klaviyo.KlaviyoHook.iter_bulk_import_errors`.

    :param job_ids: one job id or a list of them (templated).
    :param klaviyo_conn_id: the Klaviyo connection id.
    :param poll_interval: seconds between polls.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("job_ids",)

    def __init__(
        self,
        *,
        job_ids: str | list[str],
        klaviyo_conn_id: str = KlaviyoHook.default_conn_name,
        poll_interval: float = 30.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.job_ids = job_ids
        self.klaviyo_conn_id = klaviyo_conn_id
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    def _job_ids(self) -> list[str]:
        ids = [self.job_ids] if isinstance(self.job_ids, str) else list(self.job_ids or [])
        if not ids or not all(isinstance(job_id, str) and job_id.strip() for job_id in ids):
            raise ValueError(f"KlaviyoBulkImportJobSensor needs non-empty job ids, got {self.job_ids!r}")
        return ids

    @cached_property
    def hook(self) -> KlaviyoHook:
        return KlaviyoHook(self.klaviyo_conn_id)

    def poke(self, context: Context) -> PokeReturnValue:
        job_ids = self._job_ids()
        jobs = [self.hook.get_bulk_import_job(job_id) for job_id in job_ids]
        pending = [job.id for job in jobs if not job.status.is_terminal]
        if pending:
            self.log.info("Bulk import job(s) %s still running", ", ".join(pending))
        return PokeReturnValue(is_done=not pending, xcom_value=[job.to_dict() for job in jobs])

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)

        # One poke first: a job that is already finished needs no trip through the triggerer.
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self.defer(
            trigger=KlaviyoBulkImportJobTrigger(
                job_ids=self._job_ids(),
                conn_id=self.klaviyo_conn_id,
                poll_interval=self.poll_interval,
                deadline=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            # A little after the trigger's own deadline, so its "timeout" event normally wins.
            timeout=timedelta(seconds=self.timeout + 2 * self.poll_interval),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Resume after the trigger fired: fail unless every job finished, else return the summaries."""
        event = validate_bulk_import_event(event)
        self.log.info("%s", event.get("message", "Bulk import job(s) finished"))
        return list(event["jobs"])
