"""The live view's core (issue 10): which facts each host reports, the probe answers as HostViews,
the concurrent collector, the verdict of every service, and ``status --services`` / ``plan --live``.

- :func:`artifact_cd.live.decide_service` over hand-made views: every verdict, held before all,
  a host that cannot be reached makes only its own services unknown;
- :func:`artifact_cd.liveprobe.probe_requests` from the repository's stacks (pure);
- :func:`artifact_cd.liveprobe.parse_host_view`: a refusal, a non-answer or a malformed answer is
  that host's ``reachable=False``;
- :func:`artifact_cd.liveprobe.collect_live` with a fake runner: concurrent, per-host settings,
  one host's failure stays that host's;
- the CLI with a fake ``ssh`` that answers for each host: JSON when piped, exit codes, what runs
  over SSH, ``plan --live`` only adds keys to the plan.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd.config import HostConfig, StackConfig, load_stack, parse_stack_config
from artifact_cd.contract import LiveProbeArgs, ScriptArgs
from artifact_cd.gates import Decision
from artifact_cd.live import HostView, LiveView, SecretPresence, ServiceFacts, Verdict, decide_service
from artifact_cd.liveprobe import (
    collect_live,
    format_status_table,
    live_plan_service,
    parse_host_view,
    probe_requests,
    probed,
    service_statuses,
    status_document,
)
from artifact_cd.plan import plan_services, registry_probe_call
from artifact_cd.remote import RemoteResult, SshFailure
from artifact_cd.scripts import command_line, script_text
from artifact_cd.sshlink import EARLY_REMOTE_COMMAND, SshSettings, script_with_args

ROOT = Path(__file__).resolve().parents[2]
A = "a" * 40
B = "b" * 40
DIGEST = "sha256:" + "d" * 64
REPO = "unidesk/oa-event-flow"


# --------------------------------------------------------------------------- decide_service, every verdict


def facts(**over: Any) -> ServiceFacts:
    values: dict[str, Any] = {
        "service": "oa-event-flow",
        "kind": "compose",
        "found": True,
        "running": True,
        "revision": A,
        "requested_commit": A,
        "health_ok": True,
        "health_commit": A,
        "health_requested_commit": A,
        "image_present": True,
    }
    values.update(over)
    return ServiceFacts(**values)


def view(service: ServiceFacts | None, *, reachable: bool = True, manifest: str | None = DIGEST) -> LiveView:
    master = HostView(
        host="master",
        address="m",
        reachable=reachable,
        error=None if reachable else "ssh connection-refused: nothing accepts SSH connections on that port",
        services={service.service: service} if service is not None and reachable else {},
    )
    d601 = HostView(host="d601", address="d", reachable=True, manifests={f"{REPO}:{A}": manifest})
    return LiveView(stack="prod", hosts={"master": master, "d601": d601})


def decide(v: LiveView, decision: Decision = Decision.PLANNED) -> Any:
    return decide_service(
        service="oa-event-flow", decision=decision, commit=A, host="master", repository=REPO, view=v, stack="prod"
    )


@pytest.mark.parametrize(
    ("the_view", "verdict", "reason_has"),
    [
        (view(facts()), Verdict.IN_SYNC, "live and healthy"),
        (view(facts(revision=B, requested_commit=B, health_commit=B, health_requested_commit=B)), Verdict.DRIFTED, B),
        (view(facts(requested_commit=B)), Verdict.DRIFTED, f"requested {B}"),
        (view(facts(image_present=False)), Verdict.MISSING_IMAGE, "image is gone"),
        (view(facts(health_ok=False)), Verdict.UNHEALTHY, "health ok=False"),
        (view(facts(running=False, health_ok=False)), Verdict.UNHEALTHY, "not serving"),
        (view(facts(health_requested_commit=B)), Verdict.UNHEALTHY, f"requestedCommit={B}"),
        (view(facts(found=False, running=None, revision=None, requested_commit=None)), Verdict.NOT_DEPLOYED, "no container"),
        (view(facts(), reachable=False), Verdict.UNKNOWN, "host master unreachable: ssh connection-refused"),
        (view(facts(found=False, detail="docker: daemon-unreachable on this host")), Verdict.UNKNOWN, "docker"),
        (view(None), Verdict.UNKNOWN, "reported nothing"),
    ],
)
def test_decide_service_every_verdict(the_view: LiveView, verdict: Verdict, reason_has: str) -> None:
    status = decide(the_view)
    assert status.verdict == verdict and reason_has in status.reason, status
    assert (status.repair is not None) == (verdict in {Verdict.DRIFTED, Verdict.MISSING_IMAGE, Verdict.UNHEALTHY,
                                                       Verdict.NOT_DEPLOYED})  # fmt: skip
    assert status.manifest_present is (True if the_view.hosts["d601"].manifests else None)
    assert status.manifest_digest == DIGEST


def test_held_comes_first_and_names_the_approval() -> None:
    status = decide_service(service="code-queue-mgr", decision=Decision.GATED, commit=A, host="master",
                            repository="unidesk/code-queue-mgr", view=view(facts(), reachable=False), stack="prod",
                            approval_fix="a supervisor sets approvals.code-queue-mgr.commit")  # fmt: skip
    assert status.verdict == Verdict.HELD and status.action == "a supervisor sets approvals.code-queue-mgr.commit"
    assert status.repair is None


def test_a_missing_manifest_asks_for_a_publish_first() -> None:
    status = decide(view(facts(revision=B, requested_commit=B), manifest=None))
    assert status.verdict == Verdict.DRIFTED and status.manifest_present is False
    assert status.action.startswith("python -m artifact_cd publish --service oa-event-flow")


def test_missing_secret_keys_are_named_never_valued() -> None:
    secrets = {"K_ID": SecretPresence(present=True, length=9), "K_SECRET": SecretPresence(present=False)}
    in_sync = decide(view(facts(secrets=secrets)))
    assert in_sync.verdict == Verdict.IN_SYNC and in_sync.missing_secret_keys == ("K_SECRET",)
    assert "K_SECRET" in in_sync.reason and in_sync.action.startswith("restore K_SECRET")
    drifted = decide(view(facts(secrets=secrets, revision=B, requested_commit=B)))
    assert drifted.action == "restore K_SECRET in the env file, then pulumi up --stack prod"
    assert decide(view(facts())).missing_secret_keys is None


# --------------------------------------------------------------------------- probe_requests


def test_probe_requests_of_the_dev_stack() -> None:
    cfg = load_stack(ROOT, "dev")
    plans = plan_services(cfg)
    requests = probe_requests(cfg, plans)
    assert set(requests) == {"d601", "master"}
    d601, master = requests["d601"], requests["master"]
    assert d601.registry == registry_probe_call(cfg) and master.registry is None
    assert [s.service for s in d601.spec.compose] == ["findjob", "pipeline"]
    k3s = {s.service: s for s in d601.spec.k3s}
    assert set(k3s) == {"backend-core", "frontend", "decision-center", "mdtodo", "claudeqq", "code-queue"}, "gated too"
    cq = k3s["code-queue"]
    assert (cq.deployments[0].name, cq.deployments[0].container) == ("code-queue-scheduler-dev", "code-queue-scheduler")
    assert cq.kubernetes_service == "code-queue-read-dev" and cq.socket == cfg.k3s.containerd_socket
    assert cq.image == f"{cfg.registry.endpoint}/unidesk/code-queue:{cfg.commit_of('code-queue')}"
    assert {m.key for m in d601.spec.manifests} == {f"unidesk/{p.service}:{p.commit}" for p in probed(plans)}
    assert [s.service for s in master.spec.compose] == ["baidu-netdisk"]
    baidu = master.spec.compose[0]
    assert baidu.required_secrets == ("UNIDESK_BAIDU_NETDISK_CLIENT_ID", "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
                                      "UNIDESK_BAIDU_NETDISK_TOKEN_KEY")  # fmt: skip
    assert baidu.env_file == cfg.compose.master.env_file if cfg.compose.master else False
    assert master.spec.auth_config == cfg.frontend_auth.config_path, "the frontend dev auth sync reads the master"
    assert not {"met-nonlinear", "k3sctl-adapter"} & {s.service for s in d601.spec.compose}, "plan-only: not probed"


def test_probe_requests_of_the_prod_stack_and_a_d601_only_stack() -> None:
    cfg = load_stack(ROOT, "prod")
    requests = probe_requests(cfg, plan_services(cfg))
    master = requests["master"].spec
    assert "code-queue-mgr" in master.services and master.auth_config is None
    todo = next(s for s in master.compose if s.service == "todo-note")
    assert (todo.verify, todo.health_path) == ("todo-note-synthetic", "/api/health")
    only_d601 = parse_stack_config(
        {"env": "prod", "hosts": {"d601": {"host": "d"}, "master": {"host": "m"}},
         "compose": {"d601": {"projectDir": "/srv/p", "projectName": "p", "envFile": "/srv/p/.env"},
                     "master": {"projectDir": "/srv/m", "projectName": "m", "envFile": "/srv/m/.env"}},
         "services": {"findjob": {"commit": A}}},
        "prod",
    )  # fmt: skip
    requests = probe_requests(only_d601, plan_services(only_d601))
    assert set(requests) == {"d601"}, "nothing to look at on the master: no round trip there"
    assert probe_requests(only_d601, [])["d601"].spec.services == ()


# --------------------------------------------------------------------------- one answer


HOST = HostConfig(host="d601.test", user="root", port=2222)


def answer(host: str = "d601", **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ok": True,
        "probe": "live-probe",
        "version": 1,
        "host": host,
        "hostname": "d601",
        "user": "root",
        "docker": {"state": "reachable", "sudo": False},
        "services": {"findjob": facts(service="findjob").model_dump(mode="json", by_alias=True)},
        "manifests": {f"unidesk/findjob:{A}": DIGEST, f"unidesk/gone:{A}": None},
        "manifestErrors": {f"unidesk/x:{A}": "registry-unreachable: refused"},
        "auth": {"configPath": "/c.json", "sha256": "e" * 64, "error": None},
        "tools": {},
        "registry": {"ok": True, "probe": "registry-probe"},
        "registryError": None,
        "seconds": 0.2,
    }
    doc.update(over)
    return doc


def result(doc: Any, code: int = 0) -> RemoteResult:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return RemoteResult(code, "noise\n" + text + "\n", "", 0.31)


ARGS = LiveProbeArgs.of("d601", probe_requests(load_stack(ROOT, "prod"), plan_services(load_stack(ROOT, "prod")))["d601"].spec)


def test_a_probe_answer_is_a_host_view() -> None:
    hv = parse_host_view("d601", HOST, ARGS, result(answer(services={**answer()["services"], "not-asked": {"x": 1}})))
    assert hv.reachable and hv.error is None and hv.address == "d601.test" and hv.seconds == 0.31
    assert set(hv.services) == {"findjob"}, "only the services asked for"
    assert hv.services["findjob"].live_commit == A
    assert hv.manifests == {f"unidesk/findjob:{A}": DIGEST, f"unidesk/gone:{A}": None}
    assert hv.manifest_errors == {f"unidesk/x:{A}": "registry-unreachable: refused"}
    assert hv.auth_sha256 == "e" * 64 and hv.registry == {"ok": True, "probe": "registry-probe"}
    assert (hv.docker_state, hv.probe_seconds, hv.hostname) == ("reachable", 0.2, "d601")


@pytest.mark.parametrize(
    ("the_result", "error"),
    [
        (result("not json", 1), "the probe gave no result (exit 1)"),
        (result("", 127), "bash is not available"),
        (result({"ok": False, "error": "invalid-argument", "detail": "--spec-b64: x"}, 2), "the probe refused (exit 2)"),
        (result(answer(host="master")), "bad answer: not the live probe of d601"),
        (result(answer(probe="registry-probe")), "bad answer"),
        (result(answer(manifests={"r:t": "latest"})), "is not a sha256 digest"),
        (result(answer(services={"findjob": {"service": "findjob"}})), "the service facts do not parse"),
        (result(answer(services={"findjob": facts(service="other").model_dump()})), "another service"),
    ],
)
def test_a_bad_answer_is_that_host_unreachable(the_result: RemoteResult, error: str) -> None:
    hv = parse_host_view("d601", HOST, ARGS, the_result)
    assert hv.reachable is False and hv.error is not None and error in hv.error, hv.error


# --------------------------------------------------------------------------- the collector


def prod_cfg() -> StackConfig:
    return load_stack(ROOT, "prod")


def test_collect_live_probes_the_hosts_concurrently_with_their_own_settings() -> None:
    cfg = prod_cfg()
    plans = plan_services(cfg)
    both = threading.Barrier(2, timeout=10)
    seen: dict[str, tuple[str, SshSettings, ScriptArgs]] = {}

    def runner(host: HostConfig, call: ScriptArgs, settings: SshSettings) -> RemoteResult:
        assert isinstance(call, LiveProbeArgs)
        seen[call.host] = (host.host, settings, call)
        both.wait()  # both hosts' probes run at the same time (else this times out)
        return result(answer(host=call.host, services={}))

    settings = {"d601": SshSettings(key_file="/k/d601"), "master": SshSettings(key_file="/k/master")}
    v = collect_live(cfg, plans, settings, runner=runner)
    assert set(v.hosts) == {"d601", "master"} and all(h.reachable for h in v.hosts.values())
    assert seen["d601"][0] == cfg.hosts.d601.host and seen["d601"][1].key_file == "/k/d601"
    assert seen["master"][1].key_file == "/k/master"
    assert seen["d601"][2] == probe_requests(cfg, plans)["d601"]


def test_one_host_failing_is_that_host_only() -> None:
    cfg = prod_cfg()
    plans = plan_services(cfg)

    def runner(host: HostConfig, call: ScriptArgs, settings: SshSettings) -> RemoteResult:
        assert isinstance(call, LiveProbeArgs)
        if call.host == "master":
            raise SshFailure("connection-refused", "nothing accepts SSH connections on that port", True)
        services = {s: facts(service=s).model_dump(mode="json", by_alias=True) for s in call.spec.services}
        return result(answer(services=services))

    v = collect_live(cfg, plans, SshSettings(), runner=runner)
    assert v.hosts["d601"].reachable and not v.hosts["master"].reachable
    assert v.hosts["master"].error == (
        "ssh connection-refused: nothing accepts SSH connections on that port (ubuntu@master.unidesk.internal:22)"
    )
    verdicts = {s.service: s.verdict for s in service_statuses(cfg, plans, v)}
    master_services = set(probe_requests(cfg, plans)["master"].spec.services)
    assert {s for s, verdict in verdicts.items() if verdict == Verdict.UNKNOWN} == master_services - {"code-queue-mgr"}
    assert verdicts["code-queue-mgr"] == Verdict.HELD
    assert verdicts["findjob"] != Verdict.UNKNOWN

    def broken(host: HostConfig, call: ScriptArgs, settings: SshSettings) -> RemoteResult:
        raise RuntimeError("boom")

    v = collect_live(cfg, plans, SshSettings(), runner=broken)
    assert all(not h.reachable and "RuntimeError: boom" in (h.error or "") for h in v.hosts.values())


# --------------------------------------------------------------------------- the views


def _all_in_sync(cfg: StackConfig) -> LiveView:
    plans = plan_services(cfg)
    hosts = {}
    for name, args in probe_requests(cfg, plans).items():
        services = {}
        for p in probed(plans):
            if p.service in args.spec.services:
                image = f"{cfg.registry.endpoint}/unidesk/{p.service}:{p.commit}"
                services[p.service] = facts(service=p.service, revision=None, image=image, requested_commit=p.commit,
                                            health_commit=p.commit, health_requested_commit=p.commit)  # fmt: skip
        manifests: dict[str, str | None] = {m.key: DIGEST for m in args.spec.manifests}
        hosts[name] = HostView(host=name, address=name, reachable=True, services=services, manifests=manifests)
    return LiveView(stack=cfg.env, hosts=hosts)


def test_status_is_ok_when_every_planned_service_is_in_sync_and_held_ones_do_not_count() -> None:
    cfg = prod_cfg()
    plans = plan_services(cfg)
    v = _all_in_sync(cfg)
    doc = status_document(cfg, plans, v, seconds=0.5)
    assert doc["ok"] is True and doc["decision"] == "in-sync"
    assert doc["summary"]["held"] == ["code-queue-mgr"]
    assert {o["service"] for o in doc["notProbed"]} == {"met-nonlinear", "k3sctl-adapter", "code-queue"}
    first = doc["services"][0]
    assert set(first) >= {"service", "host", "desiredCommit", "liveCommit", "manifestPresent", "verdict", "reason",
                          "action", "decision"}  # fmt: skip
    table = format_status_table(doc)
    assert "stack prod: in-sync" in table and "code-queue-mgr (held)" in table and "run: nothing to do" not in table
    findjob = v.hosts["d601"].services["findjob"].model_copy(update={"revision": B, "requested_commit": B,
                                                                      "image": None})  # fmt: skip
    v.hosts["d601"].services["findjob"] = findjob
    drifted = status_document(cfg, plans, v)
    assert drifted["ok"] is False and drifted["summary"]["drifted"] == ["findjob"]
    assert "findjob (drifted)" in format_status_table(drifted)


def test_plan_live_fills_the_dry_run_fields_and_only_adds_keys() -> None:
    cfg = prod_cfg()
    plans = {p.service: p for p in plan_services(cfg)}
    v = _all_in_sync(cfg)
    baidu = v.hosts["master"].services["baidu-netdisk"]
    v.hosts["master"].services["baidu-netdisk"] = baidu.model_copy(
        update={"secrets": {"UNIDESK_BAIDU_NETDISK_CLIENT_ID": SecretPresence(present=True, length=12),
                            "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": SecretPresence(present=False),
                            "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": SecretPresence(present=True, length=3)}}
    )  # fmt: skip
    statuses = {s.service: s for s in service_statuses(cfg, list(plans.values()), v)}
    doc = live_plan_service(plans["baidu-netdisk"], v, statuses["baidu-netdisk"])
    secrets = doc["runtimeSecrets"]
    assert secrets["requiredSecretsPresent"] is False
    assert secrets["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"]
    assert secrets["recommendedAction"].startswith("restore UNIDESK_BAIDU_NETDISK_CLIENT_SECRET in the env file on master")
    assert doc["rollback"]["fromCommit"] == plans["baidu-netdisk"].commit
    assert doc["live"]["verdict"] == "in-sync" and doc["live"]["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"]
    plain = plans["baidu-netdisk"].to_json()
    stripped = {k: v for k, v in doc.items() if k != "live"}
    stripped["rollback"] = {k: v for k, v in doc["rollback"].items() if k != "fromCommit"}
    stripped["runtimeSecrets"] = plain["runtimeSecrets"]
    assert stripped == plain and list(stripped) == list(plain), "only additive keys, in the plan's key order"
    unprobed = live_plan_service(plans["met-nonlinear"], v, None)
    assert unprobed["live"] is None and "fromCommit" not in unprobed["rollback"]
    unknown = LiveView(stack="prod", hosts={})
    status = service_statuses(cfg, [plans["baidu-netdisk"]], unknown)[0]
    blind = live_plan_service(plans["baidu-netdisk"], unknown, status)["runtimeSecrets"]
    assert blind["requiredSecretsPresent"] is None and blind["recommendedAction"].startswith("could not check")


# --------------------------------------------------------------------------- the CLI, with a fake ssh


def _project(tmp_path: Path, *, without: str | None = None) -> Path:
    raw: dict[str, Any] = {
        "env": "prod",
        "hosts": {"d601": {"host": "d601.test", "user": "root", "port": 2222},
                  "master": {"host": "master.test", "user": "root", "port": 2223}},
        "registry": {"composeCommand": "/usr/bin/docker-compose"},
        "compose": {"master": {"projectDir": "/srv/u", "projectName": "u", "envFile": "/srv/u/.env"},
                    "d601": {"projectDir": "/srv/d", "projectName": "d", "envFile": "/srv/d/.env"}},
        "services": {"baidu-netdisk": {"commit": A}, "findjob": {"commit": A}, "decision-center": {"commit": A},
                     "code-queue-mgr": {"commit": A}},
    }  # fmt: skip
    raw["services"].pop(without, None)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": {f"unidesk-artifact-cd:{k}": v for k, v in raw.items()}}))
    return project


def _fake_ssh(tmp_path: Path, answers: dict[str, tuple[int, str]]) -> dict[str, str]:
    """ssh that records argv and stdin per target and prints the canned answer of that target."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for target, (code, text) in answers.items():
        (tmp_path / f"answer.{target}").write_text(text + "\n")
        (tmp_path / f"code.{target}").write_text(str(code))
    ssh = bindir / "ssh"
    ssh.write_text(
        "#!/bin/bash\n"
        'for a in "$@"; do case $a in *@*) target=${a#*@} ;; esac; done\n'
        f'printf "%s\\n" "$@" > {tmp_path}/argv.$target\n'
        f"cat > {tmp_path}/stdin.$target\n"
        f'[[ -f {tmp_path}/answer.$target ]] || {{ echo "ssh: connect to host $target port 22: Connection refused" >&2; exit 255; }}\n'
        f"cat {tmp_path}/answer.$target\n"
        f'exit "$(cat {tmp_path}/code.$target)"\n'
    )
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


