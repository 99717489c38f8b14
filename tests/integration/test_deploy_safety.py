"""A failed or interrupted Compose deploy leaves the host as it was and says what it did (issue 12
items 1-5 for Compose; issue 11 item 2: the project's own .env; issue 13 item 1: audit lines).

R14/R16/R19 deploys through the plan's own steps (argv and script text untouched) over real SSH:
- a failure before the live switch restores the retag and the env file byte for byte;
- two targets that share a container name and retag on one host are serialized by the locks
  keyed on what is mutated (the second waits, then is refused before touching anything);
- an unhealthy commit with autoRestore on ends with the previous commit serving and verified, off
  with the unhealthy commit reported as it stands; previousCommit survives either;
- the SSH session lost (the client, and separately the sshd child) the moment the recreate starts:
  the detached switch finishes, and a later run picks its result up;
- a full env directory and a full TMPDIR are disk-full (non-retryable) with nothing half-written;
- the project's .env still interpolates ${VAR} and sets COMPOSE_FILE;
- a service in a non-default Compose file named by ``names.composeFiles`` deploys from it; a
  wrong file name is refused in the preflight with the old container untouched (issue 11 item 3).
Each ends with the host check: one consistent commit serving (container image = label = health =
requested), the verdict's facts true, no lock held, no temp/staged file, no renamed container, and
a clean re-run of the same deploy succeeds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from artifact_cd import catalog
from artifact_cd.config import parse_stack_config
from artifact_cd.contract import ManifestFacts, last_json_object
from artifact_cd.gates import Decision
from artifact_cd.plan import plan_service
from artifact_cd.plan.step import Step
from artifact_cd.scripts import command_line, script_text
from tests.integration.compose_project import ComposeProject
from tests.rig import Host, Rig, StepResult
from tests.rig.rig import OPERATOR

pytestmark = pytest.mark.integration

SERVICE = "oa-event-flow"  # compose-master (the master server)
PREFIX = "UNIDESK_OA_EVENT_FLOW_DEPLOY_"
AUDIT_LOG = "/var/log/unidesk/deploy-audit.jsonl"


def sha(label: str) -> str:
    return hashlib.sha1(f"safety-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


C = {label: sha(label) for label in ("oa-a", "oa-b", "oa-c", "oa-unhealthy", "findjob-a", "findjob-b")}


@dataclass(frozen=True)
class SafetyProject(ComposeProject):
    """The module's project, plus what a real project has: a ``.env`` that Compose interpolates
    (``${SAFETY_LABEL}``) and whose ``COMPOSE_FILE`` adds ``extra.yml``; the controlled env file in
    ``env/`` (a directory a test can mount a tiny filesystem on); an optional Compose wrapper."""

    auto_restore: bool = False
    wrapper: bool = False

    @property
    def env_file(self) -> str:
        return f"{self.base}/env/.env.deploy"

    def settings(self) -> dict[str, Any]:
        out = {**super().settings(), "healthTimeoutSeconds": 5, "autoRestore": self.auto_restore}
        if self.wrapper:
            out["command"] = f"{self.base}/compose-wrapper"
        return out

    def extra_file(self, host: str) -> str:
        lines = ['version: "2.4"', "services:"]
        for service, where in self.services.items():
            if where == host:
                lines += [
                    f"  {self.target(service).compose_service}:",
                    "    labels:",
                    '      io.unidesk.test.dotenv: "${SAFETY_LABEL}"',
                ]
        return "\n".join(lines) + "\n"

    def install(self, rig: Rig, env_file: str) -> None:
        super().install(rig, env_file)
        for host in ("master", "d601"):
            h = rig.host(host)
            h.write_file(f"{self.base}/extra.yml", self.extra_file(host), owner=h.user)
            h.write_file(
                f"{self.base}/.env",
                "COMPOSE_FILE=docker-compose.yml:extra.yml\nSAFETY_LABEL=from-dotenv\n",
                owner=h.user,
            )
            # docker-compose, except: `up` fails (before Compose runs) while <base>/fail-up exists, and
            # `config` fails while <base>/fail-config holds the commit in the deploy values
            h.write_file(
                f"{self.base}/compose-wrapper",
                f'#!/bin/bash\nif [[ -e {self.base}/fail-up && " $* " == *" up "* ]]; then\n'
                '  echo "wrapper: up refused (test)" >&2; exit 1\nfi\n'
                f'if [[ " $* " == *" config "* && -e {self.base}/fail-config &&\n'
                f'      $(cat {self.base}/fail-config) == "${{{PREFIX}COMMIT:-}}" ]]; then\n'
                '  echo "wrapper: config refused for this commit (test)" >&2; exit 1\nfi\n'
                'exec docker-compose "$@"\n',
                mode="0755",
            )


PROJECT = SafetyProject("unidesk-safety-tests", {SERVICE: "master"}, auto_restore=False, wrapper=True)
ENV_FILE_BASE = "# safety tests\nOTHER_KEY=keep-me\nSECRET_LIKE=not-for-logs-9f2\n"


# --------------------------------------------------------------------------- helpers


def stack(
    rig: Rig, project: ComposeProject, service: str, commit: str, names: dict[str, Any] | None = None
) -> Any:
    raw = project.stack_config(rig, {service: commit})
    if names:
        raw["services"][service]["names"] = names
    return parse_stack_config(raw, project.env)


FACTS: dict[str, dict[str, str]] = {}  # commit -> the manifest check's digest and image ID
MOVED: set[tuple[str, str]] = set()  # (host, commit) moved there once (this module never removes one)


def deploy_step(
    rig: Rig, project: ComposeProject, service: str, commit: str, names: dict[str, Any] | None = None
) -> tuple[Step, Host, dict[str, str]]:
    """The plan's manifest check and move (each once per commit and host: the image stays), then
    the deploy step, its host and the manifest facts."""
    plan = plan_service(stack(rig, project, service, commit, names), service)
    assert plan.decision == Decision.PLANNED, plan.reason
    if commit not in FACTS:
        check = rig.d601.run_step(plan.steps[0])
        assert check.returncode == 0 and check.json is not None, check.stderr
        FACTS[commit] = {"digest": check.json["digest"], "image_id": check.json["imageId"]}
    facts = FACTS[commit]
    host = rig.host(plan.steps[1].host)
    if (host.name, commit) not in MOVED:
        moved = host.run_step(plan.steps[1], digest=facts["digest"], image_id=facts["image_id"])
        assert moved.returncode == 0, moved.stderr
        MOVED.add((host.name, commit))
    return plan.step_by_id["deploy"], rig.host(plan.step_by_id["deploy"].host), facts


def deploy(
    rig: Rig, project: ComposeProject, service: str, commit: str, names: dict[str, Any] | None = None
) -> StepResult:
    step, host, facts = deploy_step(rig, project, service, commit, names)
    return host.run_step(step, digest=facts["digest"], image_id=facts["image_id"])


def inspect(h: Host, container: str) -> dict[str, str]:
    fmt = ('{{.Id}} {{.Image}} {{index .Config.Labels "org.opencontainers.image.revision"}} '
           '{{index .Config.Labels "io.unidesk.test.dotenv"}}. {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}')  # fmt: skip
    out = h.sh(
        'docker container inspect -f "$1" "$2" 2>/dev/null || true', fmt, container, check=False
    ).stdout.split()
    if len(out) < 4:
        return {}
    return {
        "id": out[0],
        "image": out[1],
        "revision": out[2],
        "dotenv": out[3].rstrip("."),
        "ip": out[4] if len(out) > 4 else "",
    }


def serving(rig: Rig, project: ComposeProject, service: str) -> str | None:
    """The one commit the target consistently serves (image label = health commit = requested
    commit = the env file's), else None."""
    h = project.host(rig, service)
    entry = catalog.get(service)
    assert entry is not None
    facts = inspect(h, project.target(service).container_name)
    if not facts or not facts["ip"]:
        return None
    got = h.sh('curl -s --max-time 5 "http://$1:$2$3" || true', facts["ip"], str(entry.health.port), entry.health.path,
               check=False).stdout  # fmt: skip
    try:
        deploy_doc = json.loads(got)["deploy"]
    except (ValueError, KeyError, TypeError):
        return None
    env_commit = env_value(h, project, f"{entry.compose_env_prefix}COMMIT")
    commits = {facts["revision"], deploy_doc.get("commit"), deploy_doc.get("requestedCommit"), env_commit}
    return facts["revision"] if len(commits) == 1 else None


def env_value(h: Host, project: ComposeProject, key: str) -> str:
    out = h.sh('grep -E "^$2=" "$1" | tail -n 1 || true', project.env_file, key, check=False).stdout.strip()
    return out.partition("=")[2]


def image_of(h: Host, ref: str) -> str:
    return h.sh('docker image inspect -f "{{.Id}}" "$1" 2>/dev/null || true', ref, check=False).stdout.strip()


def audit_lines(h: Host, service: str) -> list[dict[str, Any]]:
    out = h.sh('cat "$1" 2>/dev/null || true', AUDIT_LOG, check=False).stdout
    return [doc for doc in map(json.loads, out.splitlines()) if doc.get("service") == service]


def wait_unlocked(h: Host, project: ComposeProject, service: str, timeout: float = 60) -> None:
    """Until no process holds the service's deploy lock (a detached switch may still run)."""
    lock = f"/run/lock/unidesk-deploy.{project.name}.{project.target(service).compose_service}.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # never create it: a root-owned lock file would lock the operator's deploys out
        if h.sh('[[ ! -e $1 ]] || flock -n "$1" true', lock, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{lock} still held after {timeout}s")


def host_check(rig: Rig, project: ComposeProject, service: str, commit: str) -> StepResult:
    """The end of every test here: ``commit`` serves consistently; no lock held, no run dir, no
    staged env file, no temp dir, no renamed container; a clean re-run of the deploy succeeds
    (already live) and changes nothing."""
    h = project.host(rig, service)
    wait_unlocked(h, project, service)
    t = project.target(service)
    assert serving(rig, project, service) == commit
    assert image_of(h, t.retag_name) == image_of(h, f"{t.retag_name}:{commit}") != ""
    again = deploy(rig, project, service, commit)
    assert again.returncode == 0 and again.json is not None, (again.stdout, again.stderr)
    assert (
        again.json["alreadyLive"] is True and again.json["changed"] == [] and again.json["recreated"] is False
    )
    left = h.sh(
        'ls -d /run/lock/unidesk-deploy.*.run /tmp/unidesk-cd.* "$1"/.*.unidesk-* 2>/dev/null || true\n'
        'docker ps -a --format "{{.Names}}" | grep -E "^[0-9a-f]+_$2$" || true',
        project.env_file.rsplit("/", 1)[0], t.container_name, check=False,
    ).stdout.split()  # fmt: skip
    assert left == [], f"left behind: {left}"
    assert serving(rig, project, service) == commit
    assert "not-for-logs" not in again.stdout + again.stderr
    return again


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def published(rig: Rig) -> dict[str, dict[str, str]]:
    images = {label: rig.publish_test_image(SERVICE, C[label]) for label in ("oa-a", "oa-b", "oa-c")}
    images["oa-unhealthy"] = rig.publish_test_image(SERVICE, C["oa-unhealthy"], variant="unhealthy")
    images.update(
        {label: rig.publish_test_image("findjob", C[label]) for label in ("findjob-a", "findjob-b")}
    )
    return images


@pytest.fixture(scope="module")
def project(rig: Rig, published: dict[str, dict[str, str]]) -> Iterator[SafetyProject]:
    PROJECT.install(rig, ENV_FILE_BASE)
    yield PROJECT
    PROJECT.remove(rig)


def from_to(rig: Rig, project: ComposeProject) -> tuple[str, str]:
    """(A, B) of a test that moves the service A -> B: whichever of oa-a/oa-b serves now, and the
    other (so consecutive tests need no deploy to get back to a start)."""
    a, b = C["oa-a"], C["oa-b"]
    now = serving(rig, project, SERVICE)
    if now not in (a, b):
        at(rig, project, a)
        now = a
    return (a, b) if now == a else (b, a)


def at(rig: Rig, project: ComposeProject, commit: str) -> None:
    if serving(rig, project, SERVICE) != commit:
        done = deploy(rig, project, SERVICE, commit)
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert serving(rig, project, SERVICE) == commit


# --------------------------------------------------------------------------- tests


def test_the_projects_own_dotenv_still_interpolates_and_sets_compose_file(
    rig: Rig, project: SafetyProject
) -> None:
    """Issue 11 item 2 (v1 on the rig): `.env` sets COMPOSE_FILE (adds extra.yml) and SAFETY_LABEL;
    after the recreate the container carries the label extra.yml interpolates from .env, and the
    deploy values still reach the container through env_file. The audit log has started/finished."""
    at(rig, project, C["oa-a"])
    done = deploy(rig, project, SERVICE, C["oa-b"])
    assert done.returncode == 0 and done.json is not None, (done.stdout, done.stderr)
    doc = done.json
    assert doc["changed"] == ["retag-commit", "retag", "env-file", "container"] and doc["restored"] == []
    assert (
        doc["recreated"] is True
        and doc["previousCommit"] == C["oa-a"]
        and doc["previousCommitFrom"] == "container"
    )
    facts = inspect(rig.master, project.target(SERVICE).container_name)
    assert facts["dotenv"] == "from-dotenv", (
        "the project's .env was not used (COMPOSE_FILE or ${SAFETY_LABEL} lost)"
    )
    runs = [a for a in audit_lines(rig.master, SERVICE) if a.get("toCommit") == C["oa-b"]]
    assert [a["event"] for a in runs[-2:]] == ["started", "finished"] and runs[-1]["verdict"] == "ok"
    assert runs[-1]["fromCommit"] == C["oa-a"] and runs[-1]["target"] == "master-compose"
    assert "not-for-logs" not in json.dumps(runs)
    host_check(rig, project, SERVICE, C["oa-b"])


def test_a_failure_before_the_switch_restores_the_tags_and_the_env_file(
    rig: Rig, project: SafetyProject
) -> None:
    """Compose config refusing the new values: compose-invalid, nothing changed. `up` failing before
    it replaced anything: recreate-failed, and what the switch changed (RETAG, RETAG:SHA, the env
    file) is restored exactly: RETAG names the old image, RETAG:SHA is gone, the env file is byte
    for byte the old one, the old container still serves, the state file still names A."""
    a, c = C["oa-a"], C["oa-c"]
    at(rig, project, a)
    h, t = rig.master, project.target(SERVICE)
    before = inspect(h, t.container_name)
    env_before = h.read_file(project.env_file)
    retag_before = image_of(h, t.retag_name)
    assert image_of(h, f"{t.retag_name}:{c}") == ""

    h.write_file(f"{project.base}/fail-config", c)
    try:
        refused = deploy(rig, project, SERVICE, c)
    finally:
        h.sh('rm -f "$1"', f"{project.base}/fail-config")
    assert refused.returncode == 3 and refused.json is not None, (refused.stdout, refused.stderr)
    assert refused.json["error"] == "compose-invalid" and refused.json["changed"] == []
    assert "config refused for this commit" in refused.json["detail"]

    h.write_file(f"{project.base}/fail-up", "")
    try:
        done = deploy(rig, project, SERVICE, c)
    finally:
        h.sh('rm -f "$1"', f"{project.base}/fail-up")
    assert done.returncode == 6 and done.json is not None, (done.stdout, done.stderr)
    doc = done.json
    assert doc["error"] == "recreate-failed" and doc["retryable"] is False
    assert doc["changed"] == ["retag-commit", "retag", "env-file"] and doc["restored"] == doc["changed"]
    assert doc["recreated"] is False and doc["containerId"] == before["id"] and doc["previousCommit"] == a
    assert h.read_file(project.env_file) == env_before
    assert image_of(h, t.retag_name) == retag_before and image_of(h, f"{t.retag_name}:{c}") == ""
    assert inspect(h, t.container_name)["id"] == before["id"] and serving(rig, project, SERVICE) == a
    failed = audit_lines(h, SERVICE)[-1]
    assert failed["event"] == "failed" and failed["error"] == "recreate-failed" and failed["toCommit"] == c
    again = deploy(rig, project, SERVICE, c)
    assert again.returncode == 0 and again.json is not None, (again.stdout, again.stderr)
    assert again.json["previousCommit"] == a and again.json["previousCommitFrom"] == "container"
    host_check(rig, project, SERVICE, c)


@pytest.mark.parametrize("auto_restore", [True, False], ids=["auto-restore-on", "auto-restore-off"])
def test_an_unhealthy_commit_with_auto_restore(rig: Rig, project: SafetyProject, auto_restore: bool) -> None:
    """On: the previous commit is put back (tag, env values), recreated and verified; the verdict
    says restore ok and the audit line `restored`. Off: the unhealthy commit is reported as it
    stands (it runs); the next deploy still names A as the previous commit (from the state file,
    since the container runs the unverified commit), and so does one after the container is gone."""
    a, bad = C["oa-a"], C["oa-unhealthy"]
    at(rig, project, a)
    h, t = rig.master, project.target(SERVICE)
    chosen = SafetyProject(project.name, project.services, auto_restore=auto_restore, wrapper=True)
    done = deploy(rig, chosen, SERVICE, bad)
    assert done.returncode == 6 and done.json is not None, (done.stdout, done.stderr)
    doc = done.json
    assert doc["error"] == "unhealthy" and doc["recreated"] is True and doc["previousCommit"] == a
    # RETAG:<bad> is new only the first time (the other parametrization may have made it)
    assert [c for c in doc["changed"] if c != "retag-commit"] == ["retag", "env-file", "container"]
    last = audit_lines(h, SERVICE)[-1]
    if auto_restore:
        assert doc["restore"] == {"attempted": True, "ok": True, "commit": a, "note": "restored and verified"}
        assert doc["restored"] == ["retag", "env-file", "container"]
        assert last["event"] == "finished" and last["verdict"] == "restored" and last["error"] == "unhealthy"
        assert serving(rig, project, SERVICE) == a
        host_check(rig, project, SERVICE, a)
        return
    assert doc["restore"] is None and doc["restored"] == []
    assert last["event"] == "failed" and last["error"] == "unhealthy"
    now = inspect(h, t.container_name)
    assert now["revision"] == bad and env_value(h, project, f"{PREFIX}COMMIT") == bad, "reported as it stands"
    h.sh('docker rm -f "$1" >/dev/null', t.container_name)  # the interrupted/broken state: no container
    back = deploy(rig, project, SERVICE, a)
    assert back.returncode == 0 and back.json is not None, (back.stdout, back.stderr)
    assert back.json["previousCommit"] == a and back.json["previousCommitFrom"] == "state"
    host_check(rig, project, SERVICE, a)


def test_two_targets_sharing_a_container_and_retag_are_serialized(
    rig: Rig, published: dict[str, dict[str, str]]
) -> None:
    """Two stacks configured onto one container name and retag on D601 (two Compose projects, as
    dev and prod on one host): started at the same moment, the second waits on the container lock,
    then is refused before it changes anything (container-conflict: the container belongs to the
    other project); the retag names the winner's image and the loser's env file is untouched."""
    first = SafetyProject("unidesk-safety-a", {"findjob": "d601"}, wrapper=False)
    second = SafetyProject("unidesk-safety-b", {"findjob": "d601"}, wrapper=False)
    h, t = rig.d601, first.target("findjob")
    runs = {first.name: (first, C["findjob-a"]), second.name: (second, C["findjob-b"])}
    for p, _ in runs.values():
        p.install(rig, ENV_FILE_BASE)
    try:
        prepared = {name: deploy_step(rig, p, "findjob", commit) for name, (p, commit) in runs.items()}
        results: dict[str, StepResult] = {}
        threads = [
            threading.Thread(
                target=lambda n=name, s=step: results.__setitem__(
                    n, s[1].run_step(s[0], digest=s[2]["digest"], image_id=s[2]["image_id"])
                )
            )
            for name, step in prepared.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        oks = [n for n, r in results.items() if r.returncode == 0]
        assert len(oks) == 1, {n: (r.stdout, r.stderr[-1500:]) for n, r in results.items()}
        winner, loser = oks[0], next(n for n in results if n != oks[0])
        refused = results[loser]
        assert refused.returncode == 3 and refused.json is not None, refused.stdout
        assert refused.json["error"] == "container-conflict" and refused.json["changed"] == []
        assert winner in refused.json["detail"]
        assert f"another deploy of the container {t.container_name} holds" in refused.stderr, (
            "it waited on the lock"
        )
        win_project, win_commit = runs[winner]
        lose_project, lose_commit = runs[loser]
        assert (
            image_of(h, t.retag_name)
            == published["findjob-a" if win_commit == C["findjob-a"] else "findjob-b"]["imageId"]
        )
        assert image_of(h, f"{t.retag_name}:{lose_commit}") == ""
        assert h.read_file(lose_project.env_file) == ENV_FILE_BASE
        host_check(rig, win_project, "findjob", win_commit)
    finally:
        for p, _ in runs.values():
            p.remove(rig)


def _session_victim(rig: Rig, how: str) -> str:
    """A host-side watcher: waits for the recreate (`compose ... up`) to start, then kills the sshd
    child serving the deploy's session (`sshd`), or just says so (`client`: the test kills ssh)."""
    kill = (
        'fg=$(pgrep -o -f "^bash -s -- --service-id $1 ")\n'
        'sshd=$(ps -o ppid= -p "$fg" | tr -d " ")\n'
        'kill -KILL "$sshd"\n'
        if how == "sshd" else ""
    )  # fmt: skip
    return (
        'for _ in $(seq 3000); do pgrep -f -- "up -d --no-build --no-deps --force-recreate $1" >/dev/null && break; '
        "sleep 0.01; done\n" + kill + "echo started\n"
    )


@pytest.mark.parametrize("how", ["client", "sshd"])
def test_a_session_lost_when_the_recreate_starts(rig: Rig, project: SafetyProject, how: str) -> None:
    """Issue 12 item 4: the SSH session dies the moment `compose up` starts (the ssh client killed,
    or the sshd child serving it): the detached switch still finishes and verifies, its audit run is
    complete, and the next run of the same deploy finds B live, picks the lost run's result up
    (previousRun), and leaves nothing behind."""
    a, b = from_to(rig, project)
    step, h, facts = deploy_step(rig, project, SERVICE, b)
    assert step.call is not None
    call = step.call.resolve(ManifestFacts(digest=facts["digest"], image_id=facts["image_id"]))
    watcher: list[str] = []
    watch = threading.Thread(
        target=lambda: watcher.append(h.sh(_session_victim(rig, how), SERVICE, timeout=60).stdout)
    )
    watch.start()
    proc = subprocess.Popen(
        h.ssh_argv(command_line(call.to_argv())),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(script_text(call.script).encode())
    proc.stdin.close()
    watch.join(60)
    assert watcher == ["started\n"], watcher
    if how == "client":
        proc.kill()
    proc.stdin = None  # closed above; communicate would flush it
    out, err = proc.communicate(timeout=60)
    result = last_json_object(out.decode())
    assert result is None or result.get("ok") is not True, (
        "the session was lost: no verdict reached it",
        err,
    )
    wait_unlocked(h, project, SERVICE)
    runs = [x for x in audit_lines(h, SERVICE) if x.get("toCommit") == b]
    assert [x["event"] for x in runs[-2:]] == ["started", "finished"] and runs[-1]["verdict"] == "ok"
    again = host_check(rig, project, SERVICE, b)
    lost = again.json["previousRun"] if again.json else None
    assert lost is not None and lost["ok"] is True and lost["commit"] == b and lost["recreated"] is True
    assert lost["previousCommit"] == a and [c for c in lost["changed"] if c != "retag-commit"] == [
        "retag",
        "env-file",
        "container",
    ]


def test_disk_full_env_dir_and_tmpdir(rig: Rig, project: SafetyProject) -> None:
    """Issue 12 item 5: the env file's filesystem full (a 64 KiB tmpfs, filled) and TMPDIR full (a
    16 KiB tmpfs over /tmp): disk-full, not retryable, naming the host, path and bytes; nothing
    changed (tags, env file, container), nothing half-written; freed, the same deploy succeeds."""
    a, b = from_to(rig, project)
    h, t = rig.master, project.target(SERVICE)
    env_dir = project.env_file.rsplit("/", 1)[0]
    before = inspect(h, t.container_name)
    content = h.read_file(project.env_file)
    retag = image_of(h, t.retag_name)
    # the operator's env dir and file, as before the fill (README "Non-root hosts")
    h.sh('mount -t tmpfs -o "size=64k,mode=0755,uid=$(id -u "$3"),gid=$(id -g "$3")" unidesk-test-envfs "$1"'
         ' && printf %s "$2" | install -o "$3" -g "$3" -m 600 /dev/stdin "$1/.env.deploy"'
         ' && { dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null || true; }', env_dir, content, h.user)  # fmt: skip
    try:
        full = deploy(rig, project, SERVICE, b)
        assert full.returncode == 3 and full.json is not None, (full.stdout, full.stderr)
        doc = full.json
        assert doc["error"] == "disk-full" and doc["retryable"] is False and doc["changed"] == []
        assert (
            doc["path"] == env_dir
            and doc["host"]
            and doc["bytesNeeded"] > 0
            and doc["bytesFree"] < doc["bytesNeeded"]
        )
        assert h.read_file(project.env_file) == content and image_of(h, t.retag_name) == retag
        assert h.sh('ls -a "$1"', env_dir).stdout.split() == [".", "..", ".env.deploy", "fill"], (
            "nothing half-written"
        )
        assert audit_lines(h, SERVICE)[-1]["error"] == "disk-full"
    finally:
        h.sh('cp "$1/.env.deploy" /tmp/unidesk-test-env && umount "$1"'
             ' && install -o "$2" -g "$2" -m 600 /tmp/unidesk-test-env "$1/.env.deploy"'
             " && rm -f /tmp/unidesk-test-env", env_dir, h.user)  # fmt: skip
    h.sh(
        "mount -t tmpfs -o size=16k unidesk-test-tmp /tmp && { dd if=/dev/zero of=/tmp/fill bs=4k 2>/dev/null || true; }"
    )
    try:
        full = deploy(rig, project, SERVICE, b)
    finally:
        h.sh("umount /tmp")
    assert full.returncode == 3 and full.json is not None, (full.stdout, full.stderr)
    assert (
        full.json["error"] == "disk-full" and full.json["path"] == "/tmp" and full.json["retryable"] is False
    )
    assert inspect(h, t.container_name)["id"] == before["id"] and serving(rig, project, SERVICE) == a
    done = deploy(rig, project, SERVICE, b)
    assert done.returncode == 0, (done.stdout, done.stderr)
    host_check(rig, project, SERVICE, b)


def test_an_env_file_the_operator_cannot_read_stops_the_deploy_naming_it(rig: Rig, project: SafetyProject) -> None:
    """Issue 11 (a non-root host): the env file is root's, mode 0600 (edited as root by hand). The
    deploy, as the operator, stops infra-blocked on channel env-file naming the file and the chown
    (not Compose's compose-invalid), nothing changed (container, tags, env file, its owner); the
    file the operator's again, the same deploy succeeds."""
    a, b = from_to(rig, project)
    h, t = rig.master, project.target(SERVICE)
    before = inspect(h, t.container_name)
    content = h.read_file(project.env_file)
    retag = image_of(h, t.retag_name)
    h.sh('chown root:root -- "$1"', project.env_file)
    try:
        blocked = deploy(rig, project, SERVICE, b)
        assert blocked.returncode == 5 and blocked.json is not None, (blocked.stdout, blocked.stderr)
        doc = blocked.json
        assert doc["error"] == "infra-blocked" and doc["channel"] == "env-file", doc
        assert doc["path"] == project.env_file and doc["retryable"] is False
        assert f"sudo chown {OPERATOR} -- {project.env_file}" in doc["fix"]
        assert inspect(h, t.container_name)["id"] == before["id"] and serving(rig, project, SERVICE) == a
        assert h.read_file(project.env_file) == content and image_of(h, t.retag_name) == retag
        assert h.sh('stat -c "%U %a" -- "$1"', project.env_file).stdout.split() == ["root", "600"]
    finally:
        h.sh('chown "$2:$2" -- "$1"', project.env_file, OPERATOR)
    done = deploy(rig, project, SERVICE, b)
    assert done.returncode == 0, (done.stdout, done.stderr)
    host_check(rig, project, SERVICE, b)


def test_a_service_in_a_compose_file_named_by_config(rig: Rig, project: SafetyProject) -> None:
    """Issue 11 item 3: ``names.composeFiles`` names a non-default file (``deploy/oa.yml``, whose
    label interpolates ``${SAFETY_LABEL}`` from the project's .env): a wrong file name is refused in
    the preflight (compose-file-missing), nothing changed and the old container serving; the right
    one is each Compose call's ``-f``, so the recreated container carries that file's label (not the
    default files' one), with .env interpolation intact."""
    a, b = from_to(rig, project)
    h, t = rig.master, project.target(SERVICE)
    named = project.compose_file("master").replace(
        "    init: true\n", '    init: true\n    labels:\n      io.unidesk.test.dotenv: "${SAFETY_LABEL}-named"\n'
    )
    h.write_file(f"{project.base}/deploy/oa.yml", named, owner=h.user)
    before = inspect(h, t.container_name)
    env_before = h.read_file(project.env_file)
    try:
        wrong = deploy(rig, project, SERVICE, b, {"composeFiles": ["deploy/oa-typo.yml"]})
        assert wrong.returncode == 3 and wrong.json is not None, (wrong.stdout, wrong.stderr)
        assert wrong.json["error"] == "compose-file-missing" and wrong.json["changed"] == []
        assert "names.composeFiles" in wrong.json["detail"]
        assert inspect(h, t.container_name)["id"] == before["id"] and serving(rig, project, SERVICE) == a
        assert h.read_file(project.env_file) == env_before

        step, _, _ = deploy_step(rig, project, SERVICE, b, {"composeFiles": ["deploy/oa.yml"]})
        assert step.args[step.args.index("--compose-file") + 1] == "deploy/oa.yml"
        done = deploy(rig, project, SERVICE, b, {"composeFiles": ["deploy/oa.yml"]})
        assert done.returncode == 0 and done.json is not None, (done.stdout, done.stderr)
        assert done.json["recreated"] is True and done.json["previousCommit"] == a
        assert inspect(h, t.container_name)["dotenv"] == "from-dotenv-named", "deployed from deploy/oa.yml"
        host_check(rig, project, SERVICE, b)
    finally:
        h.sh('rm -rf -- "$1"', f"{project.base}/deploy")
