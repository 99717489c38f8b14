"""Compose consumers on the real rig: deploy, redeploy, roll back, and every fault (R11, R14-R16, R18, R19).

Every step runs exactly as the plan gives it (``plan_service(cfg, id).steps``, argv and script
text untouched) over real SSH on the host the step names, with the manifest check's live digest
and image ID filled in: D601 (registry, manifest check, D601-direct Compose) and the master server
(reaches D601 only by SSH). The Compose projects of the test services are fixtures
(compose_project.py: image = retag name, container_name, env_file = the controlled env file, init: true).

Fault tests end in a structured failure; before the recreate the running container must be
untouched (same container ID) and still answer its previous commit; after the recreate the
failure names the previous commit and how to roll back, and the rollback is then proven.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from artifact_cd import catalog
from artifact_cd.audit import pair_runs, parse_log
from artifact_cd.config import parse_stack_config
from artifact_cd.contract import AUDIT_LOG_DEFAULT
from artifact_cd.gates import Decision
from artifact_cd.plan import plan_service
from tests.integration.compose_project import ComposeProject, compose_target
from tests.rig import Host, Rig, StepResult

pytestmark = pytest.mark.integration

PROJECT = ComposeProject(
    "unidesk-deploy-tests",
    {"baidu-netdisk": "master", "oa-event-flow": "master", "todo-note": "master", "findjob": "d601"},
)
ENV = PROJECT.env
SECRETS = {
    "UNIDESK_BAIDU_NETDISK_CLIENT_ID": "cid-7Hq2-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": "csec-Xw91-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": "tkey-Lp55-not-for-logs",
}
# The controlled env file as an operator keeps it: comments, CRLF, other keys, secrets.
ENV_FILE_BASE = (
    "# controlled env file (test fixture)\r\n"
    "OTHER_SERVICE_TOKEN=keep-me-byte-for-byte\n"
    + "".join(f"{k}={v}\n" for k, v in SECRETS.items())
    + "SPACED = value with spaces  \n"
)


def sha(label: str) -> str:
    """A deterministic 40-hex commit per label (unique per test module run by the label)."""
    return hashlib.sha1(f"deploy-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


C = {
    label: sha(label)
    for label in (
        "baidu-a", "baidu-b", "baidu-noauth",
        "oa-a", "oa-b", "oa-c", "oa-unhealthy", "oa-stale", "oa-padded", "oa-never-published",
        "findjob-a", "findjob-b", "todo-a", "todo-b",
    )
}


# --------------------------------------------------------------------------- helpers


@dataclass
class Deploy:
    service: str
    commit: str
    results: dict[str, StepResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.returncode == 0 for r in self.results.values()) and "deploy" in self.results

    @property
    def last(self) -> tuple[str, StepResult]:
        step_id = list(self.results)[-1]
        return step_id, self.results[step_id]

    def output(self) -> str:
        return "\n".join(r.stdout + r.stderr for r in self.results.values())

    def describe(self) -> str:
        return "\n".join(f"[{k}] rc={r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-2500:]}" for k, r in self.results.items())


def stack(rig: Rig, service: str, commit: str, *, mode: str = "tunnel") -> Any:
    raw = PROJECT.stack_config(rig, {service: commit})
    raw["transfer"]["mode"] = mode
    return parse_stack_config(raw, ENV)


def deploy(rig: Rig, service: str, commit: str, *, mode: str = "tunnel", until: str | None = None) -> Deploy:
    """Run the plan's steps in order, as the Pulumi Commands would; stop at the first failure."""
    plan = plan_service(stack(rig, service, commit, mode=mode), service)
    assert plan.decision == Decision.PLANNED, plan.reason
    out = Deploy(service, commit)
    check = rig.d601.run_step(plan.steps[0])
    out.results["manifest-check"] = check
    if check.returncode != 0:
        return out
    assert check.json is not None
    for step in plan.steps[1:]:
        result = rig.host(step.host).run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
        out.results[step.id] = result
        if result.returncode != 0 or step.id == until:
            break
    return out


@dataclass(frozen=True)
class Live:
    container_id: str
    image_id: str
    revision: str
    health: dict[str, Any] | None


