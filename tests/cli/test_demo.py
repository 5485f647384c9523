"""The README's main command, ``python -m sync.demo``, run as a user runs it.

``--once`` runs the whole demo and exits; without it the demo waits for Ctrl-C, which must
stop every node cleanly and without a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = re.compile(
    r"^\s+(?P<node>\w+)\s+(?:openssl|python-ssl) s_client -connect (?P<addr>\S+) "
    r"-servername (?P<host>\S+): subject=(?P<subject>.*) sha256=(?P<sha>[0-9a-f]{64})$",
    re.MULTILINE,
)
CONSOLE = re.compile(r"^\s+(?P<node>\w+)\s+console https://(?P<addr>[^/\s]+)/$", re.MULTILINE)
DIRECTORY = re.compile(r"on loopback in (?P<dir>\S+)$", re.MULTILINE)
TIMEOUT = 180


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "sync.demo", *args]


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def _console_answers(directory: Path, address: str) -> bool:
    """GET / of p1's console with the admin identity the demo names, the CA checked."""
    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    ctx.load_cert_chain(str(directory / "admin.pem"), str(directory / "admin-key.pem"))
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="p1.node.certsync") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: p1\r\nConnection: close\r\n\r\n")
        return tls.recv(12) == b"HTTP/1.1 200"


def _check_report(out: str) -> list[re.Match[str]]:
    probes = list(PROBE.finditer(out))
    assert [(m["node"], m["host"]) for m in probes] == [
        ("p1", "p1.example.com"), ("b1", "b1.example.com"),
        ("t1", "t1.example.com"), ("t2", "t2.example.com")], out
    served = {m["sha"] for m in probes}
    assert len(served) == 1, out  # every node served the same certificate
    (sha,) = served
    assert f"every node served the same certificate: sha256={sha}" in out
    assert all("CN=*.example.com" in m["subject"] for m in probes)
    # the status and coverage tables were printed, with every node in sync and covered
    status = out[out.index("== status"):out.index("== coverage")]
    for name in ("p1", "b1", "t1", "t2"):
        row = next(line for line in status.splitlines() if line.startswith(f"{name} "))
        assert row.split()[2:4] == ["yes", "yes"], row  # reachable, in sync
    assert "all covered" in out[out.index("== coverage"):]
    return probes


def test_demo_once_serves_one_certificate_everywhere_and_cleans_up() -> None:
    proc = subprocess.run(_demo("--once"), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr
    probes = _check_report(out)
    assert "stopped: every node shut down cleanly" in out
    assert not any(_listening(m["addr"]) for m in probes)  # every node is gone
    match = DIRECTORY.search(out)
    assert match is not None and not Path(match["dir"]).exists()  # temp dir removed


def test_demo_ctrl_c_stops_everything_without_traceback(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    proc = subprocess.Popen(_demo("--dir", str(keep)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        for line in proc.stdout:  # blocks on the demo's output, an event, not a sleep
            lines.append(line)
            if "press Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert any("press Ctrl-C" in line for line in lines), "".join(lines)
        probes = _check_report("".join(lines))
        assert all(_listening(m["addr"]) for m in probes)  # running while it waits
        consoles = list(CONSOLE.finditer("".join(lines)))
        assert [m["node"] for m in consoles] == ["p1", "b1", "t1", "t2"], "".join(lines)
        assert _console_answers(keep / "cluster", consoles[0]["addr"])  # the URL printed works
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed check above: stop the demo gracefully, so that
            proc.send_signal(signal.SIGINT)  # its nodes stop too (a kill would orphan them)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, rest + err
    assert "Traceback" not in rest + err
    assert "stopped: every node shut down cleanly" in rest
    assert not any(_listening(m["addr"]) for m in probes)
    assert (keep / "cluster" / "cluster.toml").is_file()  # a --dir given is kept
