"""Optional per-segment Klaviyo lists and Klaviyo segments.

The sync task plans them (:func:`plan_targets`), finds them and checks their flows before anything is written
(:func:`find_targets`), then creates, renames or redefines them (:func:`apply_targets`). A segment list's
membership changes only once the push tasks have created the profiles, so :class:`KlaviyoSegmentListOperator`
applies them after the pushes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow.providers.common.compat.sdk import BaseOperator
from airflow.sdk import ObjectStoragePath

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, KlaviyoPermissionError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.state_store import StateStore
from airflow_provider_klaviyo_nosto.sync.model import Segment
from airflow_provider_klaviyo_nosto.sync.plan import SyncPlan
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState
from airflow_provider_klaviyo_nosto.sync.targets import (
    LIST_DIFF_PREFIX,
    MEMBERS_DIR,
    TARGETS_FILE,
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

if TYPE_CHECKING:
    from airflow.sdk import Context


class Logger(Protocol):
    """The part of a task's logger these helpers use."""

    def info(self, event: Any, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any: ...


class TargetFiles:
    """``targets.json``, the segment lists' diffs and their confirmed members, in the applied-state folder."""

    def __init__(self, state_uri: str) -> None:
        self.root = ObjectStoragePath(state_uri)

    def load(self) -> TargetState:
        path = self.root / TARGETS_FILE
        if not path.exists():
            return TargetState()
        return load_targets(path.read_bytes())

    def save(self, state: TargetState) -> None:
        self._write(self.root / TARGETS_FILE, dump_targets(state))

    def diff_path(self, generation: int, segment_id: str) -> ObjectStoragePath:
        return self.root / "diffs" / f"{generation:08d}" / f"{LIST_DIFF_PREFIX}{segment_id}.json.gz"

    def write_diff(self, generation: int, diff: ListDiff) -> None:
        self._write(self.diff_path(generation, diff.segment_id), dump_list_diff(diff))

    def read_diff(self, generation: int, segment_id: str) -> ListDiff | None:
        path = self.diff_path(generation, segment_id)
        return load_list_diff(path.read_bytes()) if path.exists() else None

    def delete_diff(self, generation: int, segment_id: str) -> None:
        self.diff_path(generation, segment_id).unlink(missing_ok=True)

    def members_path(self, segment_id: str) -> ObjectStoragePath:
        return self.root / MEMBERS_DIR / f"{segment_id}.json.gz"

    def read_members(self, segment_id: str) -> set[str] | None:
        path = self.members_path(segment_id)
        return load_members(path.read_bytes()) if path.exists() else None

    def write_members(self, segment_id: str, emails: set[str]) -> None:
        self._write(self.members_path(segment_id), dump_members(emails))

    def delete_members(self, segment_id: str) -> None:
        self.members_path(segment_id).unlink(missing_ok=True)

    @staticmethod
    def _write(target: ObjectStoragePath, data: bytes) -> None:
        # A temporary name then a rename, so that a reader never sees half a file.
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with temporary.open("wb") as stream:
            stream.write(data)
        temporary.rename(target)


@dataclass
class TargetPlan:
    """What this run does to the optional per-segment lists and Klaviyo segments."""

    remembered: TargetState
    lists: list[Segment]
    segments: list[Segment]
    desired: dict[str, set[str]]
    list_diffs: dict[str, ListDiff]
    dropped_lists: list[str] = field(default_factory=list)
    dropped_segments: list[str] = field(default_factory=list)

    def has_work(self, config: SyncConfig) -> bool:
        """Whether anything differs from what was last applied (so an unchanged export still runs)."""
        remembered = self.remembered
        return bool(
            self.dropped_lists
            or self.dropped_segments
            or any(not diff.empty for diff in self.list_diffs.values())
            or any(
                segment.id not in remembered.lists
                or remembered.lists[segment.id].name != target_name(config.segment_list_prefix, segment.name)
                for segment in self.lists
            )
            or any(
                _differs(remembered.segments.get(segment.id), _wanted_segment(config, segment, ""))
                for segment in self.segments
            )
        )


def _wanted_segment(config: SyncConfig, segment: Segment, klaviyo_id: str) -> RememberedSegment:
    return RememberedSegment(
        klaviyo_id,
        target_name(config.klaviyo_segment_prefix, segment.name),
        segment.name,
        config.property_name,
    )


def _redefines(remembered: RememberedSegment | None, config: SyncConfig, segment: Segment) -> bool:
    """Whether the run rewrites the definition of a Klaviyo segment it made (a Nosto rename, a property move).

    Its members stop matching until the push tasks write their new values, and then enter it again, which
    starts the flows the segment triggers as surely as new members do.
    """
    return remembered is not None and (remembered.value, remembered.property_name) != (
        segment.name,
        config.property_name,
    )


def _differs(remembered: RememberedSegment | None, wanted: RememberedSegment) -> bool:
    return remembered is None or (remembered.name, remembered.value, remembered.property_name) != (
        wanted.name,
        wanted.value,
        wanted.property_name,
    )


def plan_targets(
    log: Logger,
    files: TargetFiles,
    config: SyncConfig,
    chosen: Sequence[Segment],
    applied: AppliedState,
    plan: SyncPlan,
    *,
    dry_run: bool,
    reconcile_lists: bool = False,
    deleted: Mapping[str, SegmentState] | None = None,
) -> TargetPlan:
    """Decide which segment lists and Klaviyo segments this run keeps, and each list's membership diff.

    A list whose confirmed membership is unknown (never filled, or the previous run's update of it did not
    finish) is reconciled against what Klaviyo holds instead of diffed. A segment deleted in Nosto but still
    named in ``segment_lists`` or ``klaviyo_segments`` is skipped with a warning, as if taken out of them.

    :param reconcile_lists: compare every list with what Klaviyo holds (a full resync).
    :param deleted: the configured segments that were deleted in Nosto, by id, as last applied.
    """
    # A segment named in these options keeps being found under its last applied name after a rename.
    synced_names = {
        name: segment_id
        for segment_id, state in applied.segments.items()
        for name in (*state.former_names, state.name)
    }
    deleted = deleted or {}
    deleted_keys = {
        name: segment_id
        for segment_id, state in deleted.items()
        for name in (*state.former_names, state.name)
    } | {segment_id: segment_id for segment_id in deleted}
    try:
        lists = select_segments(config.segment_lists, chosen, "segment_lists", synced_names, deleted_keys)
        segments = select_segments(
            config.klaviyo_segments, chosen, "klaviyo_segments", synced_names, deleted_keys
        )
        if segments:
            contains_definition(config.property_name, "")
    except ValueError as err:
        raise KlaviyoConfigError(f"In the sync configuration: {err}.") from None
    for key, option, target in (
        ("segment_lists", config.segment_lists, "Klaviyo list"),
        ("klaviyo_segments", config.klaviyo_segments, "Klaviyo segment"),
    ):
        for entry, segment_id in deleted_entries(option, chosen, deleted_keys, synced_names).items():
            log.warning(
                "Segment %r (%s) was deleted in Nosto but is still named in %r: it is skipped, and its %s is "
                "left as it is and no longer updated. Remove %r from %r in the sync configuration.",
                deleted[segment_id].name,
                segment_id,
                key,
                target,
                entry,
                key,
            )
    try:
        _refuse_colliding_names(config, lists, segments)
    except KlaviyoConfigError as err:
        if not dry_run:
            raise
        log.warning("A real run would stop: %s", err)
        # What the real run refuses is neither planned nor looked up, so nothing reads as if it would happen.
        return TargetPlan(remembered=files.load(), lists=[], segments=[], desired={}, list_diffs={})

    remembered = files.load()
    changes = [change for key_changes in plan.changes_by_key.values() for change in key_changes]
    desired = desired_members(applied.contacts, changes, [segment.id for segment in lists])
    diffs: dict[str, ListDiff] = {}
    for segment in lists:
        unfinished = files.diff_path(applied.generation, segment.id).exists()
        known = segment.id in remembered.lists and not unfinished and not reconcile_lists
        members = files.read_members(segment.id) if known else None
        diffs[segment.id] = list_diff(segment.id, desired[segment.id], members)

    targets = TargetPlan(
        remembered=remembered,
        lists=lists,
        segments=segments,
        desired=desired,
        list_diffs=diffs,
        dropped_lists=sorted(set(remembered.lists) - {segment.id for segment in lists}),
        dropped_segments=sorted(set(remembered.segments) - {segment.id for segment in segments}),
    )
    verb = "would" if dry_run else "will"
    for segment in lists:
        diff = diffs[segment.id]
        name = target_name(config.segment_list_prefix, segment.name)
        if diff.reconcile:
            log.info(
                "Segment list %r: %s be made to hold exactly the segment's %d members.",
                name,
                verb,
                len(diff.add),
            )
        else:
            log.info("Segment list %r: %s add %d and remove %d.", name, verb, len(diff.add), len(diff.remove))
    for segment in segments:
        wanted = _wanted_segment(config, segment, "")
        previous = remembered.segments.get(segment.id)
        if previous is None:
            log.info("Klaviyo segment %r: %s be found by name or created.", wanted.name, verb)
        elif _differs(previous, wanted):
            log.info(
                "Klaviyo segment %s: %s be renamed %r, %s contains %r.",
                previous.id,
                verb,
                wanted.name,
                config.property_name,
                segment.name,
            )
    return targets


def _refuse_colliding_names(
    config: SyncConfig, lists: Sequence[Segment], segments: Sequence[Segment]
) -> None:
    """Stop when a segment list would be named like the address book, or two targets of a kind share a name.

    A list found by name is made to hold exactly its segment's members, so a shared name would empty the
    address book of everyone outside the segment, or make two segments fight over one list. Two Klaviyo
    segments with one name would both be created, and the next run could not tell which one is whose.
    """
    list_names = _ids_by_target_name(config.segment_list_prefix, lists)
    if config.list_name in list_names:
        raise KlaviyoConfigError(
            f"The segment list of segment {', '.join(list_names[config.list_name])} would be named "
            f"{config.list_name!r}, the name of the address book list ('list_name'); it would remove everyone "
            "outside the segment from the address book. Choose another 'segment_list_prefix' (or list_name)."
        )
    for kind, key, by_name in (
        ("segment lists", "segment_lists", list_names),
        (
            "Klaviyo segments",
            "klaviyo_segments",
            _ids_by_target_name(config.klaviyo_segment_prefix, segments),
        ),
    ):
        shared = {name: ids for name, ids in by_name.items() if len(ids) > 1}
        if shared:
            described = "; ".join(
                f"{name!r} for segments {', '.join(ids)}" for name, ids in sorted(shared.items())
            )
            raise KlaviyoConfigError(
                f"Several {kind} would have one name ({described}): Nosto has segments with the same name. "
                f"Rename them in Nosto, or keep only one of them in {key!r}."
            )


def _ids_by_target_name(prefix: str, segments: Sequence[Segment]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for segment in segments:
        by_name.setdefault(target_name(prefix, segment.name), []).append(segment.id)
    return by_name


@dataclass
class FoundTargets:
    """The lists and Klaviyo segments :func:`find_targets` found in Klaviyo, by Nosto segment id.

    :param state: what ``targets.json`` remembers, without the Klaviyo segments that no longer exist.
    :param diffs: each list's membership diff; a list that is new or found by name is reconciled.
    :param list_ids: the existing list of each segment, ``None`` when it is to be created.
    :param segment_ids: the existing Klaviyo segment of each segment, ``None`` when it is to be created.
    """

    state: TargetState
    diffs: dict[str, ListDiff]
    list_ids: dict[str, str | None]
    segment_ids: dict[str, str | None]


def find_targets(
    log: Logger,
    klaviyo: KlaviyoHook,
    config: SyncConfig,
    targets: TargetPlan,
    plan: SyncPlan,
    flows: FlowGuard,
) -> FoundTargets:
    """Find the lists and Klaviyo segments that exist, and have ``flows`` read what adding to them triggers.

    Reads only, so a dry run uses it to say what would stop the real run. A remembered id wins over a name
    look-up: Klaviyo keeps neither list nor segment names unique.
    """
    state = TargetState(dict(targets.remembered.lists), dict(targets.remembered.segments))
    diffs = dict(targets.list_diffs)

    list_ids: dict[str, str | None] = {}
    for segment in targets.lists:
        name = target_name(config.segment_list_prefix, segment.name)
        entry = state.lists.get(segment.id)
        list_id = entry.id if entry and klaviyo.get_list(entry.id) is not None else None
        if entry and list_id is None:
            log.warning(
                "The Klaviyo list %s (%r) of segment %r no longer exists; it is created again and filled.",
                entry.id,
                entry.name,
                segment.name,
            )
        if list_id is None:
            found = klaviyo.find_lists_by_name(name)
            if len(found) > 1:
                raise KlaviyoConfigError(
                    f"{len(found)} Klaviyo lists are named {name!r} (ids {', '.join(found)}): delete or rename all "
                    f"but one of them, so that the sync knows which one is the list of segment {segment.name!r}."
                )
            list_id = found[0] if found else None
            if list_id:
                log.warning(
                    "Using the existing Klaviyo list %r (%s) for segment %r: its members are made to match the "
                    "segment's, and profiles not in the segment are removed from it.",
                    name,
                    list_id,
                    segment.name,
                )
        if list_id is None or state.lists.get(segment.id, RememberedList("", "")).id != list_id:
            diffs[segment.id] = list_diff(segment.id, targets.desired[segment.id], None)
        list_ids[segment.id] = list_id

    segment_ids: dict[str, str | None] = {}
    for segment in targets.segments:
        segment_ids[segment.id] = _existing_segment(log, klaviyo, config, state, segment)

    for segment in targets.lists:
        list_id = list_ids[segment.id]
        if list_id and diffs[segment.id].add:
            flows.check_list(list_id, f"the list {target_name(config.segment_list_prefix, segment.name)!r}")
    for segment in targets.segments:
        klaviyo_id = segment_ids[segment.id]
        segment_diff = plan.segment_diffs.get(segment.id)
        joining = segment_diff is not None and segment_diff.joined
        if klaviyo_id and (joining or _redefines(state.segments.get(segment.id), config, segment)):
            name = target_name(config.klaviyo_segment_prefix, segment.name)
            flows.check_segment(klaviyo_id, f"the Klaviyo segment {name!r}")
    return FoundTargets(state, diffs, list_ids, segment_ids)


def apply_targets(
    log: Logger,
    klaviyo: KlaviyoHook,
    files: TargetFiles,
    config: SyncConfig,
    targets: TargetPlan,
    plan: SyncPlan,
    found: FoundTargets,
) -> None:
    """Create what :func:`find_targets` did not find, rename and redefine the rest, and record them and the
    list diffs.

    Called only once every flow check has passed. A look-up by name came before a create: neither create is
    idempotent, so a retried task never makes a second one.
    """
    state, diffs, list_ids, segment_ids = found.state, found.diffs, found.list_ids, found.segment_ids

    for segment in targets.lists:
        name = target_name(config.segment_list_prefix, segment.name)
        list_id = list_ids[segment.id]
        if list_id is None:
            list_id = klaviyo.create_list(name)
            log.info("Created the Klaviyo list %r (%s) for segment %r.", name, list_id, segment.name)
        elif segment.id in state.lists and state.lists[segment.id].name != name:
            klaviyo.rename_list(list_id, name)
            log.info(
                "Renamed the Klaviyo list %s from %r to %r (the Nosto segment's name or the prefix changed).",
                list_id,
                state.lists[segment.id].name,
                name,
            )
        state.lists[segment.id] = RememberedList(list_id, name)

    try:
        for segment in targets.segments:
            _ensure_segment(log, klaviyo, config, state, segment, segment_ids[segment.id])
    except KlaviyoPermissionError as err:
        raise KlaviyoConfigError(
            "The Klaviyo key cannot create or update segments (it needs the scope 'segments:write', and "
            "'segments:read' to find them). Add the scopes to the private key, or set klaviyo_segments=false "
            "in the sync configuration."
        ) from err

    for segment_id in targets.dropped_lists:
        entry = state.lists.pop(segment_id)
        files.delete_members(segment_id)
        log.warning(
            "Segment %s no longer has a segment list in the configuration; the Klaviyo list %r (%s) is left as "
            "it is and no longer updated. Delete it in Klaviyo if it is not needed.",
            segment_id,
            entry.name,
            entry.id,
        )
    for segment_id in targets.dropped_segments:
        gone = state.segments.pop(segment_id)
        log.warning(
            "Segment %s no longer has a Klaviyo segment in the configuration; the Klaviyo segment %r (%s) is "
            "left as it is. Delete it in Klaviyo if it is not needed.",
            segment_id,
            gone.name,
            gone.id,
        )

    for diff in diffs.values():
        if not diff.empty:
            files.write_diff(plan.generation, diff)
    files.save(state)


def _existing_segment(
    log: Logger, klaviyo: KlaviyoHook, config: SyncConfig, state: TargetState, segment: Segment
) -> str | None:
    """The id of the Klaviyo segment to keep for a Nosto segment: the remembered one, else one found by name."""
    entry = state.segments.get(segment.id)
    try:
        if entry is not None:
            if klaviyo.get_segment(entry.id) is not None:
                return entry.id
            log.warning(
                "The Klaviyo segment %s (%r) no longer exists; it is created again.", entry.id, entry.name
            )
            del state.segments[segment.id]
        name = target_name(config.klaviyo_segment_prefix, segment.name)
        found = klaviyo.find_segment_by_name(name)
        resource = klaviyo.get_segment(found) if found else None
    except KlaviyoPermissionError as err:
        raise KlaviyoConfigError(
            "The Klaviyo key cannot read segments (it needs the scopes 'segments:read' and 'segments:write'). "
            "Add them to the private key, or set klaviyo_segments=false in the sync configuration."
        ) from err
    if not found:
        return None
    definition = ((resource or {}).get("attributes") or {}).get("definition")
    if definition == contains_definition(config.property_name, segment.name):
        log.info(
            "Using the existing Klaviyo segment %r (%s) for Nosto segment %r.", name, found, segment.name
        )
    else:
        log.warning(
            "Using the existing Klaviyo segment %r (%s) for Nosto segment %r, but its definition differs from "
            "the sync's (%s contains %r) and is left as it is, so it may select other profiles. Change its "
            "definition in Klaviyo, or delete it and the next run creates it.",
            name,
            found,
            segment.name,
            config.property_name,
            segment.name,
        )
    return found


def _ensure_segment(
    log: Logger,
    klaviyo: KlaviyoHook,
    config: SyncConfig,
    state: TargetState,
    segment: Segment,
    klaviyo_id: str | None,
) -> None:
    wanted = _wanted_segment(config, segment, klaviyo_id or "")
    definition = contains_definition(config.property_name, segment.name)
    if klaviyo_id is None:
        klaviyo_id = klaviyo.create_segment(wanted.name, definition)
        log.info(
            "Created the Klaviyo segment %r (%s): %s contains %r.",
            wanted.name,
            klaviyo_id,
            config.property_name,
            segment.name,
        )
    elif segment.id in state.segments and _differs(state.segments[segment.id], wanted):
        # Only a definition this sync wrote is rewritten, when the Nosto name or the property changed.
        klaviyo.update_segment(klaviyo_id, wanted.name, definition)
        log.info(
            "Updated the Klaviyo segment %s to %r: %s contains %r.",
            klaviyo_id,
            wanted.name,
            config.property_name,
            segment.name,
        )
    state.segments[segment.id] = RememberedSegment(
        klaviyo_id, wanted.name, wanted.value, wanted.property_name
    )


def firing_flow_names(flows: Sequence[Mapping[str, Any]], config: SyncConfig) -> str:
    """Name the flows that would send: a draft flow sends nothing, and ``allowed_flows`` are let through.

    Returns ``"'Name' (id X), ..."``, or ``""`` when none would fire.
    """
    firing = [
        flow
        for flow in flows
        if flow.get("status") != "draft" and str(flow.get("id")) not in config.allowed_flows
    ]
    return ", ".join(f"{flow.get('name')!r} (id {flow.get('id')})" for flow in firing)


class FlowGuard:
    """
    Reads the flow triggers of every list and Klaviyo segment a run adds profiles to, and stops the run once,
    before anything is written, with one error naming every flow that would fire, so that one round of edits
    in Klaviyo or in ``allowed_flows`` settles them all.

    A key that cannot read flow triggers stops the run at once: the fix is the same for every target.
    """

    def __init__(self, klaviyo: KlaviyoHook, config: SyncConfig, log: Logger) -> None:
        self._klaviyo = klaviyo
        self._config = config
        self._log = log
        self._firing: list[str] = []
        self._warned = False

    def check_list(self, list_id: str, label: str) -> None:
        """Read what adding profiles to the list would trigger; ``label`` names the list in the error."""
        flows = self._read(
            self._klaviyo.get_list_flow_triggers,
            list_id,
            "The Klaviyo key cannot read the flows triggered by the list (it needs the scope 'flows:read'). "
            "Add 'flows:read' to the private key",
        )
        self._note(f"adding profiles to {label} ({list_id})", flows)

    def check_segment(self, segment_id: str, label: str) -> None:
        """Read what profiles entering the Klaviyo segment would trigger."""
        flows = self._read(
            self._klaviyo.get_segment_flow_triggers,
            segment_id,
            "The Klaviyo key cannot read the flows triggered by the segment (it needs the scopes 'flows:read' "
            "and 'segments:read'). Add them to the private key",
        )
        self._note(f"profiles entering {label} ({segment_id})", flows)

    def _read(
        self, read: Callable[[str], Sequence[Mapping[str, Any]]], target_id: str, unreadable: str
    ) -> Sequence[Mapping[str, Any]]:
        if self._switched_off():
            return []
        try:
            return read(target_id)
        except KlaviyoPermissionError as err:
            raise KlaviyoConfigError(
                f"{unreadable}, or set check_flows=false in the sync configuration to switch the check off "
                "explicitly."
            ) from err

    @contextlib.contextmanager
    def stopping_if_firing(self) -> Iterator[None]:
        """Run the checks in the block, then stop the run if any flow read would fire.

        Another error that stops the block (two lists with one name, say) also names the flows read before it,
        so that fixing what the error says does not lead to a second stop for a flow already known.
        """
        try:
            yield
        except KlaviyoConfigError as err:
            if self._firing:
                raise KlaviyoConfigError(f"{err} Also: {self._stop_message()}") from err
            raise
        if self._firing:
            raise KlaviyoConfigError(self._stop_message())

    def _stop_message(self) -> str:
        return (
            "Stopped before writing: "
            + "; ".join(self._firing)
            + ". These flows may send emails. Turn them off in Klaviyo, or allow them by adding their ids to "
            "'allowed_flows' in the sync configuration."
        )

    def _note(self, action: str, flows: Sequence[Mapping[str, Any]]) -> None:
        names = firing_flow_names(flows, self._config)
        if names:
            self._firing.append(f"{action} would trigger the Klaviyo flow(s) {names}")

    def _switched_off(self) -> bool:
        if self._config.check_flows:
            return False
        if not self._warned:
            self._log.warning("The flow-trigger check is switched off (check_flows=false).")
            self._warned = True
        return True


class KlaviyoSegmentListOperator(BaseOperator):
    """
    Make each per-segment Klaviyo list hold exactly its Nosto segment's members (``segment_lists`` option).

    Runs after the push tasks, which create the profiles of new contacts. Reads the list diffs the sync task
    wrote for its generation, looks the profiles up by email (100 per call), and adds and removes them by
    profile id (1,000 per call); a list whose membership is unknown is compared with what Klaviyo holds, and
    every other profile is removed from it. Contacts without a Klaviyo profile (rejected by the import) are
    left out and tried again on the next run. Re-running is safe: adding a member twice or removing a
    non-member changes nothing.

    :param plan: the sync task's XCom (its list of push specs, usually ``plan.output``), for the generation
        and the state location.
    :param klaviyo_conn_id: the ``klaviyo`` connection.
    """

    template_fields: Sequence[str] = ("plan",)
    ui_color = "#f1e8fd"

    def __init__(
        self,
        *,
        plan: Any,
        klaviyo_conn_id: str = KlaviyoHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.klaviyo_conn_id = klaviyo_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        specs = list(self.plan or [])
        if not specs:
            self.log.info("Nothing was planned: no segment list to update.")
            return {}
        spec = specs[0]
        if spec["dry_run"]:
            self.log.info(
                "Dry run: no segment list was changed; plan_sync's log says what a real run would change."
            )
            return {}
        generation, state_uri = int(spec["generation"]), str(spec["state_uri"])
        store = StateStore(state_uri)
        current = store.load_meta().generation
        if generation < current:
            self.log.info("Nothing to do: generation %d was superseded by %d.", generation, current)
            return {}

        files = TargetFiles(state_uri)
        pending = {
            segment_id: (entry, diff)
            for segment_id, entry in sorted(files.load().lists.items())
            if (diff := files.read_diff(generation, segment_id)) is not None
        }
        if not pending:
            self.log.info("No segment list changes in generation %d.", generation)
            return {}
        hook = KlaviyoHook(klaviyo_conn_id=self.klaviyo_conn_id, concurrency=int(spec["pool_slots"]))
        _, aliases = store.read_email_aliases()
        summaries = {}
        for segment_id, (entry, diff) in pending.items():
            started = time.monotonic()
            summaries[segment_id] = self.apply_list(hook, files, entry, diff, aliases)
            files.delete_diff(generation, segment_id)
            summaries[segment_id]["seconds"] = round(time.monotonic() - started, 1)
        return {"generation": generation, "lists": summaries, "calls": hook.calls_made}

    def apply_list(
        self,
        hook: KlaviyoHook,
        files: TargetFiles,
        entry: RememberedList,
        diff: ListDiff,
        aliases: Mapping[str, str],
    ) -> dict[str, Any]:
        """Apply one list's diff and record the members Klaviyo now holds."""
        found = _profile_ids(hook, diff.add, aliases)
        if diff.reconcile:
            current = set(hook.iter_list_profile_ids(entry.id))
            to_add = [profile_id for profile_id in found.values() if profile_id not in current]
            to_remove = sorted(current - set(found.values()))
            members = set(found)
        else:
            to_add = list(found.values())
            to_remove = sorted(_profile_ids(hook, diff.remove, aliases).values())
            members = ((files.read_members(diff.segment_id) or set()) - set(diff.remove)) | set(found)
        hook.remove_profiles_from_list(entry.id, to_remove)
        hook.add_profiles_to_list(entry.id, to_add)
        files.write_members(diff.segment_id, members)

        missing = len(diff.add) - len(found)
        self.log.info(
            "Segment list %r (%s): added %d, removed %d; it now holds %d members%s.",
            entry.name,
            entry.id,
            len(to_add),
            len(to_remove),
            len(members),
            f"; {missing} contacts have no Klaviyo profile yet and are tried again next run"
            if missing
            else "",
        )
        return {
            "list_id": entry.id,
            "list_name": entry.name,
            "added": len(to_add),
            "removed": len(to_remove),
            "members": len(members),
            "without_profile": missing,
            "reconciled": diff.reconcile,
        }


def _profile_ids(hook: KlaviyoHook, emails: Sequence[str], aliases: Mapping[str, str]) -> dict[str, str]:
    """``{normalised email: profile id}``, looking up profiles stored with other letter case by that spelling."""
    spelled = {aliases.get(email, email): email for email in emails}
    return {
        spelled[stored]: profile_id for stored, profile_id in hook.get_profile_ids_by_email(spelled).items()
    }
