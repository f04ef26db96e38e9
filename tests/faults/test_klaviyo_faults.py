"""Faults Klaviyo or the network throw at a sync: each ends in the right Klaviyo state or a clear error.

A fault the hook may retry by Klaviyo's rules (429, 503, anything on a read) is retried inside the task and
the run converges. A fault that leaves a create's outcome unknown (500/502/504, a read timeout, a reset or a
cut-off answer on the bulk import POST) fails the task with an error that says to retry it; the retry,
which Airflow makes by itself, converges without a twin profile.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from tests.e2e.conftest import SYNC_SCOPES
from tests.faults.conftest import FaultWorld, put_config

BULK = "^/api/profile-bulk-import-jobs$"
JOB = "^/api/profile-bulk-import-jobs/[^/]+$"

ALL_SCOPES = SYNC_SCOPES


def _rule(kind: str, method: str, path: str, times: int = 1, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "method": method, "path": path, "times": times, **fields}


@pytest.mark.parametrize(
    "rule",
    [
        _rule("status", "POST", BULK, times=2, status=429, retry_after=1),
        _rule("status", "POST", BULK, times=2, status=429),
        _rule("status", "GET", "^/api/lists$", times=1, status=500),
        _rule("status", "GET", JOB, times=1, status=502),
        _rule("status", "POST", BULK, times=1, status=503),
        _rule("status", "GET", "^/api/profiles$", times=1, status=504),
        _rule("delay", "GET", JOB, seconds=3),
        _rule("reset", "GET", "^/api/lists$"),
        _rule("html", "POST", BULK),
        _rule("truncated_json", "GET", JOB),
    ],
    ids=[
        "429-burst-with-retry-after",
        "429-without-retry-after",
        "500-on-a-read",
        "502-on-a-job-poll",
        "503-on-the-bulk-import",
        "504-on-a-read",
        "read-timeout-on-a-job-poll",
        "connection-reset-on-a-read",
        "html-403-challenge-from-the-edge",
        "truncated-json-on-a-job-poll",
    ],
)
def test_retried_inside_the_task_and_converges(world: FaultWorld, rule: dict[str, Any]) -> None:
    world.sandbox.add_fault(rule)

    summaries = world.sync()

    assert world.fired() == [rule["kind"]] * rule["times"]
    world.assert_converged()
    throttled = sum(summary.get("throttled", 0) for summary in summaries)
    assert throttled == (rule["times"] if rule.get("status") == 429 else 0), "the 429s are reported"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_rule("status", "POST", BULK, status=500), "with 500"),
        (_rule("status", "POST", BULK, status=502), "with 502"),
        (_rule("status", "POST", BULK, status=504), "with 504"),
        (_rule("delay", "POST", BULK, seconds=3), "could not be completed: ReadTimeout"),
        (_rule("reset", "POST", BULK), "could not be completed: ConnectionError"),
        (_rule("truncated_json", "POST", BULK), "not a JSON document"),
    ],
    ids=["500", "502", "504", "read-timeout", "connection-reset", "truncated-json"],
)
def test_unknown_outcome_of_a_bulk_import_fails_the_try_and_the_retry_converges(
    world: FaultWorld, rule: dict[str, Any], message: str
) -> None:
    world.sandbox.add_fault(rule)

    world.sync_with_task_retries()

    assert len(world.errors) == 1, "exactly the try that met the fault failed, and only once"
    assert message in world.errors[0]
    assert "Retry the task" in world.errors[0]
    # Not repeated inside the task: Klaviyo may have queued the job, and a blind repeat would import the
    # batch under a job id nobody reads the errors of.
    posts = [
        e
        for e in world.klaviyo_calls()
        if e["method"] == "POST" and e["path"] == "/api/profile-bulk-import-jobs"
    ]
    assert sum(1 for e in posts if e.get("fault")) == 1
    world.assert_converged()


def test_retry_after_longer_than_a_task_should_sleep_fails_at_once_then_the_retry_converges(
    world: FaultWorld,
) -> None:
    world.sandbox.add_fault(_rule("status", "POST", BULK, status=429, retry_after=3600))

    summaries = world.sync_with_task_retries()

    (error,) = world.errors
    assert "asked to wait 3600 s" in error
    assert "retry_delay" in error
    throttled_posts = [e for e in world.klaviyo_calls(status=429) if e["method"] == "POST"]
    assert len(throttled_posts) == 1, "no second try inside the task"
    # The summary covers every try of the push: the failed try's one 429, and none in the retry.
    assert sum(summary.get("throttled", 0) for summary in summaries) == 1
    world.assert_converged()


def test_html_403_from_a_proxy_fails_at_once_naming_what_to_check(world: FaultWorld) -> None:
    page = "<html><body><h1>403 Forbidden</h1>Request blocked by corporate proxy</body></html>"
    world.sandbox.add_fault(_rule("status", "POST", BULK, status=403, body=page))

    # Not retried inside the task, nor by Airflow: the proxy has to be fixed first.
    world.fails(world.sync_with_task_retries, AirflowFailException)

    (error,) = world.errors[:1]
    assert "non-JSON body" in error
    assert "'proxies' in the extra of Airflow connection 'klaviyo_default'" in error
    assert len(world.klaviyo_calls(status=403)) == 1
    # Once the proxy lets the calls through, the next run applies everything, the stopped push's share too.
    world.sync()
    world.assert_converged()


def test_cancelled_bulk_job_fails_the_try_and_the_retry_resubmits_only_that_batch(world: FaultWorld) -> None:
    world.sandbox.add_fault({"kind": "job_cancel", "times": 1})

    summaries = world.sync_with_task_retries()

    (error,) = world.errors
    assert "cancelled bulk import job" in error
    assert "Retry the task" in error
    jobs = world.sandbox.state()["jobs"]
    assert [job["status"] for job in jobs].count("cancelled") == 1
    # Every batch became one job, plus the cancelled batch sent once more; nothing else was resent.
    assert len(jobs) == sum(len(summary.get("job_ids", [])) for summary in summaries) + 1
    world.assert_converged()


def test_profiles_failed_inside_a_job_are_reported_masked_and_retried_next_run(world: FaultWorld) -> None:
    failing = sorted(email for email, names in world.expected().values.items() if names and email.isascii())[
        :3
    ]
    world.sandbox.add_fault({"kind": "job_fail_emails", "emails": failing, "reason": "Invalid phone number."})

    first = world.sync()

    assert sum(summary.get("rejected", 0) for summary in first) == 3
    held = {profile["email"] for profile in world.sandbox.state()["profiles"]}
    assert not set(failing) & held, "the failed profiles were not imported"

    world.sandbox.clear_faults()
    second = world.sync()

    assert sum(summary.get("written", 0) for summary in second) == 3, "exactly the failed contacts again"
    world.assert_converged()


def test_job_that_never_finishes_within_the_task_limit_fails_and_keeps_the_diff(world: FaultWorld) -> None:
    world.sandbox.add_fault({"kind": "job_never_finishes"})
    specs = world.plan()
    spec = max(specs, key=lambda item: item["contacts_to_write"])

    error = world.fails(
        lambda: world.push(spec, deferrable=True, job_timeout=timedelta(seconds=2)), KlaviyoError
    )

    assert "not finished by the deadline" in error
    assert "Retry the task: it waits for the same jobs" in error
    assert world.diff_kept(spec), "the diff is kept for the retry"


def test_job_held_past_the_task_limit_is_waited_for_again_by_the_retry(world: FaultWorld) -> None:
    world.sandbox.add_fault({"kind": "hold_jobs"})
    specs = world.plan()
    spec = max(specs, key=lambda item: item["contacts_to_write"])

    error = world.fails(lambda: world.push(spec, job_timeout=timedelta(seconds=1)), KlaviyoError)
    assert "did not finish within" in error
    assert "will wait for the same jobs" in error
    accepted = len([e for e in world.klaviyo_calls(status=202)])

    world.sandbox.clear_faults()
    requests.post(f"{world.sandbox.klaviyo}/__sandbox/jobs/release", timeout=30).raise_for_status()
    world.push(spec)
    assert len([e for e in world.klaviyo_calls(status=202)]) == accepted, "no job was submitted twice"
    for other in specs:
        if other is not spec:
            world.push(other)
    world.assert_converged()


def test_revoked_key_fails_at_once_naming_the_connection(world: FaultWorld) -> None:
    specs = world.plan()
    put_config(world.sandbox, {"api_keys": {"pk_the_new_key": None}})
    spec = max(specs, key=lambda item: item["contacts_to_write"])

    # AirflowFailException: Airflow fails the task without spending its retries on a key that is wrong.
    error = world.fails(lambda: world.push(spec), AirflowFailException)

    assert "401" in error
    assert "password of Airflow connection 'klaviyo_default'" in error
    assert len(world.klaviyo_calls(status=401)) == 1, "no retries"
    assert world.diff_kept(spec), "nothing planned is lost"


@pytest.mark.parametrize(
    ("missing", "step"),
    [("profiles:write", "push"), ("flows:read", "plan")],
)
def test_missing_scope_fails_at_once_naming_the_scope(world: FaultWorld, missing: str, step: str) -> None:
    scopes = [scope for scope in ALL_SCOPES if scope != missing]
    if step == "plan":
        put_config(world.sandbox, {"api_keys": {"pk_sandbox_demo_key": scopes}})
        error = world.fails(world.plan, AirflowFailException)
        assert "or set check_flows=false" in error
    else:
        specs = world.plan()
        put_config(world.sandbox, {"api_keys": {"pk_sandbox_demo_key": scopes}})
        spec = max(specs, key=lambda item: item["contacts_to_write"])
        error = world.fails(lambda: world.push(spec), AirflowFailException)

    assert missing in error
    assert "403" in error or "scope" in error
    assert len(world.klaviyo_calls(status=403)) == 1, "no retries"
