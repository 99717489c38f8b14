"""Translate plan steps into Pulumi resources. The plan decides; this module only transcribes.

Every remote step of a plan becomes one ``pulumi_command.remote.Command``:

- ``create`` = ``scripts.command_line(step.resolved_args(digest, image_id))`` — the exact argv of
  the plan, with the manifest check's live values in place of the placeholders;
- ``stdin``  = ``scripts.script_text(step.script)`` — ``lib.sh`` + the step's script file;
- ``triggers`` = [subject (the commit), sha256 of the script text, sha256 of the argv template]:
  content hashes, so a change of one service's commit or of a script replaces only what uses it;
- no ``delete`` and no ``update``: removing a Command from the program never runs anything on a
  host (the registry storage and the services are left as they are), and a changed ``create``
  runs the new ``create`` again.

Stdout is recorded in the state. A step whose stdout carries a secret (``read-auth.sh``) is
marked ``secret_stdout``: its stdout and stderr are additional secret outputs and are not logged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from artifact_cd import plan as core_plan
from artifact_cd import scripts
from artifact_cd.config import HostConfig, StackConfig
from artifact_cd.plan import Step

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

# Scripts whose stdout carries a secret value (the Command marks stdout/stderr secret, logs nothing).
SECRET_STDOUT_SCRIPTS: frozenset[str] = frozenset({"read-auth.sh"})


class StepOutputError(RuntimeError):
    """A step's stdout is not the one-line JSON result its contract promises."""


def argv_sha256(args: Sequence[str]) -> str:
    """sha256 of the argv template (placeholders unresolved), NUL-separated."""
    return hashlib.sha256("\0".join(args).encode("utf-8")).hexdigest()


class MissingScript(RuntimeError):
    """A plan step names a script file that is not in ``artifact_cd/scripts``."""


def step_script(step: Step) -> str:
    """The exact stdin of ``step``: ``lib.sh`` + its script file (refuses clearly when absent)."""
    if step.script is None:
        raise ValueError(f"step {step.id} runs no script")
    try:
        return scripts.script_text(step.script)
    except FileNotFoundError:
        raise MissingScript(
            f"step {step.id} runs {step.script}, which is missing from {scripts.SCRIPT_DIR}; "
            "the program cannot run it"
        ) from None


def step_triggers(step: Step, subject: str) -> list[str]:
    text = step_script(step)
    return [subject, hashlib.sha256(text.encode("utf-8")).hexdigest(), argv_sha256(step.args)]


def last_json_line(stdout: str | None, what: str) -> dict[str, Any]:
    """The step's result: the last non-empty stdout line, a JSON object (contracts: one JSON line)."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if not lines:
        raise StepOutputError(f"{what}: printed no result line")
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise StepOutputError(f"{what}: the last stdout line is not JSON") from None
    if not isinstance(value, dict):
        raise StepOutputError(f"{what}: the result line is not a JSON object")
    return value


def ok_result(stdout: str | None, what: str) -> dict[str, Any]:
    result = last_json_line(stdout, what)
    if result.get("ok") is not True:
        raise StepOutputError(f"{what}: the result is not ok: error={result.get('error')!r}")
    return result


def result_of(
    command: remote.Command, what: str, *, require_ok: bool = False
) -> pulumi.Output[dict[str, Any]]:
    """The parsed result line of a Command's stdout (a pure ``apply``; unknown in a preview)."""
    parse = ok_result if require_ok else last_json_line
    return command.stdout.apply(lambda out: parse(out, what))


@dataclass(frozen=True)
class ManifestFacts:
    digest: str
    image_id: str


def manifest_facts(stdout: str | None, what: str) -> ManifestFacts:
    """Digest and image ID from the manifest check's result, validated before any use."""
    result = ok_result(stdout, what)
    digest, image_id = result.get("digest"), result.get("imageId")
    for key, value in (("digest", digest), ("imageId", image_id)):
        if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
            raise StepOutputError(f"{what}: {key} is not a sha256 digest: {value!r}")
    assert isinstance(digest, str) and isinstance(image_id, str)
    return ManifestFacts(digest=digest, image_id=image_id)


class Connections:
    """SSH connections of the hosts a component's steps run on; private keys are Pulumi secrets only."""

    def __init__(self, by_host: Mapping[str, remote.ConnectionArgs]) -> None:
        self._by_host = dict(by_host)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._by_host)

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
    hosts = {core_plan.HOST_D601: cfg.hosts.d601, core_plan.HOST_MASTER: cfg.hosts.master}
    return Connections({name: connection_args(hosts[name], key) for name, key in private_keys.items()})


@dataclass
class LiveValues:
    """The manifest check's digest and image ID as Outputs (unknown in a preview)."""

    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]


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
    if step.script is None:
        raise ValueError(f"step {step.id} of {owner_name} runs no script; it is not a remote step")
    if step.needs_manifest:
        if live is None:
            raise ValueError(f"step {step.id} of {owner_name} needs the manifest check's live values")
        create: pulumi.Input[str] = pulumi.Output.all(live.digest, live.image_id).apply(
            lambda values: scripts.command_line(step.resolved_args(values[0], values[1]))
        )
    else:
        create = scripts.command_line(step.args)
    secret_stdout = step.script in SECRET_STDOUT_SCRIPTS
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


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return any(p in value for p in core_plan.LIVE_PLACEHOLDERS)
    if isinstance(value, Mapping):
        return any(contains_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_placeholder(v) for v in value)
    return False
