"""Every Klaviyo request the test suite sends is checked against Klaviyo's schema, the same way the sandbox does.

The sandbox checks what reaches it; the unit tests answer the hooks from ``requests_mock`` and from a local
aiohttp server instead, so those requests are checked here, with the sandbox's own
:class:`~sandbox.openapi.KlaviyoContract` (built from the trimmed official schema by
``scripts/trim_openapi.py``), never with a second validator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from urllib.parse import parse_qsl, urlsplit

from sandbox.openapi import KlaviyoContract, RequestViolation

#: Klaviyo's API lives under this path on every host the tests use; Nosto's does not.
KLAVIYO_API_PREFIX = "/api/"


@cache
def contract() -> KlaviyoContract:
    return KlaviyoContract()


def is_klaviyo_request(url: str) -> bool:
    return urlsplit(url).path.startswith(KLAVIYO_API_PREFIX)


def violation(method: str, url: str, headers: Mapping[str, str], body: bytes | str | None) -> str | None:
    """Why Klaviyo would refuse this request, or ``None`` when the schema allows it.

    :param headers: a case-insensitive mapping of the request headers
    """
    parts = urlsplit(url)
    raw = body.encode() if isinstance(body, str) else (body or b"")
    # Klaviyo's own links.next URLs carry a trailing slash (``/api/profiles/?page[cursor]=...``) and the
    # hooks follow them verbatim; the schema's paths have none.
    path = parts.path.rstrip("/")
    try:
        contract().check_request(method, path, parse_qsl(parts.query, keep_blank_values=True), headers, raw)
    except RequestViolation as refused:
        where = refused.pointer or refused.parameter or ""
        return f"{method} {parts.path}: {refused.status} {refused.detail} {where}".strip()
    return None


def assert_all_allowed(requests: Iterable[tuple[str, str, Mapping[str, str], bytes | str | None]]) -> int:
    """Fail with every request the schema refuses; return how many Klaviyo requests were checked."""
    checked = 0
    refused = []
    for method, url, headers, body in requests:
        if not is_klaviyo_request(url):
            continue
        checked += 1
        problem = violation(method, url, headers, body)
        if problem:
            refused.append(problem)
    assert refused == [], f"{len(refused)} requests break Klaviyo's schema: {refused[:5]}"
    return checked