def live(rig: Rig, service: str) -> Live:
    """What runs now: container ID, image, label, and the health payload fetched on the host."""
    entry = catalog.get(service)
    assert entry is not None
    container = compose_target(service).container_name
    fmt = '{{.Id}} {{.Image}} {{index .Config.Labels "org.opencontainers.image.revision"}} ' \
          "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    proc = PROJECT.host(rig, service).sh(
        'docker inspect -f "$1" "$2" || exit 0\n', fmt, container, check=False
    )
    parts = proc.stdout.split()
    if len(parts) < 3:
        return Live("", "", "", None)
    cid, image, revision, *ips = parts
    health = None
    if ips:
        got = PROJECT.host(rig, service).sh(
            'curl -s --max-time 5 "http://$1:$2$3" || true', ips[0], str(entry.health.port), entry.health.path, check=False
        )
        try:
            health = json.loads(got.stdout)
        except ValueError:
            health = None
    return Live(cid, image, revision, health)


def answers(state: Live, commit: str) -> bool:
    """The running container is on ``commit`` (label) and its health says so."""
    if state.revision != commit or state.health is None:
        return False
    deploy_doc = state.health.get("deploy")
    if deploy_doc is None:  # todo-note: /api/health has no deploy section
        return state.health.get("status") == "ok"
    return bool(deploy_doc.get("commit") == commit == deploy_doc.get("requestedCommit"))


def ensure_at(rig: Rig, service: str, commit: str) -> Live:
    state = live(rig, service)
    if not answers(state, commit):
        done = deploy(rig, service, commit)
        assert done.ok, done.describe()
        state = live(rig, service)
    assert answers(state, commit), state
    return state


def assert_untouched(rig: Rig, service: str, before: Live) -> None:
    after = live(rig, service)
    assert after.container_id == before.container_id, "the container was touched by a failed deploy"
    assert answers(after, before.revision), after


def assert_no_secret(text: str) -> None:
    for value in SECRETS.values():
        assert value not in text, "a secret value appeared in an output"


def read_env_file(h: Host) -> tuple[str, str]:
    out = h.sh('stat -c %a "$1"; cat "$1"', PROJECT.env_file).stdout
    mode, _, content = out.partition("\n")
    return mode, content


