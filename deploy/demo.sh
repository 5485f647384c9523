#!/usr/bin/env bash
# The README's main command: installs what is missing (deploy/setup.sh), then runs a primary,
# a backup and two traffic nodes on loopback, creates a wildcard certificate on the primary,
# replicates it and shows every node serving it. Ctrl-C stops everything.
# Extra arguments go to the demo (python -m sync.demo --help): --once, --dir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/python -m sync.demo "$@"
