"""node.healthcheck against a real grpc.health.v1 server over mutual TLS (trustme CAs)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.errors import ConfigError
from node.healthcheck import health_target, local_address, main


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(ca: trustme.CA) -> Iterator[tuple[int, health.HealthServicer]]:
    cert = ca.issue_cert("n1.node.certsync")
    creds = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    srv = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    yield port, servicer
    srv.stop(0)


def write_config(tmp_path: Path, ca: trustme.CA, *, name: str, port: int) -> Path:
    ident = ca.issue_cert(f"{name}.node.certsync")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "node.pem").write_bytes(ident.cert_chain_pems[0].bytes())
    (tmp_path / "node.key").write_bytes(ident.private_key_pem.bytes())
    toml = tmp_path / "node.toml"
    toml.write_text(
        f'name = "{name}"\ngrpc_listen = "0.0.0.0:{port}"\n'
        'ca_cert = "ca.pem"\ncert = "node.pem"\nkey = "node.key"\n'
    )
    return toml


def test_serving_node_is_healthy(
    tmp_path: Path, ca: trustme.CA, server: tuple[int, health.HealthServicer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, servicer = server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert main(["--config", str(write_config(tmp_path, ca, name="n1", port=port))]) == 0
    assert capsys.readouterr().out.startswith("healthy: n1.node.certsync")


@pytest.mark.parametrize(
    "case", ["not-serving", "wrong-name", "wrong-ca", "nothing-listening", "no-config"]
)
def test_unhealthy_cases(
    tmp_path: Path, ca: trustme.CA, server: tuple[int, health.HealthServicer], case: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, servicer = server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    name, use_ca, use_port = "n1", ca, port
    if case == "not-serving":
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    elif case == "wrong-name":
        name = "n2"  # the server's certificate is for n1: the name check must refuse it
    elif case == "wrong-ca":
        use_ca = trustme.CA()
    elif case == "nothing-listening":
        use_port = 1
    config = write_config(tmp_path, use_ca, name=name, port=use_port)
    if case == "no-config":
        config = tmp_path / "missing.toml"
    try:
        assert main(["--config", str(config), "--timeout", "3"]) == 1
    finally:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    err = capsys.readouterr().err
    assert err.startswith("unhealthy: ")
    assert "PRIVATE KEY" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("listen", "dial"),
    [("0.0.0.0:7000", "127.0.0.1:7000"), ("[::]:7000", "[::1]:7000"),
     ("primary:7000", "primary:7000"), ("10.0.0.5:1", "10.0.0.5:1")],
)
def test_local_address(listen: str, dial: str) -> None:
    assert local_address(listen) == dial


@pytest.mark.parametrize("listen", ["primary", "primary:", "primary:0", "primary:70000", "x:y"])
def test_local_address_rejects(listen: str) -> None:
    with pytest.raises(ConfigError, match="grpc_listen"):
        local_address(listen)


def test_health_target_paths_relative_to_config(tmp_path: Path) -> None:
    cfg = {"name": "t1", "grpc_listen": "t1:7100", "ca_cert": "../ca.pem", "cert": "t1.pem",
           "key": "t1.key"}
    target = health_target(cfg, tmp_path)
    assert (target.server_name, target.address) == ("t1.node.certsync", "t1:7100")
    assert target.ca_cert == tmp_path / "../ca.pem"
    for missing in ("name", "grpc_listen", "ca_cert", "cert", "key"):
        with pytest.raises(ConfigError, match=repr(missing)):
            health_target({k: v for k, v in cfg.items() if k != missing}, tmp_path)
