"""Pinned SSH host keys (issue 11): ``python -m artifact_cd hostkeys --stack S``.

Read-only. For each host of the stack (D601, the master server) one SSH connection records the key
the host shows into a private temporary known_hosts (``StrictHostKeyChecking=accept-new`` under a
``HostKeyAlias``, so the operator's ProxyCommand and port work as for ``status``). Nothing else is
trusted or written: authentication need not even succeed. Then it prints, per host, the exact line
that pins the key (``pulumi config set --path 'hosts.<h>.hostKey' '<key>'``), or says the pinned
key matches, or that it differs (``host-key-mismatch``: check the host before re-pinning).

Then it checks the hop the tunnel and stream transfers need: the master server can log in to
D601 (``transfer.d601SshTarget``/``d601SshPort``) with its own key, without a prompt, trusting D601's
pinned key when one is set. When it cannot, it names the fix.

The stack-config side (:func:`pin_problems`): the prod stack refuses ``pulumi up`` while a host has
no pinned key; the dev stack and every preview warn (``components/program.py``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from .config import _HOST_KEY_RE, HostConfig, Problem, StackConfig
from .remote import HOST_KEY_MISMATCH, SSH_EXIT_ERROR, SshFailure, classify_ssh_failure, run_ssh
from .sshlink import SshSettings, ssh_argv

SCAN_ALIAS = "unidesk-scanned-host"
D601_ALIAS = "unidesk-d601"
EXIT_OK = 0
EXIT_NOT_OK = 1


def host_configs(cfg: StackConfig) -> dict[str, HostConfig]:
    return {"d601": cfg.hosts.d601, "master": cfg.hosts.master}


def pin_command(name: str, key: str) -> str:
    return f"pulumi config set --path 'hosts.{name}.hostKey' '{key}'"


def pin_problems(cfg: StackConfig, stack: str) -> list[Problem]:
    """One problem per host without a pinned key (prod: ``pulumi up`` refuses; dev: a warning)."""
    return [
        Problem(
            f"hosts.{name}.hostKey",
            "is not set: SSH to this host would accept whatever key it shows"
            + (" (the prod stack refuses pulumi up without it)" if cfg.env == "prod" else ""),
            f"python -m artifact_cd hostkeys --stack {stack} prints the key; check it out of band, then "
            + pin_command(name, "<key>"),
        )
        for name, host in host_configs(cfg).items()
        if host.host_key is None
    ]


# --------------------------------------------------------------------------- reading a host's key


@dataclass(frozen=True)
class Scan:
    key: str | None  # "ssh-ed25519 AAAA..." as the host showed it; None: no key exchange happened
    failure: SshFailure | None  # why the connection failed (an auth failure after the key is fine)


def scan(host: HostConfig, settings: SshSettings) -> Scan:
    """The key ``host`` shows (one connection, ``accept-new`` into a private known_hosts)."""
    with tempfile.TemporaryDirectory(prefix="unidesk-cd-hostkeys-") as directory:
        known = Path(directory) / "known_hosts"
        fd = os.open(known, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        options = (
            f"UserKnownHostsFile={known}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=accept-new",
            f"HostKeyAlias={SCAN_ALIAS}",
            "CheckHostIP=no",
            "UpdateHostKeys=no",
            "HashKnownHosts=no",
            *settings.options,
        )
        argv = ssh_argv(host, "true", replace(settings, options=options))
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=settings.timeout,
                check=False,
            )
        except FileNotFoundError:
            return Scan(
                None, SshFailure("ssh-missing", "the OpenSSH client (ssh) is not installed here", False)
            )
        except subprocess.TimeoutExpired:
            return Scan(None, SshFailure("timeout", f"no answer within {settings.timeout:g} s", True))
        keys = []
        for line in known.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):  # only this scan's alias is in the file
                candidate = f"{parts[1]} {parts[2]}"
                if _HOST_KEY_RE.fullmatch(candidate):
                    keys.append(candidate)
    failure = None
    if proc.returncode == SSH_EXIT_ERROR:
        failure = SshFailure(*classify_ssh_failure(proc.stderr))
    return Scan(keys[0] if keys else None, failure)


def host_entry(name: str, host: HostConfig, result: Scan, stack: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "host": host.host,
        "port": host.port,
        "user": host.user,
        "pinned": host.host_key,
        "shown": result.key,
    }
    if result.key is None:
        failure = result.failure or SshFailure("ssh-failed", "the SSH connection failed", True)
        entry.update(status="unreachable", reason=failure.reason, detail=failure.detail, command=None)
    elif host.host_key is None:
        entry.update(status="unpinned", command=pin_command(name, result.key))
    elif host.host_key == result.key:
        entry.update(status="pinned", command=None)
    else:
        entry.update(
            status=HOST_KEY_MISMATCH,
            detail=(
                f"{name} shows another key than hosts.{name}.hostKey: a reinstalled host, or another "
                "machine answering; check the key out of band before pinning it"
            ),
            command=pin_command(name, result.key),
        )
    if result.key is not None and result.failure is not None and result.failure.reason == "auth-failed":
        entry["authFailed"] = True  # the key was read; logging in is the status/deploy's business
    return entry


# --------------------------------------------------------------------------- master -> D601

# Runs on the master server: log in to D601 as the transfer does (BatchMode, the master's own key),
# trusting D601's pinned key when one is given; prints the ssh exit code, stderr tail to stderr.
_HOP_SCRIPT = r"""set -u
target=$1 port=$2 key=${3-}
opts=(-o BatchMode=yes -o ConnectTimeout=10 -p "$port")
if [[ -n $key ]]; then
  kh=$(mktemp) || exit 90
  trap 'rm -f "$kh"' EXIT
  printf '%s %s\n' "$4" "$key" >"$kh"
  opts+=(-o "UserKnownHostsFile=$kh" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
    -o "HostKeyAlias=$4" -o CheckHostIP=no)
