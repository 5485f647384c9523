"""[shell] One rule for the test suite's prerequisites and its default marker expression.

* :func:`in_ci` decides "we are in CI": ``CI`` set to a true-looking value (``1``, ``true``,
  ``yes``, ``on``, any case, surrounding blanks ignored). ``.ci/run`` sets ``CI=true``.
* :func:`require` (or :func:`missing`) is the one way a test says "I need X": when X is
  missing the test FAILS under CI (CI must never pass by skipping) and skips elsewhere.
  Every missing-prerequisite path of the suite goes through it (openssl, IPv6, Docker,
  Pebble, Chromium).
* :func:`deselect_slow` applies the default marker expression ``not slow`` in a way that a
  command-line ``-m`` cannot drop: ``slow`` tests are deselected unless the ``-m``
  expression itself names ``slow`` (``-m slow``, ``-m 'slow and not containers'``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Mapping
from typing import NoReturn

import pytest

__all__ = [
    "TRUE_VALUES",
    "chromium",
    "deselect_slow",
    "has_ipv6_loopback",
    "in_ci",
    "missing",
    "names_slow",
    "require",
    "require_chromium",
    "require_tool",
]

#: values of ``CI`` that mean "this is a CI run"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})

#: the names under which Debian and upstream install a headless-capable Chromium
CHROMIUM_NAMES = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` (in ``environ``, default the process environment) looks true."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in TRUE_VALUES


def require(condition: bool, what: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Go on when ``condition`` holds; otherwise fail under CI and skip elsewhere.

    ``what`` names the missing prerequisite and how to get it, e.g. ``"the openssl CLI
    (deploy/setup.sh installs it)"``.
    """
    if not condition:
        missing(what, environ=environ)


def missing(what: str, *, environ: Mapping[str, str] | None = None) -> NoReturn:
    """Prerequisite ``what`` is missing: fail under CI, skip elsewhere."""
    if in_ci(environ):
        pytest.fail(f"missing test prerequisite: {what}; CI is set, so this is a failure, "
                    "not a skip", pytrace=False)
    pytest.skip(f"missing test prerequisite: {what}")


def require_tool(name: str, hint: str = "deploy/setup.sh installs it") -> str:
    """The path of command ``name`` on PATH (fail under CI / skip when it is missing)."""
    path = shutil.which(name)
    require(path is not None, f"the {name} command ({hint})")
    assert path is not None
    return path


def has_ipv6_loopback() -> bool:
    """True when a TCP socket can listen on ``::1``."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


def chromium() -> str | None:
    """The path of a Chromium able to run headless, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def require_chromium() -> str:
    """The Chromium path for browser tests (fail under CI / skip when it is missing)."""
    path = chromium()
    require(path is not None, "a Chromium browser (apt-get install chromium)")
    assert path is not None
    return path


_SLOW = re.compile(r"\bslow\b")


def names_slow(markexpr: str) -> bool:
    """True when a ``-m`` expression mentions the ``slow`` marker at all."""
    return _SLOW.search(markexpr) is not None


def deselect_slow(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop ``slow`` items unless ``-m`` names ``slow``; report them as deselected."""
    markexpr: str = config.getoption("markexpr", "") or ""
    if names_slow(markexpr):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("slow") is not None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
