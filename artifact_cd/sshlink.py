"""The OpenSSH command line of the CLI's own connections, and the early start of ``status``/``health``.

Standard library only (plus PyYAML, read only when connecting early): ``python -m artifact_cd
status|health`` imports this before anything heavy, so the SSH handshake to D601 (and, for
``status --services``, to the master when the stack names a service) runs in its own process while
Python imports pydantic, validates the stack config and builds the probe's arguments (issue 14: the
CLI's start-up and the handshake cost about the same, so overlapping them takes one of the two off
the wall time of a query).

How the early start stays exactly as safe as the normal path:

- It opens ``ssh ... user@host 'bash -s'`` for values read from ``Pulumi.<stack>.yaml`` only when
  each passes a conservative check (host name or IP, POSIX user, port, an SSH public key); with a
  pinned ``hostKey`` the connection trusts only that key, as every other connection does. The
  remote ``bash`` reads its script from stdin, so until the CLI writes one nothing runs on the host.
- The CLI then validates the config as always and computes the SSH command line it would run. The
  early connection is used only when that line equals the early one (same user, host, port, pinned
  key, key file, options); otherwise, and on any config error, it is closed with nothing written:
  the remote ``bash`` reads end-of-file and exits. The probe's arguments travel as the first line of
  stdin (``set -- <quoted args>``) instead of on the remote command line, then ``eval "$(cat)"``
  runs the rest, the same script text (read in one go rather than one byte per read).
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

SSH_OPTIONS_ENV = "ARTIFACT_CD_SSH_OPTIONS"
SSH_KEY_ENV = "ARTIFACT_CD_SSH_KEY"
HOST_KEY_ALIAS = "unidesk-pinned-host"  # the known_hosts name of a pinned key (HostKeyAlias)
EARLY_VERBS = ("status", "health")
EARLY_REMOTE_COMMAND = "bash -s"
PROJECT = "unidesk-artifact-cd"  # config.PROJECT (a unit test keeps them equal)
DEFAULT_USER = "ubuntu"  # config.HostConfig's defaults (a unit test keeps them equal)
DEFAULT_PORT = 22
DEFAULT_TIMEOUT = 120.0  # cli.DEFAULT_SSH_TIMEOUT

_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(=| )\S.*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Deliberately narrower than config.py's validators: a value outside these only skips the early start.
_EARLY_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_EARLY_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_EARLY_KEY_RE = re.compile(r"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}")
_EARLY_STACK_RE = re.compile(r"[a-z]{1,16}")


class SshOptionError(ValueError):
    """An extra OpenSSH option or key file that cannot be used (a usage error, exit 2)."""


class SshTarget(Protocol):
    """What the command line needs of a host (config.HostConfig has these)."""

    @property
    def host(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def host_key(self) -> str | None: ...


@dataclass(frozen=True)
class SshSettings:
    """How to reach a host besides what the stack config says. ``preconnected``: the connection
    ``python -m artifact_cd status|health`` opened before the config was validated (used once, by
    the first round trip whose command line it matches)."""

    key_file: str | None = None
    options: tuple[str, ...] = ()
    timeout: float = 120.0
    preconnected: Preconnected | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        key_file: str | None,
        options: Sequence[str],
        environ: Mapping[str, str],
        timeout: float = 120.0,
    ) -> SshSettings:
        """Merge command-line values with ``ARTIFACT_CD_SSH_*``; validate them (SshOptionError)."""
        words = list(options)
        env_words = environ.get(SSH_OPTIONS_ENV, "")
        if env_words.strip():
            try:
                words = shlex.split(env_words) + words
            except ValueError as error:
                raise SshOptionError(f"{SSH_OPTIONS_ENV} is not valid shell-quoted words: {error}") from None
        for word in words:
            if _CONTROL_RE.search(word) or not _OPTION_RE.fullmatch(word):
                raise SshOptionError(f"SSH option {word!r} is not of the form Key=Value")
        key = key_file if key_file is not None else environ.get(SSH_KEY_ENV) or None
        if key is not None and not Path(key).is_file():
            raise SshOptionError(f"SSH key file {key!r} does not exist")
        if not timeout > 0:
            raise SshOptionError("the SSH timeout must be positive")
        return cls(key_file=key, options=tuple(words), timeout=timeout)


def pinned_options(known_hosts: str) -> tuple[str, ...]:
    """The OpenSSH options that trust exactly the key in ``known_hosts`` (see artifact_cd.remote)."""
    return (
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        f"HostKeyAlias={HOST_KEY_ALIAS}",
        "CheckHostIP=no",
    )


@contextmanager
def pinned_known_hosts(host_key: str) -> Iterator[str]:
    """A private temporary known_hosts file holding only ``host_key`` (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="unidesk-cd-hostkey-") as directory:
        known = Path(directory) / "known_hosts"
        fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{HOST_KEY_ALIAS} {host_key}\n")
        yield str(known)


