from __future__ import annotations

import base64
import gzip
import random

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_klaviyo_nosto.exceptions import NostoConfigError, NostoError
from airflow_provider_klaviyo_nosto.hooks.nosto import SEGMENTS_QUERY, NostoHook
from airflow_provider_klaviyo_nosto.sync.model import Segment
from tests.unit.hooks.klaviyo_fixtures import NOSTO_EXPORT_TOKEN, NOSTO_TOKEN, set_nosto_connection

API = "https://api.nosto.com"


@pytest.fixture
def hook(monkeypatch) -> NostoHook:
    set_nosto_connection(monkeypatch)
    nosto = NostoHook()
    nosto.retry_policy.sleep = lambda _seconds: None
    nosto.retry_policy.rng = random.Random(0)
    return nosto


def test_segments_use_basic_auth_with_empty_user(hook, requests_mock):
    requests_mock.post(
        f"{API}/v1/graphql",
        json={"data": {"segments": {"segments": [{"id": "5a1", "name": "Category affinity: Kombai"}]}}},
    )

    assert hook.get_segments() == [Segment(id="5a1", name="Category affinity: Kombai")]

    sent = requests_mock.request_history[0]
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(f":{NOSTO_TOKEN}".encode()).decode()
    assert sent.json() == {"query": SEGMENTS_QUERY}


def test_graphql_errors_do_not_leak_tokens(hook, requests_mock):
    requests_mock.post(
        f"{API}/v1/graphql", json={"errors": [{"message": f"bad token {NOSTO_TOKEN} for a@example.com"}]}
    )
    with pytest.raises(NostoError) as err:
        hook.get_segments()
    assert NOSTO_TOKEN not in str(err.value)
    assert "a@example.com" not in str(err.value)


def test_server_errors_are_retried(hook, requests_mock):
    requests_mock.post(
        f"{API}/v1/graphql",
        [{"status_code": 503}, {"json": {"data": {"segments": {"segments": []}}}}],
    )
    assert hook.get_segments() == []
    assert requests_mock.call_count == 2


def test_unauthorized_is_terminal(hook, requests_mock):
    requests_mock.post(f"{API}/v1/graphql", status_code=401)
    ok, message = hook.test_connection()
    assert not ok
    assert "401" in message
    assert "API_APPS token in the password" in message
    assert "'nosto_default'" in message
    assert NOSTO_TOKEN not in message
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("status", [401, 403])
def test_refused_export_token_names_the_extra_and_connection(hook, requests_mock, status):
    requests_mock.get(f"{API}/v1/segment-export/latest", status_code=status)
    with pytest.raises(NostoError) as err, hook.open_export():
        pass
    assert isinstance(err.value, AirflowFailException), "Airflow does not retry a refused token"
    assert "'export_token' in the extra" in str(err.value)
    assert "'nosto_default'" in str(err.value)
    assert NOSTO_EXPORT_TOKEN not in str(err.value)
    assert requests_mock.call_count == 1


@pytest.mark.parametrize(
    "extra",
    [{"verify": False}, {"verify": "false"}, {"verify_ssl": "0"}, {"ssl_verify": False}, {"insecure": True}],
    ids=["bool", "string", "verify_ssl", "ssl_verify", "insecure"],
)
def test_verification_off_refused_for_remote_hosts(monkeypatch, extra):
    set_nosto_connection(monkeypatch, extra={"export_token": NOSTO_EXPORT_TOKEN, **extra})
    with pytest.raises(NostoError, match="cannot be switched off for api.nosto.com"):
        NostoHook().get_segments()


def test_verification_off_allowed_for_loopback_only(monkeypatch, requests_mock):
    set_nosto_connection(
        monkeypatch, host="http://127.0.0.1:9000", extra={"export_token": NOSTO_EXPORT_TOKEN, "verify": False}
    )
    requests_mock.post("http://127.0.0.1:9000/v1/graphql", json={"data": {"segments": {"segments": []}}})
    hook = NostoHook()
    assert hook.get_segments() == []
    assert requests_mock.request_history[0].verify is False
    # The export given elsewhere (the sync configuration) may not borrow the loopback exception.
    with (
        pytest.raises(NostoError, match="only allowed for loopback"),
        hook.open_export("https://x.example.com/e"),
    ):
        pass


def test_remote_export_url_keeps_verification_on(monkeypatch):
    extra = {
        "export_token": NOSTO_EXPORT_TOKEN,
        "export_url": "https://exports.example.com/e",
        "verify": False,
    }
    set_nosto_connection(monkeypatch, host="http://127.0.0.1:9000", extra=extra)
    with pytest.raises(NostoError, match="exports.example.com"):
        NostoHook().export_uri()


def test_verification_is_on_by_default(hook, requests_mock):
    requests_mock.post(f"{API}/v1/graphql", json={"data": {"segments": {"segments": []}}})
    hook.get_segments()
    sent = requests_mock.request_history[0].verify
    # requests may swap True for the CA bundle named by REQUESTS_CA_BUNDLE: still verified.
    assert sent is True or (isinstance(sent, str) and sent)


def test_export_streams_with_bearer_token(hook, requests_mock):
    payload = gzip.compress(b'{"email": "a@example.com", "segments": ["VIP"]}\n')
    requests_mock.get(f"{API}/v1/segment-export/latest", content=payload)

    with hook.open_export() as handle:
        assert handle.read() == payload

    sent = requests_mock.request_history[0]
    assert sent.headers["Authorization"] == f"Bearer {NOSTO_EXPORT_TOKEN}"
    assert NOSTO_EXPORT_TOKEN not in sent.url


