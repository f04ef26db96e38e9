from __future__ import annotations

import importlib
import json
from importlib.resources import files

import jsonschema
import pytest

from airflow_provider_klaviyo_nosto.get_provider_info import get_provider_info


def test_matches_airflows_runtime_schema():
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_listed_modules_and_hooks_import():
    info = get_provider_info()
    modules = [
        module
        for kind in ("hooks", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    for connection_type in info["connection-types"]:
        module, _, name = connection_type["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == connection_type["connection-type"]
        assert hook.hook_name == connection_type["hook-name"]


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
def test_entry_point_is_discovered():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-klaviyo-nosto" in manager.providers
    hooks = manager.hooks
    assert hooks["klaviyo"].hook_class_name == "airflow_provider_klaviyo_nosto.hooks.klaviyo.KlaviyoHook"
    assert hooks["nosto"].connection_id_attribute_name == "nosto_conn_id"
