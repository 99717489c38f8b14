"""What the program does with each service this run, decided from the plans and the live view.

Pure (no Pulumi, no I/O): :func:`reconcile` takes the plan documents, the gates' context and the
live view (``artifact_cd.live``; ``None`` when the run has none) and answers, per service, how
the program registers it (a :class:`Posture`), which services are held or refused, what the
registry install does, and the warnings to print. ``components.program`` turns the answer into
resources; the rules it relies on are the engine's and the providers' (docs/engine-semantics.md,
cited as C<n>/E<n>/K<n>/rule <n>).

Postures:

- ``in-sync``  the live view says the service serves its desired commit (or the run has no live
  view): it is registered as planned, and every Command keeps its stored live slot
  (``ignore_changes`` on ``triggers[1]``), so an earlier run's slot (today's script hash, an old
  repair fingerprint) never replaces it (rules 3, 4; C2, C3).
- ``repair``   the service is ``drifted``, ``missing-image``, ``unhealthy`` or ``not-deployed``:
  the steps that repair it carry the verdict's drift fingerprint in their live slot, so they are
  replaced (re-run) by ``pulumi up`` and shown as replacements by ``pulumi preview`` (rule 4, C3).
- ``hold``     nothing of the service may change: it is registered with every input ignored, so a
  stored resource is a ``same`` step that runs nothing (rule 3, E2); a create runs only harmless
  commands (the live commit's plan, the Compose deploy in verify mode). Used for a gated service
  that serves some commit in sync (held at that commit), and in a preview for a service whose host
  did not answer.

A service whose host (or a host one of its steps runs on) did not answer is ``unknown``: the
preview holds it and warns; ``pulumi up`` does not register it and fails at the end, after every
other service was deployed, so the engine deletes nothing of it (E1: only a successful run deletes
what it did not register).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

from pydantic.alias_generators import to_camel

from artifact_cd.config import Approval, StackConfig
from artifact_cd.contract import ReadAuthArgs
from artifact_cd.gates import ApplyContext, Decision
from artifact_cd.live import REPAIRABLE, LiveView, ServiceFacts, Verdict, decide_service
from artifact_cd.plan import (
    HOST_K8S_API,
    ComposeTargetDoc,
    K3sTargetDoc,
    ServicePlan,
    plan_service,
)

NO_LIVE_VIEW = "no-live-view"
HEALTHY = "healthy"
HOLD_APPROVER = "live-view"  # the approval a hold plan is built with (never exported, never stored)


class Posture(StrEnum):
    IN_SYNC = "in-sync"
    REPAIR = "repair"
    HOLD = "hold"


Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class LiveSlot:
    """The live slot of one Command's triggers (index 1): its value, and whether the stored value
    is kept (``ignore_changes`` on ``triggers[1]``) instead of compared."""

    value: str
    keep: bool

    @classmethod
    def kept(cls, label: str) -> LiveSlot:
        return cls(label, True)

    @classmethod
    def live(cls, value: str) -> LiveSlot:
        return cls(value, False)


@dataclass(frozen=True)
class Note:
    """A diagnostic the program prints (``pulumi.log``), in preview and up alike."""

    severity: Severity
    message: str
    service: str | None = None  # the component it belongs to, when one is registered


@dataclass(frozen=True)
class ServiceAction:
    """How one service is registered this run."""

    service: str
    plan: ServicePlan  # the plan to register: the desired one, or (held) the live commit's
    posture: Posture
    verdict: str  # the live verdict (artifact_cd.live.Verdict value) or no-live-view
    repair: str | None = None  # the drift fingerprint (repair)
    auth_sha256: str | None = None  # the master's auth section hash (frontend dev auth read)
    reason: str = ""

    @property
    def hold(self) -> bool:
        return self.posture == Posture.HOLD

    def slot(self, *, repairs: bool) -> LiveSlot:
        """The live slot of one of the service's steps: the drift fingerprint on a step that
        ``repairs`` the service in a repair; else ``live:<verdict>``, kept from the stored state."""
        if self.posture == Posture.REPAIR and repairs and self.repair:
            return LiveSlot.live(self.repair)
        return LiveSlot.kept(f"live:{self.verdict}")

    def auth_slot(self) -> LiveSlot:
        """The frontend auth read's slot: the master's auth hash (compared, so a new auth section
        re-reads and re-syncs it); kept when unknown or held."""
        if self.auth_sha256 and not self.hold:
            return LiveSlot.live(f"auth:{self.auth_sha256}")
        return LiveSlot.kept(f"live:{self.verdict}")


@dataclass(frozen=True)
class Held:
    """A service this run changes nothing of: gated without its approval, or on a silent host."""

    service: str
    commit: str | None  # the desired commit (the stack config)
    verdict: str  # held | unknown
    live_commit: str | None
    registered: Literal["held-at-live-commit", "held-as-stored", "nothing"]
    reason: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        """Every field, camelCase, in declaration order."""
        return {to_camel(f.name): getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RegistryAction:
    """What the registry install does this run (``registry.manage`` stacks)."""

    posture: Posture | None  # None: not registered (D601 did not answer, in an up)
    verdict: str  # the live decision, unknown or no-live-view
    repair: str | None = None  # the drift fingerprint (repair)
    decision: Mapping[str, Any] | None = None  # the live health decision (in-sync: the acceptance)
    reason: str = ""

    @property
    def hold(self) -> bool:
        return self.posture == Posture.HOLD

    def slot(self) -> LiveSlot:
        """Every install step's live slot: the drift fingerprint in a repair, else kept."""
        if self.posture == Posture.REPAIR and self.repair:
            return LiveSlot.live(self.repair)
        return LiveSlot.kept(f"live:{self.verdict}")


@dataclass
class Reconciliation:
    actions: list[ServiceAction] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)  # gated and unknown services (the `held` output)
    refused: list[Held] = field(default_factory=list)  # unknown services an up does not register
    registry: RegistryAction | None = None
    notes: list[Note] = field(default_factory=list)

    def action(self, service: str) -> ServiceAction | None:
        return next((a for a in self.actions if a.service == service), None)


# --------------------------------------------------------------------------- helpers


def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def registry_fingerprint(decision: Mapping[str, Any]) -> str:
    """A short hash of what makes the registry not healthy: the decision, its failed checks and
    details, the drifted files and the exposures (stable while the host does not change)."""
    checks = decision.get("checks")
    failed = (
        {
            name: c.get("detail")
            for name, c in checks.items()
            if isinstance(c, Mapping) and c.get("ok") is False
        }
        if isinstance(checks, Mapping)
        else {}
    )
    material = {
        "decision": decision.get("decision"),
        "failed": failed,
        "drift": decision.get("drift"),
        "exposures": decision.get("exposures"),
        "channel": decision.get("channel"),
    }
    return f"registry:{decision.get('decision')}:{_digest(material)}"


def target_host(plan: ServicePlan) -> str | None:
    match plan.target:
        case ComposeTargetDoc(host=host) | K3sTargetDoc(host=host):
            return host
        case _:
            return None


def step_hosts(plan: ServicePlan) -> list[str]:
    """Every SSH host a plan's steps (and its target) run on; the Kubernetes API is reached through
    the provider, and the live probe reports it per service."""
    hosts = [h for h in (target_host(plan),) if h is not None]
    hosts += [s.host for s in plan.steps if s.host != HOST_K8S_API]
    return sorted(set(hosts))


def in_sync_commit(facts: ServiceFacts | None) -> str | None:
    """The commit a service serves consistently (image/label, requested commit and both health
    commits equal, health ok, running), whatever the stack asks for; None otherwise."""
    if facts is None or not facts.found or facts.running is False or facts.health_ok is not True:
        return None
    commit = facts.live_commit
    consistent = (
        commit is not None
        and facts.requested_commit == commit
        and facts.health_commit == commit
        and facts.health_requested_commit == commit
    )
    return commit if consistent else None


def hold_plan(cfg: StackConfig, plan: ServicePlan, commit: str) -> ServicePlan:
    """The plan of ``plan.service`` at ``commit`` (the commit it serves), built as planned so the
    component can register it held: nothing new is deployed (every input is ignored; a create
    runs only the live commit's read-only or idempotent steps)."""
    approval = Approval(
        commit=commit, by=HOLD_APPROVER, reason="held at its live commit: nothing of it changes"
    )
    held_cfg = cfg.model_copy(update={"approvals": {**cfg.approvals, plan.service: approval}})
    return plan_service(held_cfg, plan.service, ApplyContext(live=True), commit_override=commit)


def _approval_fix(plan: ServicePlan) -> str:
    return plan.fix or (
        f"pulumi config set --path 'approvals.{plan.service}.commit' {plan.commit} && "
        f"pulumi config set --path 'approvals.{plan.service}.by' <name> && "
        f"pulumi config set --path 'approvals.{plan.service}.reason' '<why>'"
    )


# --------------------------------------------------------------------------- the decision


def reconcile(
    cfg: StackConfig,
    ctx: ApplyContext,
    plans: Sequence[ServicePlan],
    view: LiveView | None,
    *,
    decide_registry: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> Reconciliation:
    """How each planned or gated service and the registry install are registered this run.

    ``ctx.live`` is ``pulumi up`` (a preview otherwise); ``view`` None: no live view (offline)."""
    out = Reconciliation()
    if cfg.registry.manage:
        out.registry = _registry(cfg, ctx, view, decide_registry, out.notes)
    for plan in plans:
        if plan.decision == Decision.PLANNED:
            _planned(cfg, ctx, plan, view, out)
        elif plan.decision == Decision.GATED:
            _gated(cfg, ctx, plan, view, out)
    if out.registry is not None and out.registry.posture is None:
        _refuse_consumers(cfg, out)
    return out


def _refuse_consumers(cfg: StackConfig, out: Reconciliation) -> None:
    """The registry install is refused (an up, D601 did not answer): every consumer waits on its
    acceptance (R9), so none is registered either."""
    assert out.registry is not None
    reason = f"the registry install is refused: {out.registry.reason}"
    fix = f"make D601 answer SSH (python -m artifact_cd status --stack {cfg.env} --services), then pulumi up"
    refused = {a.service for a in out.actions}
    out.held = [h for h in out.held if h.service not in refused]
    for action in out.actions:
        entry = Held(action.service, action.plan.commit, Verdict.UNKNOWN.value, None, "nothing", reason, fix)
        out.refused.append(entry)
        out.held.append(entry)
    if out.actions:
        out.notes.append(
            Note(
                "error",
                f"refused with the registry install (it waits for its acceptance): "
                f"{', '.join(sorted(refused))}; nothing of them is registered or run",
            )
        )
    out.actions = []


def _silent_hosts(plan: ServicePlan, view: LiveView) -> list[str]:
    silent = []
    for name in step_hosts(plan):
        hv = view.host(name)
        if hv is None or not hv.reachable:
            silent.append(name)
    return silent


def _host_reason(view: LiveView, hosts: Sequence[str]) -> str:
    parts = []
    for name in hosts:
        hv = view.host(name)
        why = hv.error if hv is not None and hv.error else "it was not probed"
        parts.append(f"host {name} did not answer: {why}")
    return "; ".join(parts)


def _unknown(
    cfg: StackConfig,
    ctx: ApplyContext,
    plan: ServicePlan,
    reason: str,
    out: Reconciliation,
    *,
    live_commit: str | None,
) -> None:
    fix = (
        f"make the host answer SSH (python -m artifact_cd status --stack {cfg.env} --services), "
        "then pulumi up"
    )
    if ctx.live:
        entry = Held(plan.service, plan.commit, Verdict.UNKNOWN.value, live_commit, "nothing", reason, fix)
        out.refused.append(entry)
        out.held.append(entry)
        out.notes.append(
            Note(
                "error",
                f"{plan.service}: unknown ({reason}); refused: nothing of it is registered or run in this "
                "update, which therefore ends failed after every other service was deployed (so its "
                f"state is kept). Fix: {fix}",
            )
        )
        return
    out.held.append(
        Held(plan.service, plan.commit, Verdict.UNKNOWN.value, live_commit, "held-as-stored", reason, fix)
    )
    out.actions.append(ServiceAction(plan.service, plan, Posture.HOLD, Verdict.UNKNOWN.value, reason=reason))
    out.notes.append(
        Note(
            "warning",
            f"{plan.service}: unknown ({reason}); this preview shows it as stored, and `pulumi up` "
            f"refuses it (and only it) until the host answers. Fix: {fix}",
            plan.service,
        )
    )


def _auth_sha(plan: ServicePlan, view: LiveView | None) -> str | None:
    if view is None or not any(isinstance(s.call, ReadAuthArgs) for s in plan.steps):
        return None
    master = view.host("master")
    return master.auth_sha256 if master is not None and master.reachable else None


def _planned(
    cfg: StackConfig, ctx: ApplyContext, plan: ServicePlan, view: LiveView | None, out: Reconciliation
) -> None:
    if view is None:
        out.actions.append(ServiceAction(plan.service, plan, Posture.IN_SYNC, NO_LIVE_VIEW))
        return
    silent = _silent_hosts(plan, view)
    status = decide_service(
        service=plan.service,
        decision=plan.decision,
        commit=plan.commit,
        host=target_host(plan),
        repository=plan.registry.repository if plan.registry else plan.service,
        view=view,
        approval_fix=plan.fix,
        stack=cfg.env,
    )
    if silent or status.verdict == Verdict.UNKNOWN:
        reason = _host_reason(view, silent) if silent else status.reason
        _unknown(cfg, ctx, plan, reason, out, live_commit=status.live_commit)
        return
    auth = _auth_sha(plan, view)
    if status.verdict in REPAIRABLE:
        out.actions.append(
            ServiceAction(
                plan.service, plan, Posture.REPAIR, status.verdict.value, status.repair, auth, status.reason
            )
        )
        out.notes.append(
            Note(
                "warning",
                f"{plan.service}: {status.verdict.value} ({status.reason}); `pulumi up` redeploys "
                f"{plan.commit}: the steps that repair it are replaced (live slot {status.repair}). "
                f"Then: {status.action}",
                plan.service,
            )
        )
        return
    out.actions.append(
        ServiceAction(plan.service, plan, Posture.IN_SYNC, status.verdict.value, None, auth, status.reason)
    )


def _gated(
    cfg: StackConfig, ctx: ApplyContext, plan: ServicePlan, view: LiveView | None, out: Reconciliation
) -> None:
    fix = _approval_fix(plan)
    guard = plan.self_bootstrap_guard
    inside_task = guard is not None and guard.running_inside_code_queue_task
    if view is not None and not inside_task:
        silent = _silent_hosts(plan, view)
        host = target_host(plan)
        hv = view.host(host) if host else None
        facts = hv.services.get(plan.service) if hv is not None and hv.reachable else None
        if silent:
            # a preview shows it as stored (every input ignored): a plan the components translate,
            # at the desired commit (nothing runs in a preview; an up registers nothing of it)
            assert plan.commit is not None
            shown = plan if ctx.live else hold_plan(cfg, plan, plan.commit)
            _unknown(cfg, ctx, shown, _host_reason(view, silent), out, live_commit=None)
            out.notes.append(Note("warning", f"{plan.service}: also held: {plan.reason}. Fix: {fix}"))
            return
        live_commit = in_sync_commit(facts)
        if live_commit is not None:
            held = hold_plan(cfg, plan, live_commit)
            reason = f"{plan.reason}; held at its live commit {live_commit}"
            out.actions.append(
                ServiceAction(plan.service, held, Posture.HOLD, Verdict.HELD.value, reason=reason)
            )
            out.held.append(
                Held(
                    plan.service,
                    plan.commit,
                    Verdict.HELD.value,
                    live_commit,
                    "held-at-live-commit",
                    reason,
                    fix,
                )
            )
            out.notes.append(
                Note(
                    "warning",
                    f"{plan.service}: held ({plan.reason}): it stays on {live_commit}, nothing of it "
                    f"changes, every other service deploys. To deploy {plan.commit}: {fix}",
                    plan.service,
                )
            )
            return
        live = facts.live_commit if facts is not None else None
        why = "it does not serve any commit in sync"
    else:
        live = None
        why = "inside a Code Queue task" if inside_task else "the run has no live view"
    reason = f"{plan.reason}; nothing of it is registered ({why})"
    out.held.append(Held(plan.service, plan.commit, Verdict.HELD.value, live, "nothing", reason, fix))
    out.notes.append(
        Note(
            "warning",
            f"{plan.service}: held ({plan.reason}): nothing of it is registered or changed, every other "
            f"service deploys. To deploy {plan.commit}: {fix}",
        )
    )


def _registry(
    cfg: StackConfig,
    ctx: ApplyContext,
    view: LiveView | None,
    decide: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    notes: list[Note],
) -> RegistryAction:
    if view is None:
        return RegistryAction(Posture.IN_SYNC, NO_LIVE_VIEW)
    d601 = view.host("d601")
    facts = d601.registry if d601 is not None and d601.reachable else None
    if facts is None:
        if d601 is None or not d601.reachable:
            reason = _host_reason(view, ["d601"])
        else:
            reason = f"the live probe returned no registry facts ({d601.registry_error or 'no reason given'})"
        if ctx.live:
            notes.append(
                Note(
                    "error",
                    f"artifact registry: unknown ({reason}); refused: the install is not registered or run "
                    "in this update, which therefore ends failed (its state is kept)",
                )
            )
            return RegistryAction(None, Verdict.UNKNOWN.value, reason=reason)
        notes.append(
            Note(
                "warning",
                f"artifact registry: unknown ({reason}); this preview shows the install as stored, and "
                "`pulumi up` refuses it (and the D601 services) until D601 answers",
            )
        )
        return RegistryAction(Posture.HOLD, Verdict.UNKNOWN.value, reason=reason)
    decision = dict(decide(facts))
    verdict = str(decision.get("decision"))
    if verdict == HEALTHY:
        return RegistryAction(Posture.IN_SYNC, verdict, decision=decision, reason="healthy as rendered")
    repair = registry_fingerprint(decision)
    detail = decision.get("detail") or ", ".join(decision.get("failedScopes") or [])
    notes.append(
        Note(
            "warning",
            f"artifact registry: {verdict} ({detail}); `pulumi up` runs the install and its acceptance "
            f"again (live slot {repair}) and decides the acceptance from this run's probe",
        )
    )
    return RegistryAction(Posture.REPAIR, verdict, repair, decision, str(detail))
