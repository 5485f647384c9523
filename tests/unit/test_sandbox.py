"""node.sandbox: the worker reads what the in-process reader reads, passes its typed errors
on, and an overrun (deadline, CPU) kills the worker, gives a FormatError and a fresh worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.errors import FormatError, PassphraseError
from node.formats import cert_sha256, read_material
from node.sandbox import ParseSandbox
from tests.p12craft import p12, plain_safe, shrouded_bag
from tests.pki import key_pem, make_chain, pem_bundle

PW = b"sandbox-pw"


def _slow(rounds: int = 2_900_000) -> bytes:
    """Passes the pre-check, then costs OpenSSL real work (the counts are rewritten, so the
    key never decrypts: each passphrase tried runs every bag)."""
    key = make_chain("ec-p256").leaf.key
    return p12(*[plain_safe(shrouded_bag(key, PW, rounds)) for _ in range(2)])


async def test_the_worker_reads_what_the_reader_reads() -> None:
    pki = make_chain("rsa-2048")
    sources = [
        ("a.pem", pem_bundle(pki.leaf.cert, *pki.chain)),
        ("k.pem", key_pem(pki.leaf.key, PW)),
    ]
    sandbox = ParseSandbox()
    try:
        got = await sandbox.read_material(sources, PW)
    finally:
        await sandbox.close()
    want = read_material(sources, PW)
    assert [cert_sha256(c) for c in got.certificates] == [cert_sha256(c) for c in want.certificates]
    assert [k.private_numbers() for k in got.keys] == [k.private_numbers() for k in want.keys]  # type: ignore[union-attr]


async def test_typed_errors_come_back_typed() -> None:
    pki = make_chain("ec-p256")
    sandbox = ParseSandbox()
    try:
        with pytest.raises(FormatError) as info:
            await sandbox.read_material([("junk.bin", b"\x30\x03junk")])
        assert info.value.source == "junk.bin" and "'junk.bin'" in str(info.value)
        with pytest.raises(PassphraseError) as pw_info:
            await sandbox.read_material([("k.pem", key_pem(pki.leaf.key, PW))], b"wrong")
        assert pw_info.value.source == "k.pem" and "wrong" not in str(pw_info.value)
        assert sandbox.started == 1  # errors do not cost a worker
    finally:
        await sandbox.close()


async def test_a_deadline_overrun_kills_the_worker_and_a_fresh_one_reads_on() -> None:
    pki = make_chain("ec-p256")
    sandbox = ParseSandbox(deadline=0.5)
    try:
        await sandbox.read_material([("ok.pem", pem_bundle(pki.leaf.cert))])
        started = time.monotonic()
        with pytest.raises(FormatError, match="PARSE_DEADLINE_SECONDS") as info:
            await sandbox.read_material([("slow.p12", _slow())], PW)
        assert time.monotonic() - started < 5
        assert info.value.source == "slow.p12"
        # negative twin: the next input is read by a new worker
        material = await sandbox.read_material([("ok.pem", pem_bundle(pki.leaf.cert))])
        assert material.certificates == (pki.leaf.cert,)
        assert sandbox.started == 2
    finally:
        await sandbox.close()


async def test_within_its_cpu_limit_the_same_input_is_read_to_its_end() -> None:
    """Twin: with room enough the input ends in its own (typed) answer, not a kill."""
    sandbox = ParseSandbox(cpu_seconds=120, deadline=120)
    try:
        with pytest.raises(PassphraseError):
            await sandbox.read_material([("slow.p12", _slow())], PW)
    finally:
        await sandbox.close()


async def test_cancelling_a_read_kills_its_worker_at_once() -> None:
    sandbox = ParseSandbox()
    pki = make_chain("ec-p256")
    await sandbox.read_material([("ok.pem", pem_bundle(pki.leaf.cert))])  # a worker is up
    proc = sandbox._proc  # the worker process itself is what is checked
    assert proc is not None
    task = asyncio.create_task(sandbox.read_material([("slow.p12", _slow())], PW))
    await asyncio.sleep(0.2)  # not a wait for a condition: the read is under way, any time
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.poll() is not None  # killed and reaped when the cancellation came through
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert sandbox._proc is None


async def test_one_worker_reads_costly_input_after_costly_input() -> None:
    """Each input gets its own CPU allowance on the same worker (a regression: moving the
    hard limit up needs privileges, and the worker died on its second costly input)."""
    sandbox = ParseSandbox()
    try:
        for _ in range(4):
            with pytest.raises(PassphraseError):
                await sandbox.read_material([("slow.p12", _slow(1_500_000))], PW)
        assert sandbox.started == 1
    finally:
        await sandbox.close()


def test_a_forked_worker_reads_blocking_as_the_cli_does() -> None:
    pki = make_chain("ec-p256")
    sources = [("a.pem", pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key))]
    box = ParseSandbox(fork=True)
    try:
        got = box.read_material_blocking(sources)
        assert got.certificates == read_material(sources).certificates and len(got.keys) == 1
        with pytest.raises(FormatError) as info:
            box.read_material_blocking([("junk.bin", b"\x30\x03junk")])
        assert info.value.source == "junk.bin"
        assert box.started == 1
    finally:
        box.kill()


def test_a_forked_worker_over_its_deadline_is_killed_and_replaced() -> None:
    pki = make_chain("ec-p256")
    box = ParseSandbox(fork=True, deadline=0.5)
    try:
        box.read_material_blocking([("ok.pem", pem_bundle(pki.leaf.cert))])
        first = box._proc
        assert first is not None
        with pytest.raises(FormatError, match="PARSE_DEADLINE_SECONDS"):
            box.read_material_blocking([("slow.p12", _slow())], PW)
        assert first.poll() is not None  # killed and reaped
        # twin: the next input gets a fresh worker
        assert box.read_material_blocking([("ok.pem", pem_bundle(pki.leaf.cert))]).certificates
        assert box.started == 2
    finally:
        box.kill()


def test_a_worker_over_its_cpu_limit_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU limit stands behind the pre-check: an input it lets through that still costs
    more CPU than the worker may spend ends the worker with a FormatError.

    Every input the pre-check admits costs under a second on a fast machine, so the parse
    the worker runs is made costlier here: the forked worker inherits this patched reader,
    which burns five CPU seconds before reading (the forked and the spawned worker run the
    same ``_worker_main``, the rlimit with them)."""
    import hashlib

    import node.formats

    real = node.formats.read_material

    def costly(sources, passphrase=None):  # type: ignore[no-untyped-def]
        start = time.process_time()
        block = b"x" * 4096
        while time.process_time() - start < 5:
            block = hashlib.sha256(block).digest() * 128
        return real(sources, passphrase)

    monkeypatch.setattr(node.formats, "read_material", costly)
    pki = make_chain("ec-p256")
    box = ParseSandbox(fork=True, cpu_seconds=0, deadline=120)
    try:
        with pytest.raises(FormatError, match="CPU or memory limit"):
            box.read_material_blocking([("ok.pem", pem_bundle(pki.leaf.cert))])
    finally:
        box.kill()
    # twin: with room enough the same costly read ends in its answer
    roomy = ParseSandbox(fork=True, cpu_seconds=30, deadline=120)
    try:
        assert roomy.read_material_blocking([("ok.pem", pem_bundle(pki.leaf.cert))]).certificates
    finally:
        roomy.kill()


_EXIT_SCRIPT = """
import asyncio, atexit, os, sys
from node import sandbox
from tests.pki import make_chain, pem_bundle
if sys.argv[1] == "unhooked":
    atexit.unregister(sandbox.default().kill)
pki = make_chain("ec-p256")
asyncio.run(sandbox.read_material([("a.pem", pem_bundle(pki.leaf.cert))]))
print(sandbox.default()._proc.pid, flush=True)
"""


@pytest.mark.parametrize("mode", ["hooked", "unhooked"])
def test_a_process_that_exits_reaps_the_shared_worker(mode: str) -> None:
    """The shared sandbox's worker is killed and its pipes closed at exit (a CLI command
    never calls close_default()); the twin without the exit hook leaves both behind."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-X", "dev", "-c", _EXIT_SCRIPT, mode], cwd=root,
                          capture_output=True, text=True, timeout=60, check=True)
    pid = int(done.stdout.split()[0])
    warned = "ResourceWarning" in done.stderr
    if mode == "hooked":
        assert not warned, done.stderr
        assert not Path(f"/proc/{pid}").exists()  # killed and waited for: no zombie either
    else:
        assert warned, done.stderr
