"""Per-segment lists and Klaviyo segments: selection, names, definitions, membership diffs and their files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_klaviyo_nosto.sync.model import EMPTY_RECORD, ContactChange, ContactRecord, Segment
from airflow_provider_klaviyo_nosto.sync.targets import (
    ListDiff,
    RememberedList,
    RememberedSegment,
    TargetState,
    contains_definition,
    deleted_entries,
    desired_members,
    dump_list_diff,
    dump_members,
    dump_targets,
    list_diff,
    load_list_diff,
    load_members,
    load_targets,
    select_segments,
    target_name,
)

VIP = Segment("101", "VIP")
KOMBAI = Segment("102", "Category affinity: Kombai")
CHOSEN = [VIP, KOMBAI]
SCHEMA = Path(__file__).resolve().parents[3] / "sandbox" / "klaviyo_openapi_trimmed.json"


def record(*ids: str) -> ContactRecord:
    names = {"101": "VIP", "102": "Category affinity: Kombai", "103": "Loyal"}
    return ContactRecord(True, tuple(sorted(ids)), tuple(sorted(names[i] for i in ids)))


@pytest.mark.parametrize(
    ("option", "expected"),
    [(True, CHOSEN), (False, []), ((), []), (("102",), [KOMBAI]), (("VIP", "101"), [VIP])],
    ids=["all", "none", "empty", "by-id", "name-and-id-once"],
)
def test_select_segments(option: bool | tuple[str, ...], expected: list[Segment]) -> None:
    assert select_segments(option, CHOSEN, "segment_lists") == expected


def test_select_segments_refuses_a_segment_that_is_not_chosen() -> None:
    with pytest.raises(ValueError, match=r"'segment_lists' names '999'.*not among the chosen 'segments'"):
        select_segments(("101", "999"), CHOSEN, "segment_lists")


def test_an_entry_naming_a_segment_deleted_in_nosto_is_skipped_and_reported() -> None:
    # Segment 103 'Loyal' was deleted in Nosto; the option still names it, by id and by its last name.
    deleted = {"103": "103", "Loyal": "103"}
    option = ("101", "103", "Loyal")

    assert select_segments(option, CHOSEN, "segment_lists", deleted=deleted) == [VIP]
    assert deleted_entries(option, CHOSEN, deleted) == {"103": "103", "Loyal": "103"}
    assert deleted_entries(True, CHOSEN, deleted) == {}


def test_a_chosen_segment_wins_over_a_deleted_one_of_the_same_name() -> None:
    deleted = {"103": "103", "VIP": "103"}

    assert select_segments(("VIP",), CHOSEN, "segment_lists", deleted=deleted) == [VIP]
    assert deleted_entries(("VIP",), CHOSEN, deleted) == {}


def test_target_name_is_the_prefix_then_the_nosto_name() -> None:
    assert target_name("Nosto: ", KOMBAI.name) == "Nosto: Category affinity: Kombai"


def test_contains_definition_is_valid_for_klaviyos_create_segment_schema() -> None:
    definition = contains_definition("nosto_segment", "Category affinity: Kombai")
    assert definition == {
        "condition_groups": [
            {
                "conditions": [
                    {
                        "type": "profile-property",
                        "property": "properties['nosto_segment']",
                        "filter": {
                            "type": "list",
                            "operator": "contains",
                            "value": "Category affinity: Kombai",
                        },
                    }
                ]
            }
        ]
    }
    document = json.loads(SCHEMA.read_text())
    schema = {"$ref": "#/components/schemas/SegmentCreateQuery", "components": document["components"]}
    body = {"data": {"type": "segment", "attributes": {"name": "Nosto: x", "definition": definition}}}
    jsonschema.validate(body, schema)


@pytest.mark.parametrize("name", ["it's", "a]b"])
def test_contains_definition_refuses_property_names_the_condition_cannot_spell(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in a Klaviyo segment condition"):
        contains_definition(name, "VIP")


def test_desired_members_apply_the_plan_to_the_applied_contacts() -> None:
    contacts = {
        "stays@x.com": record("101"),
        "leaves@x.com": record("101", "102"),
        "gone@x.com": record("102"),
    }
    changes = [
        ContactChange("leaves@x.com", record("101", "102"), record("102")),
        ContactChange("gone@x.com", record("102"), EMPTY_RECORD),
        ContactChange("new@x.com", EMPTY_RECORD, record("101", "103")),
    ]
    assert desired_members(contacts, changes, ["101", "102"]) == {
        "101": {"stays@x.com", "new@x.com"},
        "102": {"leaves@x.com"},
    }


def test_list_diff_against_remembered_members_or_reconciles_when_unknown() -> None:
    desired = {"a@x.com", "b@x.com"}
    assert list_diff("101", desired, {"b@x.com", "c@x.com"}) == ListDiff("101", ["a@x.com"], ["c@x.com"])
    assert list_diff("101", desired, desired).empty
    unknown = list_diff("101", desired, None)
    assert unknown == ListDiff("101", ["a@x.com", "b@x.com"], [], reconcile=True)
    assert not list_diff("101", set(), None).empty


def test_files_round_trip() -> None:
    state = TargetState(
        lists={"101": RememberedList("L1", "Nosto list: VIP")},
        segments={"102": RememberedSegment("S1", "Nosto: Kombai", "Kombai", "nosto_segment")},
    )
    assert load_targets(dump_targets(state)) == state
    diff = ListDiff("101", ["a@x.com"], ["b@x.com"], reconcile=False)
    assert load_list_diff(dump_list_diff(diff)) == diff
    assert dump_list_diff(diff) == dump_list_diff(diff)
    assert load_members(dump_members(["b@x.com", "a@x.com", "a@x.com"])) == {"a@x.com", "b@x.com"}


@pytest.mark.parametrize("data", [b"{", b'{"format": 2, "lists": {}, "segments": {}}', b'{"format": 1}'])
def test_corrupt_targets_file_is_named(data: bytes) -> None:
    with pytest.raises(ValueError, match="corrupt applied-state file targets.json"):
        load_targets(data)
