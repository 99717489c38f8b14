"""``history`` and ``rollback`` (issue 13, items 2 and 3), without a rig.

- the pure side (artifact_cd/history.py): audit lines built here (A ok, B ok, C failed, D killed:
  started only) merged with the live commit and the registry's tags; the candidates; the rollback's
  refusals (no candidate, not a candidate and why, the gates) and its commands;
- the probe's helper (scripts/py/historyfacts.py): the audit log's tail across the rotation, the
  Compose/k3s live commits and the registry's commit tags, with fake tools;
- history-probe.sh itself: every argument refusal (exit 2, nothing looked at) and a real run;
- the CLI end to end: a fake ``ssh`` that runs the probe here, a fake ``docker`` and a fake
  registry on loopback; JSON when piped, a table under a pseudo-terminal, the exit codes.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import history
from artifact_cd.config import StackConfig, load_stack, parse_stack_config
from artifact_cd.contract import AUDIT_FORMAT_VERSION, REVISION_LABEL, HistoryProbeArgs
from artifact_cd.gates import ApplyContext
from artifact_cd.history import (
    HostAnswer,
    Workload,
    history_document,
    probe_requests,
    rollback_document,
    workloads,
)
from artifact_cd.plan import plan_services
from artifact_cd.scripts import PY_DIR, command_line, script_text
from artifact_cd.scripts.py import historyfacts
from tests.pty_support import run_on_terminal
from tests.unit.script_support import PY38, needs_python38

ROOT = Path(__file__).resolve().parents[2]


def sha(label: str) -> str:
    return hashlib.sha1(f"history:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


A, B, C, D, E = (sha(x) for x in "ABCDE")
DIGESTS = {c: "sha256:" + hashlib.sha256(c.encode()).hexdigest() for c in (A, B, C, D, E)}
SERVICE = "oa-event-flow"
TARGET = "master-compose"


def raw_config(**more: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "env": "prod",
        "hosts": {
            "d601": {"host": "d601.test", "user": "root", "port": 2222},
            "master": {"host": "master.test", "user": "root", "port": 2223},
        },
        "registry": {"composeCommand": "/usr/bin/docker-compose"},
        "compose": {
            "master": {"projectDir": "/srv/u", "projectName": "u", "envFile": "/srv/u/.env"},
            "d601": {"projectDir": "/srv/d", "projectName": "d", "envFile": "/srv/d/.env"},
        },
        "services": {SERVICE: {"commit": D}, "findjob": {"commit": A}, "code-queue-mgr": {"commit": B}},
    }
    raw.update(more)
    return raw


def config(**more: Any) -> StackConfig:
    return parse_stack_config(raw_config(**more), "prod")


# --------------------------------------------------------------------------- audit lines


class Log:
    """Audit lines as include/audit.sh writes them (one JSON object per line)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.clock = 0

    def line(self, event: str, run: str, **fields: Any) -> None:
        base = {
            "v": AUDIT_FORMAT_VERSION,
            "time": f"2026-12-01T01:{self.clock // 60:02d}:{self.clock % 60:02d}Z",
            "event": event,
            "runId": run,
            "stack": "prod",
            "env": "prod",
            "service": SERVICE,
            "target": TARGET,
            "step": "compose-deploy",
            "host": "master",
            "user": "deployer",
            "pid": 4242,
        }
        self.lines.append(json.dumps({**base, **fields}))

    def deploy(self, frm: str | None, to: str | None, verdict: str | None, *, error: str | None = None,
               tick: int = 5, **fields: Any) -> None:  # fmt: skip
        """A run: started, then (verdict None: killed, nothing more) its end line ``tick`` s later."""
        run = f"master-{len(self.lines)}"
        facts = {"fromCommit": frm, "toCommit": to, "digest": DIGESTS.get(to) if to else None, **fields}
        self.line("started", run, **facts)
        self.clock += tick
        if verdict is not None:
            event = "finished" if verdict in {"ok", "already-live"} else "failed"
            self.line(event, run, **facts, verdict=verdict, error=error, seconds=float(tick),
                      exitCode=0 if event == "finished" else 6)  # fmt: skip
        self.clock += 1


def the_story() -> Log:
    """A ok, B ok, C failed (unhealthy), D killed mid-verify (started only)."""
    log = Log()
    log.deploy(None, A, "ok")
    log.deploy(A, B, "ok")
    log.deploy(B, C, "failed", error="unhealthy")
    log.deploy(C, D, None)
    return log


def tag_facts(*commits: str) -> dict[str, Any]:
    return {
        c: {
            "present": True,
            "digest": DIGESTS[c],
            "created": "2026-11-30T00:00:00Z",
            "revision": c,
            "size": 1234,
        }
        for c in commits
    }


def answers(
    cfg: StackConfig,
    log: Log,
    *,
    live: str | None = D,
    tags: Sequence[str] = (A, B, C, D),
    down: Sequence[str] = (),
    d601_lines: Sequence[str] = (),
) -> dict[str, HostAnswer]:
    loads = workloads(plan_services(cfg))
    repos = {
        w.repository: {"error": None, "tags": tag_facts(*tags) if w.service == SERVICE else {}} for w in loads
    }
    out: dict[str, HostAnswer] = {}
    for host in ("d601", "master"):
        if host in down:
            out[host] = HostAnswer(host, f"{host}.test", False, 1.0, error="ssh connection-refused")
            continue
        facts: dict[str, Any] = {
            "ok": True,
            "probe": "history-probe",
            "host": host,
            "audit": {
                "lines": list(log.lines if host == "master" else d601_lines),
                "truncated": False,
                "error": None,
            },
            "workloads": {
                w.service: {"kind": w.kind, "found": True, "liveCommit": live if w.service == SERVICE else A}
                for w in loads
                if w.host == host
            },
            "registry": {"endpoint": "127.0.0.1:5000", "repositories": repos} if host == "d601" else None,
        }
        out[host] = HostAnswer(host, f"{host}.test", True, 0.5, facts=facts)
    return out


def doc_of(cfg: StackConfig, ans: Mapping[str, HostAnswer], **kw: Any) -> dict[str, Any]:
    return history_document(cfg, workloads(plan_services(cfg)), ans, **kw)  # type: ignore[arg-type]


def service_of(doc: Mapping[str, Any], service: str = SERVICE) -> dict[str, Any]:
    return next(s for s in doc["services"] if s["service"] == service)


