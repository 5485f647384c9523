"""Helpers shared by the node, lifecycle and ACME tests (not tests themselves)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc

from node.app import NodeApp
from node.rpc import server_credentials, start_grpc_server
from node.service import CertStoreService
from sync.config import NodeConfig
from sync.receiver import describe_promotion

__all__ = ["check_sqlite", "serve_store_api"]


async def serve_store_api(app: NodeApp, config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    """``app``'s CertStore gRPC API on a free loopback port, over mutual TLS with the node's
    own certificate and key from ``config``: the server and its port."""
    creds = server_credentials(
        ca_pem=config.ca_cert_path.read_bytes(),
        cert_pem=config.cert_path.read_bytes(),
        key_pem=config.key_path.read_bytes(),
    )
    service = CertStoreService(app, describe=describe_promotion)
    return await start_grpc_server(service, address="127.0.0.1:0",
                                   credentials=creds)


def check_sqlite(db: Path) -> None:
    """SQLite's own checks of a store file pass (after a crash, say)."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
