"""Helpers shared by the hook, trigger and sensor tests."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.hooks.pacing import KlaviyoPacer

API_KEY = "pk_unitTestSecretKey0123456789"
BASE = "https://a.klaviyo.com"


class FakeClock:
    """A clock that only moves when something sleeps, recording every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def set_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str = "klaviyo_default", **fields: object
) -> None:
    conn = {"conn_type": "klaviyo", "password": API_KEY, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def make_hook(clock: FakeClock, **kwargs: object) -> KlaviyoHook:
    """A hook whose retries and pacing sleep on ``clock`` instead of the wall clock."""
    hook = KlaviyoHook(**kwargs)  # type: ignore[arg-type]
    hook.with_retry_policy(sleep=clock.sleep, async_sleep=clock.async_sleep, rng=random.Random(7))
    hook.pacer = KlaviyoPacer(hook.pacer.concurrency, clock=clock, sleep=clock.sleep)
    return hook
