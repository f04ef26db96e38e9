from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoError
from airflow_provider_klaviyo_nosto.triggers.klaviyo import (
    KlaviyoBulkImportJobTrigger,
    validate_bulk_import_event,
)
from tests.unit.hooks.klaviyo_fixtures import API_KEY, FakeClock, ScriptedServer, set_connection

JOB_PATH = "/api/profile-bulk-import-jobs/JOB1"
CLASSPATH = "airflow_provider_klaviyo_nosto.triggers.klaviyo.KlaviyoBulkImportJobTrigger"


def job(status: str, job_id: str = "JOB1", failed: int = 0) -> dict:
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "id": job_id,
            "attributes": {
                "status": status,
                "total_count": 3,
                "completed_count": 3 - failed,
                "failed_count": failed,
            },
        }
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def ok(body: dict) -> tuple[int, dict[str, str], object]:
    return 200, {}, body


async def serve(monkeypatch: pytest.MonkeyPatch, answers: list) -> ScriptedServer:
    server = ScriptedServer(answers)
    await server.__aenter__()
    set_connection(monkeypatch, host=server.url)
    return server


def make_trigger(clock: FakeClock, job_ids=("JOB1",), poll_interval=5.0, deadline=None):
    trigger = KlaviyoBulkImportJobTrigger(
        job_ids=list(job_ids), conn_id="klaviyo_default", poll_interval=poll_interval, deadline=deadline
    )
    trigger._sleep = clock.async_sleep
    trigger._clock = clock
    return trigger


async def run_to_event(trigger: KlaviyoBulkImportJobTrigger) -> dict:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


class TestSerialization:
    """B07."""

    def test_serialize_is_exact(self):
        trigger = KlaviyoBulkImportJobTrigger(
            job_ids=["JOB1", "JOB2"], conn_id="klaviyo_default", poll_interval=30.0, deadline=1743294600.0
        )
        assert trigger.serialize() == (
            CLASSPATH,
            {
                "job_ids": ["JOB1", "JOB2"],
                "conn_id": "klaviyo_default",
                "poll_interval": 30.0,
                "deadline": 1743294600.0,
            },
        )

    def test_round_trip_through_json(self):
        deadline = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
        trigger = KlaviyoBulkImportJobTrigger(
            job_ids=("JOB1", "JOB2"),
            conn_id="klaviyo_default",
            poll_interval=timedelta(seconds=30),
            deadline=deadline,
        )
        classpath, kwargs = trigger.serialize()
        stored = json.dumps(kwargs)
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**json.loads(stored))

        assert rebuilt.serialize() == (classpath, kwargs)
        assert rebuilt.job_ids == ["JOB1", "JOB2"]
        assert isinstance(rebuilt.poll_interval, float)
        assert rebuilt.poll_interval == 30.0
        assert datetime.fromtimestamp(rebuilt.deadline, tz=UTC) == deadline
        assert API_KEY not in stored
        assert "pk_" not in stored

    def test_naive_deadline_refused(self):
        with pytest.raises(ValueError, match="timezone"):
            KlaviyoBulkImportJobTrigger(["JOB1"], "klaviyo_default", 30, datetime(2025, 3, 30))


