"""The registry host install and read-only status/health on a real systemd host (R1-R3, R6, R7,
R21-R24).

One fresh systemd host of the rig (``rig.fresh_host``: systemd PID 1, docker.service, ssh.service,
the local ``registry:2.8.3`` image, nothing installed) serves the whole module. The install runs
the plan's registry steps in order over real SSH (``host.run_step``: the exact command line and
script text the Pulumi Commands use); status/health run through the operator's CLI
(``python -m artifact_cd status|health``) over real OpenSSH. Every case asserts the exact decision
and scopes. The tests run in file order and each one leaves the host healthy again.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import health
from artifact_cd.config import PROJECT, StackConfig, parse_stack_config
from artifact_cd.plan import plan_registry_host
from artifact_cd.render import render_all, unit_path
from tests.rig import Host, Rig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALL_SCOPES = ["ssh", "systemd", "docker", "unit", "files", "container", "listener", "registry-api", "storage"]
INSTALL_STEPS = ("registry-dirs", "registry-config", "registry-compose", "registry-unit", "registry-activate")
ACCEPT = (
    "-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "
    "-H 'Accept: application/vnd.oci.image.manifest.v1+json'"
)
# A stdio <-> 127.0.0.1:PORT relay for OpenSSH's ProxyCommand, run inside the host's netns.
RELAY = """\
import os, socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


def scopes_except(*failed: str) -> list[str]:
    return [s for s in ALL_SCOPES if s not in failed]


@dataclass
class RegistryHost:
    rig: Rig
    host: Host
    raw: dict[str, Any]
    workdir: Path
    ssh_options: list[str] = field(default_factory=list)

    @property
    def cfg(self) -> StackConfig:
        return parse_stack_config(self.raw, "prod")

    def with_image(self, image: str) -> RegistryHost:
        raw = json.loads(json.dumps(self.raw))
        raw["registry"]["image"] = image
        return RegistryHost(self.rig, self.host, raw, self.workdir, self.ssh_options)

    # ------------------------------------------------------------------ install (plan steps)

    def install(self) -> dict[str, dict[str, Any]]:
        """Run the plan's registry steps in order; the acceptance step's facts are decided the way
        the Pulumi component decides them (``health.decide(facts, mode="health")``)."""
        results: dict[str, dict[str, Any]] = {}
        for step in plan_registry_host(self.cfg).steps:
            result = self.host.run_step(step, timeout=300)
            assert result.returncode == 0, (step.id, result.stdout, result.stderr[-2000:])
            assert result.json is not None, (step.id, result.stdout)
            results[step.id] = result.json
        verdict = health.decide(results["registry-acceptance"], mode="health")
        assert verdict["decision"] == "healthy", verdict
        return results

    # ------------------------------------------------------------------ the operator's CLI

    def cli(self, verb: str) -> tuple[int, dict[str, Any]]:
        project = self.workdir / "project"
        project.mkdir(exist_ok=True)
        doc = {"config": {f"{PROJECT}:{k}": v for k, v in self.raw.items()}}
        (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(doc))
        argv = [sys.executable, "-m", "artifact_cd", "--project-dir", str(project), verb, "--stack", "prod"]
        argv += ["--ssh-key", str(self.workdir / "key"), "--timeout", "90"]
        for option in self.ssh_options:
            argv += ["--ssh-option", option]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
        assert proc.stdout.strip(), proc.stderr
        answer = json.loads(proc.stdout)
        assert proc.returncode == (0 if answer["ok"] else 1), proc.stderr
        return proc.returncode, answer

    def ensure_healthy(self) -> None:
        _, answer = self.cli("health")
        if answer["decision"] != "healthy":
            self.install()

    # ------------------------------------------------------------------ inspection

    def container(self) -> tuple[str, str]:
        out = self.host.sh(
            'docker inspect --type container --format "{{.Id}} {{.State.StartedAt}}" -- "$1"',
            self.cfg.registry.container_name,
        ).stdout.split()
        return out[0], out[1]

    def sh(self, script: str, *args: str) -> str:
        return self.host.sh(script, *args, timeout=180).stdout


