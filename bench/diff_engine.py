"""Benchmark of the diff engine: read an export, load the applied state, plan every segment's diff.

    python -m bench.diff_engine --sizes 10000 100000 1000000 5000000

For each size a reproducible export with 20 segments and an applied state with about 5% of memberships
changed are generated into ``--data`` (``/tmp/bench-data``), then two child processes take turns, ``--repeat``
times each (3 by default; the fastest of each counts, since other load on the machine only adds time):

* ``parse``: the bare parse, gunzip plus msgspec (the fastest JSON parser among the dependencies) decoding
  every line of the same export, nothing kept;
* ``diff``: what the sync operator does in its core: load the applied contacts, read and normalise the export
  (``read_export``), and plan (``plan_sync``): every segment's diff and every changed contact's new value.
  Peak memory is the child's own maximum resident set size (the kernel's ``VmHWM``); then, in the first
  diff child, the XCom payload each push task would get is built and measured.

It prints one line per size and the ratios the targets are stated in; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_DATA, emit, peak_rss_mb, run_child, table

DEFAULT_SIZES = [10_000, 100_000, 1_000_000, 5_000_000]
_BLOCK = 8 << 20


def bare_parse(export: Path) -> dict[str, Any]:
    """Decode every line of the export with msgspec, in large blocks cut at line ends."""
    import msgspec

    decoder = msgspec.json.Decoder()
    started = time.perf_counter()
    lines = 0
    with gzip.open(export, "rb") as stream:
        tail = b""
        while block := stream.read(_BLOCK):
            block = tail + block
            cut = block.rfind(b"\n") + 1
            tail = block[cut:]
            lines += len(decoder.decode_lines(block[:cut]))
        if tail.strip():
            lines += len(decoder.decode_lines(tail))
    return {"parse_s": time.perf_counter() - started, "parse_lines": lines, "parse_peak_mb": peak_rss_mb()}


def diff(folder: Path, xcom: bool) -> dict[str, Any]:
    """Load the applied state, read the export and plan, timing each step; then measure the XCom payload."""
    from airflow_provider_klaviyo_nosto.sync.export import open_export_stream, read_export
    from airflow_provider_klaviyo_nosto.sync.model import Segment
    from airflow_provider_klaviyo_nosto.sync.plan import plan_sync
    from airflow_provider_klaviyo_nosto.sync.state import AppliedState, SegmentState, read_contacts

    catalogue = json.loads((folder / "catalogue.json").read_text())
    chosen = [Segment(item["id"], item["name"]) for item in catalogue]
    baseline_mb = peak_rss_mb()

    started = time.perf_counter()
    with (folder / "contacts.jsonl.gz").open("rb") as stream:
        contacts = read_contacts(stream)
    applied = AppliedState(
        list_id="LIST01",
        list_name="Nosto Customers",
        property_name="nosto_segment",
        generation=1,
        segments={segment.id: SegmentState(segment.name, 1) for segment in chosen},
        contacts=contacts,
    )
    state_done = time.perf_counter()
    with (folder / "export.jsonl.gz").open("rb") as stream:
        snapshot = read_export(open_export_stream(stream))
    export_done = time.perf_counter()
    plan = plan_sync(snapshot, chosen, applied)
    plan_done = time.perf_counter()

    result: dict[str, Any] = {
        "state_s": state_done - started,
        "export_s": export_done - state_done,
        "plan_s": plan_done - export_done,
        "diff_s": plan_done - started,
        "diff_peak_mb": peak_rss_mb(),
        "baseline_mb": baseline_mb,
        "contacts": len(snapshot.contacts),
        "applied": len(applied.contacts),
        "changed": plan.changed_contacts,
        "joined": sum(d.joined for d in plan.segment_diffs.values()),
        "left": sum(d.left for d in plan.segment_diffs.values()),
        "book_joined": plan.address_book.joined,
        "book_left": plan.address_book.left,
    }
    if xcom:
        result.update(xcom_payload(plan, chosen, snapshot.contacts))
    return result


def xcom_payload(plan: Any, chosen: list[Any], contacts: dict[str, Any]) -> dict[str, Any]:
    """Build every push task's XCom entry as the sync operator does and measure the largest one."""
    from airflow_provider_klaviyo_nosto.config import SyncConfig
    from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

    config = SyncConfig.from_mappings(
        {"segments": [segment.id for segment in chosen], "state_uri": "file:///tmp/bench-state"},
        None,
        source="bench",
    )
    operator = NostoSegmentSyncOperator(task_id="plan_sync", config_variable="")
    specs = operator.push_specs(plan, chosen, config, list_id="LIST01", dry_run=False)
    payloads = [json.dumps(spec) for spec in specs]
    largest = max(payloads, key=len)
    biggest_segment = max(plan.segment_diffs.values(), key=lambda d: d.members_after)
    return {
        "xcom_max_bytes": len(largest.encode("utf-8")),
        "xcom_entries": len(payloads),
        "xcom_has_email": any("@" in payload for payload in payloads),
        "largest_segment_members": biggest_segment.members_after,
    }


