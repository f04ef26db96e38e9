"""One real Airflow deployment (PostgreSQL, scheduler, dag processor, triggerer, API server) per session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.harness import generate_data
from tests.deployment.deployment import STATE_BUCKET, STATE_CONN_ID, AirflowDeployment, running_deployment
from tests.e2e.conftest import Sandbox

#: A few hundred contacts: enough for every segment to have members, few enough to keep runs short.
CONTACTS = 300
#: Three segments plus the address book make four push tasks, as many as the pool's slots, so all of them
#: can wait deferred at the same time.
SEGMENTS = 3


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    with running_deployment(tmp_path_factory.mktemp("airflow-deployment")) as running:
        yield running


@pytest.fixture(scope="session")
def sandbox(deployment: AirflowDeployment) -> Sandbox:
    return Sandbox(deployment.sandbox.klaviyo, deployment.sandbox.nosto)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_data(tmp_path_factory.mktemp("export"), contacts=CONTACTS, segments=SEGMENTS, seed=11)


def catalogue(data: Path) -> list[dict[str, Any]]:
    segments: list[dict[str, Any]] = json.loads((data / "catalogue.json").read_text())
    return segments


def start_fresh(deployment: AirflowDeployment, sandbox: Sandbox, data: Path, name: str) -> None:
    """A Klaviyo account holding only the pre-existing profiles, the export in Nosto, and a new state folder."""
    sandbox.reset()
    sandbox.load_export(data)
    sandbox.seed_profiles(json.loads((data / "klaviyo-seed.json").read_text()))
    deployment.set_config(
        {
            "segments": [segment["id"] for segment in catalogue(data)],
            "state_uri": f"s3://{STATE_CONN_ID}@{STATE_BUCKET}/{name}",
        }
    )
