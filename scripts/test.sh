#!/usr/bin/env bash
# The whole test command: lint, format check, type check; then, side by side, (1) the unit, sandbox, benchmark
# smoke and end-to-end tests on the newest supported Airflow, (2) the fault matrix on it, and (3) the real
# Airflow deployment suite, the manual's build and the unit tests on the lowest supported Airflow. Most of (1)
# and (2) waits on the sandbox's rate limits and Airflow's retry delays, and most of (3) on Airflow's processes,
# so the three share the machine well. Each starts its own sandboxes on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh newest
scripts/bootstrap.sh lowest
scripts/system-packages.sh

echo "== lint, format, types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
airflow_version() { "$1" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'; }

# Each step runs even when one before it failed, so that one run reports every failure.
second_half() {
  local status=0
  echo "== a real Airflow $(airflow_version .venv/bin/python) deployment: PostgreSQL, scheduler, triggerer, API server, UI"
  .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/deployment" tests/deployment || status=1
  echo "== the manual (docs/), built offline with warnings as errors"
  .venv/bin/sphinx-build -W --keep-going -q -b html docs build/docs || status=1
  echo "== unit tests on the lowest Airflow ($(airflow_version .venv-lowest/bin/python))"
  .venv-lowest/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/lowest" tests/unit || status=1
  return "$status"
}
second_half >"$work/second-half.log" 2>&1 &
second_pid=$!

newest=(tests/unit tests/sandbox tests/bench tests/e2e)
faults_pid=""
if [ $# -eq 0 ]; then
  {
    echo "== the fault matrix on the newest Airflow: faults injected into the sandbox, the hooks and runs of the DAG"
    .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/faults" tests/faults
  } >"$work/fault-matrix.log" 2>&1 &
  faults_pid=$!
else
  # Arguments (-k, -x, a path) select among all the newest-Airflow tests in one run, so that a selection
  # matching nothing in one part is not reported as a failure of that part.
  newest+=(tests/faults)
fi

echo "== tests on the newest Airflow ($(airflow_version .venv/bin/python)): ${newest[*]}"
echo "   (the deployment suite, the manual and the lowest Airflow run alongside; their output follows)"
first_status=0
.venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/newest" "${newest[@]}" "$@" || first_status=$?

faults_status=0
if [ -n "$faults_pid" ]; then
  wait "$faults_pid" || faults_status=$?
  cat "$work/fault-matrix.log"
fi
second_status=0
wait "$second_pid" || second_status=$?
cat "$work/second-half.log"

if [ "$first_status" -ne 0 ] || [ "$faults_status" -ne 0 ] || [ "$second_status" -ne 0 ]; then
  echo "== FAILED: newest-Airflow tests exited $first_status; the fault matrix $faults_status; deployment, manual" \
    "and lowest-Airflow $second_status"
  exit 1
fi
echo "== all passed"
