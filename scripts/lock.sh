#!/usr/bin/env bash
# Re-resolves the dependency locks (run after changing dependencies in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
for flavour in newest lowest; do
  extras=(--extra dev)
  # The deployment suite, the manual and the benchmarks run on the newest Airflow only.
  [ "$flavour" = newest ] && extras+=(--extra deployment --extra docs --extra bench)
  uv pip compile --quiet --no-header pyproject.toml "${extras[@]}" -p 3.11 \
    -c "requirements/airflow-$flavour.in" -o "requirements/lock-$flavour.txt"
done
