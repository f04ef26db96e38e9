"""Start the sandbox in a child process for tests: ``with running_sandbox() as urls: ...``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox import DEFAULT_KLAVIYO_KEY, DEFAULT_NOSTO_APPS_TOKEN, DEFAULT_NOSTO_EXPORT_TOKEN

_READY = re.compile(r"sandbox ready klaviyo=(\S+) nosto=(\S+)")
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SandboxUrls:
    """Where the running sandbox listens and which credentials it accepts."""

    klaviyo: str
    nosto: str
    klaviyo_key: str = DEFAULT_KLAVIYO_KEY
    nosto_apps_token: str = DEFAULT_NOSTO_APPS_TOKEN
    nosto_export_token: str = DEFAULT_NOSTO_EXPORT_TOKEN


@contextmanager
def running_sandbox(
    klaviyo_port: int = 0,
    nosto_port: int = 0,
    *,
    rate_scale: float | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[SandboxUrls]:
    """Run ``python -m sandbox serve`` until the block ends.

    Port 0 lets the system pick free ports; the real ones come back in the yielded URLs.

    :param rate_scale: shrinks rate-limit windows (``SANDBOX_RATE_SCALE``); the default keeps the
        environment's value, or 1.0
    :param data_dir: a ``python -m sandbox generate`` output to preload
    """
    command = [
        sys.executable,
        "-m",
        "sandbox",
        "serve",
        "--klaviyo-port",
        str(klaviyo_port),
        "--nosto-port",
        str(nosto_port),
    ]
    if rate_scale is not None:
        command += ["--rate-scale", str(rate_scale)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    process = subprocess.Popen(
        command,
        cwd=_REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        urls = _wait_until_ready(process, startup_timeout)
        yield urls
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[str], timeout: float) -> SandboxUrls:
    found: list[SandboxUrls] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = _READY.search(line)
            if match and not found:
                found.append(SandboxUrls(klaviyo=match.group(1), nosto=match.group(2)))
        # Keep draining so the child never blocks on a full pipe.

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0)
    deadline = timeout
    step = 0.05
    waited = 0.0
    while not found:
        if process.poll() is not None:
            raise RuntimeError(f"sandbox exited with status {process.returncode} before it was ready")
        if waited >= deadline:
            raise TimeoutError(f"sandbox not ready after {timeout} s")
        reader.join(step)
        waited += step
    return found[0]