def workload(cfg: StackConfig, service: str = SERVICE) -> Workload:
    return history.by_service(workloads(plan_services(cfg)))[service]


def rollback(cfg: StackConfig, doc: Mapping[str, Any], to: str | None = None, service: str = SERVICE,
             ctx: ApplyContext | None = None) -> dict[str, Any]:  # fmt: skip
    return rollback_document(cfg, workload(cfg, service), service_of(doc, service), to=to,
                             ctx=ctx or ApplyContext(live=True))  # fmt: skip


# --------------------------------------------------------------------------- the document


def test_history_shows_each_deploy_with_its_verdict_and_from_to() -> None:
    """R18 (issue 13): A ok, B ok, C failed, D killed -> four deploys, newest first, true verdicts."""
    cfg = config()
    doc = doc_of(cfg, answers(cfg, the_story()))
    assert doc["ok"] is True and doc["decision"] == "answered"
    s = service_of(doc)
    assert (s["target"], s["host"], s["liveCommit"], s["requestedCommit"]) == (TARGET, "master", D, D)
    got = [(d["verdict"], d["fromCommit"], d["toCommit"], d["error"]) for d in s["deploys"]]
    assert got == [
        ("interrupted", C, D, None),
        ("failed", B, C, "unhealthy"),
        ("ok", A, B, None),
        ("ok", None, A, None),
    ]
    killed, failed = s["deploys"][0], s["deploys"][1]
    assert killed["seconds"] is None and killed["endTime"] is None and killed["exitCode"] is None
    assert failed["seconds"] == 5.0 and failed["exitCode"] == 6 and failed["user"] == "deployer"
    assert s["deployCount"] == 4


def test_rollback_candidates_are_the_healthy_commits_still_in_the_registry_newest_first() -> None:
    cfg = config()
    s = service_of(doc_of(cfg, answers(cfg, the_story())))
    assert [c["commit"] for c in s["candidates"]] == [B, A], "not C (failed) nor D (interrupted, live)"
    assert s["candidates"][0]["digest"] == DIGESTS[B] and s["candidates"][0]["size"] == 1234
    assert s["notCandidates"] == []
    # B's manifest deleted from the registry: B is no longer a candidate, and history says why
    gone = service_of(doc_of(cfg, answers(cfg, the_story(), tags=(A, C, D))))
    assert [c["commit"] for c in gone["candidates"]] == [A]
    assert [(e["commit"], e["reason"]) for e in gone["notCandidates"]] == [
        (B, "its manifest is not in the registry")
    ]


def test_the_live_and_the_requested_commit_are_never_candidates() -> None:
    log = Log()
    log.deploy(None, A, "ok")
    log.deploy(A, B, "ok")
    log.deploy(B, C, "ok")
    cfg = config(services={SERVICE: {"commit": B}})
    s = service_of(doc_of(cfg, answers(cfg, log, live=C)))
    assert [c["commit"] for c in s["candidates"]] == [A]
    assert [(e["commit"], e["reason"]) for e in s["notCandidates"]] == [
        (C, "live now"),
        (B, "the requested commit"),
    ]


def test_newest_is_the_last_healthy_run_even_within_one_second() -> None:
    """Audit times have one-second steps: the log's order decides; a redeploy makes a commit newest."""
    log = Log()
    log.deploy(None, A, "ok", tick=0)
    log.clock -= 1
    log.deploy(A, B, "ok", tick=0)
    log.clock -= 1
    log.deploy(B, A, "already-live", tick=0)
    log.deploy(A, E, "ok")
    cfg = config()
    s = service_of(doc_of(cfg, answers(cfg, log, live=E, tags=(A, B, E))))
    assert [c["commit"] for c in s["candidates"]] == [A, B]
    assert s["deploys"][0]["toCommit"] == E


@pytest.mark.parametrize(
    ("verdict", "step", "healthy"),
    [("ok", "compose-deploy", True), ("already-live", "compose-deploy", True), ("restored", "compose-deploy", False),
     ("restore-failed", "compose-deploy", False), ("failed", "compose-deploy", False), ("ok", "k3s-import", False)],
)  # fmt: skip
def test_only_a_verified_deploy_step_makes_a_commit_healthy(verdict: str, step: str, healthy: bool) -> None:
    log = Log()
    log.deploy(None, A, verdict, step=step)
    log.deploy(A, E, "ok")
    cfg = config()
    s = service_of(doc_of(cfg, answers(cfg, log, live=E, tags=(A, E))))
    assert ([c["commit"] for c in s["candidates"]] == [A]) is healthy
    assert s["deploys"][1]["verdict"] == verdict


def test_other_services_targets_envs_and_torn_lines_are_not_this_services_history() -> None:
    log = the_story()
    log.deploy(None, E, "ok", service="findjob")  # another service on the master's log
    log.deploy(None, E, "ok", target="d601-compose")  # the same service on another target
    log.deploy(None, E, "ok", env="dev")  # another env
    log.lines.append('{"v": 1, "time": "2026-12-01T01:59:59Z", "event": "sta')  # a torn tail
    log.lines.append(json.dumps({"v": 99, "event": "started"}))  # another format
    cfg = config()
    doc = doc_of(cfg, answers(cfg, log, tags=(A, B, C, D, E)))
    s = service_of(doc)
    assert [d["toCommit"] for d in s["deploys"]] == [D, C, B, A]
    assert E not in [c["commit"] for c in s["candidates"]]
    assert doc["hosts"]["master"]["skippedLines"] == 2


def test_a_run_whose_start_was_rotated_away_still_counts() -> None:
    log = the_story()
    lone = log.lines[1]  # A's finished line, its started line rotated away
    log.lines = [lone, *log.lines[2:]]
    cfg = config()
    s = service_of(doc_of(cfg, answers(cfg, log)))
    assert [c["commit"] for c in s["candidates"]] == [B, A]
    assert s["deploys"][-1]["toCommit"] == A and s["deploys"][-1]["verdict"] == "ok"


