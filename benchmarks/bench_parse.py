"""Bounded parsing (issue 14): the figures of the report, with ratios measured in this run.

Run: ``.venv/bin/python benchmarks/bench_parse.py [--old-formats PATH]``. Not a test.

* **hidden count**: a PKCS#12 whose shrouded key bag asks for 2**31-1 rounds, hidden behind
  two bytes appended inside the authenticated safe's OCTET STRING: time to refuse it.
* **600k legitimate**: ``openssl pkcs12 -export -iter 600000`` (MAC, certificate safe and
  key bag all at 600 000): time to read it, and the ratio to ``pkcs12.load_pkcs12`` alone
  on the same file (the pre-check's own MAC check and safe opening are the difference).
* **PEM 16k**: 16 000 ``BEGIN CERTIFICATE`` lines (no END) and 16 000 complete small blocks,
  the old regex scan (``--old-formats``: the node/formats.py of the base commit, e.g. from
  ``git show 85da935:node/formats.py``) against the linear one, at 1 000 and 16 000 blocks
  (scaling ratio: about 16 for linear, about 256 for quadratic).
* **worker overhead**: one import through ``node.sandbox`` against ``read_material`` in this
  process, same inputs, same run (a PEM bundle with a key, and the 600k PKCS#12).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.serialization import pkcs12

from node.formats import read_material
from node.sandbox import ParseSandbox
from tests.p12craft import p12, plain_safe, shrouded_bag
from tests.pki import make_chain, pem_bundle

PW = b"bench-parse-pw"


def _time(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # refusals are what is timed here
            fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _openssl_600k(d: Path) -> bytes:
    pki = make_chain("rsa-2048")
    (d / "leaf.pem").write_bytes(pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key))
    (d / "pw").write_bytes(PW)
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-iter", "600000", "-in", d / "leaf.pem",
         "-passout", f"file:{d / 'pw'}", "-out", d / "ok.p12"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return (d / "ok.p12").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old-formats", type=Path, help="node/formats.py of the base commit")
    args = parser.parse_args()
    key = make_chain("ec-p256").leaf.key
    hidden = p12(plain_safe(shrouded_bag(key, PW, 2**31 - 1)), tail=b"\x00\x00")
    refusal = _time(lambda: read_material([("h", hidden)], PW))
    print(f"hidden-count PKCS#12 refused in {refusal * 1e3:.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        legit = _openssl_600k(Path(tmp))
    ours = _time(lambda: read_material([("ok.p12", legit)], PW), 3)
    bare = _time(lambda: pkcs12.load_pkcs12(legit, PW), 3)
    print(f"600k-round openssl PKCS#12 read in {ours:.3f} s; load_pkcs12 alone {bare:.3f} s; "
          f"ratio {ours / bare:.2f}")

    begins = b"-----BEGIN CERTIFICATE-----\n"
    block = b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"
    def new_scan(data: bytes) -> object:
        return read_material([("x.pem", data)])

    if args.old_formats:
        spec = importlib.util.spec_from_file_location("old_formats", args.old_formats)
        assert spec and spec.loader
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_formats"] = old
        spec.loader.exec_module(old)

        def old_scan(data: bytes) -> object:
            return old.read_material([("x.pem", data)])

        for label, unit in (("BEGIN lines", begins), ("small blocks", block)):
            o1 = _time(partial(old_scan, unit * 1000), 1)
            o16 = _time(partial(old_scan, unit * 16000), 1)
            n1 = _time(partial(new_scan, unit * 1000))
            n16 = _time(partial(new_scan, unit * 16000))
            print(f"PEM {label}: old 1k {o1:.3f} s, 16k {o16:.3f} s (x{o16 / o1:.0f}); "
                  f"new 1k {n1 * 1e3:.2f} ms, 16k {n16 * 1e3:.2f} ms (x{n16 / n1:.1f}); "
                  f"16k old/new {o16 / n16:.0f}")
    from node.formats import pem_blocks

    s1 = _time(lambda: pem_blocks(block * 1000))
    s16 = _time(lambda: pem_blocks(block * 16000))
    print(f"pem_blocks scan: 1k {s1 * 1e3:.2f} ms, 16k {s16 * 1e3:.2f} ms, ratio {s16 / s1:.1f}")

    pki = make_chain("ec-p256")
    bundle = pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key)

    async def sandboxed(data: bytes, name: str, n: int) -> float:
        box = ParseSandbox()
        try:
            await box.read_material([(name, data)], PW)  # the worker is started
            times = []
            for _ in range(n):
                started = time.perf_counter()
                await box.read_material([(name, data)], PW)
                times.append(time.perf_counter() - started)
            return statistics.median(times) if times else 0.0
        finally:
            await box.close()

    for label, data, n in (("600k PKCS#12", legit, 3), ("PEM bundle + key", bundle, 50)):
        inproc = _time(partial(read_material, [("x", data)], PW), n)
        worker = asyncio.run(sandboxed(data, "x", n))
        print(f"{label}: in-process {inproc * 1e3:.2f} ms, worker {worker * 1e3:.2f} ms, "
              f"ratio {worker / inproc:.2f}, overhead {(worker - inproc) * 1e3:.2f} ms")
    started = time.perf_counter()
    asyncio.run(sandboxed(bundle, "x", 0))
    print(f"worker start + first read + stop: {(time.perf_counter() - started) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
