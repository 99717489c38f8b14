"""Gates: what stands between a plan and a live apply (R8, R9, R10, R20). Pure functions.

Decisions, as printed in every plan document:

- ``planned``      the consumer may run (``pulumi up`` registers its resources);
- ``plan-only``    dry-run only (met-nonlinear, k3sctl-adapter); nothing is ever registered;
- ``gated``        a supervisor/human approval for exactly this commit is missing or stale, or a
                   self-bootstrap from inside a running Code Queue task was detected;
- ``unsupported``  no consumer exists for this service in this env (code-queue prod);
- ``deprecated``   the old ``deploy-backend-core`` entry;
- ``not-configured`` the stack has no commit for a service its env offers.

Self-bootstrap detection: the Code Queue task runner exports ``UNIDESK_CODE_QUEUE_TASK_ID`` (and,
in older runners, ``CODE_QUEUE_TASK_ID``) into every task process. When either is set and
non-empty, a live apply of a guarded service (code-queue, code-queue-mgr) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from .catalog import Env, Gate, ServiceEntry
from .config import Approval
from .jsondoc import Doc

SELF_BOOTSTRAP_ENV_VARS: tuple[str, ...] = ("UNIDESK_CODE_QUEUE_TASK_ID", "CODE_QUEUE_TASK_ID")


class Decision(StrEnum):
    PLANNED = "planned"
    PLAN_ONLY = "plan-only"
    GATED = "gated"
    UNSUPPORTED = "unsupported"
    DEPRECATED = "deprecated"
    NOT_CONFIGURED = "not-configured"


@dataclass(frozen=True)
class ApplyContext:
    """Facts about the caller that gates depend on; built once, passed in (no hidden I/O)."""

    live: bool = False  # pulumi up (True) vs preview / offline plan (False)
    code_queue_task_id: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, live: bool) -> ApplyContext:
        task = next((environ[v] for v in SELF_BOOTSTRAP_ENV_VARS if environ.get(v, "").strip()), None)
        return cls(live=live, code_queue_task_id=task)


class ApprovalMissing(Doc):
    """No approval is recorded for a supervisor-gated service."""

    status: Literal["missing"] = "missing"
    required_for: str


class ApprovalStale(Doc):
    """The recorded approval is for another commit."""

    status: Literal["stale"] = "stale"
    required_for: str
    approved_commit: str
    by: str


class ApprovalGranted(Doc):
    """The recorded approval is for exactly the commit being deployed."""

    status: Literal["approved"] = "approved"
    required_for: str
    by: str
    reason: str


ApprovalStatus = Annotated[ApprovalMissing | ApprovalStale | ApprovalGranted, Field(discriminator="status")]


class SelfBootstrapGuard(Doc):
    """The self-bootstrap guard of code-queue and code-queue-mgr, as the plan document shows it."""

    enabled: Literal[True] = True
    detected_by: tuple[str, ...] = SELF_BOOTSTRAP_ENV_VARS
    running_inside_code_queue_task: bool
    rule: str = (
        "a live apply of this service is refused from inside a running Code Queue task; "
        "a human operator or supervisor applies it from outside"
    )


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    reason: str
    requires_supervisor_approval: bool = False
    approval: ApprovalStatus | None = None
    self_bootstrap_guard: SelfBootstrapGuard | None = None
    fix: str | None = None  # what an operator does to get past the gate


def approval_key(service_id: str) -> str:
    return f"approvals.{service_id}"


def _approval_fix(service_id: str, commit: str) -> str:
    key = approval_key(service_id)
    return (
        f"a supervisor sets pulumi config set --path '{key}.commit' {commit} && "
        f"pulumi config set --path '{key}.by' <name> && pulumi config set --path '{key}.reason' '<why>'"
    )


def _guard(entry: ServiceEntry, ctx: ApplyContext) -> SelfBootstrapGuard | None:
    if not entry.self_bootstrap_guard:
        return None
    return SelfBootstrapGuard(running_inside_code_queue_task=ctx.code_queue_task_id is not None)


def evaluate(
    entry: ServiceEntry,
    env: Env,
    commit: str | None,
    approvals: Mapping[str, Approval],
    ctx: ApplyContext,
) -> GateResult:
    target = entry.target(env)
    guard = _guard(entry, ctx)
    if target is None:
        return GateResult(
            Decision.UNSUPPORTED,
            f"{entry.id} has no {env} target",
            self_bootstrap_guard=guard,
        )
    if target.gate == Gate.UNSUPPORTED:
        return GateResult(Decision.UNSUPPORTED, target.gate_reason, self_bootstrap_guard=guard)
    if commit is None:
        return GateResult(
            Decision.NOT_CONFIGURED,
            f"the {env} stack has no commit for {entry.id}",
            self_bootstrap_guard=guard,
            fix=f"pulumi config set --path 'services.{entry.id}.commit' <full 40-hex sha>",
        )
    if target.gate == Gate.PLAN_ONLY:
        return GateResult(Decision.PLAN_ONLY, target.gate_reason, self_bootstrap_guard=guard)
    if target.gate == Gate.NONE:
        return GateResult(
            Decision.PLANNED, "no gate: pull-only artifact consumer", self_bootstrap_guard=guard
        )

    # Gate.SUPERVISOR
    approval = approvals.get(entry.id)
    status: ApprovalStatus
    if approval is None:
        status = ApprovalMissing(required_for=commit)
        decision, reason = Decision.GATED, f"{target.gate_reason}; no approval is recorded"
    elif approval.commit != commit:
        status = ApprovalStale(required_for=commit, approved_commit=approval.commit, by=approval.by)
        decision = Decision.GATED
        reason = f"{target.gate_reason}; the recorded approval is for {approval.commit}, not {commit}"
    else:
        status = ApprovalGranted(required_for=commit, by=approval.by, reason=approval.reason)
        decision, reason = Decision.PLANNED, f"approved by {approval.by} for exactly this commit"
    if decision == Decision.PLANNED and ctx.code_queue_task_id is not None and guard is not None:
        decision = Decision.GATED
        reason = "self-bootstrap refused: this process runs inside a Code Queue task"
    return GateResult(
        decision,
        reason,
        requires_supervisor_approval=True,
        approval=status,
        self_bootstrap_guard=guard,
        fix=None if decision == Decision.PLANNED else _approval_fix(entry.id, commit),
    )


def deprecated_backend_core(env: str | None, commit: str | None) -> dict[str, Any]:
    """The old ``deploy-backend-core`` entry (R8): a structured refusal that names the standard path."""
    stack = env if env in ("dev", "prod") else "<dev|prod>"
    sha = commit or "<full-40-hex-sha>"
    return {
        "ok": False,
        "decision": Decision.DEPRECATED.value,
        "retryable": False,
        "service": "backend-core",
        "entry": "deploy-backend-core",
        "reason": (
            "deploy-backend-core is a deprecated compatibility entry; it never deploys and cannot "
            "bypass the per-env deploy with its common artifact-consumer guardrail"
        ),
        "standardPath": [
            f"pulumi stack select {stack}",
            f"pulumi config set --path 'services.backend-core.commit' {sha}",
            "pulumi preview",
            "pulumi up",
        ],
        "offlinePlan": f"python -m artifact_cd plan --stack {stack} --service backend-core --commit {sha}",
        "actionsTaken": [],
    }
