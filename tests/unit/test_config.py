from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError

SOURCE = "Airflow Variable 'nosto_klaviyo_segment_sync'"


def test_defaults_are_the_documented_ones() -> None:
    config = SyncConfig.from_mappings(None)

    assert config.list_name == "Nosto Customers"
    assert config.property_name == "nosto_segment"
    assert config.empty_value == "empty_list"
    assert config.removal_threshold == 0.10
    assert config.check_flows is True
    assert config.segments == ()


def test_variable_overlays_the_dag_defaults() -> None:
    defaults = {"segments": ["101"], "list_name": "From the DAG", "removal_threshold": 0.2}
    variable = {"list_name": "From the Variable", "allowed_flows": ["FLOW1"]}

    config = SyncConfig.from_mappings(defaults, variable)

    assert config.segments == ("101",)
    assert config.list_name == "From the Variable"
    assert config.removal_threshold == 0.2
    assert config.allowed_flows == ("FLOW1",)
    assert config.property_name == "nosto_segment"


@pytest.mark.parametrize(
    ("variable", "must_mention"),
    [
        ({"segment_ids": ["101"]}, ["segment_ids", "segments"]),
        ({"segments": "101"}, ["segments", "list"]),
        ({"segments": ["101", ""]}, ["segments", "non-empty"]),
        ({"list_name": 7}, ["list_name", "string"]),
        ({"check_flows": "yes"}, ["check_flows", "true or false"]),
        ({"removal_threshold": 10}, ["removal_threshold", "between 0 and 1"]),
        ({"removal_threshold": -0.1}, ["removal_threshold", "between 0 and 1"]),
        ({"removal_threshold": True}, ["removal_threshold", "between 0 and 1"]),
        ({"removal_threshold": "10%"}, ["removal_threshold", "between 0 and 1"]),
        ({"empty_value": None}, ["empty_value", "empty_list", "unset"]),
        ({"klaviyo_pool_slots": 0}, ["klaviyo_pool_slots", "at least 1"]),
        (["101"], ["JSON object"]),
        ([], ["JSON object"]),
        (False, ["JSON object"]),
        ({"property_name": " nosto_segment"}, ["property_name", "without spaces"]),
        ({"list_name": "Nosto Customers "}, ["list_name", "without spaces"]),
    ],
    ids=[
        "unknown-key",
        "segments-not-a-list",
        "segments-blank-id",
        "list-name-not-text",
        "check-flows-not-bool",
        "threshold-over-1",
        "threshold-negative",
        "threshold-bool",
        "threshold-text",
        "empty-value-unknown",
        "pool-slots-zero",
        "not-an-object",
        "empty-list-not-an-object",
        "false-not-an-object",
        "property-name-padded",
        "list-name-padded",
    ],
)
def test_bad_variable_names_the_key_and_the_fix(variable: Any, must_mention: list[str]) -> None:
    with pytest.raises(KlaviyoConfigError) as raised:
        SyncConfig.from_mappings({"segments": ["101"]}, variable, source=SOURCE)

    for fragment in [*must_mention, SOURCE]:
        assert fragment in str(raised.value)


def test_segment_ids_are_trimmed() -> None:
    assert SyncConfig.from_mappings({"segments": [" 101 ", "102"]}).segments == ("101", "102")
