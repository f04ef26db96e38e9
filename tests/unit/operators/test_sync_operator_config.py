from __future__ import annotations

import json

import pytest

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

VARIABLE_ENV = "AIRFLOW_VAR_NOSTO_KLAVIYO_SEGMENT_SYNC"
DEFAULTS = {"segments": ["101"], "list_name": "From the DAG", "state_uri": "file:///srv/state"}


def _load(monkeypatch: pytest.MonkeyPatch, variable: str, executor: str = "LocalExecutor") -> SyncConfig:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.setenv(VARIABLE_ENV, variable)
    return NostoSegmentSyncOperator(task_id="sync", defaults=DEFAULTS).load_config()


def test_variable_overlays_the_dag_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _load(monkeypatch, json.dumps({"list_name": "From the Variable", "segments": ["101", "102"]}))

    assert config.list_name == "From the Variable"
    assert config.segments == ("101", "102")
    assert config.state_uri == "file:///srv/state"


def test_empty_variable_keeps_the_dag_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _load(monkeypatch, "{}").list_name == "From the DAG"


def test_no_segment_chosen_says_where_to_add_them(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KlaviyoConfigError) as raised:
        _load(monkeypatch, json.dumps({"segments": []}))

    assert "'segments'" in str(raised.value)
    assert "nosto_klaviyo_segment_sync" in str(raised.value)


def test_variable_that_is_not_json_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KlaviyoConfigError, match="nosto_klaviyo_segment_sync"):
        _load(monkeypatch, '{"segments": ["101"],}')


def test_local_state_under_celery_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KlaviyoConfigError, match="state_uri") as raised:
        _load(monkeypatch, "{}", executor="CeleryExecutor")

    assert "CeleryExecutor" in str(raised.value)
