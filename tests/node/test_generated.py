"""Generated code drift: regenerating from proto/ gives node/api/ byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_DIR = ROOT / "node" / "api"


def _load_generator() -> ModuleType:
    path = ROOT / "proto" / "generate.py"
    spec = importlib.util.spec_from_file_location("certsync_proto_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    gen = _load_generator()
    out = tmp_path_factory.mktemp("api")
    gen.generate(out)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _committed() -> dict[str, bytes]:
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    return {p.name: p.read_bytes() for p in API_DIR.iterdir() if p.name.endswith(suffixes)}


def test_generated_files_match_the_proto(regenerated: dict[str, bytes]) -> None:
    committed = _committed()
    assert sorted(committed) == sorted(regenerated)
    drifted = [name for name in committed if committed[name] != regenerated[name]]
    assert drifted == [], f"run 'python proto/generate.py': {drifted} drifted from proto/"


def test_drift_is_detected(tmp_path: Path) -> None:
    """Negative twin: a proto with one more field generates different code."""
    gen = _load_generator()
    proto = (ROOT / "proto" / "certsync" / "v1" / "certsync.proto").read_text()
    changed = proto.replace("message GetStateRequest {}",
                            "message GetStateRequest { string x = 1; }")
    assert changed != proto
    proto_dir = tmp_path / "proto"
    proto_dir.mkdir()
    (proto_dir / "certsync.proto").write_text(changed)
    out = tmp_path / "out"
    gen.generate(out, proto_dir)
    regenerated = (out / "certsync_pb2.py").read_bytes()
    assert regenerated != (API_DIR / "certsync_pb2.py").read_bytes()


def test_grpc_module_imports_pb2_from_the_package() -> None:
    text = (API_DIR / "certsync_pb2_grpc.py").read_text()
    assert "from node.api import certsync_pb2" in text


def test_proto_package_is_versioned() -> None:
    from node.api import SERVICE_NAME

    assert SERVICE_NAME == "certsync.v1.CertStore"