class TestRun:
    @pytest.mark.asyncio
    async def test_polls_until_complete(self, clock, monkeypatch):
        server = await serve(
            monkeypatch, [ok(job("queued")), ok(job("processing")), ok(job("complete", failed=1))]
        )
        try:
            event = await run_to_event(make_trigger(clock))
        finally:
            await server.__aexit__()

        assert event["status"] == "success"
        assert event["jobs"] == [
            {"id": "JOB1", "status": "complete", "total_count": 3, "completed_count": 2, "failed_count": 1}
        ]
        # One second, then doubling towards the 5 s poll interval.
        assert clock.sleeps == [1.0, 2.0]
        assert [path for _, path, _ in server.requests] == [JOB_PATH] * 3

    @pytest.mark.asyncio
    async def test_sends_klaviyo_headers(self, clock, monkeypatch):
        server = await serve(monkeypatch, [ok(job("complete"))])
        try:
            await run_to_event(make_trigger(clock))
        finally:
            await server.__aexit__()
        headers = server.requests[0][2]
        assert headers["Authorization"] == f"Klaviyo-API-Key {API_KEY}"
        assert headers["revision"] == "2026-07-15"
        assert headers["accept"] == "application/vnd.api+json"
        assert headers["User-Agent"].startswith("airflow-provider-klaviyo-nosto/")

    @pytest.mark.asyncio
    async def test_no_tight_loop_on_errors(self, clock, monkeypatch):
        """B05: 503, 429 (Retry-After 3), 503, then complete."""
        server = await serve(
            monkeypatch,
            [
                (503, {}, {"errors": [{"status": 503, "code": "unavailable"}]}),
                (429, {"Retry-After": "3"}, {"errors": [{"status": 429, "code": "throttled"}]}),
                (503, {}, "<html>busy</html>"),
                ok(job("complete")),
            ],
        )
        try:
            event = await run_to_event(make_trigger(clock, poll_interval=5.0))
        finally:
            await server.__aexit__()

        assert event["status"] == "success"
        assert len(server.requests) == 4
        assert len(clock.sleeps) == 3
        assert clock.sleeps[0] >= 5.0
        assert clock.sleeps[1] >= 3.0
        assert clock.sleeps[2] >= 5.0

    @pytest.mark.asyncio
    @pytest.mark.parametrize("status", [401, 403, 404])
    async def test_terminal_error_ends_at_once(self, clock, monkeypatch, status):
        server = await serve(
            monkeypatch, [(status, {}, {"errors": [{"status": status, "code": "x", "detail": "no"}]})]
        )
        try:
            event = await run_to_event(make_trigger(clock))
        finally:
            await server.__aexit__()

        assert event["status"] == "error"
        assert "JOB1" in event["message"]
        assert API_KEY not in event["message"]
        assert len(server.requests) == 1
        assert clock.sleeps == []

    @pytest.mark.asyncio
    async def test_deadline_gives_timeout(self, clock, monkeypatch):
        server = await serve(monkeypatch, [ok(job("processing"))])
        try:
            event = await run_to_event(make_trigger(clock, deadline=clock() + 7))
        finally:
            await server.__aexit__()

        assert event["status"] == "timeout"
        assert event["jobs"][0]["status"] == "processing"
        assert sum(clock.sleeps) <= 7

    @pytest.mark.asyncio
    async def test_finished_jobs_are_not_polled_again(self, clock, monkeypatch):
        server = await serve(
            monkeypatch, [ok(job("complete")), ok(job("queued", "JOB2")), ok(job("cancelled", "JOB2"))]
        )
        try:
            event = await run_to_event(make_trigger(clock, job_ids=["JOB1", "JOB2"]))
        finally:
            await server.__aexit__()

        assert event["status"] == "success"
        assert [j["status"] for j in event["jobs"]] == ["complete", "cancelled"]
        assert [path.rsplit("/", 1)[1] for _, path, _ in server.requests] == ["JOB1", "JOB2", "JOB2"]

    @pytest.mark.asyncio
    async def test_empty_job_id_is_never_polled(self, clock, monkeypatch):
        server = await serve(monkeypatch, [ok(job("complete"))])
        try:
            event = await run_to_event(make_trigger(clock, job_ids=[""]))
        finally:
            await server.__aexit__()
        assert event["status"] == "error"
        assert server.requests == []


class TestValidateEvent:
    def test_success_passes(self):
        event = {"status": "success", "message": "ok", "jobs": []}
        assert validate_bulk_import_event(event) == event

    @pytest.mark.parametrize(
        "event",
        [
            None,
            "success",
            {"status": "weird", "jobs": []},
            {"status": "error", "message": "401", "jobs": []},
            {"status": "timeout", "message": "late", "jobs": []},
        ],
    )
    def test_everything_else_raises(self, event):
        with pytest.raises(KlaviyoError):
            validate_bulk_import_event(event)