def d601_link(rig: Rig) -> str:
    """The D601 end of the private master<->D601 link (the only non-docker global IPv4 address)."""
    out = rig.d601.sh("ip -o -4 addr show scope global").stdout
    for line in out.splitlines():
        name, addr = line.split()[1], line.split()[3]
        if addr.startswith("10.") and not name.startswith(("docker", "br-", "veth")):
            return name.split("@")[0]
    raise AssertionError(f"no link interface on d601: {out}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def published(rig: Rig) -> dict[str, dict[str, str]]:
    """Every test image of this module, published once on D601 (CI's job)."""
    images: dict[str, dict[str, str]] = {}

    def pub(label: str, service: str, variant: str = "standard", pad: int = 0) -> None:
        images[label] = rig.publish_test_image(service, C[label], variant=variant, pad_bytes=pad)

    pub("baidu-a", "baidu-netdisk", "baidu")
    pub("baidu-b", "baidu-netdisk", "baidu")
    pub("baidu-noauth", "baidu-netdisk", "standard")
    for label in ("oa-a", "oa-b", "oa-c"):
        pub(label, "oa-event-flow")
    pub("oa-unhealthy", "oa-event-flow", "unhealthy")
    pub("oa-stale", "oa-event-flow", "stale")
    pub("oa-padded", "oa-event-flow", "standard", pad=48 * 1024 * 1024)
    pub("findjob-a", "findjob")
    pub("findjob-b", "findjob")
    pub("todo-a", "todo-note", "todo-note")
    pub("todo-b", "todo-note", "todo-note")
    return images


@pytest.fixture(scope="module")
def projects(rig: Rig, published: dict[str, dict[str, str]]) -> Iterator[None]:
    """The Compose projects: master (baidu-netdisk, oa-event-flow, todo-note) and D601 (findjob)."""
    PROJECT.install(rig, ENV_FILE_BASE)
    yield
    PROJECT.remove(rig)


# --------------------------------------------------------------------------- deploy A -> B -> A


def test_baidu_netdisk_a_b_a_on_the_master_with_secrets_and_auth_gate(rig: Rig, projects: None,
                                                                      published: dict[str, dict[str, str]]) -> None:
    """R14/R15/R18: A, B, back to A over the SSH tunnel; the verdict proves image, label, health,
    secrets (present/length only) and the five auth booleans; the env file keeps every other byte."""
    a, b = C["baidu-a"], C["baidu-b"]
    seen: list[Deploy] = []
    previous = None
    for commit, label in ((a, "baidu-a"), (b, "baidu-b"), (a, "baidu-a")):
        done = deploy(rig, "baidu-netdisk", commit)
        seen.append(done)
        assert done.ok, done.describe()
        verdict = done.results["deploy"].json
        assert verdict is not None and verdict["ok"] is True
        assert verdict["commit"] == commit and verdict["revisionLabel"] == commit
        assert verdict["registryDigest"] == published[label]["digest"] == done.results["transfer"].json["digest"]  # type: ignore[index]
        assert verdict["imageId"] == published[label]["imageId"] == verdict["containerImageId"]
        assert verdict["imageMatches"] is True
        assert verdict["health"]["deployCommit"] == commit == verdict["health"]["requestedCommit"]
        assert verdict["auth"] == dict.fromkeys(
            ("configured", "clientIdConfigured", "clientSecretConfigured", "tokenKeyConfigured", "loggedIn"), True
        )
        assert verdict["secrets"] == {k: {"present": True, "length": len(v)} for k, v in SECRETS.items()}
        assert verdict["images"] == ["baidu-netdisk", f"baidu-netdisk:{commit}"]
        assert verdict["previousCommit"] == previous
        previous = commit
        state = live(rig, "baidu-netdisk")
        assert answers(state, commit) and state.container_id == verdict["containerId"]

    transfers = [d.results["transfer"].json for d in seen]
    assert all(t is not None and t["mode"] == "tunnel" for t in transfers)
    assert transfers[0]["alreadyPresent"] is False and transfers[0]["bytesMoved"] > 0  # type: ignore[index]
    assert transfers[2]["alreadyPresent"] is True and transfers[2]["bytesMoved"] == 0  # type: ignore[index]
    # only the small top layer crossed for B: far less than A's full image
    assert 0 < transfers[1]["bytesMoved"] < transfers[0]["bytesMoved"]  # type: ignore[index]
    for done in seen:
        assert_no_secret(done.output())

    mode, content = read_env_file(rig.master)
    assert mode == "600"
    kept = "".join(line for line in content.splitlines(keepends=True) if not line.startswith("UNIDESK_BAIDU_NETDISK_DEPLOY_"))
    assert kept == ENV_FILE_BASE
    assert f"UNIDESK_BAIDU_NETDISK_DEPLOY_COMMIT={a}\n" in content
    assert f"UNIDESK_BAIDU_NETDISK_DEPLOY_DIGEST={published['baidu-a']['digest']}\n" in content
    images = rig.master.sh("docker image inspect -f '{{.Id}}' baidu-netdisk:latest \"baidu-netdisk:$1\"", a).stdout.split()
    assert images == [published["baidu-a"]["imageId"]] * 2
    repositories = rig.master.sh("docker images --format '{{.Repository}}'").stdout.split()
    assert "127.0.0.1:5000/unidesk/baidu-netdisk" in repositories
    tunnel_names = [r for r in repositories if r.startswith("127.0.0.1:") and not r.startswith("127.0.0.1:5000/")]
    assert tunnel_names == [], "the tunnel-port names are removed after the pull"


def test_standard_service_a_b_a_with_the_stream_fallback(rig: Rig, projects: None,
                                                          published: dict[str, dict[str, str]]) -> None:
    """oa-event-flow (standard verification): A by tunnel, B by the docker save | docker load stream,
    A again; the stream reports the tar bytes and still verifies the image ID before tagging."""
    a, b = C["oa-a"], C["oa-b"]
    first = deploy(rig, "oa-event-flow", a)
    assert first.ok, first.describe()
    second = deploy(rig, "oa-event-flow", b, mode="stream")
    assert second.ok, second.describe()
    stream = second.results["transfer"].json
    assert stream is not None and stream["mode"] == "stream" and stream["bytesMoved"] > 0
    assert stream["imageId"] == published["oa-b"]["imageId"]
    verdict = second.results["deploy"].json
    assert verdict is not None and verdict["previousCommit"] == a and verdict["containerImageId"] == published["oa-b"]["imageId"]
    back = deploy(rig, "oa-event-flow", a)
    assert back.ok, back.describe()
    assert back.results["deploy"].json["previousCommit"] == b  # type: ignore[index]
    assert answers(live(rig, "oa-event-flow"), a)


def test_d601_direct_findjob_a_b_a(rig: Rig, projects: None, published: dict[str, dict[str, str]]) -> None:
    """R16: on D601 itself: manifest check, pull from the local registry, retag, stamp, recreate."""
    a, b = C["findjob-a"], C["findjob-b"]
    previous = None
    for commit, label in ((a, "findjob-a"), (b, "findjob-b"), (a, "findjob-a")):
        done = deploy(rig, "findjob", commit)
        assert done.ok, done.describe()
        assert list(done.results) == ["manifest-check", "pull", "deploy"]
        pull = done.results["pull"].json
        assert pull is not None and pull["mode"] == "local" and pull["imageId"] == published[label]["imageId"]
        verdict = done.results["deploy"].json
        assert verdict is not None and verdict["previousCommit"] == previous
        assert verdict["registryDigest"] == published[label]["digest"]
        previous = commit
        assert answers(live(rig, "findjob"), commit)
    assert live(rig, "findjob").container_id, "findjob runs on D601"
    assert rig.master.sh("docker inspect findjob-backend >/dev/null 2>&1 && echo yes || echo no").stdout.strip() == "no"


def test_todo_note_synthetic_health(rig: Rig, projects: None) -> None:
    """R19: /api/health says only ok; deploy.commit is synthesised from the image label and
    requestedCommit from the container's UNIDESK_TODO_NOTE_DEPLOY_COMMIT."""
    for commit in (C["todo-a"], C["todo-b"]):
        done = deploy(rig, "todo-note", commit)
        assert done.ok, done.describe()
        health = done.results["deploy"].json["health"]  # type: ignore[index]
        assert health["synthetic"] is True and health["status"] == "ok"
        assert health["deployCommit"] == commit == health["requestedCommit"]
        env = rig.master.sh(
            "docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' todo-note-backend | grep '^UNIDESK_TODO_NOTE_DEPLOY_COMMIT='"
        ).stdout.strip()
        assert env == f"UNIDESK_TODO_NOTE_DEPLOY_COMMIT={commit}"


# --------------------------------------------------------------------------- faults before the recreate


def test_registry_stopped(rig: Rig, projects: None, published: dict[str, dict[str, str]]) -> None:
    """The registry is down: the manifest check fails retryable and nothing on any target moves;
    a transfer started with a digest from before the outage fails the same way."""
    before = ensure_at(rig, "oa-event-flow", C["oa-a"])
    plan = plan_service(stack(rig, "oa-event-flow", C["oa-c"]), "oa-event-flow")
    rig.d601.sh("systemctl stop unidesk-artifact-registry.service")
    try:
        done = deploy(rig, "oa-event-flow", C["oa-c"])
        step, result = done.last
        assert step == "manifest-check" and result.returncode == 4, done.describe()
        assert result.json is not None and result.json["error"] == "registry-unreachable" and result.json["retryable"] is True
        transfer = rig.master.run_step(
            plan.step_by_id["transfer"], digest=published["oa-c"]["digest"], image_id=published["oa-c"]["imageId"]
        )
        assert transfer.returncode == 4 and transfer.json is not None, transfer.stderr
        assert transfer.json["error"] == "registry-unreachable"
        findjob = plan_service(stack(rig, "findjob", C["findjob-b"]), "findjob").step_by_id["pull"]
        rig.d601.sh('docker image rm "$1" >/dev/null 2>&1 || true', f"127.0.0.1:5000/unidesk/findjob:{C['findjob-b']}")
        pull = rig.d601.run_step(findjob, digest=published["findjob-b"]["digest"], image_id=published["findjob-b"]["imageId"])
        assert pull.returncode == 4 and pull.json is not None, pull.stdout
        assert pull.json["error"] == "registry-unreachable" and pull.json["retryable"] is True
    finally:
        rig.d601.sh(
            "systemctl start unidesk-artifact-registry.service; for i in $(seq 150); do "
            "[ \"$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/)\" = 200 ] && exit 0; sleep 0.2; done; exit 1"
        )
    assert_untouched(rig, "oa-event-flow", before)
    assert rig.master.sh('docker image inspect "$1" >/dev/null 2>&1 && echo present || echo absent',
                         f"127.0.0.1:5000/unidesk/oa-event-flow:{C['oa-c']}").stdout.strip() == "absent"


def test_tag_missing(rig: Rig, projects: None) -> None:
    before = ensure_at(rig, "oa-event-flow", C["oa-a"])
    done = deploy(rig, "oa-event-flow", C["oa-never-published"])
    step, result = done.last
    assert step == "manifest-check" and result.returncode == 3, done.describe()
    assert result.json is not None and result.json["error"] == "manifest-missing" and result.json["retryable"] is False
    assert_untouched(rig, "oa-event-flow", before)


def test_ssh_to_d601_refused(rig: Rig, projects: None) -> None:
    """D601's sshd is stopped after the manifest check: the master's transfer fails ssh-unreachable
    (retryable), nothing is tagged or started; with sshd back the same deploy succeeds."""
    before = ensure_at(rig, "oa-event-flow", C["oa-a"])
    plan = plan_service(stack(rig, "oa-event-flow", C["oa-c"]), "oa-event-flow")
    check = rig.d601.run_step(plan.steps[0])
    assert check.returncode == 0 and check.json is not None
    rig.d601.sh("systemctl stop ssh.service")
    try:
        transfer = rig.master.run_step(plan.step_by_id["transfer"], digest=check.json["digest"], image_id=check.json["imageId"])
    finally:
        rig.d601.sh("systemctl start ssh.service")
    assert transfer.returncode == 4 and transfer.json is not None, transfer.stderr
    assert transfer.json["error"] == "ssh-unreachable" and transfer.json["retryable"] is True
    assert "Connection refused" in transfer.json["detail"]
    assert_untouched(rig, "oa-event-flow", before)
    assert rig.master.sh("ps -eo args | grep -c '^ssh .*-N -L' || true", check=False).stdout.strip() == "0", "no tunnel left"
    for _ in range(50):
        if rig.d601.sh("systemctl is-active ssh.service", check=False).stdout.strip() == "active":
            break
        time.sleep(0.1)
    retry = deploy(rig, "oa-event-flow", C["oa-c"])
    assert retry.ok, retry.describe()


@pytest.mark.parametrize("mode", ["tunnel", "stream"])
def test_transfer_cut_mid_way(rig: Rig, projects: None, published: dict[str, dict[str, str]], mode: str) -> None:
    """A ~48 MB image crosses a rate-limited link; the SSH connection carrying it is killed mid-way:
    transfer-failed (retryable), the commit tag is not created, the running container is untouched."""
    before = ensure_at(rig, "oa-event-flow", C["oa-a"])
    plan = plan_service(stack(rig, "oa-event-flow", C["oa-padded"], mode=mode), "oa-event-flow")
    link = d601_link(rig)
    rig.d601.sh('tc qdisc add dev "$1" root tbf rate 32mbit burst 64kb latency 1s', link)
    result: list[StepResult] = []
    try:
        worker = threading.Thread(
            target=lambda: result.append(
                rig.master.run_step(plan.step_by_id["transfer"], digest=published["oa-padded"]["digest"],
                                    image_id=published["oa-padded"]["imageId"])
            )
        )
        worker.start()
        pattern = "-N -L 127.0.0.1:" if mode == "tunnel" else "docker save"
        victim = ""
        deadline = time.monotonic() + 20
        while not victim and time.monotonic() < deadline:
            ps = rig.master.sh("ps -eo pid,args", check=False).stdout.splitlines()
            victim = next((line.split()[0] for line in ps if line.split()[1:2] == ["ssh"] and pattern in line), "")
            time.sleep(0.1)
        assert victim, "the transfer's ssh never started"
        time.sleep(1.5)  # some megabytes are on the way
        rig.master.sh('kill -TERM "$1"', victim)
        worker.join(120)
    finally:
        rig.d601.sh('tc qdisc del dev "$1" root', link, check=False)
    assert result, "the transfer step did not return"
    transfer = result[0]
    assert transfer.returncode == 4 and transfer.json is not None, (transfer.stdout, transfer.stderr)
    assert transfer.json["error"] == "transfer-failed" and transfer.json["retryable"] is True
    ref = f"127.0.0.1:5000/unidesk/oa-event-flow:{C['oa-padded']}"
    assert rig.master.sh('docker image inspect "$1" >/dev/null 2>&1 && echo present || echo absent', ref).stdout.strip() == "absent"
    assert_untouched(rig, "oa-event-flow", before)


def test_baidu_secret_missing(rig: Rig, projects: None) -> None:
    """R15: a required key is absent: secret-missing before anything is touched; the output names
    the key and its presence/length only — no secret value appears in any output."""
    before = ensure_at(rig, "baidu-netdisk", C["baidu-a"])
    _, content = read_env_file(rig.master)
    broken = "".join(line for line in content.splitlines(keepends=True)
                     if not line.startswith("UNIDESK_BAIDU_NETDISK_CLIENT_SECRET="))
    PROJECT.write_env_file(rig.master, broken)
    try:
        done = deploy(rig, "baidu-netdisk", C["baidu-b"])
        step, result = done.last
        assert step == "deploy" and result.returncode == 3, done.describe()
        doc = result.json
        assert doc is not None and doc["error"] == "secret-missing"
        assert doc["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"]
        assert doc["secrets"]["UNIDESK_BAIDU_NETDISK_CLIENT_ID"] == {"present": True, "length": len(SECRETS["UNIDESK_BAIDU_NETDISK_CLIENT_ID"])}
        assert doc["secrets"]["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"] == {"present": False, "length": 0}
        assert "recreate only baidu-netdisk" in doc["recommendedAction"]
        assert_no_secret(done.output())
        assert read_env_file(rig.master)[1] == broken, "the env file was not touched"
        tags = rig.master.sh("docker image inspect -f '{{.Id}}' baidu-netdisk:latest").stdout.strip()
        assert tags == before.image_id, "baidu-netdisk was not retagged"
    finally:
        PROJECT.write_env_file(rig.master, content)
    assert_untouched(rig, "baidu-netdisk", before)


def deploy_steps_at_once(rig: Rig, runs: dict[str, tuple[str, str]]) -> dict[str, StepResult]:
    """{key: (service, commit label)}: run each one's manifest check and transfer in turn, then
    start all their deploy steps on the master at the same moment (as Pulumi runs independent
    Commands) and wait for them. Returns each deploy step's result."""
    prepared: dict[str, tuple[Any, Any]] = {}
    for key, (service, label) in runs.items():
        plan = plan_service(stack(rig, service, C[label]), service)
        check = rig.d601.run_step(plan.steps[0])
        assert check.json is not None and check.returncode == 0, check.stderr
        moved = rig.master.run_step(plan.step_by_id["transfer"], digest=check.json["digest"], image_id=check.json["imageId"])
        assert moved.returncode == 0, moved.stderr
        prepared[key] = (plan.step_by_id["deploy"], check.json)
    results: dict[str, StepResult] = {}

    def go(key: str) -> None:
        step, facts = prepared[key]
        results[key] = rig.master.run_step(step, digest=facts["digest"], image_id=facts["imageId"])

    threads = [threading.Thread(target=go, args=(key,)) for key in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(r.returncode == 0 for r in results.values()), {k: (r.stdout, r.stderr[-2000:]) for k, r in results.items()}
    return results


def test_two_deploys_of_one_service_at_once(rig: Rig, projects: None) -> None:
    """The per-service lock: two deploy steps start together; one waits for the other, both finish,
    and the env file and the container agree on the one that ran last."""
    ensure_at(rig, "oa-event-flow", C["oa-a"])
    results = deploy_steps_at_once(rig, {label: ("oa-event-flow", label) for label in ("oa-b", "oa-c")})
    docs = {label: r.json for label, r in results.items()}
    waited = [label for label, doc in docs.items() if doc and doc["lockWaitSeconds"] > 0]
    assert len(waited) == 1, docs
    last = waited[0]
    first = next(label for label in docs if label != last)
    assert "waiting up to" in results[last].stderr
    assert docs[last]["previousCommit"] == C[first], "the waiter ran after the holder finished"  # type: ignore[index]
    assert answers(live(rig, "oa-event-flow"), C[last])
    assert f"UNIDESK_OA_EVENT_FLOW_DEPLOY_COMMIT={C[last]}\n" in read_env_file(rig.master)[1]


def test_two_services_of_one_fresh_project_deploy_at_once(rig: Rig, projects: None) -> None:
    """Pulumi runs independent consumers concurrently. Two services of one Compose project recreated
    at once, on a project whose network does not exist yet, both succeed and leave ONE project
    network (two concurrent `compose up` would create two, and every later start fails "ambiguous")."""
    ensure_at(rig, "oa-event-flow", C["oa-a"])
    ensure_at(rig, "todo-note", C["todo-a"])
    network = f"{PROJECT.name}_default"
    rig.master.sh('cd "$1" && docker-compose -p "$2" --env-file "$1/.env.deploy" down -t 1 >/dev/null 2>&1',
                  PROJECT.base, PROJECT.name)
    assert network not in rig.master.sh('docker network ls --format "{{.Name}}"').stdout.split()
    results = deploy_steps_at_once(rig, {"oa-event-flow": ("oa-event-flow", "oa-b"), "todo-note": ("todo-note", "todo-b")})
    names = rig.master.sh('docker network ls --format "{{.Name}}"').stdout.split()
    assert names.count(network) == 1, names
    assert answers(live(rig, "oa-event-flow"), C["oa-b"])
    assert results["todo-note"].json is not None and results["todo-note"].json["commit"] == C["todo-b"]
    # the host's audit log took both at once: every line whole, each run started and finished ok
    # (issue 13: concurrent deploys of two services on one host lose or interleave no line)
    parsed = parse_log(rig.master.sh("cat -- \"$1\"", AUDIT_LOG_DEFAULT).stdout)
    assert parsed.skipped_lines == 0
    for service, commit in (("oa-event-flow", C["oa-b"]), ("todo-note", C["todo-b"])):
        runs = [r for r in pair_runs(parsed.records) if r.record.service == service and r.record.step == "compose-deploy"]
        assert runs and runs[-1].started is not None and runs[-1].verdict == "ok", runs[-1:]
        assert runs[-1].record.to_commit == commit


# --------------------------------------------------------------------------- faults after the recreate


def _failed_after_recreate(done: Deploy, error: str, previous: str) -> dict[str, Any]:
    step, result = done.last
    assert step == "deploy" and result.returncode == 6, done.describe()
    doc = result.json
    assert doc is not None and doc["error"] == error and doc["recreated"] is True
    assert doc["previousCommit"] == previous and doc["rollback"]["previousCommit"] == previous
    assert previous in doc["detail"] and "pulumi up" in doc["rollback"]["how"]
    return doc


def test_new_container_unhealthy_then_rollback(rig: Rig, projects: None) -> None:
    """The new container answers 500: unhealthy after the bounded wait, naming the previous commit;
    redeploying that commit restores the service."""
    ensure_at(rig, "oa-event-flow", C["oa-a"])
    done = deploy(rig, "oa-event-flow", C["oa-unhealthy"])
    doc = _failed_after_recreate(done, "unhealthy", C["oa-a"])
    assert "HTTP 500" in doc["detail"]
    back = deploy(rig, "oa-event-flow", C["oa-a"])
    assert back.ok, back.describe()
    assert answers(live(rig, "oa-event-flow"), C["oa-a"])


def test_health_reports_an_old_commit_then_rollback(rig: Rig, projects: None) -> None:
    ensure_at(rig, "oa-event-flow", C["oa-a"])
    done = deploy(rig, "oa-event-flow", C["oa-stale"])
    doc = _failed_after_recreate(done, "commit-mismatch", C["oa-a"])
    assert doc["health"]["requestedCommit"] == C["oa-stale"] != doc["health"]["deployCommit"]
    back = deploy(rig, "oa-event-flow", C["oa-a"])
    assert back.ok, back.describe()


def test_baidu_auth_not_configured_then_rollback(rig: Rig, projects: None) -> None:
    """R15: an image whose health has no auth section: auth-not-configured with the restore hint."""
    ensure_at(rig, "baidu-netdisk", C["baidu-a"])
    done = deploy(rig, "baidu-netdisk", C["baidu-noauth"])
    doc = _failed_after_recreate(done, "auth-not-configured", C["baidu-a"])
    assert "recreate only baidu-netdisk" in doc["detail"] and "microservice health baidu-netdisk" in doc["detail"]
    assert doc["secrets"]["UNIDESK_BAIDU_NETDISK_TOKEN_KEY"]["present"] is True
    assert_no_secret(done.output())
    back = deploy(rig, "baidu-netdisk", C["baidu-a"])
    assert back.ok, back.describe()

