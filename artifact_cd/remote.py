"""OpenSSH runner for the CLI's read-only verbs (``status``, ``health``) and the live probe.

One SSH round trip: ``ssh -o BatchMode=yes -p PORT user@host bash -s -- <probe args>`` with the
probe script (``lib.sh`` + ``registry-probe.sh``) on stdin: exactly the ``command_line`` and
``script_text`` of the install's ``registry-acceptance`` step, so status, health and the
install's acceptance check can never disagree about what they ran.

A failed SSH channel becomes a structured ``infra-blocked`` answer naming ``ssh`` (R23): the
reason is classified into a stable code; OpenSSH's own stderr never reaches the output.

Extra OpenSSH options (e.g. a ProxyCommand) come from ``--ssh-option`` or the environment
variable ``ARTIFACT_CD_SSH_OPTIONS`` (shell-quoted words, each one ``Key=Value``); a key file
from ``--ssh-key`` or ``ARTIFACT_CD_SSH_KEY``.

Pinned host keys (issue 11): when ``hosts.<h>.hostKey`` is set, every connection to that host trusts
exactly that key and nothing else: a temporary known_hosts file holding only it (under a
``HostKeyAlias``, so the port and a ProxyCommand do not matter), ``StrictHostKeyChecking=yes``, and
these options come before the operator's (OpenSSH keeps the first value), so no option can loosen
them. A host that shows another key is refused as ``host-key-mismatch``. Unset: OpenSSH's own
known_hosts decide (``python -m artifact_cd hostkeys --stack S`` prints the keys to pin).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from . import health
from .config import ConfigError, HostConfig, Problem, StackConfig
from .contract import RegistryBlobVerifyArgs, RegistryProbeArgs, ScriptArgs, last_json_object
from .plan import Step, plan_registry_host
from .scripts import command_line, script_text
from .sshlink import (
    SSH_KEY_ENV,
    Preconnected,
    SshOptionError,
    SshSettings,
    pinned_known_hosts,
    pinned_options,
    script_with_args,
    ssh_argv,
)

SSH_EXIT_ERROR = 255
ACCEPTANCE_STEP = "registry-acceptance"
HOST_KEY_MISMATCH = "host-key-mismatch"
HOST_KEY_FIX = (
    "python -m artifact_cd hostkeys --stack S prints the key the host shows now; check it out of band, "
    "then pulumi config set --path 'hosts.<host>.hostKey' '<key>'"
)

# OpenSSH stderr fragments → (reason code, what it means, retryable). First match wins.
_SSH_FAILURES: tuple[tuple[str, str, str, bool], ...] = (
    ("Permission denied", "auth-failed", "the SSH key was not accepted", False),
    ("Host key verification failed", "host-key", "the host key is unknown or changed", False),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host-key", "the host key changed", False),
    ("Could not resolve hostname", "dns", "the host name does not resolve", True),
    ("Connection refused", "connection-refused", "nothing accepts SSH connections on that port", True),
    ("timed out", "timeout", "the SSH connection timed out", True),
    ("No route to host", "unreachable", "the host is unreachable", True),
    ("Network is unreachable", "unreachable", "the network is unreachable", True),
    ("kex_exchange_identification", "connection-closed", "the SSH server closed the connection", True),
    ("Connection closed", "connection-closed", "the SSH connection was closed", True),
    ("Connection reset", "connection-closed", "the SSH connection was reset", True),
    ("Broken pipe", "connection-closed", "the SSH connection broke", True),
)


@dataclass(frozen=True)
class RemoteResult:
    returncode: int
    stdout: str
    stderr: str = field(repr=False)
    seconds: float

    @property
    def json(self) -> dict[str, Any] | None:
        """The last non-empty stdout line parsed as a JSON object (None otherwise)."""
        return last_json_object(self.stdout)


class SshFailure(Exception):
    """The SSH channel itself failed (no answer from the remote script)."""

    def __init__(self, reason: str, detail: str, retryable: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


def classify_ssh_failure(stderr: str) -> tuple[str, str, bool]:
    for fragment, reason, detail, retryable in _SSH_FAILURES:
        if fragment in stderr:
            return reason, detail, retryable
    return "ssh-failed", "the SSH connection failed", True


def run_step(host: HostConfig, step: Step, settings: SshSettings) -> RemoteResult:
    """Run one plan step over SSH: its exact command line, its exact script on stdin.

    Raises :class:`SshFailure` when the channel fails (OpenSSH exit 255, timeout, no ssh)."""
    match step.call:
        case None:
            raise ValueError(f"step {step.id} has no script")
        case call if call.needs_manifest:
            raise ValueError(f"step {step.id} needs the manifest check's live values")
        case call:
            return run_call(host, call, settings)


@contextmanager
def host_key_settings(host: HostConfig, settings: SshSettings) -> Iterator[SshSettings]:
    """``settings`` for ``host``: with its pinned key first when ``hostKey`` is set (a private
    temporary known_hosts file, removed afterwards), else unchanged."""
    if host.host_key is None:
        yield settings
        return
    with pinned_known_hosts(host.host_key) as known:
        yield replace(settings, options=(*pinned_options(known), *settings.options))


def mismatch_detail(host: HostConfig) -> str:
    return (
        f"{host.user}@{host.host}:{host.port} did not show the pinned host key ({host.host_key}); "
        "nothing was run there. If the host was reinstalled, fetch its key (python -m artifact_cd "
        "hostkeys --stack S), check it out of band, and pin it again"
    )


def run_ssh(
    host: HostConfig, remote_command: str, settings: SshSettings, stdin: str | None = None
) -> RemoteResult:
    """One OpenSSH round trip to ``host`` (its pinned key when set).

    Raises :class:`SshFailure` when the channel fails (OpenSSH exit 255, timeout, no ssh); a host
    key other than the pinned one is ``host-key-mismatch``."""
    with host_key_settings(host, settings) as effective:
        argv = ssh_argv(host, remote_command, effective)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                text=True,
                timeout=settings.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise SshFailure("ssh-missing", "the OpenSSH client (ssh) is not installed here", False) from None
        except subprocess.TimeoutExpired:
            raise SshFailure("timeout", f"no answer over SSH within {settings.timeout:g} s", True) from None
    return _result(host, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _result(host: HostConfig, returncode: int, stdout: str, stderr: str, seconds: float) -> RemoteResult:
    if returncode == SSH_EXIT_ERROR:
        reason, detail, retryable = classify_ssh_failure(stderr)
        if reason == "host-key" and host.host_key is not None:
            raise SshFailure(HOST_KEY_MISMATCH, mismatch_detail(host), False)
        raise SshFailure(reason, detail, retryable)
    return RemoteResult(returncode, stdout, stderr, seconds)


def _run_early(
    host: HostConfig, proc: subprocess.Popen[str], stdin: str, started: float, timeout: float
) -> RemoteResult:
    """Finish a round trip on the connection ``python -m artifact_cd`` opened early (sshlink)."""
    try:
        stdout, stderr = proc.communicate(stdin, timeout=max(0.1, started + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SshFailure("timeout", f"no answer over SSH within {timeout:g} s", True) from None
    return _result(host, proc.returncode, stdout, stderr, time.monotonic() - started)


def run_call(host: HostConfig, call: ScriptArgs, settings: SshSettings) -> RemoteResult:
    """Run one script call over SSH: ``bash -s -- <its argv>``, the script text on stdin (on the
    early connection of ``status``/``health``, when it is this one: its argv as the script's first
    line, ``set -- <argv>``; artifact_cd.sshlink).

    Raises :class:`SshFailure` when the channel fails (OpenSSH exit 255, timeout, no ssh, a host
    key other than the pinned one)."""
    if call.needs_manifest:
        raise ValueError(f"{call.script} needs the manifest check's live values")
    early = settings.preconnected.take(host, settings) if settings.preconnected is not None else None
    if early is not None:
        stdin = script_with_args(call.to_argv(), script_text(call.script))
        return _run_early(host, early.proc, stdin, early.started, settings.timeout)
    return run_ssh(host, command_line(call.to_argv()), settings, script_text(call.script))


def acceptance_step(cfg: StackConfig) -> Step:
    """The install's acceptance step: the probe script and its exact arguments."""
    for step in plan_registry_host(cfg).steps:
        match step:
            case Step(id=step_id, call=RegistryProbeArgs()) if step_id == ACCEPTANCE_STEP:
                return step
    raise LookupError(f"the registry plan has no {ACCEPTANCE_STEP} step")  # pragma: no cover


