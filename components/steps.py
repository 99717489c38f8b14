"""Translate plan steps into Pulumi resources. The plan decides; this module only transcribes.

Every script step of a plan becomes one ``pulumi_command.remote.Command``:

- ``create`` = ``scripts.command_line(call.to_argv())`` of the step's typed call — the exact argv of
  the plan, with the manifest check's live values in place of the placeholders
  (``call.resolve(facts)``);
- ``stdin``  = ``scripts.script_text(call.script)`` — ``lib.sh`` + the step's script file;
- ``triggers`` = ``[subject, live slot, sha256 of the argv template]``: only what must redeploy.
  The subject is the commit (consumers) or ``registry-host:<image>``; the argv hash is the target
  (every argument of the plan's step, placeholders unresolved). The **live slot** (index 1) is
  what the live view says about the step (``components.reconcile``): the drift fingerprint on the
  steps that repair a drifted service (then it differs from the stored one: a replace re-runs
  them, docs/engine-semantics.md rule 4, C2/C3), the master's auth hash on the frontend's auth
  read, and otherwise a label whose stored value is kept (``ignore_changes`` on ``triggers[1]``,
  which the engine resets to the stored element: ``PropertyPath.Reset``, rule 3). The script text
  is not a trigger: a new version of the scripts changes ``stdin``, which is an update (C2, C5).
- ``update``: only the Compose deploy has one, the same call in ``--mode verify`` (read-only); an
  update runs it instead of ``create`` (C5), so a new script text or SSH connection re-verifies a
  service and never recreates it. Every other step's ``create`` is read-only or idempotent, and an
  update runs it again.
- no ``delete``: removing a Command from the program never runs anything on a host (the registry
  storage and the services are left as they are).
- ``hold``: every input is ignored (``ignore_changes`` on each one): a stored Command is a ``same``
  step that runs nothing (rule 3, E2), whatever the program registers now.

Stdout is recorded in the state. A step whose stdout carries a secret
(``contract.SECRET_STDOUT_SCRIPTS``) has stdout and stderr as additional secret outputs and is
not logged. Results are parsed with ``contract.StepResult`` (one JSON object, the last line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from artifact_cd import scripts
from artifact_cd.config import HostConfig, StackConfig
from artifact_cd.contract import (
    SECRET_STDOUT_SCRIPTS,
    ComposeDeployArgs,
    Live,
    ManifestFacts,
    StepResult,
)
from artifact_cd.gates import Decision
from artifact_cd.plan import HOST_D601, HOST_MASTER, Call, ServicePlan, Step, TargetDoc

from .reconcile import NO_LIVE_VIEW, LiveSlot, Posture, ServiceAction


class MissingScript(RuntimeError):
    """A plan step names a script file that is not in ``artifact_cd/scripts``."""


def argv_sha256(args: Sequence[str]) -> str:
    """sha256 of the argv template (placeholders unresolved), NUL-separated."""
    return hashlib.sha256("\0".join(args).encode("utf-8")).hexdigest()


def script_call(step: Step, owner: str = "") -> Call:
    """The step's typed script call (ValueError for a Kubernetes patch step)."""
    match step.call:
        case None:
            where = f" of {owner}" if owner else ""
            raise ValueError(f"step {step.id}{where} runs no script; it is not a remote step")
        case call:
            return call


def step_script(step: Step) -> str:
    """The exact stdin of ``step``: ``lib.sh`` + its script file (refuses clearly when absent)."""
    call = script_call(step)
    try:
        return scripts.script_text(call.script)
    except FileNotFoundError:
        raise MissingScript(
            f"step {step.id} runs {call.script}, which is missing from {scripts.SCRIPT_DIR}; "
            "the program cannot run it"
        ) from None


def require_scripts(steps: Iterable[Step]) -> None:
    """Every script step of ``steps`` has its script file (else MissingScript, for the first one
    that has none); a Kubernetes patch step runs no script."""
    for step in steps:
        if step.call is not None:
            step_script(step)


LIVE_SLOT = 1  # the index of the live slot in a Command's triggers
KEEP_LIVE_SLOT = f"triggers[{LIVE_SLOT}]"
# Every input of a remote.Command (C1) and of a kubernetes *Patch: what a held resource ignores.
COMMAND_INPUTS: tuple[str, ...] = (
    "addPreviousOutputInEnv",
    "connection",
    "create",
    "delete",
    "environment",
    "logging",
    "stdin",
    "triggers",
    "update",
)
PATCH_INPUTS: tuple[str, ...] = ("apiVersion", "binaryData", "data", "kind", "metadata", "spec", "stringData")


