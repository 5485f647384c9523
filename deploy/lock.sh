#!/usr/bin/env bash
# Regenerates deploy/requirements.lock: the exact version and hashes of every dependency
# (runtime, the dev extra, and the build backend), which deploy/setup.sh installs with
# `pip install --require-hashes`, so a fresh machine gets what CI tested.
#
#   bash deploy/lock.sh            # after changing dependencies in pyproject.toml
#
# Needs the uv of the dev extra (bash deploy/setup.sh installs it) and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
# the build backend (pyproject's [build-system] requires), for the editable install of certsync
.venv/bin/python -c 'import tomllib, sys
sys.stdout.write("".join(r + "\n" for r in tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  > deploy/build-requirements.in
.venv/bin/uv pip compile pyproject.toml deploy/build-requirements.in --extra dev \
  --universal --python-version 3.11 --generate-hashes --quiet \
  --custom-compile-command "bash deploy/lock.sh" -o deploy/requirements.lock "$@"
