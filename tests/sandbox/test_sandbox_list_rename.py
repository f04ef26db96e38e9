"""``PATCH /api/lists/{id}``: a list keeps its id and members under a new name, as in Klaviyo."""

from __future__ import annotations

from tests.sandbox.conftest import KlaviyoClient


def test_rename_keeps_id_and_members_and_checks_the_body(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin("POST", "profiles", json=[{"email": "a@example.com"}])
    created = klaviyo.admin(
        "POST", "lists", json={"name": "Nosto Customers", "member_emails": ["a@example.com"]}
    )
    list_id = created["id"]

    renamed = klaviyo.call(
        "PATCH",
        f"/api/lists/{list_id}",
        json={"data": {"type": "list", "id": list_id, "attributes": {"name": "Nosto Shoppers"}}},
    )
    assert renamed.status_code == 200
    assert renamed.json()["data"]["attributes"]["name"] == "Nosto Shoppers"
    state = klaviyo.admin("GET", "state")
    assert [(item["id"], item["name"], len(item["members"])) for item in state["lists"]] == [
        (list_id, "Nosto Shoppers", 1)
    ]

    wrong_id = klaviyo.call(
        "PATCH",
        f"/api/lists/{list_id}",
        json={"data": {"type": "list", "id": "OTHER1", "attributes": {"name": "x"}}},
    )
    assert wrong_id.status_code == 409
    unknown_field = klaviyo.call(
        "PATCH",
        f"/api/lists/{list_id}",
        json={"data": {"type": "list", "id": list_id, "attributes": {"colour": "red"}}},
    )
    assert unknown_field.status_code == 400
    missing = klaviyo.call(
        "PATCH",
        "/api/lists/NOPE12",
        json={"data": {"type": "list", "id": "NOPE12", "attributes": {"name": "x"}}},
    )
    assert missing.status_code == 404
    klaviyo.admin("PUT", "config", json={"api_keys": {klaviyo.key: None, "pk_read_only": ["lists:read"]}})
    read_only = klaviyo.call(
        "PATCH",
        f"/api/lists/{list_id}",
        key="pk_read_only",
        json={"data": {"type": "list", "id": list_id, "attributes": {"name": "x"}}},
    )
    assert read_only.status_code == 403
    assert "lists:write" in read_only.text
