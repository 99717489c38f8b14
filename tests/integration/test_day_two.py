"""Day two on the real rig (issue 10): consecutive runs of the Pulumi program against one carried
state and the same two hosts, deciding from the real live probe.

The program (``__main__.py``) runs under the test engine (``tests.engine.Stack``: Pulumi's
create/update/replace/same rules, docs/engine-semantics.md), its Commands over real OpenSSH to the
rig's D601 and master (the executor runs what the engine would run: ``create``, or the ``update``
of an update), and its live view comes from the real probe (``components.live_source.probe_live``
→ ``artifact_cd.liveprobe.collect_live``: one read-only round trip per host, with the stack's
private key, the pinned host keys and ``ARTIFACT_CD_SSH_OPTIONS``, here a ProxyCommand that enters
the host's network namespace). The stack is prod with the registry install (``registry.manage``)
and two Compose services: oa-event-flow on the master (over the SSH tunnel) and findjob on D601;
from scenario 5 on also code-queue-mgr, a supervisor-gated Compose sidecar on the master (the
module's Compose project runs it from the start, so adding it costs one deploy and no setup).

In order, against one rig (each scenario ends by checking the hosts: one consistent commit serving,
the live verdict in sync, nothing left behind, and a clean preview):

1. a lost state while both services are live: the ``up`` recreates nothing (container IDs kept);
2. oa-event-flow recreated by hand on another commit: the preview shows the replacement of its
   repair steps, the ``up`` repairs it;
3. a new version of the scripts only: updates, no replacement, no container recreated;
4. the registry port exposed beyond loopback (an outage the install cannot fix): the ``up`` fails
   and runs no consumer; after the fix the next ``up`` passes without ``--replace``;
5. code-queue-mgr deployed on A (approved for A), then a commit B without approval and a new
   findjob: the ``up`` deploys findjob, code-queue-mgr stays live on A (same container, /health
   A), the ``held`` output and a warning name the approval to set; the next preview is clean;
6. the dev frontend's auth section changed by hand on the master (a dev stack of its own: only
   frontend, no registry install; real manifest check, k3s import, auth read and probe; the
   Kubernetes side faked, the rig having no API: patches to the engine's patcher, the k3s verify
   and the probe's k3s facts of frontend): the preview shows the auth read replaced and both
   patches updated, the ``up`` re-syncs them and changes nothing else;
7. the master's sshd stopped while findjob gets a new commit: the preview says unknown for the
   master's services only and shows them as stored, the ``up`` deploys findjob and fails naming
   them, deleting nothing of their state; with sshd back the next runs are clean; a gated service
   held on the silent master is shown as stored too.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from artifact_cd.config import StackConfig, parse_stack_config
from artifact_cd.gates import Decision
from artifact_cd.live import LiveView, ServiceFacts, Verdict, decide_service
from artifact_cd.plan import ComposeTargetDoc, plan_service, plan_services
from components import live_source
from tests.engine import CommandCall, PatchCall, RunReport, Stack
from tests.integration.compose_project import ComposeProject, write_dispatch
from tests.rig import Host, Rig

pytestmark = pytest.mark.integration

SERVICES = {"oa-event-flow": "master", "findjob": "d601"}
CQM = "code-queue-mgr"  # supervisor-gated in prod (artifact_cd.gates); in the stack from scenario 5 on
PROJECT = ComposeProject("unidesk-daytwo-tests", {**SERVICES, CQM: "master"})
ENV = PROJECT.env


def sha(label: str) -> str:
    return hashlib.sha1(f"day-two-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id


A = {sid: sha(f"{sid}-a") for sid in SERVICES}
REAL_PROBE = live_source.probe_live  # taken at collection, before any test replaces it
HAND = sha("oa-event-flow-by-hand")
CQM_A, CQM_B = sha("code-queue-mgr-a"), sha("code-queue-mgr-b")  # B is never published: it stays held
FINDJOB_B, FINDJOB_C = sha("findjob-b"), sha("findjob-c")
FRONTEND = sha("frontend-a")


@dataclass
class DayTwo:
    """The rig, the stack config, the carried Pulumi state and the executor's record."""

    rig: Rig
    raw: dict[str, Any]
    secrets: dict[str, str]
    stack: Stack = field(default_factory=lambda: Stack(ENV))
    calls: list[CommandCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    serving: dict[str, str] = field(default_factory=lambda: dict(A))  # service -> the commit it must serve
    held: set[str] = field(default_factory=set)  # gated services held at their live commit

    @property
    def cfg(self) -> StackConfig:
        return parse_stack_config(self.raw, ENV)

    def host(self, service: str) -> Host:
        return PROJECT.host(self.rig, service)

    def execute(self, call: CommandCall) -> dict[str, Any]:
        """Run what the engine runs (``call.command``: the create, or an update's ``update``) over
        real SSH on the host the Command's connection names, the script on stdin."""
        h = self.rig.host(call.host)
        assert (call.user, call.port) == (h.user, h.port), call
        proc = h.ssh(call.command, input=call.stdin, timeout=300)
        with self.lock:
            self.calls.append(call)
        return {"stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}

    def kw(self) -> dict[str, Any]:
        return {"config": self.raw, "secrets": self.secrets, "environ": {}}

    def preview(self) -> RunReport:
        return self.stack.preview(**self.kw())

    def up(self) -> RunReport:
        self.calls.clear()
        return self.stack.up(executor=self.execute, **self.kw())

    def container(self, service: str) -> tuple[str, str]:
        """(container ID, revision label) of the service's container ("", "" when there is none)."""
        out = self.host(service).sh(
            'docker inspect -f "{{.Id}} {{index .Config.Labels \\"org.opencontainers.image.revision\\"}}" "$1" '
            "2>/dev/null || true",
            PROJECT.target(service).container_name,
            check=False,
        ).stdout.split()
        return (out[0], out[1]) if len(out) == 2 else ("", "")

    def ids(self) -> dict[str, str]:
        return {sid: self.container(sid)[0] for sid in SERVICES}

    def verdicts(self) -> dict[str, Verdict]:
        """The live verdict of each service, from the real probe (as the program reads it)."""
        cfg = self.cfg
        plans = [p for p in plan_services(cfg) if p.decision == Decision.PLANNED]
        keys = {"d601": self.secrets["d601PrivateKey"], "master": self.secrets["masterPrivateKey"]}
        view = live_source.probe_live(cfg, plans, keys)
        out = {}
        for p in plans:
            assert isinstance(p.target, ComposeTargetDoc) and p.registry is not None
            status = decide_service(service=p.service, decision=p.decision, commit=p.commit, host=p.target.host,
                                    repository=p.registry.repository, view=view)  # fmt: skip
            out[p.service] = status.verdict
        return out

    def assert_settled(self) -> None:
        """The hosts after a scenario: each service serves the commit it must (``serving``: one
        container of its name, label = commit), the live view says in sync for every planned one,
        no deploy temp dir or tunnel is left, and a preview is clean (rule 15)."""
        for sid, commit in self.serving.items():
            h = self.host(sid)
            _, revision = self.container(sid)
            assert revision == commit, (sid, revision)
            names = h.sh("docker ps -a --format '{{.Names}}'").stdout.split()
            assert names.count(PROJECT.target(sid).container_name) == 1, names
        assert self.verdicts() == {sid: Verdict.IN_SYNC for sid in self.serving if sid not in self.held}
        for h in (self.rig.d601, self.rig.master):
            left = h.sh("ls -d /tmp/unidesk-cd.* 2>/dev/null || true", check=False).stdout.split()
            assert left == [], (h.name, left)
        assert self.rig.master.sh("ps -eo args | grep -c '^ssh .*-N -L' || true", check=False).stdout.strip() == "0"
        clean(self.preview())


def clean(report: RunReport) -> None:
    assert report.error is None, report.error
    assert report.changed_names() == {}, report.changed_names()
    assert report.output_changes == {}, report.output_changes


@pytest.fixture(scope="module")
def day(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DayTwo]:
    workdir = tmp_path_factory.mktemp("day-two")
    for sid in SERVICES:
        rig.publish_test_image(sid, A[sid])
    rig.publish_test_image("oa-event-flow", HAND)
    rig.publish_test_image(CQM, CQM_A)
    for commit in (FINDJOB_B, FINDJOB_C):
        rig.publish_test_image("findjob", commit)
    rig.publish_test_image("frontend", FRONTEND)
    PROJECT.install(rig, "# day-two tests\n")
    dispatch = write_dispatch(rig, workdir / "dispatch")
    raw = PROJECT.stack_config(rig, A)
    key = Path(rig.machine_key_file).read_text()
    secrets = {"d601PrivateKey": key, "masterPrivateKey": key, "kubeconfig": "unused-no-k3s-service-here"}
    patch = pytest.MonkeyPatch()
    patch.setenv("ARTIFACT_CD_SSH_OPTIONS", shlex.quote(f"ProxyCommand={dispatch} %h %p"))
    patch.setattr(live_source, "probe_live", REAL_PROBE)  # the real probe, whatever replaced it
    yield DayTwo(rig, raw, secrets)
    patch.undo()
    PROJECT.remove(rig)


def warnings_of(report: RunReport) -> list[str]:
    return report.run.warnings()


# --------------------------------------------------------------------------- 1. lost state


def test_a_lost_state_while_the_services_are_live_recreates_nothing(day: DayTwo) -> None:
    first = day.up()  # from an empty state: deploys both (the registry install finds itself in place)
    assert first.error is None, first.error
    assert set(first.ops.values()) == {"create"}
    assert first.run.outputs["registryAcceptance"]["decision"] == "healthy"
    before = day.ids()
    assert all(before.values())
    clean(day.preview())

    day.stack.import_({})  # the state is lost (or a new stack); the hosts still run everything
    fresh = day.preview()
    assert fresh.error is None and set(fresh.changed_names().values()) == {"create"}
    assert warnings_of(fresh) == [], "everything is live and in sync"
    again = day.up()
    assert again.error is None, again.error
    assert day.ids() == before, "no container was recreated"
    for sid in SERVICES:
        verdict = again.run.outputs["results"][sid]["verdict"]
        assert verdict["alreadyLive"] is True and verdict["recreated"] is False, verdict
        assert verdict["containerId"] == before[sid]
    day.assert_settled()


# --------------------------------------------------------------------------- 2. hand drift


def test_a_service_recreated_by_hand_on_another_commit_is_repaired(day: DayTwo) -> None:
    # an operator deploys another commit by hand, with the project's own steps
    plan = plan_service(parse_stack_config({**day.raw, "services": {"oa-event-flow": {"commit": HAND}}}, ENV), "oa-event-flow")
    check = day.rig.d601.run_step(plan.steps[0])
    assert check.returncode == 0 and check.json is not None
    for step in plan.steps[1:]:
        done = day.rig.master.run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
        assert done.returncode == 0, (step.id, done.stdout, done.stderr[-1500:])
    assert day.container("oa-event-flow")[1] == HAND
    by_hand = day.container("oa-event-flow")[0]

    preview = day.preview()
    assert preview.error is None, preview.error
    assert preview.changed_names() == {"oa-event-flow-transfer": "replace", "oa-event-flow-deploy": "replace"}
    assert any(w.startswith("oa-event-flow: drifted") and HAND in w for w in warnings_of(preview))
    findjob = day.container("findjob")[0]
    up = day.up()
    assert up.error is None, up.error
    assert {c.name for c in day.calls} == {"oa-event-flow-transfer", "oa-event-flow-deploy"}
    verdict = up.run.outputs["results"]["oa-event-flow"]["verdict"]
    assert verdict["recreated"] is True and verdict["previousCommit"] == HAND
    assert day.container("oa-event-flow")[0] not in ("", by_hand)
    assert day.container("findjob")[0] == findjob, "only the drifted service was touched"
    day.assert_settled()


# --------------------------------------------------------------------------- 3. script-only change


def test_a_script_only_change_recreates_no_container(day: DayTwo, monkeypatch: pytest.MonkeyPatch) -> None:
    from artifact_cd import scripts

    before = day.ids()
    original = scripts.script_text
    monkeypatch.setattr(scripts, "script_text", lambda name: original(name) + "# a new version of this project\n")
    preview = day.preview()
    assert preview.error is None, preview.error
    assert preview.changed_names() and set(preview.changed_names().values()) == {"update"}
    up = day.up()
    assert up.error is None, up.error
    assert "replace" not in up.ops.values()
    deploys = [c for c in day.calls if c.name.endswith("-deploy")]
    assert sorted(c.name for c in deploys) == ["findjob-deploy", "oa-event-flow-deploy"]
    assert all(c.op == "update" and " --mode verify " in c.command + " " for c in deploys)
    for sid in SERVICES:
        verdict = up.run.outputs["results"][sid]["verdict"]
        assert verdict["mode"] == "verify" and verdict["recreated"] is False, verdict
    assert day.ids() == before, "no container was recreated"
    day.assert_settled()

    monkeypatch.undo()  # and back to this version: updates again, still nothing recreated
    back = day.up()
    assert back.error is None, back.error
    assert "replace" not in back.ops.values() and day.ids() == before
    day.assert_settled()


# --------------------------------------------------------------------------- 4. unhealthy registry


EXPOSE = """
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::", 5000))
s.listen(1)
time.sleep(600)
"""


def test_an_unhealthy_registry_then_fixed_lets_the_next_up_pass_without_replace(day: DayTwo) -> None:
    """Something listens on [::]:5000 on D601 (the registry port beyond loopback): the live view
    decides the registry unhealthy, the preview shows the install again, the up reinstalls (which
    cannot remove a foreign listener), its acceptance fails and no consumer step runs. Once the
    listener is gone the next up passes: the acceptance is this run's live decision (C4, C7)."""
    d601 = day.rig.d601
    d601.sh(
        'systemd-run --unit=daytwo-exposed --quiet -- python3 -c "$1" && '
        "for i in $(seq 50); do grep -q ':1388 0000' /proc/net/tcp6 && exit 0; sleep 0.1; done; exit 1",
        EXPOSE,
    )  # 1388 = 5000 in hex, listening state 0A follows
    try:
        preview = day.preview()
        assert preview.error is None, preview.error
        changed = preview.changed_names()
        assert changed and all(n.startswith("artifact-registry-") and op == "replace" for n, op in changed.items())
        assert any(w.startswith("artifact registry: unhealthy") for w in warnings_of(preview))
        failed = day.up()
        assert type(failed.error).__name__ == "RegistryUnhealthy", failed.error
        assert [c.name for c in day.calls if not c.name.startswith("artifact-registry-")] == []
    finally:
        d601.sh("systemctl stop daytwo-exposed 2>/dev/null || true; systemctl reset-failed daytwo-exposed 2>/dev/null || true",
                check=False)  # fmt: skip
    for _ in range(50):
        if ":1388 0000" not in d601.sh("cat /proc/net/tcp6", check=False).stdout:
            break
        time.sleep(0.1)
    fixed = day.up()
    assert fixed.error is None, fixed.error
    assert fixed.run.outputs["registryAcceptance"]["decision"] == "healthy"
    assert not [n for n, op in fixed.changed_names().items() if op == "replace"], fixed.changed_names()
    day.assert_settled()


# --------------------------------------------------------------------------- 5. gated commit without approval


def with_services(raw: dict[str, Any], **commits: str) -> dict[str, Any]:
    """``raw`` with these services' commits (``code_queue_mgr=`` for code-queue-mgr)."""
    services = dict(raw["services"])
    services.update({sid.replace("_", "-"): {"commit": c} for sid, c in commits.items()})
    return {**raw, "services": services}


def live_facts(day: DayTwo, service: str) -> Any:
    """The real probe's facts of ``service`` (its plan at the stack's commit, gated or not)."""
    cfg = day.cfg
    plan = plan_service(cfg, service)
    keys = {"d601": day.secrets["d601PrivateKey"], "master": day.secrets["masterPrivateKey"]}
    host = day.host(service).name
    view = live_source.probe_live(cfg, [plan], keys)
    hv = view.host(host)
    assert hv is not None and hv.reachable, hv
    return hv.services[service]


def test_a_gated_commit_without_approval_is_held_while_the_others_deploy(day: DayTwo) -> None:
    """code-queue-mgr (a master-server Compose sidecar, supervisor-gated in prod) is deployed on A
    with an approval for A. Then the stack asks for B without an approval, and a new findjob: the
    up deploys findjob, code-queue-mgr stays live on A (same container, /health says A), the
    ``held`` output names it with the approval to set, a warning says so; the next preview is clean."""
    approval = {"commit": CQM_A, "by": "supervisor-day-two", "reason": "rig test of the gate"}
    day.raw = {**with_services(day.raw, code_queue_mgr=CQM_A), "approvals": {CQM: approval}}
    first = day.up()
    assert first.error is None, first.error
    assert {c.name for c in day.calls} == {f"{CQM}-manifest-check", f"{CQM}-transfer", f"{CQM}-deploy"}
    assert first.run.outputs["held"] == []
    day.serving[CQM] = CQM_A
    day.assert_settled()
    cqm_id, oa_id = day.container(CQM)[0], day.container("oa-event-flow")[0]

    day.raw = with_services(day.raw, code_queue_mgr=CQM_B, findjob=FINDJOB_B)  # the approval stays A's
    preview = day.preview()
    assert preview.error is None, preview.error
    changed = preview.changed_names()
    assert changed and all(n.startswith("findjob-") for n in changed), changed
    fix = f"pulumi config set --path 'approvals.{CQM}.commit' {CQM_B}"
    held_warnings = [w for w in warnings_of(preview) if w.startswith(f"{CQM}: held")]
    assert len(held_warnings) == 1 and CQM_A in held_warnings[0] and fix in held_warnings[0], warnings_of(preview)

    up = day.up()
    assert up.error is None, up.error
    assert {c.name for c in day.calls} == {"findjob-manifest-check", "findjob-pull", "findjob-deploy"}, [c.name for c in day.calls]
    assert any(w.startswith(f"{CQM}: held") and fix in w for w in warnings_of(up))
    [held] = up.run.outputs["held"]
    assert held["service"] == CQM and held["commit"] == CQM_B and held["verdict"] == "held", held
    assert held["liveCommit"] == CQM_A and held["registered"] == "held-at-live-commit", held
    assert fix in held["fix"], held
    assert CQM not in up.run.outputs["results"]
    assert day.container(CQM) == (cqm_id, CQM_A), "code-queue-mgr untouched"
    assert day.container("oa-event-flow")[0] == oa_id
    facts = live_facts(day, CQM)
    assert facts.health_ok is True and facts.health_commit == CQM_A == facts.requested_commit, facts
    day.serving["findjob"] = FINDJOB_B
    day.held.add(CQM)
    day.assert_settled()


# --------------------------------------------------------------------------- 6. auth change on the master


def test_an_auth_change_on_the_master_re_syncs_the_dev_frontend_secret(
    day: DayTwo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev frontend (k3s on D601, its auth read on the master) on a dev stack of its own that
    registers only it (no registry install). Real: the manifest check and the k3s image import on
    D601, the auth read on the master (real config.json), the live probe of both hosts (manifests,
    the auth hash). Faked, the rig having no Kubernetes API: the patches go to the engine's patcher,
    the k3s verify answers as a rollout of the commit would, and the probe's k3s facts of frontend
    (which need the API) say it serves its commit. The master's auth section changes by hand: the
    preview shows the auth read replaced and both patches updated, the up re-syncs them (the
    patcher receives the new canonical auth and its hash) and nothing else changes."""
    from components.k3s_consumer import canonical_auth

    config_path = f"{PROJECT.base}/config.json"  # removed with the project
    raw = day.rig.stack_config("dev", {"frontend": FRONTEND})
    raw["registry"] = {**raw["registry"], "manage": False}
    raw["frontendAuth"] = {"configPath": config_path}
    stack = Stack("dev")
    patched: list[PatchCall] = []
    faked: list[CommandCall] = []

    def write_auth(auth: dict[str, Any]) -> None:
        day.rig.master.write_file(
            config_path, json.dumps({"listen": ":8080", "auth": auth}, indent=2), mode="0600", owner=day.rig.master.user
        )

    def probe(cfg: StackConfig, plans: Any, keys: Any) -> LiveView:
        view = REAL_PROBE(cfg, plans, keys)
        d601 = view.hosts["d601"]
        assert d601.reachable and view.hosts["master"].reachable, view
        image = f"{day.rig.registry}/unidesk/frontend:{FRONTEND}"
        frontend = ServiceFacts(service="frontend", kind="k3s", found=True, running=True, generation="frontend-dev=1",
                                image=image, revision=FRONTEND, requested_commit=FRONTEND, health_ok=True,
                                health_commit=FRONTEND, health_requested_commit=FRONTEND, image_present=True)  # fmt: skip
        services = {**d601.services, "frontend": frontend}
        return view.model_copy(update={"hosts": {**view.hosts, "d601": d601.model_copy(update={"services": services})}})

    def execute(call: CommandCall) -> dict[str, Any]:
        if call.name == "frontend-verify":  # rollout + /health through the Kubernetes API: none on the rig
            with day.lock:
                faked.append(call)
            health = {"deployCommit": FRONTEND, "requestedCommit": FRONTEND}
            return {"stdout": json.dumps({"ok": True, "health": health}) + "\n", "stderr": "", "returncode": 0}
        return day.execute(call)

    def master_auth_sha() -> str | None:
        """The auth hash the real probe reads on the master (the probe the program's wraps)."""
        cfg = parse_stack_config(raw, "dev")
        keys = {"d601": day.secrets["d601PrivateKey"], "master": day.secrets["masterPrivateKey"]}
        master = REAL_PROBE(cfg, [plan_service(cfg, "frontend")], keys).host("master")
        assert master is not None and master.reachable, master
        return master.auth_sha256

    monkeypatch.setattr(live_source, "probe_live", probe)
    kw: dict[str, Any] = {"config": raw, "secrets": day.secrets, "environ": {}}
    x = {"clientId": "frontend-dev", "issuer": "https://sso.example/x", "audience": ["unidesk"]}
    write_auth(x)
    day.calls.clear()
    first = stack.up(executor=execute, patcher=patched.append, **kw)
    assert first.error is None, first.error
    assert {c.name for c in day.calls} == {"frontend-manifest-check", "frontend-import", "frontend-auth-read"}
    assert [c.name for c in faked] == ["frontend-verify"]
    syncs = {"frontend-auth-sync-secret", "frontend-auth-sync-configmap"}
    by_name = {p.name: p for p in patched}
    assert syncs <= set(by_name)
    assert by_name["frontend-auth-sync-secret"].inputs["stringData"]["auth.json"] == canonical_auth(x)
    hash_x = master_auth_sha()
    assert hash_x is not None and by_name["frontend-auth-sync-configmap"].inputs["data"]["authSha256"] in (
        hash_x, hash_x.removeprefix("sha256:"))
    clean(stack.preview(**kw))

    y = {**x, "clientId": "frontend-dev-v2", "audience": ["unidesk", "console"]}
    write_auth(y)  # by hand on the master
    hash_y = master_auth_sha()
    assert hash_y not in (None, hash_x)
    preview = stack.preview(**kw)
    assert preview.error is None, preview.error
    expected = {"frontend-auth-read": "replace", "frontend-auth-sync-secret": "update", "frontend-auth-sync-configmap": "update"}
    assert preview.changed_names() == expected
    patched.clear()
    faked.clear()
    day.calls.clear()
    up = stack.up(executor=execute, patcher=patched.append, **kw)
    assert up.error is None, up.error
    assert up.changed_names() == expected
    assert [c.name for c in day.calls] == ["frontend-auth-read"] and faked == []
    assert {p.name: p.op for p in patched} == dict.fromkeys(syncs, "update")
    by_name = {p.name: p for p in patched}
    assert by_name["frontend-auth-sync-secret"].inputs["stringData"]["auth.json"] == canonical_auth(y)
    assert by_name["frontend-auth-sync-configmap"].inputs["data"]["authSha256"] in (hash_y, str(hash_y).removeprefix("sha256:"))
    clean(stack.preview(**kw))
    for h in (day.rig.d601, day.rig.master):
        left = h.sh("ls -d /tmp/unidesk-cd.* 2>/dev/null || true", check=False).stdout.split()
        assert left == [], (h.name, left)
    monkeypatch.undo()
    day.rig.master.sh('rm -f -- "$1"', config_path)
    day.assert_settled()  # the prod stack and its hosts: untouched


# --------------------------------------------------------------------------- 7. host down


def stop_sshd(h: Host) -> None:
    h.sh("systemctl stop ssh.service")


def start_sshd(h: Host) -> None:
    """sshd back (through nsenter, so its being stopped is no obstacle), and wait until it is active."""
    h.sh("systemctl start ssh.service")
    for _ in range(50):
        if h.sh("systemctl is-active ssh.service", check=False).stdout.strip() == "active":
            return
        time.sleep(0.1)
    raise AssertionError(f"{h.name}: ssh.service did not come back")


def test_the_master_down_while_a_gated_service_is_held_on_it(day: DayTwo) -> None:
    """code-queue-mgr held on A (scenario 5) and the master's sshd stopped: the preview must say
    unknown for the master's services and show them as stored, like any other silent host."""
    assert CQM in day.held
    stop_sshd(day.rig.master)
    try:
        preview = day.preview()
    finally:
        start_sshd(day.rig.master)
    assert preview.error is None, preview.error
    unknown = {h["service"] for h in preview.run.outputs["held"] if h["verdict"] == "unknown"}
    assert unknown == {"oa-event-flow", CQM}
    assert preview.changed_names() == {}


def test_the_master_down_holds_its_services_only(day: DayTwo) -> None:
    """The master's sshd is stopped while findjob (D601) gets a new commit. The preview says unknown
    for the master's services (oa-event-flow, and code-queue-mgr, held anyway) and only them, shows
    them as stored, and findjob's new commit. The up deploys findjob and fails naming the master's
    services, deleting nothing of them from the state. With sshd back the next runs are clean."""
    # the supervisor withdraws B (approved A again is what runs): code-queue-mgr is planned and in
    # sync; the up records the outputs (nothing held) and runs nothing
    day.raw = with_services(day.raw, code_queue_mgr=CQM_A)
    withdrawn = day.up()
    assert withdrawn.error is None, withdrawn.error
    assert withdrawn.changed_names() == {} and day.calls == [], withdrawn.changed_names()
    assert withdrawn.run.outputs["held"] == []
    day.held.discard(CQM)
    day.assert_settled()

    master = day.rig.master
    master_names = ("oa-event-flow-", f"{CQM}-")
    day.raw = with_services(day.raw, findjob=FINDJOB_C)
    before = {u: r for u, r in day.stack.export().items() if r.name.startswith(master_names)}
    ids = {sid: day.container(sid)[0] for sid in ("oa-event-flow", CQM)}
    stop_sshd(master)
    try:
        preview = day.preview()
        assert preview.error is None, preview.error
        changed = preview.changed_names()
        assert changed and all(n.startswith("findjob-") for n in changed), changed
        assert {preview.op(n) for n in preview.by_name if n.startswith(master_names)} == {"same"}
        unknown = {h["service"] for h in preview.run.outputs["held"] if h["verdict"] == "unknown"}
        assert unknown == {"oa-event-flow", CQM}
        warned = sorted(w.split(":")[0] for w in warnings_of(preview) if ": unknown (" in w)
        assert warned == [CQM, "oa-event-flow"], warnings_of(preview)
        assert not [w for w in warnings_of(preview) if w.startswith("findjob: unknown")]

        up = day.up()
        assert type(up.error).__name__ == "ServicesRefused", up.error
        assert "oa-event-flow" in str(up.error) and CQM in str(up.error) and "findjob" not in str(up.error)
        assert {c.name for c in day.calls} == {"findjob-manifest-check", "findjob-pull", "findjob-deploy"}, [c.name for c in day.calls]
        assert "delete" not in up.ops.values()
        after = {u: r for u, r in day.stack.export().items() if r.name.startswith(master_names)}
        assert after == before, "the master's services: state kept"
        assert day.container("findjob")[1] == FINDJOB_C
    finally:
        start_sshd(master)
    assert {sid: day.container(sid)[0] for sid in ids} == ids, "nothing of the master's services changed"
    back = day.preview()
    assert back.error is None and back.changed_names() == {}, back.changed_names()
    again = day.up()  # records the outputs of a successful run
    assert again.error is None, again.error
    assert day.calls == []
    day.serving["findjob"] = FINDJOB_C
    day.assert_settled()
