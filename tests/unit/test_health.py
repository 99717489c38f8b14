"""artifact_cd.health (pure decision, R21-R24) and the status/health CLI path (artifact_cd.remote).

The facts below have the exact shape registry-probe.sh prints (the integration tests run the real
probe on a real systemd host and feed the same function); each case changes what one failure
changes on a real host and asserts the decision, ok per mode, the scopes and the named detail.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import health, remote, sshlink
from artifact_cd.config import HostConfig, parse_stack_config
from artifact_cd.plan import plan_registry_host, registry_probe_args

UNIT = "unidesk-artifact-registry.service"
CONTAINER = "unidesk-artifact-registry"
CONFIG = "/home/ubuntu/.unidesk/artifact-registry/config.yml"
COMPOSE = "/home/ubuntu/.unidesk/artifact-registry/compose.yml"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
STORAGE = "/home/ubuntu/.unidesk/registry-storage"
SPEC = "0d971897d2f0126b0fe5d1c0f4115f4c3e5be72fdc3c2d86917adf884ba69196"
IMAGE_ID = "sha256:dfc1632ebd62b2c289906752e22041e72f0978293a8eadd48de8fda167b6b92a"
ALL_SCOPES = ["ssh", "systemd", "docker", "unit", "files", "container", "listener", "registry-api", "storage"]
PROJECT_DIR = Path(__file__).resolve().parents[2]

WILDCARD_V4 = "0.0.0.0"  # noqa: S104 - a listener address the decision must flag, never bound here
Facts = dict[str, Any]


def _file(path: str, sha: str | None, expected: str) -> dict[str, Any]:
    return {
        "path": path,
        "exists": sha is not None,
        "readable": sha is not None,
        "sha256": sha,
        "expectedSha256": expected,
        "matches": sha == expected,
    }


def healthy_facts() -> Facts:
    """What the probe printed for a freshly installed registry on a real systemd host."""
    return {
        "ok": True,
        "probe": "registry-probe",
        "version": 1,
        "host": "d601",
        "user": "root",
        "expected": {
            "unit": UNIT,
            "project": CONTAINER,
            "container": CONTAINER,
            "image": "registry:2.8.3",
            "endpoint": "127.0.0.1:5000",
            "specSha256": SPEC,
        },
        "systemd": {"running": True, "systemctl": True},
        "unit": {
            "queried": True,
            "loadState": "loaded",
            "exists": True,
            "activeState": "active",
            "subState": "running",
            "active": True,
            "unitFileState": "enabled",
            "enabled": True,
            "needDaemonReload": False,
            "fragmentPath": UNIT_PATH,
        },
        "docker": {"installed": True, "reachable": True, "state": "reachable", "serverVersion": "20.10.24"},
        "container": {
            "queried": True,
            "exists": True,
            "id": "e4aec9d46a25ebacf74a831efcbad938dba78cc09afae6fb1b0c718839b9fa02",
            "status": "running",
            "running": True,
            "startedAt": "2026-11-27T20:11:51.144397514Z",
            "image": "registry:2.8.3",
            "imageId": IMAGE_ID,
            "repoDigests": [],
            "specLabel": SPEC,
            "composeProject": CONTAINER,
            "networkMode": "unidesk-artifact-registry_default",
            "portBindings": [{"containerPort": "5000/tcp", "hostIp": "127.0.0.1", "hostPort": "5000"}],
            "restartCount": 0,
        },
        "expectedImage": {"ref": "registry:2.8.3", "present": True, "localImageId": IMAGE_ID},
        "listeners": {"source": "/proc/net/tcp", "queried": True, "port": 5000, "addresses": ["127.0.0.1"]},
        "http": {"url": "http://127.0.0.1:5000/v2/", "client": "curl", "code": 200},
        "storage": {"path": STORAGE, "exists": True, "isDir": True, "hasData": True},
        "files": {
            "config": _file(CONFIG, "a" * 64, "a" * 64),
            "compose": _file(COMPOSE, "b" * 64, "b" * 64),
            "unit": _file(UNIT_PATH, "c" * 64, "c" * 64),
        },
    }


def fresh_facts() -> Facts:
    """A systemd host with Docker and nothing of the registry (the probe's real output shape)."""
    f = healthy_facts()
    f["unit"] |= {
        "loadState": "not-found",
        "exists": False,
        "activeState": "inactive",
        "subState": "dead",
        "active": False,
        "unitFileState": "",
        "enabled": False,
        "fragmentPath": None,
    }
    f["container"] = {"queried": True, "exists": False}
    f["listeners"]["addresses"] = []
    f["http"]["code"] = 0
    f["storage"] |= {"exists": False, "isDir": False, "hasData": False}
    for name, path in (("config", CONFIG), ("compose", COMPOSE), ("unit", UNIT_PATH)):
        f["files"][name] = _file(path, None, f["files"][name]["expectedSha256"])
    return f


def change(*edits: Callable[[Facts], None]) -> Facts:
    f = healthy_facts()
    for edit in edits:
        edit(f)
    return f


def drift(name: str) -> Callable[[Facts], None]:
    def edit(f: Facts) -> None:
        f["files"][name] |= {"sha256": "d" * 64, "matches": False}

    return edit


def unit_inactive(f: Facts) -> None:
    f["unit"] |= {"activeState": "inactive", "subState": "dead", "active": False}


def container_exited(f: Facts) -> None:
    f["container"] |= {"status": "exited", "running": False}
    f["listeners"]["addresses"] = []
    f["http"]["code"] = 0


def listening_on(*addresses: str) -> Callable[[Facts], None]:
    def edit(f: Facts) -> None:
        f["listeners"]["addresses"] = list(addresses)

    return edit


def set_in(section: str, **values: Any) -> Callable[[Facts], None]:
    def edit(f: Facts) -> None:
        f[section] |= values

    return edit


def no_docker(f: Facts, state: str) -> Facts:
    """What the probe reports when Docker cannot be used: nothing about containers or images."""
    f["docker"] = {
        "installed": state != "not-installed",
        "reachable": False,
        "state": state,
        "serverVersion": None,
    }
    f["container"] = {"queried": False, "exists": None}
    f["expectedImage"] = {"ref": "registry:2.8.3", "present": None, "localImageId": None}
    f["listeners"]["addresses"] = []
    f["http"]["code"] = 0
    return f


# --------------------------------------------------------------------------- the decision table

# (case id, facts, decision, status ok, failed scopes, runtimeApiHealthy, retryable)
CASES: list[tuple[str, Facts, str, bool, list[str], bool, bool]] = [
    ("healthy", healthy_facts(), "healthy", True, [], True, False),
    (
        "R22 fresh host: not installed",
        fresh_facts(),
        "not-installed",
        True,
        ["unit", "files", "container", "registry-api", "storage"],
        False,
        False,
    ),
    (
        "R24 config drift while serving",
        change(drift("config")),
        "service-degraded",
        True,
        ["files"],
        True,
        False,
    ),
    (
        "R24 compose drift while serving",
        change(drift("compose")),
        "service-degraded",
        True,
        ["files"],
        True,
        False,
    ),
    (
        "R24 unit file drift while serving",
        change(drift("unit")),
        "service-degraded",
        True,
        ["files"],
        True,
        False,
    ),
    (
        "R24 unit inactive, container still serving",
        change(unit_inactive),
        "service-degraded",
        True,
        ["unit"],
        True,
        False,
    ),
    (
        "unit not enabled",
        change(set_in("unit", enabled=False, unitFileState="disabled")),
        "service-degraded",
        True,
        ["unit"],
        True,
        False,
    ),
    (
        "unit changed on disk, not reloaded",
        change(set_in("unit", needDaemonReload=True)),
        "service-degraded",
        True,
        ["unit"],
        True,
        False,
    ),
    (
        "container runs another image",
        change(lambda f: f["container"].update(image="registry:2.8.2")),
        "service-degraded",
        True,
        ["container"],
        True,
        False,
    ),
    (
        "the tag now names another image",
        change(lambda f: f["expectedImage"].update(localImageId="sha256:" + "e" * 64)),
        "service-degraded",
        True,
        ["container"],
        True,
        False,
    ),
    (
        "container runs an outdated spec",
        change(lambda f: f["container"].update(specLabel="f" * 64)),
        "service-degraded",
        True,
        ["container"],
        True,
        False,
    ),
    (
        "unit and container stopped",
        change(unit_inactive, container_exited),
        "unhealthy",
        True,
        ["unit", "container", "registry-api"],
        False,
        False,
    ),
    (
        "container stopped, systemd restarting the unit",
        change(
            container_exited, set_in("unit", activeState="activating", subState="auto-restart", active=False)
        ),
        "unhealthy",
        True,
        ["unit", "container", "registry-api"],
        False,
        True,
    ),
    ("API answers 500", change(set_in("http", code=500)), "unhealthy", True, ["registry-api"], False, False),
    (
        "API does not answer",
        change(set_in("http", code=0)),
        "unhealthy",
        True,
        ["registry-api"],
        False,
        False,
    ),
    (
        "storage directory gone",
        change(set_in("storage", exists=False, isDir=False, hasData=False)),
        "unhealthy",
        True,
        ["storage"],
        True,
        False,
    ),
    (
        "R2 exposed on 0.0.0.0",
        change(listening_on(WILDCARD_V4)),
        "unhealthy",
        True,
        ["listener"],
        False,
        False,
    ),
    ("R2 exposed on ::", change(listening_on("::")), "unhealthy", True, ["listener"], False, False),
    (
        "R2 exposed on a LAN address",
        change(listening_on("127.0.0.1", "192.168.1.20")),
        "unhealthy",
        True,
        ["listener"],
        False,
        False,
    ),
    ("R2 ::1 is loopback", change(listening_on("::1")), "healthy", True, [], True, False),
    (
        "R2 published on every address",
        change(
            lambda f: f["container"].update(
                portBindings=[{"containerPort": "5000/tcp", "hostIp": "", "hostPort": "5000"}]
            )
        ),
        "unhealthy",
        True,
        ["listener"],
        False,
        False,
    ),
    (
        "drift and exposure together: exposure wins",
        change(drift("config"), listening_on(WILDCARD_V4)),
        "unhealthy",
        True,
        ["files", "listener"],
        False,
        False,
    ),
    (
        "something else answers /v2/, container stopped",
        change(container_exited, set_in("http", code=200), listening_on("127.0.0.1")),
        "unhealthy",
        True,
        ["container"],
        False,
        False,
    ),
    (
        "R23 docker not installed (fresh host)",
        no_docker(fresh_facts(), "not-installed"),
        "infra-blocked",
        False,
        ["docker", "unit", "files", "registry-api", "storage"],
        False,
        False,
    ),
    (
        "R23 docker daemon down (installed host)",
        no_docker(
            change(set_in("unit", activeState="failed", subState="failed", active=False)),
            "daemon-unreachable",
        ),
        "infra-blocked",
        False,
        ["docker", "unit", "registry-api"],
        False,
        True,
    ),
    (
        "R23 no systemd",
        change(lambda f: f.update(systemd={"running": False, "systemctl": True}, unit={"queried": False})),
        "infra-blocked",
        False,
        ["systemd"],
        True,
        False,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case[1:], id=case[0]) for case in CASES])
