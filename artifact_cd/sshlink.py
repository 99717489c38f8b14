"""The OpenSSH command line of the CLI's own connections, and the early start of ``status``/``health``.

Standard library only. ``python -m artifact_cd status|health`` starts the SSH handshake to D601
(and, for ``status --services``, to the master when the stack names a service) before anything
heavy is imported (artifact_cd.early: the start itself, with next to no imports), so it runs in its
own process while Python imports pydantic, validates the stack config and builds the probe's
arguments (issue 14: the CLI's start-up and the handshake cost about the same, so overlapping them
takes one of the two off the wall time of a query). This module then takes those connections over
(:meth:`Preconnected.adopt`).

How the early start stays exactly as safe as the normal path:

- It opens ``ssh ... user@host 'bash -s'`` for values read from ``Pulumi.<stack>.yaml`` (by a
  narrow line reader of the block style pulumi writes, not PyYAML) only when each passes a
  conservative check (host name or IP, POSIX user, port, an SSH public key); with a
  pinned ``hostKey`` the connection trusts only that key, as every other connection does. The
  remote ``bash`` reads its script from stdin, so until the CLI writes one nothing runs on the host.
- The CLI then validates the config as always and computes the SSH command line it would run. The
  early connection is used only when that line equals the early one (same user, host, port, pinned
  key, key file, options); otherwise, and on any config error, it is closed with nothing written:
  the remote ``bash`` reads end-of-file and exits. The probe's arguments travel as the first line of
  stdin (``set -- <quoted args>``) instead of on the remote command line, then the same script
  text (whose ``eval "$(cat)"`` line reads the rest in one go, as on every step).
"""

from __future__ import annotations

import atexit
import shlex
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .early import (
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    DEFAULT_USER,
    EARLY_REMOTE_COMMAND,
    EARLY_VERBS,
    HOST_KEY_ALIAS,
    PROJECT,
    SSH_KEY_ENV,
    SSH_OPTIONS_ENV,
    OptionError,
    PinnedKnownHosts,
    Spawned,
    pinned_options,
    spawn,
    ssh_command,
    ssh_key_file,
    ssh_options,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_USER",
    "EARLY_REMOTE_COMMAND",
    "EARLY_VERBS",
    "HOST_KEY_ALIAS",
    "PROJECT",
    "SSH_KEY_ENV",
    "SSH_OPTIONS_ENV",
    "Connection",
    "Preconnected",
    "SshOptionError",
    "SshSettings",
    "SshTarget",
    "link_key",
    "pinned_known_hosts",
    "pinned_options",
    "preconnect",
    "script_with_args",
    "ssh_argv",
]

SshOptionError = OptionError  # an extra OpenSSH option or key file that cannot be used (exit 2)


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
        words = ssh_options(options, environ)
        key = ssh_key_file(key_file, environ)
        if not timeout > 0:
            raise SshOptionError("the SSH timeout must be positive")
        return cls(key_file=key, options=words, timeout=timeout)


@contextmanager
def pinned_known_hosts(host_key: str) -> Iterator[str]:
    """A private temporary known_hosts file holding only ``host_key`` (removed afterwards)."""
    with PinnedKnownHosts(host_key) as known:
        yield known


def ssh_argv(host: SshTarget, remote_command: str, settings: SshSettings) -> list[str]:
    """The OpenSSH argv (artifact_cd.early.ssh_command, which the early start uses too)."""
    return ssh_command(
        host.user, host.host, host.port, remote_command, key_file=settings.key_file, options=settings.options
    )


# --------------------------------------------------------------------------- the early start


def link_key(host: SshTarget, settings: SshSettings) -> tuple[Any, ...]:
    """Everything the command line of a connection depends on (the pinned known_hosts file's
    temporary path aside): two connections with equal keys are the same connection. The early
    start (artifact_cd.early.spawn) computes the same tuple from the raw file."""
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

    @classmethod
    def adopt(cls, spawned: Sequence[Spawned]) -> Preconnected | None:
        """The connections artifact_cd.early started (None when there are none), closed at exit at
        the latest."""
        if not spawned:
            return None
        early = cls([Connection(s.key, s.proc, s.started, s.pinned) for s in spawned])
        atexit.register(early.close)
        return early

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


def script_with_args(args: Sequence[str], script: str) -> str:
    """The stdin of an early connection: the arguments as the first line, then the script (whose
    ``eval "$(cat)"`` line, artifact_cd.early.STDIN_READER, reads the rest in one go)."""
    return "set -- " + " ".join(shlex.quote(a) for a in args) + "\n" + script


def preconnect(
    argv: Sequence[str], environ: Mapping[str, str], default_project_dir: Path
) -> Preconnected | None:
    """The early connections of ``argv`` (artifact_cd.early.spawn) as :class:`Preconnected`, or
    None when there are none (the normal path then runs as before)."""
    return Preconnected.adopt(spawn(argv, environ, str(default_project_dir)))