def registry_query(
    cfg: StackConfig,
    mode: health.Mode,
    settings: SshSettings,
    integrity: RegistryBlobVerifyArgs | None = None,
) -> dict[str, Any]:
    """Run the read-only probe on D601 over one SSH round trip and decide (``health.decide``);
    with ``integrity`` (health only) a second read-only round trip hashes the registry blobs."""
    host = cfg.hosts.d601
    target = {"host": host.host, "port": host.port, "user": host.user}
    try:
        result = run_step(host, acceptance_step(cfg), settings)
    except SshFailure as failure:
        doc = health.blocked(
            "ssh",
            f"{failure.detail} ({host.user}@{host.host}:{host.port})",
            mode=mode,
            retryable=failure.retryable,
            host=host.host,
        )
        doc["sshFailure"] = failure.reason
        if failure.reason == HOST_KEY_MISMATCH:
            doc["fix"] = HOST_KEY_FIX
        return {**doc, "target": target}
    facts = result.json
    if result.returncode != 0 or facts is None:
        detail = "the probe gave no facts"
        if facts is not None and isinstance(facts.get("detail"), str):
            detail = f"the probe refused: {facts.get('error', 'error')}: {facts['detail']}"
        elif result.returncode == 127:
            detail = "bash is not available on the host"
        doc = health.blocked("probe", detail, mode=mode, retryable=result.returncode != 2, host=host.host)
        doc["probeExit"] = result.returncode
        return {**doc, "target": target}
    if integrity is not None and mode == "health":
        checked = blob_integrity(host, integrity, settings)
        doc = health.decide(facts, mode=mode, integrity=checked)
        seconds = result.seconds + float(checked.get("querySeconds") or 0)
        return {**doc, "target": target, "query": {"roundTrips": 2, "seconds": round(seconds, 3)}}
    doc = health.decide(facts, mode=mode)
    return {**doc, "target": target, "query": {"roundTrips": 1, "seconds": round(result.seconds, 3)}}


