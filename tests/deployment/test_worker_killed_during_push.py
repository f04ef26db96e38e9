"""
A push task's process is killed with SIGKILL half-way through its bulk imports; Airflow's retry converges.

The second run of a sync gives the address book's push task two bulk import batches: a contact joining it in no
segment (added to the evolved export here), then contacts gone from Nosto, whose value empties. The sandbox holds the answer to the second
batch's POST, so the task is ``running`` with the first batch's job id already checkpointed in its progress
file; the test kills that task's process (the pid the REST API reports) and lets the DAG's own retries
run it again.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from airflow_provider_klaviyo_nosto.sync.batching import plan_bulk_batches
from airflow_provider_klaviyo_nosto.sync.model import ADDRESS_BOOK_KEY
from airflow_provider_klaviyo_nosto.sync.state import read_diff
from sandbox.harness import evolve_data
from tests.deployment.conftest import catalogue, start_fresh
from tests.deployment.deployment import STATE_BUCKET, AirflowDeployment, wait_for
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import canonical_email, expected_from_export
from tests.e2e.test_sync_end_to_end import PROPERTY, assert_klaviyo_matches

pytestmark = pytest.mark.deployment

PUSH = "push_segment"
STATE_FOLDER = "worker-killed"
BULK_IMPORT = "/api/profile-bulk-import-jobs"
#: How long the sandbox holds the second batch's answer: the kill lands well inside it.
HOLD_SECONDS = 8


def read_state_file(deployment: AirflowDeployment, key: str) -> bytes:
    """A file of this test's applied state, straight from the bucket."""
    client = boto3.client(
        "s3",
        endpoint_url=deployment.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="deployment-test",
        aws_secret_access_key="deployment-test",
    )
    body: bytes = client.get_object(Bucket=STATE_BUCKET, Key=f"{STATE_FOLDER}/{key}")["Body"].read()
    return body


def leaving_contact(first: Path, second: Path, seeded: list[dict[str, Any]]) -> str:
    """A contact in a segment on day one and gone from the export on day two.

    The address book's push task owns it; a profile Klaviyo stores with other letter case is sent under that
    spelling, so such contacts are passed over to keep the body match exact.
    """
    names = {segment["name"]: segment["id"] for segment in catalogue(first)}
    before = expected_from_export(first / "export.jsonl.gz", set(names)).values
    after = expected_from_export(second / "export.jsonl.gz", set(names)).values
    spelled_otherwise = {canonical_email(profile["email"]) for profile in seeded} - {
        profile["email"] for profile in seeded
    }
    for email in sorted(before):
        if before[email] and email not in after and email not in spelled_otherwise:
            return email
    raise AssertionError("the evolved export has no contact leaving a segment and the address book")


def add_newcomer_in_no_segment(export: Path, email: str) -> None:
    """Append a contact new to Nosto and in no segment: the address book's task writes it in a batch of its own."""
    lines = gzip.decompress(export.read_bytes()).rstrip(b"\n") + b"\n"
    line = json.dumps({"email": email, "nosto_segments": []}).encode() + b"\n"
    export.write_bytes(gzip.compress(lines + line))


def ancestors(pid: int) -> list[int]:
    """The parent process ids of ``pid``, nearest first, read from /proc."""
    chain = []
    while pid > 1:
        # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")".
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def fault_in_flight(sandbox: Sandbox) -> bool:
    rules = requests.get(f"{sandbox.klaviyo}/__sandbox/faults", timeout=30).json()
    return any(rule["kind"] == "delay" and rule["fired"] for rule in rules)


def held_request_answered(sandbox: Sandbox, since: int) -> dict[str, Any] | None:
    return next(
        (
            entry
            for entry in sandbox.requests_log(since)
            if entry["method"] == "POST" and entry["path"] == BULK_IMPORT and entry["fault"]
        ),
        None,
    )


