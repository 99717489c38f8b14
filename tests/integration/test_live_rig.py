"""The live view on the real rig (issue 10): ``status --services`` and ``plan --live`` over real OpenSSH.

Deployed once for the module, with the plan's own steps: baidu-netdisk and oa-event-flow (Compose on
the master server), findjob (Compose on D601), decision-center's commit image imported into D601's
k3s containerd (the rig has no Kubernetes API), and code-queue-mgr configured without an approval
(held). Then, each against the same hosts (every fault is undone before the next, except the last):

- in sync: every Compose service ``in-sync`` (exit 0), the plan's live fields filled;
- the whole stack: decision-center ``unknown`` (no API answers), code-queue-mgr ``held``;
- secrets missing: a key removed from the master's env file is named, never valued, anywhere;
- missing image: findjob's commit tag removed on D601 -> ``missing-image``;
- host unreachable: the master at a port nothing listens on -> its services ``unknown``, D601's not;
- drifted: oa-event-flow recreated by hand on another commit -> ``drifted``, ``fromCommit`` = it.

The CLI reaches both rig hosts with one ProxyCommand that picks the host's network namespace.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd.config import PROJECT as PULUMI_PROJECT
from artifact_cd.config import StackConfig, parse_stack_config
from artifact_cd.gates import Decision
from artifact_cd.plan import plan_service
from tests.integration.compose_project import ComposeProject, write_dispatch
from tests.rig import Rig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = ComposeProject("unidesk-live-tests", {"baidu-netdisk": "master", "oa-event-flow": "master", "findjob": "d601"})
ENV = PROJECT.env
COMPOSE_SERVICES = tuple(PROJECT.services)
SECRETS = {
    "UNIDESK_BAIDU_NETDISK_CLIENT_ID": "cid-LIVE-9aQ-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": "csec-LIVE-3zR-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": "tkey-LIVE-7mW-not-for-logs",
}
ENV_FILE = "# controlled env file (live view tests)\n" + "".join(f"{k}={v}\n" for k, v in SECRETS.items())


def sha(label: str) -> str:
    return hashlib.sha1(f"live-rig:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


C = {label: sha(label) for label in ("baidu-a", "oa-a", "oa-b", "findjob-a", "dc-a", "cqm-a")}
DESIRED = {
    "baidu-netdisk": C["baidu-a"],
    "oa-event-flow": C["oa-a"],
    "findjob": C["findjob-a"],
    "decision-center": C["dc-a"],
    "code-queue-mgr": C["cqm-a"],
}


def raw_config(rig: Rig, services: dict[str, str], *, master_port: int | None = None) -> dict[str, Any]:
    raw = PROJECT.stack_config(rig, services)
    if master_port is not None:
        raw["hosts"]["master"]["port"] = master_port
    return raw


def run_steps(rig: Rig, cfg: StackConfig, service: str, *, upto: str | None = None) -> None:
    """The plan's steps in order over real SSH (as the Pulumi Commands run them), up to ``upto``."""
    plan = plan_service(cfg, service)
    assert plan.decision == Decision.PLANNED, plan.reason
    check = rig.d601.run_step(plan.steps[0])
    assert check.returncode == 0 and check.json is not None, (check.stdout, check.stderr)
    for step in plan.steps[1:]:
        if step.call is None:  # Kubernetes patches: no API on the rig
            break
        done = rig.host(step.host).run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
        assert done.returncode == 0, (service, step.id, done.stdout, done.stderr[-2000:])
        if step.id == upto:
            break


@dataclass
class Cli:
    rig: Rig
    workdir: Path

    def run(self, services: dict[str, str], *args: str, master_port: int | None = None) -> tuple[int, dict[str, Any], str]:
        project = self.workdir / "project"
        project.mkdir(exist_ok=True)
        raw = raw_config(self.rig, services, master_port=master_port)
        (project / f"Pulumi.{ENV}.yaml").write_text(
            yaml.safe_dump({"config": {f"{PULUMI_PROJECT}:{k}": v for k, v in raw.items()}})
        )
        argv = [sys.executable, "-m", "artifact_cd", "--project-dir", str(project), *args, "--stack", ENV]
        argv += ["--ssh-key", str(self.rig.machine_key_file), "--timeout", "60"]
        for option in (
            f"ProxyCommand={self.workdir / 'dispatch'} %h %p",
            f"UserKnownHostsFile={self.rig.dir / 'known_hosts'}",
            "StrictHostKeyChecking=yes",
        ):
            argv += ["--ssh-option", option]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
        assert proc.stdout.strip(), proc.stderr
        for value in SECRETS.values():
            assert value not in proc.stdout + proc.stderr, "a secret value in the CLI's output"
        return proc.returncode, json.loads(proc.stdout), proc.stdout

    def status(self, services: dict[str, str], **kw: Any) -> tuple[int, dict[str, Any]]:
        code, doc, _ = self.run(services, "status", "--services", "--json", **kw)
        assert code == (0 if doc["ok"] else 1)
        return code, doc

    def plan(self, services: dict[str, str], service: str, **kw: Any) -> dict[str, Any]:
        code, doc, _ = self.run(services, "plan", "--live", "--service", service, **kw)
        assert code == 0, doc
        return doc


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    return {s["service"]: s["verdict"] for s in doc["services"]}


