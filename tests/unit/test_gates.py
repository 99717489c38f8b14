"""Gates (R8, R9, R10, R20): plan-only, supervisor approvals, unsupported, self-bootstrap, deprecated."""

from __future__ import annotations

import pytest

from artifact_cd import catalog
from artifact_cd.config import Approval
from artifact_cd.gates import (
    SELF_BOOTSTRAP_ENV_VARS,
    ApplyContext,
    ApprovalGranted,
    ApprovalStale,
    Decision,
    SelfBootstrapGuard,
    deprecated_backend_core,
    evaluate,
)

SHA = "1" * 40
OTHER = "2" * 40


def entry(sid: str) -> catalog.ServiceEntry:
    e = catalog.get(sid)
    assert e is not None
    return e


def approval(commit: str) -> dict[str, Approval]:
    return {"code-queue-mgr": Approval(commit=commit, by="sup", reason="reviewed"), "code-queue": Approval(commit=commit, by="sup", reason="r")}


@pytest.mark.parametrize(
    ("sid", "env"),
    [(e.id, env) for e in catalog.CATALOG for env, t in e.targets.items() if t.gate == catalog.Gate.NONE],
)
def test_ungated_services_are_planned(sid: str, env: str) -> None:
    result = evaluate(entry(sid), env, SHA, {}, ApplyContext(live=True))  # type: ignore[arg-type]
    assert result.decision == Decision.PLANNED
    assert not result.requires_supervisor_approval


@pytest.mark.parametrize(("sid", "env"), [("met-nonlinear", "dev"), ("met-nonlinear", "prod"), ("k3sctl-adapter", "dev"), ("k3sctl-adapter", "prod")])
def test_plan_only_services_never_apply(sid: str, env: str) -> None:
    result = evaluate(entry(sid), env, SHA, {}, ApplyContext(live=True))  # type: ignore[arg-type]
    assert result.decision == Decision.PLAN_ONLY
    assert result.reason


def test_met_nonlinear_reason_names_the_blocker() -> None:
    result = evaluate(entry("met-nonlinear"), "prod", SHA, {}, ApplyContext())
    assert "Dockerfile" in result.reason and "long-running" in result.reason


@pytest.mark.parametrize(("sid", "env"), [("code-queue-mgr", "prod"), ("code-queue", "dev")])
def test_supervisor_gate_without_approval(sid: str, env: str) -> None:
    result = evaluate(entry(sid), env, SHA, {}, ApplyContext(live=True))  # type: ignore[arg-type]
    assert result.decision == Decision.GATED
    assert result.requires_supervisor_approval
    assert result.approval == {"status": "missing", "requiredFor": SHA}
    assert result.fix is not None and f"approvals.{sid}.commit' {SHA}" in result.fix


@pytest.mark.parametrize(("sid", "env"), [("code-queue-mgr", "prod"), ("code-queue", "dev")])
def test_stale_approval_is_refused(sid: str, env: str) -> None:
    result = evaluate(entry(sid), env, SHA, approval(OTHER), ApplyContext(live=True))  # type: ignore[arg-type]
    assert result.decision == Decision.GATED
    assert result.approval is not None
    assert result.approval["status"] == "stale"
    assert result.approval["approvedCommit"] == OTHER
    assert OTHER in result.reason and SHA in result.reason


@pytest.mark.parametrize(("sid", "env"), [("code-queue-mgr", "prod"), ("code-queue", "dev")])
def test_matching_approval_allows_the_apply(sid: str, env: str) -> None:
    result = evaluate(entry(sid), env, SHA, approval(SHA), ApplyContext(live=True))  # type: ignore[arg-type]
    assert result.decision == Decision.PLANNED
    assert result.requires_supervisor_approval  # still shown in the plan
    assert result.approval is not None and result.approval["status"] == "approved"


@pytest.mark.parametrize("var", SELF_BOOTSTRAP_ENV_VARS)
@pytest.mark.parametrize(("sid", "env"), [("code-queue-mgr", "prod"), ("code-queue", "dev")])
def test_self_bootstrap_is_refused_even_with_approval(var: str, sid: str, env: str) -> None:
    ctx = ApplyContext.from_environ({var: "task-42"}, live=True)
    result = evaluate(entry(sid), env, SHA, approval(SHA), ctx)  # type: ignore[arg-type]
    assert result.decision == Decision.GATED
    assert "self-bootstrap" in result.reason
    assert result.self_bootstrap_guard is not None
    assert result.self_bootstrap_guard["runningInsideCodeQueueTask"] is True


def test_blank_task_variable_is_not_a_task() -> None:
    ctx = ApplyContext.from_environ({"UNIDESK_CODE_QUEUE_TASK_ID": "  "}, live=True)
    assert ctx.code_queue_task_id is None


def test_task_variable_does_not_gate_unguarded_services() -> None:
    ctx = ApplyContext.from_environ({"UNIDESK_CODE_QUEUE_TASK_ID": "t"}, live=True)
    assert evaluate(entry("frontend"), "prod", SHA, {}, ctx).decision == Decision.PLANNED


def test_code_queue_prod_is_unsupported_with_no_fallback() -> None:
    result = evaluate(entry("code-queue"), "prod", SHA, approval(SHA), ApplyContext(live=True))
    assert result.decision == Decision.UNSUPPORTED
    assert "no prod consumer" in result.reason


def test_service_without_env_row_is_unsupported() -> None:
    assert evaluate(entry("project-manager"), "dev", SHA, {}, ApplyContext()).decision == Decision.UNSUPPORTED


def test_unconfigured_commit() -> None:
    result = evaluate(entry("frontend"), "dev", None, {}, ApplyContext())
    assert result.decision == Decision.NOT_CONFIGURED
    assert result.fix is not None and "services.frontend.commit" in result.fix


def test_deprecated_backend_core_entry() -> None:
    doc = deprecated_backend_core("prod", SHA)
    assert doc["decision"] == "deprecated"
    assert doc["ok"] is False
    assert doc["actionsTaken"] == []
    assert f"pulumi config set --path 'services.backend-core.commit' {SHA}" in doc["standardPath"]
    assert "pulumi up" in doc["standardPath"]


def test_deprecated_entry_does_not_echo_garbage_env() -> None:
    doc = deprecated_backend_core("$(id)", None)
    assert "$(id)" not in str(doc)


def test_approval_and_guard_are_typed_documents() -> None:
    stale = evaluate(entry("code-queue-mgr"), "prod", SHA, approval(OTHER), ApplyContext(live=True))
    assert isinstance(stale.approval, ApprovalStale) and stale.approval.approved_commit == OTHER
    assert stale.approval.to_json() == {"status": "stale", "requiredFor": SHA, "approvedCommit": OTHER, "by": "sup"}
    granted = evaluate(entry("code-queue-mgr"), "prod", SHA, approval(SHA), ApplyContext(live=True))
    assert isinstance(granted.approval, ApprovalGranted)
    assert list(granted.approval.to_json()) == ["status", "requiredFor", "by", "reason"]
    guard = granted.self_bootstrap_guard
    assert isinstance(guard, SelfBootstrapGuard) and not guard.running_inside_code_queue_task
    assert list(guard.to_json()) == ["enabled", "detectedBy", "runningInsideCodeQueueTask", "rule"]
    assert guard.to_json()["detectedBy"] == list(SELF_BOOTSTRAP_ENV_VARS)
