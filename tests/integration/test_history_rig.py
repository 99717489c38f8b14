"""``history`` and ``rollback`` on the real rig (issue 13, "How to prove it"), over real OpenSSH.

One Compose service on the master server (project-manager), deployed with the plan's own steps into
this module's project, with its own audit log on each host (``hosts.<h>.auditLog``):

1. A (ok), B (ok), C (an unhealthy image: verification fails, the deploy says ``failed``), D (an
   unhealthy image, SIGKILLed while it verifies, after the recreate: its run has a ``started`` line
   only, ``interrupted``). C and D never answered healthy: D is what runs now.
2. ``history`` shows the four deploys, newest first, with their verdicts and from -> to;
   ``rollback`` proposes B (not C or D); ``--to C`` is refused (exit 3).
3. B's tag is removed from D601's registry storage (test only): B is no longer a candidate (history
   says why), ``rollback`` proposes A, ``--to B`` is refused. The tag is put back.
4. The rollback's own advice is followed (a deploy of B, the same steps): it succeeds after the
   killed run (nothing of it left behind), B serves, and history shows it live with A the candidate.

Also: baidu-netdisk deploys with its required secrets in the env file, and no secret value appears
in either host's audit log or in ``history``'s output.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import catalog
from artifact_cd.config import PROJECT as PULUMI_PROJECT
from artifact_cd.config import parse_stack_config
from artifact_cd.contract import REVISION_LABEL
from artifact_cd.gates import Decision
from artifact_cd.plan import plan_service
from tests.integration.compose_project import ComposeProject, write_dispatch
from tests.rig import Rig, StepResult
from tests.rig.rig import OPERATOR, operator_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVICE = "project-manager"
PROJECT = ComposeProject("unidesk-history-tests", {SERVICE: "master", "baidu-netdisk": "master"})
ENV = PROJECT.env
AUDIT = {
    "master": "/var/log/unidesk-history-tests/master.jsonl",
    "d601": "/var/log/unidesk-history-tests/d601.jsonl",
}
SECRETS = {
    "UNIDESK_BAIDU_NETDISK_CLIENT_ID": "cid-HIST-4kQ-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": "csec-HIST-8pW-not-for-logs",
    "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": "tkey-HIST-2zX-not-for-logs",
}
ENV_FILE = "# controlled env file (history tests)\n" + "".join(f"{k}={v}\n" for k, v in SECRETS.items())
STORAGE = Rig.registry_config().storage_path


def sha(label: str) -> str:
    return hashlib.sha1(f"history-rig:{label}".encode()).hexdigest()  # noqa: S324 - a test id, not security


A, B, C, D = (sha(x) for x in "ABCD")
BAIDU = sha("baidu")


def repository(service: str = SERVICE) -> str:
    entry = catalog.get(service)
    assert entry is not None
    return entry.repository


def raw_config(rig: Rig, commits: dict[str, str], *, health_timeout: int = 20) -> dict[str, Any]:
    raw = PROJECT.stack_config(rig, commits)
    for host, path in AUDIT.items():
        raw["hosts"][host]["auditLog"] = path
    for host in raw["compose"]:
        raw["compose"][host]["healthTimeoutSeconds"] = health_timeout
    return raw


def deploy(
    rig: Rig, commit: str, *, service: str = SERVICE, health_timeout: int = 20
) -> dict[str, StepResult]:
    """The plan's steps in order over real SSH, as the Pulumi Commands run them; stop at a failure."""
    cfg = parse_stack_config(raw_config(rig, {service: commit}, health_timeout=health_timeout), ENV)
    plan = plan_service(cfg, service)
    assert plan.decision == Decision.PLANNED, plan.reason
    results = {"manifest-check": rig.d601.run_step(plan.steps[0])}
    check = results["manifest-check"].json
    assert check is not None and results["manifest-check"].returncode == 0, results["manifest-check"].stdout
    for step in plan.steps[1:]:
        results[step.id] = rig.host(step.host).run_step(
            step, digest=check["digest"], image_id=check["imageId"]
        )
        if results[step.id].returncode != 0:
            break
    return results


def revision(rig: Rig, container: str) -> str:
    fmt = '{{index .Config.Labels "' + REVISION_LABEL + '"}}'
    return rig.master.sh(
        'docker inspect -f "$1" "$2" 2>/dev/null || true', fmt, container, check=False
    ).stdout.strip()


def audit_runs(rig: Rig, commit: str) -> list[dict[str, Any]]:
    lines = rig.master.sh('cat -- "$1" 2>/dev/null || true', AUDIT["master"], check=False).stdout.splitlines()
    return [json.loads(line) for line in lines if line.strip() and json.loads(line).get("toCommit") == commit]


