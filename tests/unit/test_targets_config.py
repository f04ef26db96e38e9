"""The configuration keys of the optional per-segment lists and Klaviyo segments."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError


def test_both_options_are_off_by_default_with_documented_prefixes() -> None:
    config = SyncConfig.from_mappings(None)

    assert config.segment_lists is False
    assert config.klaviyo_segments is False
    assert config.segment_list_prefix == "Nosto list: "
    assert config.klaviyo_segment_prefix == "Nosto: "


def test_true_or_a_list_of_segments() -> None:
    config = SyncConfig.from_mappings({"segment_lists": True, "klaviyo_segments": [" 101 ", "VIP"]})

    assert config.segment_lists is True
    assert config.klaviyo_segments == ("101", "VIP")


@pytest.mark.parametrize(
    ("variable", "must_mention"),
    [
        ({"segment_lists": "yes"}, ["'segment_lists'", "true, false, or a list"]),
        ({"klaviyo_segments": ["101", ""]}, ["'klaviyo_segments'"]),
        ({"klaviyo_segment_prefix": None}, ["'klaviyo_segment_prefix'", "a string"]),
    ],
)
def test_bad_values_say_what_to_fix(variable: dict[str, Any], must_mention: list[str]) -> None:
    with pytest.raises(KlaviyoConfigError) as raised:
        SyncConfig.from_mappings(variable, source="Airflow Variable 'x'")
    for text in must_mention:
        assert text in str(raised.value)