def test_push_killed_with_a_checkpointed_job_is_retried_and_imports_that_batch_once(
    deployment: AirflowDeployment, sandbox: Sandbox, data: Path, tmp_path: Path
) -> None:
    start_fresh(deployment, sandbox, data, STATE_FOLDER)
    first = deployment.trigger()
    assert deployment.wait_for_run(first) == "success"

    day_two = evolve_data(data, tmp_path / "day-two", seed=12)
    seeded = json.loads((data / "klaviyo-seed.json").read_text())
    email = leaving_contact(data, day_two, seeded)
    add_newcomer_in_no_segment(day_two / "export.jsonl.gz", "newcomer.in.no.segment@example.com")
    sandbox.load_export(day_two)
    sandbox.add_fault(
        {
            "kind": "delay",
            "method": "POST",
            "path": f"^{BULK_IMPORT}$",
            "body_contains": email,
            "seconds": HOLD_SECONDS,
            "times": 1,
        }
    )
    write_mark = sandbox.write_mark()
    request_mark = len(sandbox.requests_log())
    run_id = deployment.trigger()

    wait_for(
        "the plan task",
        lambda: deployment.task_instances(run_id, "plan_sync")[0]["state"] == "success",
        timeout=120,
        interval=0.5,
    )
    specs: list[dict[str, Any]] = deployment.xcom(run_id, "plan_sync")
    [(index, spec)] = [(i, spec) for i, spec in enumerate(specs) if spec["key"] == ADDRESS_BOOK_KEY]
    generation = spec["generation"]
    # The POST carrying the leaving contact has reached the sandbox and is being held.
    wait_for("the second batch's POST", lambda: fault_in_flight(sandbox), timeout=120, interval=0.2)

    diff = read_state_file(deployment, f"diffs/{generation:08d}/{ADDRESS_BOOK_KEY}.jsonl.gz")
    batches = plan_bulk_batches(list(read_diff(io.BytesIO(diff))), PROPERTY)
    # The held POST is the push's second and last batch.
    assert len(batches) == 2
    assert email in batches[1].emails
    progress = json.loads(read_state_file(deployment, f"progress/{generation:08d}-{ADDRESS_BOOK_KEY}.json"))
    checkpointed = progress["batches"]["0"]["job_id"]
    assert set(progress["batches"]) == {"0"}, "only the first batch is checkpointed when the task is killed"

    [victim] = [ti for ti in deployment.task_instances(run_id, PUSH) if ti["map_index"] == index]
    assert (victim["state"], victim["rendered_map_index"]) == ("running", spec["segment_name"])
    assert victim["hostname"] in (socket.gethostname(), socket.getfqdn())
    pid: int = victim["pid"]
    # The task process is a descendant of the scheduler the deployment started (LocalExecutor worker, then
    # the task supervisor): never some other process that happens to reuse the pid.
    assert deployment.processes["scheduler"].pid in ancestors(pid)
    os.kill(pid, signal.SIGKILL)

    # The sandbox answers the held request after the kill (a job the killed task never learnt of).
    wait_for("the held POST to be answered", lambda: held_request_answered(sandbox, request_mark), 60, 0.5)
    assert deployment.wait_for_run(run_id) == "success"

    pushes = deployment.task_instances(run_id, PUSH)
    retried = pushes[index]
    assert retried["try_number"] > victim["try_number"]
    assert [ti["state"] for ti in pushes] == ["success"] * len(specs)

    # Bulk jobs write when they complete, which the sandbox notices on its next request.
    wait_for(
        "every bulk job to complete",
        lambda: {job["status"] for job in sandbox.state()["jobs"]} == {"complete"},
        timeout=60,
        interval=0.5,
    )
    writes = Counter(canonical_email(write["email"]) for write in sandbox.writes(write_mark))
    first_batch = {canonical_email(address) for address in batches[0].emails}
    second_batch = {canonical_email(address) for address in batches[1].emails}
    # The retry waited for the checkpointed job instead of submitting the first batch again.
    assert {writes[address] for address in first_batch} == {1}, "the checkpointed batch was imported again"
    assert [job["total_count"] for job in sandbox.state()["jobs"] if job["id"] == checkpointed] == [
        len(batches[0].emails)
    ]
    # The batch whose answer the kill lost was accepted, but its job id never reached the progress file:
    # the retry cannot know that job and imports the batch again (same values). Everything else once.
    assert {writes[address] for address in second_batch} == {2}
    assert {address for address, count in writes.items() if count != 1} == second_batch

    chosen = {segment["name"] for segment in catalogue(data)}
    assert_klaviyo_matches(sandbox.state(), expected_from_export(day_two / "export.jsonl.gz", chosen))
    sandbox.clear_faults()
