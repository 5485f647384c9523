"""[shell] Why a gRPC call found no node: one diagnostic mutual-TLS handshake, done by hand.

gRPC reports a node that refused our client certificate the same way as one that is down
("UNAVAILABLE: Socket closed"): with TLS 1.3 the server's verdict on the client certificate
arrives as an alert *after* the client's side of the handshake has finished. When a call
fails that way, :func:`tls_verdict` connects once with Python's :mod:`ssl` and the same
certificates, reads the server's first record, and says which side's certificate was not
accepted -- or nothing, when the node is really down or the failure was something else, so
a transient error is never reported as a certificate problem. (A gRPC server refuses a client
certificate by closing the connection right after the handshake, without an alert; one that
accepts it speaks first, with its HTTP/2 SETTINGS frame.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Iterator
from enum import Enum
from typing import Final

__all__ = ["Verdict", "tls_verdict"]

#: one connect, one handshake, one read: a few round trips on a working network
TIMEOUT: Final = 3.0

#: OpenSSL's reasons for an alert the server sends about the client's certificate
_CLIENT_CERT_ALERTS: Final = (
    "unknown_ca", "bad_certificate", "certificate_unknown", "certificate_required",
    "access_denied", "unsupported_certificate", "certificate_revoked", "certificate_expired",
    "handshake_failure",
)  # fmt: skip


@contextlib.contextmanager
def _memfd_paths(*blobs: bytes) -> Iterator[list[str]]:
    """Paths of anonymous in-memory files holding ``blobs`` (keys never touch a disk)."""
    fds = []
    try:
        for i, blob in enumerate(blobs):
            fd = os.memfd_create(f"certsync-diagnose-{i}", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, blob)
        yield [f"/proc/self/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


class Verdict(Enum):
    SERVER_CERT = "the node's certificate is not from this cluster's CA"
    CLIENT_CERT = "the node did not accept this client's certificate"
    ACCEPTED = "the handshake worked"


def tls_verdict(
    host: str, port: int, *, server_name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> Verdict | None:
    """Which side's certificate made the handshake with ``host:port`` fail,
    :attr:`Verdict.ACCEPTED` when it works, None when the node cannot be reached or the
    failure is of another kind (blocking: call it in a thread)."""
    try:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError:
        return None  # down, or not listening: the caller's "unreachable" is right
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cadata=ca_pem.decode("ascii"))
        ctx.set_alpn_protocols(["h2"])
        with _memfd_paths(cert_pem, key_pem) as (cert_path, key_path):
            ctx.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError, OSError):
        raw.close()
        return None  # our own files do not load: not the node's verdict
    with raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                # TLS 1.3: the server judges our certificate after our Finished; its alert
                # (or its HTTP/2 SETTINGS frame, when it accepted us) is the first record
                tls.settimeout(TIMEOUT)
                if not tls.recv(1):
                    # a gRPC server that refuses a client certificate closes the connection
                    # right after the handshake, with no alert; one that accepts it speaks
                    # HTTP/2 first (its SETTINGS frame)
                    return Verdict.CLIENT_CERT
        except ssl.SSLCertVerificationError:
            return Verdict.SERVER_CERT
        except ssl.SSLError as err:
            reason = (err.reason or str(err)).lower()
            if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
                return Verdict.CLIENT_CERT
            return None
        except OSError:
            return None
    return Verdict.ACCEPTED
