"""The example DAG, run with ``airflow dags test``, keeps the sandbox's Klaviyo in step with the export."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox.harness import DEMO_KLAVIYO_KEY, AirflowEnvironment
from tests.e2e.conftest import Sandbox
from tests.e2e.expected import ExpectedKlaviyo, canonical_email, expected_from_export, export_emails

pytestmark = pytest.mark.e2e

LIST_NAME = "Nosto Customers"
PROPERTY = "nosto_segment"
SUBSCRIBE_PATHS = ("/api/profile-subscription-bulk-create-jobs", "/api/profile-subscription-bulk-delete-jobs")


def chosen_names(data: Path) -> set[str]:
    return {segment["name"] for segment in json.loads((data / "catalogue.json").read_text())}


def seed_existing_profiles(sandbox: Sandbox, data: Path) -> dict[str, dict[str, Any]]:
    """Seed the generated pre-existing profiles; return them by id as the sandbox holds them."""
    sandbox.seed_profiles(json.loads((data / "klaviyo-seed.json").read_text()))
    return {profile["id"]: profile for profile in sandbox.state()["profiles"]}


def address_book(state: dict[str, Any]) -> set[str]:
    """The canonical emails of the address-book list's members."""
    by_id = {profile["id"]: profile["email"] for profile in state["profiles"]}
    lists = [item for item in state["lists"] if item["name"] == LIST_NAME]
    assert len(lists) == 1, f"expected exactly one list named {LIST_NAME!r}, found {len(lists)}"
    return {canonical_email(by_id[profile_id]) or by_id[profile_id] for profile_id in lists[0]["members"]}


def assert_klaviyo_matches(state: dict[str, Any], expected: ExpectedKlaviyo) -> None:
    emails = Counter(profile["email"] for profile in state["profiles"])
    assert [email for email, count in emails.items() if count > 1] == [], "a profile exists twice"
    # A profile stored before the sync as Ana@Example.com is the same person as ana@example.com:
    # the sync must write to it, not create a twin.
    people = Counter(canonical_email(profile["email"]) for profile in state["profiles"])
    twins = sorted(email for email, count in people.items() if count > 1 and email in expected.values)
    assert twins == [], f"{len(twins)} contacts have two profiles differing only in letter case"

    assert address_book(state) == expected.address_book

    by_email = {
        canonical_email(profile["email"]) or profile["email"]: profile for profile in state["profiles"]
    }
    wrong = {
        email: (by_email[email]["properties"].get(PROPERTY), value)
        for email, value in expected.values.items()
        if by_email[email]["properties"].get(PROPERTY) != value
    }
    assert wrong == {}, f"{len(wrong)} profiles carry the wrong {PROPERTY}"

    # Contacts gone from Nosto keep their profile, with the value cleared.
    for email, profile in by_email.items():
        if email not in expected.values and PROPERTY in profile["properties"]:
            assert profile["properties"][PROPERTY] == [], "a contact gone from Nosto kept segment names"


