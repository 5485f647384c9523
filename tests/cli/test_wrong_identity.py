"""A refused identity is said as such, in one line: never "unreachable" for a node that is up.

A real node process on loopback; the CLI is run with admin configs whose certificates are
this cluster's, another cluster's, or a mix (this cluster's CA, another cluster's admin
certificate -- the case gRPC reports as a closed socket).
"""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_node_cli import Cluster, cluster, run

__all__ = ["cluster"]  # the running node fixture, shared with test_node_cli


def _other_cluster(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    run("cluster", "init", str(other), "--site", "support.example.com",
        "--primary", "p1=p1.example.com", "--base-port", "1")
    return other


def _config(tmp_path: Path, *, cluster_toml: Path, ca: Path, cert_dir: Path) -> str:
    path = tmp_path / "mixed-admin.toml"
    path.write_text(
        f'cluster = "{cluster_toml}"\nca_cert = "{ca}"\ncert = "{cert_dir / "admin.pem"}"\n'
        f'key = "{cert_dir / "admin-key.pem"}"\nname = "admin"\n')
    return str(path)


def _one_line_error(proc_stderr: str) -> str:
    lines = proc_stderr.splitlines()
    assert len(lines) == 1, proc_stderr  # no gRPC core log lines around it
    assert lines[0].startswith("certsync: error: ")
    return lines[0]


def test_an_admin_certificate_from_another_ca_is_not_accepted(
    cluster: Cluster, tmp_path: Path
) -> None:
    other = _other_cluster(tmp_path)
    config = _config(tmp_path, cluster_toml=cluster.directory / "cluster.toml",
                     ca=cluster.directory / "ca.pem", cert_dir=other)
    proc = run("--config", config, "cert", "list", check=False)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "did not accept this client's certificate" in line
    assert "unreachable" not in line


def test_a_node_certificate_from_another_ca_is_named(cluster: Cluster, tmp_path: Path) -> None:
    other = _other_cluster(tmp_path)
    config = _config(tmp_path, cluster_toml=cluster.directory / "cluster.toml",
                     ca=other / "ca.pem", cert_dir=other)
    proc = run("--config", config, "cert", "list", check=False)
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert "is not from the CA in this config" in line
    assert "unreachable" not in line


def test_the_right_identity_is_accepted(cluster: Cluster, tmp_path: Path) -> None:
    """The twin of both: the same mixed-file config, with this cluster's own files."""
    config = _config(tmp_path, cluster_toml=cluster.directory / "cluster.toml",
                     ca=cluster.directory / "ca.pem", cert_dir=cluster.directory)
    proc = run("--config", config, "cert", "list", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
