"""Names with non-ASCII letters are looked up by the exact name, as Klaviyo's filter syntax spells strings."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from sandbox.filters import Condition, parse_filter
from sandbox.openapi import KlaviyoContract
from tests.unit.hooks.klaviyo_fixtures import BASE


@pytest.mark.parametrize(
    "name", ["Nosto list: Kategorie: Möbel", "Nosto: Café ☕", 'Nosto list: "Big" spenders']
)
def test_list_found_by_a_name_with_non_ascii_letters(hook: KlaviyoHook, requests_mock, name: str) -> None:
    # Klaviyo's filter strings are double-quoted, URI-encoded text; a \\uXXXX escape is not in its syntax, and the
    # sandbox (modelled on the less forgiving reading) takes a backslash as escaping the next character only.
    requests_mock.get(
        f"{BASE}/api/lists", json={"data": [{"type": "list", "id": "L1", "attributes": {"name": name}}]}
    )

    assert hook.find_list_by_name(name) == "L1"

    sent = parse_qs(urlsplit(requests_mock.last_request.url).query)["filter"][0]
    operation, _ = KlaviyoContract().operation_for("GET", "/api/lists")
    condition = parse_filter(sent, operation.filters)
    assert isinstance(condition, Condition)
    assert condition.value == name