def step_triggers(step: Step, subject: str, slot: str) -> list[str]:
    """``[subject, live slot, sha256 of the argv template]`` (see the module docstring)."""
    return [subject, slot, argv_sha256(script_call(step).to_argv())]


def verify_only(call: Call) -> Call:
    """The Compose deploy in ``--mode verify`` (read-only); any other call as it is."""
    if isinstance(call, ComposeDeployArgs):
        return call.model_copy(update={"mode": "verify"})
    return call


def parse_result(stdout: str | None, what: str) -> dict[str, Any]:
    """A step's result line as a JSON object (contract: one JSON line; else StepOutputError)."""
    return StepResult.parse(stdout, what).data


def ok_result(stdout: str | None, what: str) -> dict[str, Any]:
    """A step's result line, which must say ``"ok": true`` (else StepOutputError)."""
    return StepResult.parse(stdout, what).require_ok(what)


def result_of(
    command: remote.Command, what: str, *, require_ok: bool = False
) -> pulumi.Output[dict[str, Any]]:
    """The parsed result line of a Command's stdout (a pure ``apply``; unknown in a preview)."""
    parse = ok_result if require_ok else parse_result
    return command.stdout.apply(lambda out: parse(out, what))


class Connections:
    """SSH connections of the hosts a component's steps run on; private keys are Pulumi secrets only."""

    def __init__(self, by_host: Mapping[str, remote.ConnectionArgs]) -> None:
        self._by_host = dict(by_host)

    def for_host(self, host: str) -> remote.ConnectionArgs:
        try:
            return self._by_host[host]
        except KeyError:
            raise ValueError(f"no SSH connection for step host {host!r}") from None


def connection_args(host: HostConfig, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    return remote.ConnectionArgs(
        host=host.host,
        port=host.port,
        user=host.user,
        private_key=pulumi.Output.secret(private_key),
        host_key=host.host_key,  # None: not pinned (see HostConfig.host_key)
    )


def connections(cfg: StackConfig, private_keys: Mapping[str, pulumi.Input[str]]) -> Connections:
    """Connections for the hosts whose private key is given (``d601``, ``master``)."""
    hosts = {HOST_D601: cfg.hosts.d601, HOST_MASTER: cfg.hosts.master}
    return Connections({name: connection_args(hosts[name], key) for name, key in private_keys.items()})


@dataclass(frozen=True)
class LiveValues:
    """The manifest check's validated facts as Outputs (unknown in a preview)."""

    facts: pulumi.Output[ManifestFacts]
    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]

    @classmethod
    def of(cls, check: remote.Command, what: str) -> LiveValues:
        """The live values the manifest-check Command ``check`` printed (validated digests)."""
        facts = check.stdout.apply(lambda out: StepResult.parse(out, what).manifest_facts(what))
        return cls(
            facts=facts, digest=facts.apply(lambda f: f.digest), image_id=facts.apply(lambda f: f.image_id)
        )


def remote_step(
    owner: pulumi.Resource,
    owner_name: str,
    step: Step,
    conns: Connections,
    subject: str,
    *,
    slot: LiveSlot,
    hold: bool = False,
    live: LiveValues | None = None,
    depends_on: Sequence[pulumi.Input[pulumi.Resource]] = (),
    retain_on_delete: bool = False,
    create_as: Callable[[Call], Call] | None = None,
    update_as: Callable[[Call], Call] | None = None,
) -> remote.Command:
    """One remote Command for ``step``: exact argv, script text on stdin, the triggers of the module
    docstring. ``create_as`` / ``update_as`` turn the call into the one ``create`` / ``update`` runs
    (the Compose deploy's verify mode); ``hold`` ignores every input."""
    call = script_call(step, owner_name)

    def command(transform: Callable[[Call], Call] | None) -> pulumi.Input[str]:
        change = transform or (lambda c: c)
        if call.needs_manifest:
            if live is None:
                raise ValueError(f"step {step.id} of {owner_name} needs the manifest check's live values")
            return live.facts.apply(lambda facts: scripts.command_line(change(call.resolve(facts)).to_argv()))
        return scripts.command_line(change(call).to_argv())

    ignore = list(COMMAND_INPUTS) if hold else ([KEEP_LIVE_SLOT] if slot.keep else [])
    secret_stdout = call.script in SECRET_STDOUT_SCRIPTS
    return remote.Command(
        f"{owner_name}-{step.id}",
        connection=conns.for_host(step.host),
        create=command(create_as),
        update=command(update_as) if update_as is not None else None,
        stdin=step_script(step),
        triggers=step_triggers(step, subject, slot.value),
        logging=remote.Logging.NONE if secret_stdout else remote.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(
            parent=owner,
            depends_on=list(depends_on),
            additional_secret_outputs=["stdout", "stderr"] if secret_stdout else None,
            retain_on_delete=retain_on_delete or None,
            ignore_changes=ignore or None,
        ),
    )


