"""Benchmark of one push task's peak memory: a segment of ``--members`` contacts written from scratch.

    python -m bench.push_memory --members 1000000

The export puts every contact in one segment, so after the sync operator has planned (in this process),
that segment's push task owns every contact: it reads the diff, removes nobody, submits
``members / 10,000`` bulk import jobs to the sandbox, waits for them inline and writes its journal. The push
runs alone in a child process, as on an Airflow worker (Airflow imported), and reports its own maximum
resident set size (``VmHWM``), its time and its calls. Its pacer runs on the sandbox's time scale, as in
:mod:`bench.sync_rate`, so the time is not a real account's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import DEFAULT_DATA, emit, peak_rss_mb, run_child

SEGMENT = {"id": "5a497a000000000000000005", "name": "Loyal Customers"}


def write_export(path: Path, members: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
        for start in range(0, members, 10_000):
            out.write(
                "".join(
                    f'{{"email": "member{index}@example.com", "nosto_segments": ["{SEGMENT["name"]}"]}}\n'
                    for index in range(start, min(members, start + 10_000))
                )
            )


def connections(klaviyo: str, nosto: str) -> dict[str, str]:
    from sandbox import DEFAULT_KLAVIYO_KEY, DEFAULT_NOSTO_APPS_TOKEN, DEFAULT_NOSTO_EXPORT_TOKEN

    return {
        "AIRFLOW_CONN_KLAVIYO_DEFAULT": json.dumps(
            {"conn_type": "klaviyo", "host": klaviyo, "password": DEFAULT_KLAVIYO_KEY}
        ),
        "AIRFLOW_CONN_NOSTO_DEFAULT": json.dumps(
            {
                "conn_type": "nosto",
                "host": nosto,
                "password": DEFAULT_NOSTO_APPS_TOKEN,
                "extra": {"export_token": DEFAULT_NOSTO_EXPORT_TOKEN},
            }
        ),
    }


def push_child(spec: dict[str, Any], rate_scale: float) -> dict[str, Any]:
    from airflow_provider_klaviyo_nosto.operators.push import KlaviyoSegmentPushOperator
    from bench.sync_rate import scale_our_pacing

    scale_our_pacing(rate_scale)

    imported_mb = peak_rss_mb()
    started = time.perf_counter()
    operator = KlaviyoSegmentPushOperator(
        task_id="push_segment", push=spec, deferrable=False, poll_interval=0.5
    )
    summary = operator.execute({})
    return {
        "push_s": time.perf_counter() - started,
        "push_peak_mb": peak_rss_mb(),
        "after_imports_mb": imported_mb,
        "written": summary.get("written"),
        "calls": summary.get("calls"),
        "jobs": len(summary.get("job_ids", [])),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sandbox.runner import running_sandbox

    folder = args.data / f"push-m{args.members}"
    export = folder / "export.jsonl.gz"
    write_export(export, args.members)
    state = folder / f"state-{os.getpid()}"
    with running_sandbox(rate_scale=args.rate_scale) as urls:
        env = connections(urls.klaviyo, urls.nosto)
        os.environ.update(env)
        requests.put(f"{urls.nosto}/__sandbox/catalogue", json=[SEGMENT], timeout=60).raise_for_status()
        requests.put(
            f"{urls.nosto}/__sandbox/export", data=export.read_bytes(), timeout=600
        ).raise_for_status()

        from airflow_provider_klaviyo_nosto.operators.sync import NostoSegmentSyncOperator

        started = time.perf_counter()
        specs = NostoSegmentSyncOperator(
            task_id="plan_sync",
            config_variable="",
            defaults={"segments": [SEGMENT["id"]], "state_uri": f"file://{state}"},
        ).execute({})
        plan_s = time.perf_counter() - started
        spec = next(spec for spec in specs if spec["key"] == SEGMENT["id"])
        payloads = [json.dumps(entry) for entry in specs]
        xcom = {
            "xcom_bytes": len(json.dumps(spec).encode("utf-8")),
            "xcom_max_bytes": max(len(payload.encode("utf-8")) for payload in payloads),
            "xcom_has_email": any("@" in payload for payload in payloads),
        }
        result = (
            {} if args.plan_only else run_child("bench.push_memory", "--child", json.dumps(spec), env=env)
        )
    result.update(members=args.members, contacts_to_write=spec["contacts_to_write"], plan_s=plan_s, **xcom)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.push_memory", description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--rate-scale", type=float, default=0.01)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plan-only", action="store_true", help="stop after the plan (XCom sizes only)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        emit(push_child(json.loads(args.child), args.rate_scale))
        return 0
    result = run(args)
    print(
        f"XCom entry of a segment of {result['members']:,} members: {result['xcom_bytes']} bytes "
        f"(largest entry {result['xcom_max_bytes']} bytes); holds an email: {result['xcom_has_email']}"
    )
    if args.plan_only:
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    print(
        f"push of a segment of {result['members']:,} members: peak {result['push_peak_mb']:.0f} MB "
        f"({result['after_imports_mb']:.0f} MB after imports), {result['push_s']:.1f} s, "
        f"{result['jobs']} bulk jobs, {result['calls']} calls"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
