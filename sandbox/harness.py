"""
Drive a throwaway Airflow against the sandbox: the demo and the end-to-end tests share this.

It runs Airflow's own CLI in subprocesses (``airflow db migrate``, ``airflow pools set``,
``airflow dags test``) with connections and the sync configuration passed as ``AIRFLOW_CONN_*`` and
``AIRFLOW_VAR_*`` environment variables, exactly as a user could. It never imports the provider.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "nosto_klaviyo_segment_sync"
CONFIG_VARIABLE = "nosto_klaviyo_segment_sync"
POOL = "klaviyo_api"
POOL_SLOTS = 4

DEMO_KLAVIYO_KEY = "pk_sandbox_demo_key"
DEMO_NOSTO_APPS_TOKEN = "nosto_sandbox_apps_token"
DEMO_NOSTO_EXPORT_TOKEN = "nosto_sandbox_export_token"


@dataclass
class AirflowRun:
    """The outcome of one ``airflow dags test``: exit code and where its output went."""

    returncode: int
    log_path: Path

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class AirflowEnvironment:
    """
    An ``AIRFLOW_HOME`` with an SQLite metadata database, the example DAG and the Klaviyo pool.

    :param home: the folder to use as ``AIRFLOW_HOME`` (created).
    :param klaviyo_url: base URL of the Klaviyo sandbox.
    :param nosto_url: base URL of the Nosto sandbox.
    :param config: the sync configuration written to the Airflow Variable.
    """

    home: Path
    klaviyo_url: str
    nosto_url: str
    config: dict[str, Any] = field(default_factory=dict)
    klaviyo_key: str = DEMO_KLAVIYO_KEY
    extra_env: dict[str, str] = field(default_factory=dict)
    runs: int = 0

    @property
    def python(self) -> str:
        return sys.executable

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": "airflow.*",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW_CONN_KLAVIYO_DEFAULT": json.dumps(
                    {"conn_type": "klaviyo", "host": self.klaviyo_url, "password": self.klaviyo_key}
                ),
                "AIRFLOW_CONN_NOSTO_DEFAULT": json.dumps(
                    {
                        "conn_type": "nosto",
                        "host": self.nosto_url,
                        "password": DEMO_NOSTO_APPS_TOKEN,
                        "extra": {"export_token": DEMO_NOSTO_EXPORT_TOKEN},
                    }
                ),
                "AIRFLOW_VAR_" + CONFIG_VARIABLE.upper(): json.dumps(self.config),
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, log_name: str | None = None, check: bool = True) -> AirflowRun:
        """Run an ``airflow`` CLI command with this environment, its output kept in a log file."""
        self.home.mkdir(parents=True, exist_ok=True)
        log_path = self.home / "cli-logs" / (log_name or f"{args[0]}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as out:
            completed = subprocess.run(
                [self.python, "-m", "airflow", *args],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                check=False,
            )
        run = AirflowRun(completed.returncode, log_path)
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {completed.returncode}; last lines:\n" + _tail(run.output)
            )
        return run

    def setup(self) -> None:
        """Create the metadata database and the pool every Klaviyo task runs in (counting deferred tasks)."""
        self.airflow("db", "migrate", log_name="db-migrate.log")
        self.airflow(
            "pools",
            "set",
            POOL,
            str(POOL_SLOTS),
            "Caps concurrent Klaviyo calls for one account",
            "--include-deferred",
            log_name="pools.log",
        )

    def run_dag(self, conf: Mapping[str, Any] | None = None, *, check: bool = True) -> AirflowRun:
        """Run the example DAG once with ``airflow dags test``, as a user would."""
        self.runs += 1
        args = ["dags", "test", DAG_ID]
        if conf:
            args += ["--conf", json.dumps(dict(conf))]
        return self.airflow(
            *args, log_name=f"dags-test-{time.strftime('%H%M%S')}-{self.runs}.log", check=check
        )

    def push_summaries(self) -> list[dict[str, Any]]:
        """The XCom summaries the push tasks of the latest run returned (counts only, no emails)."""
        script = (
            "import json\n"
            "from sqlalchemy import select\n"
            "from airflow.models.dagrun import DagRun\n"
            "from airflow.models.xcom import XComModel\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as s:\n"
            f"    run = s.scalars(select(DagRun).where(DagRun.dag_id == {DAG_ID!r})"
            ".order_by(DagRun.id.desc()).limit(1)).first()\n"
            "    rows = s.scalars(select(XComModel).where(XComModel.dag_id == run.dag_id, "
            "XComModel.run_id == run.run_id, XComModel.key == 'return_value')).all()\n"
            "    out = [{'task_id': r.task_id, 'map_index': r.map_index, 'value': r.value} for r in rows]\n"
            "print('XCOM-JSON' + json.dumps(out, default=str))\n"
        )
        completed = subprocess.run(
            [self.python, "-c", script], env=self.env(), capture_output=True, text=True, check=True, cwd=REPO
        )
        line = next(line for line in completed.stdout.splitlines() if line.startswith("XCOM-JSON"))
        rows: list[dict[str, Any]] = json.loads(line.removeprefix("XCOM-JSON"))
        for row in rows:
            if isinstance(row["value"], str):
                with contextlib.suppress(json.JSONDecodeError):
                    row["value"] = json.loads(row["value"])
        return rows


def generate_data(out: Path, *, contacts: int, segments: int, seed: int) -> Path:
    """Generate an export, its catalogue and pre-existing Klaviyo profiles into ``out`` (the CLI's files)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "generate",
            "--contacts",
            str(contacts),
            "--segments",
            str(segments),
        ]
        + ["--seed", str(seed), "--out", str(out)],
        check=True,
        cwd=REPO,
    )
    return out


def evolve_data(first: Path, out: Path, *, seed: int) -> Path:
    """Write into ``out`` the next day's export of ``first`` (joins, leaves, moves, contacts gone) and its catalogue."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "sandbox", "evolve", "--in", str(first / "export.jsonl.gz")]
        + ["--out", str(out / "export.jsonl.gz"), "--seed", str(seed)],
        check=True,
        cwd=REPO,
    )
    shutil.copy(first / "catalogue.json", out / "catalogue.json")
    return out


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
