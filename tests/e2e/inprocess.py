"""
Run the sync and push operators in the test process against the sandbox, as one Airflow worker would.

A DAG run through ``airflow dags test`` costs about 20 seconds of start-up; these tests check what the
operators do to Klaviyo, not the DAG's wiring, so they call ``execute`` directly with the connections and
the sync configuration in ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` environment variables, exactly as Airflow
would resolve them. Exports are written by hand, small and readable, so each test can say which contact
should hold what.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator
from sandbox.harness import CONFIG_VARIABLE, DEMO_KLAVIYO_KEY, DEMO_NOSTO_APPS_TOKEN, DEMO_NOSTO_EXPORT_TOKEN
from tests.e2e.conftest import Sandbox

LIST_NAME = "Nosto Customers"
PROPERTY = "nosto_segment"

#: Klaviyo calls that change something; a run that must write nothing sends none of them.
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
#: POSTs that only read (none today); kept explicit so a read-only check stays honest.
READ_ONLY_POSTS: tuple[str, ...] = ()


def email(number: int) -> str:
    return f"contact{number:04d}@example.com"


THREE_SEGMENT_CATALOGUE = {
    "seg-a": "Loyal Customers",
    "seg-b": "Brand fans: Nike",
    "seg-c": "Discount seekers",
}
#: 60 contacts: 0-19 loyal and Nike fans, 20-39 Nike fans and discount seekers, 40-59 discount seekers.
THREE_SEGMENT_EXPORT = {
    email(n): (
        ["Loyal Customers", "Brand fans: Nike"]
        if n < 20
        else ["Brand fans: Nike", "Discount seekers"]
        if n < 40
        else ["Discount seekers"]
    )
    for n in range(60)
}


@dataclass
class SyncRunner:
    """
    The sync configuration, the sandbox and a state folder; runs plan + pushes in this process.

    :param sandbox: the running sandbox.
    :param state_uri: the applied-state folder of this test.
    :param config: the sync configuration (the Airflow Variable's JSON).
    """

    sandbox: Sandbox
    state_uri: str
    monkeypatch: pytest.MonkeyPatch
    config: dict[str, Any] = field(default_factory=dict)
    klaviyo_key: str = DEMO_KLAVIYO_KEY

    def __post_init__(self) -> None:
        self.monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
        self.monkeypatch.setenv(
            "AIRFLOW_CONN_NOSTO_DEFAULT",
            json.dumps(
                {
                    "conn_type": "nosto",
                    "host": self.sandbox.nosto,
                    "password": DEMO_NOSTO_APPS_TOKEN,
                    "extra": {"export_token": DEMO_NOSTO_EXPORT_TOKEN},
                }
            ),
        )
        self.use_key(self.klaviyo_key)

    def use_key(self, key: str) -> None:
        self.klaviyo_key = key
        self.monkeypatch.setenv(
            "AIRFLOW_CONN_KLAVIYO_DEFAULT",
            json.dumps({"conn_type": "klaviyo", "host": self.sandbox.klaviyo, "password": key}),
        )

    def configure(self, **config: Any) -> None:
        self.config = {"state_uri": self.state_uri, **config}

    # -- Nosto's side --------------------------------------------------------------------------------

    def nosto(self, catalogue: Mapping[str, str], export: Mapping[str, Iterable[str]]) -> None:
        """Put a catalogue ``{id: name}`` and an export ``{email: [segment names]}`` into the Nosto sandbox."""
        requests.put(
            f"{self.sandbox.nosto}/__sandbox/catalogue",
            json=[{"id": ident, "name": name} for ident, name in catalogue.items()],
            timeout=30,
        ).raise_for_status()
        lines = "".join(
            json.dumps({"email": address, "nosto_segments": sorted(names)}) + "\n"
            for address, names in export.items()
        )
        requests.put(
            f"{self.sandbox.nosto}/__sandbox/export", data=gzip.compress(lines.encode()), timeout=30
        ).raise_for_status()

    # -- the operators ---------------------------------------------------------------------------------

    def plan(self, **params: Any) -> list[dict[str, Any]]:
        self.monkeypatch.setenv(f"AIRFLOW_VAR_{CONFIG_VARIABLE.upper()}", json.dumps(self.config))
        operator = NostoSegmentSyncOperator(task_id="plan_sync", **params)
        specs: list[dict[str, Any]] = list(operator.execute({}))  # type: ignore[arg-type]
        json.dumps(specs)  # what goes to XCom must be JSON
        return specs

    def push(self, specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            KlaviyoSegmentPushOperator(
                task_id="push_segment", push=dict(spec), deferrable=False, poll_interval=0.1
            ).execute({})  # type: ignore[arg-type]
            for spec in specs
        ]

    def run(self, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One whole DAG run: the plan, then every push task."""
        specs = self.plan(**params)
        return specs, self.push(specs)

    # -- what Klaviyo holds ----------------------------------------------------------------------------

    def klaviyo(self) -> KlaviyoView:
        return KlaviyoView(self.sandbox.state())

    def write_calls_since(self, mark: int) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.sandbox.requests_log(since=mark)
            if entry["method"] in WRITE_METHODS and entry["path"] not in READ_ONLY_POSTS
        ]

    def request_mark(self) -> int:
        log = self.sandbox.requests_log()
        return int(log[-1]["seq"]) if log else 0

    def klaviyo_api(self, method: str, path: str, body: Any = None) -> requests.Response:
        """Call the sandbox's Klaviyo API as a person in the Klaviyo UI would change things."""
        return requests.request(
            method,
            f"{self.sandbox.klaviyo}{path}",
            headers={
                "Authorization": f"Klaviyo-API-Key {DEMO_KLAVIYO_KEY}",
                "revision": "2026-07-15",
                "Content-Type": "application/vnd.api+json",
                "Accept": "application/vnd.api+json",
            },
            data=json.dumps(body) if body is not None else None,
            timeout=30,
        )

    def set_klaviyo_config(self, **config: Any) -> None:
        requests.put(f"{self.sandbox.klaviyo}/__sandbox/config", json=config, timeout=30).raise_for_status()