def kill_mid_verify(rig: Rig, commit: str, container: str) -> StepResult:
    """Deploy ``commit`` (an unhealthy image, a long health timeout) and SIGKILL the deploy while it
    verifies: once the container runs the commit, every process of the run (the script over SSH,
    the detached switch, whatever they started: the tree under the pid of its audit line) dies."""
    result: list[dict[str, StepResult]] = []
    worker = threading.Thread(target=lambda: result.append(deploy(rig, commit, health_timeout=120)))
    worker.start()
    deadline = time.monotonic() + 120
    while revision(rig, container) != commit:
        assert time.monotonic() < deadline and worker.is_alive(), f"{commit} never ran: {result}"
        time.sleep(0.2)
    started = [r for r in audit_runs(rig, commit) if r["event"] == "started"]
    assert len(started) == 1, started
    # the deploy's process tree (the script over SSH, its detached switch, what they run), each
    # process and its session, collected first, then SIGKILLed at once
    rig.master.sh(
        'tree() { echo "$1"; for c in $(ps -o pid= --ppid "$1"); do tree "$c"; done; }\n'
        'pids=$(tree "$1"); sids=$(for p in $pids; do ps -o sid= -p "$p"; done | sort -u)\n'
        'for s in $sids; do [ "$s" -gt 1 ] && kill -KILL -- "-$s" 2>/dev/null || true; done\n'
        "kill -KILL $pids 2>/dev/null || true",
        str(started[0]["pid"]),
    )
    worker.join(120)
    assert result, "the deploy's SSH session did not end after the kill"
    return result[0]["deploy"]


# --------------------------------------------------------------------------- the CLI


@dataclass
class Cli:
    rig: Rig
    workdir: Path

    def argv(self, commits: dict[str, str], *args: str) -> list[str]:
        project = self.workdir / "project"
        project.mkdir(exist_ok=True)
        raw = raw_config(self.rig, commits)
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
        return argv

    def run(self, commits: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            self.argv(commits, *args), cwd=REPO, capture_output=True, text=True, timeout=180, check=False
        )
        assert proc.stdout.strip(), proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        for value in SECRETS.values():
            assert value not in proc.stdout + proc.stderr, "a secret value in the CLI's output"
        return proc.returncode, json.loads(proc.stdout)

    def on_terminal(self, commits: dict[str, str], *args: str) -> tuple[int, str]:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(self.argv(commits, *args), cwd=REPO, stdin=subprocess.DEVNULL, stdout=follower,
                                stderr=subprocess.PIPE)  # fmt: skip
        os.close(follower)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.stderr is not None
        proc.stderr.close()
        return proc.wait(timeout=180), b"".join(chunks).decode().replace("\r\n", "\n")


def history_of(cli: Cli, requested: str) -> tuple[int, dict[str, Any]]:
    code, doc = cli.run({SERVICE: requested}, "history", "--service", SERVICE)
    return code, next(s for s in doc["services"] if s["service"] == SERVICE)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """Publish A..D and baidu's commit, install the project, empty this module's audit logs."""
    for commit, variant in ((A, "standard"), (B, "standard"), (C, "unhealthy"), (D, "unhealthy")):
        rig.publish_test_image(SERVICE, commit, variant=variant)
    rig.publish_test_image("baidu-netdisk", BAIDU, variant="baidu")
    for host in ("master", "d601"):
        rig.host(host).sh('rm -rf -- "$(dirname -- "$1")"', AUDIT[host])
        # the log's directory as README "Non-root hosts" has the operator create it
        operator_dir(rig.host(host), AUDIT[host].rsplit("/", 1)[0])
    PROJECT.install(rig, ENV_FILE)
    workdir = tmp_path_factory.mktemp("history-cli")
    write_dispatch(rig, workdir / "dispatch")
    yield Cli(rig, workdir)
    PROJECT.remove(rig)
    for host in ("master", "d601"):
        rig.host(host).sh('rm -rf -- "$(dirname -- "$1")"', AUDIT[host])


def tag_dir(commit: str) -> str:
    return f"{STORAGE}/docker/registry/v2/repositories/{repository()}/_manifests/tags/{commit}"


# --------------------------------------------------------------------------- the story


