"""ComposeServiceConsumer: a commit-pinned image into one Compose service (R11, R14-R16, R19, R20).

Two shapes, one component (the plan says which):

- ``compose-master``: ``manifest-check`` (D601) → ``transfer`` (master: the image crosses over SSH,
  the registry port stays private) → ``deploy`` (master);
- ``compose-d601``:   ``manifest-check`` (D601) → ``pull`` (D601, local registry) → ``deploy`` (D601).

``deploy`` is ``compose-deploy.sh``: lock, secret preflight (baidu-netdisk), retag, write the
``UNIDESK_<SERVICE>_DEPLOY_*`` env, ``up -d --no-build --no-deps --force-recreate <service>``, verify
(image, revision label, health commits; todo-note synthetic health; baidu auth gate). No
Kubernetes object is ever created here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from artifact_cd.catalog import TargetKind
from artifact_cd.gates import Decision
from artifact_cd.plan import ServicePlan

from .steps import Connections, LiveValues, manifest_facts, ok_result, remote_step, step_script

TYPE = "unidesk:cd:ComposeServiceConsumer"
STEP_IDS: dict[str, tuple[str, ...]] = {
    TargetKind.COMPOSE_MASTER.value: ("manifest-check", "transfer", "deploy"),
    TargetKind.COMPOSE_D601.value: ("manifest-check", "pull", "deploy"),
}


@dataclass(frozen=True)
class ComposeServiceConsumerArgs:
    plan: ServicePlan
    connections: Connections
    # what the manifest check waits for (the registry install's decided acceptance, when this
    # stack manages the registry)
    after: Sequence[pulumi.Input[pulumi.Resource]] = ()


def check_plan(plan: ServicePlan) -> tuple[str, ...]:
    """The plan is one this component can translate (else ValueError); returns its step ids."""
    kind = plan.target.get("kind")
    if plan.decision != Decision.PLANNED or plan.commit is None:
        raise ValueError(
            f"{plan.service}: decision {plan.decision.value}; a consumer is only built for planned services"
        )
    expected = STEP_IDS.get(str(kind))
    if expected is None or tuple(s.id for s in plan.steps) != expected:
        raise ValueError(
            f"{plan.service}: a Compose consumer runs steps {expected}, the plan has "
            f"{tuple(s.id for s in plan.steps)} (target kind {kind!r})"
        )
    for step in plan.steps:
        step_script(step)
    return expected


class ComposeServiceConsumer(pulumi.ComponentResource):
    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]
    verdict: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: ComposeServiceConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        plan = args.plan
        expected = check_plan(plan)
        kind = plan.target.get("kind")
        assert plan.commit is not None
        commit = plan.commit
        steps = plan.step_by_id
        check = remote_step(
            self, name, steps["manifest-check"], args.connections, commit, depends_on=args.after
        )
        facts = check.stdout.apply(lambda out: manifest_facts(out, f"{plan.service} manifest-check"))
        live = LiveValues(digest=facts.apply(lambda f: f.digest), image_id=facts.apply(lambda f: f.image_id))
        move_id = expected[1]
        move = remote_step(
            self, name, steps[move_id], args.connections, commit, live=live, depends_on=[check]
        )
        deploy = remote_step(
            self, name, steps["deploy"], args.connections, commit, live=live, depends_on=[move]
        )

        self.digest = live.digest
        self.image_id = live.image_id
        self.verdict = deploy.stdout.apply(lambda out: ok_result(out, f"{plan.service} deploy"))
        self.register_outputs(
            {
                "service": plan.service,
                "commit": commit,
                "targetKind": kind,
                "digest": self.digest,
                "imageId": self.image_id,
                "moved": move.stdout.apply(lambda out: ok_result(out, f"{plan.service} {move_id}")),
                "verdict": self.verdict,
            }
        )
