"""What ``python -m artifact_cd status|health`` does before it imports anything else: start the SSH
connection(s) the query will need (issue 14; the rules are in ``artifact_cd.sshlink``'s doc).

Measured on the rig, once the handshake ran alongside the imports, the handshake itself was the
long pole: the CLI had validated its config 0.14-0.20 s after ssh started while ``ssh true`` takes
about 0.2 s. So what still counts is how soon ssh starts. This module imports only what Python's
start-up has already loaded plus ``subprocess`` (about 5 ms), where PyYAML, ``dataclasses``,
``argparse``, ``pathlib`` and ``tempfile`` cost about 45 ms before the first byte went out. The
stack file is read by a narrow line reader (:func:`early_hosts`) instead of PyYAML: it knows the
block style ``pulumi config set`` writes and gives up (no early connection, the normal path) on
anything else. Nothing here decides what is run on a host: the CLI validates the config as always
and uses an early connection only when its own command line equals the early one.

Also the single home of what both paths share: the OpenSSH argv (:func:`ssh_command`), the pinned
host key's options and private known_hosts file, and the checks of extra SSH options.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple

SSH_OPTIONS_ENV = "ARTIFACT_CD_SSH_OPTIONS"
SSH_KEY_ENV = "ARTIFACT_CD_SSH_KEY"
HOST_KEY_ALIAS = "unidesk-pinned-host"  # the known_hosts name of a pinned key (HostKeyAlias)
EARLY_VERBS = ("status", "health")
EARLY_REMOTE_COMMAND = "bash -s"
# A script's second line (scripts.script_text): `bash -s` reads a pipe one byte per read(); `cat`
# reads the rest of the text at once and `eval` runs it with bash -s's own arguments.
STDIN_READER = 'eval "$(cat)"'
PROJECT = "unidesk-artifact-cd"  # config.PROJECT (a unit test keeps them equal)
DEFAULT_USER = "ubuntu"  # config.HostConfig's defaults (a unit test keeps them equal)
DEFAULT_PORT = 22
DEFAULT_TIMEOUT = 120.0  # cli.DEFAULT_SSH_TIMEOUT

OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(=| )\S.*")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Deliberately narrower than config.py's validators: a value outside these only skips the early start.
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEY_RE = re.compile(r"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}")
_STACK_RE = re.compile(r"[a-z]{1,16}")
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
# a `key: value` line of block-style YAML as pulumi writes it (the value unquoted or single-quoted)
_LINE_RE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z0-9_.:-]+):(?: (?P<value>.*))?")


class OptionError(ValueError):
    """An extra OpenSSH option or key file that cannot be used (a usage error, exit 2)."""


def ssh_options(options: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """``ARTIFACT_CD_SSH_OPTIONS`` (shell-quoted words) then ``options``, each ``Key=Value``."""
    words = list(options)
    env_words = environ.get(SSH_OPTIONS_ENV, "")
    if env_words.strip():
        try:
            words = shlex.split(env_words) + words
        except ValueError as error:
            raise OptionError(f"{SSH_OPTIONS_ENV} is not valid shell-quoted words: {error}") from None
    for word in words:
        if CONTROL_RE.search(word) or not OPTION_RE.fullmatch(word):
            raise OptionError(f"SSH option {word!r} is not of the form Key=Value")
    return tuple(words)


def ssh_key_file(key_file: str | None, environ: Mapping[str, str]) -> str | None:
    """``--ssh-key``, else ``ARTIFACT_CD_SSH_KEY``; it must be a file."""
    key = key_file if key_file is not None else environ.get(SSH_KEY_ENV) or None
    if key is not None and not os.path.isfile(key):
        raise OptionError(f"SSH key file {key!r} does not exist")
    return key


def ssh_command(
    user: str, host: str, port: int, remote_command: str, *, key_file: str | None, options: Sequence[str]
) -> list[str]:
    """The OpenSSH argv. ``BatchMode=yes`` comes first so no option can turn prompts back on
    (OpenSSH keeps the first value of an option); the caller's options precede the defaults."""
    argv = ["ssh", "-o", "BatchMode=yes"]
    for option in options:
        argv += ["-o", option]
    argv += ["-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    argv += ["-o", "LogLevel=ERROR"]
    if key_file is not None:
        argv += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(port), "--", f"{user}@{host}", remote_command]
    return argv


def pinned_options(known_hosts: str) -> tuple[str, ...]:
    """The OpenSSH options that trust exactly the key in ``known_hosts`` (see artifact_cd.remote)."""
    return (
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        f"HostKeyAlias={HOST_KEY_ALIAS}",
        "CheckHostIP=no",
    )


