"""Fixtures for the end-to-end tests: the sandbox, generated exports and a throwaway Airflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.harness import AirflowEnvironment, evolve_data, generate_data
from sandbox.runner import running_sandbox

#: The Klaviyo scopes the address-book sync needs; Klaviyo segments and segment lists add segments:read/write.
SYNC_SCOPES = [
    "accounts:read",
    "lists:read",
    "lists:write",
    "profiles:read",
    "profiles:write",
    "flows:read",
]
#: Small enough that the whole end-to-end suite stays within minutes, large enough for several bulk jobs.
CONTACTS = 3_000
SEGMENTS = 12


@dataclass
class Sandbox:
    klaviyo: str
    nosto: str

    def reset(self) -> None:
        requests.post(f"{self.klaviyo}/__sandbox/reset", timeout=30).raise_for_status()
        requests.post(f"{self.nosto}/__sandbox/reset", timeout=30).raise_for_status()

    def state(self) -> dict[str, Any]:
        response = requests.get(f"{self.klaviyo}/__sandbox/state", timeout=60)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def requests_log(self, since: int = 0) -> list[dict[str, Any]]:
        response = requests.get(f"{self.klaviyo}/__sandbox/requests", params={"since": since}, timeout=60)
        response.raise_for_status()
        body = response.json()
        entries: list[dict[str, Any]] = body["requests"] if isinstance(body, dict) else body
        return entries

    def write_mark(self) -> int:
        """A position in the sandbox's log of profile writes; pass it to :meth:`writes`."""
        response = requests.get(f"{self.klaviyo}/__sandbox/writes", params={"since": 0}, timeout=60)
        response.raise_for_status()
        mark: int = response.json()["last_seq"]
        return mark

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        """Every profile write since ``since`` (bulk import entries, updates), with the email written."""
        response = requests.get(f"{self.klaviyo}/__sandbox/writes", params={"since": since}, timeout=60)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()["writes"]
        return entries

    def add_fault(self, rule: dict[str, Any], *, nosto: bool = False) -> None:
        base = self.nosto if nosto else self.klaviyo
        requests.post(f"{base}/__sandbox/faults", json=rule, timeout=30).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.klaviyo}/__sandbox/faults", timeout=30).raise_for_status()

    def load_export(self, data: Path, export: Path | None = None) -> None:
        catalogue = json.loads((data / "catalogue.json").read_text())
        requests.put(f"{self.nosto}/__sandbox/catalogue", json=catalogue, timeout=30).raise_for_status()
        body = (export or data / "export.jsonl.gz").read_bytes()
        requests.put(f"{self.nosto}/__sandbox/export", data=body, timeout=60).raise_for_status()

    def seed_profiles(self, profiles: list[dict[str, Any]]) -> None:
        requests.post(f"{self.klaviyo}/__sandbox/profiles", json=profiles, timeout=60).raise_for_status()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with running_sandbox() as urls:
        yield Sandbox(urls.klaviyo, urls.nosto)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A first export (with catalogue and existing Klaviyo profiles) and an evolved second export."""
    root = tmp_path_factory.mktemp("exports")
    first = generate_data(root / "first", contacts=CONTACTS, segments=SEGMENTS, seed=7)
    second = evolve_data(first, root / "second", seed=8)
    return first, second / "export.jsonl.gz"


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Path:
    """One migrated metadata database for the whole suite; each test gets its own state folder."""
    home = tmp_path_factory.mktemp("airflow")
    AirflowEnvironment(home=home, klaviyo_url=sandbox.klaviyo, nosto_url=sandbox.nosto).setup()
    return home


@pytest.fixture
def airflow(
    airflow_home: Path, sandbox: Sandbox, generated: tuple[Path, Path], tmp_path: Path
) -> AirflowEnvironment:
    """A clean sandbox loaded with the first export, and an Airflow configured to sync every segment."""
    sandbox.reset()
    first, _ = generated
    sandbox.load_export(first)
    catalogue = json.loads((first / "catalogue.json").read_text())
    return AirflowEnvironment(
        home=airflow_home,
        klaviyo_url=sandbox.klaviyo,
        nosto_url=sandbox.nosto,
        config={"segments": [s["id"] for s in catalogue], "state_uri": f"file://{tmp_path / 'state'}"},
    )
