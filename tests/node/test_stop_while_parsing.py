"""SIGTERM stops a real `certsync node serve` within its 5 s grace whatever is being parsed
(issue 14): the parse runs in a worker process that the stopping node kills."""

# ruff: noqa: F811 - the process fixture imported from test_node_crash is a parameter by name

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from node.errors import CertsyncError
from tests.node.test_node_crash import Node, node  # noqa: F401 - fixture used by name
from tests.p12craft import p12, plain_safe, shrouded_bag
from tests.pki import make_key

PW = b"stop-while-parsing"


def _costly() -> bytes:
    """Passes the pre-check but keeps the worker busy for seconds: a 5 M-round MAC (checked
    by the pre-check itself, in Python) that never matches, then OpenSSL's own attempts."""
    return p12(plain_safe(shrouded_bag(make_key("ec-p256"), PW)), mac_iterations=5_000_000)


async def test_sigterm_stops_the_node_within_5_s_while_it_parses(node: Node) -> None:
    node.start()
    async with node.client() as c:
        await node.wait_ready(c)
        importing = asyncio.create_task(c.import_files([("costly.p12", _costly())],
                                                       passphrase=PW))
        await asyncio.sleep(0.5)  # not a wait for a condition: the parse is under way
        assert not importing.done()
        assert node.process is not None
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.process.wait, 30)
        took = time.monotonic() - started
        with pytest.raises(CertsyncError):  # the import was answered, or the node was gone
            await importing
    assert code == 0
    assert took < 5, f"the node took {took:.1f} s to stop"


async def test_the_same_import_without_a_stop_ends_in_its_own_answer(node: Node) -> None:
    """Twin: left alone, that import was indeed still being parsed when SIGTERM came
    (it takes longer than the half second above) and ends in a typed refusal."""
    node.start()
    async with node.client() as c:
        await node.wait_ready(c)
        started = time.monotonic()
        with pytest.raises(CertsyncError):
            await c.import_files([("costly.p12", _costly())], passphrase=PW)
        assert time.monotonic() - started > 0.5
