"""Plan a Nosto to Klaviyo segment sync: read the export and the catalogue, diff against the applied state."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.common.compat.sdk import BaseOperator, Variable, conf

from airflow_provider_klaviyo_nosto.config import SyncConfig
from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, KlaviyoError, KlaviyoPermissionError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook
from airflow_provider_klaviyo_nosto.operators.segment_targets import TargetFiles, apply_targets, plan_targets
from airflow_provider_klaviyo_nosto.state_store import (
    StateStore,
    default_state_uri,
    refuse_local_state_on_distributed_executor,
)
from airflow_provider_klaviyo_nosto.sync.emails import InvalidEmail, normalise_email
from airflow_provider_klaviyo_nosto.sync.export import (
    ExportSnapshot,
    open_export_stream,
    read_export,
    require_contacts,
)
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY, Segment
from airflow_provider_klaviyo_nosto.sync.plan import SegmentDiff, SyncPlan, check_removal_threshold, plan_sync
from airflow_provider_klaviyo_nosto.sync.state import AppliedState

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
    members_after: int


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
    :param klaviyo_conn_id: the ``klaviyo`` connection.
    :param nosto_conn_id: the ``nosto`` connection.
    """

    template_fields: Sequence[str] = ("segment_ids", "dry_run_requested", "allow_removals")
    ui_color = "#e8f2fd"

    def __init__(
        self,
        *,
        config_variable: str = "nosto_klaviyo_segment_sync",
        defaults: Mapping[str, Any] | None = None,
        segment_ids: Collection[str] | str | None = None,
        dry_run: bool | str = False,
        allow_removals: bool | str = False,
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
        self.klaviyo_conn_id = klaviyo_conn_id
        self.nosto_conn_id = nosto_conn_id

    # -- the steps -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[PushSpec]:
        started = time.monotonic()
        config = self.load_config()
        dry_run = _as_bool(self.dry_run_requested, "dry_run")
        allow_removals = _as_bool(self.allow_removals, "allow_removals")

        store = StateStore(config.state_uri)
        applied, folded_journals = store.load()
        self.check_names_unchanged(config, applied)

        nosto = NostoHook(nosto_conn_id=self.nosto_conn_id)
        chosen = self.resolve_chosen_segments(config, nosto.get_segments(), applied)
        refresh = self.resolve_narrowing(chosen)

        snapshot = self.read_export(nosto, config)
        plan = plan_sync(snapshot, chosen, applied, refresh=refresh)
        self.report(plan, chosen, dry_run=dry_run)

        blocked = check_removal_threshold(plan, config.removal_threshold)
        if blocked and not allow_removals:
            raise KlaviyoConfigError(
                "Stopped before writing anything: "
                + "; ".join(blocked)
                + f". The removal threshold is {config.removal_threshold:.0%}. If these removals are expected, "
                "trigger the run with the param allow_removals=true."
            )

        targets = plan_targets(
            self.log, TargetFiles(config.state_uri), config, chosen, applied, plan, dry_run=dry_run
        )
        if dry_run:
            self.log.info("Dry run: nothing was written to Klaviyo or to the applied state.")
            return self.push_specs(plan, chosen, config, list_id=applied.list_id, dry_run=True)

        if plan.unchanged and not targets.has_work(config):
            self.log.info(
                "The export matches what was last applied for every chosen segment: nothing to write."
            )
            if folded_journals:
                store.save(applied, folded_journals)
            return []

        klaviyo = KlaviyoHook(klaviyo_conn_id=self.klaviyo_conn_id, concurrency=config.klaviyo_pool_slots)
        list_id = self.ensure_address_book_list(klaviyo, config, applied)
        if plan.address_book.joined or any(diff.joined for diff in plan.segment_diffs.values()):
            self.check_flows(klaviyo, config, list_id)
        apply_targets(
            self.log,
            klaviyo,
            TargetFiles(config.state_uri),
            config,
            targets,
            plan,
            lambda segment_list_id: self.check_flows(klaviyo, config, segment_list_id),
        )

        self.find_email_aliases(klaviyo, store, plan)
        self.record_plan(store, applied, plan, config, list_id, folded_journals)
        specs = self.push_specs(plan, chosen, config, list_id=list_id, dry_run=False)
        self.log.info("Planned generation %d in %.1f s.", plan.generation, time.monotonic() - started)
        return specs

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
        in Nosto does not stop the sync.
        """
        applied_names = {state.name: segment_id for segment_id, state in applied.segments.items()}
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

    def check_names_unchanged(self, config: SyncConfig, applied: AppliedState) -> None:
        for label, old, new in (
            ("list name", applied.list_name, config.list_name),
            ("property name", applied.property_name, config.property_name),
        ):
            if old is not None and old != new:
                raise KlaviyoConfigError(
                    f"The configured {label} is {new!r} but the applied state in {config.state_uri} was "
                    f"written with {old!r}. Put {old!r} back in the configuration; or, to start over with "
                    f"{new!r}, point 'state_uri' at a new, empty folder: the next run then writes every "
                    f"contact again (what was written under {old!r} stays in Klaviyo)."
                )

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

    def report(self, plan: SyncPlan, chosen: Sequence[Segment], *, dry_run: bool) -> None:
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

    def ensure_address_book_list(
        self, klaviyo: KlaviyoHook, config: SyncConfig, applied: AppliedState
    ) -> str:
        """
        Find the address-book list, creating it only when absent, and remember its id.

        Klaviyo does not make list names unique and ``POST /api/lists`` is not idempotent, so a remembered id
        always wins over a look-up by name, and a look-up by name always comes before a create.
        """
        if applied.list_id:
            if klaviyo.get_list(applied.list_id) is not None:
                return applied.list_id
            raise KlaviyoError(
                f"The Klaviyo list {applied.list_id} ({config.list_name!r}) that this sync writes to no longer "
                "exists. To rebuild the address book, point 'state_uri' in the sync configuration at a new, "
                f"empty folder (or delete {config.state_uri}): the next run then creates the list again and "
                "writes every contact."
            )
        found = klaviyo.find_list_by_name(config.list_name)
        if found:
            self.log.info("Using the existing Klaviyo list %r (%s).", config.list_name, found)
            return found
        created = klaviyo.create_list(config.list_name)
        self.log.info("Created the Klaviyo list %r (%s).", config.list_name, created)
        return created

    def check_flows(self, klaviyo: KlaviyoHook, config: SyncConfig, list_id: str) -> None:
        """Stop before writing when adding contacts to the list would trigger a Klaviyo flow (emails)."""
        if not config.check_flows:
            self.log.warning("The flow-trigger check is switched off (check_flows=false).")
            return
        try:
            flows = klaviyo.get_list_flow_triggers(list_id)
        except KlaviyoPermissionError as err:
            raise KlaviyoConfigError(
                "The Klaviyo key cannot read the flows triggered by the list (it needs the scope 'flows:read'). "
                "Add 'flows:read' to the private key, or set check_flows=false in the sync configuration to "
                "switch the check off explicitly."
            ) from err
        # A draft flow sends nothing; live and manual flows act on every profile the list gains.
        firing = [
            flow
            for flow in flows
            if flow.get("status") != "draft" and str(flow.get("id")) not in config.allowed_flows
        ]
        if firing:
            names = ", ".join(f"{flow.get('name')!r} (id {flow.get('id')})" for flow in firing)
            raise KlaviyoConfigError(
                f"Stopped before writing: adding contacts to list {list_id} would trigger the Klaviyo flow(s) "
                f"{names}, which may send emails. Turn the flow off in Klaviyo, or allow it by adding its id to "
                "'allowed_flows' in the sync configuration."
            )

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
            "Read the emails of %d Klaviyo profiles (%s); %d are stored with other letter case than the "
            "export's and are written with Klaviyo's spelling.",
            scanned,
            f"updated since {scanned_at}" if scanned_at else "all profiles, first sync",
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
    ) -> None:
        """Write the diffs, then the new generation, so that older diffs become stale before pushes start."""
        for key, changes in plan.changes_by_key.items():
            if changes:
                store.write_diff(plan.generation, key, changes)

        planned = plan.planned_meta(applied)
        planned.list_id = list_id
        planned.list_name = config.list_name
        planned.property_name = config.property_name
        planned.contacts = applied.contacts
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
    ) -> list[PushSpec]:
        specs = [
            self.push_spec(segment.id, segment.id, segment.name, plan, config, list_id, dry_run)
            for segment in chosen
            if segment.id in plan.segment_diffs
        ]
        specs.append(self.push_spec(ADDRESS_BOOK_KEY, None, "Address book", plan, config, list_id, dry_run))
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
            members_after=diff.members_after,
        )


def _as_bool(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise KlaviyoConfigError(f"The param {name!r} must be true or false, got {value!r}.")
