"""What admins install beside the code: the systemd unit and the Prometheus scrape config.

The unit is parsed as systemd reads it (sections, repeated keys); its ExecStart is parsed
by certsync's own argparse parser, so a renamed command or flag fails here. Where
``systemd-analyze`` exists (Debian's systemd package) the unit is verified and its exposure
score checked, each with a stripped twin that must score worse.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from sync import cmd_node
from sync.cli import build_parser
from tests._ci import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "certsync-node@.service"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
Unit = dict[str, list[tuple[str, str]]]

#: key -> the value a hardened unit must have ("" : present with an empty value)
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
    "User": "certsync",
    "Group": "certsync",
}


def parse_unit(text: str) -> Unit:
    """Sections -> (key, value) in order; repeated keys kept, comments and blanks dropped."""
    unit: Unit = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, [])
            continue
        assert section is not None, f"key outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        unit[section].append((key.strip(), value.strip()))
    return unit


def value(unit: Unit, section: str, key: str) -> str | None:
    values = [v for k, v in unit.get(section, []) if k == key]
    return values[-1] if values else None


def hardening_problems(unit: Unit) -> list[str]:
    problems = [f"{k}={want!r} expected, found {value(unit, 'Service', k)!r}"
                for k, want in HARDENING.items() if value(unit, "Service", k) != want]
    state = value(unit, "Service", "StateDirectory") or ""
    if not state.startswith("certsync"):
        problems.append(f"StateDirectory {state!r} is not under certsync")
    return problems


def exec_args(unit: Unit, instance: str) -> Any:
    """ExecStart of instance ``instance``, parsed by certsync's own parser."""
    exec_start = value(unit, "Service", "ExecStart")
    assert exec_start is not None
    argv = shlex.split(exec_start.replace("%i", instance))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(argv[0]).name in scripts, argv[0]
    assert Path(argv[0]).is_absolute()  # systemd wants a full path
    return build_parser().parse_args(argv[1:])


def test_the_unit_is_hardened() -> None:
    unit = parse_unit(UNIT.read_text())
    assert hardening_problems(unit) == []
    assert value(unit, "Install", "WantedBy") == "multi-user.target"
    assert value(unit, "Service", "KillSignal") == "SIGTERM"  # node serve's graceful stop


def test_a_unit_without_hardening_is_caught() -> None:
    stripped = "\n".join(line for line in UNIT.read_text().splitlines()
                         if not line.startswith(("NoNewPrivileges", "ProtectSystem", "User=")))
    problems = hardening_problems(parse_unit(stripped))
    assert len(problems) == 3 and any("NoNewPrivileges" in p for p in problems)


def test_exec_start_is_the_real_command_line() -> None:
    unit = parse_unit(UNIT.read_text())
    args = exec_args(unit, "p1")
    assert args.func is cmd_node._run
    config = Path(args.node_config)
    assert config == Path("/etc/certsync/p1/node.toml")
    # the configuration is where ConfigurationDirectory= points (read-only under strict)
    assert config.parts[:3] == ("/", "etc", value(unit, "Service", "ConfigurationDirectory"))
    assert value(unit, "Service", "StateDirectory") == "certsync/%i"


def test_a_wrong_command_line_is_caught() -> None:
    unit = parse_unit(UNIT.read_text().replace(" node serve ", " node run "))
    with pytest.raises(SystemExit) as exc:
        exec_args(unit, "p1")
    assert exc.value.code == 2


def _installed_copy(tmp_path: Path, text: str) -> Path:
    """The unit as instance p1, its ExecStart pointing at this checkout's certsync."""
    certsync = ROOT / ".venv" / "bin" / "certsync"
    body = text.replace("/opt/certsync/.venv/bin/certsync", str(certsync))
    template = tmp_path / "certsync-node@.service"
    template.write_text(body)
    instance = tmp_path / "certsync-node@p1.service"
    instance.symlink_to(template.name)
    return instance


