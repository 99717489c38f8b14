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

The probe sent ahead (:class:`EarlyCache`): after a round trip on an early connection, its exact
stdin (arguments and script text, computed from the validated config) is kept in the user's cache
(``~/.cache/unidesk-artifact-cd/early``, 0700, one 0600 file per set of inputs: the verb and its
command line, the project directory and the bytes of both stack files). The next run with the very
same inputs writes that stdin to the early connection at once, so the read-only probe runs on the
host while Python imports and validates. The answer is used only when the stdin the validated run
computes is byte for byte the one sent; otherwise the early run is killed, its output never read,
and the round trip runs again on a fresh connection. What a cache entry can make a host run is
therefore only a read-only probe that an earlier validated run of the same inputs ran; a cache file
or directory that is not the user's own, or is readable or writable by others, is ignored.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
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
CACHE_DIR_ENV = "ARTIFACT_CD_CACHE_DIR"  # the early-probe cache's directory ("off": no cache)
CACHE_KEEP = 32  # cache files kept (one per set of inputs; the oldest go first)
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
        self.state = "open"  # open -> used | discarded | closed
        self.sent: str | None = None  # the stdin written ahead (send_ahead), else None
        self._runner: threading.Thread | None = None
        self._outcome: tuple[int, str, str] | None = None

    def send_ahead(self, stdin: str) -> None:
        """Write ``stdin`` now (a thread: a script larger than the pipe waits for the handshake)
        and collect the output; :meth:`outcome` hands it over once the stdin is known to be right."""
        self.sent = stdin

        def run() -> None:
            try:
                out, err = self.proc.communicate(stdin)
            except (OSError, ValueError):  # killed or closed under it: never read
                return
            self._outcome = (self.proc.returncode, out, err)

        self._runner = threading.Thread(target=run, name="early-probe", daemon=True)
        self._runner.start()

    def outcome(self, timeout: float) -> tuple[int, str, str] | None:
        """(exit code, stdout, stderr) of the stdin sent ahead, waiting up to ``timeout`` seconds;
        None when it did not end by then (the process is killed)."""
        if self._runner is None:
            raise RuntimeError("nothing was sent ahead on this connection")
        self._runner.join(max(0.0, timeout))
        if self._runner.is_alive():
            self.proc.kill()
            self._runner.join()
            return None
        return self._outcome

    def close(self) -> None:
        """Close an unused connection (the remote ``bash`` reads end-of-file, runs nothing), end a
        run sent ahead that nobody took, and remove the pinned known_hosts file. Idempotent."""
        if self.sent is not None:
            if self.proc.poll() is None and self.state != "used":
                self.proc.kill()  # the answer is not wanted: never read
            if self._runner is not None and self.state != "used":
                self._runner.join()
            if self.state in ("open", "discarded"):
                self.state = "closed"
        elif self.state == "open":
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

    def __init__(self, connections: Sequence[Connection], cache: EarlyCache | None = None) -> None:
        self.connections = list(connections)
        self.cache = cache
        self._lock = threading.Lock()

    def take(self, host: SshTarget, settings: SshSettings) -> Connection | None:
        """The open connection ``host``/``settings`` asks for (marked used), else None; one with a
        stdin sent ahead is never handed out here (see :meth:`claim`)."""
        conn, how = self.claim(host, settings, None)
        return conn if how == "connected" else None

    def claim(
        self, host: SshTarget, settings: SshSettings, stdin: str | None
    ) -> tuple[Connection | None, str]:
        """The connection for a round trip to ``host``/``settings`` that writes ``stdin``, and how:
        ``connected`` (opened early, nothing sent yet: write ``stdin``), ``speculated`` (exactly
        ``stdin`` was sent ahead: take its :meth:`Connection.outcome`), ``discarded`` (something
        else was sent ahead: that run is killed unread; None, run the round trip anew) or ``none``.
        ``stdin`` is kept for the next run's cache."""
        key = link_key(host, settings)
        with self._lock:
            for conn in self.connections:
                if conn.state != "open" or conn.key != key:
                    continue
                if self.cache is not None and stdin is not None:
                    self.cache.note(key, stdin)
                if conn.sent is None and conn.proc.poll() is None:
                    conn.state = "used"
                    return conn, "connected"
                if conn.sent is not None and conn.sent == stdin:
                    conn.state = "used"
                    return conn, "speculated"
                conn.state = "discarded"
                if conn.proc.poll() is None:
                    conn.proc.kill()
                return None, "discarded"
        return None, "none"

    def close(self) -> None:
        """Close every connection not taken (and clean up the used ones), then keep what was sent
        for the next run (:class:`EarlyCache`). Idempotent."""
        for conn in self.connections:
            conn.close()
        if self.cache is not None:
            self.cache.save()


