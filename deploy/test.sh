#!/usr/bin/env bash
# The whole test suite: set-up, ruff, mypy (strict), generated-code drift, pytest.
# Extra arguments go to pytest (e.g. deploy/test.sh -m slow; slow tests stay deselected
# unless -m names slow, see tests/conftest.py). Mutation testing is on demand: deploy/mutation.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check .
echo "== mypy"
mypy
echo "== pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
