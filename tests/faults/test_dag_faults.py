"""Faults injected during runs of the example DAG under Airflow, on an account the DAG has already synced.

One Airflow home serves the module: a first clean run syncs the generated export, then the next day's export
(joins, leaves, moves, contacts gone) is served and each test injects its faults into a run of the DAG. The
faults that stop a run come first: each must fail the run with an error that says what to fix, and leave
Klaviyo and the applied state exactly as the first run left them. The last test sends every fault that a
retry cures into one run, which converges to the next day's export through the hooks' and Airflow's own
retries. Every run's output, task logs, XCom and rendered templates are scanned for the key and the emails.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest
import requests

from sandbox.harness import DEMO_KLAVIYO_KEY
from tests.e2e.expected import canonical_email
from tests.e2e.test_sync_end_to_end import assert_klaviyo_matches, assert_protocol_clean, writes_by_email
from tests.faults.conftest import put_config
from tests.faults.dag_runs import SyncedAccount

BULK = "^/api/profile-bulk-import-jobs$"
JOB = "^/api/profile-bulk-import-jobs/[^/]+$"


def _revoked_key(account: SyncedAccount) -> None:
    put_config(account.sandbox, {"api_keys": {"pk_the_new_key": None}})


def _no_flows_read(account: SyncedAccount) -> None:
    scopes = ["accounts:read", "lists:read", "lists:write", "profiles:read", "profiles:write"]
    put_config(account.sandbox, {"api_keys": {DEMO_KLAVIYO_KEY: scopes}})


def _proxy_page(account: SyncedAccount) -> None:
    page = "<html><body><h1>403 Forbidden</h1>Request blocked by corporate proxy</body></html>"
    account.sandbox.add_fault(
        {"kind": "status", "method": "GET", "path": "^/api/lists", "status": 403, "body": page}
    )


def _served_export(account: SyncedAccount) -> bytes:
    return gzip.decompress((account.next_day / "export.jsonl.gz").read_bytes())


def _put_export(account: SyncedAccount, body: bytes) -> None:
    requests.put(f"{account.sandbox.nosto}/__sandbox/export", data=body, timeout=30).raise_for_status()


def _empty_export(account: SyncedAccount) -> None:
    _put_export(account, b"")


def _export_cut_mid_line(account: SyncedAccount) -> None:
    text = _served_export(account)
    _put_export(account, gzip.compress(text[: text.index(b"\n", len(text) // 2) - 7]))


def _export_cut_to_half(account: SyncedAccount) -> None:
    lines = _served_export(account).splitlines(keepends=True)
    _put_export(account, gzip.compress(b"".join(lines[: len(lines) // 2])))


def _graphql_error(account: SyncedAccount) -> None:
    body = {"errors": [{"message": "Internal server error", "path": ["segments"]}], "data": None}
    account.sandbox.add_fault(
        {"kind": "status", "path": "^/v1/graphql$", "status": 200, "body": body}, nosto=True
    )


STOPPING_FAULTS: list[tuple[Callable[[SyncedAccount], None], list[str], int]] = [
    # (the fault, what the error must say, how many tries the plan task may take)
    (_revoked_key, ["401", "password of Airflow connection 'klaviyo_default'"], 1),
    (_no_flows_read, ["flows:read", "check_flows=false"], 1),
    (_proxy_page, ["non-JSON body", "'proxies' in the extra of Airflow connection 'klaviyo_default'"], 1),
    (_empty_export, ["holds no valid contact", "refusing to sync an empty address book"], 3),
    (_export_cut_mid_line, ["ends in the middle of a line", "nothing was written"], 3),
    (
        _export_cut_to_half,
        ["Stopped before writing anything", "removal threshold is 30%", "allow_removals=true"],
        1,
    ),
    (_graphql_error, ["Internal server error", "Nothing was written", "retry the task"], 3),
]


@pytest.mark.parametrize(
    ("fault", "messages", "tries"),
    STOPPING_FAULTS,
    ids=[
        "revoked-key",
        "key-without-flows-read",
        "html-403-from-a-proxy",
        "export-empty",
        "export-truncated-mid-line",
        "export-cut-to-half-at-a-line-boundary",
        "graphql-error",
    ],
)
def test_a_stopping_fault_fails_the_dag_run_saying_what_to_fix_and_loses_nothing(
    account: SyncedAccount, fault: Callable[[SyncedAccount], None], messages: list[str], tries: int
) -> None:
    held, files, mark = account.klaviyo_held(), account.state_files(), account.sandbox.write_mark()
    fault(account)
    try:
        returncode, output, stored = account.run()
    finally:
        account.sandbox.clear_faults()
        requests.delete(f"{account.sandbox.nosto}/__sandbox/faults", timeout=30).raise_for_status()
        put_config(account.sandbox, {"api_keys": {DEMO_KLAVIYO_KEY: None}})
        account.sandbox.load_export(account.next_day)

    assert returncode != 0
    assert stored.tasks["plan_sync[-1]"][1] == "failed", stored.tasks
    assert [state for task, (_try, state) in stored.tasks.items() if task.startswith("push_segment")] == [
        "upstream_failed"
    ]
    # A refused key, a missing scope, a proxy or a removal over the threshold gets no Airflow retry; a bad
    # export or a catalogue error may be fixed by the time a retry reads it again.
    assert stored.tasks["plan_sync[-1]"][0] == tries
    for message in messages:
        assert message in output
    assert account.sandbox.writes(mark) == [], "a stopped run wrote to Klaviyo"
    assert account.klaviyo_held() == held
    assert account.state_files() == files, "a stopped run changed the applied state"


def test_faults_a_retry_cures_in_one_dag_run_converge_to_the_next_export(account: SyncedAccount) -> None:
    expected = account.expected(account.next_day)
    before = account.expected(account.data)
    # Two contacts the run writes, stored in Klaviyo (if at all) under their canonical spelling.
    spelled = {canonical_email(p["email"]): p["email"] for p in account.sandbox.state()["profiles"]}
    changed = sorted(
        email
        for email, value in expected.values.items()
        if before.values.get(email) != value and spelled.get(email, email) == email
    )
    refused_in_job = changed[:2]
    rules: list[dict[str, Any]] = [
        # Retried inside the task, by the hook (the job polls run in the triggerer's async hook).
        {"kind": "status", "method": "POST", "path": BULK, "times": 1, "status": 429, "retry_after": 1},
        {"kind": "status", "method": "POST", "path": BULK, "times": 1, "status": 429},
        {"kind": "status", "method": "GET", "path": "^/api/lists", "times": 1, "status": 500},
        {"kind": "status", "method": "GET", "path": JOB, "times": 1, "status": 502},
        {"kind": "status", "method": "POST", "path": BULK, "times": 1, "status": 503},
        {"kind": "status", "method": "GET", "path": "^/api/profiles$", "times": 1, "status": 504},
        {"kind": "delay", "method": "GET", "path": JOB, "times": 1, "seconds": 3},
        {"kind": "reset", "method": "GET", "path": "^/api/lists", "times": 1},
        {"kind": "truncated_json", "method": "GET", "path": JOB, "times": 1},
        {"kind": "html", "method": "POST", "path": BULK, "times": 1},
        # Outcome unknown (Klaviyo may have queued the job): the task fails and Airflow's retry converges.
        {"kind": "status", "method": "POST", "path": BULK, "times": 1, "status": 500},
        {"kind": "reset", "method": "POST", "path": BULK, "times": 1},
        # Two profiles fail inside a completed job: reported masked, written by the next run.
        {"kind": "job_fail_emails", "emails": refused_in_job},
    ]
    for rule in rules:
        account.sandbox.add_fault(rule)

    returncode, output, stored = account.run()

    assert returncode == 0, output[-3000:]
    assert stored.all_succeeded(), stored.tasks
    fired = requests.get(f"{account.sandbox.klaviyo}/__sandbox/faults", timeout=30).json()
    assert [rule["kind"] for rule in fired if rule["fired"] == 0] == [], "every fault met the run"
    retried = sorted(task for task, (tries, _state) in stored.tasks.items() if tries > 1)
    assert retried, "no task needed an Airflow retry"
    assert all(task.startswith("push_segment") for task in retried), stored.tasks
    rejected = sum(value.get("rejected", 0) for value in stored.xcoms if isinstance(value, dict))
    assert rejected == len(refused_in_job)

    account.sandbox.clear_faults()
    mark = account.sandbox.write_mark()
    returncode, output, stored = account.run()

    assert returncode == 0, output[-3000:]
    assert sorted(writes_by_email(account.sandbox, mark)) == refused_in_job
    assert_klaviyo_matches(account.sandbox.state(), expected)
    assert_protocol_clean(account.sandbox)
