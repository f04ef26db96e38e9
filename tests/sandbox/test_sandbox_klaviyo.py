"""The sandbox Klaviyo server, exercised over HTTP with hand-written JSON:API documents."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.sandbox.conftest import KlaviyoClient

pytestmark = pytest.mark.sandbox


def list_body(name: str) -> dict[str, Any]:
    return {"data": {"type": "list", "attributes": {"name": name}}}


def bulk_body(profiles: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {"data": [{"type": "profile", "attributes": attrs} for attrs in profiles]}
            },
        }
    }
    if list_id is not None:
        body["data"]["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return body


def wait_for_job(klaviyo: KlaviyoClient, job_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = klaviyo.call("GET", f"/api/profile-bulk-import-jobs/{job_id}").json()["data"]
        if job["attributes"]["status"] in ("complete", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def create_list(klaviyo: KlaviyoClient, name: str) -> str:
    response = klaviyo.call("POST", "/api/lists", json=list_body(name))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


# -- the gate -------------------------------------------------------------------------------------------


def test_missing_or_foreign_auth_scheme_is_not_authenticated(klaviyo: KlaviyoClient) -> None:
    for header in (
        {},
        {"Authorization": "Bearer pk_sandbox_demo_key"},
        {"Authorization": "pk_sandbox_demo_key"},
    ):
        response = klaviyo.call("GET", "/api/lists", headers={"revision": "2026-07-15", **header})
        assert response.status_code == 401
        error = response.json()["errors"][0]
        assert error["code"] == "not_authenticated"
        assert error["title"] == "Authentication credentials were not provided."
        assert error["id"]


def test_unknown_key_fails_authentication(klaviyo: KlaviyoClient) -> None:
    response = klaviyo.call("GET", "/api/lists", key="pk_wrong")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "authentication_failed"


def test_key_without_scope_gets_403_naming_the_scope_not_the_key(klaviyo: KlaviyoClient) -> None:
    keys = {klaviyo.key: None, "pk_lists_only": ["lists:read", "lists:write"]}
    klaviyo.admin("PUT", "config", json={"api_keys": keys})
    list_id = create_list(klaviyo, "Nosto Customers")
    assert klaviyo.call("GET", "/api/lists", key="pk_lists_only").status_code == 200

    response = klaviyo.call("GET", f"/api/lists/{list_id}/relationships/flow-triggers", key="pk_lists_only")
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["code"] == "permission_denied"
    assert "flows:read" in error["detail"]
    assert "pk_lists_only" not in response.text


@pytest.mark.parametrize("revision", [None, "2024-10-15", "2026-07-15.pre"])
def test_revision_header_is_required_and_pinned(klaviyo: KlaviyoClient, revision: str | None) -> None:
    headers = klaviyo.headers()
    del headers["revision"]
    if revision is not None:
        headers["revision"] = revision
    response = klaviyo.call("GET", "/api/lists", headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "revision"}
    assert klaviyo.admin("GET", "stats")["violations"] == 1


def test_unknown_paths_and_methods(klaviyo: KlaviyoClient) -> None:
    assert klaviyo.call("GET", "/api/lists-of-things").status_code == 404
    assert klaviyo.call("PUT", "/api/lists", json=list_body("x")).status_code == 405


@pytest.mark.parametrize(
    ("path", "query", "parameter"),
    [
        ("/api/lists", "page[size]=11", "page[size]"),
        ("/api/lists", "page[size]=0", "page[size]"),
        ("/api/lists", "fields[list]=nam", "fields[list]"),
        ("/api/lists", "pagesize=5", "pagesize"),
        ("/api/profiles", "page[size]=101", "page[size]"),
        ("/api/profiles", "filter=equals(nickname,%22x%22)", "filter"),
        ("/api/profiles", "filter=contains(email,%22x%22)", "filter"),
    ],
)
def test_bad_query_parameters_are_schema_violations(
    klaviyo: KlaviyoClient, path: str, query: str, parameter: str
) -> None:
    response = klaviyo.call("GET", f"{path}?{query}")
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "invalid"
    assert error["source"] == {"parameter": parameter}
    log = klaviyo.admin("GET", "requests")["requests"]
    assert log[-1]["violation"]


def test_relationship_page_size_caps_at_100(klaviyo: KlaviyoClient) -> None:
    list_id = create_list(klaviyo, "Caps")
    assert (
        klaviyo.call("GET", f"/api/lists/{list_id}/relationships/profiles?page[size]=100").status_code == 200
    )
    assert (
        klaviyo.call("GET", f"/api/lists/{list_id}/relationships/profiles?page[size]=101").status_code == 400
    )


def test_bad_bodies_are_rejected_with_a_pointer(klaviyo: KlaviyoClient) -> None:
    missing_type = {"data": {"attributes": {"name": "x"}}}
    response = klaviyo.call("POST", "/api/lists", json=missing_type)
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["pointer"].startswith("/data")

    unknown_field = bulk_body([{"email": "a@example.com", "favourite_color": "red"}])
    response = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=unknown_field)
    assert response.status_code == 400
    pointer = response.json()["errors"][0]["source"]["pointer"]
    assert pointer == "/data/attributes/profiles/data/0/attributes/favourite_color"

    headers = klaviyo.headers(**{"Content-Type": "application/json"})
    response = klaviyo.call("POST", "/api/lists", headers=headers, data=json.dumps(list_body("x")))
    assert response.status_code == 415
    assert klaviyo.admin("GET", "stats")["violations"] == 3
    assert klaviyo.admin("GET", "state")["lists"] == []


# -- lists and pagination -------------------------------------------------------------------------------


def test_create_list_is_not_idempotent_and_filters_match_exactly(klaviyo: KlaviyoClient) -> None:
    first = create_list(klaviyo, "Nosto Customers")
    second = create_list(klaviyo, "Nosto Customers")
    create_list(klaviyo, "nosto customers")
    assert first != second

    found = klaviyo.call("GET", '/api/lists?filter=equals(name,"Nosto Customers")').json()["data"]
    assert sorted(item["id"] for item in found) == sorted([first, second])
    found = klaviyo.call("GET", "/api/lists?filter=any(name,['nosto customers','Other'])").json()["data"]
    assert [item["attributes"]["name"] for item in found] == ["nosto customers"]

    assert klaviyo.call("GET", f"/api/lists/{first}").status_code == 200
    assert klaviyo.call("DELETE", f"/api/lists/{first}").status_code == 204
    response = klaviyo.call("GET", f"/api/lists/{first}")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_cursor_pagination_follows_absolute_next_links(klaviyo: KlaviyoClient) -> None:
    for index in range(12):
        create_list(klaviyo, f"List {index:02d}")
    page = klaviyo.call("GET", "/api/lists").json()
    assert len(page["data"]) == 10
    next_url = page["links"]["next"]
    assert urlsplit(next_url).netloc == urlsplit(klaviyo.base).netloc
    rest = klaviyo.call("GET", next_url).json()
    assert len(rest["data"]) == 2
    assert "next" not in rest["links"]
    names = [item["attributes"]["name"] for item in page["data"] + rest["data"]]
    assert len(set(names)) == 12

    seeded = [{"email": f"member{i}@example.com", "lists": ["Big"]} for i in range(250)]
    klaviyo.admin("POST", "profiles", json=seeded)
    big = next(item for item in klaviyo.admin("GET", "state")["lists"] if item["name"] == "Big")
    url: str | None = f"/api/lists/{big['id']}/relationships/profiles?page[size]=100"
    seen: list[str] = []
    pages = 0
    while url:
        response = klaviyo.call("GET", url)
        assert response.status_code == 200
        assert int(response.headers["RateLimit-Limit"]) == 750
        seen += [item["id"] for item in response.json()["data"]]
        url = response.json()["links"].get("next")
        pages += 1
    assert pages == 3
    assert seen == big["members"]

    # A cursor belongs to its query.
    first = klaviyo.call("GET", f"/api/lists/{big['id']}/relationships/profiles?page[size]=10").json()
    cursor_url = first["links"]["next"] + '&filter=equals(email,"member1@example.com")'
    response = klaviyo.call("GET", cursor_url)
    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "Invalid cursor provided."


# -- profiles -------------------------------------------------------------------------------------------


def test_emails_match_exactly_as_stored(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin("POST", "profiles", json=[{"email": "Ana@example.com"}, {"email": "bo+news@example.com"}])
    assert klaviyo.call("GET", '/api/profiles?filter=equals(email,"ana@example.com")').json()["data"] == []
    query = {"filter": 'any(email,["Ana@example.com","bo+news@example.com"])', "fields[profile]": "email"}
    found = klaviyo.call("GET", "/api/profiles", params=query).json()["data"]
    assert sorted(item["attributes"]["email"] for item in found) == ["Ana@example.com", "bo+news@example.com"]
    assert set(found[0]["attributes"]) == {"email"}


def test_create_profile_conflict_returns_duplicate_id(klaviyo: KlaviyoClient) -> None:
    (existing,) = klaviyo.admin("POST", "profiles", json=[{"email": "ana@example.com"}])["ids"]
    body = {"data": {"type": "profile", "attributes": {"email": "ana@example.com"}}}
    response = klaviyo.call("POST", "/api/profiles", json=body)
    assert response.status_code == 409
    error = response.json()["errors"][0]
    assert error["code"] == "duplicate_profile"
    assert error["meta"]["duplicate_profile_id"] == existing

    body["data"]["attributes"]["email"] = "Ana@example.com"
    created = klaviyo.call("POST", "/api/profiles", json=body)
    assert created.status_code == 201
    assert len(created.json()["data"]["id"]) == 26


def test_patch_merges_properties_and_applies_patch_properties(klaviyo: KlaviyoClient) -> None:
    (profile_id,) = klaviyo.admin(
        "POST",
        "profiles",
        json=[{"email": "ana@example.com", "properties": {"tier": "gold", "tags": ["a", "b"]}}],
    )["ids"]
    body = {
        "data": {
            "type": "profile",
            "id": profile_id,
            "attributes": {"properties": {"nosto_segment": ["VIP"], "tier": None}},
            "meta": {
                "patch_properties": {"append": {"tags": "c"}, "unappend": {"tags": "a"}, "unset": "ghost"}
            },
        }
    }
    response = klaviyo.call("PATCH", f"/api/profiles/{profile_id}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attributes"]["properties"] == {
        "tags": ["b", "c"],
        "nosto_segment": ["VIP"],
    }

    body["data"] = {
        "type": "profile",
        "id": profile_id,
        "attributes": {},
        "meta": {"patch_properties": {"unset": ["nosto_segment"]}},
    }
    response = klaviyo.call("PATCH", f"/api/profiles/{profile_id}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attributes"]["properties"] == {"tags": ["b", "c"]}


def test_profile_import_upserts(klaviyo: KlaviyoClient) -> None:
    body = {"data": {"type": "profile", "attributes": {"email": "new@example.com", "properties": {"x": 1}}}}
    assert klaviyo.call("POST", "/api/profile-import", json=body).status_code == 201
    body["data"]["attributes"]["properties"] = {"y": 2}
    response = klaviyo.call("POST", "/api/profile-import", json=body)
    assert response.status_code == 200
    assert response.json()["data"]["attributes"]["properties"] == {"x": 1, "y": 2}


def test_list_membership_add_and_remove(klaviyo: KlaviyoClient) -> None:
    ids = klaviyo.admin("POST", "profiles", json=[{"email": f"p{i}@example.com"} for i in range(3)])["ids"]
    list_id = create_list(klaviyo, "Members")
    path = f"/api/lists/{list_id}/relationships/profiles"
    data = [{"type": "profile", "id": profile_id} for profile_id in ids]
    assert klaviyo.call("POST", path, json={"data": data}).status_code == 204
    assert klaviyo.call("POST", path, json={"data": data[:1]}).status_code == 204
    assert klaviyo.call("DELETE", path, json={"data": data[:2]}).status_code == 204
    assert klaviyo.call("DELETE", path, json={"data": data[:1]}).status_code == 204  # not a member: no-op

    unknown = klaviyo.call("POST", path, json={"data": [data[0], {"type": "profile", "id": "01NOPE"}]})
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["source"]["pointer"] == "/data/1/id"

    too_many = [{"type": "profile", "id": ids[0]}] * 1001
    assert klaviyo.call("POST", path, json={"data": too_many}).status_code == 400
    members = klaviyo.call("GET", path).json()["data"]
    assert [item["id"] for item in members] == [ids[2]]


def test_flow_triggers_come_from_config(klaviyo: KlaviyoClient) -> None:
    list_id = create_list(klaviyo, "Nosto Customers")
    assert klaviyo.call("GET", f"/api/lists/{list_id}/relationships/flow-triggers").json()["data"] == []
    flows = {"Nosto Customers": [{"id": "WelcomeF1", "name": "Welcome series"}]}
    klaviyo.admin("PUT", "config", json={"flows": flows})
    ids = klaviyo.call("GET", f"/api/lists/{list_id}/relationships/flow-triggers").json()["data"]
    assert ids == [{"type": "flow", "id": "WelcomeF1"}]
    full = klaviyo.call("GET", f"/api/lists/{list_id}/flow-triggers").json()["data"]
    assert full[0]["attributes"]["name"] == "Welcome series"
    assert full[0]["attributes"]["trigger_type"] == "Added to List"


# -- bulk import jobs -----------------------------------------------------------------------------------


def test_bulk_job_lifecycle_upserts_and_adds_to_list(klaviyo: KlaviyoClient) -> None:
    (existing,) = klaviyo.admin(
        "POST",
        "profiles",
        json=[
            {
                "email": "ana@example.com",
                "first_name": "Ana",
                "properties": {"loyalty_tier": "gold"},
                "consent": "UNSUBSCRIBED",
                "suppressed": True,
            }
        ],
    )["ids"]
    list_id = create_list(klaviyo, "Nosto Customers")
    klaviyo.admin("PUT", "config", json={"job_delay_base": 0.4})
    profiles = [
        {
            "email": "ana@example.com",
            "first_name": None,
            "properties": {"nosto_segment": ["VIP"], "loyalty_tier": None},
        },
        {"email": "o'neil+shop@example.co.uk", "properties": {"nosto_segment": []}},
        {"email": "Ana@example.com", "properties": {"nosto_segment": ["Other"]}},
    ]
    response = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles, list_id))
    assert response.status_code == 202, response.text
    job = response.json()["data"]
    assert job["attributes"]["status"] == "queued"
    assert job["attributes"]["total_count"] == 3
    assert klaviyo.admin("GET", "state")["profiles"][0]["properties"] == {"loyalty_tier": "gold"}

    statuses = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        attributes = klaviyo.call("GET", f"/api/profile-bulk-import-jobs/{job['id']}").json()["data"][
            "attributes"
        ]
        statuses.add(attributes["status"])
        if attributes["status"] == "complete":
            break
        time.sleep(0.03)
    assert statuses >= {"processing", "complete"}
    assert attributes["completed_count"] == 3
    assert attributes["failed_count"] == 0

    state = {p["email"]: p for p in klaviyo.admin("GET", "state")["profiles"]}
    ana = state["ana@example.com"]
    assert ana["id"] == existing
    assert ana["first_name"] == "Ana"  # null does not clear in bulk jobs
    assert ana["properties"] == {"loyalty_tier": "gold", "nosto_segment": ["VIP"]}
    assert ana["suppressed"] is True
    assert ana["subscriptions"]["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert state["o'neil+shop@example.co.uk"]["properties"] == {"nosto_segment": []}
    assert state["Ana@example.com"]["id"] != existing
    assert all(list_id in p["lists"] for p in state.values())

    ids = klaviyo.call("GET", f"/api/profile-bulk-import-jobs/{job['id']}/relationships/profiles").json()[
        "data"
    ]
    assert {item["id"] for item in ids} == {p["id"] for p in state.values()}
    lists = klaviyo.call("GET", f"/api/profile-bulk-import-jobs/{job['id']}/lists").json()["data"]
    assert [item["id"] for item in lists] == [list_id]
    listed = klaviyo.call("GET", '/api/profile-bulk-import-jobs?filter=equals(status,"complete")').json()[
        "data"
    ]
    assert [item["id"] for item in listed] == [job["id"]]


def test_one_invalid_email_rejects_the_whole_job(klaviyo: KlaviyoClient) -> None:
    profiles = [{"email": "ok@example.com"}, {"email": "also.ok@example.com"}, {"email": "broken@example"}]
    response = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles))
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "invalid"
    assert error["source"]["pointer"] == "/data/attributes/profiles/data/2/attributes/email"
    time.sleep(0.2)
    assert klaviyo.admin("GET", "state")["profiles"] == []
    assert klaviyo.admin("GET", "state")["jobs"] == []


@pytest.mark.parametrize(
    "email",
    [
        " ana@example.com",
        "ana@example.c",
        "ana@bücher.de",
        "ana@@example.com",
        "ana.example.com",
        "ana@example.123",
    ],
)
def test_email_validator_is_strict(klaviyo: KlaviyoClient, email: str) -> None:
    response = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body([{"email": email}]))
    assert response.status_code == 400


def test_failing_emails_show_up_as_import_errors(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "POST",
        "faults",
        json={"kind": "job_fail_emails", "emails": ["bad@example.com"], "reason": "Blocked domain."},
    )
    profiles = [
        {"email": "good@example.com"},
        {"email": "bad@example.com", "properties": {"nosto_segment": ["A"]}},
    ]
    job_id = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles)).json()["data"][
        "id"
    ]
    job = wait_for_job(klaviyo, job_id)
    assert job["attributes"]["status"] == "complete"
    assert job["attributes"]["completed_count"] == 1
    assert job["attributes"]["failed_count"] == 1
    errors = klaviyo.call("GET", f"/api/profile-bulk-import-jobs/{job_id}/import-errors").json()["data"]
    assert len(errors) == 1
    assert errors[0]["type"] == "import-error"
    assert errors[0]["attributes"]["detail"] == "Blocked domain."
    assert errors[0]["attributes"]["source"]["pointer"] == "/data/attributes/profiles/data/1"
    assert errors[0]["attributes"]["original_payload"]["attributes"]["email"] == "bad@example.com"
    assert [p["email"] for p in klaviyo.admin("GET", "state")["profiles"]] == ["good@example.com"]


def test_job_faults_cancel_hold_and_never_finish(klaviyo: KlaviyoClient) -> None:
    profiles = [{"email": f"p{i}@example.com"} for i in range(4)]
    klaviyo.admin("POST", "faults", json={"kind": "job_cancel", "times": 1})
    cancelled = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles)).json()["data"]
    job = wait_for_job(klaviyo, cancelled["id"])
    assert job["attributes"]["status"] == "cancelled"
    assert job["attributes"]["completed_count"] == 2

    klaviyo.admin("DELETE", "faults")
    klaviyo.admin("POST", "faults", json=[{"kind": "hold_jobs", "times": 1}])
    held = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles)).json()["data"]
    assert wait_for_job(klaviyo, held["id"], timeout=0.4)["attributes"]["status"] == "processing"
    assert klaviyo.admin("POST", "jobs/release") == {"released": 1}
    assert wait_for_job(klaviyo, held["id"])["attributes"]["status"] == "complete"

    klaviyo.admin("POST", "faults", json={"kind": "job_never_finishes"})
    stuck = klaviyo.call("POST", "/api/profile-bulk-import-jobs", json=bulk_body(profiles)).json()["data"]
    klaviyo.admin("POST", "jobs/release")
    assert wait_for_job(klaviyo, stuck["id"], timeout=0.4)["attributes"]["status"] == "processing"


def test_subscription_endpoints_are_served_and_recorded(klaviyo: KlaviyoClient) -> None:
    assert klaviyo.admin("GET", "stats")["subscription_calls"] == 0
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "a@example.com",
                                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
                            },
                        }
                    ]
                }
            },
        }
    }
    response = klaviyo.call("POST", "/api/profile-subscription-bulk-create-jobs", json=body)
    assert response.status_code == 202, response.text
    assert klaviyo.admin("GET", "stats")["subscription_calls"] == 1


# -- rate limits, faults, the request log ---------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "PUT", "config", json={"rate_scale": 0.02, "rate_limits_enabled": True}
    )  # steady window 1.2 s, 15 calls
    statuses = []
    throttled = None
    for _ in range(40):
        response = klaviyo.call("GET", "/api/accounts")
        statuses.append(response.status_code)
        if response.status_code == 429:
            throttled = response
            break
        assert all(
            name in response.headers for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
        )
        assert response.headers["RateLimit-Limit"] == "15"
    assert throttled is not None
    assert int(throttled.headers["Retry-After"]) >= 1
    assert not any(name.lower().startswith("ratelimit-") for name in throttled.headers)
    assert throttled.json()["errors"][0]["code"] == "throttled"
    time.sleep(int(throttled.headers["Retry-After"]))
    assert klaviyo.call("GET", "/api/accounts").status_code == 200
    assert klaviyo.admin("GET", "stats")["throttled"] >= 1


def test_create_list_has_a_daily_cap(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "PUT", "config", json={"rate_scale": 0.0001, "rate_limits_enabled": True}
    )  # a "day" of 8.6 s, windows too short to matter
    codes = [klaviyo.call("POST", "/api/lists", json=list_body(f"L{i}")).status_code for i in range(151)]
    assert codes.count(201) == 150
    assert codes[-1] == 429


def test_status_html_and_truncated_faults(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "POST",
        "faults",
        json=[
            {
                "kind": "status",
                "method": "GET",
                "path": "^/api/lists$",
                "status": 503,
                "retry_after": 2,
                "times": 1,
            },
            {"kind": "html", "method": "GET", "path": "^/api/lists$", "status": 403, "times": 1},
            {"kind": "truncated_json", "method": "GET", "path": "^/api/lists$", "times": 1},
        ],
    )
    first = klaviyo.call("GET", "/api/lists")
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "2"
    second = klaviyo.call("GET", "/api/lists")
    assert second.status_code == 403
    assert second.headers["Content-Type"].startswith("text/html")
    third = klaviyo.call("GET", "/api/lists")
    assert third.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        third.json()
    assert klaviyo.call("GET", "/api/lists").json()["data"] == []


def test_a_fault_can_be_limited_to_requests_carrying_one_text(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "POST",
        "faults",
        json={
            "kind": "status",
            "method": "POST",
            "path": "^/api/profile-bulk-import-jobs$",
            "body_contains": "mallory@example.com",
            "status": 400,
        },
    )
    path = "/api/profile-bulk-import-jobs"
    assert klaviyo.call("POST", path, json=bulk_body([{"email": "alice@example.com"}])).status_code == 202
    for _ in range(2):
        refused = klaviyo.call("POST", path, json=bulk_body([{"email": "mallory@example.com"}]))
        assert refused.status_code == 400
    assert klaviyo.call("POST", path, json=bulk_body([{"email": "bob@example.com"}])).status_code == 202


def test_delay_and_reset_faults(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin(
        "POST", "faults", json={"kind": "delay", "seconds": 1.0, "path": "/api/accounts", "times": 1}
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        klaviyo.call("GET", "/api/accounts", timeout=0.3)
    # The server still answers the abandoned request a second later; wait for it, so that it cannot land
    # in the request log of a later test.
    deadline = time.monotonic() + 30
    while not any(entry["path"] == "/api/accounts" for entry in klaviyo.admin("GET", "requests")["requests"]):
        assert time.monotonic() < deadline, "the delayed request was never answered"
        time.sleep(0.1)
    klaviyo.admin("POST", "faults", json={"kind": "reset", "path": "/api/accounts", "times": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(klaviyo.base + "/api/accounts", headers=klaviyo.headers(), timeout=5)
    assert klaviyo.call("GET", "/api/accounts").status_code == 200


def test_reject_400_email_quotes_the_address(klaviyo: KlaviyoClient) -> None:
    klaviyo.admin("POST", "faults", json={"kind": "reject_400_email", "method": "POST", "times": 1})
    response = klaviyo.call(
        "POST", "/api/profile-bulk-import-jobs", json=bulk_body([{"email": "secret.person@example.com"}])
    )
    assert response.status_code == 400
    assert "'secret.person@example.com'" in response.json()["errors"][0]["detail"]


def test_bad_fault_rules_are_refused(klaviyo: KlaviyoClient) -> None:
    response = requests.post(f"{klaviyo.base}/__sandbox/faults", json={"kind": "explode"}, timeout=5)
    assert response.status_code == 400


def test_request_log_never_keeps_the_key(klaviyo: KlaviyoClient) -> None:
    klaviyo.call("GET", "/api/lists")
    klaviyo.call("GET", "/api/lists?page[size]=99")
    log = klaviyo.admin("GET", "requests")
    assert [entry["status"] for entry in log["requests"]] == [200, 400]
    assert klaviyo.key not in json.dumps(log)
    later = klaviyo.admin("GET", f"requests?since={log['requests'][0]['seq']}")["requests"]
    assert len(later) == 1
    stats = klaviyo.admin("GET", "stats")
    assert stats["calls"]["GET /api/lists"] == 2
    assert stats["violations"] == 1
