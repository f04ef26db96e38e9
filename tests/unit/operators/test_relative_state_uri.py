"""A state_uri relative to the task's working directory is refused before anything is read or written."""

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
