"""The connection form's "Test" button: one attempt, an answer written for the person waiting, no secret in it,
and a hook that goes on working normally afterwards."""

from __future__ import annotations

import pytest
import requests_mock as requests_mock_module

from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook
from tests.unit.hooks.klaviyo_fixtures import (
    API_KEY,
    BASE,
    NOSTO_TOKEN,
    FakeClock,
    make_hook,
    set_connection,
    set_nosto_connection,
)

NOSTO = "https://api.nosto.com"
ACCOUNTS = {"data": [{"type": "account", "id": "ACC1", "attributes": {}}]}
CATALOGUE = {"data": {"segments": {"segments": [{"id": "5a1", "name": "VIP"}]}}}
TASK_WORDS = ("the task", "retry_delay", "clear it")


def test_a_klaviyo_hook_retries_as_usual_after_a_connection_test(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    set_connection(monkeypatch)
    requests_mock.get(f"{BASE}/api/accounts", json=ACCOUNTS)
    hook = make_hook(FakeClock())
    assert hook.test_connection()[0] is True
    unavailable = {"status_code": 503, "json": {"errors": [{"status": 503, "code": "unavailable"}]}}
    requests_mock.get(f"{BASE}/api/accounts", [unavailable, {"json": ACCOUNTS}])

    assert hook.request("GET", "/api/accounts") == ACCOUNTS


def test_a_nosto_hook_retries_as_usual_after_a_connection_test(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    set_nosto_connection(monkeypatch, host=NOSTO)
    requests_mock.post(f"{NOSTO}/v1/graphql", json=CATALOGUE)
    hook = NostoHook()
    hook.retry_policy.sleep = lambda _seconds: None
    assert hook.test_connection()[0] is True
    requests_mock.post(f"{NOSTO}/v1/graphql", [{"status_code": 503}, {"json": CATALOGUE}])

    assert [segment.id for segment in hook.get_segments()] == ["5a1"]


def test_a_klaviyo_daily_limit_is_answered_without_advice_for_tasks(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    set_connection(monkeypatch)
    requests_mock.get(
        f"{BASE}/api/accounts",
        status_code=429,
        headers={"Retry-After": "86400"},
        json={"errors": [{"status": 429, "code": "throttled", "detail": "daily limit"}]},
    )

    ok, message = make_hook(FakeClock()).test_connection()

    assert not ok
    assert message.startswith("Klaviyo throttled the call and asked to wait 86400 s")
    assert not [word for word in TASK_WORDS if word in message], message


def test_a_nosto_graphql_error_is_answered_without_advice_for_tasks(
    monkeypatch: pytest.MonkeyPatch, requests_mock: requests_mock_module.Mocker
) -> None:
    set_nosto_connection(monkeypatch, host=NOSTO)
    requests_mock.post(f"{NOSTO}/v1/graphql", json={"errors": [{"message": "Internal error"}]})

    ok, message = NostoHook().test_connection()

    assert not ok
    assert message == (
        "Nosto's GraphQL API answered with errors: Internal error. If it persists, check that the API_APPS token "
        "of Airflow connection 'nosto_default' may read segments"
    )


@pytest.mark.parametrize("service", ["klaviyo", "nosto"])
def test_a_token_pasted_into_the_host_is_not_repeated(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    secret = "s3cr3tT0k3nValue42"
    host = f"https://api.example.com/v1/graphql?token={secret}#{secret}"
    if service == "klaviyo":
        set_connection(monkeypatch, host=host)
        ok, message = make_hook(FakeClock()).test_connection()
    else:
        set_nosto_connection(monkeypatch, host=host)
        ok, message = NostoHook().test_connection()

    assert not ok
    assert "https://api.example.com/v1/graphql" in message
    assert secret not in message
    assert API_KEY not in message
    assert NOSTO_TOKEN not in message
