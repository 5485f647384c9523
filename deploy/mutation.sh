#!/usr/bin/env bash
# Mutation testing on demand (not part of CI's default run): deploy/mutation.sh [MODULE...]
# e.g. deploy/mutation.sh node/names.py. MUTATION_BUDGET (s per module, default 600),
# MUTATION_WORKERS (default 1), MUTATION_LOGS (dir to keep mutmut's logs). See deploy/mutation.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python deploy/mutation.py "$@"
