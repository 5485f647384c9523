"""[shell] Suite-wide settings: the default marker expression and the Hypothesis profiles.

* ``slow`` tests are deselected unless ``-m`` names ``slow`` (see :mod:`tests._ci`); a
  command-line ``-m 'not containers'`` therefore no longer runs the slow tests too.
* Hypothesis: under CI (:func:`tests._ci.in_ci`) the ``ci`` profile derandomizes every
  property, so a CI run's examples depend only on the code and a red property is red again
  on the next run and on a laptop with ``CI=1``; elsewhere the ``dev`` profile explores new
  random examples each run (keeping failures in the local, git-ignored ``.hypothesis``
  database) and prints the ``@reproduce_failure`` blob of any failure. A committed example
  database was rejected: it replays only the failures someone saved, while a derandomized
  run is reproducible by construction. ``HYPOTHESIS_PROFILE`` picks a profile by name.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests._ci import deselect_slow, in_ci

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_slow(config, items)
