"""A connection host pasted with an endpoint path or with credentials is refused with what to fix."""

from __future__ import annotations

import json

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, NostoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook

KEY = "pk_break_0123456789abcdef"


@pytest.mark.parametrize(
    "host", ["https://a.klaviyo.com/api", "https://a.klaviyo.com/api/", "a.klaviyo.com/api/lists?x=1"]
)
def test_klaviyo_host_with_an_endpoint_path_is_refused_naming_the_base_url(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # Every request path starts with /api, so a host ending in /api would call /api/api/... and get 404s.
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT", json.dumps({"conn_type": "klaviyo", "host": host, "password": KEY})
    )
    with pytest.raises(KlaviyoConfigError, match="https://a.klaviyo.com") as err:
        KlaviyoHook().get_conn()
    assert "path" in str(err.value)


def test_nosto_host_with_the_graphql_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "nosto", "host": "https://api.nosto.com/v1/graphql", "password": "tok"}
    monkeypatch.setenv("AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps(conn))
    with pytest.raises(NostoError, match="https://api.nosto.com"):
        NostoHook().get_segments()


@pytest.mark.parametrize(
    "host", ["https://user:pk_secret_in_url@a.klaviyo.com", "http://me:pk_secret_in_url@eu.example.com"]
)
def test_credentials_in_the_host_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT", json.dumps({"conn_type": "klaviyo", "host": host, "password": KEY})
    )
    with pytest.raises(KlaviyoConfigError, match="password") as err:
        KlaviyoHook().get_conn()
    assert "pk_secret_in_url" not in str(err.value)
