"""Apply one push task's share of a planned sync to Klaviyo, and record what Klaviyo confirmed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import BulkImportJob, BulkImportJobStatus, KlaviyoHook
from airflow_provider_klaviyo_nosto.links.klaviyo import KlaviyoListLink
from airflow_provider_klaviyo_nosto.operators.sync import PushSpec
from airflow_provider_klaviyo_nosto.state_store import StateStore
from airflow_provider_klaviyo_nosto.sync.batching import (
    BulkImportBatch,
    chunked,
    list_removals,
    needs_profile_write,
    plan_bulk_batches,
    profile_payload,
)
from airflow_provider_klaviyo_nosto.sync.masking import mask_email
from airflow_provider_klaviyo_nosto.sync.model import ContactChange
from airflow_provider_klaviyo_nosto.triggers.klaviyo import (
    KlaviyoBulkImportJobTrigger,
    validate_bulk_import_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Klaviyo's documented cap on profiles in one bulk import job.
MAX_BULK_PROFILES = 10_000

#: How many masked examples of rejected contacts a summary carries.
SAMPLE_SIZE = 5


class KlaviyoSegmentPushOperator(BaseOperator):
    """
    Write one push task's changed contacts to Klaviyo and record what Klaviyo confirmed.

    Mapped once per segment plus once for the address book over the specs
    :class:`~airflow_provider_klaviyo_nosto.operators.sync.NostoSegmentSyncOperator` returns. Contacts leaving
    the address book are removed from the list by profile id; every changed contact's whole value goes out
    through Klaviyo's bulk import (joined to the address-book list when the contact is in it). The task then
    waits for the bulk jobs, deferred so it holds no worker slot, reads their per-profile errors, and writes
    a journal of the confirmed contacts into the applied state. Rejected contacts are reported (masked) and,
    being absent from the journal, planned again on the next run.

    Re-running is safe: the accepted job ids are recorded as soon as Klaviyo accepts them, so a task killed
    half-way waits for those jobs instead of resubmitting them; a task whose diff was already applied, or was
    superseded by a newer plan, does nothing.

    :param push: the spec for this task, from the sync operator's XCom.
    :param klaviyo_conn_id: the ``klaviyo`` connection.
    :param deferrable: wait for the bulk jobs in the triggerer instead of on the worker. On by default,
        unlike Airflow's ``default_deferrable``: a large first sync keeps jobs running for many minutes, and a
        worker slot held for that long starves the other segments' pushes.
    :param poll_interval: seconds between two looks at the bulk jobs' status.
    :param job_timeout: how long the bulk jobs may take before the task fails (and Airflow may retry it).
    :param max_batch_profiles: profiles per bulk import job, at most Klaviyo's 10,000; smaller jobs make
        progress (and a resumed task's saving) finer-grained at the cost of more calls.
    """

    template_fields: Sequence[str] = ("push",)
    ui_color = "#fdf1e8"
    operator_extra_links = (KlaviyoListLink(),)

    def __init__(
        self,
        *,
        push: PushSpec | dict[str, Any],
        klaviyo_conn_id: str = KlaviyoHook.default_conn_name,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        job_timeout: timedelta = timedelta(hours=2),
        max_batch_profiles: int = MAX_BULK_PROFILES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 1 <= max_batch_profiles <= MAX_BULK_PROFILES:
            raise ValueError(
                f"max_batch_profiles must be between 1 and {MAX_BULK_PROFILES}, got {max_batch_profiles}."
            )
        self.max_batch_profiles = max_batch_profiles
        self.push = push
        self.klaviyo_conn_id = klaviyo_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout

    @property
    def spec(self) -> PushSpec:
        return PushSpec(**self.push)  # type: ignore[typeddict-item]

    def execute(self, context: Context) -> dict[str, Any]:
        spec = self.spec
        summary = self.new_summary(spec)
        if spec["dry_run"]:
            self.log.info(
                "Dry run for %r: would write %d contacts (%d joined, %d left, %d updated).",
                spec["segment_name"],
                spec["contacts_to_write"],
                spec["joined"],
                spec["left"],
                spec.get("updated", 0),
            )
            summary["outcome"] = "dry_run"
            return summary

        store = StateStore(spec["state_uri"])
        changes = self.load_changes(store, spec)
        if changes is None:
            summary["outcome"] = "nothing_to_do"
            return summary
        if not spec["list_id"]:
            raise KlaviyoError("The push spec has no Klaviyo list id; re-run the sync task.")

        hook = self.make_hook(spec)
        progress = store.read_progress(spec["generation"], spec["key"])
        progress.setdefault("started_at", time.time())

        _, aliases = store.read_email_aliases()
        try:
            self.remove_from_address_book(hook, spec, changes, aliases, progress, store)
            batches = self.bulk_batches(spec, changes, progress)
            self.submit_batches(hook, spec, batches, aliases, progress, store)
        finally:
            # Counted for a try that fails too: the summary covers every call the push made.
            progress["calls"] = progress.get("calls", 0) + hook.calls_made
            progress["throttled"] = progress.get("throttled", 0) + hook.throttled
            store.write_progress(spec["generation"], spec["key"], progress)

        job_ids = [batch["job_id"] for batch in progress.get("batches", {}).values() if batch.get("job_id")]
        # finish() reads the diff again; letting go of this copy halves a large push's peak memory while
        # it waits inline.
        del changes, batches
        if not job_ids:
            return self.finish(context, jobs=[])
        if self.deferrable:
            self.log.info("Waiting for %d Klaviyo bulk import job(s) in the triggerer.", len(job_ids))
            self.defer(
                trigger=KlaviyoBulkImportJobTrigger(
                    job_ids=job_ids,
                    conn_id=self.klaviyo_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=time.time() + self.job_timeout.total_seconds(),
                ),
                method_name="execute_complete",
                timeout=self.job_timeout + timedelta(minutes=5),
            )
        return self.finish(context, jobs=self.wait_inline(hook, job_ids))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = validate_bulk_import_event(event)
        jobs = [
            BulkImportJob(
                id=job["id"],
                status=BulkImportJobStatus(job["status"]),
                total_count=job.get("total_count", 0),
                completed_count=job.get("completed_count", 0),
                failed_count=job.get("failed_count", 0),
            )
            for job in payload["jobs"]
        ]
        return self.finish(context, jobs=jobs)

    # -- the steps -----------------------------------------------------------------------------------

    def make_hook(self, spec: PushSpec) -> KlaviyoHook:
        return KlaviyoHook(klaviyo_conn_id=self.klaviyo_conn_id, concurrency=spec["pool_slots"])

    def new_summary(self, spec: PushSpec) -> dict[str, Any]:
        return {
            "segment_id": spec["segment_id"],
            "segment_name": spec["segment_name"],
            "generation": spec["generation"],
            "joined": spec["joined"],
            "left": spec["left"],
            "updated": spec.get("updated", 0),
            "contacts_planned": spec["contacts_to_write"],
        }

    def load_changes(self, store: StateStore, spec: PushSpec) -> list[ContactChange] | None:
        """Read this task's diff, or return None when a newer plan superseded it or it is already applied."""
        current = store.load_meta().generation
        if spec["generation"] < current:
            self.log.info(
                "Nothing to do for %r: this diff (generation %d) is older than the applied state's plan "
                "(generation %d), which already includes its contacts.",
                spec["segment_name"],
                spec["generation"],
                current,
            )
            return None
        if not store.diff_path(spec["generation"], spec["key"]).exists():
            if spec["contacts_to_write"]:
                self.log.info(
                    "Nothing to do for %r: generation %d is already applied.",
                    spec["segment_name"],
                    spec["generation"],
                )
            else:
                self.log.info("Nothing changed for %r.", spec["segment_name"])
            return None
        return store.read_diff(spec["generation"], spec["key"])

    def remove_from_address_book(
        self,
        hook: KlaviyoHook,
        spec: PushSpec,
        changes: Sequence[ContactChange],
        aliases: dict[str, str],
        progress: dict[str, Any],
        store: StateStore,
    ) -> None:
        """Take contacts gone from Nosto off the list; Klaviyo's list endpoints want profile ids, not emails."""
        if progress.get("removed_from_list") is not None:
            return
        leaving = [change.email for change in list_removals(changes)]
        deleted: list[str] = []
        if leaving:
            stored = {aliases.get(email, email): email for email in leaving}
            ids = hook.get_profile_ids_by_email(list(stored))
            hook.remove_profiles_from_list(spec["list_id"] or "", list(ids.values()))
            deleted = sorted(set(leaving) - {stored[email] for email in ids})
            if deleted:
                self.log.info(
                    "%d contacts leaving the address book have no Klaviyo profile any more (deleted in "
                    "Klaviyo); counted as removed, and not re-created.",
                    len(deleted),
                )
        progress["removed_from_list"] = len(leaving)
        # Kept so that the bulk batches, rebuilt when the task resumes, leave these contacts out.
        progress["deleted_in_klaviyo"] = deleted
        store.write_progress(spec["generation"], spec["key"], progress)

    def bulk_batches(
        self, spec: PushSpec, changes: Sequence[ContactChange], progress: dict[str, Any]
    ) -> list[BulkImportBatch]:
        """Batch the contacts to import; a profile deleted in Klaviyo is never re-created by a removal."""
        deleted = set(progress.get("deleted_in_klaviyo", ()))
        to_import = [change for change in changes if change.email not in deleted]
        return plan_bulk_batches(to_import, spec["property_name"], max_profiles=self.max_batch_profiles)

    def submit_batches(
        self,
        hook: KlaviyoHook,
        spec: PushSpec,
        batches: Sequence[BulkImportBatch],
        aliases: dict[str, str],
        progress: dict[str, Any],
        store: StateStore,
    ) -> None:
        """Submit every batch not yet accepted, recording each job id the moment Klaviyo accepts it."""
        recorded: dict[str, Any] = progress.setdefault("batches", {})
        for index, batch in enumerate(batches):
            if str(index) in recorded:
                continue
            profiles = [profile_payload(change, spec["property_name"]) for change in batch.changes]
            for profile, change in zip(profiles, batch.changes, strict=True):
                # An existing profile whose stored email differs only in case is written under that spelling.
                profile["attributes"]["email"] = aliases.get(change.email, change.email)
                if spec["empty_value"] == "empty_list":
                    # Migrating to another property name: the old properties are emptied in the same job.
                    for old_property in spec.get("clear_properties", []):
                        profile["attributes"]["properties"][old_property] = []
            submission = hook.submit_bulk_import(profiles, spec["list_id"] if batch.add_to_list else None)
            rejected = {batch.changes[i].email: reason for i, reason in submission.rejected.items()}
            recorded[str(index)] = {"job_id": submission.job_id, "rejected": rejected}
            store.write_progress(spec["generation"], spec["key"], progress)
            self.log.info(
                "Bulk import job %s accepted: batch %d of %d, %d contacts%s.",
                submission.job_id,
                index + 1,
                len(batches),
                len(batch.changes) - len(rejected),
                f", {len(rejected)} rejected before import" if rejected else "",
            )

    def wait_inline(self, hook: KlaviyoHook, job_ids: Sequence[str]) -> list[BulkImportJob]:
        deadline = time.monotonic() + self.job_timeout.total_seconds()
        pending = list(job_ids)
        done: list[BulkImportJob] = []
        while pending:
            jobs = [hook.get_bulk_import_job(job_id) for job_id in pending]
            done.extend(job for job in jobs if job.status.is_terminal)
            pending = [job.id for job in jobs if not job.status.is_terminal]
            if pending:
                if time.monotonic() > deadline:
                    raise KlaviyoError(
                        f"{len(pending)} Klaviyo bulk import job(s) did not finish within {self.job_timeout}; "
                        "the task can be retried and will wait for the same jobs (raise job_timeout if Klaviyo "
                        "is only slow)."
                    )
                time.sleep(self.poll_interval)
        return done

    def finish(self, context: Context, jobs: Sequence[BulkImportJob]) -> dict[str, Any]:
        """Read per-profile errors, journal what Klaviyo confirmed, and drop the applied diff."""
        spec = self.spec
        store = StateStore(spec["state_uri"])
        changes = store.read_diff(spec["generation"], spec["key"])
        progress = store.read_progress(spec["generation"], spec["key"])
        hook = self.make_hook(spec)

        rejected: dict[str, str] = {}
        for batch in progress.get("batches", {}).values():
            rejected.update(batch.get("rejected", {}))

        by_id = {job.id: job for job in jobs}
        cancelled = [job_id for job_id, job in by_id.items() if job.status is BulkImportJobStatus.CANCELLED]
        unconfirmed: set[str] = set()
        if cancelled:
            batches = self.bulk_batches(spec, changes, progress)
            for index, batch in list(progress.get("batches", {}).items()):
                if batch.get("job_id") in cancelled:
                    unconfirmed.update(batches[int(index)].emails)
                    del progress["batches"][index]
        _, aliases = store.read_email_aliases()
        normalised = {stored: email for email, stored in aliases.items()}
        for job in jobs:
            if job.failed_count and job.status is BulkImportJobStatus.COMPLETE:
                for error in hook.iter_bulk_import_errors(job.id):
                    if error.email:
                        email = normalised.get(error.email, error.email)
                        rejected[email] = f"{error.code}: {error.detail}"

        excluded = rejected.keys() | unconfirmed
        confirmed = [(change.email, change.new) for change in changes if change.email not in excluded]
        applied_changes = [change for change in changes if change.email not in excluded]
        self.unset_emptied_values(hook, spec, applied_changes, aliases)
        self.unset_old_property(hook, spec, applied_changes, aliases)
        store.write_journal(spec["generation"], spec["key"], confirmed)

        summary = self.new_summary(spec)
        summary.update(
            written=len(confirmed),
            added_to_list=sum(1 for c in changes if c.joins_address_book and c.email not in excluded),
            removed_from_list=progress.get("removed_from_list", 0),
            rejected=len(rejected),
            rejected_reasons=dict(Counter(reason.split(":", 1)[0] for reason in rejected.values())),
            job_ids=sorted(by_id),
            calls=progress.get("calls", 0) + hook.calls_made,
            throttled=progress.get("throttled", 0) + hook.throttled,
            seconds=round(time.time() - progress.get("started_at", time.time()), 1),
        )
        if cancelled:
            store.write_progress(spec["generation"], spec["key"], progress)
            raise KlaviyoError(
                f"Klaviyo cancelled bulk import job(s) {', '.join(cancelled)}; {len(unconfirmed)} contacts were "
                "not written. Retry the task: it resubmits only the cancelled batches."
            )
        store.delete_diff(spec["generation"], spec["key"])
        self.log_summary(summary, rejected)
        return summary

    def unset_emptied_values(
        self, hook: KlaviyoHook, spec: PushSpec, changes: Sequence[ContactChange], aliases: Mapping[str, str]
    ) -> None:
        """With ``empty_value='unset'``, remove the property of contacts left with no segment (one call each)."""
        if spec["empty_value"] != "unset":
            return
        emptied = [change.email for change in changes if not change.new.value and change.old.value]
        self.unset_properties(hook, emptied, [spec["property_name"]], aliases)

    def unset_old_property(
        self, hook: KlaviyoHook, spec: PushSpec, changes: Sequence[ContactChange], aliases: Mapping[str, str]
    ) -> None:
        """With ``empty_value='unset'``, remove the old properties of every contact a migration wrote (one call
        per property and profile)."""
        old_properties = spec.get("clear_properties", [])
        if not old_properties or spec["empty_value"] != "unset":
            return
        written = [change.email for change in changes if needs_profile_write(change)]
        self.unset_properties(hook, written, old_properties, aliases)

    @staticmethod
    def unset_properties(
        hook: KlaviyoHook, emails: Sequence[str], properties: Sequence[str], aliases: Mapping[str, str]
    ) -> None:
        """Remove ``properties`` from the profiles of ``emails``, looked up under Klaviyo's stored spelling."""
        for chunk in chunked(emails, 100):
            for profile_id in hook.get_profile_ids_by_email(
                [aliases.get(email, email) for email in chunk]
            ).values():
                for property_name in properties:
                    hook.unset_profile_property(profile_id, property_name)

    def log_summary(self, summary: dict[str, Any], rejected: dict[str, str]) -> None:
        self.log.info(
            "%r: wrote %d contacts (%d added to the address book, %d removed from it), %d rejected; "
            "jobs %s; %d calls (%d throttled with 429) in %.1f s since the push began.",
            summary["segment_name"],
            summary["written"],
            summary["added_to_list"],
            summary["removed_from_list"],
            summary["rejected"],
            ", ".join(summary["job_ids"]) or "none",
            summary["calls"],
            summary["throttled"],
            summary["seconds"],
        )
        if rejected:
            self.log.warning(
                "%d contacts were rejected by Klaviyo and will be retried on the next run (%s). Examples: %s",
                len(rejected),
                ", ".join(f"{reason}: {count}" for reason, count in summary["rejected_reasons"].items()),
                ", ".join(mask_email(email) for email in sorted(rejected)[:SAMPLE_SIZE]),
            )