class PinnedKnownHosts:
    """A private temporary known_hosts file holding only ``host_key`` (a 0700 directory of its own
    under ``$TMPDIR`` or /tmp, removed on exit). ``with PinnedKnownHosts(key) as path: ...``"""

    def __init__(self, host_key: str) -> None:
        self.host_key = host_key
        self.directory = ""

    def __enter__(self) -> str:
        base = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a 0700 directory of our own, O_EXCL
        for _ in range(100):
            candidate = os.path.join(base, f"unidesk-cd-hostkey-{os.urandom(6).hex()}")
            try:
                os.mkdir(candidate, 0o700)
            except FileExistsError:
                continue
            self.directory = candidate
            break
        else:  # pragma: no cover - 100 collisions of 48 random bits
            raise FileExistsError(f"no private directory could be made in {base}")
        known = os.path.join(self.directory, "known_hosts")
        fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{HOST_KEY_ALIAS} {self.host_key}\n")
        return known

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.directory:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, "known_hosts"))
            os.rmdir(self.directory)
            self.directory = ""


# --------------------------------------------------------------------------- the early start


class EarlyHost(NamedTuple):
    host: str
    user: str
    port: int
    host_key: str | None


class EarlyArgs(NamedTuple):
    verb: str
    stack: str
    project_dir: str | None
    ssh_key: str | None
    ssh_options: tuple[str, ...]
    timeout: float
    services: bool


class Spawned(NamedTuple):
    """One connection started here: what its command line depends on (``sshlink.link_key``), the
    ssh process (``bash -s`` waiting on stdin), when it started, the pinned key's file (or None)."""

    key: tuple[Any, ...]
    proc: subprocess.Popen[str]
    started: float
    pinned: PinnedKnownHosts | None


_VALUED = {"--project-dir", "--stack", "--ssh-key", "--ssh-option", "--timeout"}
_IGNORED_VALUED = {"--integrity-budget-seconds", "--integrity-budget-bytes"}  # health --integrity's
_FLAGS = {"--json", "--integrity", "--services"}


class _Scanned(NamedTuple):
    values: dict[str, str]
    options: list[str]
    words: list[str]
    services: bool


def _scan(argv: Sequence[str]) -> _Scanned | None:
    """The command line as the status/health parser would read it, or None for anything else."""
    values: dict[str, str] = {}
    options: list[str] = []
    words: list[str] = []
    services = False
    i = 0
    while i < len(argv):
        word = argv[i]
        name, eq, inline = word.partition("=")
        if word in ("-h", "--help") or word == "--":
            return None
        if name in _VALUED or name in _IGNORED_VALUED:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if name == "--ssh-option":
                options.append(value)
            elif name in values:
                return None
            elif name in _VALUED:
                values[name] = value
        elif word in _FLAGS:
            services = services or word == "--services"
        elif word.startswith("-"):
            return None  # an option the early reader does not know (or an abbreviation): no early start
        else:
            words.append(word)
        i += 1
    return _Scanned(values, options, words, services)


def early_args(argv: Sequence[str]) -> EarlyArgs | None:
    """The few options the early start needs, or None for anything it does not read the same way
    as the CLI's parser would (then there is no early start, never a different one)."""
    scanned = _scan(argv)
    if scanned is None:
        return None
    values, words, services = scanned.values, scanned.words, scanned.services
    if len(words) != 1 or words[0] not in EARLY_VERBS or (services and words[0] != "status"):
        return None
    stack = values.get("--stack", "")
    if not _STACK_RE.fullmatch(stack) or values.get("--project-dir") == "":
        return None  # (an empty --project-dir is the working directory to the CLI's parser)
    try:
        timeout = float(values["--timeout"]) if "--timeout" in values else DEFAULT_TIMEOUT
    except ValueError:
        return None
    return EarlyArgs(
        verb=words[0],
        stack=stack,
        project_dir=values.get("--project-dir"),
        ssh_key=values.get("--ssh-key"),
        ssh_options=tuple(scanned.options),
        timeout=timeout,
        services=services,
    )


# plain scalars PyYAML resolves to something other than a string (bool, null, int, float)
_NOT_A_STRING_RE = re.compile(
    r"(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~)"
    r"|[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"  # a date (a timestamp's other forms hold a ':' or a space)
)


def _scalar(text: str | None) -> tuple[str, bool] | None:
    """(value, whether PyYAML reads it as a string) of a plain or single-quoted scalar as pulumi
    writes one, else None (anything else: give up)."""
    if text is None:
        return None
    if len(text) >= 2 and text[0] == text[-1] == "'" and "'" not in text[1:-1]:
        return text[1:-1], True
    if text[:1] in ("'", '"', "&", "*", "!", "|", ">", "{", "[", "%", "@", "`") or " #" in text:
        return None
    return text, not _NOT_A_STRING_RE.fullmatch(text)


class _Blocks(NamedTuple):
    hosts: list[tuple[int, str, str | None]]  # (indent, key, value) of each hosts-block line
    has_services: bool