def test_decision_table(case: tuple[Facts, str, bool, list[str], bool, bool]) -> None:
    facts, decision, status_ok, failed, runtime, retryable = case
    status = health.decide(copy.deepcopy(facts), mode="status")
    answer = health.decide(copy.deepcopy(facts), mode="health")
    for doc in (status, answer):
        assert doc["decision"] == decision
        assert doc["failedScopes"] == failed
        assert doc["runtimeApiHealthy"] is runtime
        assert doc["retryable"] is retryable
        assert set(doc["healthyScopes"]).isdisjoint(failed)
        assert set(doc["healthyScopes"]) | set(failed) | set(doc["uncheckedScopes"]) == set(ALL_SCOPES)
        json.dumps(doc)  # always serialisable
    assert status["ok"] is status_ok  # R22: status is ok when the query worked
    assert answer["ok"] is (decision == "healthy")  # R22: health only when everything matches
    assert status["mode"] == "status" and answer["mode"] == "health"
    if decision == "healthy":
        assert answer["recommendedAction"] == "none" and answer["actions"] == []
        assert answer["healthyScopes"] == ALL_SCOPES
    else:
        assert answer["recommendedAction"] != "none"


def test_not_installed_reports_installed_false_and_ok_status() -> None:
    status = health.decide(fresh_facts(), mode="status")
    assert status["installed"] is False and status["ok"] is True
    assert status["healthyScopes"] == ["ssh", "systemd", "docker", "listener"]
    assert "pulumi up" in status["recommendedAction"]
    assert health.decide(fresh_facts(), mode="health")["ok"] is False