def test_a_run_whose_process_still_runs_is_in_progress_not_interrupted() -> None:
    cfg = config()
    ans = answers(cfg, the_story())
    killed_run = json.loads(the_story().lines[-1])["runId"]
    ans["master"].facts["audit"]["runningRuns"] = [killed_run]
    s = service_of(doc_of(cfg, ans))
    assert s["deploys"][0]["verdict"] == "in-progress" and s["deploys"][0]["toCommit"] == D
    lines = the_story().lines
    alive = {4242}
    assert historyfacts.running_runs(lines, "master", lambda pid: pid in alive) == [killed_run]
    assert historyfacts.running_runs(lines, "other-host", lambda pid: True) == [], (
        "another host's pids mean nothing"
    )
    assert historyfacts.running_runs(lines, "master", lambda pid: False) == []
    assert historyfacts.running_runs(lines[:-1], "master", lambda pid: True) == [], "every other run ended"
    assert historyfacts.pid_alive(os.getpid()) is True


def test_k3s_steps_and_the_registry_install_on_d601() -> None:
    """d601's log: decision-center's k3s-import then k3s-deploy (only the deploy proves a commit
    live), and the registry install's runs (target registry-host), shown apart from the services."""
    d601 = Log()
    k3s: dict[str, Any] = {"service": "decision-center", "target": "d601-k3s", "host": "d601"}
    d601.deploy(None, A, "ok", step="k3s-import", **k3s)
    d601.deploy(None, A, "ok", step="k3s-deploy", **k3s)
    d601.deploy(None, B, "ok", step="k3s-import", **k3s)
    d601.deploy(A, B, "failed", step="k3s-deploy", error="rollout-timeout", **k3s)
    d601.deploy(None, None, "ok", step="registry-install", service="artifact-registry", target="registry-host",
                host="d601")  # fmt: skip
    cfg = config(services={"decision-center": {"commit": B}})
    ans = answers(cfg, Log(), d601_lines=d601.lines)
    ans["d601"].facts["registry"]["repositories"]["unidesk/decision-center"]["tags"] = tag_facts(A, B)
    ans["d601"].facts["workloads"]["decision-center"]["liveCommit"] = B
    doc = doc_of(cfg, ans)
    s = service_of(doc, "decision-center")
    assert [(d["step"], d["verdict"]) for d in s["deploys"]] == [
        ("k3s-deploy", "failed"), ("k3s-import", "ok"), ("k3s-deploy", "ok"), ("k3s-import", "ok")]  # fmt: skip
    assert [c["commit"] for c in s["candidates"]] == [A]
    registry = doc["registryHost"]
    assert registry["known"] is True and [d["step"] for d in registry["deploys"]] == ["registry-install"]
    text = history.format_history(doc)
    assert "  TIME                  STEP        VERDICT" in text, "mixed steps: a STEP column"
    assert "registry host on d601 (registry-install runs):" in text
    assert doc_of(cfg, ans, registry_host=False)["registryHost"] is None


def test_limit_keeps_the_newest_deploys() -> None:
    cfg = config()
    s = service_of(doc_of(cfg, answers(cfg, the_story()), limit=2))
    assert [d["toCommit"] for d in s["deploys"]] == [D, C] and s["deployCount"] == 4
    assert [c["commit"] for c in s["candidates"]] == [B, A], "candidates do not depend on --limit"


def test_a_host_that_does_not_answer_makes_the_answer_partial() -> None:
    cfg = config()
    doc = doc_of(cfg, answers(cfg, the_story(), down=("d601",)))
    assert doc["ok"] is False and doc["decision"] == "partial"
    s = service_of(doc)
    assert s["registry"]["known"] is False and "D601 did not answer" in s["registry"]["error"]
    assert s["candidates"] == [] and {e["reason"] for e in s["notCandidates"]} == {"the registry is unknown"}
    assert len(s["deploys"]) == 4, "the master's log still answers"
    master_down = service_of(doc_of(cfg, answers(cfg, the_story(), down=("master",))))
    assert master_down["live"]["known"] is False and master_down["deploys"] == []
    assert doc["hosts"]["d601"]["reachable"] is False


# --------------------------------------------------------------------------- rollback


def test_rollback_proposes_the_newest_candidate_and_prints_the_commands() -> None:
    cfg = config()
    answer = rollback(cfg, doc_of(cfg, answers(cfg, the_story())))
    assert answer["ok"] is True and answer["decision"] == "rollback" and answer["toCommit"] == B
    assert answer["commands"] == [
        "pulumi stack select prod",
        f"pulumi config set --path 'services.{SERVICE}.commit' {B}",
        "pulumi up",
    ]
    urn = f"urn:pulumi:prod::unidesk-artifact-cd::unidesk:cd:ComposeServiceConsumer::{SERVICE}"
    assert answer["onlyThisService"] == f"pulumi up --target '{urn}'"
    assert answer["candidates"] == [B, A] and answer["gates"]["decision"] == "planned"
    assert rollback(cfg, doc_of(cfg, answers(cfg, the_story())), to=A)["toCommit"] == A


@pytest.mark.parametrize(
    ("to", "why"),
    [(C, "it was never live and verified healthy on master-compose"),
     (D, "it was never live and verified healthy on master-compose"),
     (E, "it was never live and verified healthy on master-compose")],
)  # fmt: skip
def test_rollback_refuses_a_commit_that_was_never_healthy_there(to: str, why: str) -> None:
    cfg = config()
    answer = rollback(cfg, doc_of(cfg, answers(cfg, the_story())), to=to)
    assert answer["ok"] is False and answer["decision"] == "not-a-candidate"
    assert answer["reason"] == f"{to} is not a rollback candidate of {SERVICE}: {why}"


def test_rollback_refuses_a_healthy_commit_gone_from_the_registry_and_without_any_candidate() -> None:
    cfg = config()
    gone = doc_of(cfg, answers(cfg, the_story(), tags=(A, C, D)))
    refused = rollback(cfg, gone, to=B)
    assert refused["decision"] == "not-a-candidate" and refused["reason"].endswith(
        "its manifest is not in the registry"
    )
    assert rollback(cfg, gone)["toCommit"] == A
    none = doc_of(cfg, answers(cfg, the_story(), tags=(C, D)))
    answer = rollback(cfg, none)
    assert answer["ok"] is False and answer["decision"] == "no-candidate"
    assert "no commit was live and verified healthy before on master-compose" in answer["reason"]
    assert [e["commit"] for e in answer["notCandidates"]] == [B, A]


