"""Replay: the Pulumi program itself drives the real rig (R9, R14, R16, R18).

``tests.engine.run_program(stack, preview=False, executor=...)`` evaluates ``__main__.py``
as ``pulumi up`` would; the executor sends every ``command:remote:Command`` — its exact ``create``
string and ``stdin``, nothing rebuilt — over real OpenSSH to the rig host its ``connection`` names.
Then the services must run the configured commits; a rollback is the same run with the older
commit; a commit that was never published stops the run at the manifest check with nothing
touched. The registry host is left out (``registry.manage: false``): its install is proven by the
registry tests; here the consumers are under test.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from artifact_cd.config import parse_stack_config
from artifact_cd.plan import plan_service
from artifact_cd.scripts import command_line, script_text
from tests.engine import COMMAND_TYPE, CommandCall, CommandFailed, run_program
from tests.integration.compose_project import ComposeProject
from tests.rig import Rig

pytestmark = pytest.mark.integration

SERVICES = {"oa-event-flow": "master", "baidu-netdisk": "master", "findjob": "d601"}
PROJECT = ComposeProject("unidesk-replay-tests", SERVICES)
ENV = PROJECT.env
SECRETS = {
    "UNIDESK_BAIDU_NETDISK_CLIENT_ID": "rp-cid-Q1",
    "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": "rp-csec-Q2",
    "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": "rp-tkey-Q3",
}


def sha(label: str) -> str:
    return hashlib.sha1(f"replay-tests:{label}".encode()).hexdigest()  # noqa: S324 - a test id


R1 = {sid: sha(f"{sid}-1") for sid in SERVICES}
R2 = {sid: sha(f"{sid}-2") for sid in SERVICES}
NEVER = sha("oa-event-flow-never-published")


@pytest.fixture(scope="module")
def replay_rig(rig: Rig) -> Iterator[Rig]:
    for sid in SERVICES:
        variant = "baidu" if sid == "baidu-netdisk" else "standard"
        for commits in (R1, R2):
            rig.publish_test_image(sid, commits[sid], variant=variant)
    PROJECT.install(rig, "".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    yield rig
    PROJECT.remove(rig)


def config(rig: Rig, commits: Mapping[str, str]) -> dict[str, Any]:
    raw = PROJECT.stack_config(rig, commits)
    raw["registry"]["manage"] = False
    return raw


@dataclass
class Replay:
    calls: list[CommandCall]
    returncodes: dict[str, int]
    outputs: dict[str, Any]
    error: BaseException | None
    resources: list[Any]


def replay(rig: Rig, commits: Mapping[str, str]) -> Replay:
    calls: list[CommandCall] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def executor(call: CommandCall) -> dict[str, Any]:
        host = rig.host(call.host)
        assert (call.user, call.port) == (host.user, host.port), call
        proc = host.ssh(call.create, input=call.stdin)
        with lock:
            calls.append(call)
            codes[call.name] = proc.returncode
        return {"stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}

    run = run_program(ENV, config=config(rig, commits), preview=False, executor=executor)
    return Replay(calls, codes, run.outputs, run.error, run.resources)


def live(rig: Rig, service: str) -> tuple[str, str, dict[str, Any] | None]:
    """(container id, revision label, health payload) of the running service container."""
    h = PROJECT.host(rig, service)
    out = h.sh('docker inspect -f "{{.Id}} {{index .Config.Labels \\"org.opencontainers.image.revision\\"}} '
               '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}" "$1" || true', PROJECT.target(service).container_name,
               check=False)
    parts = out.stdout.split()
    if len(parts) < 3:
        return "", "", None
    body = h.sh('curl -s --max-time 5 "http://$1:8080/health" || true', parts[2], check=False).stdout
    try:
        return parts[0], parts[1], json.loads(body)
    except ValueError:
        return parts[0], parts[1], None


def assert_on(rig: Rig, commits: Mapping[str, str]) -> None:
    for sid, commit in commits.items():
        _, revision, health = live(rig, sid)
        assert revision == commit, (sid, revision)
        assert health is not None and health["deploy"]["commit"] == commit == health["deploy"]["requestedCommit"], (sid, health)


def test_pulumi_up_replayed_over_ssh_puts_every_service_on_its_commit(replay_rig: Rig) -> None:
    rig = replay_rig
    run = replay(rig, R1)
    assert run.error is None, run.error
    assert_on(rig, R1)

    # Each Command ran exactly the plan's argv and script, resolved with the live manifest values.
    cfg = parse_stack_config(config(rig, R1), ENV)
    by_name = {c.name: c for c in run.calls}
    for sid in SERVICES:
        plan = plan_service(cfg, sid)
        result = run.outputs["results"][sid]
        assert result["commit"] == R1[sid] and result["verdict"]["ok"] is True
        for step in plan.steps:
            call = by_name[f"{sid}-{step.id}"]
            assert call.create == command_line(step.resolved_args(result["digest"], result["imageId"]))
            assert call.stdin == script_text(step.script or "")
            assert rig.host(call.host).name == step.host
        order = [c.name for c in run.calls if c.name.startswith(f"{sid}-")]
        assert order == [f"{sid}-{s.id}" for s in plan.steps], "dependent Commands ran in plan order"
        assert result["verdict"]["registryDigest"] == result["digest"]
        assert result["verdict"]["containerImageId"] == result["imageId"]
    assert all(code == 0 for code in run.returncodes.values()), run.returncodes
    # the master's deploy verdict carries secret presence only, and Pulumi keeps its stdout secret or clean
    assert all(v not in json.dumps(run.outputs) for v in SECRETS.values())

    # R18: a rollback is the same `pulumi up` with the older commit in stack config.
    rolled = {**R1, "oa-event-flow": R2["oa-event-flow"]}
    second = replay(rig, rolled)
    assert second.error is None, second.error
    assert_on(rig, rolled)
    back = replay(rig, R1)
    assert back.error is None, back.error
    assert back.outputs["results"]["oa-event-flow"]["verdict"]["previousCommit"] == R2["oa-event-flow"]
    assert_on(rig, R1)


def test_a_commit_missing_from_the_registry_stops_the_run_before_any_target(replay_rig: Rig) -> None:
    rig = replay_rig
    first = replay(rig, R1)
    assert first.error is None, first.error
    before = live(rig, "oa-event-flow")
    run = replay(rig, {"oa-event-flow": NEVER})
    assert isinstance(run.error, CommandFailed), repr(run.error)
    assert run.error.call.name == "oa-event-flow-manifest-check" and run.error.returncode == 3
    assert json.loads(run.error.stdout.strip().splitlines()[-1])["error"] == "manifest-missing"
    assert run.returncodes == {"oa-event-flow-manifest-check": 3}, run.returncodes
    assert [c.name for c in run.calls] == ["oa-event-flow-manifest-check"]
    assert live(rig, "oa-event-flow") == before, "the running container is untouched"
    registered = {r.name for r in run.resources if r.type == COMMAND_TYPE}
    assert "oa-event-flow-manifest-check" in registered
