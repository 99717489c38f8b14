"""artifact_cd.early: the start of status/health's SSH connections before anything heavy is
imported (issue 14). Its narrow readers must never read a value differently from the CLI's own
parsing: where they cannot tell, they give up (no early start), and where they read, they agree
with PyYAML and argparse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import early

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def reference(text: str, *, live_view: bool) -> list[early.EarlyHost]:
    """What the early start connected to before it had its own reader: PyYAML, then the narrow
    type and value checks on what PyYAML returned."""
    document = yaml.safe_load(text)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return []
    hosts = config.get(f"{early.PROJECT}:hosts")
    if not isinstance(hosts, dict):
        return []
    names = ["d601", "master"] if live_view and config.get(f"{early.PROJECT}:services") else ["d601"]
    found = []
    for name in names:
        entry = hosts.get(name)
        if not isinstance(entry, dict):
            continue
        host, user = entry.get("host"), entry.get("user", early.DEFAULT_USER)
        port, key = entry.get("port", early.DEFAULT_PORT), entry.get("hostKey")
        if not (isinstance(host, str) and early._HOST_RE.fullmatch(host)):
            continue
        if not (isinstance(user, str) and early._USER_RE.fullmatch(user)):
            continue
        if not (type(port) is int and 0 < port < 65536):
            continue
        if key is not None and not (isinstance(key, str) and early._KEY_RE.fullmatch(key)):
            continue
        found.append(early.EarlyHost(host, user, port, key))
    return found


def stack(d601: dict[str, Any], services: dict[str, Any] | None = None) -> str:
    config: dict[str, Any] = {
        f"{early.PROJECT}:env": "prod",
        f"{early.PROJECT}:hosts": {"d601": d601, "master": {"host": "m.test", "port": 2200}},
        f"{early.PROJECT}:registry": {"endpoint": "127.0.0.1:5000"},
    }
    if services is not None:
        config[f"{early.PROJECT}:services"] = services
    return yaml.safe_dump({"config": config}, sort_keys=False)


HOSTS: list[dict[str, Any]] = [
    {"host": "d601.test"},
    {"host": "10.0.0.2", "user": "root", "port": 2222},
    {"host": "d601.test", "user": "ubuntu", "port": 22, "hostKey": KEY},
    {"host": "d601.test", "port": "2222"},  # a string port: YAML says str
    {"host": "d601.test", "port": 0},
    {"host": "d601.test", "port": 70000},
    {"host": "d601.test", "user": "Root"},
    {"host": "d601.test;id"},
    {"host": "-oProxyCommand=x"},
    {"host": "yes"},  # YAML 1.1: a bool
    {"host": "1234"},  # a string that looks like an int: quoted by safe_dump
    {"host": 1234},  # an int
    {"host": "d601.test", "user": "null"},
    {"host": "d601.test", "hostKey": "ssh-ed25519 AAAA x"},
    {"host": "d601.test", "user": None},
    {"host": "d601.test", "port": 22.0},
    {"user": "root"},
]


@pytest.mark.parametrize("d601", HOSTS, ids=[json.dumps(h) for h in HOSTS])
@pytest.mark.parametrize(
    "services", [None, {}, {"findjob": {"commit": "a" * 40}}], ids=["none", "empty", "one"]
)
@pytest.mark.parametrize("live_view", [False, True], ids=["query", "live-view"])
def test_the_line_reader_agrees_with_pyyaml(
    d601: dict[str, Any], services: dict[str, Any] | None, live_view: bool
) -> None:
    text = stack(d601, services)
    assert early.early_hosts(text, live_view=live_view) == reference(text, live_view=live_view), text


PLAIN = [
    "d601.test",
    "0x16",
    "0b11",
    "0o17",
    "022",
    "2_2",
    "22",
    "1.5",
    "1e3",
    "2001-01-01",
    "yes",
    "On",
    "~",
    "null",
]


@pytest.mark.parametrize("value", PLAIN)
@pytest.mark.parametrize("key", ["host", "user", "port"])
def test_a_plain_value_is_read_as_pyyaml_reads_it_or_not_at_all(key: str, value: str) -> None:
    """Unquoted values PyYAML resolves to ints, floats, bools, null or dates: the line reader reads
    each as PyYAML does, or gives up (no early start), never connects where PyYAML would not."""
    d601 = {"host": "d601.test", "user": "root", "port": "2222", key: value}
    text = "config:\n  unidesk-artifact-cd:hosts:\n    d601:\n" + "".join(
        f"      {k}: {v}\n" for k, v in d601.items()
    )
    got = early.early_hosts(text, live_view=False)
    assert got in ([], reference(text, live_view=False)), (text, got)


@pytest.mark.parametrize("name", ["Pulumi.dev.yaml", "Pulumi.prod.yaml"])
def test_the_shipped_stacks_are_read_as_pyyaml_reads_them(name: str) -> None:
    text = (REPO / name).read_text()
    for live_view in (False, True):
        got = early.early_hosts(text, live_view=live_view)
        assert got == reference(text, live_view=live_view) and got, name


@pytest.mark.parametrize(
    "hosts_block",
    [
        "  unidesk-artifact-cd:hosts: {d601: {host: d601.test}}\n",  # flow style
        "  unidesk-artifact-cd:hosts:\n    d601: {host: d601.test}\n",
        '  unidesk-artifact-cd:hosts:\n    d601:\n      host: "d601.test"\n',  # double quotes: escapes
        "  unidesk-artifact-cd:hosts:\n    d601: &h\n      host: d601.test\n",  # an anchor
        "  unidesk-artifact-cd:hosts:\n    d601:\n      host: d601.test # a comment\n",
        "  unidesk-artifact-cd:hosts:\n    d601:\n      host: d601.test\n      host: other.test\n",
        "  unidesk-artifact-cd:hosts:\n    d601:\n        host: d601.test\n",  # another indentation
        "  unidesk-artifact-cd:hosts:\n    d601:\n      host: >-\n        d601.test\n",
        "  unidesk-artifact-cd:hosts:\n    d601:\n    - host: d601.test\n",
        "  unidesk-artifact-cd:hosts:\n    d601:\n\thost: d601.test\n",
    ],
)
def test_anything_else_in_the_hosts_block_means_no_early_start(hosts_block: str) -> None:
    text = "config:\n  unidesk-artifact-cd:env: prod\n" + hosts_block
    assert early.early_hosts(text, live_view=True) == []


def test_other_projects_and_sections_are_not_read() -> None:
    text = (
        "encryptionsalt: v1:abc\nconfig:\n  other:hosts:\n    d601:\n      host: evil.test\n"
        "  unidesk-artifact-cd:hosts:\n    d601:\n      host: d601.test\n"
        "  unidesk-artifact-cd:services:\n    findjob:\n      commit: 'abc'\n"
    )
    assert early.early_hosts(text, live_view=False) == [early.EarlyHost("d601.test", "ubuntu", 22, None)]
    assert early.early_hosts(text, live_view=True) == [early.EarlyHost("d601.test", "ubuntu", 22, None)]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status", "--stack", "prod"], ("status", "prod", None, (), False)),
        (["--project-dir", "/p", "health", "--stack=dev", "--json"], ("health", "dev", "/p", (), False)),
        (
            ["status", "--services", "--stack", "prod", "--ssh-option", "A=1", "--ssh-option=B=2"],
            ("status", "prod", None, ("A=1", "B=2"), True),
        ),
        (
            ["health", "--stack", "prod", "--integrity", "--integrity-budget-seconds", "5"],
            ("health", "prod", None, (), False),
        ),
        (["health", "--stack", "prod", "--services"], None),  # not a health option
        (["status", "--stack", "prod", "--help"], None),
        (["status", "--sta", "prod"], None),  # an abbreviation argparse would take: no early start
        (["status", "--stack", "prod", "--stack", "dev"], None),
        (["status", "--stack", "Prod"], None),
        (["status", "--stack"], None),
        (["status", "--stack", "prod", "--timeout", "x"], None),
        (["plan", "--stack", "prod"], None),
        (["status", "health", "--stack", "prod"], None),
        (["status", "--stack", "prod", "--unknown"], None),
        (["--project-dir", "", "status", "--stack", "prod"], None),
        (["status", "--stack", "prod", "--ssh-option"], None),
    ],
)
def test_the_command_line_reader(argv: list[str], expected: tuple[Any, ...] | None) -> None:
    got = early.early_args(argv)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.verb, got.stack, got.project_dir, got.ssh_options, got.services) == expected


def test_the_early_start_imports_next_to_nothing() -> None:
    """What makes it early: importing artifact_cd.early adds no PyYAML, pydantic, argparse,
    dataclasses, pathlib or tempfile to what Python's start-up already loaded."""
    code = (
        "import sys; before = set(sys.modules); import artifact_cd.early; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    added = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               cwd=REPO).stdout.split())  # fmt: skip
    heavy = {"yaml", "pydantic", "argparse", "dataclasses", "pathlib", "tempfile", "json", "inspect"}
    assert not added & heavy, sorted(added & heavy)
    assert "subprocess" in added or "subprocess" in sys.modules


def test_the_argv_is_the_one_every_cli_connection_uses() -> None:
    from artifact_cd import sshlink
    from artifact_cd.config import HostConfig

    host = HostConfig(host="d601.test", user="root", port=2222)
    settings = sshlink.SshSettings(key_file="/k", options=("A=1",))
    assert sshlink.ssh_argv(host, "true", settings) == early.ssh_command(
        "root", "d601.test", 2222, "true", key_file="/k", options=("A=1",)
    )
