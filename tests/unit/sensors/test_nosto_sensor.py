from __future__ import annotations

import json

import pytest

from airflow_provider_klaviyo_nosto.sensors.nosto import NostoExportSensor

LATEST = "https://api.nosto.com/v1/segment-export/latest"


@pytest.fixture(autouse=True)
def nosto_conn(monkeypatch):
    conn = {"conn_type": "nosto", "password": "appsToken0123", "extra": {"export_token": "exportToken0123"}}
    monkeypatch.setenv("AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize(
    ("newer_than", "done"),
    [
        (None, True),
        ("2026-12-01T00:00:00+00:00", True),
        ("2026-12-02T06:00:00Z", False),
        ("2026-12-03T00:00:00", False),
    ],
)
def test_waits_for_a_newer_export(requests_mock, newer_than, done):
    requests_mock.head(LATEST, headers={"Last-Modified": "Wed, 02 Dec 2026 06:00:00 GMT"})
    result = NostoExportSensor(task_id="wait", newer_than=newer_than).poke({})
    assert result.is_done is done
    if done:
        assert result.xcom_value == "2026-12-02T06:00:00+00:00"


def test_no_export_yet(requests_mock):
    requests_mock.head(LATEST, status_code=404)
    assert not NostoExportSensor(task_id="wait").poke({}).is_done


def test_templated_fields():
    assert set(NostoExportSensor.template_fields) == {"uri", "newer_than"}
