"""Helpers shared by the benchmark scripts: child processes, peak memory and printing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Where generated data goes: never the repository.
DEFAULT_DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))
RESULT_PREFIX = "BENCH-RESULT "


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB.

    Linux's ``VmHWM`` is the high-water mark of this process's own memory. ``getrusage``'s ``ru_maxrss`` is
    the fallback elsewhere; on Linux it would also carry over the parent's peak across ``fork`` and ``exec``,
    so a child started by a large parent would report at least the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict[str, Any]) -> None:
    """Print a child's result on one line the parent can find among its other output."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 7200
) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process (so its peak memory is its own) and return its result."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_PREFIX))
            return result
    raise RuntimeError(f"{module} printed no result:\n{completed.stdout[-2000:]}")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Format ``rows`` as a Markdown table with ``(key, heading)`` columns."""
    lines = ["| " + " | ".join(heading for _key, heading in columns) + " |"]
    lines.append("|" + "|".join(" ---: " for _ in columns) + "|")
    for row in rows:
        cells = []
        for key, _heading in columns:
            value = row.get(key, "")
            cells.append(
                f"{value:,.2f}"
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