else
  opts+=(-o StrictHostKeyChecking=yes)
fi
command -v ssh >/dev/null 2>&1 || { echo "rc=127"; exit 0; }
rc=0
err=$(ssh "${opts[@]}" -- "$target" true 2>&1 >/dev/null </dev/null) || rc=$?
echo "rc=$rc"
printf '%s\n' "$err" | tail -n 3 >&2
"""

_HOP_FIXES = {
    "auth-failed": (
        "on the master server, as {user}: ssh-keygen -t ed25519 (no passphrase) if ~/.ssh has no key, then "
        "add its .pub line to ~/.ssh/authorized_keys of {target} on D601"
    ),
    "host-key": (
        "on the master server, as {user}: ssh -p {port} {target} true once and compare the key with "
        "hosts.d601.hostKey (or pin D601's key first: it is then the only one trusted)"
    ),
    HOST_KEY_MISMATCH: (
        "D601 shows the master another key than hosts.d601.hostKey: check D601 before anything else"
    ),
}


def master_to_d601(cfg: StackConfig, settings: SshSettings) -> dict[str, Any]:
    """Whether the master server can log in to D601 with its own key (read-only: ``ssh ... true``)."""
    t = cfg.transfer
    doc: dict[str, Any] = {
        "mode": t.mode,
        "target": t.d601_ssh_target,
        "port": t.d601_ssh_port,
        "pinnedKey": cfg.hosts.d601.host_key is not None,
        "neededBy": (
            "tunnel and stream (both ssh from the master server to D601; stream needs no TCP forwarding)"
        ),
    }
    args = [t.d601_ssh_target, str(t.d601_ssh_port), cfg.hosts.d601.host_key or "", D601_ALIAS]
    try:
        result = run_ssh(cfg.hosts.master, "bash -s -- " + shlex.join(args), settings, _HOP_SCRIPT)
    except SshFailure as failure:
        return {
            **doc,
            "ok": False,
            "checked": False,
            "reason": f"master-{failure.reason}",
            "detail": failure.detail,
        }
    rc_line = next((line for line in result.stdout.splitlines() if line.startswith("rc=")), "rc=")
    rc = int(rc_line[3:]) if rc_line[3:].isdigit() else -1
    if rc == 0:
        return {**doc, "ok": True, "checked": True}
    if rc == 127:
        reason, detail = "ssh-missing", "the master server has no ssh client"
    elif rc == SSH_EXIT_ERROR:
        reason, detail, _ = classify_ssh_failure(result.stderr)
        if reason == "host-key" and cfg.hosts.d601.host_key is not None:
            reason, detail = HOST_KEY_MISMATCH, "D601 did not show the master server its pinned key"
    else:
        reason, detail = "remote-command-failed", f"ssh to D601 ran, but `true` exited {rc}"
    fix = _HOP_FIXES.get(
        reason, "make sure the master server can reach D601 over SSH ({target}, port {port})"
    )
    return {
        **doc,
        "ok": False,
        "checked": True,
        "reason": reason,
        "detail": detail,
        "fix": fix.format(user=cfg.hosts.master.user, target=t.d601_ssh_target, port=t.d601_ssh_port),
    }


# --------------------------------------------------------------------------- the verb


def hostkeys_document(cfg: StackConfig, stack: str, settings: SshSettings) -> dict[str, Any]:
    hosts = [host_entry(name, host, scan(host, settings), stack) for name, host in host_configs(cfg).items()]
    hop = master_to_d601(cfg, settings)
    commands = [h["command"] for h in hosts if h["command"]]
    ok = all(h["status"] in ("pinned", "unpinned") for h in hosts) and hop["ok"]
    return {"ok": ok, "stack": stack, "hosts": hosts, "commands": commands, "masterToD601": hop}


def format_text(doc: dict[str, Any]) -> str:
    out = []
    for h in doc["hosts"]:
        where = f"{h['user']}@{h['host']}:{h['port']}"
        match h["status"]:
            case "pinned":
                out.append(f"# {h['name']} ({where}): shows its pinned key")
            case "unpinned":
                out.append(f"# {h['name']} ({where}): not pinned; check this key out of band, then run:")
                out.append(h["command"])
            case "unreachable":
                out.append(f"# {h['name']} ({where}): no key read: {h['reason']}: {h['detail']}")
            case _:
                out.append(f"# {h['name']} ({where}): HOST KEY MISMATCH: {h['detail']}; only after checking:")
                out.append(h["command"])
    hop = doc["masterToD601"]
    if hop["ok"]:
        out.append(
            f"# master -> D601 ({hop['target']}:{hop['port']}): the master server logs in with its key"
        )
    else:
        out.append(
            f"# master -> D601 ({hop['target']}:{hop['port']}): {hop.get('reason')}: {hop.get('detail')}"
        )
        if hop.get("fix"):
            out.append(f"#   fix: {hop['fix']}")
        out.append(f"#   needed by transfer.mode {hop['mode']} ({hop['neededBy']})")
    return "\n".join(out) + "\n"


def cli_hostkeys(cfg: StackConfig, stack: str, settings: SshSettings, *, as_json: bool, out: TextIO) -> int:
    doc = hostkeys_document(cfg, stack, settings)
    if as_json or not out.isatty():
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(format_text(doc))
    return EXIT_OK if doc["ok"] else EXIT_NOT_OK