def test_history_and_rollback_after_ok_failed_and_killed_deploys(rig: Rig, cli: Cli) -> None:
    container = PROJECT.target(SERVICE).container_name
    for commit in (A, B):
        done = deploy(rig, commit)
        assert done["deploy"].returncode == 0, done["deploy"].stdout + done["deploy"].stderr[-2000:]
    failed = deploy(rig, C, health_timeout=5)
    assert failed["deploy"].returncode == 6 and failed["deploy"].json is not None
    assert failed["deploy"].json["error"] == "unhealthy"
    kill_mid_verify(rig, D, container)
    assert revision(rig, container) == D, "the killed deploy had recreated the container"
    assert [r["event"] for r in audit_runs(rig, D)] == ["started"], "SIGKILL: no end line"

    # history: each deploy with its verdict and from -> to; D serves; candidates B then A
    code, s = history_of(cli, D)
    assert code == 0
    assert (s["liveCommit"], s["requestedCommit"], s["target"]) == (D, D, "master-compose")
    got = [(d["verdict"], d["fromCommit"], d["toCommit"], d["error"]) for d in s["deploys"]]
    assert got == [
        ("interrupted", B, D, None),  # "from" is the last commit verified serving (the state file), not C
        ("failed", B, C, "unhealthy"),
        ("ok", A, B, None),
        ("ok", None, A, None),
    ]
    assert all(d["user"] == OPERATOR and d["host"] for d in s["deploys"])
    assert [c["commit"] for c in s["candidates"]] == [B, A]
    assert s["candidates"][0]["revision"] == B and s["candidates"][0]["digest"].startswith("sha256:")

    # rollback proposes B, not C or D; C and D are refused
    code, answer = cli.run({SERVICE: D}, "rollback", "--service", SERVICE)
    assert code == 0 and answer["toCommit"] == B, answer
    assert answer["commands"][1] == f"pulumi config set --path 'services.{SERVICE}.commit' {B}"
    for never in (C, D):
        code, refused = cli.run({SERVICE: D}, "rollback", "--service", SERVICE, "--to", never)
        assert code == 3 and refused["decision"] == "not-a-candidate", refused

    # on a terminal: the table and the commands (printed for the README's example)
    code, table = cli.on_terminal({SERVICE: D}, "history", "--service", SERVICE)
    assert code == 0 and f"{SERVICE} on master-compose: live {D[:12]}" in table, table
    code, advice = cli.on_terminal({SERVICE: D}, "rollback", "--service", SERVICE)
    assert code == 0 and advice.startswith(f"rollback prod {SERVICE} on master-compose: to {B}"), advice
    print(f"\n{table}\n{advice}")

    # B's manifest gone from the registry: no longer a candidate
    rig.d601.sh('mv -- "$1" "$1.rig-aside"', tag_dir(B))
    try:
        _, gone = history_of(cli, D)
        assert [c["commit"] for c in gone["candidates"]] == [A]
        assert [(e["commit"], e["reason"]) for e in gone["notCandidates"]] == [
            (B, "its manifest is not in the registry")
        ]
        code, answer = cli.run({SERVICE: D}, "rollback", "--service", SERVICE)
        assert code == 0 and answer["toCommit"] == A
        code, refused = cli.run({SERVICE: D}, "rollback", "--service", SERVICE, "--to", B)
        assert code == 3 and refused["reason"].endswith("its manifest is not in the registry")
    finally:
        rig.d601.sh('[ -e "$1" ] || mv -- "$1.rig-aside" "$1"', tag_dir(B))

    # the advice followed: B again, after the killed run; nothing of that run is left behind
    back = deploy(rig, B)
    assert back["deploy"].returncode == 0, back["deploy"].stdout + back["deploy"].stderr[-2000:]
    assert revision(rig, container) == B
    left = rig.master.sh(
        'ls -a /run/lock | grep -F "unidesk-deploy.$1.$2.lock.run" || true; ls -a "$3" | grep unidesk- || true; '
        "ls -d /tmp/unidesk-cd.* 2>/dev/null || true",  # the killed run's temp dir, swept by the next step
        PROJECT.name, SERVICE, PROJECT.base, check=False,
    ).stdout.strip()  # fmt: skip
    assert left == "", f"left behind: {left}"
    _, after = history_of(cli, B)
    assert after["liveCommit"] == B and after["deploys"][0]["verdict"] == "ok"
    # the deploy's "from" is the last commit verified serving: B (D never was), so B -> B, ok
    assert after["deploys"][0]["fromCommit"] == B and after["deploys"][1]["verdict"] == "interrupted", (
        json.dumps(after["deploys"], indent=1)
    )
    assert [c["commit"] for c in after["candidates"]] == [A], "B is live now"


def test_the_audit_log_holds_no_secret(rig: Rig, cli: Cli) -> None:
    """baidu-netdisk reads its required secrets (present/length) from the env file during the deploy:
    its audit lines, the whole log of both hosts and history's output never hold a value."""
    done = deploy(rig, BAIDU, service="baidu-netdisk")
    assert done["deploy"].returncode == 0, done["deploy"].stdout + done["deploy"].stderr[-2000:]
    logs = "".join(
        rig.host(h).sh('cat -- "$1" 2>/dev/null || true', AUDIT[h], check=False).stdout for h in AUDIT
    )
    mine = [json.loads(line) for line in logs.splitlines() if '"baidu-netdisk"' in line]
    assert [r["event"] for r in mine] == ["started", "finished"] and mine[-1]["verdict"] == "ok"
    for value in SECRETS.values():
        assert value not in logs, "a secret value in an audit log"
    code, doc = cli.run(
        {"baidu-netdisk": BAIDU}, "history", "--service", "baidu-netdisk"
    )  # asserts no secret
    assert code == 0 and doc["services"][0]["liveCommit"] == BAIDU
