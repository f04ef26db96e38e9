"""
A real Airflow deployment on this machine, as the deployment suite drives it.

PostgreSQL (Debian's package, run as the ``postgres`` system user) holds the metadata database; the
scheduler (LocalExecutor), the dag processor, the triggerer and the API server run as separate processes;
the applied state lives in an S3 bucket served by ``moto``; Klaviyo and Nosto are the sandbox. Everything
listens on loopback ports chosen free at start-up and stops when the ``with`` block ends.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import requests
from moto.server import ThreadedMotoServer

from sandbox.runner import SandboxUrls, running_sandbox

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "nosto_klaviyo_segment_sync"
CONFIG_VARIABLE = "nosto_klaviyo_segment_sync"
POOL = "klaviyo_api"
POOL_SLOTS = 4
STATE_CONN_ID = "klaviyo_state_s3"
STATE_BUCKET = "klaviyo-nosto-state"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Call ``check`` until it returns something other than None or False; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


# -- PostgreSQL ------------------------------------------------------------------------------------


def install_system_packages() -> None:
    """PostgreSQL and Chromium from Debian's packages; does nothing when both are there."""
    subprocess.run([str(REPO / "scripts" / "system-packages.sh")], check=True)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster owned by the ``postgres`` system user, trusting loopback clients."""

    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed; run scripts/system-packages.sh")
    return found[-1]


def _as_postgres(*command: str) -> list[str]:
    # The server refuses to run as root: as root, run it as its own system user, as Debian's scripts do.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="airflow-deployment-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run(
        _as_postgres(
            _pg_bin("initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ),
        **run,  # type: ignore[call-overload]
    )
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg_ctl = _pg_bin("pg_ctl")
    subprocess.run(
        _as_postgres(
            pg_ctl, "-D", str(data_dir), "-o", options, "-l", f"{data_dir}/server.log", "-w", "start"
        ),
        **run,  # type: ignore[call-overload]
    )
    try:
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "airflow"],
            **run,  # type: ignore[call-overload]
        )
        yield Postgres(data_dir, port)
    finally:
        subprocess.run(_as_postgres(pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"), check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the state bucket ------------------------------------------------------------------------------


@contextmanager
def running_object_store() -> Iterator[str]:
    """An S3-compatible server (moto) with the state bucket; yields its endpoint URL."""
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="deployment-test",
            aws_secret_access_key="deployment-test",
        )
        client.create_bucket(Bucket=STATE_BUCKET)
        yield endpoint
    finally:
        server.stop()


# -- Airflow ---------------------------------------------------------------------------------------

#: Applied by Airflow to every task when it parses the DAG: the example DAG's own retries stay, only their
#: delay shrinks, so a task that keeps failing ends in seconds instead of minutes.
LOCAL_SETTINGS = """
from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds=1)
    task.retry_exponential_backoff = False
