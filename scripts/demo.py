"""
The main job, end to end on one machine: the example DAG keeps the sandbox's Klaviyo in step with Nosto.

1. starts the Klaviyo and Nosto sandboxes;
2. generates a Nosto export of 50,000 contacts in 12 segments, and profiles already in Klaviyo;
3. runs ``nosto_klaviyo_segment_sync`` with ``airflow dags test`` (SQLite metadata database);
4. writes a second export with joins, leaves, moves and contacts gone from Nosto, and runs the DAG again;
5. prints, per segment, what each run did and what Klaviyo now holds.

Run it with ``make demo``. Everything it writes goes under ``.demo/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from sandbox.harness import REPO, AirflowEnvironment, evolve_data, generate_data
from sandbox.runner import running_sandbox


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    args = parser.parse_args()

    workdir: Path = args.workdir
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.monotonic()

    with running_sandbox() as urls:
        print(f"Sandbox: Klaviyo at {urls.klaviyo}, Nosto at {urls.nosto}")
        first = generate_data(workdir / "export-1", contacts=args.contacts, segments=args.segments, seed=1)
        catalogue = json.loads((first / "catalogue.json").read_text())
        load_sandbox(urls.klaviyo, urls.nosto, first, seed_klaviyo=True)

        airflow = AirflowEnvironment(
            home=workdir / "airflow",
            klaviyo_url=urls.klaviyo,
            nosto_url=urls.nosto,
            config={
                "segments": [segment["id"] for segment in catalogue],
                "state_uri": f"file://{workdir / 'state'}",
            },
        )
        print("Setting up Airflow (metadata database, Klaviyo pool) ...")
        airflow.setup()

        for number, export_dir in ((1, first), (2, None)):
            if export_dir is None:
                export_dir = evolve_data(first, workdir / "export-2", seed=2)
                load_sandbox(urls.klaviyo, urls.nosto, export_dir, seed_klaviyo=False)
            print(f"\n=== Run {number}: airflow dags test nosto_klaviyo_segment_sync")
            run_started = time.monotonic()
            run = airflow.run_dag(check=False)
            print(f"    finished in {time.monotonic() - run_started:.0f} s; log: {run.log_path}")
            if run.returncode != 0:
                print(run.output[-4000:])
                print("The DAG run failed; see the log above.")
                return 1
            report_plan(run.output)
            report(airflow, urls.klaviyo, catalogue)

    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    return 0


def load_sandbox(klaviyo: str, nosto: str, data: Path, *, seed_klaviyo: bool) -> None:
    requests.put(
        f"{nosto}/__sandbox/catalogue", json=json.loads((data / "catalogue.json").read_text()), timeout=30
    ).raise_for_status()
    requests.put(
        f"{nosto}/__sandbox/export", data=(data / "export.jsonl.gz").read_bytes(), timeout=60
    ).raise_for_status()
    if seed_klaviyo:
        seed = json.loads((data / "klaviyo-seed.json").read_text())
        requests.post(f"{klaviyo}/__sandbox/profiles", json=seed, timeout=60).raise_for_status()
        print(f"Klaviyo sandbox seeded with {len(seed)} existing profiles.")
    with gzip.open(data / "export.jsonl.gz", "rt") as lines:
        print(
            f"Nosto export {data.name}: {sum(1 for _ in lines)} lines (the generator's line above says how many "
            "have an unusable email or duplicate another line's; the sync skips or merges those)."
        )


def report_plan(output: str) -> None:
    planned = re.search(r"Planned generation \d+ in ([\d.]+) s", output)
    scan = re.search(r"Read the emails of (\d+) Klaviyo profiles \(([^)]*)\) in ([\d.]+) s", output)
    if planned is None:
        return
    text = f"plan_sync took {float(planned[1]):.0f} s"
    if scan is not None:
        text += (
            f"; {float(scan[3]):.0f} s of it went to reading the emails of {scan[1]} Klaviyo profiles ({scan[2]}), "
            "to find those stored with other letter case. The profiles a run writes count as updated, so the "
            "run after a first sync reads them all again (docs/architecture.md)"
        )
    print(textwrap.fill(text + ".", width=108, initial_indent="    ", subsequent_indent="    "))


def report(airflow: AirflowEnvironment, klaviyo: str, catalogue: list[dict[str, Any]]) -> None:
    summaries = [row["value"] for row in airflow.push_summaries() if row["task_id"] == "push_segment"]
    print(
        "    joined/left: how the segment's membership changed. The other columns are the work that push\n"
        "    task did: every changed contact is written once per run, with its whole value, by one task (its\n"
        "    first changed segment by id; the Address book's for contacts gone from Nosto), so a task may\n"
        "    write contacts of other segments, or none at all.\n"
        "    +list/-list: contacts it added to / removed from the 'Nosto Customers' list."
    )
    columns = ("joined", "left", "written", "added_to_list", "removed_from_list", "rejected", "calls")
    print(
        f"    {'push task':<32} {'joined':>7} {'left':>6} {'written':>8} {'+list':>6} {'-list':>6} "
        f"{'rejected':>8} {'calls':>6} {'seconds':>8}"
    )
    totals: Counter[str] = Counter()
    for summary in sorted(summaries, key=lambda s: str(s.get("segment_name"))):
        values = [int(summary.get(column, 0)) for column in columns]
        totals.update(dict(zip(columns[2:], values[2:], strict=True)))
        print(
            f"    {str(summary.get('segment_name'))[:32]:<32} {values[0]:>7} {values[1]:>6} {values[2]:>8} "
            f"{values[3]:>6} {values[4]:>6} {values[5]:>8} {values[6]:>6} {summary.get('seconds', 0):>8}"
        )
    print(
        f"    {'all tasks':<32} {'':>7} {'':>6} {totals['written']:>8} {totals['added_to_list']:>6} "
        f"{totals['removed_from_list']:>6} {totals['rejected']:>8} {totals['calls']:>6}"
    )

    state = requests.get(f"{klaviyo}/__sandbox/state", timeout=120).json()
    lists = [item for item in state["lists"] if item["name"] == "Nosto Customers"]
    members = len(lists[0]["members"]) if lists else 0
    holders: Counter[str] = Counter()
    for profile in state["profiles"]:
        for name in profile.get("properties", {}).get("nosto_segment") or []:
            holders[name] += 1
    others = len(state["profiles"]) - members
    print(
        f"\n    Klaviyo now holds {len(state['profiles'])} profiles: {members} in the list 'Nosto Customers'"
        + (f"; the other {others} are profiles Nosto does not know (or no longer knows)." if others else ".")
    )
    print("    Profiles whose nosto_segment contains each segment's name:")
    for segment in catalogue:
        print(f"    {segment['name'][:48]:<48} {holders[segment['name']]:>6}")


if __name__ == "__main__":
    sys.exit(main())