def by_service(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["service"]: s for s in doc["services"]}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def deployed(rig: Rig) -> Iterator[None]:
    """Publish, write the Compose projects, deploy the three Compose services and import the k3s image."""
    for label, service, variant in (
        ("baidu-a", "baidu-netdisk", "baidu"),
        ("oa-a", "oa-event-flow", "standard"),
        ("oa-b", "oa-event-flow", "standard"),
        ("findjob-a", "findjob", "standard"),
        ("dc-a", "decision-center", "standard"),
    ):
        rig.publish_test_image(service, C[label], variant=variant)
    PROJECT.install(rig, ENV_FILE)
    cfg = parse_stack_config(raw_config(rig, DESIRED), ENV)
    for service in COMPOSE_SERVICES:
        run_steps(rig, cfg, service)
    run_steps(rig, cfg, "decision-center", upto="import")
    yield
    PROJECT.remove(rig)


@pytest.fixture(scope="module")
def cli(rig: Rig, deployed: None, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    workdir = tmp_path_factory.mktemp("live-rig")
    write_dispatch(rig, workdir / "dispatch")
    return Cli(rig, workdir)


COMPOSE_ONLY = {s: DESIRED[s] for s in COMPOSE_SERVICES}


# --------------------------------------------------------------------------- in sync


def test_in_sync_is_exit_0_and_plan_live_fills_the_dry_run(cli: Cli) -> None:
    started = time.monotonic()
    code, doc = cli.status(COMPOSE_ONLY)
    elapsed = time.monotonic() - started
    assert code == 0 and doc["decision"] == "in-sync", json.dumps(doc, indent=1)
    assert verdicts(doc) == dict.fromkeys(COMPOSE_SERVICES, "in-sync")
    for service, s in by_service(doc).items():
        assert s["desiredCommit"] == s["liveCommit"] == DESIRED[service] and s["manifestPresent"] is True
        assert s["manifestDigest"].startswith("sha256:") and s["action"] == "nothing to do"
    assert doc["query"]["roundTrips"] == 2 and doc["registry"]["decision"] == "healthy"
    for name, h in doc["hosts"].items():
        assert h["reachable"] is True, (name, h)
        # the probe's own cost on the host stays well under an SSH round trip's
        assert h["probeSeconds"] < h["seconds"], (name, h)
    print(f"status --services: {elapsed:.2f} s; hosts: {json.dumps(doc['hosts'])}")

    plan = cli.plan(COMPOSE_ONLY, "baidu-netdisk")
    secrets = plan["runtimeSecrets"]
    assert secrets["requiredSecretsPresent"] is True and secrets["missingSecretKeys"] == []
    assert secrets["recommendedAction"].startswith("nothing to restore")
    assert plan["rollback"]["fromCommit"] == DESIRED["baidu-netdisk"] and plan["live"]["verdict"] == "in-sync"
    assert plan["registry"]["digest"] is None, "the plan's dry-run fields stay a dry-run's"


def test_the_whole_stack_k3s_unknown_without_an_api_and_the_gated_one_held(cli: Cli, rig: Rig) -> None:
    code, doc = cli.status(DESIRED)
    assert code == 1
    assert verdicts(doc) == {**dict.fromkeys(COMPOSE_SERVICES, "in-sync"), "decision-center": "unknown",
                             "code-queue-mgr": "held"}  # fmt: skip
    services = by_service(doc)
    assert "kubernetes-api" in services["decision-center"]["reason"]
    assert services["decision-center"]["manifestPresent"] is True
    assert "approvals.code-queue-mgr" in services["code-queue-mgr"]["action"]
    assert services["code-queue-mgr"]["manifestPresent"] is False, "never published"
    assert doc["summary"] == {"in-sync": list(COMPOSE_SERVICES), "unknown": ["decision-center"], "held": ["code-queue-mgr"]}


# --------------------------------------------------------------------------- faults


def test_secrets_missing_are_named_never_valued(cli: Cli, rig: Rig) -> None:
    kept = rig.master.read_file(PROJECT.env_file)  # with the deploy stamps compose-deploy.sh wrote
    broken = "".join(
        line for line in kept.splitlines(keepends=True) if not line.startswith("UNIDESK_BAIDU_NETDISK_CLIENT_SECRET=")
    )
    assert broken != kept
    rig.master.write_file(PROJECT.env_file, broken, mode="0600", owner=rig.master.user)
    try:
        _, doc = cli.status(COMPOSE_ONLY)
        baidu = by_service(doc)["baidu-netdisk"]
        assert baidu["verdict"] == "in-sync", "the running container still has its secrets"
        assert baidu["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"]
        assert baidu["action"].startswith("restore UNIDESK_BAIDU_NETDISK_CLIENT_SECRET")
        plan = cli.plan(COMPOSE_ONLY, "baidu-netdisk")
        secrets = plan["runtimeSecrets"]
        assert secrets["requiredSecretsPresent"] is False
        assert secrets["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET"]
        assert "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET" in secrets["recommendedAction"]
    finally:
        rig.master.write_file(PROJECT.env_file, kept, mode="0600", owner=rig.master.user)


def test_missing_image(cli: Cli, rig: Rig) -> None:
    ref = f"{rig.registry}/unidesk/findjob:{DESIRED['findjob']}"
    rig.d601.sh('docker image rm "$1" >/dev/null', ref)
    try:
        code, doc = cli.status(COMPOSE_ONLY)
        assert code == 1 and verdicts(doc)["findjob"] == "missing-image"
        findjob = by_service(doc)["findjob"]
        assert findjob["liveCommit"] == DESIRED["findjob"] and findjob["repair"].startswith("missing-image:")
        assert findjob["action"] == f"pulumi up --stack {ENV}"
    finally:
        rig.d601.sh('docker tag "findjob:$1" "$2"', DESIRED["findjob"], ref)


def test_host_unreachable_is_unknown_for_that_host_only(cli: Cli) -> None:
    code, doc = cli.status(COMPOSE_ONLY, master_port=2299)
    assert code == 1
    assert verdicts(doc) == {"baidu-netdisk": "unknown", "oa-event-flow": "unknown", "findjob": "in-sync"}
    master = doc["hosts"]["master"]
    assert master["reachable"] is False and master["error"].startswith("ssh ")
    assert "host master unreachable" in by_service(doc)["oa-event-flow"]["reason"]
    plan = cli.plan(COMPOSE_ONLY, "baidu-netdisk", master_port=2299)
    assert plan["live"]["verdict"] == "unknown" and plan["rollback"]["fromCommit"] is None
    assert plan["runtimeSecrets"]["requiredSecretsPresent"] is None
    assert plan["runtimeSecrets"]["recommendedAction"].startswith("could not check the env file live")


def test_drifted_a_container_recreated_by_hand_on_another_commit(cli: Cli, rig: Rig) -> None:
    """The operator pulls B and recreates by hand: the label and /health say B, the env file still A."""
    a, b = DESIRED["oa-event-flow"], C["oa-b"]
    cfg = parse_stack_config(raw_config(rig, {"oa-event-flow": b}), ENV)
    run_steps(rig, cfg, "oa-event-flow", upto="transfer")  # B's image reaches the master; nothing runs it
    rig.master.sh(
        'docker tag "$1" oa-event-flow && cd "$2" && '
        'docker-compose -p "$3" --env-file "$4" up -d --no-deps --force-recreate oa-event-flow >/dev/null 2>&1',
        f"{rig.registry}/unidesk/oa-event-flow:{b}", PROJECT.base, PROJECT.name, PROJECT.env_file,
    )  # fmt: skip
    code, doc = cli.status(COMPOSE_ONLY)
    assert code == 1 and verdicts(doc) == {"baidu-netdisk": "in-sync", "oa-event-flow": "drifted", "findjob": "in-sync"}
    oa = by_service(doc)["oa-event-flow"]
    assert oa["liveCommit"] == b and oa["desiredCommit"] == a
    assert f"requested {a}" in oa["reason"] and oa["repair"].startswith("drifted:")
    assert oa["action"] == f"pulumi up --stack {ENV}"
    plan = cli.plan(COMPOSE_ONLY, "oa-event-flow")
    assert plan["rollback"]["fromCommit"] == b and plan["live"]["verdict"] == "drifted"
