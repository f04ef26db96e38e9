from __future__ import annotations

import json
import time

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import (
    BulkImportError,
    BulkImportJob,
    BulkImportJobStatus,
    BulkImportSubmission,
)
from airflow_provider_klaviyo_nosto.triggers.klaviyo import KlaviyoBulkImportJobTrigger
from tests.unit.operators.world import LIST_ID, VIP, SyncWorld, completed_job, spec_for

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1 has it only here; 3.2 moved it to the task SDK.
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

ANA = "ana@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
DAN = "dan@example.com"
VIP_TRIO = {ANA: ["vip"], BOB: ["vip"], CAROL: ["vip"]}


def _submitted(world: SyncWorld) -> dict[str, dict]:
    """Email -> the profile object sent for it in any bulk import."""
    return {
        profile["attributes"]["email"]: profile
        for call in world.klaviyo.submit_bulk_import.call_args_list
        for profile in call.args[0]
    }


# -- writing whole values (B13) ------------------------------------------------------------------------


def test_b13_emptied_value_is_written_as_an_empty_list(world: SyncWorld) -> None:
    world.apply({ANA: ["vip"], BOB: ["vip"]})
    world.export({ANA: [], BOB: ["vip"]})

    world.push(spec_for(world.sync(allow_removals=True), VIP.id))

    assert _submitted(world)[ANA]["attributes"]["properties"] == {"nosto_segment": []}


def test_b13_unset_mode_removes_the_property_of_an_emptied_contact(world: SyncWorld) -> None:
    world.configure(empty_value="unset")
    world.apply({ANA: ["vip"], BOB: ["vip"]})
    world.klaviyo.get_profile_ids_by_email.return_value = {ANA: "01HEXAMPLEANA"}
    world.export({ANA: [], BOB: ["vip"]})

    world.push(spec_for(world.sync(allow_removals=True), VIP.id))

    world.klaviyo.unset_profile_property.assert_called_once_with("01HEXAMPLEANA", "nosto_segment")


# -- removals (B14) ----------------------------------------------------------------------------------------


def test_b14_contact_gone_from_nosto_leaves_the_list_by_profile_id(world: SyncWorld) -> None:
    world.apply(VIP_TRIO)
    world.klaviyo.get_profile_ids_by_email.return_value = {CAROL: "01HEXAMPLECAROL"}
    world.export({ANA: ["vip"], BOB: ["vip"]})

    summary = world.push(spec_for(world.sync(allow_removals=True), "address-book"))

    world.klaviyo.get_profile_ids_by_email.assert_called_once_with([CAROL])
    world.klaviyo.remove_profiles_from_list.assert_called_once_with(LIST_ID, ["01HEXAMPLECAROL"])
    assert summary["removed_from_list"] == 1
    assert world.journal(2, "address-book")[CAROL] == (False, [])


def test_b14_contact_already_deleted_in_klaviyo_counts_as_removed(world: SyncWorld) -> None:
    world.apply(VIP_TRIO)
    world.klaviyo.get_profile_ids_by_email.return_value = {}
    world.export({ANA: ["vip"], BOB: ["vip"]})

    summary = world.push(spec_for(world.sync(allow_removals=True), "address-book"))

    assert summary["removed_from_list"] == 1
    assert world.journal(2, "address-book")[CAROL] == (False, [])


def test_b14_contact_already_deleted_in_klaviyo_is_not_recreated(world: SyncWorld) -> None:
    world.apply(VIP_TRIO)
    world.klaviyo.get_profile_ids_by_email.return_value = {}
    world.export({ANA: ["vip"], BOB: ["vip"]})

    world.push(spec_for(world.sync(allow_removals=True), "address-book"))

    assert CAROL not in _submitted(world)


# -- contacts Klaviyo refuses are reported and planned again (B03, B04) ----------------------------------


def _refuse_bob_before_import(world: SyncWorld) -> None:
    world.klaviyo.submit_bulk_import.side_effect = None
    world.klaviyo.submit_bulk_import.return_value = BulkImportSubmission(
        job_id="JOB1", rejected={1: "invalid: the email is not valid"}
    )


def _fail_bob_in_the_job(world: SyncWorld) -> None:
    world.klaviyo.get_bulk_import_job.side_effect = None
    world.klaviyo.get_bulk_import_job.return_value = BulkImportJob(
        "JOB1", BulkImportJobStatus.COMPLETE, 3, 2, 1
    )
    world.klaviyo.iter_bulk_import_errors.side_effect = lambda job_id: iter(
        [BulkImportError(BOB, "invalid", "the email is not valid")]
    )


@pytest.mark.parametrize(
    "refuse_bob", [_refuse_bob_before_import, _fail_bob_in_the_job], ids=["b03-refused", "b04-failed-in-job"]
)
def test_refused_contact_is_reported_masked_and_planned_again(
    world: SyncWorld, refuse_bob, capsys: pytest.CaptureFixture[str]
) -> None:
    world.export(VIP_TRIO)
    refuse_bob(world)

    summary = world.push(spec_for(world.sync(), VIP.id))
    task_log = capsys.readouterr().out

    assert summary["rejected"] == 1
    assert summary["rejected_reasons"] == {"invalid": 1}
    # The XCom summary carries no address at all, not even masked (B17); the log shows it masked.
    assert "@" not in json.dumps(summary)
    assert "b**@e******.com" in task_log
    assert BOB not in task_log
    assert set(world.journal(1, VIP.id)) == {ANA, CAROL}
    assert world.diffs(world.sync()) == {VIP.id: {BOB: ["vip"]}}


# -- retries, resumes and stale pushes (B20) --------------------------------------------------------------


