"""Run the Klaviyo and Nosto sandboxes side by side in one process and one event loop.

Sharing a loop keeps every state change single-threaded: handlers never run concurrently, so the
account model needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import signal
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from sandbox.klaviyo_app import KlaviyoSandbox
from sandbox.nosto_app import NostoSandbox


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`, which stops both servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    klaviyo_port: int = 8701
    nosto_port: int = 8702
    klaviyo_key: str = "pk_sandbox_demo_key"
    nosto_apps_token: str = "nosto_sandbox_apps_token"
    nosto_export_token: str = "nosto_sandbox_export_token"
    rate_scale: float = 1.0
    data_dir: Path | None = None


def load_data(klaviyo: KlaviyoSandbox, nosto: NostoSandbox, data_dir: Path) -> None:
    """Preload what ``python -m sandbox generate`` wrote: catalogue, export and Klaviyo seed."""
    catalogue = data_dir / "catalogue.json"
    if catalogue.exists():
        nosto.catalogue = json.loads(catalogue.read_text(encoding="utf-8"))
    for name in ("export.jsonl.gz", "export.jsonl"):
        export = data_dir / name
        if export.exists():
            nosto.export = export.read_bytes()
            nosto.export_modified = export.stat().st_mtime
            break
    seed = data_dir / "klaviyo-seed.json"
    if seed.exists():
        klaviyo.seed_profiles(json.loads(seed.read_text(encoding="utf-8")))


async def serve(options: ServeOptions) -> None:
    klaviyo = KlaviyoSandbox(api_key=options.klaviyo_key, rate_scale=options.rate_scale)
    nosto = NostoSandbox(apps_token=options.nosto_apps_token, export_token=options.nosto_export_token)
    if options.data_dir is not None:
        load_data(klaviyo, nosto, options.data_dir)

    servers = [
        _QuietServer(
            uvicorn.Config(
                app.asgi(),
                host=options.host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=30,
            )
        )
        for app, port in ((klaviyo, options.klaviyo_port), (nosto, options.nosto_port))
    ]

    def stop(*_args: object) -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise SystemExit("sandbox: a server failed to start (is the port in use?)")
        await asyncio.sleep(0.02)

    klaviyo_port, nosto_port = (server.servers[0].sockets[0].getsockname()[1] for server in servers)
    print(
        f"sandbox ready klaviyo=http://{options.host}:{klaviyo_port} nosto=http://{options.host}:{nosto_port}",
        flush=True,
    )
    await asyncio.gather(*tasks)


def gzip_bytes(data: bytes) -> bytes:
    # mtime 0 keeps the output byte-identical for identical input.
    return gzip.compress(data, mtime=0)


def run(options: ServeOptions) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options))
    sys.stdout.flush()
    return 0
