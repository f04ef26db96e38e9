"""The list calls a full resync and a migration make: reading members with their values, renaming a list."""

from __future__ import annotations

from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from tests.unit.hooks.klaviyo_fixtures import BASE


def test_iter_list_profiles_reads_emails_and_values_across_pages(hook: KlaviyoHook, requests_mock) -> None:
    url = f"{BASE}/api/lists/L1/profiles"
    requests_mock.get(
        url,
        [
            {
                "json": {
                    "data": [
                        {
                            "id": "P1",
                            "attributes": {"email": "a@example.com", "properties": {"seg": ["vip"]}},
                        },
                        {"id": "P2", "attributes": {"email": "b@example.com", "properties": {}}},
                    ],
                    "links": {"next": f"{url}?page%5Bcursor%5D=c2"},
                }
            },
            {"json": {"data": [{"id": "P3", "attributes": {"email": "c@example.com", "properties": None}}]}},
        ],
    )

    assert list(hook.iter_list_profiles("L1", "seg")) == [
        ("a@example.com", ["vip"]),
        ("b@example.com", None),
        ("c@example.com", None),
    ]
    first = requests_mock.request_history[0]
    assert first.qs["fields[profile]"] == ["email,properties"]
    assert first.qs["page[size]"] == ["100"]


def test_rename_list_patches_only_the_name(hook: KlaviyoHook, requests_mock) -> None:
    requests_mock.patch(f"{BASE}/api/lists/L1", json={"data": {"type": "list", "id": "L1"}})

    hook.rename_list("L1", "Nosto Shoppers")

    assert requests_mock.last_request.json() == {
        "data": {"type": "list", "id": "L1", "attributes": {"name": "Nosto Shoppers"}}
    }
