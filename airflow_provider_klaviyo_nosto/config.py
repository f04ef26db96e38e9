"""The sync's persistent configuration: DAG-file defaults overlaid with an Airflow Variable admins edit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.sync.targets import DEFAULT_LIST_PREFIX, DEFAULT_SEGMENT_PREFIX

EMPTY_VALUE_MODES = ("empty_list", "unset")


@dataclass(frozen=True)
class SyncConfig:
    """
    What to sync and where.

    :param segments: the Nosto segments chosen for syncing, by id (a name is accepted and resolved to its id
        through the catalogue).
    :param list_name: the Klaviyo list that holds every contact Nosto knows (the address book).
    :param property_name: the Klaviyo profile property that carries the segment names.
    :param empty_value: how a contact that left every segment is written: ``empty_list`` writes ``[]`` in the
        bulk job (no extra calls); ``unset`` removes the property, one ``PATCH`` per profile.
    :param removal_threshold: a run that would remove more than this share of the address book or of any
        segment stops before writing, unless the run is allowed to.
    :param allowed_flows: ids of Klaviyo flows triggered by the list that may fire.
    :param check_flows: read the list's flow triggers before adding contacts (needs ``flows:read``).
    :param state_uri: where the applied state lives (an Airflow object-storage URI).
    :param export_uri: where the Nosto segment export is read from; empty = the ``nosto`` connection's.
    :param segments_key: the key of the export's lines that holds the segment names.
    :param klaviyo_pool_slots: slots of the Airflow pool shared by every task calling this Klaviyo account;
        each task paces itself to the account's rate limits divided by this number.
    :param segment_lists: chosen segments that also get a Klaviyo list mirroring their members (``true`` =
        all chosen, or a list of their ids or names); see ``docs/lists-and-segments.md``.
    :param segment_list_prefix: the names of those lists: this prefix, then the Nosto segment's name.
    :param klaviyo_segments: chosen segments that get a Klaviyo segment "property contains the name"
        (``true`` = all chosen, or a list of ids or names); needs the ``segments:write`` scope.
    :param klaviyo_segment_prefix: the names of those Klaviyo segments: this prefix, then the Nosto name.
    """

    segments: tuple[str, ...] = ()
    list_name: str = "Nosto Customers"
    property_name: str = "nosto_segment"
    empty_value: str = "empty_list"
    removal_threshold: float = 0.10
    allowed_flows: tuple[str, ...] = ()
    check_flows: bool = True
    state_uri: str = ""
    export_uri: str = ""
    segments_key: str = "nosto_segments"
    klaviyo_pool_slots: int = 4
    segment_lists: bool | tuple[str, ...] = False
    segment_list_prefix: str = DEFAULT_LIST_PREFIX
    klaviyo_segments: bool | tuple[str, ...] = False
    klaviyo_segment_prefix: str = DEFAULT_SEGMENT_PREFIX

    @classmethod
    def from_mappings(cls, *layers: Mapping[str, Any] | None, source: str = "configuration") -> SyncConfig:
        """
        Merge configuration layers (later wins) and validate the result.

        :param layers: dictionaries such as the DAG file's defaults and the Airflow Variable's value.
        :param source: named in error messages so the user knows what to edit.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        merged: dict[str, Any] = {}
        for layer in layers:
            if layer is None:
                continue
            if not isinstance(layer, Mapping):
                raise KlaviyoConfigError(f"The {source} must be a JSON object, got {type(layer).__name__}.")
            unknown = sorted(set(layer) - known)
            if unknown:
                raise KlaviyoConfigError(
                    f"Unknown key(s) {', '.join(unknown)} in the {source}; allowed: {', '.join(sorted(known))}."
                )
            merged.update(layer)
        return cls._validated(merged, source)

    @classmethod
    def _validated(cls, values: dict[str, Any], source: str) -> SyncConfig:
        def fail(key: str, expected: str) -> KlaviyoConfigError:
            return KlaviyoConfigError(f"{key!r} in the {source} must be {expected}, got {values[key]!r}.")

        for key in ("segments", "allowed_flows"):
            if key in values:
                if not isinstance(values[key], list | tuple) or not all(
                    isinstance(item, str) and item.strip() for item in values[key]
                ):
                    raise fail(key, "a list of non-empty strings")
                values[key] = tuple(item.strip() for item in values[key])
        for key in ("list_name", "property_name", "segments_key"):
            if key in values and (not isinstance(values[key], str) or not values[key].strip()):
                raise fail(key, "a non-empty string")
            if key in values and values[key] != values[key].strip():
                # Klaviyo would keep the spaces: a list or property nobody can find by its visible name.
                raise fail(key, "a name without spaces at either end")
        for key in ("state_uri", "export_uri"):
            if key in values and not isinstance(values[key], str):
                raise fail(key, "a string")
        if "empty_value" in values and values["empty_value"] not in EMPTY_VALUE_MODES:
            raise fail("empty_value", " or ".join(repr(mode) for mode in EMPTY_VALUE_MODES))
        if "removal_threshold" in values:
            threshold = values["removal_threshold"]
            if (
                isinstance(threshold, bool)
                or not isinstance(threshold, int | float)
                or not 0 <= threshold <= 1
            ):
                raise fail("removal_threshold", "a number between 0 and 1 (0.1 = 10%)")
            values["removal_threshold"] = float(threshold)
        if "check_flows" in values and not isinstance(values["check_flows"], bool):
            raise fail("check_flows", "true or false")
        if "klaviyo_pool_slots" in values:
            slots = values["klaviyo_pool_slots"]
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                raise fail("klaviyo_pool_slots", "a whole number of at least 1")
        for key in ("segment_lists", "klaviyo_segments"):
            if key in values and not isinstance(values[key], bool):
                if not isinstance(values[key], list | tuple) or not all(
                    isinstance(item, str) and item.strip() for item in values[key]
                ):
                    raise fail(key, "true, false, or a list of chosen segment ids (or names)")
                values[key] = tuple(item.strip() for item in values[key])
        for key in ("segment_list_prefix", "klaviyo_segment_prefix"):
            if key in values and not isinstance(values[key], str):
                raise fail(key, "a string")
        return cls(**values)
