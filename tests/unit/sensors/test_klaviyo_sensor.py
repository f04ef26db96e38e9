from __future__ import annotations

import asyncio
import random
import time

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.hooks.pacing import KlaviyoPacer
from airflow_provider_klaviyo_nosto.sensors.klaviyo import KlaviyoBulkImportJobSensor
from airflow_provider_klaviyo_nosto.triggers.klaviyo import KlaviyoBulkImportJobTrigger
from tests.unit.hooks.klaviyo_fixtures import BASE, FakeClock, ScriptedServer, set_connection

JOB_URL = f"{BASE}/api/profile-bulk-import-jobs/JOB1"


def job(status: str) -> dict:
    attributes = {"status": status, "total_count": 2, "completed_count": 2, "failed_count": 0}
    return {"data": {"type": "profile-bulk-import-job", "id": "JOB1", "attributes": attributes}}


def sensor(**kwargs) -> KlaviyoBulkImportJobSensor:
    return KlaviyoBulkImportJobSensor(task_id="wait", job_ids=kwargs.pop("job_ids", "JOB1"), **kwargs)


SCENARIOS = {
    "recovers": (
        [
            (503, {}, {"errors": [{"status": 503, "code": "unavailable"}]}),
            (429, {"Retry-After": "3"}, {"errors": [{"status": 429, "code": "throttled"}]}),
            (503, {}, "<html>busy</html>"),
            (200, {}, job("complete")),
        ],
        "success",
    ),
    "unauthorized": ([(401, {}, {"errors": [{"status": 401, "code": "not_authenticated"}]})], "error"),
    "unknown-job": ([(404, {}, {"errors": [{"status": 404, "code": "not_found"}]})], "error"),
}


def _run_sync(answers, monkeypatch, requests_mock) -> tuple[str, int]:
    set_connection(monkeypatch)
    responses = [
        {"status_code": s, "headers": h, **({"text": b} if isinstance(b, str) else {"json": b})}
        for s, h, b in answers
    ]
    requests_mock.get(JOB_URL, responses)
    clock = FakeClock()
    task = sensor(poll_interval=5)
    task.hook.with_retry_policy(sleep=clock.sleep, rng=random.Random(2))
    task.hook.pacer = KlaviyoPacer(clock=clock, sleep=clock.sleep)
    try:
        result = task.poke({})
    except KlaviyoError:
        return "error", requests_mock.call_count
    assert result.is_done
    return "success", requests_mock.call_count


def _run_deferred(answers, monkeypatch) -> tuple[str, int]:
    async def go() -> tuple[str, int]:
        server = ScriptedServer(answers)
        await server.__aenter__()
        try:
            set_connection(monkeypatch, host=server.url)
            clock = FakeClock()
            trigger = KlaviyoBulkImportJobTrigger(["JOB1"], "klaviyo_default", 5, None)
            trigger._sleep = clock.async_sleep
            events = [e async for e in trigger.run()]
            task = sensor(poll_interval=5)
            try:
                task.execute_complete({}, events[0].payload)
            except KlaviyoError:
                return "error", len(server.requests)
            return "success", len(server.requests)
        finally:
            await server.__aexit__()

    return asyncio.run(go())


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferred"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_codes_same_outcome(monkeypatch, requests_mock, deferrable, scenario):
    """B05: both paths retry 503/429 and stop at once on 401/404."""
    answers, expected = SCENARIOS[scenario]
    if deferrable:
        requests_mock.real_http = True
        outcome, calls = _run_deferred(answers, monkeypatch)
    else:
        outcome, calls = _run_sync(answers, monkeypatch, requests_mock)
    assert outcome == expected
    assert calls == len(answers)


def test_poke_not_done_while_processing(monkeypatch, requests_mock):
    set_connection(monkeypatch)
    requests_mock.get(JOB_URL, json=job("processing"))
    assert not sensor().poke({}).is_done


def test_returns_summary_without_emails(monkeypatch, requests_mock):
    set_connection(monkeypatch)
    requests_mock.get(JOB_URL, json=job("complete"))
    result = sensor(job_ids=["JOB1"]).poke({})
    assert result.xcom_value == [
        {"id": "JOB1", "status": "complete", "total_count": 2, "completed_count": 2, "failed_count": 0}
    ]


@pytest.mark.parametrize("job_ids", ["", [], ["JOB1", " "]])
def test_empty_job_ids_never_polled(monkeypatch, requests_mock, job_ids):
    set_connection(monkeypatch)
    with pytest.raises(ValueError, match="job ids"):
        sensor(job_ids=job_ids).poke({})
    assert requests_mock.call_count == 0


def test_deferrable_defers_with_absolute_deadline(monkeypatch, requests_mock):
    set_connection(monkeypatch)
    requests_mock.get(JOB_URL, json=job("queued"))
    task = sensor(deferrable=True, timeout=600, poll_interval=15)

    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, KlaviyoBulkImportJobTrigger)
    assert trigger.job_ids == ["JOB1"]
    assert trigger.poll_interval == 15
    assert before + 600 <= trigger.deadline <= time.time() + 600
    assert deferred.value.method_name == "execute_complete"


def test_deferrable_returns_at_once_when_already_done(monkeypatch, requests_mock):
    set_connection(monkeypatch)
    requests_mock.get(JOB_URL, json=job("complete"))
    assert sensor(deferrable=True).execute({})[0]["status"] == "complete"


def test_execute_complete_returns_jobs():
    event = {"status": "success", "message": "done", "jobs": [{"id": "JOB1", "status": "complete"}]}
    assert sensor().execute_complete({}, event) == event["jobs"]


def test_job_ids_are_templated():
    assert "job_ids" in KlaviyoBulkImportJobSensor.template_fields