def test_leftover_storage_is_not_an_install_and_is_kept() -> None:
    f = fresh_facts()
    f["storage"] |= {"exists": True, "isDir": True, "hasData": True}
    doc = health.decide(f, mode="status")
    assert doc["decision"] == "not-installed" and doc["installed"] is False
    assert doc["storage"] == {"path": STORAGE, "exists": True, "hasData": True}
    assert "kept" in doc["recommendedAction"] and STORAGE in doc["recommendedAction"]


@pytest.mark.parametrize(("name", "path"), [("config", CONFIG), ("compose", COMPOSE), ("unit", UNIT_PATH)])
def test_drift_names_the_file(name: str, path: str) -> None:
    doc = health.decide(change(drift(name)), mode="health")
    assert doc["drift"] == [
        {
            "file": name,
            "path": path,
            "state": "differs",
            "expectedSha256": healthy_facts()["files"][name]["expectedSha256"],
            "actualSha256": "d" * 64,
        }
    ]
    assert doc["checks"][f"{name}File"]["ok"] is False and path in doc["checks"][f"{name}File"]["detail"]
    assert path in doc["recommendedAction"] and "controlled upgrade" in doc["recommendedAction"]


def test_missing_managed_file_while_serving_is_drift() -> None:
    f = healthy_facts()
    f["files"]["config"] = _file(CONFIG, None, "a" * 64)
    doc = health.decide(f, mode="health")
    assert doc["decision"] == "service-degraded"
    assert doc["drift"][0]["state"] == "missing" and doc["drift"][0]["path"] == CONFIG