def assert_untouched_apart_from_sync(before: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
    after = {profile["id"]: profile for profile in state["profiles"]}
    assert set(before) <= set(after), "a profile was deleted"
    for profile_id, old in before.items():
        new = after[profile_id]
        old_props = {k: v for k, v in old["properties"].items() if k != PROPERTY}
        new_props = {k: v for k, v in new["properties"].items() if k != PROPERTY}
        assert new_props == old_props, "another property of an existing profile changed"
        for field in ("email", "first_name", "last_name", "phone_number", "subscriptions", "suppressed"):
            assert new.get(field) == old.get(field), f"{field} of an existing profile changed"


def assert_protocol_clean(sandbox: Sandbox) -> None:
    log = sandbox.requests_log()
    refused = [entry for entry in log if entry.get("violation")]
    assert refused == [], f"the schema check refused {len(refused)} requests: {refused[:3]}"
    assert not [entry for entry in log if entry["path"].startswith(SUBSCRIBE_PATHS)], (
        "a consent endpoint was called"
    )


def writes_by_email(sandbox: Sandbox, since: int) -> Counter[str]:
    """How many times each email was written (bulk import profile entries, profile updates) since ``since``."""
    writes = sandbox.writes(since)
    return Counter(canonical_email(write["email"]) or write["email"] for write in writes)


def test_two_runs_keep_klaviyo_equal_to_the_export(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    first, second_export = generated
    names = chosen_names(first)
    existing = seed_existing_profiles(sandbox, first)

    airflow.run_dag()

    expected_first = expected_from_export(first / "export.jsonl.gz", names)
    state = sandbox.state()
    assert_klaviyo_matches(state, expected_first)
    assert_untouched_apart_from_sync(existing, state)
    assert_protocol_clean(sandbox)

    sandbox.load_export(first, second_export)
    mark = sandbox.write_mark()
    airflow.run_dag()

    expected_second = expected_from_export(second_export, names)
    state = sandbox.state()
    assert_klaviyo_matches(state, expected_second)
    assert_untouched_apart_from_sync(existing, state)
    assert_protocol_clean(sandbox)

    changed = {
        email
        for email in expected_first.address_book | expected_second.address_book
        if expected_first.values.get(email) != expected_second.values.get(email)
    }
    assert changed, "the evolved export should change some memberships"
    writes = writes_by_email(sandbox, mark)
    assert set(writes) == changed, "the second run must write exactly the contacts whose membership changed"
    assert max(writes.values()) == 1, "a contact was written more than once in one run"


def test_an_export_already_applied_writes_nothing(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    airflow.run_dag()
    mark = len(sandbox.requests_log())

    run = airflow.run_dag()

    later = sandbox.requests_log(since=mark)
    assert [entry for entry in later if entry["method"] != "GET"] == [], "an unchanged export caused writes"
    assert "matches what was last applied" in run.output


def test_suppressed_profiles_stay_suppressed_and_consent_is_untouched(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    first, _ = generated
    existing = seed_existing_profiles(sandbox, first)
    suppressed = {pid for pid, profile in existing.items() if profile.get("suppressed")}
    assert suppressed, "the generated seed must contain suppressed profiles"

    airflow.run_dag()

    after = {profile["id"]: profile for profile in sandbox.state()["profiles"]}
    assert {pid for pid in suppressed if after[pid].get("suppressed")} == suppressed
    expected = expected_from_export(first / "export.jsonl.gz", chosen_names(first))
    in_export = [pid for pid in suppressed if canonical_email(after[pid]["email"]) in expected.values]
    assert in_export, "some suppressed profiles should be in the export"
    for pid in in_export:
        assert (
            after[pid]["properties"][PROPERTY] == expected.values[canonical_email(after[pid]["email"]) or ""]
        )
    assert_protocol_clean(sandbox)


def test_no_email_or_key_in_logs_or_xcom(
    airflow: AirflowEnvironment, sandbox: Sandbox, generated: tuple[Path, Path]
) -> None:
    first, _ = generated
    # One bulk import answered with a 400 whose detail quotes an email; the push strips and resends.
    sandbox.add_fault(
        {"kind": "reject_400_email", "method": "POST", "path": "/api/profile-bulk-import-jobs", "times": 1}
    )

    run = airflow.run_dag(check=False)
    assert run.returncode == 0, run.output[-3000:]

    emails = export_emails(first / "export.jsonl.gz")
    email_pattern = re.compile("|".join(re.escape(e) for e in sorted(emails, key=len, reverse=True)))

    texts = {"cli": run.output}
    for path in (airflow.home / "logs").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    xcoms = json.dumps([row["value"] for row in airflow.push_summaries()])
    texts["xcom"] = xcoms
    assert "@" not in xcoms

    key_leaks = [where for where, text in texts.items() if DEMO_KLAVIYO_KEY in text]
    assert key_leaks == [], "the API key appears in a log or XCom"
    email_leaks = [
        (where, line[:80])
        for where, text in texts.items()
        for line in text.splitlines()
        if not _below_info(line) and email_pattern.search(line)
    ]
    assert email_leaks == [], "an email address appears at INFO or above (shown truncated)"


def _below_info(line: str) -> bool:
    """Log lines at DEBUG may carry redacted URLs; everything at INFO and above is scanned."""
    return " DEBUG " in line or '"level": "debug"' in line.lower()
