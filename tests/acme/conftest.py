"""A real Pebble ACME server and its challenge DNS, on loopback, for the ACME tests.

``deploy/setup.sh`` installs Debian's ``pebble`` package (``pebble`` and
``pebble-challtestsrv`` in ``/usr/bin``); this file installs nothing. Without them the
tests are skipped, except under CI (``tests._ci.in_ci``) where that is a failure.

* ``pebble-challtestsrv`` serves DNS on a free loopback port and answers every A query with
  127.0.0.1 (AAAA with nothing, so Pebble's validator dials IPv4 only); its own HTTP-01,
  TLS-ALPN and HTTPS challenge servers are off: our :class:`Http01Responder` answers.
* ``pebble`` listens on free loopback ports with a TLS certificate from a throw-away
  ``trustme`` CA (``ca_bundle``), validates HTTP-01 on ``http_port`` and resolves names
  through challtestsrv; ``PEBBLE_VA_NOSLEEP=1``, ``PEBBLE_WFE_NONCEREJECT=0`` and
  ``PEBBLE_AUTHZREUSE=0`` make it deterministic.

Both are started once per session, waited for by polling with a deadline, and stopped at
the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from node.acme_client import Http01Responder, start_http01_responder
from tests._ci import missing

_START_DEADLINE = 20.0


@dataclass(frozen=True)
class Pebble:
    directory_url: str
    management_url: str
    ca_bundle: Path
    http_port: int
    log_dir: Path

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310  (https to our own loopback Pebble)
            body: bytes = response.read()
        return body

    def intermediate(self) -> x509.Certificate:
        """Pebble's issuing intermediate (regenerated at every Pebble start)."""
        return x509.load_pem_x509_certificate(self._get(f"{self.management_url}/intermediates/0"))

    def root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self._get(f"{self.management_url}/roots/0"))


def _free_port() -> int:
    """A loopback port free for both TCP and UDP right now (DNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port for both TCP and UDP")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _wait_until(
    what: str,
    ready: Callable[[], bool],
    procs: list[subprocess.Popen[bytes]],
    logs: list[Path],
) -> None:
    deadline = time.monotonic() + _START_DEADLINE
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"{log.stem} exited ({proc.returncode}) before {what}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.05)  # polling interval of a deadline-bounded wait, not a blind sleep
    tails = "\n".join(_tail(p) for p in logs)
    pytest.fail(f"{what} not ready within {_START_DEADLINE}s:\n{tails}")


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _directory_answers(url: str, ca_bundle: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310  (https to our own loopback Pebble)
            return "newOrder" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    pebble_bin, challtestsrv_bin = shutil.which("pebble"), shutil.which("pebble-challtestsrv")
    if pebble_bin is None or challtestsrv_bin is None:
        missing("pebble and pebble-challtestsrv (deploy/setup.sh installs them)")

    work = tmp_path_factory.mktemp("pebble")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_bundle = work / "pebble-ca.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    server_cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    server_cert.private_key_pem.write_to_path(str(work / "key.pem"))

    dns_port, dns_mgmt_port = _free_port(), _free_port()
    listen_port, mgmt_port, http_port, tls_port = (_free_port() for _ in range(4))
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen_port}",
            "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": str(work / "cert.pem"),
            "privateKey": str(work / "key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (work / "pebble-config.json").write_text(json.dumps(config))

    procs: list[subprocess.Popen[bytes]] = []
    logs = [work / "challtestsrv.log", work / "pebble.log"]
    try:
        with logs[0].open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        challtestsrv_bin,
                        "-dns01", f"127.0.0.1:{dns_port}",
                        "-management", f"127.0.0.1:{dns_mgmt_port}",
                        "-http01", "",
                        "-https01", "",
                        "-tlsalpn01", "",
                        "-defaultIPv4", "127.0.0.1",
                        "-defaultIPv6", "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_until("challtestsrv", lambda: _tcp_open(dns_mgmt_port), procs, logs[:1])
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        with logs[1].open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        pebble_bin,
                        "-config", str(work / "pebble-config.json"),
                        "-dnsserver", f"127.0.0.1:{dns_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=work,
                )
            )
        directory_url = f"https://127.0.0.1:{listen_port}/dir"
        _wait_until("pebble", lambda: _directory_answers(directory_url, ca_bundle), procs, logs)
        yield Pebble(
            directory_url=directory_url,
            management_url=f"https://127.0.0.1:{mgmt_port}",
            ca_bundle=ca_bundle,
            http_port=http_port,
            log_dir=work,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture
async def responder(pebble: Pebble) -> AsyncIterator[Http01Responder]:
    """Our HTTP-01 responder on the port Pebble validates against."""
    server, port = await start_http01_responder("127.0.0.1", pebble.http_port)
    assert port == pebble.http_port
    try:
        yield server
    finally:
        await server.close()