def test_rollback_cannot_tell_when_a_host_does_not_answer() -> None:
    cfg = config()
    answer = rollback(cfg, doc_of(cfg, answers(cfg, the_story(), down=("d601",))))
    assert answer["ok"] is False and answer["decision"] == "unknown" and answer["retryable"] is True
    assert "D601 did not answer" in answer["reason"]
    named = rollback(cfg, doc_of(cfg, answers(cfg, the_story(), down=("d601",))), to=B)
    assert named["decision"] == "unknown"


def test_rollback_warns_when_the_live_commit_is_unknown() -> None:
    cfg = config()
    ans = answers(cfg, the_story())
    ans["master"].facts["workloads"][SERVICE] = {
        "kind": "compose",
        "found": None,
        "detail": "docker: permission-denied",
    }
    answer = rollback(cfg, doc_of(cfg, ans))
    assert answer["ok"] is True and answer["toCommit"] == B
    assert (
        answer["warning"]
        == f"the live commit is unknown (docker: permission-denied): {B} may be what runs now"
    )
    assert "warning: the live commit is unknown" in history.format_rollback(answer)
    known = rollback(cfg, doc_of(cfg, answers(cfg, the_story())))
    assert known["warning"] is None and "warning" not in history.format_rollback(known)


def test_rollback_passes_the_gates_of_any_commit() -> None:
    """code-queue-mgr is supervisor-gated: a candidate needs an approval for exactly that commit."""
    log = Log()
    log.deploy(None, A, "ok", service="code-queue-mgr")
    log.deploy(A, B, "ok", service="code-queue-mgr")
    cfg = config(approvals={"code-queue-mgr": {"commit": B, "by": "sup", "reason": "r"}})
    ans = answers(cfg, log)
    repos = ans["d601"].facts["registry"]["repositories"]
    repos["unidesk/code-queue-mgr"]["tags"] = tag_facts(A, B)
    ans["master"].facts["workloads"]["code-queue-mgr"]["liveCommit"] = B
    doc = doc_of(cfg, ans)
    gated = rollback(cfg, doc, service="code-queue-mgr")
    assert gated["ok"] is False and gated["decision"] == "gated" and gated["toCommit"] == A
    assert "approvals.code-queue-mgr.commit" in gated["fix"] and A in gated["fix"]
    approved = config(approvals={"code-queue-mgr": {"commit": A, "by": "sup", "reason": "rollback"}})
    ok = rollback(approved, doc, service="code-queue-mgr")
    assert ok["ok"] is True and ok["toCommit"] == A
    inside = rollback(
        approved, doc, service="code-queue-mgr", ctx=ApplyContext(live=True, code_queue_task_id="t1")
    )
    assert inside["decision"] == "gated" and "self-bootstrap" in inside["reason"]


# --------------------------------------------------------------------------- what is probed


def test_probe_requests_d601_always_with_the_registry_the_master_when_needed() -> None:
    cfg = config(hosts={
        "d601": {"host": "d601.test", "user": "root", "auditLog": "/var/log/a/d601.jsonl"},
        "master": {"host": "master.test", "user": "root", "auditLog": "/var/log/a/master.jsonl"},
    })  # fmt: skip
    loads = workloads(plan_services(cfg))
    by = {w.service: w for w in loads}
    assert (by["findjob"].target, by["findjob"].host, by["findjob"].item) == (
        "d601-compose", "d601", "findjob:findjob-backend:UNIDESK_FINDJOB_DEPLOY_")  # fmt: skip
    assert (by["decision-center"].target, by["decision-center"].kind) == ("d601-k3s", "k3s")
    assert "code-queue" not in by, "no target in prod: nothing to read"
    requests = probe_requests(cfg, loads)
    d601, master = requests["d601"], requests["master"]
    assert d601.audit_log == "/var/log/a/d601.jsonl" and master.audit_log == "/var/log/a/master.jsonl"
    assert d601.registry == cfg.registry.endpoint and master.registry is None and master.repository == ()
    assert set(d601.repository) == {w.repository for w in loads}
    assert "findjob:findjob-backend:UNIDESK_FINDJOB_DEPLOY_" in d601.compose and not master.k3s
    assert any(i.startswith("decision-center:") for i in d601.k3s)
    only_d601 = probe_requests(cfg, [by["findjob"]])
    assert set(only_d601) == {"d601"} and only_d601["d601"].repository == ("unidesk/findjob",)


def test_the_component_types_are_the_components() -> None:
    from components.compose_consumer import TYPE as COMPOSE_TYPE
    from components.k3s_consumer import TYPE as K3S_TYPE

    assert history.COMPONENT_TYPES == {"compose": COMPOSE_TYPE, "k3s": K3S_TYPE}
    assert yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"] == history.PULUMI_PROJECT
    assert historyfacts.COMMIT_ANNOTATION == "unidesk.io/deploy-commit"


def test_the_args_model_refuses_what_the_script_would() -> None:
    with pytest.raises(ValueError, match="SERVICE:CONTAINER"):
        HistoryProbeArgs(host="d601", audit_log="/a.jsonl", compose=("a:b",))
    with pytest.raises(ValueError, match="needs --registry"):
        HistoryProbeArgs(host="d601", audit_log="/a.jsonl", repository=("unidesk/x",))
    with pytest.raises(ValueError):
        HistoryProbeArgs(host="d601", audit_log="relative.jsonl")


# --------------------------------------------------------------------------- the terminal views


def test_format_history_and_rollback() -> None:
    cfg = config()
    doc = doc_of(cfg, answers(cfg, the_story()))
    text = history.format_history(doc)
    assert text.startswith("history prod: answered (d601: 0 audit lines; master: 7 audit lines)")
    assert f"{SERVICE} on master-compose: live {D[:12]}, requested {D[:12]}" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["2026-12-01T01:00:18Z", "interrupted", C[:12], D[:12], "-", "-", "deployer"] in rows
    assert ["2026-12-01T01:00:12Z", "failed", B[:12], C[:12], "5s", "unhealthy", "deployer"] in rows
    assert (
        f"  rollback candidates: {B[:12]} (healthy 2026-12-01T01:00:11Z), {A[:12]} (healthy 2026-12-01T01:00:05Z)"
        in text
    )
    assert B not in text, "short commits unless --full"
    assert "backend-core on master-compose: live" in text, "a container runs A there"
    ans = answers(cfg, the_story())
    ans["master"].facts["workloads"]["backend-core"] = {"kind": "compose", "container": "x", "found": False}
    quiet = history.format_history(doc_of(cfg, ans))
    assert "backend-core on" not in quiet, "nothing recorded, nothing running: no section of its own"
    assert "no deploy recorded and not running: backend-core\n" in quiet
    assert B in history.format_history(doc, full=True)
    ok = history.format_rollback(rollback(cfg, doc))
    assert ok.splitlines()[0] == f"rollback prod {SERVICE} on master-compose: to {B}"
    assert f"  pulumi config set --path 'services.{SERVICE}.commit' {B}" in ok
    refused = history.format_rollback(rollback(cfg, doc, to=C))
    assert refused.splitlines()[0].endswith("REFUSED (not-a-candidate)")