def blob_integrity(host: HostConfig, call: RegistryBlobVerifyArgs, settings: SshSettings) -> dict[str, Any]:
    """``registry-blob-verify.sh`` on D601 (read-only): its facts, or why there are none."""
    try:
        result = run_call(host, call, settings)
    except SshFailure as failure:
        return {"ok": False, "detail": f"ssh: {failure.detail}"}
    facts = result.json
    if result.returncode != 0 or facts is None:
        detail = str((facts or {}).get("detail") or f"the blob verification exited {result.returncode}")
        return {"ok": False, "detail": detail}
    return {**facts, "querySeconds": result.seconds}


EXIT_OK = 0
EXIT_NOT_OK = 1


def cli_settings(
    *, ssh_key: str | None, ssh_options: Sequence[str], timeout: float, environ: Mapping[str, str]
) -> SshSettings:
    """The CLI's SSH settings (``--ssh-key``, ``--ssh-option``, ``ARTIFACT_CD_SSH_*``); an unusable
    option or key file is a :class:`ConfigError` (exit 2)."""
    try:
        return SshSettings.build(key_file=ssh_key, options=ssh_options, environ=environ, timeout=timeout)
    except SshOptionError as error:
        raise ConfigError(
            [Problem("--ssh-option", str(error), f"pass OpenSSH Key=Value options; check {SSH_KEY_ENV}")]
        ) from None


def cli_query(
    cfg: StackConfig,
    mode: health.Mode,
    *,
    ssh_key: str | None,
    ssh_options: Sequence[str],
    timeout: float,
    as_json: bool,
    environ: Mapping[str, str],
    out: TextIO,
    integrity: RegistryBlobVerifyArgs | None = None,
    preconnected: Preconnected | None = None,
) -> int:
    """``python -m artifact_cd status|health``: print the answer (JSON when asked for or when
    ``out`` is not a terminal, else a table). Exit 0 when ok, 1 when not ok.

    Raises :class:`ConfigError` (exit 2) for an unusable SSH option or key file."""
    settings = cli_settings(ssh_key=ssh_key, ssh_options=ssh_options, timeout=timeout, environ=environ)
    doc = registry_query(cfg, mode, replace(settings, preconnected=preconnected), integrity)
    doc = {"stack": cfg.env, **doc}
    if as_json or not out.isatty():
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(health.format_table(doc))
    return EXIT_OK if doc["ok"] else EXIT_NOT_OK
