"""artifact_cd.sshlink: the early SSH connection of ``status``/``health`` (issue 14) and the OpenSSH
command line every CLI connection shares. A fake ``ssh`` on PATH records its argv and stdin."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import cli, config, sshlink
from artifact_cd.config import HostConfig

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _project(tmp_path: Path, d601: dict[str, Any], services: dict[str, Any] | None = None) -> Path:
    hosts = {"d601": d601, "master": {"host": "m.test"}}
    doc = {"config": {"unidesk-artifact-cd:env": "prod", "unidesk-artifact-cd:hosts": hosts}}
    if services is not None:
        doc["config"]["unidesk-artifact-cd:services"] = services
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ssh recording argv (one per line) and stdin into ``record.argv`` / ``record.stdin``, and
    per target into ``record.<user@host>.argv`` / ``.stdin``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "record"
    ssh = bindir / "ssh"
    ssh.write_text(
        f'#!/bin/bash\nt=${{@: -2:1}}\nprintf "%s\\n" "$@" | tee {record}.argv > "{record}.$t.argv"\n'
        f'tee {record}.stdin > "{record}.$t.stdin"\necho done\n'
    )
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return record


def _early(tmp_path: Path, argv: list[str], **d601: Any) -> sshlink.Preconnected | None:
    project = _project(tmp_path, {"host": "d601.test", "user": "root", "port": 2222, **d601})
    return sshlink.preconnect(["--project-dir", str(project), *argv], {}, Path("/nonexistent"))


def test_defaults_are_the_configs() -> None:
    """The early reader's defaults equal the config model's: otherwise every early connection would
    be closed unused (correct, but the optimization silently lost)."""
    fields = HostConfig.model_fields
    assert sshlink.PROJECT == config.PROJECT
    assert (fields["user"].default, fields["port"].default) == (sshlink.DEFAULT_USER, sshlink.DEFAULT_PORT)
    assert sshlink.DEFAULT_TIMEOUT == cli.DEFAULT_SSH_TIMEOUT


@pytest.mark.parametrize(
    ("argv", "d601"),
    [
        (["plan", "--stack", "prod"], {}),
        (["health", "--stack", "prod", "--services"], {}),
        (["status", "--stack", "prod", "--help"], {}),
        (["status", "--stack", "Prod"], {}),
        (["status", "--stack", "staging"], {}),  # no such file
        (["status", "--stack", "prod"], {"host": "-oProxyCommand=touch x"}),
        (["status", "--stack", "prod"], {"host": "d601.test;id"}),
        (["status", "--stack", "prod"], {"user": "Root"}),
        (["status", "--stack", "prod"], {"port": "2222"}),
        (["status", "--stack", "prod"], {"port": 0}),
        (["status", "--stack", "prod"], {"hostKey": "ssh-ed25519 AAAA x"}),
        (["status", "--stack", "prod", "--ssh-option", "-oProxyCommand=x"], {}),
        (["status", "--stack", "prod", "--ssh-key", "/nonexistent/key"], {}),
    ],
)
def test_no_early_connection_for_anything_unusual(
    tmp_path: Path, fake_ssh: Path, argv: list[str], d601: dict[str, Any]
) -> None:
    assert _early(tmp_path, argv, **d601) is None
    assert not fake_ssh.with_suffix(".argv").exists()  # ssh never started


def test_early_connection_sends_nothing_until_taken(tmp_path: Path, fake_ssh: Path) -> None:
    early = _early(tmp_path, ["health", "--stack", "prod", "--ssh-option", "ConnectionAttempts=2"])
    assert early is not None
    early.close()
    argv = fake_ssh.with_suffix(".argv").read_text().splitlines()
    assert argv[-3:] == ["--", "root@d601.test", "bash -s"] and "ConnectionAttempts=2" in argv
    assert fake_ssh.with_suffix(".stdin").read_bytes() == b""  # closed unused: nothing ran
    (conn,) = early.connections
    assert conn.state == "closed" and conn.proc.returncode is not None  # ended, not left running


def test_the_early_stdin_runs_the_script_with_its_args(tmp_path: Path) -> None:
    """What the remote `bash -s` makes of an early connection's stdin: the script, run with exactly
    the arguments (quoting kept), its exit status and its own stdin handling (`exec </dev/null`)."""
    script = 'main() { exec </dev/null; printf "[%s]" "$@"; echo; exit 3; }\nmain "$@"\necho never\n'
    proc = subprocess.run(
        ["bash", "-s"], input=sshlink.script_with_args(["a b", "'q'", "$(id)"], script),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (3, "[a b]['q'][$(id)]\n")


def test_take_only_the_same_connection_once(tmp_path: Path, fake_ssh: Path) -> None:
    early = _early(tmp_path, ["status", "--stack", "prod"])
    assert early is not None
    same = HostConfig(host="d601.test", user="root", port=2222)
    settings = sshlink.SshSettings.build(key_file=None, options=[], environ={})
    conn = early.take(same, settings)
    assert conn is not None and conn.state == "used"
    out, _ = conn.proc.communicate(sshlink.script_with_args(["--a", "b c"], "echo hi\n"))
    assert out == "done\n"
    assert fake_ssh.with_suffix(".stdin").read_text() == "set -- --a 'b c'\necho hi\n"
    assert early.take(same, settings) is None  # used once
    early.close()


@pytest.mark.parametrize(
    "other",
    [
        {"host": "d601.other"},
        {"user": "ubuntu"},
        {"port": 22},
        {"host_key": KEY},
    ],
)
def test_another_connection_never_takes_the_early_one(
    tmp_path: Path, fake_ssh: Path, other: dict[str, Any]
) -> None:
    """A round trip whose command line differs in anything gets no early connection; the early one
    is closed at the end with nothing sent."""
    early = _early(tmp_path, ["status", "--stack", "prod"])
    assert early is not None
    host = HostConfig.model_validate({"host": "d601.test", "user": "root", "port": 2222, **other})
    settings = sshlink.SshSettings.build(key_file=None, options=[], environ={})
    assert early.take(host, settings) is None
    options = sshlink.SshSettings.build(key_file=None, options=["Compression=yes"], environ={})
    assert early.take(HostConfig(host="d601.test", user="root", port=2222), options) is None
    early.close()
    assert early.connections[0].state == "closed" and fake_ssh.with_suffix(".stdin").read_bytes() == b""


@pytest.mark.parametrize(
    ("services", "targets"), [({"findjob": {"commit": "a" * 40}}, 2), ({}, 1), (None, 1)]
)
def test_the_live_view_connects_early_to_both_hosts_when_the_stack_has_services(
    tmp_path: Path, fake_ssh: Path, services: dict[str, Any] | None, targets: int
) -> None:
    """`status --services` probes D601 and the master: both connect early (the master only when the
    stack names a service). Each request takes its own host's connection; the master's, not taken
    here, is closed with nothing sent."""
    project = _project(tmp_path, {"host": "d601.test", "user": "root", "port": 2222}, services)
    early = sshlink.preconnect(
        ["--project-dir", str(project), "status", "--services", "--stack", "prod"], {}, Path("/")
    )
    assert early is not None and len(early.connections) == targets
    settings = sshlink.SshSettings.build(key_file=None, options=[], environ={})
    assert early.take(HostConfig(host="m.test"), settings) is (early.connections[1] if targets == 2 else None)
    d601 = early.take(HostConfig(host="d601.test", user="root", port=2222), settings)
    assert d601 is early.connections[0]
    d601.proc.communicate("exit 0\n")
    early.close()
    assert Path(f"{fake_ssh}.root@d601.test.stdin").read_text() == "exit 0\n"
    if targets == 2:  # taken by the master request above, never written to: killed at close (the
        # fake ssh may not have reached its stdin file by then, but never holds anything in it)
        master_stdin = Path(f"{fake_ssh}.ubuntu@m.test.stdin")
        assert not master_stdin.exists() or master_stdin.read_bytes() == b""
    assert all(c.proc.returncode is not None for c in early.connections)


def test_pinned_key_early_trusts_only_that_key_and_cleans_up(tmp_path: Path, fake_ssh: Path) -> None:
    early = _early(tmp_path, ["status", "--stack", "prod"], hostKey=KEY)
    assert early is not None
    early.close()
    argv = fake_ssh.with_suffix(".argv").read_text().splitlines()
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    known = next(o.split("=", 1)[1] for o in options if o.startswith("UserKnownHostsFile="))
    assert options[1 : 1 + len(sshlink.pinned_options(known))] == list(sshlink.pinned_options(known))
    assert not Path(known).exists() and not Path(known).parent.exists()  # removed at close


def test_a_key_from_the_environment_counts(tmp_path: Path, fake_ssh: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    project = _project(tmp_path, {"host": "d601.test", "user": "root", "port": 2222})
    early = sshlink.preconnect(
        ["--project-dir", str(project), "status", "--stack", "prod"],
        {sshlink.SSH_KEY_ENV: str(key)},
        Path("/"),
    )
    assert early is not None
    early.close()
    argv = fake_ssh.with_suffix(".argv").read_text().splitlines()
    assert argv[argv.index("-i") + 1] == str(key)
