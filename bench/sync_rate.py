"""Benchmark of whole syncs against the sandbox's rate limits, ours and the loop a user writes with the SDK.

    python -m bench.sync_rate --contacts 200000 --changes 20000 --rate-scale 0.2

One sandbox (``--rate-scale`` shortens every rate-limit window by the same factor for everybody) serves, in
this order:

1. our first sync of ``--contacts`` contacts (20 segments, 10% already in Klaviyo, a few under other letter
   case): the sync operator, then the push tasks, ``pool_slots`` at a time, in this process as Airflow
   workers would run them (no scheduler, no deferral: pushes wait for their jobs inline);
2. our incremental sync of an export with exactly ``--changes`` changed contacts (joins, leaves, moves,
   contacts gone from Nosto, newcomers);
3. the peer's incremental sync of the same change: the loop a user writes with Klaviyo's official Python SDK
   (``klaviyo-api``): one ``create_or_update_profile`` per changed contact, then list calls of 1,000 ids;
4. the peer's first sync, on a clean sandbox seeded alike, over ``--peer-first-contacts`` contacts (all of
   them by default); with fewer, its calls and time are also given scaled to all contacts, which is exact
   for calls and, the peer being bound by one endpoint's steady limit, linear for time.

For each: calls by endpoint (from the sandbox's request log), 429s received, wall time, the floor of
:mod:`bench.floor`, and for ours also the per-task floor (each push task's own share, read from its diff).
Our pacer keeps documented windows in its own clock; it is given the sandbox's scale so both sides see the
same limits.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import DEFAULT_DATA, table
from bench.floor import ChangeMix, floor_calls, floor_seconds, peer_calls, split_floor_calls

SEGMENTS = 20
LIST_NAME = "Nosto Customers"
PROPERTY = "nosto_segment"
#: What the floor counts, as :func:`purposes` names the calls.
FLOOR_KINDS = ("profile writes", "id look-ups", "list membership writes")


# -- data ---------------------------------------------------------------------------------------------


def prepare_data(folder: Path, contacts: int, changes: int, seed: int) -> tuple[Path, Path]:
    """Generate the first export (sandbox generator) and a second one with exactly ``changes`` changed contacts."""
    from sandbox.generator import generate

    first = folder / "first"
    if not (first / "export.jsonl.gz").exists():
        generate(contacts=contacts, segments=SEGMENTS, seed=seed, out=first)
    second = folder / f"second-{changes}.jsonl.gz"
    if not second.exists():
        evolve_exactly(first / "export.jsonl.gz", second, changes, seed + 1)
    return first, second


def evolve_exactly(source: Path, out: Path, changes: int, seed: int) -> dict[str, int]:
    """Write the next export: 30% join a segment, 30% leave one, 20% move, 10% vanish, 10% are new."""
    from airflow_provider_klaviyo_nosto.sync.emails import InvalidEmail, normalise_email

    rng = random.Random(seed)
    rows = [json.loads(line) for line in gzip.decompress(source.read_bytes()).splitlines() if line.strip()]
    names = sorted({name for row in rows for name in row["nosto_segments"]})
    seen: Counter[str] = Counter()
    for row in rows:
        try:
            seen[normalise_email(row["email"])] += 1
        except InvalidEmail:
            continue
    candidates = []
    for index, row in enumerate(rows):
        try:
            if seen[normalise_email(row["email"])] == 1:
                candidates.append(index)
        except InvalidEmail:
            continue
    plan = {
        "join": changes * 3 // 10,
        "leave": changes * 3 // 10,
        "move": changes // 5,
        "gone": changes // 10,
    }
    plan["new"] = changes - sum(plan.values())
    picked = rng.sample(candidates, k=changes - plan["new"])
    counts: Counter[str] = Counter()
    gone: set[int] = set()
    position = 0
    for kind in ("join", "leave", "move", "gone"):
        for index in picked[position : position + plan[kind]]:
            current = set(rows[index]["nosto_segments"])
            absent = [name for name in names if name not in current]
            if kind == "gone":
                gone.add(index)
            elif kind == "join" or not current:
                current.add(rng.choice(absent))
            elif kind == "leave" or not absent:
                current.discard(rng.choice(sorted(current)))
            else:
                current.discard(rng.choice(sorted(current)))
                current.add(rng.choice(absent))
            rows[index] = {**rows[index], "nosto_segments": sorted(current)}
            counts[kind] += 1
        position += plan[kind]
    kept = [row for index, row in enumerate(rows) if index not in gone]
    for number in range(plan["new"]):
        kept.append({"email": f"newcomer{seed}.{number}@example.net", "nosto_segments": [rng.choice(names)]})
        counts["new"] += 1
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept).encode()
    out.write_bytes(gzip.compress(data, mtime=0))
    return dict(counts)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    for line in gzip.decompress(path.read_bytes()).splitlines():
        if line.strip():
            yield json.loads(line)


# -- the sandbox ------------------------------------------------------------------------------------------


class Admin:
    """The sandbox's admin endpoints this benchmark uses."""

    def __init__(self, klaviyo: str, nosto: str) -> None:
        self.klaviyo, self.nosto = klaviyo, nosto

    def reset(self) -> None:
        requests.post(f"{self.klaviyo}/__sandbox/reset", timeout=120).raise_for_status()
        requests.post(f"{self.nosto}/__sandbox/reset", timeout=120).raise_for_status()

    def load(self, first: Path, export: Path, *, seed: bool) -> None:
        catalogue = json.loads((first / "catalogue.json").read_text())
        requests.put(f"{self.nosto}/__sandbox/catalogue", json=catalogue, timeout=60).raise_for_status()
        requests.put(
            f"{self.nosto}/__sandbox/export", data=export.read_bytes(), timeout=300
        ).raise_for_status()
        if seed:
            profiles = json.loads((first / "klaviyo-seed.json").read_text())
            requests.post(f"{self.klaviyo}/__sandbox/profiles", json=profiles, timeout=600).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = requests.get(f"{self.klaviyo}/__sandbox/stats", timeout=60)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        response = requests.get(f"{self.klaviyo}/__sandbox/requests", params={"since": seq}, timeout=300)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()["requests"]
        return entries


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Calls by endpoint and 429s between two ``/__sandbox/stats`` readings."""
    calls = Counter(after["calls"])
    calls.subtract(before["calls"])
    return {key: count for key, count in sorted(calls.items()) if count > 0}, after["throttled"] - before[
        "throttled"
    ]


# -- ours -------------------------------------------------------------------------------------------------


def scale_our_pacing(scale: float) -> None:
    """Give our pacer the sandbox's time scale: its documented windows then last as long as the sandbox's."""
    from airflow_provider_klaviyo_nosto.hooks import klaviyo as hook_module, pacing

    def scaled_pacer(concurrency: int = 1) -> pacing.KlaviyoPacer:
        return pacing.KlaviyoPacer(
            concurrency,
            clock=lambda: time.monotonic() / scale,
            sleep=lambda seconds: time.sleep(seconds * scale),
        )

    hook_module.KlaviyoPacer = scaled_pacer  # type: ignore[assignment,misc]


def run_ours(config: dict[str, Any], pool_slots: int) -> dict[str, Any]:
    """The sync operator, then every push task, ``pool_slots`` at a time, as Airflow workers would."""
    from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
    from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

    context: Any = {}
    started = time.perf_counter()
    specs = NostoSegmentSyncOperator(task_id="plan_sync", config_variable="", defaults=config).execute(
        context
    )
    planned = time.perf_counter()
    shares = task_shares(config["state_uri"], specs)

    def push(spec: Any) -> dict[str, Any]:
        operator = KlaviyoSegmentPushOperator(
            task_id="push_segment", push=spec, deferrable=False, poll_interval=0.2
        )
        summary: dict[str, Any] = operator.execute(context)
        return summary

    with ThreadPoolExecutor(max_workers=pool_slots) as workers:
        summaries = list(workers.map(push, specs))
    done = time.perf_counter()
    return {
        "wall_s": done - started,
        "plan_s": planned - started,
        "push_s": done - planned,
        "written": sum(summary.get("written", 0) for summary in summaries),
        "rejected": sum(summary.get("rejected", 0) for summary in summaries),
        "push_tasks": len(specs),
        "shares": shares,
    }


def task_shares(state_uri: str, specs: list[Any]) -> list[ChangeMix]:
    """What each push task owns, read from its diff before it runs: the input of the per-task floor."""
    from airflow_provider_klaviyo_nosto.state_store import StateStore

    store = StateStore(state_uri)
    shares = []
    for spec in specs:
        if not spec["contacts_to_write"]:
            continue
        changes = store.read_diff(spec["generation"], spec["key"])
        joins = sum(change.joins_address_book for change in changes)
        removals = sum(change.leaves_address_book for change in changes)
        shares.append(ChangeMix(joins, len(changes) - joins - removals, removals))
    return shares


def our_mix(config: dict[str, Any], admin: Admin) -> ChangeMix:
    """The change the plan found, as a floor input (read from a dry run, which writes nothing)."""
    from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

    dry = {**config}
    specs = NostoSegmentSyncOperator(
        task_id="plan_sync", config_variable="", defaults=dry, dry_run=True
    ).execute({})
    book = next(spec for spec in specs if spec["key"] == "address-book")
    written = sum(spec["contacts_to_write"] for spec in specs)
    return ChangeMix(
        joins=book["joined"], value_changes=written - book["joined"] - book["left"], removals=book["left"]
    )


# -- the peer ---------------------------------------------------------------------------------------------


def run_peer(
    klaviyo_url: str, api_key: str, rows: list[tuple[str, list[str] | None]], *, joining: set[str]
) -> dict[str, Any]:
    """The loop a user writes with the official SDK: an upsert per changed contact, then list calls.

    :param rows: ``(email, segment names)`` per changed contact; ``None`` names: gone from Nosto.
    :param joining: emails that join the address-book list.
    """
    from klaviyo_api import KlaviyoAPI
    from openapi_client.exceptions import ApiException

    # test_host is the SDK's own setting for another API host; 10 retries (the default is 3) so that a
    # throttled call is retried until its Retry-After has passed instead of failing the loop.
    client = KlaviyoAPI(api_key, max_retries=10, test_host=klaviyo_url)
    options = {"USE_DICTIONARY_FOR_RESPONSE_DATA": True}
    started = time.perf_counter()
    found = client.Lists.get_lists(filter=f'equals(name,"{LIST_NAME}")', options=options)
    if found["data"]:
        list_id = found["data"][0]["id"]
    else:
        created = client.Lists.create_list(
            {"data": {"type": "list", "attributes": {"name": LIST_NAME}}}, options=options
        )
        list_id = created["data"]["id"]

    to_add: list[str] = []
    to_remove: list[str] = []
    failed = 0
    for email, names in rows:
        body = {
            "data": {
                "type": "profile",
                "attributes": {"email": email, "properties": {PROPERTY: sorted(names or [])}},
            }
        }
        try:
            profile = client.Profiles.create_or_update_profile(body, options=options)
        except ApiException:
            failed += 1
            continue
        if names is None:
            to_remove.append(profile["data"]["id"])
        elif email in joining:
            to_add.append(profile["data"]["id"])
    for start in range(0, len(to_add), 1000):
        client.Lists.add_profiles_to_list(
            list_id, {"data": [{"type": "profile", "id": i} for i in to_add[start : start + 1000]]}
        )
    for start in range(0, len(to_remove), 1000):
        client.Lists.remove_profiles_from_list(
            list_id, {"data": [{"type": "profile", "id": i} for i in to_remove[start : start + 1000]]}
        )
    return {"wall_s": time.perf_counter() - started, "failed": failed, "contacts": len(rows)}


def peer_changes(
    before: Path | None, after: Path, chosen: set[str], limit: int | None = None
) -> tuple[list[tuple[str, list[str] | None]], set[str]]:
    """What a user's script finds changed between two exports (emails trimmed and lower-cased)."""

    def contacts(path: Path) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for row in read_rows(path):
            email = str(row.get("email", "")).strip().lower()
            if "@" in email:
                found[email] = sorted(set(found.get(email, [])) | (set(row["nosto_segments"]) & chosen))
        return found

    new = contacts(after)
    old = contacts(before) if before is not None else {}
    rows: list[tuple[str, list[str] | None]] = [
        (email, names) for email, names in new.items() if old.get(email) != names
    ]
    rows += [(email, None) for email in old if email not in new]
    rows = spread_sample(rows, limit)
    joining = {email for email, names in rows if names is not None and email not in old}
    return rows, joining


