#!/usr/bin/env bash
# Builds the certsync node image (default tag certsync:dev) without pulling anything:
#   1. the base image from deploy/base-image.sh (Debian bookworm via debootstrap), unless
#      BASE_IMAGE names another one;
#   2. wheels for every runtime dependency and for certsync itself, built on the host (which
#      reaches the package index; the build container need not) into .cache/wheels/{deps,app};
#   3. `docker build -f deploy/Dockerfile --build-arg WHEELS=local` on the repository root.
#
# Prints the image tag on stdout; progress goes to stderr. Cached at every step: the base is
# reused by tag, the dependency wheels are rebuilt only when pyproject's dependency list or the
# host Python changes, the certsync wheel only when its sources change, and Docker's layer
# cache skips the rest, so a run with nothing changed takes a few seconds.
#
#   IMAGE=certsync:dev        tag to build
#   BASE_IMAGE=...            use this base instead of building one (Python must match the host's)
#   PYTHON=.venv/bin/python   the Python that builds the wheels (its minor version goes in)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-certsync:dev}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=.cache/wheels
log() { echo "build-image: $*" >&2; }

BASE_IMAGE=${BASE_IMAGE:-$(bash deploy/base-image.sh)}

# ---- dependency wheels: keyed by the dependency list and the host Python -----------------
mkdir -p "$WHEELS"
py_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" - >"$WHEELS/requirements.txt" <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as fh:
    print("\n".join(sorted(tomllib.load(fh)["project"]["dependencies"])))
EOF
deps_key=$( { cat "$WHEELS/requirements.txt"; echo "python=$py_version"; uname -m; } | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/deps/.key" 2>/dev/null || true)" != "$deps_key" ]; then
  log "building dependency wheels for Python $py_version"
  rm -rf "$WHEELS/deps.new"
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$WHEELS/deps.new" -r "$WHEELS/requirements.txt" >&2
  echo "$py_version" >"$WHEELS/deps.new/python-version"
  cp "$WHEELS/requirements.txt" "$WHEELS/deps.new/requirements.txt"
  echo "$deps_key" >"$WHEELS/deps.new/.key"
  rm -rf "$WHEELS/deps"
  mv "$WHEELS/deps.new" "$WHEELS/deps"
else
  log "dependency wheels up to date ($(find "$WHEELS/deps" -name '*.whl' | wc -l) wheels)"
fi

# ---- the certsync wheel: keyed by its sources ----------------------------------------------
# (a rebuilt wheel differs byte for byte even from the same sources, which would defeat
# Docker's layer cache, so it is rebuilt only when a source file changed)
sources=(pyproject.toml README.md)
while IFS= read -r -d '' f; do sources+=("$f"); done < <(
  find node sync -type f \( -name '*.py' -o -name '*.pyi' -o -name 'py.typed' \
    -o -name '*.html' -o -name '*.css' \) \
    -not -path '*/__pycache__/*' -print0 | sort -z)
app_key=$( { printf '%s\n' "${sources[@]}"; cat "${sources[@]}"; } | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/app/.key" 2>/dev/null || true)" != "$app_key" ]; then
  log "building the certsync wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # build from a copy: keeps build/ and *.egg-info out of the working tree
  tar -cf - "${sources[@]}" | tar -C "$tmp" -xf -
  rm -rf "$WHEELS/app.new"
  # build isolation: pip brings the build backend pyproject asks for (setuptools>=77), so any
  # Python 3.11 works, also a system one whose own setuptools is older
  "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps \
    -w "$WHEELS/app.new" "$tmp" >&2
  echo "$app_key" >"$WHEELS/app.new/.key"
  rm -rf "$WHEELS/app"
  mv "$WHEELS/app.new" "$WHEELS/app"
else
  log "certsync wheel up to date"
fi

# ---- the image -------------------------------------------------------------------------------
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0  # no buildx plugin: say so instead of letting the CLI warn
fi
log "docker build $IMAGE on $BASE_IMAGE"
docker build -q -f deploy/Dockerfile \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELS=local \
  --label org.opencontainers.image.source=certsync \
  --label org.certsync.base="$BASE_IMAGE" \
  -t "$IMAGE" . >&2
echo "$IMAGE"
