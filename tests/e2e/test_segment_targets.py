"""Per-segment Klaviyo lists and Klaviyo segments, with the operators run in this process against the sandbox."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError
from airflow_provider_klaviyo_nosto.hooks.klaviyo import KlaviyoHook
from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
from airflow_provider_klaviyo_nosto.operators.segment_targets import KlaviyoSegmentListOperator
from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator
from airflow_provider_klaviyo_nosto.sync.targets import contains_definition
from sandbox.harness import DEMO_KLAVIYO_KEY, DEMO_NOSTO_APPS_TOKEN, DEMO_NOSTO_EXPORT_TOKEN
from tests.e2e.conftest import SYNC_SCOPES, Sandbox

pytestmark = pytest.mark.e2e

VIP = {"id": "5a497a000000000000000001", "name": "VIP"}
KOMBAI = {"id": "5a497a000000000000000002", "name": "Category affinity: Kombai"}
LOYAL = {"id": "5a497a000000000000000003", "name": "Loyal Customers"}
CATALOGUE = [VIP, KOMBAI, LOYAL]
#: Every scope the sync needs, for keys built without one of them.
SCOPES = [*SYNC_SCOPES, "segments:read", "segments:write"]


@pytest.fixture
def klaviyo(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A clean sandbox and the two connections, for operators run in this process."""
    sandbox.reset()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLAVIYO_DEFAULT",
        json.dumps({"conn_type": "klaviyo", "host": sandbox.klaviyo, "password": DEMO_KLAVIYO_KEY}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOSTO_DEFAULT",
        json.dumps(
            {
                "conn_type": "nosto",
                "host": sandbox.nosto,
                "password": DEMO_NOSTO_APPS_TOKEN,
                "extra": {"export_token": DEMO_NOSTO_EXPORT_TOKEN},
            }
        ),
    )
    return sandbox


def nosto_serves(
    sandbox: Sandbox, catalogue: Sequence[Mapping[str, str]], members: Mapping[str, list[str]]
) -> None:
    lines = b"".join(
        json.dumps({"email": email, "nosto_segments": names}).encode() + b"\n"
        for email, names in members.items()
    )
    requests.put(f"{sandbox.nosto}/__sandbox/catalogue", json=list(catalogue), timeout=30).raise_for_status()
    requests.put(
        f"{sandbox.nosto}/__sandbox/export", data=gzip.compress(lines), timeout=30
    ).raise_for_status()


