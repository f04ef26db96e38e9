#!/usr/bin/env bash
# The main job: installs what it needs, then runs the example DAG twice against the local sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh newest
exec .venv/bin/python scripts/demo.py "$@"