"""

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


@dataclass
class AirflowDeployment:
    """The running deployment and a REST client for its API server (the simple auth manager, all admins)."""

    home: Path
    api: str
    sandbox: SandboxUrls
    s3_endpoint: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)

    # -- the REST API --------------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.api}/api/v2{path}", timeout=60, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def set_config(self, config: dict[str, Any]) -> None:
        """Write the sync configuration Variable, as an admin does in the UI."""
        body = {"key": CONFIG_VARIABLE, "value": json.dumps(config)}
        response = self.http.patch(f"{self.api}/api/v2/variables/{CONFIG_VARIABLE}", json=body, timeout=60)
        if response.status_code == 404:
            self.call("POST", "/variables", json=body)
        elif response.status_code >= 400:
            raise RuntimeError(f"setting the Variable failed: {response.status_code} {response.text[:500]}")

    def trigger(self) -> str:
        run = self.call("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        run_id: str = run["dag_run_id"]
        return run_id

    def run_state(self, run_id: str) -> str:
        state: str = self.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state

    def wait_for_run(self, run_id: str, timeout: float = 240) -> str:
        return wait_for(
            f"run {run_id} to end",
            lambda: state if (state := self.run_state(run_id)) in ("success", "failed") else None,
            timeout,
        )

    def task_instances(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every task instance of ``task_id`` in the run, mapped ones in map-index order."""
        body = self.call(
            "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"task_id": task_id, "limit": 100}
        )
        instances: list[dict[str, Any]] = body["task_instances"]
        return sorted(instances, key=lambda ti: ti["map_index"])

    def xcom(self, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.call(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"map_index": map_index, "deserialize": True},
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    # -- the processes ----------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in COMPONENTS:
            path = self.home / "component-logs" / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        for name in COMPONENTS:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # Workers and task processes share the component's process group: none may outlive it.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            else:
                sys.stderr.write(f"deployment: killed what was left of the {name} process group\n")


def airflow_env(
    home: Path, postgres: Postgres, api_port: int, s3: str, sandbox: SandboxUrls
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "AWS_"))}
    api = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": "airflow.*",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_KLAVIYO_DEFAULT": json.dumps(
                {"conn_type": "klaviyo", "host": sandbox.klaviyo, "password": sandbox.klaviyo_key}
            ),
            "AIRFLOW_CONN_NOSTO_DEFAULT": json.dumps(
                {
                    "conn_type": "nosto",
                    "host": sandbox.nosto,
                    "password": sandbox.nosto_apps_token,
                    "extra": {"export_token": sandbox.nosto_export_token},
                }
            ),
            "AIRFLOW_CONN_" + STATE_CONN_ID.upper(): json.dumps(
                {
                    "conn_type": "aws",
                    "login": "deployment-test",
                    "password": "deployment-test",
                    "extra": {"endpoint_url": s3, "region_name": "us-east-1"},
                }
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_airflow(env: dict[str, str], *args: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"airflow {' '.join(args)} exited {completed.returncode}:\n{completed.stdout[-3000:]}\n"
            f"{completed.stderr[-3000:]}"
        )


@contextmanager
def running_deployment(home: Path) -> Iterator[AirflowDeployment]:
    """Start everything; on leaving the block stop every process started here."""
    install_system_packages()
    with ExitStack() as stack:
        postgres = stack.enter_context(running_postgres())
        s3 = stack.enter_context(running_object_store())
        sandbox = stack.enter_context(running_sandbox())
        api_port = free_port()
        env = airflow_env(home, postgres, api_port, s3, sandbox)
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)

        run_airflow(env, "db", "migrate")
        # The README's setup step: the pool every Klaviyo task shares, counting deferred tasks.
        run_airflow(
            env, "pools", "set", POOL, str(POOL_SLOTS), "Caps concurrent Klaviyo calls", "--include-deferred"
        )

        deployment = AirflowDeployment(
            home=home, api=f"http://127.0.0.1:{api_port}", sandbox=sandbox, s3_endpoint=s3
        )
        stack.callback(deployment.stop)
        logs = home / "component-logs"
        logs.mkdir(exist_ok=True)
        for name in COMPONENTS:
            with (logs / f"{name}.log").open("wb") as out:
                deployment.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "airflow", name],
                    env=env,
                    cwd=home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        try:
            wait_for("a healthy deployment", lambda: _healthy(deployment), timeout=180, interval=2)
            wait_for(
                "the example DAG to be parsed", lambda: _dag_present(deployment), timeout=180, interval=2
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{deployment.log_tail()}") from None
        deployment.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        _stop_catch_up_run(deployment)
        yield deployment


def _stop_catch_up_run(deployment: AirflowDeployment) -> None:
    """
    Fail the run the scheduler starts on unpausing (the latest 12-hour mark), before it does anything.

    The tests trigger their own runs through the API; a scheduled run beside them would queue them behind it
    (the DAG allows one active run). No segments are chosen yet, so that run could write nothing anyway.
    """
    run = wait_for(
        "the scheduled run started on unpausing",
        lambda: next(iter(deployment.call("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]), None),
        timeout=120,
    )
    deployment.call("PATCH", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})
    unfinished = ("running", "queued", "scheduled", "deferred", "up_for_retry", "restarting")
    wait_for(
        "the scheduled run's tasks to stop",
        lambda: all(
            ti["state"] not in unfinished
            for ti in deployment.call("GET", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")[
                "task_instances"
            ]
        ),
        timeout=120,
    )


def _healthy(deployment: AirflowDeployment) -> bool:
    for name, process in deployment.processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"airflow {name} exited with {process.returncode}\n{deployment.log_tail()}")
    try:
        health = requests.get(f"{deployment.api}/api/v2/monitor/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _dag_present(deployment: AirflowDeployment) -> bool:
    return requests.get(f"{deployment.api}/api/v2/dags/{DAG_ID}", timeout=5).status_code == 200
