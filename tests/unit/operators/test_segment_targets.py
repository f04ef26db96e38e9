"""Finding, creating and checking the per-segment lists and Klaviyo segments, against a mocked hook."""

from __future__ import annotations

import logging
from pathlib import Path
from unittest import mock

import pytest

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.operators.segment_targets import (
    FlowGuard,
    TargetFiles,
    TargetPlan,
    apply_targets,
    find_targets,
)
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, Segment
from airflow_provider_klaviyo_nosto.sync.plan import SegmentDiff, SyncPlan
from airflow_provider_klaviyo_nosto.sync.targets import (
    ListDiff,
    RememberedList,
    RememberedSegment,
    TargetState,
    contains_definition,
)

VIP = Segment("101", "VIP")
LOG = logging.getLogger("test")


def plan(joined: int = 0) -> SyncPlan:
    return SyncPlan(
        generation=3,
        changes_by_key={},
        segment_diffs={VIP.id: SegmentDiff(VIP.id, VIP.name, joined=joined)},
        address_book=SegmentDiff(ADDRESS_BOOK_KEY, ADDRESS_BOOK_KEY),
        unchanged=False,
        warnings=[],
    )


def targets(remembered: TargetState, *, lists: bool = True, segments: bool = False) -> TargetPlan:
    return TargetPlan(
        remembered=remembered,
        lists=[VIP] if lists else [],
        segments=[VIP] if segments else [],
        desired={VIP.id: {"a@x.com"}} if lists else {},
        list_diffs={VIP.id: ListDiff(VIP.id, ["a@x.com"], [])} if lists else {},
    )


@pytest.fixture
def hook() -> mock.Mock:
    klaviyo = mock.create_autospec(KlaviyoHook, instance=True)
    klaviyo.get_list.return_value = {"id": "L1"}
    klaviyo.find_lists_by_name.return_value = []
    klaviyo.create_list.return_value = "NEW"
    klaviyo.get_segment.return_value = {"id": "S1"}
    klaviyo.find_segment_by_name.return_value = None
    klaviyo.get_list_flow_triggers.return_value = []
    klaviyo.get_segment_flow_triggers.return_value = []
    return klaviyo


def guard(hook: mock.Mock, config: SyncConfig | None = None) -> FlowGuard:
    return FlowGuard(hook, config or SyncConfig(), LOG)


def find_and_apply(
    hook: mock.Mock,
    files: TargetFiles,
    wanted: TargetPlan,
    planned: SyncPlan,
    flows: FlowGuard | None = None,
    config: SyncConfig | None = None,
) -> None:
    """What the sync task does: find the targets and check their flows, then create and record them."""
    config = config or SyncConfig()
    flows = flows or guard(hook, config)
    with flows.stopping_if_firing():
        found = find_targets(LOG, hook, config, wanted, planned, flows)
    apply_targets(LOG, hook, files, config, wanted, planned, found)


def test_a_remembered_list_is_used_without_a_name_look_up_or_a_create(
    hook: mock.Mock, tmp_path: Path
) -> None:
    files = TargetFiles(f"file://{tmp_path}")
    remembered = TargetState(lists={VIP.id: RememberedList("L1", "Nosto list: VIP")})

    find_and_apply(hook, files, targets(remembered), plan(), guard(hook))

    hook.find_lists_by_name.assert_not_called()
    hook.create_list.assert_not_called()
    hook.get_list_flow_triggers.assert_called_once_with("L1")
    assert files.load().lists == {VIP.id: RememberedList("L1", "Nosto list: VIP")}
    assert files.read_diff(3, VIP.id) == ListDiff(VIP.id, ["a@x.com"], [])


def test_two_lists_with_the_name_stop_the_run_naming_both(hook: mock.Mock, tmp_path: Path) -> None:
    hook.find_lists_by_name.return_value = ["L1", "L2"]

    with pytest.raises(KlaviyoError, match=r"2 Klaviyo lists are named 'Nosto list: VIP' \(ids L1, L2\)"):
        find_and_apply(
            hook,
            TargetFiles(f"file://{tmp_path}"),
            targets(TargetState()),
            plan(),
            guard(hook),
        )
    hook.create_list.assert_not_called()


def test_a_flow_on_the_klaviyo_segment_stops_before_any_create(hook: mock.Mock, tmp_path: Path) -> None:
    remembered = TargetState(segments={VIP.id: RememberedSegment("S1", "Nosto: vip", "vip", "nosto_segment")})
    hook.get_segment_flow_triggers.return_value = [{"id": "F9", "name": "VIP welcome", "status": "live"}]
    files = TargetFiles(f"file://{tmp_path}")

    with pytest.raises(KlaviyoError, match=r"'VIP welcome' \(id F9\)"):
        find_and_apply(hook, files, targets(remembered, segments=True), plan(joined=1), guard(hook))
    hook.create_list.assert_not_called()
    hook.update_segment.assert_not_called()
    assert files.load() == TargetState()


