"""The CLI on hostile input and a closed pipe, in real processes (issue 14): one stderr line
and exit 2, no warnings; `inspect --json BIG | head` ends quietly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.certcraft import raw_cert, san_ext
from tests.cli.test_inspect import _script
from tests.p12craft import tlv
from tests.pki import make_chain, make_key, make_leaf, pem_bundle
from tests.unit.test_typed_errors import CASES, PW


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pki = make_chain("ec-p256")
    leaves = [make_leaf(pki.intermediate, [f"h{i}.example.com"]).cert for i in range(300)]
    path = tmp_path_factory.mktemp("big") / "big.pem"
    path.write_bytes(pem_bundle(*leaves, *pki.chain))
    return path


def test_a_closed_pipe_ends_quietly(big_bundle: Path) -> None:
    proc = subprocess.Popen(
        [_script(), "inspect", "--json", big_bundle],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(100)  # like `| head -c 100`: read a little, then go away
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert head.startswith(b"{")
    assert err == b"", err.decode(errors="replace")


def test_a_reader_that_reads_everything_gets_it_all(big_bundle: Path) -> None:
    """Twin: the output the closed pipe cut short is big (more than a pipe buffer)."""
    done = subprocess.run([_script(), "inspect", "--json", big_bundle],
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stderr == b""
    assert len(done.stdout) > 65536
    assert len(json.loads(done.stdout)["certificates"]) == 302


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_files_are_one_line_exit_2(tmp_path: Path, case: str) -> None:
    make_bad, _, passphrase, _ = CASES[case]
    (tmp_path / "in").write_bytes(make_bad())
    (tmp_path / "pw").write_bytes(passphrase or b"")
    args: list[str] = [_script(), "inspect", str(tmp_path / "in"), "--json"]
    if passphrase:
        args += ["--passphrase-file", str(tmp_path / "pw")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("certsync: error:") and done.stderr.count("\n") == 1
    assert str(tmp_path / "in") in done.stderr
    assert PW.decode() not in done.stderr


def test_a_negative_serial_is_inspected_without_a_warning(tmp_path: Path) -> None:
    key = make_key("ec-p256", slot=3)
    path = tmp_path / "negative.der"
    path.write_bytes(raw_cert(key, serial=-5, extensions=(san_ext(tlv(0x82, b"n.example.com")),)))  # type: ignore[arg-type]
    done = subprocess.run([_script(), "inspect", path, "--json"], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["certificates"][0]["dns_names"] == ["n.example.com"]
