"""`certsync inspect` per DESIGN.md: JSON fields and order, exit codes, one-line errors,
no secrets in any output; in-process via sync.cli.main and once via the installed script."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from node.formats import export_pkcs12
from sync.cli import main
from tests.pki import NOW, Pki, der_set_mac_iterations, key_pem, make_chain, make_leaf, pem_bundle

CERT_FIELDS = [
    "sha256", "subject", "issuer", "role", "self_signed", "dns_names", "ip_addresses",
    "key_type", "not_before", "not_after",
]  # fmt: skip
PASSPHRASE = "CANARY-pass-phrase-3b9d1e"


def _sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def pki() -> Pki:
    sans = ["Support.Example.com", "*.example.com", "192.0.2.10", "2001:db8::1"]
    return make_chain("rsa-2048", ca_key_type="ec-p384", sans=sans)


@pytest.fixture
def files(tmp_path: Path, pki: Pki) -> Path:
    (tmp_path / "leaf.crt").write_bytes(pki.leaf.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "leaf.key").write_bytes(key_pem(pki.leaf.key, PASSPHRASE.encode()))
    (tmp_path / "chain.pem").write_bytes(pem_bundle(pki.root.cert, pki.intermediate.cert))
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\r\n")
    (tmp_path / "wrong.txt").write_text("not-it\n")
    p12 = export_pkcs12(
        name="support", key=pki.leaf.key, cert=pki.leaf.cert, chain=pki.chain,
        passphrase=PASSPHRASE.encode(), rounds=1000,
    )  # fmt: skip
    (tmp_path / "bundle.pfx").write_bytes(p12)
    (tmp_path / "absurd.pfx").write_bytes(der_set_mac_iterations(p12, 2**31 - 1))
    (tmp_path / "truncated.pfx").write_bytes(p12[:-50])
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_for_separate_files_read_as_one_input(
    capsys: pytest.CaptureFixture[str], files: Path, pki: Pki
) -> None:
    code, out, err = run(
        capsys, "inspect", files / "chain.pem", files / "leaf.key", files / "leaf.crt",
        "--passphrase-file", files / "pass.txt", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == ["certificates", "private_key", "chain"]
    certs = data["certificates"]
    assert [list(c) for c in certs] == [CERT_FIELDS] * 3
    assert [c["sha256"] for c in certs] == [_sha(pki.leaf.cert), *map(_sha, pki.chain)]
    assert [c["role"] for c in certs] == ["identity", "intermediate", "root"]
    assert [c["self_signed"] for c in certs] == [False, False, True]
    leaf = certs[0]
    assert leaf["subject"] == pki.leaf.cert.subject.rfc4514_string()
    assert leaf["issuer"] == pki.intermediate.cert.subject.rfc4514_string()
    assert leaf["dns_names"] == ["Support.Example.com", "*.example.com"]  # as written
    assert leaf["ip_addresses"] == ["192.0.2.10", "2001:db8::1"]
    assert [c["key_type"] for c in certs] == ["rsa-2048", "ec-p384", "ec-p384"]
    assert leaf["not_before"] == (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf["not_after"] == "2027-01-01T00:00:00Z"
    assert data["private_key"] == {"key_type": "rsa-2048", "matches": _sha(pki.leaf.cert)}
    assert data["chain"] == {"complete": True, "problems": []}
    assert PASSPHRASE not in out


def test_pkcs12_needs_its_passphrase(capsys: pytest.CaptureFixture[str], files: Path) -> None:
    code, out, _ = run(
        capsys, "inspect", files / "bundle.pfx", "--passphrase-file", files / "pass.txt", "--json"
    )
    assert code == 0
    assert json.loads(out)["chain"]["complete"] is True
    # twins: no passphrase, wrong passphrase
    for extra in ([], ["--passphrase-file", str(files / "wrong.txt")]):
        code, out, err = run(capsys, "inspect", files / "bundle.pfx", *extra)
        assert code == 2
        assert out == ""
        assert err.startswith("certsync: error:") and err.count("\n") == 1
        assert "bundle.pfx" in err
        assert "passphrase" in err
        assert "not-it" not in err and PASSPHRASE not in err


def test_ca_bundle_only_is_incomplete_and_says_so(
    capsys: pytest.CaptureFixture[str], files: Path
) -> None:
    code, out, _ = run(capsys, "inspect", files / "chain.pem", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["private_key"] is None
    assert data["chain"]["complete"] is False
    assert "no identity" in data["chain"]["problems"][0]
    assert {c["role"] for c in data["certificates"]} == {"intermediate", "root"}


def test_missing_issuer_is_named(capsys: pytest.CaptureFixture[str], files: Path) -> None:
    code, out, _ = run(capsys, "inspect", files / "leaf.crt", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["chain"] == {
        "complete": False,
        "problems": ["no certificate for issuer CN=Example Intermediate,O=Example Test PKI"],
    }


def test_key_matching_nothing_reports_null(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = make_leaf(None, ["other.example.com"], slot=5)
    stray = make_leaf(None, ["stray.example.com"], slot=6)
    (tmp_path / "mix.pem").write_bytes(pem_bundle(other.cert, key=stray.key))
    code, out, _ = run(capsys, "inspect", tmp_path / "mix.pem", "--json")
    assert code == 0
    assert json.loads(out)["private_key"] == {"key_type": "ec-p256", "matches": None}


def test_table_output(capsys: pytest.CaptureFixture[str], files: Path, pki: Pki) -> None:
    code, out, _ = run(
        capsys, "inspect", files / "bundle.pfx", "--passphrase-file", files / "pass.txt"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "ROLE", "KEY", "NOT", "AFTER", "SUBJECT"]
    assert "identity" in lines[1] and "CN=Support.Example.com" in lines[1]
    assert _sha(pki.leaf.cert) in out
    assert "private key: rsa-2048, matches certificate 1" in out
    assert "chain: complete" in out
    assert PASSPHRASE not in out


def _write_bad(d: Path) -> dict[str, Path]:
    good = (d / "leaf.crt").read_bytes()
    pem = pem_bundle(make_chain("ec-p256").leaf.cert).decode()
    paths = {
        "truncated.der": good[: len(good) // 2],
        "random.bin": bytes((i * 73 + 19) % 256 for i in range(4096)),
        "empty.pem": b"",
        "broken64.pem": pem.replace(pem.splitlines()[2], "%%%%" + pem.splitlines()[2][4:]).encode(),
    }
    out = {}
    for name, data in paths.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    huge = d / "huge.p12"
    with huge.open("wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # a 100 MB (sparse) file
    out["huge.p12"] = huge
    for name in ("absurd.pfx", "truncated.pfx"):
        out[name] = d / name
    out["missing.pem"] = d / "missing.pem"
    out["a-directory"] = d
    return out


BAD = [
    "truncated.der", "random.bin", "empty.pem", "broken64.pem", "huge.p12", "absurd.pfx",
    "truncated.pfx", "missing.pem", "a-directory",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exit_2_one_line_naming_the_file(
    capsys: pytest.CaptureFixture[str], files: Path, case: str
) -> None:
    path = _write_bad(files)[case]
    started = time.monotonic()
    code, out, err = run(capsys, "inspect", path, "--passphrase-file", files / "pass.txt", "--json")
    assert time.monotonic() - started < 2
    assert code == 2
    assert out == ""
    assert err.startswith("certsync: error: ")
    assert err.endswith("\n") and err.count("\n") == 1
    assert str(path) in err
    assert "Traceback" not in err
    assert PASSPHRASE not in err


def test_canary_key_and_passphrase_never_appear(
    capsys: pytest.CaptureFixture[str], files: Path, pki: Pki
) -> None:
    key = pki.leaf.key
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_body = base64.b64encode(der).decode()
    assert isinstance(key, rsa.RSAPrivateKey)
    secrets = [PASSPHRASE, pem_body[40:100], der[40:80].hex(), str(key.private_numbers().d)[:40]]
    (files / "plain.key").write_bytes(key_pem(key))
    outputs = []
    runs: list[list[str | Path]] = [
        ["inspect", files / "plain.key", files / "leaf.crt", "--json"],
        ["inspect", files / "plain.key", files / "leaf.crt"],
        ["inspect", files / "leaf.key", "--passphrase-file", files / "pass.txt", "--json"],
        ["inspect", files / "leaf.key", "--passphrase-file", files / "wrong.txt"],
        ["inspect", files / "bundle.pfx", "--passphrase-file", files / "pass.txt"],
        ["inspect", files / "bundle.pfx", "--passphrase-file", files / "wrong.txt"],
    ]
    for argv in runs:
        outputs.append("".join(run(capsys, *argv)[1:]))
    text = "\n".join(outputs)
    assert "rsa-2048" in text  # the runs did report on the key
    for secret in secrets:
        assert secret not in text


def _script() -> str:
    beside = Path(sys.executable).parent / "certsync"
    found = str(beside) if beside.exists() else shutil.which("certsync")
    if not found:
        pytest.fail("the certsync console script is not installed (pip install -e .)")
    return found


def test_installed_script_in_a_real_process(files: Path, pki: Pki) -> None:
    ok = subprocess.run(
        [_script(), "inspect", files / "bundle.pfx", "--passphrase-file", files / "pass.txt",
         "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["certificates"][0]["sha256"] == _sha(pki.leaf.cert)
    bad = subprocess.run(
        [_script(), "inspect", files / "bundle.pfx", "--passphrase-file", files / "wrong.txt"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.startswith("certsync: error:") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("certsync: error:") and err.count("\n") == 1
