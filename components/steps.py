"""Translate plan steps into Pulumi resources. The plan decides; this module only transcribes.

Every script step of a plan becomes one ``pulumi_command.remote.Command``:

- ``create`` = ``scripts.command_line(call.to_argv())`` of the step's typed call — the exact argv of
  the plan, with the manifest check's live values in place of the placeholders
  (``call.resolve(facts)``);
- ``stdin``  = ``scripts.script_text(call.script)`` — ``lib.sh`` + the step's script file;
- ``triggers`` = [subject (the commit), sha256 of the script text, sha256 of the argv template]:
  content hashes, so a change of one service's commit or of a script replaces only what uses it;
- no ``delete`` and no ``update``: removing a Command from the program never runs anything on a
  host (the registry storage and the services are left as they are), and a changed ``create``
  runs the new ``create`` again.

Stdout is recorded in the state. A step whose stdout carries a secret
(``contract.SECRET_STDOUT_SCRIPTS``) has stdout and stderr as additional secret outputs and is
not logged. Results are parsed with ``contract.StepResult`` (one JSON object, the last line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from artifact_cd import scripts
from artifact_cd.config import HostConfig, StackConfig
from artifact_cd.contract import SECRET_STDOUT_SCRIPTS, Live, ManifestFacts, StepResult
from artifact_cd.gates import Decision
from artifact_cd.plan import HOST_D601, HOST_MASTER, Call, ServicePlan, Step


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


def step_triggers(step: Step, subject: str) -> list[str]:
    text = step_script(step)
    return [
        subject,
        hashlib.sha256(text.encode("utf-8")).hexdigest(),
        argv_sha256(script_call(step).to_argv()),
    ]


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
    live: LiveValues | None = None,
    depends_on: Sequence[pulumi.Input[pulumi.Resource]] = (),
    retain_on_delete: bool = False,
) -> remote.Command:
    """One remote Command for ``step``: exact argv, script text on stdin, content-hash triggers."""
    call = script_call(step, owner_name)
    create: pulumi.Input[str]
    if call.needs_manifest:
        if live is None:
            raise ValueError(f"step {step.id} of {owner_name} needs the manifest check's live values")
        create = live.facts.apply(lambda facts: scripts.command_line(call.resolve(facts).to_argv()))
    else:
        create = scripts.command_line(call.to_argv())
    secret_stdout = call.script in SECRET_STDOUT_SCRIPTS
    return remote.Command(
        f"{owner_name}-{step.id}",
        connection=conns.for_host(step.host),
        create=create,
        stdin=step_script(step),
        triggers=step_triggers(step, subject),
        logging=remote.Logging.NONE if secret_stdout else remote.Logging.STDOUT_AND_STDERR,
        opts=pulumi.ResourceOptions(
            parent=owner,
            depends_on=list(depends_on),
            additional_secret_outputs=["stdout", "stderr"] if secret_stdout else None,
            retain_on_delete=retain_on_delete or None,
        ),
    )


def planned_commit(plan: ServicePlan) -> str:
    """The commit a consumer deploys; only a ``planned`` service gets a consumer (else ValueError)."""
    if plan.decision != Decision.PLANNED or plan.commit is None:
        raise ValueError(
            f"{plan.service}: decision {plan.decision.value}; a consumer is only built for planned services"
        )
    return plan.commit


class ServiceConsumer(pulumi.ComponentResource):
    """What the program reads from every consumer component: the manifest check's live digest and
    image ID, and the last step's verdict."""

    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]
    verdict: pulumi.Output[dict[str, Any]]

    def _manifest_check(
        self,
        name: str,
        step: Step,
        conns: Connections,
        commit: str,
        *,
        after: Sequence[pulumi.Input[pulumi.Resource]],
    ) -> tuple[remote.Command, LiveValues]:
        """The consumer's first Command (after ``after``) and the live values it reads."""
        check = remote_step(self, name, step, conns, commit, depends_on=after)
        live = LiveValues.of(check, f"{name} manifest-check")
        self.digest, self.image_id = live.digest, live.image_id
        return check, live


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