@pytest.mark.parametrize(
    ("addresses", "named"),
    [([WILDCARD_V4], "0.0.0.0:5000"), (["::"], "[::]:5000"), (["10.1.2.3", "127.0.0.1"], "10.1.2.3:5000")],
)
def test_exposure_is_named(addresses: list[str], named: str) -> None:
    doc = health.decide(change(listening_on(*addresses)), mode="health")
    assert doc["exposures"] == [named]
    assert named in doc["checks"]["loopbackOnly"]["detail"]
    assert named in doc["recommendedAction"]
    assert doc["runtimeApiHealthy"] is False


def test_unit_inactive_names_the_unit_and_the_action() -> None:
    doc = health.decide(change(unit_inactive), mode="health")
    assert doc["checks"]["unitActive"] == {
        "ok": False,
        "scope": "unit",
        "detail": f"{UNIT} is inactive (dead)",
    }
    assert doc["recommendedAction"] == f"put the running registry back under systemd: systemctl start {UNIT}"


@pytest.mark.parametrize(
    ("state", "action_word"),
    [
        ("not-installed", "install Docker"),
        ("permission-denied", "docker group"),
        ("timeout", "start the Docker"),
    ],
)
def test_docker_channel_is_named(state: str, action_word: str) -> None:
    doc = health.decide(no_docker(healthy_facts(), state), mode="status")
    assert doc["decision"] == "infra-blocked" and doc["channel"] == "docker" and doc["ok"] is False
    assert action_word in doc["recommendedAction"]


