"""Helpers shared by the hook, trigger and sensor tests."""

from __future__ import annotations

import json
import random
import ssl
from typing import Any

import pytest

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.hooks.pacing import KlaviyoPacer
from tests.klaviyo_contract import assert_all_allowed

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


NOSTO_TOKEN = "nostoAppsToken0123456789"
NOSTO_EXPORT_TOKEN = "exportToken9876543210"


def set_nosto_connection(monkeypatch: pytest.MonkeyPatch, **fields: object) -> None:
    """The ``nosto_default`` connection with both tokens; ``fields`` replace any of its fields (host, extra...)."""
    conn = {
        "conn_type": "nosto",
        "password": NOSTO_TOKEN,
        "extra": {"export_token": NOSTO_EXPORT_TOKEN},
        **fields,
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps(conn))


def make_hook(clock: FakeClock, **kwargs: object) -> KlaviyoHook:
    """A hook whose retries and pacing sleep on ``clock`` instead of the wall clock."""
    hook = KlaviyoHook(**kwargs)  # type: ignore[arg-type]
    hook.with_retry_policy(sleep=clock.sleep, async_sleep=clock.async_sleep, rng=random.Random(7))
    hook.pacer = KlaviyoPacer(hook.pacer.concurrency, clock=clock, sleep=clock.sleep)
    return hook


class ScriptedServer:
    """A local aiohttp server answering from a script, for the async paths.

    aioresponses 0.7.9 cannot build responses for aiohttp 3.14, so the async code is tested against
    a real socket on 127.0.0.1 instead (the hooks allow plain http for loopback hosts only).
    """

    def __init__(
        self, answers: list[tuple[int, dict[str, str], object]], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.answers = list(answers)
        self.ssl_context = ssl_context
        self.requests: list[tuple[str, str, Any]] = []
        self.bodies: list[bytes] = []
        self.server: object = None

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        from aiohttp import web

        self.requests.append((request.method, request.path_qs, request.headers.copy()))
        self.bodies.append(await request.read())
        if not self.answers:
            return web.json_response({"errors": [{"status": 500, "code": "script_exhausted"}]}, status=500)
        status, headers, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(body, str):
            return web.Response(status=status, headers=headers, text=body, content_type="text/html")
        return web.json_response(body, status=status, headers=headers)

    async def __aenter__(self) -> ScriptedServer:
        from aiohttp import web
        from aiohttp.test_utils import TestServer

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server(ssl=self.ssl_context)  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.close()  # type: ignore[attr-defined]
        # Checked like the sandbox checks its requests: the async path must speak Klaviyo's schema too.
        assert_all_allowed(
            (method, f"{self.url}{path_qs}", headers, body)
            for (method, path_qs, headers), body in zip(self.requests, self.bodies, strict=True)
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.server.port}"  # type: ignore[attr-defined]