def run_sync(config: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The DAG's three steps, as the workers run them: plan, every push, then the segment lists."""
    context: Any = {}
    specs = NostoSegmentSyncOperator(task_id="plan_sync", config_variable="", defaults=dict(config)).execute(
        context
    )
    specs = json.loads(json.dumps(specs))
    for spec in specs:
        KlaviyoSegmentPushOperator(
            task_id="push_segment", push=spec, deferrable=False, poll_interval=0.1
        ).execute(context)
    lists = KlaviyoSegmentListOperator(task_id="sync_segment_lists", plan=specs).execute(context)
    return specs, lists


def list_members(state: dict[str, Any], name: str) -> set[str]:
    emails = {profile["id"]: profile["email"] for profile in state["profiles"]}
    found = [item for item in state["lists"] if item["name"] == name]
    assert len(found) == 1, f"expected one list named {name!r}, found {len(found)}"
    return {emails[profile_id] for profile_id in found[0]["members"]}


def contains_value(segment: dict[str, Any]) -> tuple[str, str]:
    (group,) = segment["definition"]["condition_groups"]
    (condition,) = group["conditions"]
    assert condition["type"] == "profile-property"
    assert condition["filter"]["type"] == "list"
    assert condition["filter"]["operator"] == "contains"
    return condition["property"], condition["filter"]["value"]


def writes(sandbox: Sandbox, since: int) -> list[tuple[str, str]]:
    return [(e["method"], e["template"]) for e in sandbox.requests_log(since) if e["method"] != "GET"]


def test_lists_mirror_their_segments_and_klaviyo_segments_follow_renames(
    klaviyo: Sandbox, tmp_path: Path
) -> None:
    # A list with the sync's name already exists (made by hand, or by a create whose answer was lost),
    # holding a profile that is not in the segment: it is adopted, not duplicated, and made to match.
    klaviyo.seed_profiles([{"email": "stray@example.com", "lists": ["Nosto list: VIP"]}])
    config = {
        "segments": [segment["id"] for segment in CATALOGUE],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": [VIP["id"], KOMBAI["name"]],
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
    }
    nosto_serves(
        klaviyo,
        CATALOGUE,
        {
            "a@example.com": ["VIP", "Category affinity: Kombai"],
            "b@example.com": ["VIP"],
            "c@example.com": ["Category affinity: Kombai", "Loyal Customers"],
            "d@example.com": ["Loyal Customers"],
        },
    )
    _, lists = run_sync(config)

    state = klaviyo.state()
    assert list_members(state, "Nosto list: VIP") == {"a@example.com", "b@example.com"}
    assert list_members(state, "Nosto list: Category affinity: Kombai") == {"a@example.com", "c@example.com"}
    assert not [item for item in state["lists"] if "Loyal" in item["name"]]
    assert sorted((s["name"], contains_value(s)) for s in state["segments"]) == [
        ("Nosto: Category affinity: Kombai", ("properties['nosto_segment']", "Category affinity: Kombai")),
        ("Nosto: Loyal Customers", ("properties['nosto_segment']", "Loyal Customers")),
        ("Nosto: VIP", ("properties['nosto_segment']", "VIP")),
    ]
    assert lists["lists"][VIP["id"]]["removed"] == 1
    vip_list_id = next(item["id"] for item in state["lists"] if item["name"] == "Nosto list: VIP")
    kombai_list_id = next(item["id"] for item in state["lists"] if item["name"].endswith("Kombai"))
    segment_ids = {s["name"]: s["id"] for s in state["segments"]}

    # Next day: b leaves VIP and d joins it; a leaves Kombai and e joins; Nosto renames Kombai.
    renamed = {**KOMBAI, "name": "Category affinity: Kombai dogs"}
    nosto_serves(
        klaviyo,
        [VIP, renamed, LOYAL],
        {
            "a@example.com": ["VIP"],
            "b@example.com": [],
            "c@example.com": ["Category affinity: Kombai dogs", "Loyal Customers"],
            "d@example.com": ["Loyal Customers", "VIP"],
            "e@example.com": ["Category affinity: Kombai dogs"],
        },
    )
    run_sync({**config, "segment_lists": [VIP["id"], KOMBAI["id"]], "removal_threshold": 1.0})

    state = klaviyo.state()
    assert list_members(state, "Nosto list: VIP") == {"a@example.com", "d@example.com"}
    assert list_members(state, "Nosto list: Category affinity: Kombai dogs") == {
        "c@example.com",
        "e@example.com",
    }
    assert {item["name"]: item["id"] for item in state["lists"]}[
        "Nosto list: Category affinity: Kombai dogs"
    ] == (kombai_list_id)
    assert {item["name"]: item["id"] for item in state["lists"]}["Nosto list: VIP"] == vip_list_id
    assert len(state["segments"]) == 3
    renamed_segment = next(
        s for s in state["segments"] if s["id"] == segment_ids["Nosto: Category affinity: Kombai"]
    )
    assert renamed_segment["name"] == "Nosto: Category affinity: Kombai dogs"
    assert contains_value(renamed_segment) == (
        "properties['nosto_segment']",
        "Category affinity: Kombai dogs",
    )

    # The Kombai list is taken out of the configuration: it is left as it is, never deleted or emptied.
    mark = len(klaviyo.requests_log())
    run_sync({**config, "segment_lists": [VIP["id"]]})
    assert writes(klaviyo, mark) == []
    assert list_members(klaviyo.state(), "Nosto list: Category affinity: Kombai dogs") == {
        "c@example.com",
        "e@example.com",
    }
    targets = json.loads((tmp_path / "state" / "targets.json").read_text())
    assert list(targets["lists"]) == [VIP["id"]]

    # Nothing changed: no list or segment is created, renamed or written, and nothing is planned.
    mark = len(klaviyo.requests_log())
    specs, _ = run_sync({**config, "segment_lists": [VIP["id"]]})
    assert specs == []
    assert writes(klaviyo, mark) == []


def test_a_flow_on_a_segment_list_stops_the_run_before_writing(klaviyo: Sandbox, tmp_path: Path) -> None:
    requests.post(
        f"{klaviyo.klaviyo}/__sandbox/lists", json={"name": "Nosto list: VIP"}, timeout=30
    ).raise_for_status()
    set_flows(klaviyo, {"Nosto list: VIP": [{"id": "FLOW1", "name": "VIP welcome", "status": "live"}]})
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": True,
        "klaviyo_pool_slots": 1,
    }
    mark = len(klaviyo.requests_log())

    with pytest.raises(KlaviyoConfigError, match=r"'VIP welcome' \(id FLOW1\)"):
        run_sync(config)

    assert writes(klaviyo, mark) == [("POST", "/api/lists")]  # the address book, created before the check
    assert [item["name"] for item in klaviyo.state()["lists"]] == ["Nosto list: VIP", "Nosto Customers"]