def measure(
    sizes: list[int], data: Path, seed: int, xcom_sizes: set[int], repeat: int = 1
) -> list[dict[str, Any]]:
    from bench.exports import generate

    rows = []
    for size in sizes:
        started = time.perf_counter()
        generated = generate(data / f"c{size}-s{seed}", size, seed)
        folder = Path(generated.folder)
        generate_s = time.perf_counter() - started
        # Parse and diff take turns, each in a fresh child; the fastest of each counts, since a shared
        # machine only ever adds time.
        parses, diffs = [], []
        for attempt in range(repeat):
            parses.append(run_child("bench.diff_engine", "--child", "parse", "--folder", str(folder)))
            diffs.append(
                run_child(
                    "bench.diff_engine",
                    "--child",
                    "diff",
                    "--folder",
                    str(folder),
                    *(["--xcom"] if size in xcom_sizes and attempt == 0 else []),
                )
            )
        parsed = min(parses, key=lambda result: result["parse_s"])
        diffed = {**diffs[0], **min(diffs, key=lambda result: result["diff_s"])}
        diffed["diff_peak_mb"] = max(result["diff_peak_mb"] for result in diffs)
        row = {"size": size, "generate_s": generate_s, "repeat": repeat, **parsed, **diffed}
        row["ratio"] = row["diff_s"] / row["parse_s"]
        row["plan_ratio"] = (row["export_s"] + row["plan_s"]) / row["parse_s"]
        row["us_per_contact"] = row["diff_s"] / size * 1e6
        rows.append(row)
        print(
            f"{size:>9,} contacts: parse {row['parse_s']:.2f} s; diff {row['diff_s']:.2f} s "
            f"(state {row['state_s']:.2f}, export {row['export_s']:.2f}, plan {row['plan_s']:.2f}) "
            f"= {row['ratio']:.2f} x parse; peak {row['diff_peak_mb']:.0f} MB; {row['us_per_contact']:.2f} us/contact"
            + (
                f"; XCom max {row['xcom_max_bytes']} B, email: {row['xcom_has_email']}"
                if "xcom_max_bytes" in row
                else ""
            ),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.diff_engine", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--xcom-sizes", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument(
        "--repeat", type=int, default=3, help="measure parse and diff this many times each, keep the fastest"
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--child", choices=["parse", "diff"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--xcom", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "parse":
        emit(bare_parse(args.folder / "export.jsonl.gz"))
        return 0
    if args.child == "diff":
        emit(diff(args.folder, args.xcom))
        return 0

    rows = measure(args.sizes, args.data, args.seed, set(args.xcom_sizes), max(1, args.repeat))
    print()
    print(
        table(
            rows,
            [
                ("size", "contacts"),
                ("parse_s", "bare parse s"),
                ("state_s", "load state s"),
                ("export_s", "read export s"),
                ("plan_s", "plan s"),
                ("diff_s", "diff total s"),
                ("ratio", "diff / parse"),
                ("plan_ratio", "(export + plan) / parse"),
                ("diff_peak_mb", "peak MB"),
                ("us_per_contact", "us per contact"),
            ],
        )
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