def _cache_root(environ: Mapping[str, str]) -> Path | None:
    configured = environ.get(CACHE_DIR_ENV)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / PROJECT
    home = environ.get("HOME")
    return Path(home) / ".cache" / PROJECT if home and Path(home).is_absolute() else None


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _read_entries(directory: Path, name: str) -> dict[str, str]:
    """A cache file's entries; empty unless the directory and the file are the user's own and
    private (no symlink followed) and the file is what :meth:`EarlyCache.save` writes."""
    try:
        if not _private(os.lstat(directory)):
            return {}
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as handle:
            if not _private(os.fstat(handle.fileno())):
                return {}
            doc = json.load(handle)
    except (OSError, ValueError):
        return {}
    found = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


class EarlyCache:
    """What the last validated run with the same inputs wrote to each early connection (see the
    module doc): ``entries`` maps a connection's :func:`link_key` (as JSON) to that stdin."""

    def __init__(self, directory: Path, name: str, entries: Mapping[str, str]) -> None:
        self.directory = directory
        self.name = name
        self.entries = dict(entries)
        self._loaded = dict(entries)

    @staticmethod
    def _key(key: tuple[Any, ...]) -> str:
        return json.dumps([list(k) if isinstance(k, tuple) else k for k in key])

    @classmethod
    def open(cls, environ: Mapping[str, str], inputs: Sequence[bytes]) -> EarlyCache | None:
        """The cache file of ``inputs`` (read when it is the user's own and private; else empty), or
        None when there is no usable cache directory."""
        root = _cache_root(environ)
        if root is None:
            return None
        directory = root / "early"
        digest = hashlib.sha256()
        for part in inputs:
            digest.update(hashlib.sha256(part).digest())
        name = digest.hexdigest()[:32] + ".json"
        return cls(directory, name, _read_entries(directory, name))

    def lookup(self, key: tuple[Any, ...]) -> str | None:
        return self.entries.get(self._key(key))

    def note(self, key: tuple[Any, ...], stdin: str) -> None:
        self.entries[self._key(key)] = stdin

    def save(self) -> None:
        """Write the entries when they changed (atomically, 0600, in a 0700 directory of the
        user's), keeping the newest CACHE_KEEP files. A cache that cannot be written is skipped."""
        if self.entries == self._loaded:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(os.lstat(self.directory)):
                return
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"version": 1, "entries": self.entries}, out)
            os.replace(temporary, self.directory / self.name)
            self._loaded = dict(self.entries)
            files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in files[CACHE_KEEP:]:
                old.unlink(missing_ok=True)
        except OSError:
            return


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


def _early_hosts(text: str, *, live_view: bool) -> list[_EarlyHost]:
    """The hosts to connect to early, from the text of ``Pulumi.<stack>.yaml``: D601; for the live
    view also the master when the stack names any service (a master that none of them uses gets a
    connection that is closed unused)."""
    import yaml  # the real path reads the file with it too

    try:
        document = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
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


def _cache_inputs(argv: Sequence[str], project_dir: Path, stack_bytes: bytes) -> list[bytes]:
    """What a cache entry is valid for: the command line, the project directory and both stack
    files (the sibling's can refuse this one: issue 12)."""
    siblings = []
    for name in ("Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        try:
            siblings.append((project_dir / name).read_bytes())
        except OSError:
            siblings.append(b"")
    line = json.dumps(list(argv)).encode()
    return [line, str(project_dir.resolve()).encode(), stack_bytes, *siblings]


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
    try:
        stack_bytes = (project_dir / f"Pulumi.{args.stack}.yaml").read_bytes()
        targets = _early_hosts(stack_bytes.decode("utf-8"), live_view=args.services)
    except (OSError, ValueError):
        return None
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
    cache = EarlyCache.open(environ, _cache_inputs(argv, project_dir, stack_bytes))
    if cache is not None:
        for conn in connections:
            ahead = cache.lookup(conn.key)
            if ahead is not None:
                conn.send_ahead(ahead)
    early = Preconnected(connections, cache)
    atexit.register(early.close)
    return early
