#!/usr/bin/env bash
# Creates the project's virtual environments from the committed locks.
#   scripts/bootstrap.sh            -> .venv        (newest supported Airflow, everything)
#   scripts/bootstrap.sh lowest     -> .venv-lowest (lowest supported Airflow, for the unit tests)
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-newest}
case "$flavour" in
  newest) venv=.venv ;;
  lowest) venv=.venv-lowest ;;
  *) echo "usage: $0 [newest|lowest]" >&2; exit 2 ;;
esac
lock=requirements/lock-$flavour.txt
stamp=$venv/.lock-stamp

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv
fi

if [ -f "$stamp" ] && cmp -s "$stamp" "$lock"; then
  exit 0
fi

rm -rf "$venv"
uv venv --quiet --python python3.11 "$venv"
VIRTUAL_ENV=$PWD/$venv uv pip install --quiet -r "$lock"
VIRTUAL_ENV=$PWD/$venv uv pip install --quiet --no-deps -e .
cp "$lock" "$stamp"
echo "bootstrap: $venv ready ($(grep '^apache-airflow==' "$lock"))"
