"""Faults in what Nosto gives the sync: each stops the run with a clear error and loses nothing synced before,
or, for bad lines and transient errors, syncs the rest correctly."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, NostoAuthError, NostoError
from sandbox.harness import DEMO_NOSTO_EXPORT_TOKEN
from tests.e2e.expected import expected_from_export
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches
from tests.faults.conftest import FaultWorld


def _export_lines(world: FaultWorld) -> list[bytes]:
    return gzip.decompress((world.data / "export.jsonl.gz").read_bytes()).splitlines(keepends=True)


def _put_export(world: FaultWorld, body: bytes) -> None:
    requests.put(f"{world.sandbox.nosto}/__sandbox/export", data=body, timeout=30).raise_for_status()


def _klaviyo_held(world: FaultWorld) -> dict[str, Any]:
    state = world.sandbox.state()
    return {"profiles": state["profiles"], "lists": state["lists"]}


def _missing(world: FaultWorld) -> None:
    requests.delete(f"{world.sandbox.nosto}/__sandbox/export", timeout=30).raise_for_status()


def _empty(world: FaultWorld) -> None:
    _put_export(world, b"")


def _cut_mid_line(world: FaultWorld) -> None:
    text = b"".join(_export_lines(world))
    cut = text.index(b"\n", len(text) // 2) - 7
    _put_export(world, gzip.compress(text[:cut]))


def _gzip_cut_off(world: FaultWorld) -> None:
    raw = (world.data / "export.jsonl.gz").read_bytes()
    _put_export(world, raw[: len(raw) * 2 // 3])


def _half_at_a_line_boundary(world: FaultWorld) -> None:
    lines = _export_lines(world)
    _put_export(world, gzip.compress(b"".join(lines[: len(lines) // 2])))


def _graphql_error(world: FaultWorld) -> None:
    world.sandbox.add_fault(
        {
            "kind": "status",
            "path": "^/v1/graphql$",
            "status": 200,
            "body": {"errors": [{"message": "Internal server error", "path": ["segments"]}], "data": None},
        },
        nosto=True,
    )


@pytest.mark.parametrize(
    ("fault", "error", "messages"),
    [
        (_missing, NostoError, ["No Segment Export", "404", "nothing was written", "export_url"]),
        (_empty, ValueError, ["holds no valid contact", "refusing to sync an empty address book"]),
        (_cut_mid_line, ValueError, ["ends in the middle of a line", "nothing was written", "run again"]),
        (_gzip_cut_off, ValueError, ["gzip stream", "nothing was written"]),
        (
            _half_at_a_line_boundary,
            KlaviyoConfigError,
            ["Stopped before writing anything", "removal threshold is 10%", "allow_removals=true"],
        ),
        (_graphql_error, NostoError, ["Internal server error", "Nothing was written", "retry the task"]),
    ],
    ids=[
        "export-missing",
        "export-empty",
        "export-truncated-mid-line",
        "export-gzip-cut-off",
        "export-cut-to-half-at-a-line-boundary",
        "graphql-error",
    ],
)
def test_bad_nosto_input_stops_the_run_and_loses_nothing(
    world: FaultWorld, fault: Callable[[FaultWorld], None], error: type[Exception], messages: list[str]
) -> None:
    world.sync()
    before = _klaviyo_held(world)
    writes = len(world.sandbox.writes())

    fault(world)
    text = world.fails(world.plan, error)

    for message in messages:
        assert message in text
    assert _klaviyo_held(world) == before
    assert len(world.sandbox.writes()) == writes, "nothing was written to Klaviyo"
    # The applied state still matches Klaviyo: once Nosto is right again, the next run has nothing to do.
    requests.post(f"{world.sandbox.nosto}/__sandbox/reset", timeout=30).raise_for_status()
    world.sandbox.load_export(world.data)
    assert world.plan() == []


def test_malformed_lines_are_counted_and_the_rest_syncs(
    world: FaultWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = _export_lines(world)
    garbage = [
        b"{not json\n",
        b"[1, 2, 3]\n",
        b'{"email": 5, "nosto_segments": []}\n',
        b'{"segments": ["x"]}\n',
    ]
    mixed = lines[:50] + garbage[:2] + lines[50:150] + garbage[2:] + lines[150:]
    export = tmp_path / "export.jsonl.gz"
    export.write_bytes(gzip.compress(b"".join(mixed)))
    _put_export(world, export.read_bytes())

    world.sync()

    out = capsys.readouterr().out
    sys.stdout.write(out)
    assert f"and {len(garbage)} malformed lines" in out
    world.assert_converged(export)


def test_graphql_server_error_is_retried_and_the_run_converges(world: FaultWorld) -> None:
    world.sandbox.add_fault(
        {"kind": "status", "path": "^/v1/graphql$", "status": 502, "times": 1}, nosto=True
    )
    world.sync()
    world.assert_converged()


def test_refused_nosto_token_fails_at_once_naming_the_connection(
    world: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {
        "conn_type": "nosto",
        "host": world.sandbox.nosto,
        "password": "revoked_apps_token",
        "extra": {"export_token": DEMO_NOSTO_EXPORT_TOKEN},
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOSTO_DEFAULT", json.dumps(conn))

    text = world.fails(world.plan, NostoAuthError)

    assert "401" in text
    assert "API_APPS token in the password of Airflow connection 'nosto_default'" in text
    log = requests.get(f"{world.sandbox.nosto}/__sandbox/requests", timeout=30).json()["requests"]
    assert [entry["status"] for entry in log if entry["path"] == "/v1/graphql"] == [401], "no retries"


def test_segment_deleted_in_nosto_leaves_its_members_values_with_a_warning(
    world: FaultWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    world.sync()
    gone, *remaining = world.catalogue
    requests.put(f"{world.sandbox.nosto}/__sandbox/catalogue", json=remaining, timeout=30).raise_for_status()

    world.sync()

    out = capsys.readouterr().out
    sys.stdout.write(out)
    warnings = [line for line in out.splitlines() if "warning" in line and gone["name"] in line]
    assert warnings, "the run warns that a synced segment is gone from Nosto"
    # SPEC 2: its name leaves its members' values; every other segment's values stay as the export says.
    names = {segment["name"] for segment in remaining}
    assert_klaviyo_matches(world.sandbox.state(), expected_from_export(world.data / "export.jsonl.gz", names))


def test_chosen_segment_that_nosto_never_had_stops_the_run_naming_it(world: FaultWorld) -> None:
    world.sync()
    before = _klaviyo_held(world)
    world.config["segments"] = [*world.config["segments"], "5a497a0000000000000000ff"]

    text = world.fails(world.plan, KlaviyoConfigError)

    assert "has no segment '5a497a0000000000000000ff'" in text
    assert "Remove it from 'segments'" in text
    assert _klaviyo_held(world) == before
