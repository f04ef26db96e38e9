"""The sandbox Nosto server: GraphQL catalogue and Segment Export download."""

from __future__ import annotations

import gzip

import pytest
import requests

from sandbox.runner import SandboxUrls

pytestmark = pytest.mark.sandbox

QUERY = "query { segments { segments { id name } } }"
CATALOGUE = [
    {"id": "5a497a000000000000000005", "name": "Loyal Customers"},
    {"id": "64f1c2aa0000000000000001", "name": "Category affinity: Kombai"},
]


def put_catalogue(nosto: SandboxUrls) -> None:
    requests.put(f"{nosto.nosto}/__sandbox/catalogue", json=CATALOGUE, timeout=5).raise_for_status()


def test_graphql_lists_segments_with_json_or_raw_graphql(nosto: SandboxUrls) -> None:
    put_catalogue(nosto)
    auth = ("", nosto.nosto_apps_token)
    as_json = requests.post(f"{nosto.nosto}/v1/graphql", json={"query": QUERY}, auth=auth, timeout=5)
    assert as_json.status_code == 200
    assert as_json.json() == {"data": {"segments": {"segments": CATALOGUE}}}

    raw = requests.post(
        f"{nosto.nosto}/v1/graphql",
        data="{ segments { segments { id name } } }",
        headers={"Content-Type": "application/graphql"},
        auth=auth,
        timeout=5,
    )
    assert raw.json()["data"]["segments"]["segments"] == CATALOGUE


def test_graphql_refuses_bad_auth_and_unknown_queries(nosto: SandboxUrls) -> None:
    url = f"{nosto.nosto}/v1/graphql"
    for auth in [None, ("", "wrong"), ("someone", nosto.nosto_apps_token)]:
        assert requests.post(url, json={"query": QUERY}, auth=auth, timeout=5).status_code == 401
    other = requests.post(
        url, json={"query": "{ products { id } }"}, auth=("", nosto.nosto_apps_token), timeout=5
    )
    assert other.json()["errors"]
    # A raw GraphQL body sent as JSON fails to parse, as on Nosto.
    wrong_type = requests.post(url, data=QUERY, auth=("", nosto.nosto_apps_token), timeout=5)
    assert wrong_type.json()["errors"]


def test_segment_export_download(nosto: SandboxUrls) -> None:
    url = f"{nosto.nosto}/v1/segment-export/latest"
    bearer = {"Authorization": f"Bearer {nosto.nosto_export_token}"}
    assert requests.get(url, headers=bearer, timeout=5).status_code == 404

    lines = b'{"email": "ana@example.com", "nosto_segments": ["Loyal Customers"]}\n'
    requests.put(f"{nosto.nosto}/__sandbox/export", data=gzip.compress(lines), timeout=5).raise_for_status()
    response = requests.get(url, headers=bearer, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/gzip"
    assert "GMT" in response.headers["Last-Modified"]
    assert gzip.decompress(response.content) == lines
    head = requests.head(url, headers=bearer, timeout=5)
    assert head.status_code == 200
    assert head.content == b""

    requests.put(f"{nosto.nosto}/__sandbox/export", data=lines, timeout=5).raise_for_status()
    plain = requests.get(url, headers=bearer, timeout=5)
    assert plain.headers["Content-Type"].startswith("application/x-ndjson")
    assert plain.content == lines

    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    basic = requests.get(url, auth=("", nosto.nosto_export_token), timeout=5)
    assert basic.status_code == 401


def test_nosto_faults(nosto: SandboxUrls) -> None:
    put_catalogue(nosto)
    rule = {"kind": "status", "path": "^/v1/graphql$", "status": 502, "times": 1}
    requests.post(f"{nosto.nosto}/__sandbox/faults", json=rule, timeout=5).raise_for_status()
    auth = ("", nosto.nosto_apps_token)
    assert (
        requests.post(f"{nosto.nosto}/v1/graphql", json={"query": QUERY}, auth=auth, timeout=5).status_code
        == 502
    )
    assert (
        requests.post(f"{nosto.nosto}/v1/graphql", json={"query": QUERY}, auth=auth, timeout=5).status_code
        == 200
    )
    log = requests.get(f"{nosto.nosto}/__sandbox/requests", timeout=5).json()["requests"]
    assert [entry["status"] for entry in log] == [502, 200]
    assert nosto.nosto_apps_token not in str(log)
