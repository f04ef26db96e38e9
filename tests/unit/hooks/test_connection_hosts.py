"""A connection host pasted with an endpoint path or with credentials is refused with what to fix."""

from __future__ import annotations

import json

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_klaviyo_nosto.exceptions import (
    KlaviyoConfigError,
    KlaviyoServerError,
    NostoConfigError,
    NostoError,
)
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


@pytest.mark.parametrize(
    "key",
    [f"{KEY}\u200b", f"\u201c{KEY}\u201d", f"{KEY[:9]}\n{KEY[9:]}"],
    ids=["zero-width-space", "curly-quotes", "line-break"],
)
def test_klaviyo_key_a_header_cannot_carry_is_a_config_error_naming_the_password_field(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT",
        json.dumps({"conn_type": "klaviyo", "host": "https://a.klaviyo.com", "password": key}),
    )
    with pytest.raises(KlaviyoConfigError) as err:
        KlaviyoHook().get_conn()

    message = str(err.value)
    assert "Connection 'klaviyo_default': the key in the password field holds a character" in message
    assert "0123456789abcdef" not in message


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("https://127.0.0.1:99999", "Port out of range"),
        ("https://a klaviyo.com", "invalid character"),
        ("https://[::1", "Invalid IPv6 URL"),
        ("a.klaviyo.com:https", "Port could not be cast"),
    ],
    ids=["port-out-of-range", "space-in-host", "unclosed-ipv6-bracket", "port-not-a-number"],
)
def test_host_that_can_never_be_reached_is_a_config_error_naming_the_connection(
    monkeypatch: pytest.MonkeyPatch, host: str, problem: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT", json.dumps({"conn_type": "klaviyo", "host": host, "password": KEY})
    )
    with pytest.raises(KlaviyoConfigError) as err:
        KlaviyoHook().get_conn()

    message = str(err.value)
    assert message.startswith("Connection 'klaviyo_default': ")
    assert "host" in message
    assert problem in message
    assert "https://a.klaviyo.com" in message
    assert isinstance(err.value, AirflowFailException)


def test_missing_ca_bundle_is_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "klaviyo", "password": KEY, "extra": {"verify_ssl": "/nonexistent/ca.pem"}}
    monkeypatch.setenv("AIRFLOW_CONN_KLAVIYO_DEFAULT", json.dumps(conn))
    with pytest.raises(KlaviyoConfigError) as err:
        KlaviyoHook().get_conn()

    assert (
        "Connection 'klaviyo_default': extra 'verify_ssl' names the CA bundle '/nonexistent/ca.pem', which "
        in str(err.value)
    )


@pytest.mark.parametrize(
    ("conn", "named"),
    [
        ({"password": "tok\u200b"}, "the key in the password field"),
        (
            {"password": "tok", "extra": {"export_token": "\u201cexp\u201d"}},
            "the key in 'export_token' in the extra",
        ),
        ({"host": "https://[::1", "password": "tok"}, "the host is not a valid URL"),
        (
            {"password": "tok", "extra": {"verify": "/nonexistent/ca.pem"}},
            "extra 'verify' names the CA bundle",
        ),
    ],
    ids=["zero-width-token", "quoted-export-token", "unclosed-ipv6-bracket", "missing-ca-bundle"],
)
def test_unusable_nosto_connection_is_a_config_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, conn: dict[str, object], named: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps({"conn_type": "nosto", **conn}))
    with pytest.raises(NostoConfigError) as err:
        NostoHook().get_segments()

    assert f"Connection 'nosto_default': {named}" in str(err.value)
    assert isinstance(err.value, AirflowFailException)


def test_nosto_export_url_requests_cannot_send_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"export_token": "exp", "export_url": "https://exports example.com/segments.jsonl.gz"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps({"conn_type": "nosto", "password": "tok", "extra": extra})
    )
    with pytest.raises(NostoConfigError) as err:
        NostoHook(max_attempts=1).export_modified_at()

    assert "invalid character" in str(err.value)
    assert "'export_url' of Airflow connection 'nosto_default'" in str(err.value)


@pytest.mark.parametrize("hook_class", [KlaviyoHook, NostoHook], ids=["klaviyo", "nosto"])
@pytest.mark.parametrize(
    ("raised", "fixable"),
    [
        (ImportError("cannot import name 'SUPERVISOR_COMMS'"), True),
        (ValueError("Expecting value"), True),
        (requests.ConnectionError("secrets backend timed out"), False),
        (TimeoutError(), False),
    ],
    ids=["unparsable-on-3.1", "unparsable", "secrets-backend-down", "timeout"],
)
def test_a_connection_that_cannot_be_looked_up_fails_for_good_only_when_it_cannot_be_parsed(
    monkeypatch: pytest.MonkeyPatch, hook_class: type, raised: Exception, fixable: bool
) -> None:
    def look_up(conn_id: str) -> None:
        raise raised

    monkeypatch.setattr(hook_class, "get_connection", classmethod(lambda cls, conn_id: look_up(conn_id)))
    hook = hook_class()

    with pytest.raises((KlaviyoConfigError, NostoConfigError, KlaviyoServerError, NostoError)) as err:
        hook.get_conn() if hook_class is KlaviyoHook else hook.get_segments()

    assert isinstance(err.value, AirflowFailException) is fixable
    message = str(err.value)
    assert message.startswith(f"Airflow connection '{hook_class.default_conn_name}' could ")
    assert ("is a valid JSON object" in message) is fixable
    assert err.value.__cause__ is None