@pytest.mark.parametrize(
    "facts",
    [
        None,
        [],
        "No such container: unidesk-artifact-registry",
        {"ok": False, "error": "invalid-argument", "detail": "x"},
        {**healthy_facts(), "probe": "something-else"},
        {**healthy_facts(), "version": 99},
        {k: v for k, v in healthy_facts().items() if k != "http"},
        {**healthy_facts(), "files": {"config": {}, "compose": {}}},
    ],
    ids=["none", "list", "raw-text", "failure-json", "other-probe", "version", "no-http", "no-unit-file"],
)
def test_malformed_facts_are_infra_blocked_not_a_crash(facts: Any) -> None:
    doc = health.decide(facts, mode="status")
    assert doc["decision"] == "infra-blocked" and doc["channel"] == "probe" and doc["ok"] is False
    assert "No such container" not in json.dumps(doc)


def test_garbage_values_inside_facts_do_not_crash() -> None:
    f = healthy_facts()
    f["listeners"] = {"queried": True, "port": "5000", "addresses": [None, 7, WILDCARD_V4]}
    f["container"]["portBindings"] = [{"hostIp": None, "hostPort": "x"}, "junk"]
    f["http"] = {"code": "200"}
    doc = health.decide(f, mode="health")
    assert doc["decision"] == "unhealthy" and "0.0.0.0:5000" in doc["exposures"]


def test_blocked_ssh_shape() -> None:
    modes: tuple[health.Mode, ...] = ("status", "health")
    for mode in modes:
        doc = health.blocked("ssh", "nothing accepts SSH connections", mode=mode, retryable=True, host="d601")
        assert doc["ok"] is False and doc["decision"] == "infra-blocked" and doc["channel"] == "ssh"
        assert doc["installed"] is None and doc["failedScopes"] == ["ssh"] and doc["healthyScopes"] == []
        assert doc["runtimeApiHealthy"] is False and doc["retryable"] is True


def test_table_view_shows_decision_checks_and_action() -> None:
    doc = health.decide(change(drift("config")), mode="health")
    text = health.format_table({**doc, "target": {"user": "root", "host": "d601", "port": 22}})
    assert text.startswith("registry health on root@d601:22: service-degraded")
    assert "configFile" in text and "FAIL" in text and CONFIG in text
    assert "recommended:" in text


# --------------------------------------------------------------------------- remote (OpenSSH)


def test_ssh_argv_batchmode_first_and_exact_target() -> None:
    settings = sshlink.SshSettings(key_file="/k", options=("ProxyCommand=nc %h %p", "BatchMode=no"))
    argv = sshlink.ssh_argv(
        HostConfig(host="d601.example", user="ubuntu", port=2200), "bash -s -- x", settings
    )
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert argv.index("ProxyCommand=nc %h %p") < argv.index("ConnectTimeout=15")
    assert argv[-4:] == ["2200", "--", "ubuntu@d601.example", "bash -s -- x"]
    assert argv[-5] == "-p"
    assert argv[argv.index("-i") + 1] == "/k"


