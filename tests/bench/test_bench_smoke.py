"""The benchmarks run at a tiny size and print every figure they promise (their speed is not tested here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.floor import ChangeMix, endpoint_seconds, floor_calls, floor_seconds, peer_calls, split_floor_calls

REPO = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def test_floor_follows_the_documented_batch_sizes_and_tiers() -> None:
    mix = ChangeMix(joins=15_000, value_changes=5_000, removals=2_500)

    # 20,000 values in jobs of 10,000 with the list, 2,500 cleared values in one job without it; ids of
    # leavers looked up 100 at a time, removed 1,000 at a time.
    assert floor_calls(mix) == {
        "POST /api/profile-bulk-import-jobs": 3,
        "GET /api/profiles": 25,
        "DELETE /api/lists/{id}/relationships/profiles": 3,
    }
    # Tier M: 10 per second, 150 per minute. 151 calls need a second minute window; 20 calls two seconds.
    assert endpoint_seconds(151, (10, 150)) == 60.0
    assert endpoint_seconds(20, (10, 150)) == 1.0
    assert endpoint_seconds(1, (10, 150)) == 0.0
    assert floor_seconds({"GET /api/profiles": 751}, scale=0.5) == 30.0
    assert peer_calls(mix) == {
        "POST /api/profile-import": 22_500,
        "POST /api/lists/{id}/relationships/profiles": 15,
        "DELETE /api/lists/{id}/relationships/profiles": 3,
    }


def test_split_floor_adds_up_each_tasks_own_calls() -> None:
    # Three tasks: 6,000 joins; 5,000 value changes and 150 leavers; 50 leavers. Together one task would need
    # 2 jobs with the list, 1 without, 2 look-ups and 1 removal; apart, every task pays its own.
    shares = [ChangeMix(6_000, 0, 0), ChangeMix(0, 5_000, 150), ChangeMix(0, 0, 50)]

    assert floor_calls(ChangeMix(6_000, 5_000, 200)) == {
        "POST /api/profile-bulk-import-jobs": 3,
        "GET /api/profiles": 2,
        "DELETE /api/lists/{id}/relationships/profiles": 1,
    }
    assert split_floor_calls(shares) == {
        "POST /api/profile-bulk-import-jobs": 4,
        "GET /api/profiles": 3,
        "DELETE /api/lists/{id}/relationships/profiles": 2,
    }


def test_diff_engine_benchmark_reports_time_memory_ratio_and_xcom(tmp_path: Path) -> None:
    out = tmp_path / "diff.json"
    run_bench(
        "bench.diff_engine",
        "--sizes",
        "2000",
        "--xcom-sizes",
        "2000",
        "--repeat",
        "2",
        "--data",
        str(tmp_path),
        "--json",
        str(out),
    )

    (row,) = json.loads(out.read_text())
    assert row["repeat"] == 2
    for field in (
        "parse_s",
        "state_s",
        "export_s",
        "plan_s",
        "diff_s",
        "ratio",
        "diff_peak_mb",
        "us_per_contact",
    ):
        assert row[field] > 0, field
    assert row["contacts"] == 2000
    # About 5% of the contacts differ from the applied state.
    assert 40 <= row["changed"] <= 200
    assert row["xcom_entries"] == 21
    assert row["xcom_has_email"] is False
    assert row["xcom_max_bytes"] < 4096


def test_sync_benchmark_reports_calls_429s_and_the_peer(tmp_path: Path) -> None:
    out = tmp_path / "sync.json"
    run_bench(
        "bench.sync_rate",
        *("--contacts", "400", "--changes", "40", "--rate-scale", "0.01", "--peer-first-contacts", "100"),
        *("--data", str(tmp_path), "--json", str(out)),
    )

    results = json.loads(out.read_text())
    for run in ("ours_first", "ours_incremental"):
        assert results[run]["floor_calls"] >= 1
        assert results[run]["calls"] >= results[run]["floor_calls"]
        assert (
            results[run]["floor_calls"]
            <= results[run]["split_floor_calls"]
            <= results[run]["floor_kind_calls"]
        )
        assert results[run]["calls_by_endpoint"]
        assert "throttled" in results[run]
        assert results[run]["wall_s"] > 0
    assert results["peer_incremental"]["calls_by_endpoint"]["POST /api/profile-import"] >= 40
    assert results["peer_first"]["calls_all"] >= 390


def test_push_memory_benchmark_reports_peak_memory(tmp_path: Path) -> None:
    out = tmp_path / "push.json"
    run_bench("bench.push_memory", "--members", "1500", "--data", str(tmp_path), "--json", str(out))

    result = json.loads(out.read_text())
    assert result["written"] == 1500
    assert result["push_peak_mb"] > result["after_imports_mb"] > 0
    assert result["xcom_has_email"] is False
    assert result["xcom_bytes"] < 4096
