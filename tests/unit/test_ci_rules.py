"""The suite's one rule for CI (tests/_ci.py): when CI is set, a missing prerequisite fails
instead of skipping; ``slow`` tests stay deselected whatever ``-m`` says, unless it names them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import _ci
from tests._ci import deselect_slow, in_ci, missing, names_slow, require, require_tool

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    "value", ["1", "true", "TRUE", "True", "yes", "YES", "on", " On ", "true\n"]
)
def test_in_ci_true_looking_values(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "ture", "2", "y"])
def test_in_ci_other_values_are_not_ci(value: str) -> None:
    assert not in_ci({"CI": value})


def test_in_ci_unset_is_not_ci() -> None:
    assert not in_ci({})
    assert not in_ci({"GITHUB_ACTIONS": "true"})


def test_in_ci_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "yes")
    assert in_ci()
    monkeypatch.setenv("CI", "no")
    assert not in_ci()
    monkeypatch.delenv("CI")
    assert not in_ci()


def test_require_met_does_nothing_in_ci_and_out() -> None:
    require(True, "a thing", environ={"CI": "1"})
    require(True, "a thing", environ={})


def test_require_missing_fails_under_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match="missing test prerequisite: the gizmo"):
        require(False, "the gizmo", environ={"CI": "on"})


def test_require_missing_skips_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="missing test prerequisite: the gizmo"):
        require(False, "the gizmo", environ={"CI": "0"})


def test_missing_fails_or_skips_by_ci() -> None:
    with pytest.raises(pytest.fail.Exception):
        missing("x", environ={"CI": "true"})
    with pytest.raises(pytest.skip.Exception):
        missing("x", environ={})


def test_require_tool_found_and_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "certsync-probe-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require_tool("certsync-probe-tool") == str(tool)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="the no-such-tool command"):
        require_tool("no-such-tool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="the no-such-tool command"):
        require_tool("no-such-tool")


def test_require_chromium_found_and_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _ci.chromium() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium"):
        _ci.require_chromium()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="Chromium"):
        _ci.require_chromium()
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    assert _ci.require_chromium() == str(browser)


@pytest.mark.parametrize(
    ("expr", "named"),
    [("slow", True), ("not slow", True), ("slow and not containers", True), ("(slow)", True),
     ("", False), ("not containers", False), ("slowish", False), ("very_slow", False)],
)
def test_names_slow(expr: str, named: bool) -> None:
    assert names_slow(expr) is named


_INI = """[pytest]
asyncio_default_fixture_loop_scope = function
markers =
    slow: s
    containers: c
"""

_INNER_CONFTEST = """
from tests._ci import deselect_slow

def pytest_collection_modifyitems(config, items):
    deselect_slow(config, items)
"""

_INNER_TESTS = """
import pytest

def test_plain():
    pass

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.containers
def test_containers():
    pass

@pytest.mark.slow
@pytest.mark.containers
def test_slow_containers():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(_INI)
    pytester.makeconftest(_INNER_CONFTEST)
    pytester.makepyfile(test_inner=_INNER_TESTS)
    return pytester


@pytest.mark.parametrize(
    ("args", "passed", "deselected"),
    [
        ((), 2, 2),  # default: slow deselected
        (("-m", "not containers"), 1, 3),  # the hole: -m used to replace 'not slow'
        (("-m", "containers"), 1, 3),
        (("-m", "slow"), 2, 2),  # naming slow runs it
        (("-m", "slow and not containers"), 1, 3),
        (("-m", "slow or not slow"), 4, 0),
        (("-m", "not slow"), 2, 2),
    ],
)
def test_default_marker_expression_survives_command_line_m(
    inner: pytest.Pytester, args: tuple[str, ...], passed: int, deselected: int
) -> None:
    result = inner.runpytest_inprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=passed, deselected=deselected)


def test_without_the_hook_m_drops_the_default(pytester: pytest.Pytester) -> None:
    """Negative twin: the old way (``addopts = -m 'not slow'``, no hook) lets a command-line
    ``-m`` replace the default, so the slow test runs too."""
    pytester.makeini(_INI + "addopts = -m 'not slow'\n")
    pytester.makepyfile(test_inner=_INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not containers")
    result.assert_outcomes(passed=2, deselected=2)


def test_deselect_slow_keeps_items_when_none_is_slow(pytester: pytest.Pytester) -> None:
    pytester.makeini(_INI)
    pytester.makeconftest(_INNER_CONFTEST)
    pytester.makepyfile(test_inner="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert deselect_slow.__module__ == "tests._ci"


_INNER_REQUIRE = """
from tests._ci import require

def test_needs_gizmo():
    require(False, "the gizmo")
"""


@pytest.mark.parametrize(("ci", "outcome"), [("1", "failed"), ("Yes", "failed"), ("", "skipped"),
                                             ("false", "skipped")])
def test_require_in_a_real_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeini(_INI)
    pytester.makepyfile(test_req=_INNER_REQUIRE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*missing test prerequisite: the gizmo*CI is set*"])
