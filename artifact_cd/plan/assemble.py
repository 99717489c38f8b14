"""Putting a plan together: the gates decide, :mod:`.steps` builds the steps, :mod:`.document` the prose."""

from __future__ import annotations

from typing import Any

from .. import catalog
from ..catalog import ComposeTarget, Env, K3sTarget, NoTarget
from ..config import StackConfig
from ..gates import ApplyContext, Decision, GateResult, evaluate
from . import document, steps
from .document import RegistryHostPlan, ServicePlan
from .site import image_ref
from .step import HOST_D601, Step


def plan_service(
    cfg: StackConfig,
    service_id: str,
    ctx: ApplyContext | None = None,
    commit_override: str | None = None,
) -> ServicePlan:
    """The plan document of one service in this stack. ``service_id`` must be in the catalog."""
    ctx = ctx or ApplyContext()
    base = catalog.get(service_id)
    if base is None:
        raise KeyError(service_id)
    env: Env = cfg.env
    configured = cfg.services.get(service_id)
    # the names the stack sets (services.<id>.names) replace the catalog's defaults from here on
    entry, names = catalog.apply_names(base, env, configured.names if configured else None)
    commit = commit_override or cfg.commit_of(service_id)
    gate: GateResult = evaluate(entry, env, commit, cfg.approvals, ctx)
    target = entry.target(env) or NoTarget(gate_reason=gate.reason)
    supported = gate.decision != Decision.UNSUPPORTED

    planned: list[Step] = []
    deploy_env: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if commit is not None and supported:
        image = image_ref(cfg, entry, commit)
        match target:
            case ComposeTarget():
                planned = steps.compose_steps(cfg, entry, target, commit)
                deploy_env = steps.compose_deploy_env(entry, image, commit)
            case K3sTarget():
                planned = steps.k3s_steps(cfg, entry, target, commit)
                deploy_env = steps.k3s_deploy_env(entry, image, commit)
                annotations = steps.k3s_annotations(entry, image, commit)
            case NoTarget():
                pass

    return ServicePlan(
        service=entry.id,
        env=env,
        commit=commit,
        decision=gate.decision,
        reason=gate.reason,
        fix=gate.fix,
        target=document.target_doc(cfg, entry, target, commit),
        registry=document.registry_ref(cfg, entry, commit) if commit and supported else None,
        required_labels=document.required_labels(entry, commit),
        source=document.source_doc(entry, commit),
        steps=tuple(planned),
        verification=document.verification(entry, target),
        rollback=document.rollback(env, entry),
        requires_supervisor_approval=gate.requires_supervisor_approval,
        approval=gate.approval,
        affected_runtime=document.affected_runtime(cfg, entry, target, commit) if supported else (),
        excluded_targets=tuple(target.excluded_targets) + document.COMMON_EXCLUDED,
        deploy_env=deploy_env,
        annotations=annotations,
        self_bootstrap_guard=gate.self_bootstrap_guard,
        runtime_secrets=document.runtime_secrets(cfg, entry),
        assumptions=catalog.name_assumptions(entry, names),
        names=document.names_doc(entry, names),
    )


def plan_services(cfg: StackConfig, ctx: ApplyContext | None = None) -> list[ServicePlan]:
    """Every catalog row of the stack's env: configured services and structured refusals."""
    return [plan_service(cfg, entry.id, ctx) for entry in catalog.services_for(cfg.env)]


def plan_registry_host(cfg: StackConfig) -> RegistryHostPlan:
    return RegistryHostPlan(
        managed_by_this_stack=cfg.registry.manage,
        host=HOST_D601,
        host_address=cfg.hosts.d601.host,
        boundary=document.registry_boundary(cfg),
        dependencies=document.registry_dependencies(cfg),
        paths=document.registry_paths(cfg),
        files=document.registry_files(cfg),
        steps=tuple(steps.registry_host_steps(cfg)),
    )


def plan_stack(cfg: StackConfig, ctx: ApplyContext | None = None) -> dict[str, Any]:
    services = plan_services(cfg, ctx)
    summary: dict[str, list[str]] = {}
    for p in services:
        summary.setdefault(p.decision.value, []).append(p.service)
    return {
        "stack": cfg.env,
        "env": cfg.env,
        "registryHost": plan_registry_host(cfg).to_json(),
        "services": [p.to_json() for p in services],
        "summary": summary,
    }
