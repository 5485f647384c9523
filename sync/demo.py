"""[shell] The README's main command: a whole cluster on loopback, replicated and served.

``python -m sync.demo [--dir DIR] [--once]`` (``bash deploy/demo.sh`` runs it):

1. ``cluster init`` for a primary ``p1``, a backup ``b1`` and traffic nodes ``t1``, ``t2``
   (site ``support.example.com``, hosts ``NAME.example.com``) on 127.0.0.1;
2. starts the four ``certsync node serve`` processes and waits until each answers;
3. ``cert create-self-signed`` on the primary: an ec-p256 wildcard ``*.example.com`` (plus
   ``example.com``) made the default -- it covers the site and every node hostname;
4. ``replicate``: the primary pushes it to every node and waits until each *serves* it;
5. prints ``status`` and ``coverage``, and for every node what ``openssl s_client -connect
   ADDR -servername HOST`` receives (subject and sha256 of the served certificate);
6. waits for Ctrl-C (or SIGTERM), then stops every node and removes the temporary cluster
   directory (a ``--dir`` given is kept). ``--once`` skips the wait (the test uses it).

Every step runs the real ``certsync`` command line, printed before it runs, so the output
doubles as a transcript of how to drive a cluster by hand. Exit 0 when every node served the
primary's certificate for its hostname, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from cryptography import x509

from node.errors import CertsyncError
from node.formats import cert_sha256
from sync.localcluster import LocalCluster, served_certificate

__all__ = ["Probe", "main", "openssl_probe"]

SITE: Final = "support.example.com"
PRIMARY: Final = ("p1", "p1.example.com")
BACKUP: Final = ("b1", "b1.example.com")
TRAFFIC: Final = (("t1", "t1.example.com"), ("t2", "t2.example.com"))
WILDCARD_SANS: Final = ("*.example.com", "example.com")


@dataclass(frozen=True)
class Probe:
    """What one TLS handshake received: the leaf's subject and sha256 (hex)."""

    node: str
    address: str
    server_name: str
    subject: str
    sha256: str
    tool: str


def openssl_probe(node: str, address: str, server_name: str) -> Probe:
    """Ask ``openssl s_client`` (Python's ssl when openssl is not installed) what
    ``address`` serves for ``server_name``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        cert = x509.load_der_x509_certificate(served_certificate(address, server_name))
        return Probe(node, address, server_name, cert.subject.rfc4514_string(),
                     cert_sha256(cert), "python-ssl")
    proc = subprocess.run(
        [openssl, "s_client", "-connect", address, "-servername", server_name],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )
    start = proc.stdout.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CertsyncError(f"openssl s_client -connect {address} got no certificate for "
                            f"{server_name!r} ({last}); is node {node!r} running?")
    cert = x509.load_pem_x509_certificate(proc.stdout[start:].encode())
    return Probe(node, address, server_name, cert.subject.rfc4514_string(),
                 cert_sha256(cert), "openssl")


class _Demo:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def run(self, *args: str, ok: Sequence[int] = (0,)) -> str:
        """Run ``certsync --config ADMIN ARGS``, echo the command and its output."""
        shown = shlex.join(["certsync", "--config", str(self.cluster.admin_toml), *args])
        print(f"$ {shown}", flush=True)
        proc = self.cluster.cli(*args)
        sys.stdout.write(proc.stdout)
        if proc.returncode not in ok:
            sys.stdout.write(proc.stderr)
            raise CertsyncError(f"{shown!r} exited with {proc.returncode}; see above")
        sys.stdout.flush()
        return proc.stdout


def _run_demo(directory: Path, *, wait: bool) -> int:
    print(f"certsync demo: a primary, a backup and two traffic nodes on loopback in {directory}")
    with LocalCluster.create(directory / "cluster", site=SITE, primary=PRIMARY,
                             backup=BACKUP, traffic=list(TRAFFIC)) as cluster:
        status = _show(cluster)
        if wait:
            # Block Ctrl-C and SIGTERM before saying so, then wait for one of them: no
            # window in which a signal could land outside the wait. They stay blocked, so
            # a second Ctrl-C cannot cut the graceful stop short.
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            print("\nthe cluster runs; press Ctrl-C to stop it", flush=True)
            signal.sigwait(stop_signals)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\nstopping every node ...", flush=True)
    print("stopped: every node shut down cleanly", flush=True)
    return status


def _show(cluster: LocalCluster) -> int:
    demo = _Demo(cluster)
    topology = cluster.config.topology
    demo.step("cluster init: topology, cluster CA, mTLS identities (secrets mode 0600)")
    for spec in topology.nodes:
        print(f"  {spec.name:<3} {spec.role:<8} {spec.hostname:<16} grpc "
              f"{spec.grpc_address}  tls {spec.tls_address}")
    demo.step("starting the nodes: certsync node serve --config DIR/NAME/node.toml")
    cluster.start_all()
    print("  every node answers over mutual TLS")

    demo.step("a wildcard certificate on the primary, made the default")
    sans = [a for san in WILDCARD_SANS for a in ("--san", san)]
    demo.run("cert", "create-self-signed", "--name", "demo-wildcard", "--key", "ec-p256",
             "--cn", WILDCARD_SANS[0], *sans, "--default")

    demo.step("replicate: push to every node, wait until each serves it")
    demo.run("replicate")

    demo.step("status: what every node reports and serves")
    demo.run("status")

    demo.step("coverage: the site and every node hostname against the default")
    demo.run("coverage", ok=(0, 1))

    demo.step("what each node's TLS endpoint serves")
    probes = [openssl_probe(spec.name, spec.tls_address, spec.hostname)
              for spec in topology.nodes]
    for p in probes:
        print(f"  {p.node:<3} {p.tool} s_client -connect {p.address} -servername "
              f"{p.server_name}: subject={p.subject} sha256={p.sha256}")
    demo.step("the admin console: HTTPS with mutual TLS (import admin.p12 into a browser)")
    for spec in topology.nodes:
        print(f"  {spec.name:<3} console {spec.admin_url}")
    print(f"  admin identity {cluster.directory / 'admin.p12'}, its passphrase in "
          f"{cluster.directory / 'admin.p12.pass'}")
    served = {p.sha256 for p in probes}
    if len(served) == 1:
        print(f"every node served the same certificate: sha256={served.pop()}", flush=True)
        return 0
    print(f"NOT every node served the same certificate: {sorted(served)}", flush=True)
    return 1


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync.demo",
        description="certsync on loopback: four nodes, one wildcard certificate, replicated "
                    "and served.")
    parser.add_argument("--dir", metavar="DIR", help="an empty or new directory for the "
                        "cluster, kept afterwards (default: a temporary one, removed)")
    parser.add_argument("--once", action="store_true", help="stop right after the report "
                        "instead of waiting for Ctrl-C")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)  # stop as cleanly as on Ctrl-C
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="certsync-demo-"))
    try:
        return _run_demo(directory, wait=not args.once)
    except KeyboardInterrupt:  # during set-up: the with block stopped what had started
        print("\ninterrupted: every node that had started was stopped", flush=True)
        return 130
    except CertsyncError as err:
        sys.stderr.write(f"certsync demo: error: {' '.join(str(err).split())}\n")
        return 2
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