def spread_sample(rows: list[Any], limit: int | None) -> list[Any]:
    """Every n-th row, so that a sample keeps the mix of kinds of change; all rows without a limit."""
    if not limit or limit >= len(rows):
        return rows
    step = math.ceil(len(rows) / limit)
    return rows[::step]


# -- the run ----------------------------------------------------------------------------------------------


def phase(admin: Admin, name: str, action: Any) -> dict[str, Any]:
    before = admin.stats()
    # Every logged API call takes the next sequence number, so the count so far marks the position.
    mark = int(before["total"])
    print(f"-- {name} ...", flush=True)
    result: dict[str, Any] = action()
    calls, throttled = calls_between(before, admin.stats())
    result.update(name=name, calls_by_endpoint=calls, calls=sum(calls.values()), throttled=throttled)
    result["calls_by_purpose"] = purposes(admin.requests_since(mark))
    print(
        f"   {name}: {result['wall_s']:.1f} s, {result['calls']} calls, {throttled} x 429; "
        f"{result['calls_by_purpose']}",
        flush=True,
    )
    return result


def purposes(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Sort logged calls by what they were for: writes, id look-ups, the alias scan, job polls, the rest."""
    counts: Counter[str] = Counter()
    for entry in entries:
        method, template, query = (
            entry["method"],
            entry.get("template") or entry["path"],
            entry.get("query", ""),
        )
        if method in ("POST", "DELETE", "PATCH") and "relationships/profiles" in template:
            counts["list membership writes"] += 1
        elif method == "POST" and template in ("/api/profile-bulk-import-jobs", "/api/profile-import"):
            counts["profile writes"] += 1
        elif method == "GET" and template == "/api/profiles":
            counts["id look-ups" if "any%28email" in query or "any(email" in query else "alias scan"] += 1
        elif template.startswith("/api/profile-bulk-import-jobs"):
            counts["job status and errors"] += 1
        else:
            counts["list, flows (set-up)"] += 1
    return dict(sorted(counts.items()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox import DEFAULT_KLAVIYO_KEY, DEFAULT_NOSTO_APPS_TOKEN, DEFAULT_NOSTO_EXPORT_TOKEN
    from sandbox.runner import running_sandbox

    folder = args.data / f"sync-c{args.contacts}-s{args.seed}"
    first, second = prepare_data(folder, args.contacts, args.changes, args.seed)
    catalogue = json.loads((first / "catalogue.json").read_text())
    chosen_names = {item["name"] for item in catalogue}
    state = folder / f"state-{os.getpid()}"
    config = {
        "segments": [item["id"] for item in catalogue],
        "state_uri": f"file://{state}",
        "klaviyo_pool_slots": args.pool_slots,
    }
    results: dict[str, Any] = {
        "contacts": args.contacts,
        "changes": args.changes,
        "rate_scale": args.rate_scale,
        "pool_slots": args.pool_slots,
    }
    with running_sandbox(rate_scale=args.rate_scale) as urls:
        os.environ["AIRFLOW_CONN_KLAVIYO_DEFAULT"] = json.dumps(
            {"conn_type": "klaviyo", "host": urls.klaviyo, "password": DEFAULT_KLAVIYO_KEY}
        )
        os.environ["AIRFLOW_CONN_NOSTO_DEFAULT"] = json.dumps(
            {
                "conn_type": "nosto",
                "host": urls.nosto,
                "password": DEFAULT_NOSTO_APPS_TOKEN,
                "extra": {"export_token": DEFAULT_NOSTO_EXPORT_TOKEN},
            }
        )
        scale_our_pacing(args.rate_scale)
        admin = Admin(urls.klaviyo, urls.nosto)
        admin.reset()
        admin.load(first, first / "export.jsonl.gz", seed=True)

        first_mix = our_mix(config, admin)
        ours_first = phase(admin, "ours, first sync", lambda: run_ours(config, args.pool_slots))
        admin.load(first, second, seed=False)
        second_mix = our_mix(config, admin)
        ours_incremental = phase(admin, "ours, incremental", lambda: run_ours(config, args.pool_slots))

        rows, joining = peer_changes(first / "export.jsonl.gz", second, chosen_names)
        total_incremental = len(rows)
        rows = spread_sample(rows, args.peer_incremental_contacts)
        joining &= {email for email, _names in rows}
        peer_incremental = phase(
            admin,
            "peer, incremental",
            lambda: run_peer(urls.klaviyo, urls.klaviyo_key, rows, joining=joining),
        )
        peer_incremental["scaled_to_all"] = total_incremental / max(1, len(rows))

        admin.reset()
        admin.load(first, first / "export.jsonl.gz", seed=True)
        rows, joining = peer_changes(None, first / "export.jsonl.gz", chosen_names, args.peer_first_contacts)
        total_first = len(peer_changes(None, first / "export.jsonl.gz", chosen_names)[0])
        results["peer_first_sampled"] = len(rows)
        peer_first = phase(
            admin,
            "peer, first sync",
            lambda: run_peer(urls.klaviyo, urls.klaviyo_key, rows, joining=joining),
        )
        peer_first["scaled_to_all"] = total_first / max(1, len(rows))

    for result, mix in ((ours_first, first_mix), (ours_incremental, second_mix)):
        floor = floor_calls(mix)
        split = split_floor_calls(result.pop("shares"))
        purpose = result["calls_by_purpose"]
        result.update(
            mix=mix.__dict__,
            floor_calls=sum(floor.values()),
            floor_by_endpoint=floor,
            floor_s=floor_seconds(floor, args.rate_scale),
            split_floor_calls=sum(split.values()),
            split_floor_by_endpoint=split,
            # The calls of the kinds the floor counts: writes, id look-ups and list removals.
            floor_kind_calls=sum(purpose.get(kind, 0) for kind in FLOOR_KINDS),
        )
        result["calls_ratio"] = result["calls"] / max(1, result["floor_calls"])
        result["floor_kind_ratio"] = result["floor_kind_calls"] / max(1, result["floor_calls"])
        result["split_ratio"] = result["floor_kind_calls"] / max(1, result["split_floor_calls"])
    for peer, mix in ((peer_incremental, second_mix), (peer_first, first_mix)):
        scaled = peer.get("scaled_to_all", 1.0)
        peer["calls_all"] = round(peer["calls"] * scaled)
        peer["wall_all_s"] = peer["wall_s"] * scaled
        peer["formula_calls"] = sum(peer_calls(mix).values())
        peer["formula_floor_s"] = floor_seconds(peer_calls(mix), args.rate_scale)
    results.update(
        ours_first=ours_first,
        ours_incremental=ours_incremental,
        peer_incremental=peer_incremental,
        peer_first=peer_first,
    )
    return results


def report(results: dict[str, Any]) -> str:
    rows = []
    for ours, peer, label in (
        (results["ours_first"], results["peer_first"], "first sync"),
        (results["ours_incremental"], results["peer_incremental"], "incremental"),
    ):
        rows.append(
            {
                "run": label,
                "floor_calls": ours["floor_calls"],
                "calls": ours["calls"],
                "calls_ratio": ours["calls_ratio"],
                "floor_kind_calls": ours["floor_kind_calls"],
                "split_floor_calls": ours["split_floor_calls"],
                "split_ratio": ours["split_ratio"],
                "throttled": ours["throttled"],
                "floor_s": ours["floor_s"],
                "wall_s": ours["wall_s"],
                "plan_s": ours["plan_s"],
                "peer_calls": peer["calls_all"],
                "peer_wall_s": peer["wall_all_s"],
                "peer_throttled": peer["throttled"],
                "peer_calls_x": peer["calls_all"] / max(1, ours["calls"]),
                "peer_wall_x": peer["wall_all_s"] / max(1e-9, ours["wall_s"]),
            }
        )
    return table(
        rows,
        [
            ("run", "run"),
            ("floor_calls", "floor calls"),
            ("calls", "our calls"),
            ("calls_ratio", "calls / floor"),
            ("floor_kind_calls", "our writes and look-ups"),
            ("split_floor_calls", "per-task floor"),
            ("split_ratio", "writes and look-ups / per-task floor"),
            ("throttled", "our 429s"),
            ("floor_s", "floor s"),
            ("wall_s", "our wall s"),
            ("plan_s", "of it plan s"),
            ("peer_calls", "peer calls"),
            ("peer_wall_s", "peer wall s"),
            ("peer_throttled", "peer 429s"),
            ("peer_calls_x", "peer calls / ours"),
            ("peer_wall_x", "peer time / ours"),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_rate", description=__doc__)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--rate-scale", type=float, default=0.2)
    parser.add_argument("--pool-slots", type=int, default=4)
    parser.add_argument(
        "--peer-first-contacts", type=int, help="limit the peer's first sync (time scaled up)"
    )
    parser.add_argument(
        "--peer-incremental-contacts", type=int, help="limit the peer's incremental sync (time scaled up)"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)

    results = run(args)
    print()
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if math.isfinite(results["ours_first"]["wall_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
