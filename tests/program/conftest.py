"""Fixtures of the program tests: one Pulumi import per session and runs of ``__main__.py``
under the mock engine, cached by their inputs (see program_support.py for the helpers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from .program_support import FAKE_SECRETS, stack_config


@pytest.fixture(scope="session")
def engine() -> Any:
    from components import mockengine

    return mockengine


RunFn = Callable[..., Any]


@pytest.fixture(scope="session")
def cached_run(engine: Any) -> Iterator[RunFn]:
    """Runs without an executor are pure functions of their inputs: share them across tests."""
    cache: dict[str, Any] = {}

    def run(stack: str, *, preview: bool = True, config: dict[str, Any] | None = None, **kw: Any) -> Any:
        cfg = stack_config(stack) if config is None else config
        key = json.dumps([stack, preview, cfg, kw], sort_keys=True, default=str)
        if key not in cache:
            kw.setdefault("secrets", FAKE_SECRETS)
            kw.setdefault("environ", {})
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
