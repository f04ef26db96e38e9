from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from tests.unit.hooks.klaviyo_fixtures import FakeClock, make_hook, set_connection


@pytest.fixture
def klaviyo_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hook(klaviyo_conn: None, clock: FakeClock) -> KlaviyoHook:
    return make_hook(clock)