def test_a_segment_deleted_in_nosto_is_skipped_by_its_list_and_klaviyo_segment_with_a_warning(
    klaviyo: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "segments": [segment["id"] for segment in CATALOGUE],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": [VIP["id"], KOMBAI["id"]],
        "klaviyo_segments": [VIP["name"]],
        "klaviyo_pool_slots": 1,
        "removal_threshold": 1.0,
    }
    nosto_serves(
        klaviyo,
        CATALOGUE,
        {"a@example.com": ["VIP", "Category affinity: Kombai"], "b@example.com": ["VIP"]},
    )
    run_sync(config)
    before = klaviyo.state()

    # VIP is deleted in Nosto; the configuration still names it in all three options.
    nosto_serves(
        klaviyo,
        [KOMBAI, LOYAL],
        {
            "a@example.com": ["Category affinity: Kombai"],
            "b@example.com": [],
            "c@example.com": ["Category affinity: Kombai"],
        },
    )
    capsys.readouterr()
    run_sync(config)

    state = klaviyo.state()
    values = {profile["email"]: profile["properties"]["nosto_segment"] for profile in state["profiles"]}
    assert values == {
        "a@example.com": ["Category affinity: Kombai"],
        "b@example.com": [],
        "c@example.com": ["Category affinity: Kombai"],
    }
    assert list_members(state, "Nosto list: Category affinity: Kombai") == {"a@example.com", "c@example.com"}
    # The deleted segment's list and Klaviyo segment are left as they are.
    assert list_members(state, "Nosto list: VIP") == {"a@example.com", "b@example.com"}
    assert state["segments"] == before["segments"]
    warnings = [line for line in capsys.readouterr().out.splitlines() if "was deleted in Nosto" in line]
    assert len(warnings) == 2
    assert all("[warning" in line and f"'VIP' ({VIP['id']})" in line for line in warnings)
    assert "in 'segment_lists': it is skipped, and its Klaviyo list is left as it is" in warnings[0]
    assert "in 'klaviyo_segments': it is skipped, and its Klaviyo segment is left as it is" in warnings[1]

    # Until the configuration is edited, every run warns again and writes nothing.
    mark = len(klaviyo.requests_log())
    run_sync(config)
    assert len([line for line in capsys.readouterr().out.splitlines() if "was deleted in Nosto" in line]) == 2
    assert writes(klaviyo, mark) == []


def set_flows(sandbox: Sandbox, flows: Mapping[str, list[dict[str, str]]]) -> None:
    requests.put(f"{sandbox.klaviyo}/__sandbox/config", json={"flows": flows}, timeout=30).raise_for_status()


def dry_run(config: Mapping[str, Any], **params: Any) -> None:
    NostoSegmentSyncOperator(
        task_id="plan_sync", config_variable="", defaults=dict(config), dry_run=True, **params
    ).execute({})  # type: ignore[arg-type]


def state_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_one_error_names_the_flows_of_every_target_and_a_dry_run_says_it_in_the_same_words(
    klaviyo: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": True,
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
    }
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    run_sync(config)
    state = klaviyo.state()
    ids = {item["name"]: item["id"] for item in [*state["lists"], *state["segments"]]}
    flows = {
        "Nosto Customers": [{"id": "FLOW0", "name": "Welcome", "status": "live"}],
        "Nosto list: VIP": [{"id": "FLOW1", "name": "VIP list welcome", "status": "live"}],
        "Nosto: VIP": [{"id": "FLOW2", "name": "VIP segment welcome", "status": "live"}],
    }
    set_flows(klaviyo, flows)
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"], "b@example.com": ["VIP"]})
    expected = (
        f"Stopped before writing: adding profiles to the address-book list ({ids['Nosto Customers']}) would "
        "trigger the Klaviyo flow(s) 'Welcome' (id FLOW0); adding profiles to the list 'Nosto list: VIP' "
        f"({ids['Nosto list: VIP']}) would trigger the Klaviyo flow(s) 'VIP list welcome' (id FLOW1); profiles "
        f"entering the Klaviyo segment 'Nosto: VIP' ({ids['Nosto: VIP']}) would trigger the Klaviyo flow(s) "
        "'VIP segment welcome' (id FLOW2). These flows may send emails. Turn them off in Klaviyo, or allow them "
        "by adding their ids to 'allowed_flows' in the sync configuration."
    )

    mark = len(klaviyo.requests_log())
    capsys.readouterr()
    dry_run(config)
    dry_run_log = capsys.readouterr().out
    with pytest.raises(KlaviyoConfigError) as stopped:
        run_sync(config)

    assert str(stopped.value) == expected
    assert f"A real run would stop: {expected}" in dry_run_log
    assert writes(klaviyo, mark) == []

    # Once all three are allowed, the run goes through.
    run_sync({**config, "allowed_flows": ["FLOW0", "FLOW1", "FLOW2"]})
    assert list_members(klaviyo.state(), "Nosto list: VIP") == {"a@example.com", "b@example.com"}