@pytest.fixture(scope="module")
def reg(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryHost]:
    workdir = tmp_path_factory.mktemp("registry-host")
    with rig.fresh_host("regprobe") as host:
        key = workdir / "key"
        key.write_text(host.private_key)
        key.chmod(0o600)
        relay = workdir / "relay.py"
        relay.write_text(RELAY)
        proxy = shlex.join([*host.netns_argv(), "--", sys.executable, "-I", str(relay), str(host.port)])
        raw = rig.stack_config("prod")
        raw["hosts"]["d601"] = {"host": host.address, "user": host.user, "port": host.port}
        yield RegistryHost(
            rig,
            host,
            raw,
            workdir,
            [f"ProxyCommand={proxy}", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"],
        )


# --------------------------------------------------------------------------- fresh → installed


def test_fresh_host_is_not_installed(reg: RegistryHost) -> None:
    """R22: status ok=true with installed=false; health ok=false."""
    code, status = reg.cli("status")
    assert code == 0
    assert (status["ok"], status["installed"], status["decision"]) == (True, False, "not-installed")
    assert status["healthyScopes"] == ["ssh", "systemd", "docker", "listener"]
    assert status["failedScopes"] == ["unit", "files", "container", "registry-api", "storage"]
    assert status["runtimeApiHealthy"] is False and status["retryable"] is False
    code, answer = reg.cli("health")
    assert code == 1
    assert (answer["ok"], answer["installed"], answer["decision"]) == (False, False, "not-installed")
    assert answer["failedScopes"] == status["failedScopes"]


def test_install_is_healthy(reg: RegistryHost) -> None:
    """R7: dirs, the three rendered files, reload/enable/start, then the acceptance check."""
    results = reg.install()
    cfg = reg.cfg
    assert cfg.registry.storage_path in results["registry-dirs"]["created"]
    for sid in ("registry-config", "registry-compose", "registry-unit"):
        assert results[sid]["result"] == "written", results[sid]
    files = {f.path: f for f in render_all(cfg.registry)}
    for path, rendered in files.items():
        assert reg.sh('cat -- "$1"', path) == rendered.content
    activate = results["registry-activate"]
    assert activate["started"] is True and activate["restarted"] is False and activate["enabled"] is True
    assert reg.sh('systemctl is-enabled -- "$1"; systemctl is-active -- "$1"', cfg.registry.unit_name).split() == [
        "enabled",
        "active",
    ]
    # R2: the port mapping is bound to loopback only
    ports = reg.sh('docker port -- "$1"', cfg.registry.container_name).split()
    assert ports == ["5000/tcp", "->", "127.0.0.1:5000"]

    code, answer = reg.cli("health")
    assert code == 0
    assert (answer["ok"], answer["installed"], answer["decision"]) == (True, True, "healthy")
    assert answer["healthyScopes"] == ALL_SCOPES and answer["failedScopes"] == []
    assert answer["runtimeApiHealthy"] is True and answer["recommendedAction"] == "none"
    assert answer["query"]["roundTrips"] == 1


def test_rendered_unit_passes_systemd_analyze_verify_on_the_host(reg: RegistryHost) -> None:
    proc = reg.host.sh('systemd-analyze verify -- "$1"', unit_path(reg.cfg.registry), check=False)
    assert proc.returncode == 0, proc.stderr


def test_second_install_writes_nothing_and_restarts_nothing(reg: RegistryHost) -> None:
    before = reg.container()
    results = reg.install()
    assert results["registry-dirs"]["created"] == []
    for sid in ("registry-config", "registry-compose", "registry-unit"):
        assert results[sid]["result"] == "unchanged", results[sid]
    activate = results["registry-activate"]
    assert (activate["reloaded"], activate["enabled"], activate["started"], activate["restarted"]) == (
        False,
        False,
        False,
        False,
    )
    assert reg.container() == before  # same container ID, same StartedAt


# --------------------------------------------------------------------------- degraded / unhealthy


def test_hand_edited_config_is_degraded_and_reinstall_restores_it(reg: RegistryHost) -> None:
    """R24: file drift while the API serves → service-degraded naming the file."""
    reg.ensure_healthy()
    config = reg.cfg.registry.config_path
    reg.sh('printf "# hand edit\\n" >> "$1"', config)
    code, answer = reg.cli("health")
    assert code == 1
    assert answer["decision"] == "service-degraded" and answer["runtimeApiHealthy"] is True
    assert answer["failedScopes"] == ["files"] and answer["healthyScopes"] == scopes_except("files")
    assert [(d["file"], d["path"], d["state"]) for d in answer["drift"]] == [("config", config, "differs")]
    assert config in answer["recommendedAction"]
    _, status = reg.cli("status")
    assert status["ok"] is True and status["decision"] == "service-degraded"

    results = reg.install()
    assert results["registry-config"]["result"] == "written"
    assert results["registry-compose"]["result"] == results["registry-unit"]["result"] == "unchanged"
    # the container mounts the old inode of the rewritten file: activate restarts it
    assert results["registry-activate"]["restarted"] is True
    assert results["registry-activate"]["reason"] == "mounted-file-rewritten"


def test_unit_stopped_while_container_runs_is_degraded(reg: RegistryHost) -> None:
    """R24: unit inactive, container still serving on loopback, /v2/ 200."""
    reg.ensure_healthy()
    cfg = reg.cfg.registry
    reg.sh('systemctl stop -- "$1" && docker start -- "$2" >/dev/null', cfg.unit_name, cfg.container_name)
    code, answer = reg.cli("health")
    assert code == 1
    assert answer["decision"] == "service-degraded" and answer["runtimeApiHealthy"] is True
    assert answer["failedScopes"] == ["unit"] and answer["healthyScopes"] == scopes_except("unit")
    assert answer["checks"]["unitActive"]["ok"] is False
    assert answer["recommendedAction"] == f"put the running registry back under systemd: systemctl start {cfg.unit_name}"
    results = reg.install()
    assert results["registry-activate"]["started"] is True


def test_stopped_registry_is_unhealthy(reg: RegistryHost) -> None:
    reg.ensure_healthy()
    cfg = reg.cfg.registry
    reg.sh('systemctl stop -- "$1"', cfg.unit_name)  # ExecStop stops the container
    assert reg.sh('docker inspect --format "{{.State.Running}}" -- "$1"', cfg.container_name).strip() == "false"
    code, answer = reg.cli("health")
    assert code == 1
    assert answer["decision"] == "unhealthy" and answer["runtimeApiHealthy"] is False
    assert answer["failedScopes"] == ["unit", "container", "registry-api"]
    assert answer["healthyScopes"] == scopes_except("unit", "container", "registry-api")
    code, status = reg.cli("status")
    assert code == 0 and status["ok"] is True and status["installed"] is True
    results = reg.install()
    assert results["registry-activate"]["started"] is True


def test_registry_listening_on_every_address_is_unhealthy(reg: RegistryHost) -> None:
    """R2: host networking with ``addr: :5000`` listens on *:5000 → unhealthy naming the exposure."""
    reg.ensure_healthy()
    cfg = reg.cfg.registry
    reg.sh('systemctl stop -- "$1" && docker rm -- "$2" >/dev/null', cfg.unit_name, cfg.container_name)
    compose = (
        "services:\n"
        "  registry:\n"
        f"    image: {cfg.image}\n"
        f"    container_name: {cfg.container_name}\n"
        "    network_mode: host\n"
        "    volumes:\n"
        "      - /root/exposed/config.yml:/etc/docker/registry/config.yml:ro\n"
        "      - /root/exposed/data:/var/lib/registry\n"
    )
    config = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n"
    reg.host.write_file("/root/exposed/compose.yml", compose)
    reg.host.write_file("/root/exposed/config.yml", config)
    reg.sh(
        "mkdir -p /root/exposed/data && docker-compose -p exposed -f /root/exposed/compose.yml up -d 2>/dev/null"
        " && for i in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:5000/v2/ && break; sleep 0.1; done"
    )
    try:
        code, answer = reg.cli("health")
        assert code == 1
        assert answer["decision"] == "unhealthy" and answer["runtimeApiHealthy"] is False
        assert answer["failedScopes"] == ["unit", "container", "listener"]
        assert answer["checks"]["registryApi"]["ok"] is True  # it answers — on every address
        assert answer["exposures"] and set(answer["exposures"]) <= {"[::]:5000", "0.0.0.0:5000"}
        assert answer["exposures"][0] in answer["checks"]["loopbackOnly"]["detail"]
        assert answer["exposures"][0] in answer["recommendedAction"]
    finally:
        reg.sh("docker-compose -p exposed -f /root/exposed/compose.yml down 2>/dev/null; rm -rf /root/exposed")
    results = reg.install()
    assert results["registry-activate"]["started"] is True


# --------------------------------------------------------------------------- storage is never deleted


def _registry_host_deletes(reg: RegistryHost) -> tuple[int, list[str]]:
    """Every registry-host Command the Pulumi program registers, and their ``delete`` commands."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from components.preview import run_program

    run = run_program("prod", config=reg.raw)  # a preview
    assert run.error is None, run.error
    commands = [r for r in run.children("artifact-registry") if r.type == "command:remote:Command"]
    return len(commands), [str(r.inputs["delete"]) for r in commands if r.inputs.get("delete")]


def test_storage_survives_reinstall_upgrade_and_destroy(reg: RegistryHost) -> None:
    """R7: push, reinstall, image upgrade, destroy, reinstall: the same digest pulls back."""
    reg.ensure_healthy()
    cfg = reg.cfg.registry
    tag = secrets.token_hex(20)
    ref = f"{cfg.endpoint}/unidesk/storage-probe:{tag}"
    digest = reg.sh(
        'set -e; d=$(mktemp -d); echo "$2" > "$d/proof"; tar -C "$d" -c . | docker import - "$1" >/dev/null; '
        'rm -rf "$d"; docker push "$1" >/dev/null; docker inspect --format "{{index .RepoDigests 0}}" "$1"',
        ref,
        tag,
    ).strip().split("@")[1]
    manifest_url = f"http://{cfg.endpoint}/v2/unidesk/storage-probe/manifests/{digest}"

    def head() -> str:
        return reg.sh(f"curl -s -o /dev/null -w '%{{http_code}}' {ACCEPT} -I -- \"$1\"", manifest_url)

    assert head() == "200"
    reg.install()  # reinstall, same inputs
    assert head() == "200"

    upgraded = reg.with_image(f"{cfg.image}-upgrade")  # an image upgrade: new ref, new spec
    reg.sh('docker tag -- "$1" "$1-upgrade"', cfg.image)
    results = upgraded.install()
    assert results["registry-compose"]["result"] == "written"
    assert results["registry-activate"]["restarted"] is True and results["registry-activate"]["replacedContainer"]
    assert head() == "200"

    # destroy: every Command's delete (there is none) and the unit disabled and stopped
    count, deletes = _registry_host_deletes(reg)
    assert count == len(plan_registry_host(reg.cfg).steps)
    for command in deletes:  # pragma: no cover - the component defines no delete
        reg.host.ssh(command, check=True)
    assert deletes == []
    reg.sh('systemctl disable --now -- "$1" 2>/dev/null', cfg.unit_name)
    assert reg.sh('test -d "$1/docker/registry/v2/repositories/unidesk/storage-probe" && echo kept', cfg.storage_path)
    code, answer = reg.cli("health")
    assert code == 1 and answer["decision"] == "unhealthy" and answer["storage"]["hasData"] is True

    results = reg.install()  # back to the original image
    assert results["registry-activate"]["started"] is True
    pulled = reg.sh(
        'docker rmi -- "$1" >/dev/null && docker pull -q -- "$2@$3" >/dev/null && '
        'docker inspect --format "{{range .RepoDigests}}{{.}} {{end}}" -- "$2@$3"',
        ref,
        ref.rsplit(":", 1)[0],
        digest,
    )
    assert f"{ref.rsplit(':', 1)[0]}@{digest}" in pulled.split()


# --------------------------------------------------------------------------- missing channels


def test_docker_down_is_infra_blocked(reg: RegistryHost) -> None:
    """R23: a channel the query needs is missing → infra-blocked naming it, not a raw error."""
    reg.ensure_healthy()
    reg.sh("systemctl stop docker.socket docker.service")
    try:
        code, answer = reg.cli("status")
        assert code == 1
        assert answer["decision"] == "infra-blocked" and answer["channel"] == "docker"
        assert answer["ok"] is False and answer["retryable"] is True
        assert answer["failedScopes"] == ["docker", "unit", "registry-api"]
        assert answer["uncheckedScopes"] == ["container"]
        assert "Cannot connect" not in json.dumps(answer) and "No such" not in json.dumps(answer)
    finally:
        reg.sh("systemctl start docker.service")
    # The unit is WantedBy=docker.service: starting Docker brings the registry back by itself,
    # so the next install finds it running and starts nothing.
    deadline = time.monotonic() + 60
    while (answer := reg.cli("health")[1])["decision"] != "healthy" and time.monotonic() < deadline:
        time.sleep(1)
    assert answer["decision"] == "healthy", answer
    results = reg.install()
    assert results["registry-activate"]["started"] is False


def test_sshd_stopped_is_infra_blocked(reg: RegistryHost) -> None:
    reg.ensure_healthy()
    reg.sh("systemctl stop ssh.service ssh.socket 2>/dev/null || systemctl stop ssh.service")
    try:
        for verb in ("status", "health"):
            code, answer = reg.cli(verb)
            assert code == 1
            assert answer["decision"] == "infra-blocked" and answer["channel"] == "ssh"
            assert answer["ok"] is False and answer["retryable"] is True and answer["installed"] is None
            assert answer["failedScopes"] == ["ssh"] and answer["healthyScopes"] == []
            assert answer["runtimeApiHealthy"] is False
            assert "kex_exchange" not in json.dumps(answer) and "Connection closed" not in json.dumps(answer)
    finally:
        reg.sh("systemctl start ssh.service")
    code, answer = reg.cli("health")
    assert code == 0 and answer["decision"] == "healthy"