def ssh_argv(host: SshTarget, remote_command: str, settings: SshSettings) -> list[str]:
    """The OpenSSH argv. ``BatchMode=yes`` comes first so no option can turn prompts back on
    (OpenSSH keeps the first value of an option); the caller's options precede the defaults."""
    argv = ["ssh", "-o", "BatchMode=yes"]
    for option in settings.options:
        argv += ["-o", option]
    argv += ["-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    argv += ["-o", "LogLevel=ERROR"]
    if settings.key_file is not None:
        argv += ["-i", settings.key_file, "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(host.port), "--", f"{host.user}@{host.host}", remote_command]
    return argv


# --------------------------------------------------------------------------- the early start


@dataclass(frozen=True)
class _EarlyHost:
    host: str
    user: str
    port: int
    host_key: str | None


def link_key(host: SshTarget, settings: SshSettings) -> tuple[Any, ...]:
    """Everything the command line of a connection depends on (the pinned known_hosts file's
    temporary path aside): two connections with equal keys are the same connection."""
    return (host.user, host.host, host.port, host.host_key, settings.key_file, settings.options)


class Connection:
    """One SSH connection started before the config was validated; see the module doc."""

    def __init__(
        self, key: tuple[Any, ...], proc: subprocess.Popen[str], started: float, cleanup: Any
    ) -> None:
        self.key = key
        self.proc = proc
        self.started = started
        self._cleanup = cleanup  # the pinned known_hosts' context (or None)
        self.state = "open"  # open -> used | closed

    def close(self) -> None:
        """Close an unused connection (the remote ``bash`` reads end-of-file, runs nothing) and
        remove the pinned known_hosts file. Idempotent."""
        if self.state == "open":
            self.state = "closed"
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.state == "used" and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup.__exit__(None, None, None)


class Preconnected:
    """The early connections of one CLI run (D601's; with ``status --services`` the master's too).
    Each is taken once, by the first round trip whose command line it is; the rest are closed
    unused (nothing sent) by :meth:`close`. Thread-safe: the live view probes hosts concurrently."""

    def __init__(self, connections: Sequence[Connection]) -> None:
        self.connections = list(connections)
        self._lock = threading.Lock()

    def take(self, host: SshTarget, settings: SshSettings) -> Connection | None:
        """The open connection ``host``/``settings`` asks for (marked used), else None."""
        key = link_key(host, settings)
        with self._lock:
            for conn in self.connections:
                if conn.state == "open" and conn.key == key and conn.proc.poll() is None:
                    conn.state = "used"
                    return conn
        return None

    def close(self) -> None:
        """Close every connection not taken (and clean up the used ones). Idempotent."""
        for conn in self.connections:
            conn.close()


EARLY_READER = 'eval "$(cat)"'  # bash -s reads a pipe byte by byte; cat reads the script at once


def script_with_args(args: Sequence[str], script: str) -> str:
    """The stdin of an early connection: the arguments as the first line, then a line that reads the
    rest in one go (``cat``, not ``bash -s``'s one read per byte) and runs it, then the script."""
    return "set -- " + " ".join(shlex.quote(a) for a in args) + "\n" + EARLY_READER + "\n" + script


def _early_args(argv: Sequence[str]) -> argparse.Namespace | None:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--project-dir")
    parser.add_argument("verb")
    parser.add_argument("--stack")
    parser.add_argument("--ssh-key")
    parser.add_argument("--ssh-option", action="append", default=[])
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--services", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    try:
        args, _ = parser.parse_known_args(list(argv))
    except (SystemExit, ValueError):  # argparse exits on a usage error: leave it to the real parser
        return None
    return args


def _early_host(entry: object) -> _EarlyHost | None:
    """A host's connection values (``hosts.<h>`` as written) when each passes the narrow check."""
    if not isinstance(entry, dict):
        return None
    host, user = entry.get("host"), entry.get("user", DEFAULT_USER)
    port, key = entry.get("port", DEFAULT_PORT), entry.get("hostKey")
    if not (isinstance(host, str) and _EARLY_HOST_RE.fullmatch(host)):
        return None
    if not (isinstance(user, str) and _EARLY_USER_RE.fullmatch(user)):
        return None
    if not (type(port) is int and 0 < port < 65536):
        return None
    if key is not None and not (isinstance(key, str) and _EARLY_KEY_RE.fullmatch(key)):
        return None
    return _EarlyHost(host=host, user=user, port=port, host_key=key)


def _early_hosts(project_dir: Path, stack: str, *, live_view: bool) -> list[_EarlyHost]:
    """The hosts to connect to early, from ``Pulumi.<stack>.yaml``: D601; for the live view also
    the master when the stack names any service (a master that none of them uses gets a connection
    that is closed unused)."""
    import yaml  # the real path reads the file with it too

    try:
        document = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return []
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return []
    hosts = config.get(f"{PROJECT}:hosts")
    if not isinstance(hosts, dict):
        return []
    names = ["d601"]
    if live_view and config.get(f"{PROJECT}:services"):
        names.append("master")
    found = [_early_host(hosts.get(name)) for name in names]
    return [h for h in found if h is not None]


def _connect(target: _EarlyHost, settings: SshSettings) -> Connection | None:
    cleanup = None
    effective = settings
    if target.host_key is not None:
        cleanup = pinned_known_hosts(target.host_key)
        known = cleanup.__enter__()
        effective = replace(settings, options=(*pinned_options(known), *settings.options))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            ssh_argv(target, EARLY_REMOTE_COMMAND, effective),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError:  # no ssh here: the normal path reports ssh-missing
        if cleanup is not None:
            cleanup.__exit__(None, None, None)
        return None
    return Connection(link_key(target, settings), proc, started, cleanup)


def preconnect(
    argv: Sequence[str], environ: Mapping[str, str], default_project_dir: Path
) -> Preconnected | None:
    """Open the SSH connections of ``status``/``health`` (D601) or ``status --services`` (D601 and
    the master) from the raw stack file (not with ``--help``), or None when anything is unusual
    (the normal path then runs as before)."""
    if not any(verb in argv for verb in EARLY_VERBS):
        return None
    args = _early_args(argv)
    if args is None or args.verb not in EARLY_VERBS or args.help:
        return None
    if args.services and args.verb != "status":
        return None
    if not (isinstance(args.stack, str) and _EARLY_STACK_RE.fullmatch(args.stack)):
        return None
    project_dir = Path(args.project_dir) if args.project_dir else default_project_dir
    targets = _early_hosts(project_dir, args.stack, live_view=args.services)
    if not targets:
        return None
    try:
        settings = SshSettings.build(
            key_file=args.ssh_key,
            options=args.ssh_option,
            environ=environ,
            timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        )
    except SshOptionError:
        return None
    connections = [c for c in (_connect(t, settings) for t in targets) if c is not None]
    if not connections:
        return None
    early = Preconnected(connections)
    atexit.register(early.close)
    return early
