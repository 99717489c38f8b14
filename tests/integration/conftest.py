"""Integration fixtures: one real rig per pytest session (tests/rig).

The ``rig`` fixture starts D601 + master once, on first use, and tears them down at the end of the
session. If the rig cannot start, every test that uses it FAILS with the reason; it never skips.
Rig dirs left by an earlier killed run (owner and reaper both gone) are cleaned first.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` without `python -m` does not put the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))

from tests.rig import Rig, stale_rig_dirs, teardown  # noqa: E402


@pytest.fixture(scope="session")
def rig() -> Iterator[Rig]:
    for stale in stale_rig_dirs():
        teardown(stale)
    try:
        started = Rig.up()
    except Exception as error:
        pytest.fail(f"the real rig could not start: {type(error).__name__}: {error}", pytrace=False)
    yield started
    problems = started.down()
    assert not problems, f"rig teardown left: {problems}"
