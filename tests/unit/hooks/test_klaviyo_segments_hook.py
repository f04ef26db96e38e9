"""KlaviyoHook's segment calls and list rename, against a mocked transport."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_klaviyo_nosto.exceptions import (
    KlaviyoConfigError,
    KlaviyoPermissionError,
    KlaviyoServerError,
)
from airflow_provider_klaviyo_nosto.hooks.pacing import tier_of
from tests.unit.hooks.klaviyo_fixtures import BASE

DEFINITION = {"condition_groups": [{"conditions": []}]}


def _segment(segment_id: str, name: str) -> dict:
    return {"type": "segment", "id": segment_id, "attributes": {"name": name}}


def test_find_segment_by_name_filters_exactly_and_pages_by_ten(hook, requests_mock):
    requests_mock.get(f"{BASE}/api/segments", json={"data": [_segment("S1", "Nosto: VIP")], "links": {}})

    assert hook.find_segment_by_name('Nosto: "VIP"') is None  # the answer's name differs: not a match
    query = parse_qs(urlsplit(requests_mock.request_history[0].url).query)
    assert query["page[size]"] == ["10"]
    assert query["filter"] == ['equals(name,"Nosto: \\"VIP\\"")']


def test_two_segments_with_the_name_are_an_error_to_settle_by_hand(hook, requests_mock):
    found = [_segment("S1", "Nosto: VIP"), _segment("S2", "Nosto: VIP")]
    requests_mock.get(f"{BASE}/api/segments", json={"data": found, "links": {}})

    with pytest.raises(
        KlaviyoConfigError, match="2 Klaviyo segments are named 'Nosto: VIP' \\(ids S1, S2\\)"
    ):
        hook.find_segment_by_name("Nosto: VIP")


def test_create_segment_is_not_repeated_after_a_gateway_error(hook, requests_mock):
    requests_mock.post(f"{BASE}/api/segments", status_code=502, text="bad gateway")

    with pytest.raises(KlaviyoServerError):
        hook.create_segment("Nosto: VIP", DEFINITION)
    assert requests_mock.call_count == 1


def test_create_segment_without_the_scope_names_segments_write(hook, requests_mock):
    error = {"errors": [{"id": "e", "status": 403, "code": "permission_denied", "title": "t", "detail": "d"}]}
    requests_mock.post(f"{BASE}/api/segments", status_code=403, json=error)

    with pytest.raises(KlaviyoPermissionError, match="segments:write"):
        hook.create_segment("Nosto: VIP", DEFINITION)


def test_update_segment_and_rename_list_send_the_id_in_the_body(hook, requests_mock):
    requests_mock.patch(f"{BASE}/api/segments/S1", json={"data": _segment("S1", "Nosto: B")})
    requests_mock.patch(f"{BASE}/api/lists/L1", json={"data": {"type": "list", "id": "L1"}})

    hook.update_segment("S1", "Nosto: B", DEFINITION)
    hook.rename_list("L1", "Nosto list: B")

    segment_body, list_body = (request.json() for request in requests_mock.request_history)
    assert segment_body == {
        "data": {"type": "segment", "id": "S1", "attributes": {"name": "Nosto: B", "definition": DEFINITION}}
    }
    assert list_body == {"data": {"type": "list", "id": "L1", "attributes": {"name": "Nosto list: B"}}}


@pytest.mark.parametrize(
    ("method", "path", "tier"),
    [
        ("POST", "/api/segments", "XS"),
        ("PATCH", "/api/segments/S1", "XS"),
        ("GET", "/api/segments", "L"),
        ("GET", "/api/segments/S1/flow-triggers", "S"),
        ("PATCH", "/api/lists/L1", "M"),
    ],
)
def test_segment_calls_are_paced_to_their_documented_tier(method: str, path: str, tier: str) -> None:
    assert tier_of(method, path) == tier
