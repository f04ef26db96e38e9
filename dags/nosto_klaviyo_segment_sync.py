"""
Keep Klaviyo in step with Nosto's customer segments, every 12 hours.

Every contact in Nosto's segment export goes into one Klaviyo list (the address book), and each profile's
``nosto_segment`` property lists the chosen Nosto segments the contact belongs to. Each run applies only
what changed since the last applied run, removals included.

Configuration lives in the Airflow Variable ``nosto_klaviyo_segment_sync`` (JSON), which admins edit in the
Airflow UI; ``DEFAULTS`` below fills in whatever the Variable leaves out. The API keys live in the
``klaviyo_default`` and ``nosto_default`` connections. Every task that calls Klaviyo runs in the
``klaviyo_api`` pool, created by the setup step (see the README), so several DAGs or runs never exceed the
account's shared rate limits.

To retry one segment, clear that one ``push_segment`` task instance (it is labelled with the segment's
name): it re-applies its own diff and nothing else. A manually triggered run's params (``segments``,
``dry_run``, ``allow_removals``, ``full_resync``, ``migrate``) are explained in ``docs/lifecycle.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Param, task

from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.segment_targets import KlaviyoSegmentListOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

KLAVIYO_POOL = "klaviyo_api"

DEFAULTS = {
    # Nosto segment ids chosen for syncing; set them in the Variable.
    "segments": [],
    "list_name": "Nosto Customers",
    "property_name": "nosto_segment",
    "empty_value": "empty_list",
    "removal_threshold": 0.10,
    "allowed_flows": [],
    "check_flows": True,
    # Empty = a folder under AIRFLOW_HOME; use s3://, gs://, ... when tasks run on several machines.
    "state_uri": "",
    # Empty = the export URL of the nosto_default connection.
    "export_uri": "",
    "segments_key": "nosto_segments",
    "klaviyo_pool_slots": 4,
    # Optional, per chosen segment: a Klaviyo list mirroring its members, and a Klaviyo segment
    # "nosto_segment contains <name>" (true = every chosen segment, or a list of segment ids).
    "segment_lists": False,
    "segment_list_prefix": "Nosto list: ",
    "klaviyo_segments": False,
    "klaviyo_segment_prefix": "Nosto: ",
}

with DAG(
    dag_id="nosto_klaviyo_segment_sync",
    description="Sync Nosto customer segments to a Klaviyo list and profile property.",
    schedule="0 */12 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
    },
    params={
        "segments": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Push only these chosen segments (ids or names); empty = all chosen segments.",
        ),
        "dry_run": Param(False, type="boolean", description="Report every change and write nothing."),
        "allow_removals": Param(
            False,
            type="boolean",
            description="Allow removing more than the configured share of the address book or a segment.",
        ),
        "full_resync": Param(
            False,
            type="boolean",
            description="Compare with what Klaviyo holds (list members, property values) and repair every "
            "difference; recreates a deleted list.",
        ),
        "migrate": Param(
            False,
            type="boolean",
            description="Move to a changed list_name or property_name: rename the list, rewrite every value.",
        ),
    },
    tags=["klaviyo", "nosto"],
) as dag:
    plan = NostoSegmentSyncOperator(
        task_id="plan_sync",
        defaults=DEFAULTS,
        segment_ids="{{ params.segments }}",
        dry_run="{{ params.dry_run }}",
        allow_removals="{{ params.allow_removals }}",
        full_resync="{{ params.full_resync }}",
        migrate="{{ params.migrate }}",
        pool=KLAVIYO_POOL,
    )

    pushes = KlaviyoSegmentPushOperator.partial(
        task_id="push_segment",
        pool=KLAVIYO_POOL,
        map_index_template="{{ task.push['segment_name'] }}",
    ).expand(push=plan.output)

    # After every push (the profiles of new contacts exist by then), even when one failed: the lists get
    # whatever can be applied, and contacts without a profile are tried again next run.
    segment_lists = KlaviyoSegmentListOperator(
        task_id="sync_segment_lists",
        plan=plan.output,
        pool=KLAVIYO_POOL,
        trigger_rule="all_done_min_one_success",
    )
    pushes >> segment_lists

    # The list task above runs even when a push failed, and a run's state follows its last tasks: this one
    # fails the run whenever a push (or the list task, or the plan before them) failed, and is skipped
    # otherwise.
    @task(trigger_rule="one_failed", retries=0)
    def fail_if_a_push_failed() -> None:
        raise AirflowFailException(
            "A task of this run failed: see the log of the first failed task, which says what to fix. If "
            "plan_sync failed, nothing was written. A failed push_segment task can be cleared on its own to "
            "retry its segment; the segments whose pushes succeeded are applied."
        )

    [pushes, segment_lists] >> fail_if_a_push_failed()
