"""Regenerate the Python code of the gRPC API: ``python proto/generate.py``.

Reads ``proto/certsync/v1/*.proto`` and writes ``node/api/*_pb2.py``, ``*_pb2.pyi``,
``*_pb2_grpc.py`` and ``*_pb2_grpc.pyi`` (type stubs from mypy-protobuf, so mypy strict checks
our uses). The proto directory is mapped to the virtual path ``node/api`` so the generated
gRPC module imports ``from node.api import certsync_pb2``; the proto package stays
``certsync.v1``.

Generated with grpcio-tools 1.85.1 and mypy-protobuf 5.1.0 (the drift test in
``tests/node/test_generated.py`` regenerates with whatever is installed and compares).
Nobody edits the generated files by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "certsync" / "v1"
API_DIR = ROOT / "node" / "api"
#: the suffixes of generated files; anything else in node/api (``__init__.py``) is hand-written
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = path if path.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"generate: {name!r} not found; install the dev extras (mypy-protobuf)")
    return str(found)


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the API code from ``proto_dir`` into ``out_dir`` (flat); return the files."""
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    protos = sorted(proto_dir.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        args = [
            "grpc_tools.protoc",
            f"--proto_path=node/api={proto_dir}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tree}",
            f"--grpc_python_out={tree}",
            f"--mypy_out={tree}",
            f"--mypy_grpc_out={tree}",
            *(f"node/api/{p.name}" for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("generate: protoc failed (see its message above)")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((tree / "node" / "api").iterdir()):
            dst = out_dir / src.name
            shutil.copyfile(src, dst)
            written.append(dst)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=API_DIR, help="output directory")
    args = parser.parse_args()
    out: Path = args.out
    if out.resolve() == API_DIR:
        for old in API_DIR.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
    for path in generate(out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
