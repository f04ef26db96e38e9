"""Plan a Nosto to Klaviyo segment sync: read the export and the catalogue, diff against the applied state."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.common.compat.sdk import BaseOperator, Variable, conf

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook
from airflow_provider_klaviyo_nosto.operators.segment_targets import (
    FlowGuard,
    FoundTargets,
    TargetFiles,
    TargetPlan,
    apply_targets,
    find_targets,
    plan_targets,
)
from airflow_provider_klaviyo_nosto.state_store import (
    StateStore,
    default_state_uri,
    refuse_local_state_on_distributed_executor,
    refuse_relative_local_state,
    refuse_unsupported_storage,
)
from airflow_provider_klaviyo_nosto.sync.emails import InvalidEmail, normalise_email
from airflow_provider_klaviyo_nosto.sync.export import (
    ExportSnapshot,
    open_export_stream,
    read_export,
    require_contacts,
)
from airflow_provider_klaviyo_nosto.sync.masking import mask_email
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, Segment
from airflow_provider_klaviyo_nosto.sync.plan import SegmentDiff, SyncPlan, check_removal_threshold, plan_sync
from airflow_provider_klaviyo_nosto.sync.report import ChangeCounts, change_report
from airflow_provider_klaviyo_nosto.sync.resync import any_not_written, mark_not_written, observed_state
from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState

if TYPE_CHECKING:
    from airflow.sdk import Context


class PushSpec(TypedDict):
    """
    What one push task is handed through XCom: counts and where its diff is stored, never an email.

    ``key`` is the segment id, or ``address-book`` for contacts whose only change is address-book membership.
    """

    key: str
    segment_id: str | None
    segment_name: str
    generation: int
    state_uri: str
    list_id: str | None
    property_name: str
    empty_value: str
    pool_slots: int
    dry_run: bool
    contacts_to_write: int
    joined: int
    left: int
    updated: int
    members_after: int
    clear_properties: list[str]


@dataclasses.dataclass(frozen=True)
class Migration:
    """What a run told to migrate moves: the list's old name and the property's old name, if changed."""

    old_list_name: str | None = None
    old_property: str | None = None

    @property
    def needed(self) -> bool:
        return bool(self.old_list_name or self.old_property)


class NostoSegmentSyncOperator(BaseOperator):
    """
    Compute what changed between the Nosto segment export and what was last applied to Klaviyo.

    Reads the segment catalogue (to resolve the chosen segments' current names) and the export, computes each
    chosen segment's membership diff and the address book's, and every changed contact's whole new value
    once. Each changed contact is given to exactly one push task; the diffs are written next to the applied
    state and the returned list (one entry per push task, pushed to XCom) holds only counts and references.

    The configuration is the DAG file's ``defaults`` overlaid with the JSON Airflow Variable
    ``config_variable``, which admins edit in the Airflow UI (see :class:`~airflow_provider_klaviyo_nosto.config.SyncConfig`).

    :param config_variable: name of the Airflow Variable holding the sync configuration (JSON); empty = none.
    :param defaults: configuration defaults, usually written in the DAG file.
    :param segment_ids: narrows this run to some of the chosen segments (ids or names); empty = all. A narrowed
        run never un-chooses a segment: the others keep exactly what was applied.
    :param dry_run: compute and report every change, write nothing to Klaviyo or to the applied state.
    :param allow_removals: let this run remove more than the configured share of a segment or the address book.
    :param full_resync: compare with what Klaviyo holds (the address-book list's members and their property
        values) instead of the applied state, and repair every difference; a deleted list is created again.
    :param migrate: when the configured list name or property name differs from the applied state's, rename
        the list in Klaviyo and move every contact's value to the new property (see ``docs/lifecycle.md``).
    :param klaviyo_conn_id: the ``klaviyo`` connection.
    :param nosto_conn_id: the ``nosto`` connection.
    """

    template_fields: Sequence[str] = (
        "segment_ids",
        "dry_run_requested",
        "allow_removals",
        "full_resync",
        "migrate",
    )
    ui_color = "#e8f2fd"

    def __init__(
        self,
        *,
        config_variable: str = "nosto_klaviyo_segment_sync",
        defaults: Mapping[str, Any] | None = None,
        segment_ids: Collection[str] | str | None = None,
        dry_run: bool | str = False,
        allow_removals: bool | str = False,
        full_resync: bool | str = False,
        migrate: bool | str = False,
        klaviyo_conn_id: str = KlaviyoHook.default_conn_name,
        nosto_conn_id: str = NostoHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config_variable = config_variable
        self.defaults = dict(defaults or {})
        self.segment_ids = segment_ids
        # Not self.dry_run: BaseOperator has a method of that name.
        self.dry_run_requested = dry_run
        self.allow_removals = allow_removals
        self.full_resync = full_resync
        self.migrate = migrate
        self.klaviyo_conn_id = klaviyo_conn_id
        self.nosto_conn_id = nosto_conn_id

    # -- the steps -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[PushSpec]:
        started = time.monotonic()
        config = self.load_config()
        dry_run = _as_bool(self.dry_run_requested, "dry_run")
        allow_removals = _as_bool(self.allow_removals, "allow_removals")
        full_resync = _as_bool(self.full_resync, "full_resync")
        migrate = _as_bool(self.migrate, "migrate")

        store = StateStore(config.state_uri)
        applied, folded_journals = store.load()
        try:
            migration = self.check_names_unchanged(config, applied, migrate=migrate)
        except KlaviyoConfigError as err:
            if not dry_run:
                raise
            # Nothing can be planned against names the applied state does not use.
            self.log.warning("A real run would stop: %s", err)
            self.log.info("Dry run: nothing was written to Klaviyo or to the applied state.")
            return []

        nosto = NostoHook(nosto_conn_id=self.nosto_conn_id)
        chosen = self.resolve_chosen_segments(config, nosto.get_segments(), applied)
        refresh = self.resolve_narrowing(chosen)
        if full_resync and refresh is not None:
            raise KlaviyoConfigError(
                "A full resync compares every chosen segment with Klaviyo and cannot be narrowed: leave the "
                "'segments' param empty, or trigger the run without full_resync."
            )

        snapshot = self.read_export(nosto, config)
        klaviyo: KlaviyoHook | None = None
        base = applied
        if full_resync:
            klaviyo = self.klaviyo_hook(config)
            base = self.read_klaviyo(klaviyo, store, config, applied, snapshot, chosen)
        # Properties an unfinished migration moved away from: some contacts still hold their value there.
        pending = applied.former_properties if any_not_written(applied.contacts) else ()
        if migration.old_property or (full_resync and pending):
            # Every contact is written under the new property, emptying the old ones. A full resync reads
            # only the new property, so it cannot tell which contacts a pending migration has not written.
            base = dataclasses.replace(base, contacts=mark_not_written(base.contacts))
        # The old properties are emptied by every run that writes a contact a migration has not written yet.
        clear_properties = (
            tuple(
                name
                for name in dict.fromkeys((*pending, migration.old_property))
                if name and name != config.property_name
            )
            if any_not_written(base.contacts)
            else ()
        )
        plan = plan_sync(snapshot, chosen, base, refresh=refresh)
        report = change_report(plan)
        self.report(plan, chosen, dry_run=dry_run, counts=report)

        blocked = check_removal_threshold(plan, config.removal_threshold)
        if blocked and not allow_removals:
            message = (
                "; ".join(blocked)
                + f". The removal threshold is {config.removal_threshold:.0%}. If these removals are expected, "
                "trigger the run with the param allow_removals=true."
            )
            if not dry_run:
                raise KlaviyoConfigError("Stopped before writing anything: " + message)
            self.log.warning("A real run would stop before writing anything: %s", message)

        targets = plan_targets(
            self.log,
            TargetFiles(config.state_uri),
            config,
            chosen,
            # What the plan was made against: after a full resync, what Klaviyo holds, not the applied state.
            base,
            plan,
            dry_run=dry_run,
            reconcile_lists=full_resync,
            deleted=self.deleted_segments,
        )
        if dry_run:
            self.dry_run_checks(
                klaviyo,
                config,
                applied,
                plan,
                migration,
                targets,
                full_resync=full_resync,
                clear_properties=clear_properties,
            )
            self.log.info("Dry run: nothing was written to Klaviyo or to the applied state.")
            return self.push_specs(
                plan,
                chosen,
                config,
                list_id=applied.list_id,
                dry_run=True,
                report=report,
                clear_properties=clear_properties,
            )

        if _nothing_to_write(plan, migration, targets, config):
            self.log.info(
                "The export matches what was last applied for every chosen segment: nothing to write."
            )
            if folded_journals:
                store.save(applied, folded_journals)
            return []

        klaviyo = klaviyo or self.klaviyo_hook(config)
        list_id = self.find_address_book_list(
            klaviyo, config, applied, full_resync=full_resync
        ) or self.create_address_book_list(klaviyo, config)
        # Even a list just created has its flows read: that tells a key without 'flows:read' on the first run.
        found = self.check_flows(klaviyo, config, plan, targets, list_id)
        if migration.old_list_name and list_id == applied.list_id:
            self.rename_address_book_list(klaviyo, config, list_id, migration.old_list_name)
        apply_targets(self.log, klaviyo, TargetFiles(config.state_uri), config, targets, plan, found)

        self.find_email_aliases(klaviyo, store, plan)
        self.record_plan(store, base, plan, config, list_id, folded_journals, clear_properties)
        specs = self.push_specs(
            plan,
            chosen,
            config,
            list_id=list_id,
            dry_run=False,
            report=report,
            clear_properties=clear_properties,
        )
        self.log.info("Planned generation %d in %.1f s.", plan.generation, time.monotonic() - started)
        return specs

    def klaviyo_hook(self, config: SyncConfig) -> KlaviyoHook:
        return KlaviyoHook(klaviyo_conn_id=self.klaviyo_conn_id, concurrency=config.klaviyo_pool_slots)

    def load_config(self) -> SyncConfig:
        stored: Any = None
        if self.config_variable:
            # Parsed here rather than with deserialize_json: Airflow treats a value that is not JSON as
            # missing and moves on, which would silently sync with the DAG defaults only.
            text = Variable.get(self.config_variable, default=None)
            if text is not None:
                try:
                    stored = json.loads(text)
                except json.JSONDecodeError as err:
                    raise KlaviyoConfigError(
                        f"The Airflow Variable {self.config_variable!r} is not valid JSON ({err.msg} at line "
                        f"{err.lineno}, column {err.colno}). Fix it in Admin > Variables."
                    ) from None
        config = SyncConfig.from_mappings(
            self.defaults, stored, source=f"Airflow Variable {self.config_variable!r} (or the DAG defaults)"
        )
        if not config.state_uri:
            config = dataclasses.replace(config, state_uri=default_state_uri())
        if not config.segments:
            raise KlaviyoConfigError(
                f"No Nosto segment is chosen for syncing: add their ids to 'segments' in the Airflow Variable "
                f"{self.config_variable!r}."
            )
        refuse_relative_local_state(config.state_uri)
        refuse_unsupported_storage("state_uri", config.state_uri)
        if config.export_uri:
            refuse_unsupported_storage("export_uri", config.export_uri, also_served=("http", "https"))
        refuse_local_state_on_distributed_executor(
            config.state_uri, conf.get("core", "executor", fallback="")
        )
        return config

    def resolve_chosen_segments(
        self, config: SyncConfig, catalogue: Sequence[Segment], applied: AppliedState
    ) -> list[Segment]:
        """
        Match the configured segments (ids, or names resolved to ids) against Nosto's catalogue.

        A segment configured by name keeps the id it was resolved to once applied, so that renaming it
        in Nosto does not stop the sync. A segment synced before and now gone from the catalogue was deleted
        in Nosto: it is left out, with a warning, so its name leaves its members' values as if it had been
        removed from the configuration.
        """
        self.deleted_segments: dict[str, SegmentState] = {}
        if not catalogue and applied.segments:
            raise KlaviyoConfigError(
                "Nosto's segment catalogue is empty, but this sync has synced segments before; stopping rather "
                "than treating every segment as deleted. Check the nosto connection's account and token."
            )
        # Every name a segment was synced under (the current one wins), so a configured name keeps matching.
        applied_names = {
            name: segment_id for segment_id, state in applied.segments.items() for name in state.former_names
        } | {state.name: segment_id for segment_id, state in applied.segments.items()}
        by_id = {segment.id: segment for segment in catalogue}
        by_name: dict[str, list[Segment]] = {}
        for segment in catalogue:
            by_name.setdefault(segment.name, []).append(segment)

        chosen: dict[str, Segment] = {}
        missing: list[str] = []
        for wanted in config.segments:
            if wanted in by_id:
                chosen[wanted] = by_id[wanted]
            elif len(by_name.get(wanted, [])) == 1:
                segment = by_name[wanted][0]
                self.log.info(
                    "Segment name %r resolved to id %s; prefer the id in the configuration.",
                    wanted,
                    segment.id,
                )
                chosen[segment.id] = segment
            elif wanted not in by_name and applied_names.get(wanted) in by_id:
                segment = by_id[applied_names[wanted]]
                self.log.warning(
                    "Segment %r is now named %r in Nosto; syncing it by its id %s. Put the id in the "
                    "configuration.",
                    wanted,
                    segment.name,
                    segment.id,
                )
                chosen[segment.id] = segment
            elif wanted not in by_name and self.deleted_id(wanted, applied, applied_names, by_id):
                segment_id = self.deleted_id(wanted, applied, applied_names, by_id) or wanted
                self.deleted_segments[segment_id] = applied.segments[segment_id]
                self.log.warning(
                    "Segment %r (%s) no longer exists in Nosto's catalogue (deleted in Nosto): its name is "
                    "removed from its members' values. Remove %r from 'segments' in the Airflow Variable %r.",
                    applied.segments[segment_id].name,
                    segment_id,
                    wanted,
                    self.config_variable,
                )
            elif len(by_name.get(wanted, [])) > 1:
                ids = ", ".join(segment.id for segment in by_name[wanted])
                raise KlaviyoConfigError(
                    f"Several Nosto segments are named {wanted!r} ({ids}): choose one by id."
                )
            else:
                missing.append(wanted)
        if missing:
            raise KlaviyoConfigError(
                f"Nosto's segment catalogue has no segment {', '.join(map(repr, missing))}. Remove it from "
                f"'segments' in the Airflow Variable {self.config_variable!r}, or check the nosto connection's "
                "account."
            )
        return sorted(chosen.values(), key=lambda segment: segment.id)

    @staticmethod
    def deleted_id(
        wanted: str, applied: AppliedState, applied_names: Mapping[str, str], by_id: Mapping[str, Segment]
    ) -> str | None:
        """The id of a configured segment (by id or applied name) that was synced before and is gone from Nosto."""
        segment_id = wanted if wanted in applied.segments else applied_names.get(wanted)
        if segment_id is None or segment_id in by_id:
            return None
        return segment_id

    def resolve_narrowing(self, chosen: Sequence[Segment]) -> set[str] | None:
        wanted = self.segment_ids
        if isinstance(wanted, str):
            wanted = [part.strip() for part in wanted.split(",") if part.strip()]
        if not wanted:
            return None
        known = {segment.id: segment.id for segment in chosen} | {
            segment.name: segment.id for segment in chosen
        }
        unknown = [item for item in wanted if item not in known]
        if unknown:
            raise KlaviyoConfigError(
                f"The run's 'segments' param names {', '.join(map(repr, unknown))}, which is not among the chosen "
                "segments; a run can only narrow the configured choice."
            )
        return {known[item] for item in wanted}

    def check_names_unchanged(self, config: SyncConfig, applied: AppliedState, *, migrate: bool) -> Migration:
        """
        Stop when the list or property name differs from the applied state's, unless told to migrate.

        :return: what the migration moves (nothing when the names are unchanged).
        """
        changed = [
            (label, old, new)
            for label, old, new in (
                ("list name", applied.list_name, config.list_name),
                ("property name", applied.property_name, config.property_name),
            )
            if old is not None and old != new
        ]
        if changed and not migrate:
            described = " and ".join(f"the {label} from {old!r} to {new!r}" for label, old, new in changed)
            moves = {
                "list name": "renames the Klaviyo list in place (its members, and the flows and segments built on "
                "it, stay)",
                "property name": "writes every contact's value under the new property, clearing the old one",
            }
            raise KlaviyoConfigError(
                f"The sync configuration changes {described}, but what this sync wrote to Klaviyo (applied "
                f"state in {config.state_uri}) uses the old name. Put the old name back in the configuration; "
                "or, to move to the new name, trigger one run with the param migrate=true: it "
                + " and ".join(moves[label] for label, _, _ in changed)
                + " (see docs/lifecycle.md)."
            )
        migration = Migration(
            old_list_name=applied.list_name if applied.list_name not in (None, config.list_name) else None,
            old_property=(
                applied.property_name if applied.property_name not in (None, config.property_name) else None
            ),
        )
        if migrate and not migration.needed:
            self.log.info("migrate=true, but the list and property names are unchanged: nothing to migrate.")
        return migration

    def read_export(self, nosto: NostoHook, config: SyncConfig) -> ExportSnapshot:
        with nosto.open_export(config.export_uri or None) as raw:
            snapshot = read_export(open_export_stream(raw), segments_key=config.segments_key)
        require_contacts(snapshot, config.segments_key)
        self.log.info(
            "Export: %d lines, %d contacts, %d lines merged as duplicates of another line's email.",
            snapshot.lines,
            len(snapshot.contacts),
            snapshot.duplicates_merged,
        )
        if snapshot.invalid_emails or snapshot.malformed_lines:
            self.log.warning(
                "Skipped %d lines with an unusable email (%s) and %d malformed lines; they are never sent. "
                "Examples: %s",
                sum(snapshot.invalid_emails.values()),
                ", ".join(f"{reason}: {count}" for reason, count in sorted(snapshot.invalid_emails.items())),
                snapshot.malformed_lines,
                "; ".join(snapshot.invalid_samples[:5]) or "none",
            )
        return snapshot

    def report(
        self,
        plan: SyncPlan,
        chosen: Sequence[Segment],
        *,
        dry_run: bool,
        counts: Mapping[str, ChangeCounts] | None = None,
    ) -> None:
        verb = "would" if dry_run else "will"
        per_segment = {warning for diff in plan.segment_diffs.values() for warning in diff.warnings}
        for warning in plan.warnings:
            if warning not in per_segment:
                self.log.warning("%s", warning)
        book = plan.address_book
        self.log.info(
            "Address book: %d -> %d contacts (%s add %d, remove %d).",
            book.members_before,
            book.members_after,
            verb,
            book.joined,
            book.left,
        )
        for segment in chosen:
            diff = plan.segment_diffs.get(segment.id)
            if diff is None:
                continue
            for warning in diff.warnings:
                self.log.warning("Segment %r: %s", segment.name, warning)
            self.log.info(
                "Segment %r (%s): %d -> %d members (%d joined, %d left); %s write %d contacts.",
                segment.name,
                segment.id,
                diff.members_before,
                diff.members_after,
                diff.joined,
                diff.left,
                verb,
                len(plan.changes_by_key.get(segment.id, [])),
            )
        if dry_run and counts is not None:
            names = {segment.id: segment.name for segment in chosen} | {
                key: f"{diff.name} (no longer synced)"
                for key, diff in plan.segment_diffs.items()
                if diff.removed_from_configuration
            }
            names[ADDRESS_BOOK_KEY] = "Address book"
            for key, name in names.items():
                if key in counts:
                    self.log_would_change(name, counts[key])

    def log_would_change(self, name: str, counts: ChangeCounts) -> None:
        """One dry-run line per segment: what would be added, removed and updated, with masked examples."""
        examples = "; ".join(
            f"{kind}: {', '.join(mask_email(email) for email in emails)}"
            for kind, emails in counts.examples.items()
            if emails
        )
        self.log.info(
            "Dry run, %s: would add %d, remove %d and update %d contacts.%s",
            name,
            counts.added,
            counts.removed,
            counts.updated,
            f" Examples ({examples})." if examples else "",
        )

    def create_address_book_list(self, klaviyo: KlaviyoHook, config: SyncConfig) -> str:
        """
        Create the address-book list, once :meth:`find_address_book_list` found none.

        Klaviyo does not make list names unique and ``POST /api/lists`` is not idempotent, so a remembered id
        always wins over a look-up by name, and a look-up by name always comes before a create.
        """
        created = klaviyo.create_list(config.list_name)
        self.log.info("Created the Klaviyo list %r (%s).", config.list_name, created)
        return created

    def find_address_book_list(
        self,
        klaviyo: KlaviyoHook,
        config: SyncConfig,
        applied: AppliedState,
        *,
        full_resync: bool = False,
    ) -> str | None:
        """
        The address-book list's id: the remembered one, else the list with the configured name, else ``None``.

        Reads only. A list deleted in Klaviyo stops the run, unless it is a full resync, which finds or creates
        it again.
        """
        if applied.list_id:
            if klaviyo.get_list(applied.list_id) is not None:
                return applied.list_id
            if not full_resync:
                raise KlaviyoConfigError(
                    f"The Klaviyo list {applied.list_id} ({applied.list_name!r}) that this sync writes to no "
                    "longer exists. Trigger one run with the param full_resync=true: it compares with what "
                    f"Klaviyo holds, uses the list named {config.list_name!r} or creates it, and adds every "
                    "contact to it again."
                )
            self.log.warning(
                "The Klaviyo list %s that this sync wrote to no longer exists; the full resync uses the list "
                "named %r or creates it.",
                applied.list_id,
                config.list_name,
            )
        found = klaviyo.find_list_by_name(config.list_name)
        if found:
            self.log.info("Using the existing Klaviyo list %r (%s).", config.list_name, found)
        return found

    def rename_address_book_list(
        self, klaviyo: KlaviyoHook, config: SyncConfig, list_id: str, old_name: str
    ) -> None:
        """Rename the list in place (a migration): its id, members, and the flows and segments built on it stay."""
        other = klaviyo.find_list_by_name(config.list_name)
        if other and other != list_id:
            raise KlaviyoConfigError(
                f"Cannot rename the Klaviyo list {list_id} from {old_name!r} to {config.list_name!r}: list "
                f"{other} already has that name. Rename or delete that list in Klaviyo, or choose another "
                "list_name."
            )
        if other != list_id:
            klaviyo.rename_list(list_id, config.list_name)
        self.log.info("Renamed the Klaviyo list %s from %r to %r.", list_id, old_name, config.list_name)

    def read_klaviyo(
        self,
        klaviyo: KlaviyoHook,
        store: StateStore,
        config: SyncConfig,
        applied: AppliedState,
        snapshot: ExportSnapshot,
        chosen: Sequence[Segment],
    ) -> AppliedState:
        """
        Read what Klaviyo holds, for a full resync: the list's members with their values, and the values of
        the contacts the applied state knows that are outside the list and gone from the export.

        Contacts in the export but not in the list are not read: they join the list, so their whole value is
        written anyway.
        """
        list_id = applied.list_id
        if list_id and klaviyo.get_list(list_id) is None:
            list_id = None
        list_id = list_id or klaviyo.find_list_by_name(config.list_name)
        members = list(klaviyo.iter_list_profiles(list_id, config.property_name)) if list_id else []

        member_emails = set()
        for stored, _ in members:
            try:
                member_emails.add(normalise_email(stored))
            except InvalidEmail:
                continue
        _, aliases = store.read_email_aliases()
        others = [
            aliases.get(email, email)
            for email in applied.contacts
            if email not in member_emails and email not in snapshot.contacts
        ]
        other_values = [
            (email, value) for email, _, value in klaviyo.iter_profiles(others, config.property_name)
        ]

        ids_by_name = {
            state.name: segment_id
            for segment_id, state in applied.segments.items()
            if segment_id in {segment.id for segment in chosen}
        } | {segment.name: segment.id for segment in chosen}
        known = _Either(applied.contacts, snapshot.contacts)
        observed, left_alone = observed_state(applied, members, other_values, ids_by_name, known)
        self.log.info(
            "Full resync: read %d members of the list %s and the values of %d other profiles the sync wrote "
            "before; planning against what Klaviyo holds.%s",
            len(members),
            list_id or f"{config.list_name!r} (none yet)",
            len(other_values),
            f" {left_alone} members this sync did not add (or with an unusable email) are left alone."
            if left_alone
            else "",
        )
        return observed

    def dry_run_checks(
        self,
        klaviyo: KlaviyoHook | None,
        config: SyncConfig,
        applied: AppliedState,
        plan: SyncPlan,
        migration: Migration,
        targets: TargetPlan,
        *,
        full_resync: bool,
        clear_properties: Sequence[str] = (),
    ) -> None:
        """Say what would stop or change a real run: a list rename, a property move, and, in the real run's
        words, a deleted address-book list or a flow that would fire. Reads Klaviyo, writes nothing."""
        if migration.old_list_name:
            self.log.info(
                "Dry run: would rename the Klaviyo list %s from %r to %r.",
                applied.list_id,
                migration.old_list_name,
                config.list_name,
            )
        cleared = ", ".join(map(repr, clear_properties))
        if migration.old_property:
            self.log.info(
                "Dry run: would write every contact's value under %r and clear %s.",
                config.property_name,
                cleared,
            )
        elif clear_properties:
            self.log.info(
                "Dry run: the contacts an unfinished migration has not written yet would be written under %r, "
                "clearing %s.",
                config.property_name,
                cleared,
            )
        if _nothing_to_write(plan, migration, targets, config):
            return  # the real run would stop at nothing
        hook = klaviyo or self.klaviyo_hook(config)
        list_id = None
        with self.reported_as_stopping():
            list_id = self.find_address_book_list(hook, config, applied, full_resync=full_resync)
        with self.reported_as_stopping():
            self.check_flows(hook, config, plan, targets, list_id)

    @contextlib.contextmanager
    def reported_as_stopping(self) -> Iterator[None]:
        """In a dry run: log the error that would stop the real run, instead of failing."""
        try:
            yield
        except KlaviyoConfigError as err:
            self.log.warning("A real run would stop: %s", err)

    def check_flows(
        self,
        klaviyo: KlaviyoHook,
        config: SyncConfig,
        plan: SyncPlan,
        targets: TargetPlan,
        list_id: str | None,
    ) -> FoundTargets:
        """Find the segment lists and Klaviyo segments, and stop if adding profiles to any of them or to the
        address-book list would trigger a Klaviyo flow (emails), with one error naming every such flow.

        Reads only: the real run calls it before writing anything but a new address-book list, a dry run to
        say what would stop the real run, in the same words.
        """
        flows = FlowGuard(klaviyo, config, self.log)
        with flows.stopping_if_firing():
            if list_id and _joining(plan):
                flows.check_list(list_id, "the address-book list")
            return find_targets(self.log, klaviyo, config, targets, plan, flows)

    def find_email_aliases(self, klaviyo: KlaviyoHook, store: StateStore, plan: SyncPlan) -> None:
        """
        Learn how Klaviyo spells the emails of existing profiles that differ from ours only in case.

        Klaviyo matches emails exactly and does not say whether it folds case, so a profile stored as
        ``Ana@Example.com`` before this sync existed would get a twin ``ana@example.com``. The push tasks
        write such contacts with Klaviyo's spelling instead. The first scan reads every profile's email;
        later ones only profiles updated since, and only when contacts are joining the address book.
        """
        if not any(
            change.joins_address_book for changes in plan.changes_by_key.values() for change in changes
        ):
            return
        scanned_at, aliases = store.read_email_aliases()
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        clock = time.monotonic()
        scanned = 0
        for stored in klaviyo.iter_profile_emails(updated_after=scanned_at):
            scanned += 1
            try:
                normalised = normalise_email(stored)
            except InvalidEmail:
                continue
            if normalised != stored:
                aliases[normalised] = stored
        store.write_email_aliases(started, aliases)
        self.log.info(
            "Read the emails of %d Klaviyo profiles (%s) in %.1f s; %d are stored with other letter case than "
            "the export's and are written with Klaviyo's spelling.",
            scanned,
            f"updated since {scanned_at}" if scanned_at else "all profiles, first sync",
            time.monotonic() - clock,
            len(aliases),
        )

    def record_plan(
        self,
        store: StateStore,
        applied: AppliedState,
        plan: SyncPlan,
        config: SyncConfig,
        list_id: str,
        folded_journals: Sequence[Any],
        clear_properties: Sequence[str] = (),
    ) -> None:
        """Write the diffs, then the new generation, so that older diffs become stale before pushes start.

        ``clear_properties`` are remembered while contacts a migration did not write remain, so that the
        runs that write them also empty them.
        """
        for key, changes in plan.changes_by_key.items():
            if changes:
                store.write_diff(plan.generation, key, changes)

        planned = plan.planned_meta(applied)
        planned.list_id = list_id
        planned.list_name = config.list_name
        planned.property_name = config.property_name
        planned.contacts = applied.contacts
        planned.former_properties = tuple(clear_properties)
        # A segment deleted in Nosto stays remembered, so that its id, still in the configuration until an
        # admin removes it, keeps being recognised as deleted rather than as a typo.
        for segment_id, state in getattr(self, "deleted_segments", {}).items():
            planned.segments.setdefault(segment_id, dataclasses.replace(state, generation=plan.generation))
        store.save(planned, folded_journals)
        store.delete_stale_diffs(below_generation=plan.generation)

    def push_specs(
        self,
        plan: SyncPlan,
        chosen: Sequence[Segment],
        config: SyncConfig,
        *,
        list_id: str | None,
        dry_run: bool,
        report: Mapping[str, ChangeCounts] | None = None,
        clear_properties: Sequence[str] = (),
    ) -> list[PushSpec]:
        report = report or {}
        specs = [
            self.push_spec(
                segment.id,
                segment.id,
                segment.name,
                plan,
                config,
                list_id,
                dry_run,
                report.get(segment.id),
                clear_properties,
            )
            for segment in chosen
            if segment.id in plan.segment_diffs
        ]
        specs.append(
            self.push_spec(
                ADDRESS_BOOK_KEY,
                None,
                "Address book",
                plan,
                config,
                list_id,
                dry_run,
                report.get(ADDRESS_BOOK_KEY),
                clear_properties,
            )
        )
        return specs

    @staticmethod
    def push_spec(
        key: str,
        segment_id: str | None,
        name: str,
        plan: SyncPlan,
        config: SyncConfig,
        list_id: str | None,
        dry_run: bool,
        counts: ChangeCounts | None = None,
        clear_properties: Sequence[str] = (),
    ) -> PushSpec:
        diff: SegmentDiff = plan.segment_diffs[key] if segment_id else plan.address_book
        return PushSpec(
            key=key,
            segment_id=segment_id,
            segment_name=name,
            generation=plan.generation,
            state_uri=config.state_uri,
            list_id=list_id,
            property_name=config.property_name,
            empty_value=config.empty_value,
            pool_slots=config.klaviyo_pool_slots,
            dry_run=dry_run,
            contacts_to_write=len(plan.changes_by_key.get(key, [])),
            joined=diff.joined,
            left=diff.left,
            updated=counts.updated if counts else 0,
            members_after=diff.members_after,
            clear_properties=list(clear_properties),
        )


class _Either:
    """Membership in either of two collections, without building their union."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self.first, self.second = first, second

    def __contains__(self, item: object) -> bool:
        return item in self.first or item in self.second


def _nothing_to_write(plan: SyncPlan, migration: Migration, targets: TargetPlan, config: SyncConfig) -> bool:
    """Whether a real run would end after planning, without reading or writing Klaviyo."""
    return plan.unchanged and not migration.needed and not targets.has_work(config)


def _joining(plan: SyncPlan) -> bool:
    """Whether the plan adds contacts to the address book or to a segment (which may fire flows)."""
    return bool(plan.address_book.joined or any(diff.joined for diff in plan.segment_diffs.values()))


def _as_bool(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise KlaviyoConfigError(f"The param {name!r} must be true or false, got {value!r}.")