def test_ssh_settings_validation(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    env = {sshlink.SSH_OPTIONS_ENV: "'ProxyCommand=nsenter -t 1 -n -- relay 22' StrictHostKeyChecking=no"}
    s = sshlink.SshSettings.build(
        key_file=None, options=["Port=22"], environ={**env, sshlink.SSH_KEY_ENV: str(key)}
    )
    assert s.options == ("ProxyCommand=nsenter -t 1 -n -- relay 22", "StrictHostKeyChecking=no", "Port=22")
    assert s.key_file == str(key)
    for bad in ("-oProxyCommand=x", "=x", "Key=a\nb", "NoValue"):
        with pytest.raises(sshlink.SshOptionError):
            sshlink.SshSettings.build(key_file=None, options=[bad], environ={})
    with pytest.raises(sshlink.SshOptionError):
        sshlink.SshSettings.build(key_file=str(tmp_path / "missing"), options=[], environ={})
    with pytest.raises(sshlink.SshOptionError):
        sshlink.SshSettings.build(key_file=None, options=[], environ={sshlink.SSH_OPTIONS_ENV: "'unclosed"})


@pytest.mark.parametrize(
    ("stderr", "reason", "retryable"),
    [
        ("ssh: connect to host d601 port 22: Connection refused\r\n", "connection-refused", True),
        ("root@d601: Permission denied (publickey).\r\n", "auth-failed", False),
        ("ssh: Could not resolve hostname d601: Name or service not known\r\n", "dns", True),
        ("Host key verification failed.\r\n", "host-key", False),
        ("kex_exchange_identification: Connection closed by remote host\r\n", "connection-closed", True),
        ("something new\r\n", "ssh-failed", True),
    ],
)
def test_ssh_failure_classification(stderr: str, reason: str, retryable: bool) -> None:
    got_reason, detail, got_retryable = remote.classify_ssh_failure(stderr)
    assert (got_reason, got_retryable) == (reason, retryable)
    assert stderr.strip() not in detail  # our words, never OpenSSH's raw text


def test_acceptance_step_is_the_probe_with_the_plan_args() -> None:
    cfg = parse_stack_config(_raw_config("127.0.0.1", 22), "prod")
    step = remote.acceptance_step(cfg)
    assert step.script == "registry-probe.sh" and step.args == registry_probe_args(cfg) and not step.mutates
    assert step == plan_registry_host(cfg).steps[-1]


# --------------------------------------------------------------------------- the CLI, with a fake ssh


def _raw_config(host: str, port: int) -> dict[str, Any]:
    return {
        "env": "prod",
        "hosts": {"d601": {"host": host, "user": "root", "port": port}, "master": {"host": "m", "port": 22}},
        "registry": {"composeCommand": "/usr/bin/docker-compose"},
    }


def _project(tmp_path: Path) -> Path:
    import yaml

    doc = {"config": {f"unidesk-artifact-cd:{k}": v for k, v in _raw_config("d601.test", 2222).items()}}
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def _fake_ssh(tmp_path: Path, body: str) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text("#!/bin/bash\n" + body)
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "DOCKER_HOST": f"unix://{tmp_path}/no.sock",
    }


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "artifact_cd", "--project-dir", str(_project(tmp_path)), *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_ssh_refused_is_infra_blocked_without_raw_error(tmp_path: Path) -> None:
    env = _fake_ssh(
        tmp_path, 'echo "ssh: connect to host d601.test port 2222: Connection refused" >&2\nexit 255\n'
    )
    proc = _cli(tmp_path, env, "status", "--stack", "prod")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)  # piped: JSON without --json
    assert (
        doc["decision"] == "infra-blocked"
        and doc["channel"] == "ssh"
        and doc["sshFailure"] == "connection-refused"
    )
    assert doc["ok"] is False and doc["retryable"] is True and doc["failedScopes"] == ["ssh"]
    assert doc["target"] == {"host": "d601.test", "port": 2222, "user": "root"}
    assert "Connection refused" not in proc.stdout


