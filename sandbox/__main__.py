"""Command line: ``python -m sandbox serve|generate|evolve``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sandbox import (
    DEFAULT_KLAVIYO_KEY,
    DEFAULT_NOSTO_APPS_TOKEN,
    DEFAULT_NOSTO_EXPORT_TOKEN,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="Local Klaviyo and Nosto stand-ins."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run both servers until interrupted")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--klaviyo-port", type=int, default=8701)
    serve.add_argument("--nosto-port", type=int, default=8702)
    serve.add_argument(
        "--klaviyo-key",
        default=os.environ.get("SANDBOX_KLAVIYO_KEY", DEFAULT_KLAVIYO_KEY),
        help="full-scope key",
    )
    serve.add_argument(
        "--nosto-apps-token", default=os.environ.get("SANDBOX_NOSTO_APPS_TOKEN", DEFAULT_NOSTO_APPS_TOKEN)
    )
    serve.add_argument(
        "--nosto-export-token",
        default=os.environ.get("SANDBOX_NOSTO_EXPORT_TOKEN", DEFAULT_NOSTO_EXPORT_TOKEN),
    )
    serve.add_argument(
        "--rate-scale",
        type=float,
        default=float(os.environ.get("SANDBOX_RATE_SCALE", "1.0")),
        help="multiplies rate-limit windows; 0.01 makes a minute last 0.6 s",
    )
    serve.add_argument("--data-dir", type=Path, help="preload a `generate` output directory")

    generate = commands.add_parser("generate", help="write a realistic catalogue, export and Klaviyo seed")
    generate.add_argument("--contacts", type=int, default=50_000)
    generate.add_argument("--segments", type=int, default=12)
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--segments-key", default="nosto_segments")

    evolve = commands.add_parser("evolve", help="derive the next day's export from an export")
    evolve.add_argument("--in", dest="source", type=Path, required=True)
    evolve.add_argument("--out", type=Path, required=True)
    evolve.add_argument("--seed", type=int, default=2)
    evolve.add_argument("--segments-key", default="nosto_segments")
    evolve.add_argument("--catalogue", type=Path, help="catalogue.json; defaults to the one beside --in")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from sandbox.server import ServeOptions, run

        return run(
            ServeOptions(
                host=args.host,
                klaviyo_port=args.klaviyo_port,
                nosto_port=args.nosto_port,
                klaviyo_key=args.klaviyo_key,
                nosto_apps_token=args.nosto_apps_token,
                nosto_export_token=args.nosto_export_token,
                rate_scale=args.rate_scale,
                data_dir=args.data_dir,
            )
        )

    import sandbox.generator as generator

    if args.command == "generate":
        summary = generator.generate(
            contacts=args.contacts,
            segments=args.segments,
            seed=args.seed,
            out=args.out,
            segments_key=args.segments_key,
        )
    else:
        catalogue = args.catalogue or args.source.parent / "catalogue.json"
        summary = generator.evolve(
            source=args.source,
            out=args.out,
            seed=args.seed,
            segments_key=args.segments_key,
            catalogue=catalogue if catalogue.exists() else None,
        )
    print(" ".join(f"{key}={value}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