def test_every_flow_that_would_fire_is_named_in_one_error_before_anything_is_written(
    hook: mock.Mock, tmp_path: Path
) -> None:
    remembered = TargetState(
        lists={VIP.id: RememberedList("L1", "Nosto list: VIP")},
        segments={VIP.id: RememberedSegment("S1", "Nosto: VIP", "VIP", "nosto_segment")},
    )
    hook.get_list_flow_triggers.side_effect = lambda list_id: {
        "BOOK": [{"id": "F1", "name": "Welcome", "status": "live"}],
        "L1": [
            {"id": "F2", "name": "VIP list welcome", "status": "manual"},
            {"id": "F3", "name": "Allowed one", "status": "live"},
            {"id": "F4", "name": "Draft", "status": "draft"},
        ],
    }[list_id]
    hook.get_segment_flow_triggers.return_value = [
        {"id": "F5", "name": "VIP segment welcome", "status": "live"}
    ]
    files = TargetFiles(f"file://{tmp_path}")
    flows = guard(hook, SyncConfig(allowed_flows=("F3",)))
    flows.check_list("BOOK", "the address-book list")

    with pytest.raises(KlaviyoError) as stopped:
        find_and_apply(hook, files, targets(remembered, segments=True), plan(joined=1), flows)

    assert str(stopped.value) == (
        "Stopped before writing: adding profiles to the address-book list (BOOK) would trigger the Klaviyo "
        "flow(s) 'Welcome' (id F1); adding profiles to the list 'Nosto list: VIP' (L1) would trigger the Klaviyo "
        "flow(s) 'VIP list welcome' (id F2); profiles entering the Klaviyo segment 'Nosto: VIP' (S1) would "
        "trigger the Klaviyo flow(s) 'VIP segment welcome' (id F5). These flows may send emails. Turn them off "
        "in Klaviyo, or allow them by adding their ids to 'allowed_flows' in the sync configuration."
    )
    hook.create_list.assert_not_called()
    hook.update_segment.assert_not_called()
    assert files.load() == TargetState()


def test_with_the_check_switched_off_no_flow_is_read_and_one_warning_says_so(
    hook: mock.Mock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remembered = TargetState(lists={VIP.id: RememberedList("L1", "Nosto list: VIP")})
    flows = guard(hook, SyncConfig(check_flows=False))
    flows.check_list("BOOK", "the address-book list")

    find_and_apply(hook, TargetFiles(f"file://{tmp_path}"), targets(remembered), plan(), flows)

    hook.get_list_flow_triggers.assert_not_called()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["The flow-trigger check is switched off (check_flows=false)."]


def test_a_renamed_nosto_segment_updates_the_klaviyo_segment_it_made(hook: mock.Mock, tmp_path: Path) -> None:
    remembered = TargetState(segments={VIP.id: RememberedSegment("S1", "Nosto: vip", "vip", "nosto_segment")})
    files = TargetFiles(f"file://{tmp_path}")

    find_and_apply(hook, files, targets(remembered, lists=False, segments=True), plan(), guard(hook))

    hook.update_segment.assert_called_once_with(
        "S1", "Nosto: VIP", contains_definition("nosto_segment", "VIP")
    )
    hook.create_segment.assert_not_called()
    assert files.load().segments[VIP.id] == RememberedSegment("S1", "Nosto: VIP", "VIP", "nosto_segment")


@pytest.mark.parametrize(
    ("definition", "level"),
    [
        (contains_definition("nosto_segment", "VIP"), logging.INFO),
        (contains_definition("tier", "gold"), logging.WARNING),
    ],
    ids=["same-definition", "other-definition"],
)
def test_a_klaviyo_segment_found_by_name_is_adopted_as_it_is_with_a_warning_when_it_differs(
    hook: mock.Mock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    definition: dict[str, object],
    level: int,
) -> None:
    hook.find_segment_by_name.return_value = "S7"
    hook.get_segment.return_value = {
        "id": "S7",
        "attributes": {"name": "Nosto: VIP", "definition": definition},
    }
    files = TargetFiles(f"file://{tmp_path}")
    caplog.set_level(logging.INFO, logger=LOG.name)

    find_and_apply(
        hook,
        files,
        targets(TargetState(), lists=False, segments=True),
        plan(),
        guard(hook),
    )

    hook.create_segment.assert_not_called()
    hook.update_segment.assert_not_called()
    assert files.load().segments[VIP.id].id == "S7"
    (record,) = [r for r in caplog.records if "'Nosto: VIP' (S7)" in r.getMessage()]
    assert record.levelno == level
    if level == logging.WARNING:
        assert "its definition differs" in record.getMessage()
        assert "left as it is" in record.getMessage()
