"""Fixtures for the sandbox's own tests: one sandbox process per session, reset before every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.runner import SandboxUrls, running_sandbox

REVISION = "2026-07-15"


@pytest.fixture(scope="session")
def sandbox_urls() -> Iterator[SandboxUrls]:
    with running_sandbox() as urls:
        yield urls


class KlaviyoClient:
    """A few lines of ``requests`` with hand-written headers; deliberately not the provider's hook."""

    def __init__(self, urls: SandboxUrls) -> None:
        self.base = urls.klaviyo
        self.key = urls.klaviyo_key
        self.http = requests.Session()

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {key or self.key}",
            "revision": REVISION,
            "Accept": "application/vnd.api+json",
            "Content-Type": "application/vnd.api+json",
            **extra,
        }

    def call(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", None) or self.headers(key)
        url = path if path.startswith("http") else self.base + path
        return self.http.request(method, url, headers=headers, timeout=kwargs.pop("timeout", 10), **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.base}/__sandbox/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def klaviyo(sandbox_urls: SandboxUrls) -> Iterator[KlaviyoClient]:
    client = KlaviyoClient(sandbox_urls)
    client.admin("POST", "reset")
    # Rate limits are off unless a test is about them: several tests create lists faster than 10/s.
    # Tests run with response checking on: a sandbox answer that breaks Klaviyo's schema fails the test.
    client.admin(
        "PUT",
        "config",
        json={
            "validate_responses": True,
            "rate_limits_enabled": False,
            "job_delay_base": 0.05,
            "job_delay_per_1000": 0.01,
        },
    )
    yield client
    stats = client.admin("GET", "stats")
    broken = [
        (e["method"], e["path"], e["response_violation"])
        for e in client.admin("GET", "requests")["requests"]
        if e["response_violation"]
    ]
    assert stats["response_violations"] == 0, broken[:3]


@pytest.fixture
def nosto(sandbox_urls: SandboxUrls) -> SandboxUrls:
    requests.post(f"{sandbox_urls.nosto}/__sandbox/reset", timeout=10).raise_for_status()
    return sandbox_urls
