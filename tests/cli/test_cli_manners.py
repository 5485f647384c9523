"""CLI manners (issue 12): --version; --config/--node accepted after the sub-command too; the
status check's rule. In process through sync.cli.main (the cluster-level twins, with real
nodes, are in tests/cluster/test_point_of_change.py)."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sync.cli import build_parser, main
from sync.cmd_ops import status_ok
from sync.localcluster import certsync_command


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"certsync {importlib.metadata.version('certsync')}"


@pytest.mark.parametrize("argv", [
    ["status", "--config", "{missing}"],
    ["--config", "{missing}", "status"],
    ["cert", "list", "--json", "--config", "{missing}", "--node", "t1"],
    ["sni", "--node", "t1", "--config", "{missing}"],
])
def test_global_options_are_read_before_and_after_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    missing = str(tmp_path / "nope" / "admin.toml")
    rc = main([a.replace("{missing}", missing) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nope" in err and "unrecognized" not in err  # the config was taken, and missing


def test_an_unknown_option_after_the_command_is_still_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Twin: only the global options are accepted there."""
    with pytest.raises(SystemExit) as done:
        main(["status", "--bogus", "x"])
    assert done.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_replicate_keeps_its_own_node_option() -> None:
    """``replicate --node NAME`` names a target, not the node to talk to."""
    args = build_parser().parse_args(["replicate", "--node", "t1", "--node", "t2"])
    assert args.targets == ["t1", "t2"] and args.node is None
    late = build_parser().parse_args(["--node", "b1", "cert", "list"])
    assert late.node == "b1"  # given before, not overwritten by the leaf's default
    both = build_parser().parse_args(["--node", "b1", "cert", "list", "--node", "t1"])
    assert both.node == "t1"


def _row(**kw: Any) -> dict[str, Any]:
    return {"reachable": True, "in_sync": True, "stale": False, **kw}


@pytest.mark.parametrize(("rows", "ok"), [
    ([_row(), _row()], True),
    ([_row(), _row(reachable=False, in_sync=False)], False),
    ([_row(reachable=False, in_sync=False)] * 2, False),
    ([_row(), _row(in_sync=False)], False),
    ([_row(), _row(stale=True)], False),
    ([], False),
])
def test_status_is_a_check(rows: list[dict[str, Any]], ok: bool) -> None:
    assert status_ok({"nodes": rows}) is ok


def test_an_error_line_to_a_closed_stderr_ends_quietly(tmp_path: Path) -> None:
    """``certsync ... 2>&1 | head`` whose reader went away: exit 141, no traceback."""
    args = [*certsync_command(), "status", "--config", str(tmp_path / "none.toml")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.close()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 141 and out == b""
    # twin: read, the same error is its one line and exit 2
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.startswith("certsync: error:")
    assert done.stderr.count("\n") == 1