def test_cli_runs_the_exact_acceptance_step_over_ssh(tmp_path: Path) -> None:
    """The fake ssh records its argv and stdin, then runs the remote command locally: the real probe
    on this machine (no systemd here, Docker pointed at a missing socket) → infra-blocked systemd."""
    record = tmp_path / "record"
    env = _fake_ssh(
        tmp_path,
        f'printf "%s\\n" "$@" > {record}.argv\ncat > {record}.stdin\nexec bash -c "${{@: -1}}" < {record}.stdin\n',
    )
    proc = _cli(
        tmp_path, env, "health", "--stack", "prod", "--json", "--ssh-option", "StrictHostKeyChecking=no"
    )
    doc = json.loads(proc.stdout)
    cfg = parse_stack_config(_raw_config("d601.test", 2222), "prod")
    step = remote.acceptance_step(cfg)
    argv = Path(f"{record}.argv").read_text().splitlines()
    from artifact_cd.scripts import command_line, script_text

    assert argv[:2] == ["-o", "BatchMode=yes"] and "StrictHostKeyChecking=no" in argv
    assert argv[argv.index("-p") + 1] == "2222"
    # `python -m artifact_cd` opened the connection before validating (sshlink): the remote command is
    # `bash -s`, the probe's exact args travel as the script's first line
    assert argv[-3:] == ["--", "root@d601.test", sshlink.EARLY_REMOTE_COMMAND]
    stdin = Path(f"{record}.stdin").read_text()
    assert stdin == sshlink.script_with_args(step.args, script_text("registry-probe.sh"))
    assert stdin.splitlines()[0] == "set -- " + command_line(step.args).removeprefix("bash -s -- ")
    if Path("/run/systemd/system").is_dir():  # pragma: no cover - only on a systemd machine
        pytest.skip("this machine runs systemd: the local probe's decision differs")
    assert proc.returncode == 1, proc.stderr
    assert doc["decision"] == "infra-blocked" and doc["channel"] == "systemd"
    assert doc["query"]["roundTrips"] == 1


def test_cli_bad_ssh_option_is_a_usage_error(tmp_path: Path) -> None:
    env = _fake_ssh(tmp_path, "exit 99\n")
    proc = _cli(tmp_path, env, "status", "--stack", "prod", "--ssh-option=-oProxyCommand=evil")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["decision"] == "invalid-config" and doc["problems"][0]["key"] == "--ssh-option"


def test_cli_probe_refusal_is_structured(tmp_path: Path) -> None:
    env = _fake_ssh(
        tmp_path,
        'cat >/dev/null\necho \'{"ok":false,"error":"invalid-argument","detail":"--unit is not valid"}\'\nexit 2\n',
    )
    proc = _cli(tmp_path, env, "status", "--stack", "prod")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert doc["decision"] == "infra-blocked" and doc["channel"] == "probe" and doc["probeExit"] == 2
    assert "--unit is not valid" in doc["detail"] and doc["retryable"] is False