# --------------------------------------------------------------------------- historyfacts.py


def test_read_tail_reads_across_the_rotation_and_drops_a_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    assert historyfacts.read_tail(str(log), 1000) == {
        "path": str(log), "exists": False, "lines": [], "bytes": 0, "truncated": False, "error": None}  # fmt: skip
    (tmp_path / "audit.jsonl.1").write_text("".join(f"old-{i:03d}\n" for i in range(100)))  # 8 bytes a line
    log.write_text("new-000\nnew-001\n")
    whole = historyfacts.read_tail(str(log), 10_000)
    assert whole["lines"] == [f"old-{i:03d}" for i in range(100)] + ["new-000", "new-001"]
    assert whole["truncated"] is False and whole["exists"] is True
    cut = historyfacts.read_tail(str(log), 16 + 8 * 3 + 4)  # 3.5 old lines fit: the cut half is dropped
    assert (
        cut["lines"] == ["old-097", "old-098", "old-099", "new-000", "new-001"] and cut["truncated"] is True
    )
    only_new = historyfacts.read_tail(str(log), 12)
    assert only_new["lines"] == ["new-001"] and only_new["truncated"] is True
    boundary = historyfacts.read_tail(str(log), 8)  # starts right after a newline: nothing is cut
    assert boundary["lines"] == ["new-001"] and boundary["bytes"] == 8
    exact = historyfacts.read_tail(str(log), 16)
    assert exact["lines"] == ["new-000", "new-001"] and exact["truncated"] is True


def _probe(
    run: Any = None, request: Any = None, which: Any = None, docker: list[str] | None = None
) -> historyfacts.Probe:
    from artifact_cd.scripts.py import container, manifest

    return historyfacts.Probe(
        container=container, manifest=manifest, docker=docker, docker_state="reachable",
        revision_label=REVISION_LABEL, commit_re=re.compile("[0-9a-f]{40}"),
        digest_re=re.compile("sha256:[0-9a-f]{64}"), media_types=("application/x-m",), arch="amd64",
        run=run or (lambda argv, t: (127, "", "")), request=request or (lambda *a, **k: (404, {}, b"")),
        which=which or (lambda name: None),
    )  # fmt: skip


def test_compose_live_commit_reads_the_label_and_one_env_key() -> None:
    inspect = [{
        "Name": "/oa-event-flow-backend", "Id": "c1", "Image": "sha256:" + "1" * 64,
        "State": {"Status": "running", "StartedAt": "2026-12-01T01:00:00Z"},
        "Config": {"Labels": {REVISION_LABEL: B}, "Env": ["UNIDESK_OA_EVENT_FLOW_DEPLOY_COMMIT=" + B, "SECRET=hush"]},
    }]  # fmt: skip
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        calls.append(argv)
        return 1, json.dumps(inspect), "Error: No such container: gone"

    probe = _probe(run=run, docker=["docker"])
    facts = probe.compose(
        [(SERVICE, "oa-event-flow-backend", "UNIDESK_OA_EVENT_FLOW_DEPLOY_"), ("x", "gone", "X_")]
    )
    assert calls == [["docker", "inspect", "--type", "container", "--", "gone", "oa-event-flow-backend"]]
    assert facts[SERVICE]["liveCommit"] == B and facts[SERVICE]["requestedCommit"] == B
    assert facts[SERVICE]["running"] is True and "hush" not in json.dumps(facts)
    assert facts["x"] == {"kind": "compose", "container": "gone", "found": False, "detail": None}
    down = _probe(run=lambda a, t: (1, "", "Cannot connect to the Docker daemon"), docker=["docker"])
    assert down.compose([("x", "c", "X_")])["x"]["found"] is None
    assert _probe(docker=None).compose([("x", "c", "X_")])["x"]["detail"] == "docker: reachable on this host"


def test_k3s_live_commit_is_the_deploy_annotation_or_unknown_with_the_reason() -> None:
    deployment = {"spec": {"template": {"metadata": {"annotations": {"unidesk.io/deploy-commit": B}}}},
                  "status": {"readyReplicas": 1}}  # fmt: skip
    ok = _probe(run=lambda a, t: (0, json.dumps(deployment), ""), which=lambda n: "/usr/bin/" + n)
    assert ok.k3s([("dc", "unidesk", "decision-center")])["dc"]["liveCommit"] == B
    refused = _probe(run=lambda a, t: (1, "", "error: open /etc/rancher/k3s/k3s.yaml: permission denied"),
                     which=lambda n: "/usr/bin/" + n)  # fmt: skip
    facts = refused.k3s([("dc", "unidesk", "decision-center")])["dc"]
    assert facts["found"] is None and "permission denied" in facts["detail"]
    missing = _probe(run=lambda a, t: (1, "", 'Error from server (NotFound): deployments "x" not found'),
                     which=lambda n: "/usr/bin/" + n)  # fmt: skip
    assert missing.k3s([("dc", "unidesk", "x")])["dc"]["found"] is False
    assert (
        _probe().k3s([("dc", "unidesk", "x")])["dc"]["detail"] == "neither k3s nor kubectl is installed here"
    )


