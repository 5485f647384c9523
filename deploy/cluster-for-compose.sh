#!/usr/bin/env bash
# Writes a certsync cluster for containers into DIR (see deploy/compose_layout.py for the layout):
#
#   bash deploy/cluster-for-compose.sh DIR [--host-port-base PORT] [--host-address ADDR]
#        [--owner UID:GID] [certsync cluster init options, e.g. --sync-interval 10]
#   docker-compose --env-file DIR/compose.env -f deploy/compose.yaml up -d
#   certsync --config DIR/admin-host.toml status
#
# Without --primary it makes the cluster deploy/compose.yaml runs: primary p1, backup b1,
# traffic t1 and t2, site support.example.com. Nodes listen on 0.0.0.0 in their containers and
# are reached by their service names. Run it as root (or give --owner) so that the containers'
# user, uid 10001, can read its files.
#
#   PYTHON=...   a Python with certsync installed (default: .venv/bin/python, else python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then PYTHON=$here/../.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" "$here/compose_layout.py" "$@"
