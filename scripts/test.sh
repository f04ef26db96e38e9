#!/usr/bin/env bash
# The whole test command: lint, format check, type check, then unit, sandbox and end-to-end tests on the
# newest supported Airflow, then the unit tests again on the lowest supported Airflow.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh newest
scripts/bootstrap.sh lowest

echo "== lint, format, types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== tests on the newest Airflow ($(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')): unit, sandbox, benchmark smoke runs, then end to end (about 5 minutes)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/sandbox tests/bench tests/e2e "$@"

echo "== unit tests on the lowest Airflow ($(.venv-lowest/bin/python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'))"
.venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit
