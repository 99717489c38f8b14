"""ArtifactRegistryHost: the D601 artifact registry install (R1-R3, R6, R7).

The steps come from ``artifact_cd.plan.plan_registry_host``, in order: ``registry-dirs`` →
``registry-config`` → ``registry-compose`` → ``registry-unit`` → ``registry-activate`` →
``registry-acceptance``. Each is a remote Command on D601 whose triggers are content hashes (a
file write re-runs only when its rendered SHA-256 changes; the script itself writes only when the
remote hash differs).

Nothing here can delete the registry storage: no Command has a ``delete``, every child is
``retain_on_delete``, so ``pulumi destroy`` (or dropping ``registry.manage``) forgets the
resources and leaves the host, the unit, the container and the storage as they are.

Acceptance: the probe's facts are decided by ``artifact_cd.health.decide(facts, mode="health")``
(:func:`health_decide`, looked up when called); a non-preview run fails unless the decision is
``healthy``. Which facts (``components.reconcile``): when the live view of this run says the
registry is healthy (nothing needs installing), the acceptance is that live decision, never the
acceptance Command's stored stdout — an unchanged Command never runs again and keeps the stdout of
its last run (docs/engine-semantics.md C4, C7), so deciding on it would wedge every later run
after one unhealthy probe. Otherwise (drift: files differ from the render, unit stopped or
disabled, listener off loopback, container not on the rendered spec, or not installed) every step,
the acceptance included, carries the drift fingerprint in its live slot: they are replaced, run
again, and the acceptance is decided from the probe of this run. A held install (a preview while
D601 does not answer) ignores every input and decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from artifact_cd.contract import (
    RegistryActivateArgs,
    RegistryDirsArgs,
    RegistryProbeArgs,
    RegistryWriteArgs,
    StepResult,
)
from artifact_cd.plan import RegistryHostPlan, Step

from .reconcile import NO_LIVE_VIEW, Posture, RegistryAction
from .steps import Connections, remote_step, require_scripts, result_of

TYPE = "unidesk:registry:ArtifactRegistryHost"


class RegistryUnhealthy(RuntimeError):
    """The acceptance probe after the install did not decide ``healthy``."""


def health_decide(facts: Mapping[str, Any]) -> dict[str, Any]:
    """``artifact_cd.health.decide(facts, mode="health")``, imported only when a probe returned."""
    try:
        from artifact_cd import health
    except ImportError as error:  # the module is part of the project; say so instead of guessing
        raise RegistryUnhealthy(
            f"artifact_cd.health is not importable ({error}); cannot accept the install"
        ) from None
    result: dict[str, Any] = health.decide(facts, mode="health")
    return result


def accept(stdout: str | None, *, strict: bool = True) -> dict[str, Any]:
    """Decide the acceptance probe's facts (:func:`health_decide`, looked up when called);
    anything but ``healthy`` fails the run. Not ``strict`` (a preview): the decision is returned
    as it is (the live view's warning already says what is wrong; ``pulumi up`` refuses it)."""
    facts = StepResult.parse(stdout, "registry-acceptance").data
    verdict = health_decide(facts)
    if not isinstance(verdict, dict) or verdict.get("decision") != "healthy":
        decision = verdict.get("decision") if isinstance(verdict, dict) else verdict
        if not strict:
            return verdict if isinstance(verdict, dict) else {"ok": False, "decision": decision}
        failed = verdict.get("failedScopes") if isinstance(verdict, dict) else None
        action = verdict.get("recommendedAction") if isinstance(verdict, dict) else None
        raise RegistryUnhealthy(
            f"registry install acceptance: decision {decision!r} (failed scopes: {failed}); "
            "the install is not done. "
            + str(action or "Run python -m artifact_cd health --stack <stack> for details.")
        )
    return verdict


@dataclass(frozen=True)
class RegistryHostSteps:
    """The install steps, typed: dirs → one write per rendered file → activate → acceptance."""

    dirs: Step
    writes: tuple[Step, ...]  # registry-config, registry-compose, registry-unit
    activate: Step
    acceptance: Step  # the read-only probe

    @property
    def in_order(self) -> tuple[Step, ...]:
        return (self.dirs, *self.writes, self.activate, self.acceptance)


def check_plan(plan: RegistryHostPlan) -> RegistryHostSteps:
    """The plan is one this component can translate (else ValueError); returns its typed steps."""
    match plan.steps:
        case (
            Step(call=RegistryDirsArgs()) as dirs,
            *writes,
            Step(call=RegistryActivateArgs()) as activate,
            Step(call=RegistryProbeArgs()) as acceptance,
        ) if writes and all(isinstance(w.call, RegistryWriteArgs) for w in writes):
            steps = RegistryHostSteps(
                dirs=dirs, writes=tuple(writes), activate=activate, acceptance=acceptance
            )
        case _:
            raise ValueError(
                f"registry host plan steps {[s.id for s in plan.steps]}: expected dirs, the file writes, "
                "activate and the acceptance probe of registry-install.sh / registry-probe.sh"
            )
    if not plan.managed_by_this_stack:
        raise ValueError("registry.manage is false: this stack does not own the registry install")
    require_scripts(plan.steps)
    return steps


@dataclass(frozen=True)
class ArtifactRegistryHostArgs:
    plan: RegistryHostPlan
    connections: Connections
    # how the live view registers it (None: as planned, without a live view)
    action: RegistryAction | None = None

    @property
    def live(self) -> RegistryAction:
        return self.action or RegistryAction(Posture.IN_SYNC, NO_LIVE_VIEW)


class ArtifactRegistryHost(pulumi.ComponentResource):
    acceptance: pulumi.Output[dict[str, Any]]
    # The acceptance Command, released only once its probe was decided healthy: consumers put it
    # in depends_on, so no consumer step starts before the registry is installed and healthy, and
    # none starts at all when the acceptance fails (CD flow step 1; R9's common guardrail).
    ready: pulumi.Output[pulumi.Resource]

    def __init__(
        self, name: str, args: ArtifactRegistryHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        plan, action = args.plan, args.live
        steps = check_plan(plan)
        subject = f"registry-host:{plan.paths.image}"
        previous: list[pulumi.Resource] = []
        commands: dict[str, remote.Command] = {}
        for step in steps.in_order:
            cmd = remote_step(
                self, name, step, args.connections, subject, slot=action.slot(), hold=action.hold,
                depends_on=previous, retain_on_delete=True,
            )  # fmt: skip
            commands[step.id] = cmd
            previous = [cmd]

        acceptance_command: pulumi.Resource = commands[steps.acceptance.id]
        if action.hold:
            self.acceptance = pulumi.Output.from_input(
                {"ok": False, "decision": "unknown", "detail": action.reason or "D601 did not answer"}
            )
        elif action.posture == Posture.IN_SYNC and action.decision is not None:
            self.acceptance = pulumi.Output.from_input(dict(action.decision))  # this run's live decision
        else:
            strict = not pulumi.runtime.is_dry_run()  # a preview shows the decision, an up refuses it
            stdout = commands[steps.acceptance.id].stdout
            self.acceptance = stdout.apply(lambda out: accept(out, strict=strict))
        self.ready = self.acceptance.apply(lambda _decided: acceptance_command)
        self.register_outputs(
            {
                "host": plan.host_address,
                "endpoint": plan.paths.endpoint,
                "files": {key: ref.to_json() for key, ref in plan.files.items()},
                "writes": {w.id: result_of(commands[w.id], w.id) for w in steps.writes},
                "acceptance": self.acceptance,
            }
        )