def _cli(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "artifact_cd", "--project-dir", str(project), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def _answers(cfg: StackConfig, *, drift: str | None = None, missing_secret: str | None = None) -> dict[str, tuple[int, str]]:
    out = {}
    requests = probe_requests(cfg, plan_services(cfg))
    for name, args in requests.items():
        services: dict[str, Any] = {}
        for s in args.spec.compose:
            secrets = {k: {"present": k != missing_secret, "length": 0 if k == missing_secret else 8}
                       for k in s.required_secrets}  # fmt: skip
            commit = B if s.service == drift else A
            services[s.service] = facts(service=s.service, revision=commit, requested_commit=commit, health_commit=commit,
                                        health_requested_commit=commit).model_dump(mode="json", by_alias=True)  # fmt: skip
            services[s.service]["secrets"] = secrets
        for k in args.spec.k3s:
            services[k.service] = {"service": k.service, "kind": "k3s", "found": False, "imagePresent": True,
                                   "detail": "kubernetes-api: does not answer: refused"}  # fmt: skip
        doc = answer(host=name, services=services, manifests={m.key: DIGEST for m in args.spec.manifests},
                     manifestErrors={}, auth=None)  # fmt: skip
        out[getattr(cfg.hosts, name).host] = (0, json.dumps(doc))
    return out


def test_cli_status_services_runs_the_live_probe_over_ssh(tmp_path: Path) -> None:
    project = _project(tmp_path)
    cfg = load_stack(project, "prod")
    env = _fake_ssh(tmp_path, _answers(cfg))
    proc = _cli(project, env, "status", "--stack", "prod", "--services", "--ssh-option", "StrictHostKeyChecking=no")
    doc = json.loads(proc.stdout)  # piped: JSON
    assert proc.returncode == 1, "decision-center is unknown (no Kubernetes API answers)"
    verdicts = {s["service"]: s["verdict"] for s in doc["services"]}
    assert verdicts == {"baidu-netdisk": "in-sync", "findjob": "in-sync", "decision-center": "unknown",
                        "code-queue-mgr": "held"}  # fmt: skip
    assert doc["query"]["roundTrips"] == 2
    requests = probe_requests(cfg, plan_services(cfg))
    for name, address in (("d601", "d601.test"), ("master", "master.test")):
        argv = (tmp_path / f"argv.{address}").read_text().splitlines()
        assert argv[:2] == ["-o", "BatchMode=yes"] and "StrictHostKeyChecking=no" in argv
        # both hosts were connected to before the config was validated (sshlink): `bash -s`, the
        # probe's exact args as the first line of stdin, then the same script text
        assert argv[-3:] == ["--", f"root@{address}", EARLY_REMOTE_COMMAND]
        stdin = (tmp_path / f"stdin.{address}").read_text()
        assert stdin == script_with_args(requests[name].to_argv(), script_text("live-probe.sh"))
        assert stdin.splitlines()[0] == "set -- " + command_line(requests[name].to_argv()).removeprefix("bash -s -- ")


def test_cli_status_services_exit_codes(tmp_path: Path) -> None:
    project = _project(tmp_path, without="decision-center")
    cfg = load_stack(project, "prod")
    assert "decision-center" not in cfg.services
    (tmp_path / "ok").mkdir()
    ok = _cli(project, _fake_ssh(tmp_path / "ok", _answers(cfg)), "status", "--stack", "prod", "--services", "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["ok"] is True, "held code-queue-mgr does not fail the exit code"
    (tmp_path / "drift").mkdir()
    drifted = _cli(project, _fake_ssh(tmp_path / "drift", _answers(cfg, drift="findjob")), "status", "--stack", "prod",
                   "--services")  # fmt: skip
    assert drifted.returncode == 1 and json.loads(drifted.stdout)["summary"]["drifted"] == ["findjob"]
    (tmp_path / "down").mkdir()
    answers = {k: v for k, v in _answers(cfg).items() if k != "master.test"}
    down = _cli(project, _fake_ssh(tmp_path / "down", answers), "status", "--stack", "prod", "--services")
    doc = json.loads(down.stdout)
    assert down.returncode == 1 and doc["hosts"]["master"]["reachable"] is False
    assert "connection-refused" in doc["hosts"]["master"]["error"] and "Connection refused" not in down.stdout
    assert {s["service"]: s["verdict"] for s in doc["services"]} == {"baidu-netdisk": "unknown", "findjob": "in-sync",
                                                                     "code-queue-mgr": "held"}  # fmt: skip


def test_cli_plan_live_and_the_plain_plan(tmp_path: Path) -> None:
    project = _project(tmp_path)
    cfg = load_stack(project, "prod")
    env = _fake_ssh(tmp_path, _answers(cfg, missing_secret="UNIDESK_BAIDU_NETDISK_TOKEN_KEY"))
    plain = _cli(project, env, "plan", "--stack", "prod", "--service", "baidu-netdisk")
    live = _cli(project, env, "plan", "--stack", "prod", "--service", "baidu-netdisk", "--live")
    assert plain.returncode == live.returncode == 0, live.stdout
    doc, base = json.loads(live.stdout), json.loads(plain.stdout)
    assert doc["runtimeSecrets"]["requiredSecretsPresent"] is False
    assert doc["runtimeSecrets"]["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_TOKEN_KEY"]
    assert doc["rollback"]["fromCommit"] == A and doc["live"]["verdict"] == "in-sync"
    assert doc["liveView"]["hosts"]["master"]["reachable"] is True
    assert {k: v for k, v in doc.items() if k not in ("live", "liveView", "runtimeSecrets", "rollback")} == {
        k: v for k, v in base.items() if k not in ("runtimeSecrets", "rollback")
    }
    stack = _cli(project, env, "plan", "--stack", "prod", "--live")
    stack_doc = json.loads(stack.stdout)
    assert stack.returncode == 0 and stack_doc["liveView"]["inSync"] is False
    assert [s["service"] for s in stack_doc["services"]] == [s["service"] for s in json.loads(_cli(project, env, "plan", "--stack", "prod").stdout)["services"]]
    refused = _cli(project, env, "plan", "--stack", "prod", "--ssh-key", "/nonexistent")
    assert refused.returncode == 2 and json.loads(refused.stdout)["problems"][0]["key"] == "--ssh-option"
    both = _cli(project, env, "plan", "--stack", "prod", "--live", "--resources")
    assert both.returncode == 2