def _blocks(text: str) -> _Blocks | None:
    """The lines of ``config: <project>:hosts:`` and whether ``<project>:services`` names any
    service; None when a line there is not one this reader knows."""
    hosts: list[tuple[int, str, str | None]] = []
    has_services = False
    section = project_key = ""  # the top-level key; inside config: the project's key
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line = _LINE_RE.fullmatch(raw.rstrip())
        in_hosts = section == "config" and project_key == f"{PROJECT}:hosts"
        if line is None:
            if in_hosts:
                return None  # a hosts line this reader does not know: the normal path reads it
            continue
        indent, key, value = len(line["indent"]), line["key"], line["value"]
        if indent == 0:
            section, project_key = key, ""
        elif section == "config" and indent == 2:
            project_key = key
            if key in (f"{PROJECT}:services", f"{PROJECT}:hosts") and value not in ("{}", "", None):
                return None  # a flow-style or scalar value: leave it to the normal path
        elif in_hosts:
            hosts.append((indent, key, value))
        elif section == "config" and project_key == f"{PROJECT}:services":
            has_services = True
    return _Blocks(hosts, has_services)


def early_hosts(text: str, *, live_view: bool) -> list[EarlyHost]:
    """The hosts to connect to early, from the text of ``Pulumi.<stack>.yaml``: D601; for the live
    view also the master when the stack names any service. Only block-style YAML of the shape
    ``pulumi config set`` writes is read; any other line inside the hosts block means no early host."""
    blocks = _blocks(text)
    if blocks is None:
        return []
    hosts: dict[str, dict[str, tuple[str, bool]]] = {}
    host = ""
    for indent, key, value in blocks.hosts:
        if indent == 4 and value is None and key not in hosts:
            host = key
            hosts[host] = {}
            continue
        scalar = _scalar(value)
        if indent != 6 or not host or scalar is None or key in hosts[host]:
            return []
        hosts[host][key] = scalar
    names = ["d601", "master"] if live_view and blocks.has_services else ["d601"]
    found = [_early_host(hosts.get(name)) for name in names]
    return [h for h in found if h is not None]


def _early_host(entry: Mapping[str, tuple[str, bool]] | None) -> EarlyHost | None:
    """A host's connection values when each passes the narrow check: host, user and hostKey strings
    (as YAML reads them), the port a plain integer."""
    if entry is None:
        return None
    strings = {k: v for k, (v, is_string) in entry.items() if is_string}
    if set(entry) - set(strings) - {"port"}:
        return None  # a host, user or hostKey YAML reads as a bool, number or null
    port, port_is_string = entry.get("port", (str(DEFAULT_PORT), False))
    host, user, key = strings.get("host", ""), strings.get("user", DEFAULT_USER), strings.get("hostKey")
    if port_is_string or not _PORT_RE.fullmatch(port):
        return None
    if not (_HOST_RE.fullmatch(host) and _USER_RE.fullmatch(user)):
        return None
    if int(port) > 65535 or (key is not None and not _KEY_RE.fullmatch(key)):
        return None
    return EarlyHost(host=host, user=user, port=int(port), host_key=key)


def _spawn_one(target: EarlyHost, key_file: str | None, options: tuple[str, ...]) -> Spawned | None:
    pinned = None
    effective = options
    if target.host_key is not None:
        pinned = PinnedKnownHosts(target.host_key)
        effective = (*pinned_options(pinned.__enter__()), *options)
    started = time.monotonic()
    argv = ssh_command(
        target.user, target.host, target.port, EARLY_REMOTE_COMMAND, key_file=key_file, options=effective
    )
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError:  # no ssh here: the normal path reports ssh-missing
        if pinned is not None:
            pinned.__exit__(None, None, None)
        return None
    key = (target.user, target.host, target.port, target.host_key, key_file, options)
    return Spawned(key, proc, started, pinned)


def spawn(argv: Sequence[str], environ: Mapping[str, str], default_project_dir: str) -> list[Spawned]:
    """Start the SSH connections of ``status``/``health`` (D601) or ``status --services`` (D601 and
    the master) from the raw stack file; none when anything is unusual (the normal path then runs
    as before). ``sshlink.Preconnected`` takes them over."""
    if not any(verb in argv for verb in EARLY_VERBS):
        return []
    args = early_args(argv)
    if args is None:
        return []
    project_dir = args.project_dir or default_project_dir
    try:
        with open(os.path.join(project_dir, f"Pulumi.{args.stack}.yaml"), encoding="utf-8") as handle:
            targets = early_hosts(handle.read(), live_view=args.services)
        options = ssh_options(args.ssh_options, environ)
        key_file = ssh_key_file(args.ssh_key, environ)
    except (OSError, ValueError):
        return []
    if not targets or not args.timeout > 0:
        return []
    return [s for s in (_spawn_one(t, key_file, options) for t in targets) if s is not None]
