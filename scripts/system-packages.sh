#!/usr/bin/env bash
# Installs the Debian packages the deployment suite needs (PostgreSQL for Airflow's metadata database,
# Chromium for the UI tests), only when one is missing: a second run does nothing and takes no time.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "system-packages: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "system-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql package would start a server of its own on port 5432; the tests start their own
# cluster, so no service may start during the install (the standard policy-rc.d switch, removed after).
policy=/usr/sbin/policy-rc.d
added_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  added_policy=yes
fi
trap 'if [ "$added_policy" = yes ]; then rm -f "$policy"; fi' EXIT
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
