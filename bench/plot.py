"""Plot the diff benchmark's time and peak memory against the number of contacts.

python -m bench.plot --json /tmp/bench-results/diff.json --out docs/performance-diff.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def plot(rows: list[dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["size"] for row in rows]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    time_axis.plot(sizes, [row["diff_s"] for row in rows], "o-", label="diff (state + export + plan)")
    time_axis.plot(sizes, [row["export_s"] + row["plan_s"] for row in rows], "s--", label="export + plan")
    time_axis.plot(sizes, [row["parse_s"] for row in rows], "^:", label="bare parse (msgspec)")
    time_axis.set(xscale="log", yscale="log", xlabel="contacts", ylabel="seconds", title="Time")
    time_axis.grid(True, which="both", alpha=0.3)
    time_axis.legend()
    memory_axis.plot(sizes, [row["diff_peak_mb"] for row in rows], "o-", label="diff peak RSS")
    memory_axis.axhline(1536, color="grey", linestyle=":", label="1.5 GB target at 1M")
    memory_axis.axhline(4096, color="black", linestyle=":", label="4 GB target at 5M")
    memory_axis.set(xscale="log", yscale="log", xlabel="contacts", ylabel="MB", title="Peak memory")
    memory_axis.grid(True, which="both", alpha=0.3)
    memory_axis.legend()
    figure.suptitle("Diff engine, 20 segments, 5% of memberships changed (loaded 2-core machine)")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("--json", type=Path, required=True, help="the --json output of bench.diff_engine")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    plot(json.loads(args.json.read_text()), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