class FakeRegistry:
    """The distribution API a history probe reads: tags/list, manifests (one may be an index), blobs."""

    def __init__(self, repos: Mapping[str, Sequence[str]], *, index: str | None = None) -> None:
        self.repos = {r: list(t) for r, t in repos.items()}
        self.index = index
        self.docs: dict[str, bytes] = {}

    def put(self, doc: Any) -> str:
        data = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.docs[digest] = data
        return digest

    def manifest(self, tag: str) -> tuple[str, bytes]:
        config = self.put({"created": "2026-11-30T12:00:00Z", "config": {"Labels": {REVISION_LABEL: tag}}})
        image = {"schemaVersion": 2, "config": {"digest": config, "size": 100},
                 "layers": [{"digest": "sha256:" + "1" * 64, "size": 1000}, {"digest": "sha256:" + "2" * 64, "size": 20}]}  # fmt: skip
        digest = self.put(image)
        if tag == self.index:
            digest = self.put({"schemaVersion": 2, "manifests": [
                {"digest": digest, "platform": {"os": "linux", "architecture": "amd64"}}]})  # fmt: skip
        return digest, self.docs[digest]

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        parts = path.split("/")
        if path.endswith("/tags/list"):
            repo = "/".join(parts[2:-2])
            if repo not in self.repos:
                return 404, {}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
            return 200, {}, json.dumps({"name": repo, "tags": self.repos[repo]}).encode()
        kind, ref = parts[-2], parts[-1]
        repo = "/".join(parts[2:-2])
        if ref in self.docs:
            return 200, {"docker-content-digest": ref}, self.docs[ref]
        if kind == "manifests" and ref in self.repos.get(repo, ()):
            digest, body = self.manifest(ref)
            return 200, {"docker-content-digest": digest}, body
        return 404, {}, b""


def test_registry_facts_per_commit_tag() -> None:
    fake = FakeRegistry({"unidesk/oa-event-flow": [A, B, "latest", C], "unidesk/findjob": []}, index=B)

    def request(method: str, host: str, port: int, path: str, *, headers: Sequence[tuple[str, str]],
                timeout: float) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        assert (host, port) == ("127.0.0.1", 5000)
        if "/manifests/" in path:
            assert headers == [("Accept", "application/x-m")]
        return fake.answer(method, path)

    fake.repos["unidesk/oa-event-flow"].remove(C)  # listed once, deleted before its manifest is read
    probe = _probe(request=request)
    facts = probe.registry(
        "127.0.0.1:5000", ["unidesk/oa-event-flow", "unidesk/findjob", "unidesk/none"], 100
    )
    assert facts is not None
    oa = facts["repositories"]["unidesk/oa-event-flow"]
    assert set(oa["tags"]) == {A, B} and oa["otherTags"] == 1 and oa["notDescribed"] == 0
    assert oa["tags"][A]["revision"] == A and oa["tags"][A]["size"] == 1120
    assert oa["tags"][A]["created"] == "2026-11-30T12:00:00Z" and oa["tags"][A]["digest"].startswith(
        "sha256:"
    )
    assert oa["tags"][B]["revision"] == B, "an index resolves to its linux/amd64 image"
    assert facts["repositories"]["unidesk/none"] == {
        "error": None,
        "tags": {},
        "otherTags": 0,
        "notDescribed": 0,
    }
    capped = probe.repository("127.0.0.1:5000", "unidesk/oa-event-flow", 1)
    assert len(capped["tags"]) == 1 and capped["notDescribed"] == 1

    def unreachable(*a: Any, **k: Any) -> Any:
        raise ConnectionRefusedError("refused")

    down = _probe(request=unreachable).repository("127.0.0.1:5000", "unidesk/x", 10)
    assert down["error"] == "registry-unreachable: ConnectionRefusedError"
    assert _probe().registry("", ["unidesk/x"], 10) is None


# --------------------------------------------------------------------------- history-probe.sh


def _script(*argv: str, env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(["bash", "-s", "--", *argv], input=script_text("history-probe.sh"), capture_output=True,
                          text=True, timeout=60, check=False, env=dict(env) if env is not None else None)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


GOOD = ("--host", "master", "--audit-log", "/nonexistent/a.jsonl", "--tail-bytes", "4096", "--max-tags", "5")


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (("--host", "laptop"), "--host"),
        (("--audit-log", "relative/a.jsonl"), "--audit-log"),
        (("--audit-log", "/var/../etc/a"), "--audit-log"),
        (("--tail-bytes", "0"), "--tail-bytes"),
        (("--tail-bytes", "12k"), "--tail-bytes"),
        (("--max-tags", "-1"), "--max-tags"),
        (("--compose", "svc:container"), "--compose"),
        (("--compose", "svc:c:lower_"), "--compose"),
        (("--compose", "svc:c:X_\n--evil"), "--compose"),
        (("--compose", "s;rm:c:X_"), "--compose"),
        (("--k3s", "svc:Bad_NS:d"), "--k3s"),
        (("--k3s", "svc:ns"), "--k3s"),
        (("--registry", "10.0.0.1:5000"), "--registry"),
        (("--repository", "unidesk/x"), "--repository"),
        (("--registry", "127.0.0.1:5000", "--repository", "Unidesk/X"), "--repository"),
        (("--bogus", "x"), "--bogus"),
    ],
)
def test_history_probe_refuses_an_invalid_argument(change: tuple[str, ...], argument: str) -> None:
    argv = list(GOOD)
    if change[0] in argv and change[0] not in ("--registry",):
        argv[argv.index(change[0]) + 1] = change[1]
        argv += list(change[2:])
    else:
        argv += list(change)
    code, doc = _script(*argv)
    assert code == 2 and doc["ok"] is False and doc["error"] == "invalid-argument", doc
    assert doc["argument"] == argument


