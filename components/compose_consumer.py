"""ComposeServiceConsumer: a commit-pinned image into one Compose service (R11, R14-R16, R19, R20).

Two shapes, one component (the plan says which):

- ``compose-master``: ``manifest-check`` (D601) → ``transfer`` (master: the image crosses over SSH,
  the registry port stays private) → ``deploy`` (master);
- ``compose-d601``:   ``manifest-check`` (D601) → ``pull`` (D601, local registry) → ``deploy`` (D601).

``deploy`` is ``compose-deploy.sh``: locks on the service, its container and its retag; a read-only
preflight (image, secrets for baidu-netdisk, ``compose config`` with the new values, this target's
own previous commit); the ``UNIDESK_<SERVICE>_DEPLOY_*`` env staged beside the env file; then,
detached from the SSH session, the live switch (retag, env file renamed into place, ``up -d --no-build
--no-deps --force-recreate <service>``, restored when it fails before ``up``) and the verification
(image, revision label, health commits; todo-note synthetic health; baidu auth gate; with
``compose.<host>.autoRestore`` a failed commit is replaced by the verified previous one). A deploy
that finds the service already live on exactly this deploy changes nothing (``alreadyLive``). Its
``update`` is the same call in verify mode (read-only). No Kubernetes object is ever created here.

How the live view shapes it (``components.reconcile``): in a repair, ``move`` and ``deploy`` carry
the drift fingerprint in their live slot (replaced: they run again); held, every input is ignored
and the deploy's ``create`` is the verify mode too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from artifact_cd.catalog import TargetKind
from artifact_cd.contract import ComposeDeployArgs, ManifestCheckArgs, MoveImageArgs
from artifact_cd.plan import ComposeTargetDoc, ServicePlan, Step

from .steps import (
    ConsumerArgs,
    ServiceConsumer,
    ok_result,
    planned_commit,
    remote_step,
    require_scripts,
    verify_only,
)

TYPE = "unidesk:cd:ComposeServiceConsumer"


class ComposeServiceConsumerArgs(ConsumerArgs):
    """A Compose consumer is given what every consumer is (``ConsumerArgs``)."""


@dataclass(frozen=True)
class ComposeSteps:
    """The three steps of a Compose consumer plan, typed."""

    commit: str
    target: ComposeTargetDoc
    check: Step  # manifest-check.sh on D601
    move: Step  # move-image.sh: tunnel/stream onto the master server, or a local pull on D601
    deploy: Step  # compose-deploy.sh where the Compose project runs


def _move_fits(kind: TargetKind, move: MoveImageArgs) -> bool:
    """compose-d601 pulls locally; compose-master moves the image over SSH (tunnel or stream)."""
    return (move.mode == "local") == (kind == TargetKind.COMPOSE_D601)


def check_plan(plan: ServicePlan) -> ComposeSteps:
    """The plan is one this component can translate (else ValueError); returns its typed steps."""
    commit = planned_commit(plan)
    match plan.target, plan.steps:
        case (
            ComposeTargetDoc() as target,
            (
                Step(call=ManifestCheckArgs()) as check,
                Step(call=MoveImageArgs() as move_call) as move,
                Step(call=ComposeDeployArgs()) as deploy,
            ),
        ) if _move_fits(target.kind, move_call) and move.host == deploy.host == target.host:
            steps = ComposeSteps(commit=commit, target=target, check=check, move=move, deploy=deploy)
        case _:
            raise ValueError(
                f"{plan.service}: not a Compose consumer plan (steps {[s.id for s in plan.steps]}, "
                f"target kind {plan.target.kind.value!r}): a Compose consumer runs manifest-check.sh, "
                "move-image.sh, compose-deploy.sh"
            )
    require_scripts(plan.steps)
    return steps


class ComposeServiceConsumer(ServiceConsumer):
    def __init__(
        self, name: str, args: ComposeServiceConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        conns, action = args.connections, args.live
        steps = check_plan(args.plan)
        commit, hold = steps.commit, action.hold
        check, live = self._manifest_check(name, args, steps.check, commit)
        move = remote_step(
            self, name, steps.move, conns, commit, slot=action.slot(repairs=True), hold=hold, live=live,
            depends_on=[check],
        )  # fmt: skip
        deploy = remote_step(
            self, name, steps.deploy, conns, commit, slot=action.slot(repairs=True), hold=hold, live=live,
            depends_on=[move], create_as=verify_only if hold else None, update_as=verify_only,
        )  # fmt: skip
        moved = move.stdout.apply(lambda out: ok_result(out, f"{args.plan.service} {steps.move.id}"))
        self._register_consumer(args, commit, steps.target, (deploy, "deploy"), moved=moved)
