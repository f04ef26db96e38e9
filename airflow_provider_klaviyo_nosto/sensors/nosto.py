"""Sensor that waits for a fresh Nosto Segment Export."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class NostoExportSensor(BaseSensorOperator):
    """Wait until Nosto's Segment Export was written after a given time (or exists at all).

    The export is a daily snapshot; syncing from yesterday's again changes nothing, so a DAG can
    wait here for today's. Returns the export's modification time (ISO 8601, UTC).

    :param nosto_conn_id: the Nosto connection id.
    :param uri: where the export is (templated); ``None`` uses the connection's ``export_url``.
    :param newer_than: ISO 8601 timestamp the export must be newer than (templated); ``None`` only
        waits for the export to exist. A timestamp without zone is taken as UTC.
    """

    template_fields: Sequence[str] = ("uri", "newer_than")

    def __init__(
        self,
        *,
        nosto_conn_id: str = NostoHook.default_conn_name,
        uri: str | None = None,
        newer_than: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nosto_conn_id = nosto_conn_id
        self.uri = uri
        self.newer_than = newer_than

    @cached_property
    def hook(self) -> NostoHook:
        return NostoHook(self.nosto_conn_id)

    def _threshold(self) -> datetime | None:
        if not self.newer_than:
            return None
        threshold = datetime.fromisoformat(str(self.newer_than).replace("Z", "+00:00"))
        return threshold if threshold.tzinfo else threshold.replace(tzinfo=UTC)

    def poke(self, context: Context) -> PokeReturnValue:
        threshold = self._threshold()
        modified = self.hook.export_modified_at(self.uri or None)
        if modified is None:
            self.log.info("No Nosto export yet")
            return PokeReturnValue(is_done=False)
        if threshold is not None and modified <= threshold:
            self.log.info("Nosto export last written %s, waiting for one newer than %s", modified, threshold)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=modified.astimezone(UTC).isoformat())
