"""The schema check every mocked Klaviyo request goes through refuses what Klaviyo would refuse."""

from __future__ import annotations

import json

import pytest

from tests.klaviyo_contract import assert_all_allowed, violation

BASE = "https://a.klaviyo.com"
HEADERS = {
    "Authorization": "Klaviyo-API-Key pk_test",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
}
JOB = {
    "data": {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "a@example.com"}}]}},
    }
}


def test_a_request_klaviyo_accepts_passes() -> None:
    url = f"{BASE}/api/profile-bulk-import-jobs"
    assert violation("POST", url, HEADERS, json.dumps(JOB)) is None


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "reason"),
    [
        ("GET", "/api/lists", {**HEADERS, "revision": "2024-10-15"}, None, "revision"),
        ("GET", "/api/lists", {k: v for k, v in HEADERS.items() if k != "revision"}, None, "revision"),
        ("GET", "/api/lists", {k: v for k, v in HEADERS.items() if k != "Authorization"}, None, "401"),
        ("GET", "/api/lists?page%5Bsize%5D=11", HEADERS, None, "page[size]"),
        ("GET", "/api/lists?unknown=1", HEADERS, None, "unknown"),
        ("PUT", "/api/lists", HEADERS, None, "405"),
        ("GET", "/api/segments-of-lists", HEADERS, None, "404"),
        (
            "POST",
            "/api/profile-bulk-import-jobs",
            {**HEADERS, "Content-Type": "application/json"},
            JOB,
            "415",
        ),
        (
            "POST",
            "/api/profile-bulk-import-jobs",
            HEADERS,
            {"data": {**JOB["data"], "attributes": {**JOB["data"]["attributes"], "overwrite": True}}},
            "overwrite",
        ),
    ],
    ids=[
        "old-revision",
        "no-revision",
        "no-auth",
        "page-size",
        "unknown-param",
        "method",
        "path",
        "media",
        "field",
    ],
)
def test_what_klaviyo_refuses_is_refused(method, path, headers, body, reason) -> None:
    problem = violation(method, f"{BASE}{path}", headers, None if body is None else json.dumps(body))
    assert problem is not None
    assert reason in problem


def test_only_klaviyo_requests_are_checked_and_failures_are_listed() -> None:
    nosto = ("POST", "https://api.nosto.com/v1/graphql", {}, b"{}")
    good = ("GET", f"{BASE}/api/lists", HEADERS, None)
    assert assert_all_allowed([nosto, good]) == 1
    with pytest.raises(AssertionError, match="1 requests break"):
        assert_all_allowed([good, ("GET", f"{BASE}/api/lists?nope=1", HEADERS, None)])