def planned_commit(plan: ServicePlan) -> str:
    """The commit a consumer deploys; only a ``planned`` service gets a consumer (else ValueError)."""
    if plan.decision != Decision.PLANNED or plan.commit is None:
        raise ValueError(
            f"{plan.service}: decision {plan.decision.value}; a consumer is only built for planned services"
        )
    return plan.commit


@dataclass(frozen=True, kw_only=True)
class ConsumerArgs:
    """What every consumer component is given."""

    plan: ServicePlan
    connections: Connections
    # what the manifest check waits for (the registry install's decided acceptance, when this
    # stack manages the registry)
    after: Sequence[pulumi.Input[pulumi.Resource]] = ()
    # how the live view registers it (None: as planned, without a live view)
    action: ServiceAction | None = None

    @property
    def live(self) -> ServiceAction:
        return self.action or ServiceAction(self.plan.service, self.plan, Posture.IN_SYNC, NO_LIVE_VIEW)


class ServiceConsumer(pulumi.ComponentResource):
    """What the program reads from every consumer component: the manifest check's live digest and
    image ID, and the last step's verdict."""

    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]
    verdict: pulumi.Output[dict[str, Any]]

    def _manifest_check(
        self, name: str, args: ConsumerArgs, step: Step, commit: str
    ) -> tuple[remote.Command, LiveValues]:
        """The consumer's first Command (after ``args.after``) and the live values it reads."""
        action = args.live
        check = remote_step(
            self, name, step, args.connections, commit,
            slot=action.slot(repairs=False), hold=action.hold, depends_on=args.after,
        )  # fmt: skip
        live = LiveValues.of(check, f"{name} manifest-check")
        self.digest, self.image_id = live.digest, live.image_id
        return check, live

    def _register_consumer(
        self,
        args: ConsumerArgs,
        commit: str,
        target: TargetDoc,
        last: tuple[remote.Command, str],
        **outputs: Any,
    ) -> None:
        """``verdict`` from the ``last`` step (its Command, named for errors) and the component's
        outputs: what every consumer reports, with ``outputs`` (its own) before the verdict."""
        plan, action = args.plan, args.live
        command, what = last
        self.verdict = command.stdout.apply(lambda out: ok_result(out, f"{plan.service} {what}"))
        self.register_outputs(
            {
                "service": plan.service,
                "commit": commit,
                "targetKind": target.kind.value,
                "posture": action.posture.value,
                "live": action.verdict,
                "digest": self.digest,
                "imageId": self.image_id,
                **outputs,
                "verdict": self.verdict,
            }
        )


def replace_placeholder(value: Any, placeholder: str, live: pulumi.Output[str]) -> Any:
    """``value`` (JSON-like) with every occurrence of ``placeholder`` replaced by ``live``."""
    if isinstance(value, str):
        if value == placeholder:
            return live
        if placeholder in value:
            parts = value.split(placeholder)
            pieces: list[pulumi.Input[str]] = [parts[0]]
            for part in parts[1:]:
                pieces += [live, part]
            return pulumi.Output.concat(*pieces)
        return value
    if isinstance(value, Mapping):
        return {k: replace_placeholder(v, placeholder, live) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [replace_placeholder(v, placeholder, live) for v in value]
    return value


def resolve_live(value: Any, live: LiveValues) -> Any:
    """``value`` (JSON-like) with both live placeholders replaced by the manifest check's Outputs."""
    value = replace_placeholder(value, Live.DIGEST.value, live.digest)
    return replace_placeholder(value, Live.IMAGE_ID.value, live.image_id)


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return any(p.value in value for p in Live)
    if isinstance(value, Mapping):
        return any(contains_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_placeholder(v) for v in value)
    return False
