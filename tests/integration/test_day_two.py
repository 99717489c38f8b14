"""Day two on the real rig (issue 10): consecutive runs of the Pulumi program against one carried
state and the same two hosts, deciding from the real live probe.

The program (``__main__.py``) runs under the test engine (``tests.engine.Stack``: Pulumi's
create/update/replace/same rules, docs/engine-semantics.md), its Commands over real OpenSSH to the
rig's D601 and master (the executor runs what the engine would run: ``create``, or the ``update``
of an update), and its live view comes from the real probe (``components.live_source.probe_live``
→ ``artifact_cd.liveprobe.collect_live``: one read-only round trip per host, with the stack's
private key, the pinned host keys and ``ARTIFACT_CD_SSH_OPTIONS``, here a ProxyCommand that enters
the host's network namespace). The stack is prod with the registry install (``registry.manage``)
and two Compose services: oa-event-flow on the master (over the SSH tunnel) and findjob on D601.

In order, against one rig (each scenario ends by checking the hosts: one consistent commit serving,
the live verdict in sync, nothing left behind, and a clean preview):

1. a lost state while both services are live: the ``up`` recreates nothing (container IDs kept);
2. oa-event-flow recreated by hand on another commit: the preview shows the replacement of its
   repair steps, the ``up`` repairs it;
3. a new version of the scripts only: updates, no replacement, no container recreated;
4. the registry port exposed beyond loopback (an outage the install cannot fix): the ``up`` fails
   and runs no consumer; after the fix the next ``up`` passes without ``--replace``.
"""

from __future__ import annotations

import hashlib
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
from artifact_cd.live import Verdict, decide_service
from artifact_cd.plan import ComposeTargetDoc, plan_service, plan_services
from components import live_source
from tests.engine import CommandCall, RunReport, Stack
from tests.integration.compose_project import ComposeProject, write_dispatch
from tests.rig import Host, Rig

pytestmark = pytest.mark.integration

SERVICES = {"oa-event-flow": "master", "findjob": "d601"}
PROJECT = ComposeProject("unidesk-daytwo-tests", SERVICES)
ENV = PROJECT.env


def sha(label: str) -> str:
    return hashlib.sha1(f"day-two-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id


A = {sid: sha(f"{sid}-a") for sid in SERVICES}
REAL_PROBE = live_source.probe_live  # taken at collection, before any test replaces it
HAND = sha("oa-event-flow-by-hand")


@dataclass
class DayTwo:
    """The rig, the stack config, the carried Pulumi state and the executor's record."""

    rig: Rig
    raw: dict[str, Any]
    secrets: dict[str, str]
    stack: Stack = field(default_factory=lambda: Stack(ENV))
    calls: list[CommandCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
        """The hosts after a scenario: each service serves its configured commit (one container of
        its name, label = commit), the live view says in sync, no deploy temp dir or tunnel is
        left, and a preview is clean (rule 15)."""
        for sid, commit in A.items():
            h = self.host(sid)
            _, revision = self.container(sid)
            assert revision == commit, (sid, revision)
            names = h.sh("docker ps -a --format '{{.Names}}'").stdout.split()
            assert names.count(PROJECT.target(sid).container_name) == 1, names
        assert self.verdicts() == dict.fromkeys(SERVICES, Verdict.IN_SYNC)
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
    assert all(c.op == "update" and c.command.endswith("--mode verify") for c in deploys)
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
