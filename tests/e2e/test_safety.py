"""
No email sent by surprise, nothing lost by accident (SPEC 1.5, 1.6, 1.7 dry run), shown against the sandbox.

Each test runs the operators in this process (see ``inprocess.py``) with a small, hand-written export, so it
can say exactly which contact Klaviyo should hold and that nothing at all was written when a run stops.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.sync.export import EmptyExportError
from sandbox.harness import DEMO_KLAVIYO_KEY, AirflowEnvironment
from tests.e2e.conftest import Sandbox
from tests.e2e.inprocess import LIST_NAME, SyncRunner, email, new_runner

pytestmark = pytest.mark.e2e

CATALOGUE = {"seg-a": "Loyal Customers", "seg-b": "Brand fans: Nike"}
#: 100 contacts: 0-19 in both segments, 20-59 loyal only, the rest in the address book only.
FIRST = {
    email(n): (["Loyal Customers", "Brand fans: Nike"] if n < 20 else ["Loyal Customers"] if n < 60 else [])
    for n in range(100)
}
WELCOME = {"id": "WeLc0m", "name": "Welcome series", "status": "live", "trigger_type": "Added to List"}
DRAFT = {"id": "DrAft1", "name": "Unfinished idea", "status": "draft", "trigger_type": "Added to List"}


@pytest.fixture
def runner(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyncRunner:
    runner = new_runner(sandbox, tmp_path, monkeypatch)
    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1)
    return runner


def state_files(runner: SyncRunner) -> dict[str, bytes]:
    root = Path(runner.state_uri.removeprefix("file://"))
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


# -- flows -------------------------------------------------------------------------------------------


def test_live_flow_on_the_list_stops_the_run_before_any_write_until_allowed_by_id(runner: SyncRunner) -> None:
    runner.sandbox.seed_profiles([{"email": "someone.else@example.org", "lists": [LIST_NAME]}])
    runner.set_klaviyo_config(flows={LIST_NAME: [WELCOME, DRAFT]})
    runner.nosto(CATALOGUE, FIRST)
    mark = runner.request_mark()

    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()

    message = str(stopped.value)
    assert "'Welcome series' (id WeLc0m)" in message
    assert "allowed_flows" in message
    assert "Unfinished idea" not in message, "a draft flow sends nothing and must not stop the run"
    assert runner.write_calls_since(mark) == []
    assert state_files(runner) == {}
    assert runner.klaviyo().members() == {"someone.else@example.org"}

    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, allowed_flows=["WeLc0m"])
    runner.run()

    assert runner.klaviyo().members() == set(FIRST) | {"someone.else@example.org"}


def test_key_without_flows_read_stops_naming_the_scope_and_the_switch(runner: SyncRunner) -> None:
    runner.nosto(CATALOGUE, FIRST)
    runner.run()
    scopes = ["accounts:read", "lists:read", "lists:write", "profiles:read", "profiles:write"]
    runner.set_klaviyo_config(api_keys={DEMO_KLAVIYO_KEY: scopes})
    runner.nosto(CATALOGUE, {**FIRST, email(100): ["Loyal Customers"]})
    mark = runner.request_mark()
    before = state_files(runner)

    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()

    assert "flows:read" in str(stopped.value)
    assert "check_flows=false" in str(stopped.value)
    assert runner.write_calls_since(mark) == []
    assert state_files(runner) == before

    runner.configure(segments=list(CATALOGUE), klaviyo_pool_slots=1, check_flows=False)
    runner.run()

    assert email(100) in runner.klaviyo().members()


def test_dry_run_says_in_the_real_runs_words_that_a_deleted_list_would_stop_it(
    runner: SyncRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    runner.nosto(CATALOGUE, FIRST)
    runner.run()
    (book,) = runner.klaviyo().lists_named(LIST_NAME)
    assert runner.klaviyo_api("DELETE", f"/api/lists/{book['id']}").status_code == 204
    runner.nosto(CATALOGUE, {**FIRST, email(100): ["Loyal Customers"]})
    mark = runner.request_mark()
    before = state_files(runner)
    capsys.readouterr()

    runner.plan(dry_run=True)

    dry_run_log = capsys.readouterr().out
    assert runner.write_calls_since(mark) == []
    assert state_files(runner) == before
    with pytest.raises(KlaviyoConfigError, match="full_resync=true") as stopped:
        runner.plan()
    assert f"A real run would stop: {stopped.value}" in dry_run_log


# -- removal guard -----------------------------------------------------------------------------------


def test_empty_export_stops_the_run_and_keeps_everything(runner: SyncRunner) -> None:
    runner.nosto(CATALOGUE, FIRST)
    runner.run()
    before, files = runner.klaviyo().state["profiles"], state_files(runner)
    runner.nosto(CATALOGUE, {})
    mark = runner.request_mark()

    with pytest.raises(EmptyExportError):
        runner.plan()

    assert runner.write_calls_since(mark) == []
    assert runner.klaviyo().state["profiles"] == before
    assert state_files(runner) == files


def test_removals_over_the_threshold_stop_naming_the_numbers_until_allowed(runner: SyncRunner) -> None:
    runner.nosto(CATALOGUE, FIRST)
    runner.run()

    # 15 of 100 contacts gone from Nosto: over 10% of the address book.
    runner.nosto(CATALOGUE, {address: names for address, names in FIRST.items() if address >= email(15)})
    mark = runner.request_mark()
    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()
    assert "address book: 15 of 100 members" in str(stopped.value)
    assert "allow_removals=true" in str(stopped.value)
    assert runner.write_calls_since(mark) == []

    # 3 of the 20 'Brand fans: Nike' members leave it but stay in Nosto: 3% of the book, 15% of the segment.
    fewer_fans = {
        address: (["Loyal Customers"] if n < 3 else names) for n, (address, names) in enumerate(FIRST.items())
    }
    runner.nosto(CATALOGUE, fewer_fans)
    with pytest.raises(KlaviyoConfigError) as stopped:
        runner.plan()
    assert "segment 'Brand fans: Nike' (seg-b): 3 of 20 members" in str(stopped.value)
    assert "address book" not in str(stopped.value)
    assert runner.write_calls_since(mark) == []

    runner.run(allow_removals=True)

    values = runner.klaviyo().values()
    assert [values[email(n)] for n in (0, 3)] == [
        ["Loyal Customers"],
        ["Brand fans: Nike", "Loyal Customers"],
    ]


# -- dry run, through the DAG's params ----------------------------------------------------------------


def test_dry_run_dag_reports_per_segment_and_writes_nothing(
    airflow_home: Path, runner: SyncRunner, sandbox: Sandbox
) -> None:
    runner.nosto(CATALOGUE, FIRST)
    runner.run()
    # Next day: 0-4 leave Nike, 60-64 join Loyal, 95-99 are gone from Nosto, 100-102 are new, and the
    # catalogue renames Nike (the export still carries the old name), so every Nike member is updated.
    second = {address: list(names) for address, names in FIRST.items() if address < email(95)}
    for n in range(5):
        second[email(n)] = ["Loyal Customers"]
        second[email(60 + n)] = ["Loyal Customers"]
    for n in range(100, 103):
        second[email(n)] = ["Brand fans: Nike"]
    runner.nosto({**CATALOGUE, "seg-b": "Brand fans: Nike (EU)"}, second)
    files, profiles = state_files(runner), sandbox.state()["profiles"]
    mark = runner.request_mark()
    airflow = AirflowEnvironment(
        home=airflow_home, klaviyo_url=sandbox.klaviyo, nosto_url=sandbox.nosto, config=runner.config
    )

    run = airflow.run_dag(conf={"dry_run": True})

    assert runner.write_calls_since(mark) == []
    assert sandbox.state()["profiles"] == profiles
    assert state_files(runner) == files
    # (added, removed, updated) per push task, read from the XCom summaries.
    expected = {
        # 60-64 join; 0-19 stay, and their value changes with Nike's rename or their leaving Nike.
        "seg-a": (5, 0, 20),
        # 20 members before; 0-4 leave, 100-102 join, 5-19 stay with the new name in their value.
        "seg-b": (3, 5, 15),
        # 95-99 leave the book; 0-4 (left Nike), 5-19 (renamed) and 60-64 (joined Loyal) are updated.
        "address-book": (3, 5, 25),
    }
    summaries = {
        row["value"]["segment_id"] or "address-book": row["value"]
        for row in airflow.push_summaries()
        if row["task_id"] == "push_segment"
    }
    assert {key: (s["joined"], s["left"], s["updated"]) for key, s in summaries.items()} == expected
    assert {s["outcome"] for s in summaries.values()} == {"dry_run"}
    assert "@" not in json.dumps(summaries)

    logs = [run.output] + [
        p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file()
    ]
    log = "".join(text for text in logs if run.log_path.name in text or "Dry run" in text)
    assert "Dry run, Address book: would add 3, remove 5 and update 25 contacts." in log
    assert "Dry run, Brand fans: Nike (EU): would add 3, remove 5 and update 15 contacts." in log
    # Examples are masked: the first removed contact of the book is contact0095@example.com.
    assert "removed: c**********@e******.com" in log
    assert "contact0095@example.com" not in log
    assert "Dry run: nothing was written to Klaviyo or to the applied state." in log
    # 5 of Nike's 20 members leave: the dry run says a real run would stop, instead of failing itself.
    assert (
        "A real run would stop before writing anything: segment 'Brand fans: Nike (EU)' (seg-b): 5 of 20"
        in log
    )
