"""A state_uri relative to the task's working directory, or a location no installed filesystem serves, is refused
before anything is read or written."""

from __future__ import annotations

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from tests.unit.operators.world import KLAVIYO_WRITES, SyncWorld


@pytest.mark.parametrize("state_uri", ["file://klaviyo_nosto_state", "klaviyo_nosto_state", "./state"])
def test_relative_state_uri_is_refused_naming_the_absolute_form(world: SyncWorld, state_uri: str) -> None:
    world.configure(state_uri=state_uri)
    world.export({"ana@example.com": ["vip"]})

    with pytest.raises(KlaviyoConfigError, match="file:///"):
        world.sync()

    world.nosto.open_export.assert_not_called()
    for write in KLAVIYO_WRITES:
        getattr(world.klaviyo, write).assert_not_called()


@pytest.mark.parametrize(
    ("setting", "uri", "scheme"),
    [
        ("state_uri", "foo://bucket/state", "foo://"),
        ("export_uri", "ftp://example.com/export.jsonl.gz", "ftp://"),
    ],
    ids=["unknown-scheme", "export-over-ftp"],
)
def test_location_no_installed_filesystem_serves_is_refused_naming_the_setting(
    world: SyncWorld, setting: str, uri: str, scheme: str
) -> None:
    world.configure(**{setting: uri})
    world.export({"ana@example.com": ["vip"]})

    with pytest.raises(KlaviyoConfigError) as raised:
        world.sync()

    message = str(raised.value)
    assert message.startswith(f"{setting} in the sync configuration uses {scheme}, which no filesystem")
    assert "apache-airflow-providers-google for gs://" in message
    world.nosto.open_export.assert_not_called()


def test_export_over_https_is_not_taken_for_object_storage(world: SyncWorld) -> None:
    world.configure(export_uri="https://exports.example.com/segments.jsonl.gz")
    world.export({"ana@example.com": ["vip"]})

    world.sync()

    world.nosto.open_export.assert_called_once_with("https://exports.example.com/segments.jsonl.gz")