def test_history_probe_reads_the_audit_log_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps({"v": 1, "event": "started"}) + "\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, doc = _script(
        "--host", "master", "--audit-log", str(log), "--tail-bytes", "4096", "--max-tags", "5"
    )
    assert code == 0 and doc["ok"] is True and doc["probe"] == "history-probe" and doc["host"] == "master"
    assert (
        doc["audit"]["lines"] == [json.dumps({"v": 1, "event": "started"})] and doc["audit"]["exists"] is True
    )
    assert doc["registry"] is None and doc["workloads"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "read-only: no lock, no temp file"
    no_python = {**os.environ, "PATH": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(["/bin/bash", "-s", "--", *GOOD], input=script_text("history-probe.sh"), capture_output=True,
                          text=True, env=no_python, timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 5 and json.loads(proc.stdout)["channel"] == "python3"


# --------------------------------------------------------------------------- the CLI end to end


@pytest.fixture
def registry_server() -> Iterator[tuple[str, FakeRegistry]]:
    fake = FakeRegistry({f"unidesk/{SERVICE}": [A, B, C, D]})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = fake.answer("GET", self.path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def hosts(tmp_path: Path, registry_server: tuple[str, FakeRegistry]) -> dict[str, Any]:
    """Both hosts "are" this machine: ssh runs the remote command here (unless <target>.down exists),
    docker answers the inspect of oa-event-flow's container (on D), the audit logs are files here."""
    endpoint, fake = registry_server
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _executable(bindir / "ssh", (
        "#!/bin/bash\n"
        'for a in "$@"; do case $a in *@*) target=${a#*@} ;; esac; done\n'
        f'[[ ! -e {tmp_path}/$target.down ]] || {{ echo "ssh: connect to host $target: Connection refused" >&2; exit 255; }}\n'
        'exec bash -c "${@: -1}"\n'
    ))  # fmt: skip
    inspect = [{"Name": "/oa-event-flow-backend", "Id": "c1", "Image": "sha256:" + "1" * 64, "State": {"Status": "running"},
                "Config": {"Labels": {REVISION_LABEL: D}, "Env": ["UNIDESK_OA_EVENT_FLOW_DEPLOY_COMMIT=" + D]}}]  # fmt: skip
    (tmp_path / "inspect.json").write_text(json.dumps(inspect))
    _executable(bindir / "docker", (
        "#!/bin/bash\n"
        'case $1 in version) echo 27.0.0 ;; inspect) cat ' + str(tmp_path / "inspect.json") + ' ; exit 1 ;; *) exit 1 ;; esac\n'
    ))  # fmt: skip
    logs = {h: tmp_path / f"{h}-audit.jsonl" for h in ("d601", "master")}
    logs["master"].write_text("\n".join(the_story().lines) + "\n")
    logs["d601"].write_text("")
    raw = raw_config()
    raw["registry"]["endpoint"] = endpoint
    for h in ("d601", "master"):
        raw["hosts"][h]["auditLog"] = str(logs[h])
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.prod.yaml").write_text(
        yaml.safe_dump({"config": {f"unidesk-artifact-cd:{k}": v for k, v in raw.items()}})
    )
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return {"project": project, "env": env, "dir": tmp_path, "registry": fake}


def _cli(h: Mapping[str, Any], *args: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "artifact_cd", "--project-dir", str(h["project"]), *args]
    proc = subprocess.run(
        argv, cwd=ROOT, env=h["env"], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def _on_terminal(h: Mapping[str, Any], *args: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "artifact_cd", "--project-dir", str(h["project"]), *args]
    code, screen, err = run_on_terminal(argv, cwd=ROOT, env=h["env"])
    assert b"Traceback" not in err, err.decode()
    return code, screen.decode().replace("\r\n", "\n")


def test_cli_history_and_rollback_over_ssh(hosts: dict[str, Any]) -> None:
    code, out = _cli(hosts, "history", "--stack", "prod", "--service", SERVICE)
    assert code == 0, out
    doc = json.loads(out)  # piped: JSON
    s = service_of(doc)
    assert s["liveCommit"] == D and s["live"]["known"] is True
    assert [(d["verdict"], d["toCommit"]) for d in s["deploys"]] == [
        ("interrupted", D),
        ("failed", C),
        ("ok", B),
        ("ok", A),
    ]
    assert [c["commit"] for c in s["candidates"]] == [B, A]
    assert s["candidates"][0]["revision"] == B and s["candidates"][0]["size"] == 1120
    assert doc["query"]["roundTrips"] == 2
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE)
    answer = json.loads(out)
    assert code == 0 and answer["toCommit"] == B
    assert answer["commands"][1] == f"pulumi config set --path 'services.{SERVICE}.commit' {B}"
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE, "--to", C)
    assert code == 3 and json.loads(out)["decision"] == "not-a-candidate"
    hosts["registry"].repos[f"unidesk/{SERVICE}"].remove(B)  # B's manifest deleted
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE, "--to", B)
    assert code == 3 and json.loads(out)["reason"].endswith("its manifest is not in the registry")
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE, "--json")
    assert code == 0 and json.loads(out)["toCommit"] == A


def test_cli_exit_codes(hosts: dict[str, Any]) -> None:
    (hosts["dir"] / "master.test.down").touch()
    code, out = _cli(hosts, "history", "--stack", "prod")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["hosts"]["master"]["reachable"] is False
    assert "connection-refused" in doc["hosts"]["master"]["error"]
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE)
    assert code == 1 and json.loads(out)["decision"] == "unknown"
    assert _cli(hosts, "history", "--stack", "prod", "--limit", "0")[0] == 2
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", SERVICE, "--to", "abc")
    assert code == 2 and json.loads(out)["decision"] == "invalid-config"
    code, out = _cli(hosts, "rollback", "--stack", "prod", "--service", "code-queue")
    assert code == 3 and json.loads(out)["reason"] == "'code-queue' has no Compose or k3s target in prod"
    assert _cli(hosts, "history", "--stack", "prod", "--service", "nope")[0] == 3
    assert _cli(hosts, "rollback", "--stack", "prod")[0] == 2, "--service is required"


def test_cli_on_a_terminal_is_a_table(hosts: dict[str, Any]) -> None:
    code, text = _on_terminal(hosts, "history", "--stack", "prod", "--service", SERVICE, "--limit", "3")
    assert code == 0 and "{" not in text, text
    assert text.startswith("history prod: answered (d601: 0 audit lines; master: 7 audit lines)")
    assert "  TIME                  VERDICT      FROM          TO            SECONDS  ERROR      USER" in text
    assert "  ... 1 older (--limit)" in text
    assert f"rollback candidates: {B[:12]}" in text
    code, text = _on_terminal(hosts, "rollback", "--stack", "prod", "--service", SERVICE)
    assert code == 0 and text.startswith(f"rollback prod {SERVICE} on master-compose: to {B}")
    assert "run:\n  pulumi stack select prod\n" in text
    code, as_json = _on_terminal(hosts, "rollback", "--stack", "prod", "--service", SERVICE, "--json")
    assert code == 0 and json.loads(as_json)["toCommit"] == B


def test_the_probe_is_run_as_the_contract_says(hosts: dict[str, Any]) -> None:
    cfg = load_stack(hosts["project"], "prod")
    requests = probe_requests(cfg, workloads(plan_services(cfg)))
    assert command_line(requests["master"].to_argv()).startswith("bash -s -- --host master --audit-log ")


