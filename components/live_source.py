"""Where the program's live view comes from (issue 10): one read-only probe per host, per run.

The program reads what is live while it evaluates, in ``pulumi preview`` and ``pulumi up`` alike,
and decides from it (``components.reconcile``). :func:`probe_live` is the only I/O: it puts the
stack's SSH private keys (the secret config ``d601PrivateKey`` / ``masterPrivateKey``, read as
plaintext by the program) into a private temporary directory (0700, each key 0600, removed in a
``finally``), builds the OpenSSH settings the CLI's verbs use (``ARTIFACT_CD_SSH_OPTIONS``, and the
host key pinned by ``hosts.<name>.hostKey`` when set) and hands them to the live probe's collector
(``collect_live``: one read-only SSH round trip per host; a host that does not answer comes back
as ``HostView(reachable=False)``). Nothing here runs inside an ``apply``, and no key is logged.

The program looks ``probe_live`` up when it calls it, so the program tests replace it with a fake
live view (``tests/program/program_support.py``), as they replace ``registry_host.health_decide``.

**No live view.** ``components.preview.run_program`` evaluates the program with placeholder
secrets when it is given none (``python -m artifact_cd plan --stack S --resources``, and replays
that bring their own executor): no host can be reached with those, so :func:`without_live_view`
marks the run and the program decides without a live view (every service as planned).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from artifact_cd.config import HostConfig, StackConfig
from artifact_cd.live import HostView, LiveView
from artifact_cd.liveprobe import collect_live
from artifact_cd.plan import HOST_D601, HOST_MASTER, ServicePlan
from artifact_cd.sshlink import SshOptionError, SshSettings

PROBE_TIMEOUT_SECONDS = 90.0
SSH_OPTIONS_FIX = (
    "set ARTIFACT_CD_SSH_OPTIONS to shell-quoted OpenSSH Key=Value words (e.g. 'ProxyJump=bastion'), "
    "or unset it"
)


_NO_LIVE_VIEW: list[bool] = [False]


class LiveSourceError(ValueError):
    """The live probe cannot be set up (e.g. ``ARTIFACT_CD_SSH_OPTIONS`` is not Key=Value words)."""


@contextlib.contextmanager
def without_live_view() -> Iterator[None]:
    """For the duration: the program evaluates without a live view (placeholder secrets)."""
    before = _NO_LIVE_VIEW[0]
    _NO_LIVE_VIEW[0] = True
    try:
        yield
    finally:
        _NO_LIVE_VIEW[0] = before


def live_view_available() -> bool:
    """False while :func:`without_live_view` is in effect."""
    return not _NO_LIVE_VIEW[0]


def host_configs(cfg: StackConfig) -> dict[str, HostConfig]:
    return {HOST_D601: cfg.hosts.d601, HOST_MASTER: cfg.hosts.master}


def unreachable_view(cfg: StackConfig, hosts: Sequence[str], why: str) -> LiveView:
    """A live view in which every one of ``hosts`` is unreachable, for ``why``."""
    configs = host_configs(cfg)
    return LiveView(
        stack=cfg.env,
        hosts={
            name: HostView(host=name, address=configs[name].host, reachable=False, error=why)
            for name in hosts
            if name in configs
        },
    )


def _write_private(path: Path, text: str) -> None:
    """``text`` into a new file readable by this user only (0600), created exclusively."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text if text.endswith("\n") else text + "\n")


def known_hosts_line(host: HostConfig) -> str:
    """The OpenSSH known_hosts line that pins ``host.host_key`` for ``host.host:host.port``."""
    assert host.host_key is not None
    name = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
    return f"{name} {host.host_key}\n"


def ssh_settings(
    directory: Path, name: str, host: HostConfig, private_key: str, environ: Mapping[str, str]
) -> SshSettings:
    """The OpenSSH settings for one host: its key in ``directory``; ``ARTIFACT_CD_SSH_OPTIONS``
    first (the operator's options win, as in the CLI); then, when ``hostKey`` is set, only that
    key is trusted for the host."""
    key_file = directory / f"{name}.key"
    _write_private(key_file, private_key)
    pinned: list[str] = []
    if host.host_key is not None:
        known = directory / f"{name}.known_hosts"
        _write_private(known, known_hosts_line(host))
        pinned = [
            f"UserKnownHostsFile={known}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
        ]
    try:
        return SshSettings.build(
            key_file=str(key_file), options=pinned, environ=environ, timeout=PROBE_TIMEOUT_SECONDS
        )
    except SshOptionError as error:
        raise LiveSourceError(str(error)) from None


def probe_live(
    cfg: StackConfig,
    plans: Sequence[ServicePlan],
    private_keys: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> LiveView:
    """The live view of the hosts whose private key is given (``d601``, ``master``): one read-only
    round trip each. Raises :class:`LiveSourceError` for unusable SSH options; every other failure
    makes the hosts unreachable in the view (the program then changes nothing on them)."""
    env = os.environ if environ is None else environ
    hosts = sorted(private_keys)
    directory = Path(tempfile.mkdtemp(prefix="unidesk-cd-live-"))
    try:
        directory.chmod(0o700)
        configs = host_configs(cfg)
        settings = {
            name: ssh_settings(directory, name, configs[name], key, env)
            for name, key in sorted(private_keys.items())
            if name in configs
        }
        try:
            return collect_live(cfg, plans, settings)
        except Exception as error:  # the probe's failure is a fact about the hosts, never a crash
            return unreachable_view(cfg, hosts, f"the live probe failed: {type(error).__name__}: {error}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
