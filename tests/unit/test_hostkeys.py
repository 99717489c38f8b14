"""Pinned host keys (issue 11): the CLI's SSH trusts exactly a pinned key; ``hostkeys`` prints the
lines that pin them; the stack side names what is unpinned. The real connections (a wrong key
refused by status, the scan, master -> D601) run on the rig: tests/integration/test_non_root.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from artifact_cd import hostkeys, remote, sshlink
from artifact_cd.config import HostConfig, load_stack

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnitTestKey0000000000000000000000000000"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAnotherKey0000000000000000000000000000"


def test_the_shipped_stacks_pin_nothing_and_each_host_is_named_with_its_fix() -> None:
    for stack in ("dev", "prod"):
        problems = hostkeys.pin_problems(load_stack(ROOT, stack), stack)
        assert [p.key for p in problems] == ["hosts.d601.hostKey", "hosts.master.hostKey"]
        for p in problems:
            assert f"python -m artifact_cd hostkeys --stack {stack}" in p.fix
            assert f"pulumi config set --path '{p.key}' '<key>'" in p.fix
        assert ("refuses pulumi up" in problems[0].message) is (stack == "prod")


def test_a_pinned_key_is_the_only_one_trusted_and_comes_first() -> None:
    host = HostConfig(host="d601.example", port=2222, host_key=KEY)
    operator = sshlink.SshSettings(options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"))
    with remote.host_key_settings(host, operator) as pinned:
        argv = sshlink.ssh_argv(host, "true", pinned)
        known = next(o.split("=", 1)[1] for o in pinned.options if o.startswith("UserKnownHostsFile="))
        assert Path(known).read_text() == f"{sshlink.HOST_KEY_ALIAS} {KEY}\n"
        assert stat.S_IMODE(Path(known).stat().st_mode) == 0o600
    assert not Path(known).exists(), "the temporary known_hosts is removed"
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    # OpenSSH keeps the first value: the pin precedes the operator's looser options
    assert options.index("StrictHostKeyChecking=yes") < options.index("StrictHostKeyChecking=no")
    assert options.index(f"UserKnownHostsFile={known}") < options.index("UserKnownHostsFile=/dev/null")
    assert f"HostKeyAlias={sshlink.HOST_KEY_ALIAS}" in options and "GlobalKnownHostsFile=/dev/null" in options
    unpinned = HostConfig(host="d601.example")
    with remote.host_key_settings(unpinned, operator) as same:
        assert same == operator


@pytest.fixture
def failing_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text("#!/bin/bash\necho 'Host key verification failed.' >&2\nexit 255\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_a_host_key_failure_of_a_pinned_host_is_host_key_mismatch(failing_ssh: None) -> None:
    settings = sshlink.SshSettings(timeout=10)
    with pytest.raises(remote.SshFailure) as pinned:
        remote.run_ssh(HostConfig(host="d601.example", host_key=KEY), "true", settings)
    assert pinned.value.reason == "host-key-mismatch" and pinned.value.retryable is False
    assert KEY in pinned.value.detail and "hostkeys --stack" in pinned.value.detail
    with pytest.raises(remote.SshFailure) as unpinned:
        remote.run_ssh(HostConfig(host="d601.example"), "true", settings)
    assert unpinned.value.reason == "host-key"


def test_hostkeys_entries_say_what_to_run() -> None:
    host = HostConfig(host="d601.example")
    entry = hostkeys.host_entry("d601", host, hostkeys.Scan(KEY, None), "prod")
    assert entry["status"] == "unpinned"
    assert entry["command"] == f"pulumi config set --path 'hosts.d601.hostKey' '{KEY}'"
    pinned = HostConfig(host="d601.example", host_key=KEY)
    assert hostkeys.host_entry("d601", pinned, hostkeys.Scan(KEY, None), "prod")["command"] is None
    changed = hostkeys.host_entry("d601", pinned, hostkeys.Scan(OTHER, None), "prod")
    assert changed["status"] == "host-key-mismatch" and OTHER in changed["command"]
    failure = remote.SshFailure("connection-refused", "nothing accepts SSH connections on that port", True)
    down = hostkeys.host_entry("d601", host, hostkeys.Scan(None, failure), "prod")
    assert (
        down["status"] == "unreachable" and down["command"] is None and down["reason"] == "connection-refused"
    )
    doc = {
        "hosts": [entry, changed, down],
        "masterToD601": {"ok": False, "mode": "tunnel", "target": "d601", "port": 22, "reason": "auth-failed",
                         "detail": "the SSH key was not accepted", "fix": "add the key", "neededBy": "tunnel and stream"},
    }  # fmt: skip
    text = hostkeys.format_text(doc)
    assert (
        entry["command"] in text.splitlines() and "HOST KEY MISMATCH" in text and "fix: add the key" in text
    )
