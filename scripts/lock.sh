#!/usr/bin/env bash
# Re-resolves the dependency locks (run after changing dependencies in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
for flavour in newest lowest; do
  uv pip compile --quiet --no-header pyproject.toml --extra dev --extra bench -p 3.11 \
    -c "requirements/airflow-$flavour.in" -o "requirements/lock-$flavour.txt"
done