@dataclass
class KlaviyoView:
    """The sandbox's Klaviyo state, by email."""

    state: dict[str, Any]

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return {profile["email"]: profile for profile in self.state["profiles"]}

    def lists_named(self, name: str) -> list[dict[str, Any]]:
        return [item for item in self.state["lists"] if item["name"] == name]

    def members(self, name: str = LIST_NAME) -> set[str]:
        found = self.lists_named(name)
        assert len(found) == 1, f"expected one list named {name!r}, found {len(found)}"
        by_id = {profile["id"]: profile["email"] for profile in self.state["profiles"]}
        return {by_id[profile_id] for profile_id in found[0]["members"]}

    def values(self, property_name: str = PROPERTY) -> dict[str, Any]:
        """Every profile's value of the property; profiles without it are left out."""
        return {
            address: profile["properties"][property_name]
            for address, profile in self.profiles.items()
            if property_name in profile["properties"]
        }


def new_runner(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncRunner:
    """A clean sandbox and a sync runner with its own state folder (configure it in the test)."""
    sandbox.reset()
    return SyncRunner(sandbox, f"file://{tmp_path / 'state'}", monkeypatch)


def synced_three_segment_runner(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SyncRunner:
    """A runner that has synced ``THREE_SEGMENT_EXPORT`` once, one Klaviyo pool slot."""
    runner = new_runner(sandbox, tmp_path, monkeypatch)
    runner.configure(segments=list(THREE_SEGMENT_CATALOGUE), klaviyo_pool_slots=1)
    runner.nosto(THREE_SEGMENT_CATALOGUE, THREE_SEGMENT_EXPORT)
    runner.run()
    return runner