def _exposure(analyze: str, unit: Path) -> float:
    proc = subprocess.run([analyze, "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def test_systemd_verifies_the_unit_and_rates_it_well(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "Debian's systemd package")
    unit = _installed_copy(tmp_path, UNIT.read_text())
    verify = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    assert _exposure(analyze, unit) <= 2.0
    # twin: the same unit without its [Service] hardening is rated far more exposed
    plain = "\n".join(line for line in UNIT.read_text().splitlines()
                      if line.startswith(("[", "ExecStart", "Description", "WantedBy")))
    (tmp_path / "bare").mkdir()
    bare = _installed_copy(tmp_path / "bare", plain)
    assert _exposure(analyze, bare) >= 8.0


def test_prometheus_scrapes_each_node_with_the_monitor_identity() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = config["scrape_configs"]
    assert [j["labels"]["node"] for job in jobs for j in job["static_configs"]] == [
        "p1", "b1", "t1"]
    for i, job in enumerate(jobs):
        node = job["static_configs"][0]["labels"]["node"]
        assert job["scheme"] == "https" and job["metrics_path"] == "/metrics"
        tls = job["tls_config"]
        assert Path(tls["cert_file"]).name == "monitor.pem"
        assert Path(tls["key_file"]).name == "monitor-key.pem"
        assert Path(tls["ca_file"]).name == "ca.pem"
        assert tls["server_name"] == f"{node}.node.certsync"
        assert not tls.get("insecure_skip_verify", False)
        (target,) = job["static_configs"][0]["targets"]
        assert int(target.rpartition(":")[2]) == 7400 + 2 * len(jobs) + i


# --------------------------------------------------------------------------- the lock file

LOCK = ROOT / "deploy" / "requirements.lock"


def parse_lock(text: str) -> dict[str, tuple[str, str, int]]:
    """name -> (version, marker, number of hashes), from a ``--generate-hashes`` lock."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        head = block.split("\\", 1)[0].strip()
        req = Requirement(head)
        (spec,) = req.specifier
        assert spec.operator == "==", head
        pins[canonicalize_name(req.name)] = (spec.version, str(req.marker or ""),
                                             block.count("--hash=sha256:"))
    return pins


def lock_problems(pyproject: dict[str, Any], pins: dict[str, tuple[str, str, int]]
                  ) -> list[str]:
    """Every requirement of pyproject (runtime, dev, build) pinned, hashed, within range."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = [*pyproject["project"]["dependencies"],
              *pyproject["project"]["optional-dependencies"]["dev"],
              *pyproject["build-system"]["requires"]]
    problems = []
    for text in wanted:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{req.name}=={pin[0]} is outside {req.specifier}")
        elif pin[2] == 0:
            problems.append(f"{req.name} has no hash")
    return problems


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = parse_lock(LOCK.read_text())
    assert lock_problems(pyproject, pins) == []
    assert all(hashes >= 1 for _, _, hashes in pins.values())
    for name in ("aiohttp", "jinja2", "playwright", "prometheus-client", "shtab", "setuptools"):
        assert name in pins, name
    # twin: a requirement the lock does not satisfy is reported
    pyproject["project"]["dependencies"].append("grpcio>=999")
    assert lock_problems(pyproject, pins) == ["grpcio==" + pins["grpcio"][0]
                                              + " is outside >=999"]


def test_this_environment_is_the_locked_one() -> None:
    """What setup.sh installed is exactly what the lock says (for this platform)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    pins = parse_lock(LOCK.read_text())
    mismatched = {}
    for name, (pinned, marker, _) in pins.items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert mismatched == {}


def test_setup_installs_from_the_lock_with_hashes() -> None:
    setup = (ROOT / "deploy" / "setup.sh").read_text()
    assert "pip install -q --require-hashes --no-deps -r deploy/requirements.lock" in setup
    assert "--no-build-isolation -e ." in setup  # nothing resolved anew
    assert "bash deploy/lock.sh" in LOCK.read_text().splitlines()[1]