def _job2_cancelled(job_id: str) -> BulkImportJob:
    if job_id == "JOB2":
        return BulkImportJob(job_id, BulkImportJobStatus.CANCELLED, 1, 0, 0)
    return completed_job(job_id)


def test_cancelled_job_fails_the_task_and_the_retry_resubmits_that_batch_only(world: SyncWorld) -> None:
    world.export(VIP_TRIO)
    spec = spec_for(world.sync(), VIP.id)
    world.klaviyo.get_bulk_import_job.side_effect = _job2_cancelled

    with pytest.raises(KlaviyoError, match="Retry"):
        world.push(spec, max_batch_profiles=1)
    assert "JOB2" not in (world.state_dir / "progress" / f"00000001-{VIP.id}.json").read_text()

    world.klaviyo.get_bulk_import_job.side_effect = completed_job
    summary = world.push(spec, max_batch_profiles=1)

    assert world.submitted_emails() == [[ANA], [BOB], [CAROL], [BOB]]
    assert summary["written"] == 3


def test_push_resumed_after_a_crash_does_not_resubmit_accepted_batches(world: SyncWorld) -> None:
    world.export({ANA: ["vip"], BOB: ["vip"], CAROL: ["vip"], DAN: ["new"]})
    specs = world.sync()
    world.klaviyo.submit_bulk_import.side_effect = [
        BulkImportSubmission("JOB1"),
        RuntimeError("worker died"),
        *(BulkImportSubmission(f"JOB{n}") for n in (2, 3, 4)),
    ]
    with pytest.raises(RuntimeError):
        world.push(spec_for(specs, VIP.id), max_batch_profiles=1)
    world.klaviyo.submit_bulk_import.reset_mock()

    # The mapped tasks come back in another order: resume state is found by segment id, not position.
    for spec in reversed(specs):
        world.push(spec, max_batch_profiles=1)

    assert world.submitted_emails() == [[DAN], [BOB], [CAROL]]
    world.klaviyo.get_bulk_import_job.assert_any_call("JOB1")


def test_push_of_a_superseded_plan_does_nothing(world: SyncWorld) -> None:
    world.export({ANA: ["vip"]})
    old_spec = spec_for(world.sync(), VIP.id)
    old_diff = world.state_dir / "diffs" / "00000001" / f"{VIP.id}.jsonl.gz"
    old_bytes = old_diff.read_bytes()
    world.export({ANA: ["vip"], BOB: ["vip"]})
    world.sync()
    # Put the superseded diff back: its generation alone must make the push stale.
    old_diff.parent.mkdir(exist_ok=True)
    old_diff.write_bytes(old_bytes)
    world.klaviyo.reset_mock()

    summary = world.push(old_spec)

    assert summary["outcome"] == "nothing_to_do"
    assert world.klaviyo.method_calls == []


def test_push_rerun_after_success_does_nothing(world: SyncWorld) -> None:
    world.export(VIP_TRIO)
    spec = spec_for(world.sync(), VIP.id)
    world.push(spec)
    world.klaviyo.reset_mock()

    summary = world.push(spec)

    assert summary["outcome"] == "nothing_to_do"
    assert world.klaviyo.method_calls == []


def test_dry_run_spec_pushes_nothing(world: SyncWorld) -> None:
    world.export(VIP_TRIO)

    spec = spec_for(world.sync(dry_run=True), VIP.id)
    world.klaviyo.reset_mock()
    summary = world.push(spec)

    assert summary["outcome"] == "dry_run"
    assert world.klaviyo.method_calls == []


# -- waiting in the triggerer --------------------------------------------------------------------------


def test_deferrable_push_waits_in_the_triggerer_and_finishes_on_success(world: SyncWorld) -> None:
    world.export({ANA: ["vip"], BOB: ["vip"]})
    operator = world.push_operator(spec_for(world.sync(), VIP.id), deferrable=True)

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    trigger = deferred.value.trigger
    summary = operator.execute_complete(
        context={},
        event={"status": "success", "message": "", "jobs": [completed_job("JOB1").to_dict()]},
    )

    assert isinstance(trigger, KlaviyoBulkImportJobTrigger)
    assert trigger.job_ids == ["JOB1"]
    assert trigger.deadline > time.time()
    assert deferred.value.method_name == "execute_complete"
    assert summary["written"] == 2
    assert set(world.journal(1, VIP.id)) == {ANA, BOB}
    world.klaviyo.get_bulk_import_job.assert_not_called()


# -- profiles stored with other letter case -----------------------------------------------------------


def test_existing_profile_spelled_with_capitals_is_written_under_its_spelling(world: SyncWorld) -> None:
    world.klaviyo.iter_profile_emails.side_effect = lambda updated_after=None: iter(
        ["Ana@Example.com", "someone.else@example.com"]
    )
    world.export({ANA: ["vip"], BOB: ["vip"]})

    specs = world.sync()
    world.push(spec_for(specs, VIP.id))

    sent = world.klaviyo.submit_bulk_import.call_args.args[0]
    assert sorted(profile["attributes"]["email"] for profile in sent) == ["Ana@Example.com", BOB]
    # The applied state keeps the normalised address.
    assert set(world.journal(1, VIP.id)) == {ANA, BOB}


def test_later_profile_scans_only_read_profiles_updated_since(world: SyncWorld) -> None:
    world.klaviyo.iter_profile_emails.side_effect = lambda updated_after=None: iter([])
    world.apply({ANA: ["vip"]})
    world.export({ANA: ["vip"], BOB: ["vip"]})

    world.sync()

    (call,) = world.klaviyo.iter_profile_emails.call_args_list
    assert call.kwargs["updated_after"] is not None