def test_export_url_from_connection_and_bare_host(monkeypatch, requests_mock):
    set_nosto_connection(
        monkeypatch, extra={"export_token": NOSTO_EXPORT_TOKEN, "export_url": "exports.example.com/seg.jsonl"}
    )
    requests_mock.get("https://exports.example.com/seg.jsonl", content=b"{}\n")
    with NostoHook().open_export() as handle:
        assert handle.read() == b"{}\n"


def test_export_url_with_a_scheme_no_filesystem_serves_is_a_config_error_naming_the_connection(monkeypatch):
    set_nosto_connection(
        monkeypatch, extra={"export_token": NOSTO_EXPORT_TOKEN, "export_url": "sftpx://exports/seg.jsonl"}
    )

    with pytest.raises(NostoConfigError) as err, NostoHook().open_export():
        pass

    assert str(err.value).startswith(
        "'export_url' in the extra of Airflow connection 'nosto_default' uses sftpx://, which no filesystem "
        "installed for Airflow's object storage serves."
    )
    assert isinstance(err.value, AirflowFailException)


def test_plain_http_refused_for_remote_export(hook):
    with pytest.raises(NostoError, match="plain http"), hook.open_export("http://exports.example.com/x"):
        pass


def test_export_from_object_storage(hook, tmp_path):
    export = tmp_path / "export.jsonl"
    export.write_bytes(b'{"email": "a@example.com"}\n')

    with hook.open_export(f"file://{export}") as handle:
        assert handle.read() == b'{"email": "a@example.com"}\n'
    assert hook.export_modified_at(f"file://{export}") is not None
    assert hook.export_modified_at(f"file://{tmp_path}/missing.jsonl") is None


def test_export_modified_at_from_last_modified(hook, requests_mock):
    requests_mock.head(
        f"{API}/v1/segment-export/latest", headers={"Last-Modified": "Wed, 02 Dec 2026 06:00:00 GMT"}
    )
    modified = hook.export_modified_at()
    assert modified is not None
    assert modified.isoformat() == "2026-12-02T06:00:00+00:00"
    assert requests_mock.request_history[0].headers["Authorization"] == f"Bearer {NOSTO_EXPORT_TOKEN}"


def test_missing_export_is_none(hook, requests_mock):
    requests_mock.head(f"{API}/v1/segment-export/latest", status_code=404)
    assert hook.export_modified_at() is None


def test_missing_export_token(monkeypatch):
    set_nosto_connection(monkeypatch, extra={})
    with pytest.raises(NostoError, match="export_token"), NostoHook().open_export():
        pass


def test_host_override_and_loopback(monkeypatch, requests_mock):
    set_nosto_connection(monkeypatch, host="http://127.0.0.1:9000")
    requests_mock.post("http://127.0.0.1:9000/v1/graphql", json={"data": {"segments": {"segments": []}}})
    assert NostoHook().get_segments() == []


def test_ui_field_behaviour_matches_provider_info():
    from airflow_provider_klaviyo_nosto.get_provider_info import get_provider_info

    (nosto,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "nosto"]
    behaviour = NostoHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == nosto["ui-field-behaviour"]["hidden-fields"]
    assert behaviour["relabeling"] == nosto["ui-field-behaviour"]["relabeling"]
    assert nosto["conn-fields"]["export_token"]["schema"]["format"] == "password"


@pytest.mark.parametrize(
    ("fields", "call", "named"),
    [
        ({"password": ""}, lambda hook: hook.get_segments(), "has no API_APPS token in its password"),
        ({"extra": {}}, lambda hook: hook.open_export().__enter__(), "has no 'export_token' in its extra"),
        # Airflow 3.1 refuses such an extra while looking the connection up, later versions leave it to the hook.
        (
            {"extra": "[1]"},
            lambda hook: hook.get_segments(),
            "must be a JSON object|check that its extra is a valid JSON object",
        ),
        (
            {"extra": {"export_token": NOSTO_EXPORT_TOKEN}},
            lambda hook: hook.open_export("http://exports.example.com/x").__enter__(),
            "plain http",
        ),
    ],
    ids=["no-token", "no-export-token", "extra-not-an-object", "remote-plain-http"],
)
def test_a_connection_setting_to_fix_fails_the_task_without_retries(monkeypatch, fields, call, named):
    # A setting does not fix itself: Airflow's retries would only repeat the same error.
    set_nosto_connection(monkeypatch, **fields)

    with pytest.raises(NostoConfigError, match=named) as err:
        call(NostoHook())

    assert isinstance(err.value, AirflowFailException)


def test_test_connection_answers_a_network_fault_after_one_attempt(monkeypatch, requests_mock):
    set_nosto_connection(monkeypatch)
    requests_mock.post(f"{API}/v1/graphql", exc=requests.ConnectionError("Connection refused"))
    hook = NostoHook()
    slept: list[float] = []
    hook.retry_policy.sleep = slept.append

    ok, message = hook.test_connection()

    assert not ok
    assert message == "Could not reach Nosto for POST /v1/graphql: ConnectionError: Connection refused"
    assert (requests_mock.call_count, slept) == (1, [])
