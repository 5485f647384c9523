"""Fixtures for the containerised tests: one image build per session, a network per cluster.

* Docker unavailable: the tests skip, except under CI (``tests._ci.in_ci``: ``CI`` set to
  1/true/yes/on) where they fail with a clear message (CI must never skip this suite).
* Ryuk (testcontainers' reaper) is disabled: its image cannot be pulled here. Instead every
  container and network these fixtures start carries the label ``certsync-test=1``, is
  removed at teardown even when the test failed, and leftovers of an interrupted run are
  swept by that label when the session starts.
* The image is built once per session by ``deploy/build-image.sh`` (which builds the Debian
  base with ``deploy/base-image.sh`` when needed and reuses it otherwise).
"""

from __future__ import annotations

import os

# must be set before testcontainers is imported: its config is read at import time
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from tests._ci import missing

ROOT = Path(__file__).resolve().parents[2]
LABEL = "certsync-test"
LABELS = {LABEL: "1"}
#: Docker API filter selecting everything these fixtures start
LABEL_FILTER: dict[str, str | list[str] | bool] = {"label": f"{LABEL}=1"}


def sweep(client: docker.DockerClient) -> tuple[int, int]:
    """Remove every container, network and volume labelled ``certsync-test=1``; return the
    counts of containers and networks."""
    containers = client.containers.list(all=True, filters=LABEL_FILTER)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    networks = client.networks.list(filters=LABEL_FILTER)
    for network in networks:
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    for volume in client.volumes.list(filters=LABEL_FILTER):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # in use
            volume.remove(force=True)
    return len(containers), len(networks)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A connected Docker client; skips (or fails under CI) without an engine."""
    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:  # any failure to reach the engine means "no Docker here"
        missing(f"a Docker engine ({type(err).__name__}: {err})")
    sweep(client)  # leftovers of an interrupted earlier run
    yield client
    sweep(client)
    client.close()


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    seconds: float
    size_bytes: int


@pytest.fixture(scope="session")
def certsync_image(docker_client: docker.DockerClient) -> BuiltImage:
    """Build (or reuse, through the scripts' caches) the base and the certsync image once."""
    start = time.monotonic()
    base = subprocess.run(
        ["bash", str(ROOT / "deploy/base-image.sh")],
        check=True, capture_output=True, text=True, timeout=900,
    ).stdout.strip()
    result = subprocess.run(
        ["bash", str(ROOT / "deploy/build-image.sh")],
        # CERTSYNC_TEST_IMAGE: another tag, so worktrees on one Docker do not share one
        env={**os.environ, "BASE_IMAGE": base,
             "IMAGE": os.environ.get("CERTSYNC_TEST_IMAGE", "certsync:dev")},
        capture_output=True, text=True, timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"deploy/build-image.sh failed:\n{result.stderr[-4000:]}", pytrace=False)
    tag = result.stdout.strip().splitlines()[-1]
    image = docker_client.images.get(tag)
    return BuiltImage(
        tag=tag, base=base, seconds=time.monotonic() - start, size_bytes=int(image.attrs["Size"])
    )


class Tracker:
    """Starts containers and networks for one test and removes all of them afterwards."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._containers: list[DockerContainer] = []
        self._networks: list[Network] = []
        self._volumes: list[str] = []

    def network(self) -> Network:
        """A fresh bridge network for one test cluster."""
        net = Network(docker_network_kw={"labels": dict(LABELS)})
        self._networks.append(net)  # tracked before create: a half-made one is swept too
        return net.create()

    def volume(self) -> str:
        """A fresh labelled named volume (its name); removed at teardown after the containers."""
        volume = self.client.volumes.create(labels=dict(LABELS))
        self._volumes.append(str(volume.name))
        return str(volume.name)

    def container(self, image: str, **kwargs: Any) -> DockerContainer:
        """A labelled, not yet started container (call ``.start()``); removed at teardown."""
        labels = {**LABELS, **kwargs.pop("labels", {})}
        container = DockerContainer(image, labels=labels, **kwargs)
        self._containers.append(container)
        return container

    def run_once(self, image: str, command: list[str], **kwargs: Any) -> tuple[int, str, str]:
        """Run a container to completion; return (exit status, stdout, stderr)."""
        labels = {**LABELS, **kwargs.pop("labels", {})}
        container = self.client.containers.create(image, command, labels=labels, **kwargs)
        try:
            container.start()
            status = container.wait(timeout=120)
            out = container.logs(stdout=True, stderr=False).decode()
            err = container.logs(stdout=False, stderr=True).decode()
            return int(status["StatusCode"]), out, err
        finally:
            container.remove(force=True, v=True)

    def close(self) -> None:
        errors: list[BaseException] = []
        for container in reversed(self._containers):
            try:
                container.stop()  # removes the container and its anonymous volumes
            except docker.errors.NotFound:
                pass
            except Exception as err:  # keep removing the rest; report after
                errors.append(err)
        for name in reversed(self._volumes):
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
            except Exception as err:
                errors.append(err)
        for net in reversed(self._networks):
            try:
                net.remove()
            except (docker.errors.NotFound, AssertionError):  # never created
                pass
            except Exception as err:
                errors.append(err)
        # belt and braces: anything labelled that a failed start left behind
        if errors:
            sweep(self.client)
            raise errors[0]


@pytest.fixture
def docker_tracker(docker_client: docker.DockerClient) -> Iterator[Tracker]:
    """Per-test container/network factory; everything it made is removed at teardown."""
    tracker = Tracker(docker_client)
    yield tracker
    tracker.close()


@pytest.fixture
def cluster_network(docker_tracker: Tracker) -> Network:
    """A private Docker network for one test cluster (removed at teardown)."""
    return docker_tracker.network()


ContainerFactory = Callable[..., DockerContainer]