def test_cli_refused_config_never_runs_anything_over_ssh(tmp_path: Path) -> None:
    """The early connection (sshlink) is opened from the raw file's host values, but a config that
    fails validation closes it with nothing written: the remote `bash -s` reads end-of-file."""
    called, sent = tmp_path / "ssh-called", tmp_path / "ssh-stdin"
    env = _fake_ssh(tmp_path, f"touch {called}\ncat > {sent}\nexit 0\n")
    project = _project(tmp_path)
    text = (
        (project / "Pulumi.prod.yaml")
        .read_text()
        .replace("composeCommand:", "endpoint: 0.0.0.0:5000\n    composeCommand:")
    )
    (project / "Pulumi.prod.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "artifact_cd", "--project-dir", str(project), "health", "--stack", "prod"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["problems"][0]["key"] == "unidesk-artifact-cd:registry.endpoint"
    assert called.exists() and sent.read_bytes() == b""  # connected early, closed unused


# --------------------------------------------------------------------------- storage integrity (issue 12)

LAYER = "sha256:" + "1" * 64


def integrity_facts(**over: Any) -> Facts:
    """What registry-blob-verify.sh prints (artifact_cd/scripts/py/manifest.py verify)."""
    facts: Facts = {
        "ok": True,
        "probe": "registry-blob-verify",
        "storage": STORAGE,
        "storageExists": True,
        "totalBlobs": 7,
        "totalBytes": 9000,
        "checkedBlobs": 7,
        "checkedBytes": 9000,
        "unreadableBlobs": 0,
        "complete": True,
        "stoppedBy": None,
        "budgetSeconds": 10,
        "budgetBytes": 536870912,
        "corrupt": [],
        "seconds": 0.01,
    }
    return facts | over


def test_without_integrity_facts_the_scope_lists_do_not_change() -> None:
    doc = health.decide(healthy_facts(), mode="health")
    assert doc["healthyScopes"] == ALL_SCOPES and "storageIntegrity" not in doc
    assert health.INTEGRITY_CHECK not in doc["checks"]


def test_clean_blobs_add_a_healthy_storage_integrity_scope() -> None:
    doc = health.decide(healthy_facts(), mode="health", integrity=integrity_facts())
    assert doc["decision"] == "healthy" and doc["ok"] is True
    assert doc["healthyScopes"] == [*ALL_SCOPES, "storage-integrity"] and doc["failedScopes"] == []
    summary = doc["storageIntegrity"]
    assert (summary["checkedBlobs"], summary["totalBlobs"], summary["checkedBytes"]) == (7, 7, 9000)
    assert summary["corrupt"] == [] and "error" not in summary


def test_a_corrupt_blob_fails_the_scope_with_registry_blob_corrupt_and_names_the_repair() -> None:
    corrupt = [{"digest": LAYER, "actual": "sha256:" + "2" * 64, "bytes": 10,
                "usedBy": [{"repository": "unidesk/svc", "tag": "a" * 40, "as": "blob"}]}]  # fmt: skip
    doc = health.decide(healthy_facts(), mode="health", integrity=integrity_facts(corrupt=corrupt))
    assert doc["decision"] == "unhealthy" and doc["ok"] is False
    assert doc["failedScopes"] == ["storage-integrity"] and doc["healthyScopes"] == ALL_SCOPES
    check = doc["checks"][health.INTEGRITY_CHECK]
    assert check["ok"] is False and check["error"] == "registry-blob-corrupt" and LAYER in check["detail"]
    assert doc["storageIntegrity"]["error"] == "registry-blob-corrupt"
    assert any(
        "publish --repair" in a and "unidesk/svc:" + "a" * 40 in a and LAYER in a for a in doc["actions"]
    )
    # status mode reads the same facts: ok (the query worked), the scope still failed
    status = health.decide(healthy_facts(), mode="status", integrity=integrity_facts(corrupt=corrupt))
    assert status["ok"] is True and status["failedScopes"] == ["storage-integrity"]


def test_a_budget_cut_check_is_healthy_and_says_how_much_it_saw() -> None:
    facts = integrity_facts(checkedBlobs=3, checkedBytes=4000, complete=False, stoppedBy="bytes")
    doc = health.decide(healthy_facts(), mode="health", integrity=facts)
    check = doc["checks"][health.INTEGRITY_CHECK]
    assert check["ok"] is True and "3 of 7 blobs" in check["detail"] and "bytes" in check["detail"]
    assert doc["storageIntegrity"]["complete"] is False


@pytest.mark.parametrize(
    "facts",
    [
        {"ok": False, "detail": "ssh: the SSH connection timed out"},
        integrity_facts(checkedBlobs=0, checkedBytes=0, unreadableBlobs=7, complete=True),
    ],
    ids=["no-facts", "unreadable"],
)
def test_integrity_that_could_not_be_checked_is_unchecked_not_failed(facts: Facts) -> None:
    doc = health.decide(healthy_facts(), mode="health", integrity=facts)
    assert doc["decision"] == "healthy"
    assert doc["uncheckedScopes"] == ["storage-integrity"] and "storage-integrity" not in doc["failedScopes"]
    assert doc["checks"][health.INTEGRITY_CHECK]["detail"].startswith("not checked")


@pytest.mark.parametrize(
    ("flag", "value"), [("--integrity-budget-seconds", "0"), ("--integrity-budget-bytes", "-1")]
)
def test_health_integrity_budgets_are_checked_before_any_ssh(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from artifact_cd.cli import main

    code = main(["health", "--stack", "dev", "--integrity", flag, value])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and doc["ok"] is False, doc
