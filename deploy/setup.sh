#!/usr/bin/env bash
# Installs everything certsync's demo and tests need on a fresh Debian machine:
# system tools from Debian's packages (when run as root) and a virtualenv in .venv with
# certsync and its development dependencies (Playwright for Python among them). Safe to run
# again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v pebble >/dev/null || [ -x /usr/bin/pebble ] || need+=(pebble)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# systemd-analyze verifies deploy/certsync-node@.service in the tests
command -v systemd-analyze >/dev/null || need+=(systemd)
# bash and zsh load `certsync completion` scripts in the tests
command -v zsh >/dev/null || need+=(zsh)
# the console's browser tests drive Debian's Chromium with Playwright (which never downloads
# a browser of its own here: tests/browser points it at /usr/bin/chromium)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || need+=(chromium)
# the container suite drives `docker-compose` too, where a Docker engine is present
if command -v docker >/dev/null && ! command -v docker-compose >/dev/null; then
  need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# the exact versions and hashes CI tested (deploy/requirements.lock; `bash deploy/lock.sh`
# regenerates it), then certsync itself, editable, with nothing resolved anew
stamp=.venv/.certsync-installed
want=$(cat pyproject.toml deploy/requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --require-hashes --no-deps -r deploy/requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check >&2
  echo "$want" > "$stamp"
fi