@needs_python38
def test_the_helper_runs_on_python_3_8(tmp_path: Path) -> None:
    """historyfacts.py's main path, as history-probe.sh runs it, on the oldest python3 a target may have."""
    assert PY38 is not None
    log = tmp_path / "audit.jsonl"
    log.write_text("one\ntwo\n")
    helpers = {
        f"HISTORYFACTS_{n.upper()}": (PY_DIR / f"{n}.py").read_text() for n in ("container", "manifest")
    }
    argv = ["master", "0", "none", "not-installed", REVISION_LABEL, "^[0-9a-f]{40}$", "^sha256:[0-9a-f]{64}$",
            str(log), "4096", "", "5", "amd64", "compose=s:c:X_", "k3s=k:ns:dep"]  # fmt: skip
    proc = subprocess.run([PY38, "-c", (PY_DIR / "historyfacts.py").read_text(), *argv], capture_output=True,
                          text=True, env={**os.environ, **helpers, "PATH": "/nonexistent"}, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["audit"]["lines"] == ["one", "two"] and doc["workloads"]["s"]["found"] is None
    assert doc["workloads"]["k"]["detail"] == "neither k3s nor kubectl is installed here"


# --------------------------------------------------------------------------- non-root k3s reads (issue 11)
# history-probe.sh as `nobody` (setpriv), whose kubeconfig read is root-only: the Deployment read
# goes through `sudo -n <k3s> kubectl ...`, the rule k3s-verify.sh already needs (artifact_cd.sudoers).

DEPLOYMENT_JSON = json.dumps(
    {
        "spec": {"template": {"metadata": {"annotations": {"unidesk.io/deploy-commit": B}}}},
        "status": {"readyReplicas": 1},
    }
)


def _k3s_item(cfg: StackConfig, service: str) -> str:
    requests = probe_requests(cfg, workloads(plan_services(cfg)))
    return next(i for i in requests["d601"].k3s if i.startswith(service + ":"))


@pytest.fixture
def nobody_bin() -> Iterator[Path]:
    """A bin dir nobody may use (under /tmp: pytest's tmp_path is root-only): a `k3s` stand-in
    answering the Deployment, a `sudo` that records its argv and runs the command only when
    SUDO_ALLOWS is 1 (else it refuses as sudo -n does)."""
    top = Path(tempfile.mkdtemp(prefix="unidesk-history-nobody-"))
    try:
        top.chmod(0o777)
        d = top / "bin"
        d.mkdir(mode=0o755)
        (d / "k3s").write_text(f"#!/bin/sh\necho '{DEPLOYMENT_JSON}'\n")
        (d / "sudo").write_text(
            f'#!/bin/sh\necho "$*" >> {top}/sudo.argv\n'
            '[ "$SUDO_ALLOWS" = 1 ] || { echo "sudo: a password is required" >&2; exit 1; }\n'
            'shift\nexec "$@"\n'
        )
        for f in d.iterdir():
            f.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as_nobody(call: HistoryProbeArgs, bin_dir: Path, allows: bool) -> dict[str, Any]:
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "env", "-i",
         f"PATH={bin_dir}:/usr/bin:/bin", "HOME=/nonexistent", f"TMPDIR={bin_dir.parent}",
         f"SUDO_ALLOWS={int(allows)}", "bash", "-c", command_line(call.to_argv())],
        input=script_text(call.script), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    doc: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return doc


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="setpriv as root")
@pytest.mark.skipif(os.path.exists("/etc/rancher/k3s/k3s.yaml"), reason="this machine has a real k3s")
def test_a_non_root_history_reads_k3s_through_sudo_and_names_the_missing_rule(nobody_bin: Path) -> None:
    cfg = load_stack(ROOT, "prod")
    item = _k3s_item(cfg, "decision-center")
    namespace, deployment = item.split(":")[1:]
    call = HistoryProbeArgs(
        host="d601", audit_log="/nonexistent/a.jsonl", k3s=(item,), elevate=cfg.hosts.d601.elevate
    )
    k3s = str(nobody_bin / "k3s")
    rule = f"{k3s} kubectl -n {namespace} get deployment *"
    assert rule in sudoers_k3s_rules(cfg, k3s), "the read is covered by the sudoers rule k3s-verify.sh needs"

    read = _as_nobody(call, nobody_bin, allows=True)["workloads"]["decision-center"]
    assert read["found"] is True and read["liveCommit"] == B, read
    sudo_argv = (nobody_bin.parent / "sudo.argv").read_text().split()
    assert sudo_argv[:8] == ["-n", k3s, "kubectl", "-n", namespace, "get", "deployment", deployment], (
        sudo_argv
    )

    refused = _as_nobody(call, nobody_bin, allows=False)["workloads"]["decision-center"]
    assert refused["found"] is None and refused.get("liveCommit") is None, refused
    assert refused["sudoers"] == f"nobody ALL=(root) NOPASSWD: {rule}"
    assert (
        "sudo -n refused" in refused["detail"] and "/etc/sudoers.d/unidesk-artifact-cd" in refused["detail"]
    )

    (nobody_bin.parent / "sudo.argv").unlink()
    plain = _as_nobody(call.model_copy(update={"elevate": "none"}), nobody_bin, allows=True)
    assert not (nobody_bin.parent / "sudo.argv").exists(), "--elevate none never runs sudo"
    assert plain["workloads"]["decision-center"]["liveCommit"] == B  # the stand-in answers anyone


def sudoers_k3s_rules(cfg: StackConfig, k3s: str) -> list[str]:
    from artifact_cd import sudoers

    return sudoers.k3s_rules(cfg, k3s=k3s)


def test_probe_requests_pass_the_hosts_elevation_where_k3s_is_read() -> None:
    shipped = load_stack(ROOT, "prod")
    d601 = shipped.hosts.d601.model_copy(update={"elevate": "none"})
    cfg = shipped.model_copy(update={"hosts": shipped.hosts.model_copy(update={"d601": d601})})
    requests = probe_requests(cfg, workloads(plan_services(cfg)))
    assert requests["d601"].k3s and requests["d601"].elevate == "none"
    assert requests["d601"].to_argv()[-2:] == ("--elevate", "none")
    assert "master" in requests and not requests["master"].k3s
    assert "--elevate" not in requests["master"].to_argv(), "no k3s read there: nothing to elevate"
