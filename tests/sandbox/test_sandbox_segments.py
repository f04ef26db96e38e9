"""The sandbox's Klaviyo segments and list renames, exercised over HTTP with hand-written JSON:API documents."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import KlaviyoClient

pytestmark = pytest.mark.sandbox


def contains_condition(value: str, prop: str = "properties['nosto_segment']") -> dict[str, Any]:
    # The shape of Klaviyo's schema: ProfilePropertyCondition with a ListContainsOperatorListContainsFilter.
    return {
        "type": "profile-property",
        "property": prop,
        "filter": {"type": "list", "operator": "contains", "value": value},
    }


def segment_body(name: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    groups = [{"conditions": list(conditions or [contains_condition(name)])}]
    return {
        "data": {"type": "segment", "attributes": {"name": name, "definition": {"condition_groups": groups}}}
    }


def create_segment(klaviyo: KlaviyoClient, name: str) -> str:
    response = klaviyo.call("POST", "/api/segments", json=segment_body(name))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def test_create_segment_stores_the_definition_and_is_not_idempotent(klaviyo: KlaviyoClient) -> None:
    first = create_segment(klaviyo, "Nosto: vip")
    second = create_segment(klaviyo, "Nosto: vip")
    assert first != second

    fetched = klaviyo.call("GET", f"/api/segments/{first}").json()["data"]
    assert fetched["attributes"]["name"] == "Nosto: vip"
    assert fetched["attributes"]["definition"]["condition_groups"][0]["conditions"] == [
        contains_condition("Nosto: vip")
    ]
    assert fetched["attributes"]["is_active"] is True

    found = klaviyo.call(
        "GET", "/api/segments", params={"filter": 'equals(name,"Nosto: vip")', "fields[segment]": "name"}
    ).json()["data"]
    assert sorted(item["id"] for item in found) == sorted([first, second])
    assert klaviyo.call("GET", "/api/segments/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        # The string filter's operators do not include a list's "contains" with a list type.
        (
            segment_body(
                "x", {**contains_condition("x"), "filter": {"type": "list", "operator": "in", "value": "x"}}
            ),
            "/data/attributes/definition/condition_groups/0/conditions/0",
        ),
        (
            segment_body("x", {**contains_condition("x"), "extra": 1}),
            "/data/attributes/definition/condition_groups/0/conditions/0",
        ),
        (segment_body("x", contains_condition("x", prop="nosto_segment")), None),
        (
            {
                "data": {
                    "type": "segment",
                    "attributes": {"name": "x", "definition": {"condition_groups": []}},
                }
            },
            None,
        ),
    ],
    ids=["wrong-operator", "unknown-field", "bare-custom-property", "no-condition-group"],
)
def test_segment_definitions_are_checked(
    klaviyo: KlaviyoClient, body: dict[str, Any], pointer: str | None
) -> None:
    response = klaviyo.call("POST", "/api/segments", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "invalid"
    if pointer is not None:
        assert error["source"]["pointer"].startswith(pointer)
    assert klaviyo.admin("GET", "state")["segments"] == []


def test_get_segments_pages_by_ten(klaviyo: KlaviyoClient) -> None:
    for index in range(12):
        create_segment(klaviyo, f"S{index:02d}")
    assert klaviyo.call("GET", "/api/segments", params={"page[size]": "11"}).status_code == 400
    first = klaviyo.call("GET", "/api/segments").json()
    assert len(first["data"]) == 10
    second = klaviyo.call("GET", first["links"]["next"]).json()
    names = [item["attributes"]["name"] for item in first["data"] + second["data"]]
    assert sorted(names) == [f"S{index:02d}" for index in range(12)]
    assert "next" not in second["links"]


def test_update_segment_renames_and_redefines(klaviyo: KlaviyoClient) -> None:
    segment_id = create_segment(klaviyo, "Nosto: vip")
    body = {
        "data": {
            "type": "segment",
            "id": segment_id,
            "attributes": {
                "name": "Nosto: VIP",
                "definition": {"condition_groups": [{"conditions": [contains_condition("VIP")]}]},
            },
        }
    }
    assert klaviyo.call("PATCH", f"/api/segments/{segment_id}", json=body).status_code == 200
    stored = klaviyo.admin("GET", "state")["segments"][0]
    assert stored["name"] == "Nosto: VIP"
    assert stored["definition"]["condition_groups"][0]["conditions"][0]["filter"]["value"] == "VIP"

    wrong_id = {"data": {**body["data"], "id": "other"}}
    assert klaviyo.call("PATCH", f"/api/segments/{segment_id}", json=wrong_id).status_code == 409


def test_segments_need_their_scopes(klaviyo: KlaviyoClient) -> None:
    keys = {klaviyo.key: None, "pk_read_segments": ["segments:read"]}
    klaviyo.admin("PUT", "config", json={"api_keys": keys})
    assert klaviyo.call("GET", "/api/segments", key="pk_read_segments").status_code == 200
    response = klaviyo.call("POST", "/api/segments", key="pk_read_segments", json=segment_body("x"))
    assert response.status_code == 403
    assert "segments:write" in response.json()["errors"][0]["detail"]


def test_create_segment_has_a_daily_cap(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin("PUT", "config", json={"rate_scale": 0.0001, "rate_limits_enabled": True})
    # Burst 1/s and 15/m become 0.1 ms and 6 ms windows, shorter than a call; the day (8.6 s) caps at 100.
    codes = [
        klaviyo.call("POST", "/api/segments", json=segment_body(f"S{i}")).status_code for i in range(101)
    ]
    assert codes.count(201) == 100
    assert codes[-1] == 429


def test_segment_flow_triggers_come_from_config(klaviyo: KlaviyoClient) -> None:
    segment_id = create_segment(klaviyo, "Nosto: vip")
    flows = {"Nosto: vip": [{"id": "F1", "name": "Welcome VIP", "status": "live"}]}
    klaviyo.admin("PUT", "config", json={"flows": flows})
    data = klaviyo.call("GET", f"/api/segments/{segment_id}/flow-triggers").json()["data"]
    assert [(flow["id"], flow["attributes"]["name"]) for flow in data] == [("F1", "Welcome VIP")]


def test_update_list_renames_it(klaviyo: KlaviyoClient) -> None:
    list_id = klaviyo.call(
        "POST", "/api/lists", json={"data": {"type": "list", "attributes": {"name": "A"}}}
    ).json()["data"]["id"]
    body = {"data": {"type": "list", "id": list_id, "attributes": {"name": "B"}}}
    response = klaviyo.call("PATCH", f"/api/lists/{list_id}", json=body)
    assert response.status_code == 200, response.text
    assert [item["name"] for item in klaviyo.admin("GET", "state")["lists"]] == ["B"]


def test_the_sandbox_does_not_pretend_to_count_segment_members(klaviyo: KlaviyoClient) -> None:
    segment_id = create_segment(klaviyo, "Nosto: vip")
    response = klaviyo.call(
        "GET", f"/api/segments/{segment_id}", params={"additional-fields[segment]": "profile_count"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "additional-fields[segment]"}
    assert klaviyo.call("GET", f"/api/segments/{segment_id}/profiles").status_code == 404
