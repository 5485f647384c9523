"""A node whose data volume is full says so, keeps its store and keeps serving.

One primary in a container whose data directory (``/var/lib/certsync``) is a small tmpfs.
The volume is filled from inside the container; ``cert import`` from the host CLI then ends
with one line, "no space left on the node's data volume", exit 2, and the store (list,
digest, revision) is unchanged while the node keeps answering; with the filler removed the
same import goes through (the twin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.containers.cluster import ContainerCluster
from tests.containers.conftest import BuiltImage, Tracker
from tests.containers.test_scenarios import openssl_certificate

pytestmark = pytest.mark.containers

_FILL = (
    "import errno, os\n"
    "fd = os.open('/var/lib/certsync/filler', os.O_CREAT | os.O_WRONLY, 0o600)\n"
    "for chunk in (b'\\0' * 65536, b'\\0'):\n"
    "    try:\n"
    "        while os.write(fd, chunk):\n"
    "            pass\n"
    "    except OSError as err:\n"
    "        assert err.errno == errno.ENOSPC, err\n"
    "os.close(fd)\n"
    "print('full')\n"
)


def _exec(cluster: ContainerCluster, name: str, argv: list[str]) -> str:
    result = cluster.container(name).get_wrapped_container().exec_run(argv)
    output = result.output
    assert isinstance(output, bytes)
    assert result.exit_code == 0, output.decode(errors="replace")
    return output.decode()


def _state(cluster: ContainerCluster) -> tuple[object, ...]:
    proc = cluster.cli("cert", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = sorted(c["sha256"] for c in json.loads(proc.stdout))
    status = cluster.cli("status", "--json")
    node = json.loads(status.stdout)["nodes"][0]
    return listed, node["digest"], node["default_sha256"]


def test_a_full_data_volume_is_said_and_changes_nothing(
    certsync_image: BuiltImage, docker_tracker: Tracker, tmp_path: Path
) -> None:
    cluster = ContainerCluster.make(docker_tracker, certsync_image.tag, tmp_path / "c",
                                    init_args=["--site", "support.example.com",
                                               "--primary", "p1=p1.example.com"])
    cluster.tmpfs_data["p1"] = "size=4m,uid=10001,gid=10001,mode=0700"
    cluster.start_all()
    first, first_sha = openssl_certificate(tmp_path, "first", ("p1.example.com",
                                                               "support.example.com"))
    second, second_sha = openssl_certificate(tmp_path, "second", ("p1.example.com",
                                                                  "support.example.com"))
    imported = cluster.cli("cert", "import", str(first), "--name", "first", "--default")
    assert imported.returncode == 0, imported.stderr
    before = _state(cluster)
    assert "full" in _exec(cluster, "p1", ["python", "-c", _FILL])

    refused = cluster.cli("cert", "import", str(second), "--name", "second")
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("certsync: error: no space left on the node's data volume")
    assert "Traceback" not in cluster.logs("p1")
    assert _state(cluster) == before  # nothing changed, and the node still answers
    assert cluster.served_inside("p1") == first_sha

    _exec(cluster, "p1", ["rm", "/var/lib/certsync/filler"])  # the twin: with space, it works
    again = cluster.cli("cert", "import", str(second), "--name", "second")
    assert again.returncode == 0, again.stderr
    assert second_sha in _state(cluster)[0]  # type: ignore[operator]
