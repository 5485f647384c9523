"""``certsync coverage`` offline form: JSON shape, table, exit codes 0/1/2, one-line errors."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from sync.cli import main
from tests._ci import require_tool

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn: str,
    dns: list[str] | None,
    ips: list[str] = [],  # noqa: B006  # never mutated
    *,
    ca: bool = False,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A small certificate made with cryptography (self-signed unless ``issuer``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns is not None or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture
def site_pem(tmp_path: Path) -> Path:
    cert, _ = make_cert(
        "support.example.com",
        ["support.example.com", "*.atlas.example.com"],
        ["10.0.0.1"],
    )
    path = tmp_path / "site.crt"
    path.write_bytes(pem(cert))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["coverage", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    assert err.startswith("certsync: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    for word in words:
        assert word in err


# --------------------------------------------------------------------------- exit 0 / 1


def test_json_all_covered_exit_0(capsys: pytest.CaptureFixture[str], site_pem: Path) -> None:
    code, out, err = run(
        capsys,
        "--cert", str(site_pem),
        "--hostname", "Support.Example.com.",
        "--hostname", "t1.atlas.example.com",
        "--hostname", "10.0.0.1",
        "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "all_covered": True,
        "hostnames": [
            {
                "hostname": "Support.Example.com.",  # echoed as given
                "covered": True,
                "kind": "exact",
                "matched_by": "support.example.com",
            },
            {
                "hostname": "t1.atlas.example.com",
                "covered": True,
                "kind": "wildcard",
                "matched_by": "*.atlas.example.com",
            },
            {"hostname": "10.0.0.1", "covered": True, "kind": "ip", "matched_by": "10.0.0.1"},
        ],
    }


def test_json_not_covered_exit_1(capsys: pytest.CaptureFixture[str], site_pem: Path) -> None:
    code, out, err = run(
        capsys,
        "--cert", str(site_pem),
        "--hostname", "support.example.com",
        "--hostname", "atlas.example.com",
        "--hostname", "a.b.atlas.example.com",
        "--json",
    )  # fmt: skip
    assert (code, err) == (1, "")
    data = json.loads(out)
    assert data["all_covered"] is False
    assert [(h["hostname"], h["covered"], h["kind"]) for h in data["hostnames"]] == [
        ("support.example.com", True, "exact"),
        ("atlas.example.com", False, None),  # the wildcard never covers its apex
        ("a.b.atlas.example.com", False, None),  # one label only
    ]
    assert all(set(h) == {"hostname", "covered", "kind", "matched_by", "reason"}
               for h in data["hostnames"][1:])  # fmt: skip
    assert "reason" not in data["hostnames"][0]


@pytest.mark.parametrize(
    ("hosts", "code", "last_line"),
    [
        (["support.example.com", "t9.atlas.example.com"], 0, "all covered"),
        (["support.example.com", "www.example.com"], 1, "NOT all covered"),
    ],
)
def test_table_output(
    capsys: pytest.CaptureFixture[str], site_pem: Path, hosts: list[str], code: int, last_line: str
) -> None:
    argv = ["--cert", str(site_pem)]
    for h in hosts:
        argv += ["--hostname", h]
    got, out, err = run(capsys, *argv)
    assert (got, err) == (code, "")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["HOSTNAME", "COVERED"]
    assert lines[-1] == last_line
    for h in hosts:
        assert any(line.startswith(h + " ") for line in lines)


def test_no_dns_sans_reason(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cert, _ = make_cert("support.example.com", None)  # CN only: not used
    path = tmp_path / "cn-only.der"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    code, out, _ = run(capsys, "--cert", str(path), "--hostname", "support.example.com", "--json")
    assert code == 1
    (row,) = json.loads(out)["hostnames"]
    assert row["covered"] is False
    assert "no DNS SANs" in row["reason"] and "CN" in row["reason"]


def test_identity_of_a_chain_is_checked_not_the_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca = make_cert("Example CA", ["ca.example.com"], ca=True)
    leaf, _ = make_cert("support.example.com", ["support.example.com"], issuer=ca)
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    (tmp_path / "ca.pem").write_bytes(pem(ca[0]))
    argv = ["--cert", str(tmp_path / "ca.pem"), "--cert", str(tmp_path / "leaf.pem")]
    code, _, _ = run(capsys, *argv, "--hostname", "support.example.com")
    assert code == 0
    code, out, _ = run(capsys, *argv, "--hostname", "ca.example.com", "--json")
    assert code == 1  # the CA's SAN is not the identity's
    assert json.loads(out)["hostnames"][0]["covered"] is False


def test_pkcs12_with_passphrase_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cert, key = make_cert("support.example.com", ["support.example.com"])
    secret = b"canary-Passphrase-7731"
    blob = pkcs12.serialize_key_and_certificates(
        b"site", key, cert, None, serialization.BestAvailableEncryption(secret)
    )
    (tmp_path / "site.pfx").write_bytes(blob)
    (tmp_path / "pass").write_bytes(secret + b"\n")
    (tmp_path / "wrong").write_bytes(b"not-it\n")
    base = ["--cert", str(tmp_path / "site.pfx"), "--hostname", "support.example.com"]
    code, _, err = run(capsys, *base, "--passphrase-file", str(tmp_path / "pass"))
    assert (code, err) == (0, "")
    # negative twin: wrong passphrase is bad input, and neither passphrase is shown
    code, out, err = run(capsys, *base, "--passphrase-file", str(tmp_path / "wrong"))
    assert (code, out) == (2, "")
    assert_one_line_error(err, "site.pfx")
    assert "not-it" not in err and secret.decode() not in err


# --------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(
    ("hostname", "word"),
    [
        ("https://support.example.com", "URL"),
        ("[::1]", "brackets"),
        ("foo:bar", "port"),
        ("*.example.com", "wildcard"),
        ("a..example.com", "empty label"),
        ("", "empty"),
    ],
)
def test_invalid_hostname_exit_2(
    capsys: pytest.CaptureFixture[str], site_pem: Path, hostname: str, word: str
) -> None:
    code, out, err = run(capsys, "--cert", str(site_pem), "--hostname", hostname, "--json")
    assert (code, out) == (2, "")
    assert_one_line_error(err, repr(hostname), word)


def test_valid_hostname_twin_of_invalid(capsys: pytest.CaptureFixture[str], site_pem: Path) -> None:
    code, _, err = run(capsys, "--cert", str(site_pem), "--hostname", "support.example.com")
    assert (code, err) == (0, "")


def test_ca_only_input_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca, _ = make_cert("Example CA", None, ca=True)
    path = tmp_path / "ca-bundle.pem"
    path.write_bytes(pem(ca))
    code, out, err = run(capsys, "--cert", str(path), "--hostname", "support.example.com")
    assert (code, out) == (2, "")
    assert_one_line_error(err, "ca-bundle.pem", "identity")


def test_self_signed_ca_true_server_certificate_is_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # twin of the CA-only case: `openssl req -x509` marks self-signed server certs CA:TRUE
    cert, _ = make_cert("support.example.com", ["support.example.com"], ca=True)
    path = tmp_path / "self-signed.pem"
    path.write_bytes(pem(cert))
    code, _, err = run(capsys, "--cert", str(path), "--hostname", "support.example.com")
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--hostname", "support.example.com"], ["--cert FILE", "--config ADMIN_TOML"]),
        (["--cert", "/nonexistent/site.pem", "--hostname", "a.example.com"], ["does not exist"]),
        (["--cert", "SITE"], ["--hostname"]),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], site_pem: Path, argv: list[str], words: list[str]
) -> None:
    argv = [str(site_pem) if a == "SITE" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert_one_line_error(err, *words)


def test_garbage_file_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(bytes(range(256)) * 4)
    code, out, err = run(capsys, "--cert", str(path), "--hostname", "support.example.com")
    assert (code, out) == (2, "")
    assert_one_line_error(err, "random.bin")


# --------------------------------------------------------------------------- real peers


@pytest.mark.parametrize(
    ("host", "code"),
    [("support.example.com", 0), ("t1.atlas.example.com", 0), ("example.com", 1)],
)
def test_openssl_made_certificate_via_console_entry(tmp_path: Path, host: str, code: int) -> None:
    """A certificate and key written by ``openssl req -x509``, checked by a real process."""
    require_tool("openssl")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
            "-subj", "/CN=support.example.com", "-days", "30",
            "-addext", "subjectAltName=DNS:support.example.com,DNS:*.atlas.example.com",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    proc = subprocess.run(
        [
            sys.executable, "-m", "sync.cli", "coverage",
            "--cert", str(tmp_path / "c.pem"), "--cert", str(tmp_path / "k.pem"),
            "--hostname", host, "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["all_covered"] is (code == 0)