@pytest.mark.parametrize("change", ["renamed in Nosto", "property migrated"])
def test_a_klaviyo_segment_whose_definition_changes_has_its_flows_checked(
    klaviyo: Sandbox, tmp_path: Path, change: str
) -> None:
    # Rewriting the definition makes every member leave and, once the pushes write the new value, enter the
    # segment again: its flows fire as for new members, though nobody joins the Nosto segment.
    config: dict[str, Any] = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
    }
    members = {"a@example.com": ["VIP"], "b@example.com": ["VIP"]}
    nosto_serves(klaviyo, CATALOGUE, members)
    run_sync(config)
    (segment,) = klaviyo.state()["segments"]
    set_flows(klaviyo, {"Nosto: VIP": [{"id": "FS", "name": "VIP entry", "status": "live"}]})
    params: dict[str, Any] = {}
    if change == "renamed in Nosto":
        nosto_serves(klaviyo, [{**VIP, "name": "VIP gold"}], {email: ["VIP gold"] for email in members})
    else:
        config = {**config, "property_name": "nosto_segment_v2"}
        params = {"migrate": True}
    mark = len(klaviyo.requests_log())

    with pytest.raises(
        KlaviyoConfigError,
        match=rf"Klaviyo segment 'Nosto: VIP(?: gold)?' \({segment['id']}\) .*'VIP entry' \(id FS\)",
    ):
        NostoSegmentSyncOperator(task_id="plan_sync", config_variable="", defaults=config, **params).execute(
            {}
        )  # type: ignore[arg-type]

    assert writes(klaviyo, mark) == []
    assert klaviyo.state()["segments"][0]["definition"] == segment["definition"]


