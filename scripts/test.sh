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

echo "== tests on the newest Airflow ($(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')): unit, sandbox, end to end, then a real Airflow deployment (about 8 minutes)"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/sandbox tests/e2e tests/deployment "$@"

echo "== the manual (docs/), built offline with warnings as errors"
.venv/bin/sphinx-build -W --keep-going -q -b html docs build/docs

echo "== unit tests on the lowest Airflow ($(.venv-lowest/bin/python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'))"
.venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit
