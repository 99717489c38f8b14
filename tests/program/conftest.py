"""Fixtures of the program tests: one Pulumi import per session, the default live view, and runs
of ``__main__.py`` under the test engine (tests/engine.py), cached by their inputs (see
program_support.py for the helpers)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .program_support import FAKE_SECRETS, FakeHosts, in_sync_view, stack_config

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` without `python -m` does not put the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="package", autouse=True)
def default_live_view() -> Iterator[None]:
    """The program never probes a real host in these tests: its live view is ``in_sync_view``
    (every service live on its desired commit) unless a test sets another one with
    ``program_support.use_live``. Package scope: set up before the modules' fixtures that run the
    program, and undone after this package (the rig tests use the real probe)."""
    from components import live_source

    patch = pytest.MonkeyPatch()
    patch.setattr(live_source, "probe_live", in_sync_view)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def engine() -> Any:
    from tests import engine

    return engine


RunFn = Callable[..., Any]


@pytest.fixture(scope="session")
def cached_run(engine: Any) -> Iterator[RunFn]:
    """Runs with a fresh ``FakeHosts`` (or none, in a preview) are pure functions of their inputs:
    share them across tests."""
    cache: dict[str, Any] = {}

    def run(stack: str, *, preview: bool = True, config: dict[str, Any] | None = None, **kw: Any) -> Any:
        cfg = stack_config(stack) if config is None else config
        key = json.dumps([stack, preview, cfg, kw], sort_keys=True, default=str)
        if key not in cache:
            kw.setdefault("secrets", FAKE_SECRETS)
            kw.setdefault("environ", {})
            if not preview:
                kw.setdefault("executor", FakeHosts())
            cache[key] = engine.run_program(stack, preview=preview, config=cfg, **kw)
        return cache[key]

    yield run


@pytest.fixture
def healthy_registry(monkeypatch: pytest.MonkeyPatch) -> list[Mapping[str, Any]]:
    """The registry acceptance decides ``healthy`` (records the facts it was given)."""
    from components import registry_host

    seen: list[Mapping[str, Any]] = []

    def decide(facts: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(facts)
        return {"ok": True, "decision": "healthy", "failedScopes": []}

    monkeypatch.setattr(registry_host, "health_decide", decide)
    return seen
