"""The components translate only plans whose typed steps and target they recognise (before any resource)."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifact_cd import contract, plan
from artifact_cd.catalog import TargetKind
from artifact_cd.config import StackConfig, load_stack
from components import compose_consumer, k3s_consumer, program, registry_host

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return load_stack(ROOT, "dev")


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack(ROOT, "prod")


def test_compose_check_returns_the_typed_steps(dev: StackConfig, prod: StackConfig) -> None:
    master = compose_consumer.check_plan(plan.plan_service(prod, "backend-core"))
    assert (master.check.id, master.move.id, master.deploy.id) == ("manifest-check", "transfer", "deploy")
    assert isinstance(master.move.call, contract.MoveImageArgs) and master.move.call.mode == "tunnel"
    d601 = compose_consumer.check_plan(plan.plan_service(dev, "findjob"))
    assert d601.move.id == "pull" and d601.target.kind == TargetKind.COMPOSE_D601


def test_compose_check_refuses_a_move_that_does_not_fit_the_target(dev: StackConfig, prod: StackConfig) -> None:
    master = plan.plan_service(prod, "backend-core")
    local = plan.plan_service(dev, "findjob").step_by_id["pull"]
    swapped = master.model_copy(update={"steps": (master.steps[0], local, master.steps[2])})
    with pytest.raises(ValueError, match="not a Compose consumer plan"):
        compose_consumer.check_plan(swapped)
    with pytest.raises(ValueError, match="not a Compose consumer plan"):
        compose_consumer.check_plan(master.model_copy(update={"steps": master.steps[:2]}))
    with pytest.raises(ValueError, match="not a Compose consumer plan"):
        compose_consumer.check_plan(plan.plan_service(dev, "backend-core"))  # a k3s plan


def test_k3s_check_finds_the_auth_sync_and_every_patch(dev: StackConfig) -> None:
    frontend = k3s_consumer.check_plan(plan.plan_service(dev, "frontend"))
    assert frontend.auth is not None and frontend.auth.sync.id == "auth-sync"
    assert [s.id for s, _ in frontend.patches] == ["patch-frontend-dev"]
    backend = k3s_consumer.check_plan(plan.plan_service(dev, "backend-core"))
    assert backend.auth is None and backend.verify.id == "verify"


def test_k3s_check_refuses_a_plan_without_deployment_patches(dev: StackConfig) -> None:
    p = plan.plan_service(dev, "backend-core")
    with pytest.raises(ValueError, match="not a k3s consumer plan"):
        k3s_consumer.check_plan(p.model_copy(update={"steps": (p.steps[0], p.steps[1], p.steps[-1])}))
    stray = plan.plan_service(dev, "frontend").step_by_id["auth-read"]
    with pytest.raises(ValueError, match="is not a Deployment patch"):
        k3s_consumer.check_plan(p.model_copy(update={"steps": (*p.steps[:3], stray, p.steps[-1])}))


def test_registry_check_refuses_steps_out_of_order(prod: StackConfig) -> None:
    host = plan.plan_registry_host(prod)
    assert [s.id for s in registry_host.check_plan(host).writes] == ["registry-config", "registry-compose", "registry-unit"]
    with pytest.raises(ValueError, match="registry host plan steps"):
        registry_host.check_plan(host.model_copy(update={"steps": tuple(reversed(host.steps))}))
    with pytest.raises(ValueError, match=r"registry\.manage is false"):
        registry_host.check_plan(plan.plan_registry_host(load_stack(ROOT, "dev")))


def test_the_program_refuses_a_planned_service_without_a_consumer_target(prod: StackConfig) -> None:
    p = plan.plan_service(prod, "backend-core")
    orphan = p.model_copy(update={"target": plan.NoTargetDoc(reason="test")})
    with pytest.raises(program.ProgramRefused, match="target kind 'none' has no consumer component"):
        program.check_translatable(prod, [orphan], plan.plan_registry_host(prod))
