"""Compose v2 (`docker compose`) on D601, as a host with Docker's Compose plugin has it (issue 11:
"Works with Compose v2 and v1"). Every other rig module deploys with v1 `docker-compose`, the only
Compose bookworm packages; ``./run tests`` unpacks Debian trixie's Compose v2 plugin (pinned by
SHA-256) into COMPOSE_V2, outside Docker's plugin directories, and this module links it into D601's
own /usr/libexec/docker/cli-plugins for its tests only, so the stack config names no Compose command
and compose-deploy.sh finds v2 the way it would on a real host.

R14/R16/R19 through the plan's own steps (manifest check, pull, deploy) over real SSH as the
operator ``ubuntu``:
- v2 is the Compose chosen, and the project's .env still interpolates ${VAR} and sets COMPOSE_FILE;
- a wrong Compose service or container name set in config stops the deploy before anything changes
  (the preflight reads v2's `compose config` and v2's container labels);
- two services of a fresh project recreated at once leave one project network, and the next pair
  (networks present: the shared project lock) both finish;
- an unhealthy commit with autoRestore on: v2 recreates the previous commit, verified;
- the registry host install with the product's default `/usr/bin/docker compose` (R7).
Each test ends with the host checked (one commit serving, nothing left, a clean re-run).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from artifact_cd import health
from artifact_cd.config import parse_stack_config
from artifact_cd.plan import plan_registry_host
from tests.integration.test_deploy_safety import (
    SafetyProject,
    audit_lines,
    deploy,
    deploy_step,
    host_check,
    image_of,
    inspect,
    serving,
)
from tests.rig import Rig, StepResult
from tests.rig.rig import COMPOSE_V2, link_compose_v2

pytestmark = pytest.mark.integration

SERVICES = ("pipeline", "findjob")  # compose-d601 in prod, ungated


def sha(label: str) -> str:
    return hashlib.sha1(f"compose-v2-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


C = {f"{s}-{x}": sha(f"{s}-{x}") for s in SERVICES for x in ("a", "b", "c")}
C["pipeline-unhealthy"] = sha("pipeline-unhealthy")
ENV_FILE_BASE = "# compose v2 tests\nOTHER_KEY=keep-me\n"


@dataclass(frozen=True)
class V2Project(SafetyProject):
    """SafetyProject's .env (COMPOSE_FILE adds extra.yml, ${SAFETY_LABEL}), no Compose command set
    (v2 is found), taken down with v2 itself."""

    def remove(self, rig: Rig) -> None:
        h = rig.d601
        h.sh('cd "$1" && "$2" -p "$3" down -t 1 >/dev/null 2>&1 || true', self.base, str(COMPOSE_V2), self.name,
             check=False)  # fmt: skip
        super().remove(rig)


PROJECT = V2Project("unidesk-v2-tests", {s: "d601" for s in SERVICES}, auto_restore=True)


def networks(rig: Rig) -> list[str]:
    return rig.d601.sh('docker network ls --format "{{.Name}}"').stdout.split()


@pytest.fixture(scope="module")
def project(rig: Rig) -> Iterator[V2Project]:
    if not COMPOSE_V2.is_file():
        pytest.skip(f"Compose v2 is not installed at {COMPOSE_V2} (./run tests installs it; see its warning)")
    for s in SERVICES:
        for x in ("a", "b", "c"):
            rig.publish_test_image(s, C[f"{s}-{x}"])
    rig.publish_test_image("pipeline", C["pipeline-unhealthy"], variant="unhealthy")
    h = rig.d601
    link_compose_v2(h)
    try:
        version = h.ssh("docker compose version --short", check=False)
        assert version.returncode == 0 and version.stdout.startswith("2."), (version.stdout, version.stderr)
        PROJECT.install(rig, ENV_FILE_BASE)
        yield PROJECT
        PROJECT.remove(rig)
        assert f"{PROJECT.name}_default" not in networks(rig)
    finally:
        link_compose_v2(h, linked=False)


def at(rig: Rig, service: str, commit: str) -> None:
    if serving(rig, PROJECT, service) != commit:
        done = deploy(rig, PROJECT, service, commit)
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert serving(rig, PROJECT, service) == commit


def deploy_at_once(rig: Rig, commits: dict[str, str]) -> dict[str, StepResult]:
    """Each service's manifest check and pull in turn, then their deploy steps at the same moment
    (as Pulumi runs independent consumers)."""
    prepared = {s: deploy_step(rig, PROJECT, s, c) for s, c in commits.items()}
    results: dict[str, StepResult] = {}

    def go(service: str) -> None:
        step, host, facts = prepared[service]
        results[service] = host.run_step(step, digest=facts["digest"], image_id=facts["image_id"])

    threads = [threading.Thread(target=go, args=(s,)) for s in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(results) == set(commits), "a deploy step did not return"
    return results


# --------------------------------------------------------------------------- tests


def test_v2_is_found_and_the_projects_dotenv_still_applies(rig: Rig, project: V2Project) -> None:
    """No Compose command configured: the deploy runs `docker compose` (v2); the recreated container
    carries the label extra.yml (added by COMPOSE_FILE in .env) interpolates from .env, and the
    deploy values reach it through env_file (serving() compares label, health and env file)."""
    service = "pipeline"
    at(rig, service, C["pipeline-a"])
    done = deploy(rig, project, service, C["pipeline-b"])
    assert done.returncode == 0 and done.json is not None, (done.stdout, done.stderr)
    doc = done.json
    assert doc["composeCommand"] == "docker compose", doc["composeCommand"]
    assert doc["changed"] == ["retag-commit", "retag", "env-file", "container"] and doc["recreated"] is True
    assert doc["previousCommit"] == C["pipeline-a"] and doc["previousCommitFrom"] == "container"
    facts = inspect(rig.d601, project.target(service).container_name)
    assert facts["dotenv"] == "from-dotenv", "v2 lost the project's .env (COMPOSE_FILE or ${SAFETY_LABEL})"
    runs = [a for a in audit_lines(rig.d601, service) if a.get("toCommit") == C["pipeline-b"]]
    assert [a["event"] for a in runs[-2:]] == ["started", "finished"] and runs[-1]["verdict"] == "ok"
    host_check(rig, project, service, C["pipeline-b"])


@pytest.mark.parametrize(
    ("names", "error"),
    [
        ({"composeService": "pipeline-typo"}, "compose-service-missing"),
        ({"containerName": "pipeline-typo"}, "container-name-mismatch"),
    ],
    ids=["compose-service", "container-name"],
)
def test_a_wrong_name_is_refused_before_anything_changes(
    rig: Rig, project: V2Project, names: dict[str, Any], error: str
) -> None:
    """The Compose service is looked up in v2's `compose config` output; the container name against
    the container v2 made for the service (its Compose labels). Either wrong: refused, nothing
    changed, the old container still serving the same commit; the right names then deploy."""
    service = "pipeline"
    a = C["pipeline-a"]
    at(rig, service, a)
    h, t = rig.d601, project.target(service)
    before = inspect(h, t.container_name)
    env_before = h.read_file(project.env_file)
    retag_before = image_of(h, t.retag_name)
    wrong = deploy(rig, project, service, C["pipeline-c"], names)
    assert wrong.returncode == 3 and wrong.json is not None, (wrong.stdout, wrong.stderr)
    assert wrong.json["error"] == error and wrong.json["changed"] == [], wrong.json
    if error == "container-name-mismatch":
        assert wrong.json["found"] == t.container_name and "names.containerName" in wrong.json["detail"]
    assert inspect(h, t.container_name)["id"] == before["id"] and serving(rig, project, service) == a
    assert h.read_file(project.env_file) == env_before and image_of(h, t.retag_name) == retag_before
    host_check(rig, project, service, a)


def test_two_services_of_a_fresh_project_at_once_then_with_the_shared_lock(
    rig: Rig, project: V2Project
) -> None:
    """The project taken down (no network): both services' deploys at once leave ONE project
    network (v2 labels it as the project's, com.docker.compose.network=default), both serve; the
    next pair finds the network and recreates under the shared project lock: no lock wait, both
    serve their commits, still one network."""
    for s in SERVICES:
        at(rig, s, C[f"{s}-a"])
    network = f"{project.name}_default"
    rig.d601.sh(
        'cd "$1" && "$2" -p "$3" down -t 1 >/dev/null 2>&1', project.base, str(COMPOSE_V2), project.name
    )
    assert network not in networks(rig)
    first = deploy_at_once(rig, {s: C[f"{s}-b"] for s in SERVICES})
    for s, r in first.items():
        assert r.returncode == 0 and r.json is not None, (s, r.stdout, r.stderr[-2000:])
        assert r.json["composeCommand"] == "docker compose"
    assert networks(rig).count(network) == 1, networks(rig)
    labels = rig.d601.sh(
        'docker network inspect -f \'{{index .Labels "com.docker.compose.project"}} '
        '{{index .Labels "com.docker.compose.network"}}\' "$1"', network
    ).stdout.split()  # fmt: skip
    assert labels == [project.name, "default"], labels
    for s in SERVICES:
        assert serving(rig, project, s) == C[f"{s}-b"]
    second = deploy_at_once(rig, {s: C[f"{s}-c"] for s in SERVICES})
    for s, r in second.items():
        assert r.returncode == 0 and r.json is not None, (s, r.stdout, r.stderr[-2000:])
        assert r.json["lockWaitSeconds"] == 0, (s, r.json["lockWaitSeconds"], r.stderr[-2000:])
    assert networks(rig).count(network) == 1, networks(rig)
    for s in SERVICES:
        host_check(rig, project, s, C[f"{s}-c"])


def test_an_unhealthy_commit_is_restored_by_v2(rig: Rig, project: V2Project) -> None:
    """autoRestore on: the unhealthy commit runs, fails its health wait, and v2 recreates the
    previous commit from the restored tag and env values, verified; the audit line says restored."""
    service = "pipeline"
    a = C["pipeline-a"]
    at(rig, service, a)
    done = deploy(rig, project, service, C["pipeline-unhealthy"])
    assert done.returncode == 6 and done.json is not None, (done.stdout, done.stderr)
    doc = done.json
    assert doc["error"] == "unhealthy" and doc["recreated"] is True and doc["previousCommit"] == a
    assert doc["restore"] == {"attempted": True, "ok": True, "commit": a, "note": "restored and verified"}
    assert doc["restored"] == ["retag", "env-file", "container"]
    last = audit_lines(rig.d601, service)[-1]
    assert last["event"] == "finished" and last["verdict"] == "restored" and last["error"] == "unhealthy"
    host_check(rig, project, service, a)


def test_the_registry_host_installs_and_restarts_under_v2(rig: Rig, project: V2Project) -> None:
    """R7 with the product's default registry.composeCommand (`/usr/bin/docker compose`, which every
    other rig test overrides with v1) on a fresh systemd host with only the v2 plugin: the plan's
    install steps run as the operator, the acceptance is healthy, a second install writes and
    restarts nothing, and a restart of the unit (its ExecStart is v2) starts the container again,
    healthy, on loopback."""
    with rig.fresh_host("regv2") as host:
        link_compose_v2(host)
        raw = rig.stack_config("prod")
        raw["hosts"]["d601"] = {"host": host.address, "user": host.user, "port": host.port}
        del raw["registry"]["composeCommand"]
        cfg = parse_stack_config(raw, "prod")
        assert cfg.registry.compose_command == "/usr/bin/docker compose"

        def install() -> dict[str, dict[str, Any]]:
            results: dict[str, dict[str, Any]] = {}
            for step in plan_registry_host(cfg).steps:
                done = host.run_step(step, timeout=300)
                assert done.returncode == 0 and done.json is not None, (
                    step.id,
                    done.stdout,
                    done.stderr[-2000:],
                )
                results[step.id] = done.json
            verdict = health.decide(results["registry-acceptance"], mode="health")
            assert verdict["decision"] == "healthy", verdict
            return results

        def container() -> list[str]:
            return host.sh('docker inspect -f "{{.Id}} {{.State.StartedAt}}" -- "$1"',
                           cfg.registry.container_name).stdout.split()  # fmt: skip

        first = install()
        assert first["registry-activate"]["started"] is True
        unit = host.sh('systemctl cat -- "$1"', cfg.registry.unit_name).stdout
        assert "/usr/bin/docker compose" in unit, unit
        before = container()
        again = install()
        assert [again[s]["result"] for s in ("registry-config", "registry-compose", "registry-unit")] == [
            "unchanged"
        ] * 3
        assert again["registry-activate"]["restarted"] is False and container() == before
        host.sh('systemctl restart -- "$1"', cfg.registry.unit_name, timeout=180)
        # Type=simple: restart returns once `compose up` is forked, before it started the container
        deadline = time.monotonic() + 60
        while (after := container()) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert after and after[1] != before[1], "the unit's restart started the container again"
        assert host.sh(
            'docker inspect -f "{{.State.Running}}" -- "$1"', cfg.registry.container_name
        ).stdout.strip() == ("true")
        assert host.sh('docker port -- "$1"', cfg.registry.container_name).stdout.split() == [
            "5000/tcp", "->", "127.0.0.1:5000"
        ]  # fmt: skip
        acceptance = host.run_step(plan_registry_host(cfg).steps[-1], timeout=300)
        assert acceptance.json is not None
        assert health.decide(acceptance.json, mode="health")["decision"] == "healthy"
