"""Fixtures for the operator tests."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from tests.unit.operators.world import SyncWorld


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncWorld:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    world = SyncWorld(tmp_path / "state", monkeypatch)
    nosto_class = mock.Mock(return_value=world.nosto)
    klaviyo_class = mock.Mock(return_value=world.klaviyo)
    monkeypatch.setattr("airflow_provider_klaviyo_nosto.operators.sync.NostoHook", nosto_class)
    monkeypatch.setattr("airflow_provider_klaviyo_nosto.operators.sync.KlaviyoHook", klaviyo_class)
    monkeypatch.setattr("airflow_provider_klaviyo_nosto.operators.push.KlaviyoHook", klaviyo_class)
    return world