def test_a_taken_list_name_stops_a_migration_before_any_target_is_created(
    klaviyo: Sandbox, tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "segments": [VIP["id"], KOMBAI["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": [VIP["id"]],
        "klaviyo_pool_slots": 1,
    }
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"], "b@example.com": [KOMBAI["name"]]})
    run_sync(config)
    requests.post(f"{klaviyo.klaviyo}/__sandbox/lists", json={"name": "Taken"}, timeout=30).raise_for_status()
    before = state_files(tmp_path / "state")
    mark = len(klaviyo.requests_log())

    # The rename to a name another list has stops the run; the Kombai list it also asks for is not made.
    with pytest.raises(KlaviyoConfigError, match="already has that name"):
        NostoSegmentSyncOperator(
            task_id="plan_sync",
            config_variable="",
            defaults={**config, "list_name": "Taken", "segment_lists": True},
            migrate=True,
        ).execute({})  # type: ignore[arg-type]

    assert writes(klaviyo, mark) == []
    assert state_files(tmp_path / "state") == before


def test_a_stop_for_another_reason_also_names_the_flows_already_read(
    klaviyo: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config: dict[str, Any] = {
        "segments": [VIP["id"], KOMBAI["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "klaviyo_pool_slots": 1,
    }
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    run_sync(config)
    set_flows(klaviyo, {"Nosto Customers": [{"id": "F0", "name": "Welcome", "status": "live"}]})
    for _ in range(2):
        requests.post(
            f"{klaviyo.klaviyo}/__sandbox/lists", json={"name": f"Nosto list: {KOMBAI['name']}"}, timeout=30
        ).raise_for_status()
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"], "b@example.com": [KOMBAI["name"]]})
    config = {**config, "segment_lists": True}

    capsys.readouterr()
    dry_run(config)
    dry_run_log = capsys.readouterr().out
    with pytest.raises(KlaviyoConfigError) as stopped:
        run_sync(config)

    message = str(stopped.value)
    assert message.startswith(f"2 Klaviyo lists are named 'Nosto list: {KOMBAI['name']}'")
    assert "Also: Stopped before writing: adding profiles to the address-book list" in message
    assert "'Welcome' (id F0)" in message
    assert f"A real run would stop: {message}" in dry_run_log


def test_two_klaviyo_segments_with_the_name_are_reported_by_a_dry_run_and_stop_the_real_run(
    klaviyo: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = KlaviyoHook()
    for _ in range(2):
        hook.create_segment("Nosto: VIP", contains_definition("nosto_segment", "VIP"))
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
    }

    capsys.readouterr()
    dry_run(config)
    dry_run_log = capsys.readouterr().out
    with pytest.raises(KlaviyoConfigError, match="2 Klaviyo segments are named 'Nosto: VIP'") as stopped:
        run_sync(config)

    assert f"A real run would stop: {stopped.value}" in dry_run_log


def test_a_key_without_segments_write_gets_an_error_naming_the_scope(
    klaviyo: Sandbox, tmp_path: Path
) -> None:
    keys = {DEMO_KLAVIYO_KEY: [scope for scope in SCOPES if scope != "segments:write"]}
    requests.put(
        f"{klaviyo.klaviyo}/__sandbox/config", json={"api_keys": keys}, timeout=30
    ).raise_for_status()
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
    }

    with pytest.raises(KlaviyoConfigError, match="segments:write"):
        run_sync(config)

    state = klaviyo.state()
    assert state["segments"] == []
    assert state["jobs"] == []


def test_a_contact_klaviyo_rejects_joins_its_list_on_the_next_run(klaviyo: Sandbox, tmp_path: Path) -> None:
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"], "b@example.com": ["VIP"]})
    klaviyo.add_fault({"kind": "job_fail_emails", "emails": ["b@example.com"], "reason": "Invalid input."})
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": True,
        "klaviyo_pool_slots": 1,
    }

    _, lists = run_sync(config)
    assert list_members(klaviyo.state(), "Nosto list: VIP") == {"a@example.com"}
    assert lists["lists"][VIP["id"]]["without_profile"] == 1

    klaviyo.clear_faults()
    _, lists = run_sync(config)
    assert list_members(klaviyo.state(), "Nosto list: VIP") == {"a@example.com", "b@example.com"}
    assert lists["lists"][VIP["id"]]["added"] == 1


def test_a_list_update_that_died_half_way_is_caught_up_exactly(klaviyo: Sandbox, tmp_path: Path) -> None:
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": True,
        "klaviyo_segments": True,
        "klaviyo_pool_slots": 1,
        "removal_threshold": 1.0,
    }
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"], "b@example.com": ["VIP"]})
    run_sync(config)

    # The next run plans and pushes, but its list task dies after adding c and before recording it.
    nosto_serves(
        klaviyo, CATALOGUE, {"a@example.com": [], "b@example.com": ["VIP"], "c@example.com": ["VIP"]}
    )
    context: Any = {}
    specs = NostoSegmentSyncOperator(task_id="plan_sync", config_variable="", defaults=config).execute(
        context
    )
    for spec in json.loads(json.dumps(specs)):
        KlaviyoSegmentPushOperator(task_id="push_segment", push=spec, deferrable=False).execute(context)
    klaviyo.seed_profiles([{"email": "c@example.com", "lists": ["Nosto list: VIP"]}])

    # A day later c leaves again and d joins: this run compares the list with what Klaviyo holds, so the
    # half-applied update leaves nobody behind.
    nosto_serves(klaviyo, CATALOGUE, {"b@example.com": ["VIP"], "d@example.com": ["VIP"]})
    _, lists = run_sync(config)

    assert list_members(klaviyo.state(), "Nosto list: VIP") == {"b@example.com", "d@example.com"}
    assert lists["lists"][VIP["id"]]["reconciled"] is True


def test_a_dry_run_creates_and_writes_nothing(klaviyo: Sandbox, tmp_path: Path) -> None:
    nosto_serves(klaviyo, CATALOGUE, {"a@example.com": ["VIP"]})
    config = {
        "segments": [VIP["id"]],
        "state_uri": f"file://{tmp_path / 'state'}",
        "segment_lists": True,
        "klaviyo_segments": True,
    }
    context: Any = {}
    specs = NostoSegmentSyncOperator(
        task_id="plan_sync", config_variable="", defaults=config, dry_run=True
    ).execute(context)
    KlaviyoSegmentListOperator(task_id="sync_segment_lists", plan=specs).execute(context)

    # A dry run may read (the flow check looks at the lists it would add to), never write.
    assert [entry for entry in klaviyo.requests_log() if entry["method"] != "GET"] == []
    state = klaviyo.state()
    assert state["lists"] == []
    assert state["segments"] == []
    assert not (tmp_path / "state" / "targets.json").exists()
