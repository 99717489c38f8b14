"""Non-root hosts on the real rig (issue 11): the steps run as the unprivileged operator ``ubuntu``
and elevate (``sudo -n``) exactly the commands that need root.

The rig's D601 is a default k3s host: the containerd socket and /etc/rancher/k3s/k3s.yaml are
root-only, ``/usr/local/bin/k3s`` offers ``k3s ctr`` and ``k3s kubectl``, the unit directory is
root's, and ``/etc/sudoers.d/unidesk-artifact-cd`` holds exactly the lines README lists
(:func:`artifact_cd.sudoers.sudoers_lines`). ``ubuntu`` has no other sudo and uses Docker through
the docker group. Each refusal test drops one line, shows the step names it and changes nothing,
then puts the line back and shows the same step succeeding.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd.config import PROJECT, parse_stack_config
from artifact_cd.plan import plan_registry_host, plan_service
from tests.integration.compose_project import write_dispatch
from tests.rig import Rig
from tests.rig.rig import K3S_KUBECONFIG, K3S_SOCKET, OPERATOR

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

SERVICE = "decision-center"  # a k3s consumer in prod
C1 = hashlib.sha1(b"non-root:one").hexdigest()  # noqa: S324 - a test id
AUDIT_LOG = "/var/log/unidesk/deploy-audit.jsonl"


@pytest.fixture(scope="module")
def image(rig: Rig) -> dict[str, str]:
    rig.operator_audit_ready()
    return rig.publish_test_image(SERVICE, C1)


@pytest.fixture
def sudoers(rig: Rig) -> Iterator[list[str]]:
    """The README lines; whatever a test drops is put back afterwards."""
    rig.operator_audit_ready()
    lines = rig.sudoers_lines()
    try:
        yield lines
    finally:
        rig.set_sudoers(lines)


def operator_plan(rig: Rig, service: str, commit: str, env: str = "prod", **d601: Any) -> Any:
    raw = rig.stack_config(env, {service: commit}, user=OPERATOR)
    raw["hosts"]["d601"].update(d601)
    return plan_service(parse_stack_config(raw, env), service)


def listed(rig: Rig, ref: str) -> str:
    out = rig.d601.sh('ctr --address "$1" -n k8s.io images ls "name==$2"', K3S_SOCKET, ref).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return next((row[2] for row in rows if row[0] == ref), "")


def untag(rig: Rig, ref: str) -> None:
    rig.d601.sh('ctr --address "$1" -n k8s.io images rm "$2" >/dev/null 2>&1 || true', K3S_SOCKET, ref)


def audit_runs(rig: Rig, step: str, user: str = OPERATOR) -> list[dict[str, Any]]:
    text = rig.d601.sh('cat -- "$1" 2>/dev/null || true', AUDIT_LOG).stdout
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in lines if line.get("step") == step and line.get("user") == user]


def without(lines: list[str], fragment: str) -> list[str]:
    kept = [line for line in lines if fragment not in line]
    assert len(kept) == len(lines) - 1, f"exactly one README line holds {fragment!r}"
    return kept


def test_the_operator_is_unprivileged(rig: Rig) -> None:
    """ubuntu: docker through its group; no blanket sudo; k3s's socket and kubeconfig are root's."""
    proc = rig.d601.ssh(
        'id -u; docker version --format "{{.Server.Version}}" >/dev/null && echo docker-ok; '
        "sudo -n true 2>/dev/null || echo no-blanket-sudo; "
        f"test -r {K3S_KUBECONFIG} || echo kubeconfig-root-only; "
        f"ctr --address {K3S_SOCKET} version >/dev/null 2>&1 || echo socket-root-only",
        user=OPERATOR,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "1001",
        "docker-ok",
        "no-blanket-sudo",
        "kubeconfig-root-only",
        "socket-root-only",
    ]


def test_k3s_import_as_the_operator_elevates_only_ctr(
    rig: Rig, image: dict[str, str], sudoers: list[str]
) -> None:
    plan = operator_plan(rig, SERVICE, C1)
    ref = f"{rig.registry}/unidesk/{SERVICE}:{C1}"
    untag(rig, ref)
    check = rig.d601.run_step(plan.steps[0], user=OPERATOR)
    assert check.returncode == 0 and check.json is not None, check.stdout + check.stderr
    step = plan.step_by_id["import"]
    assert step.args[step.args.index("--elevate") + 1] == "sudo"
    before = len(audit_runs(rig, "k3s-import"))

    # one README line missing: infra-blocked naming the command and the line, nothing pulled
    rig.set_sudoers(without(sudoers, "images pull --plain-http"))
    blocked = rig.d601.run_step(step, digest=image["digest"], image_id=image["imageId"], user=OPERATOR)
    assert blocked.returncode == 5 and blocked.json is not None, blocked.stdout + blocked.stderr
    assert blocked.json["error"] == "infra-blocked" and blocked.json["channel"] == "k3s-containerd"
    missing = next(line for line in sudoers if "images pull --plain-http" in line)
    assert blocked.json["sudoers"] == [missing]
    assert blocked.json["command"].startswith("sudo -n /usr/local/bin/k3s ctr --address ")
    assert blocked.json["command"].endswith(f"images pull --plain-http {ref}")
    assert listed(rig, ref) == "", "nothing was imported"
    assert len(audit_runs(rig, "k3s-import")) == before, "a refusal before any change leaves no audit line"

    # the preflight's read of the Deployments (root-only kubeconfig) needs README's get deployment line
    rig.set_sudoers(without(sudoers, "kubectl -n unidesk get deployment"))
    blocked = rig.d601.run_step(step, digest=image["digest"], image_id=image["imageId"], user=OPERATOR)
    assert blocked.returncode == 5 and blocked.json is not None, blocked.stdout + blocked.stderr
    assert blocked.json["error"] == "infra-blocked" and blocked.json["channel"] == "kubernetes-api"
    assert blocked.json["sudoers"] == [next(x for x in sudoers if "kubectl -n unidesk get deployment" in x)]
    assert listed(rig, ref) == "", "nothing was imported"

    # the lines back: the same step imports, as ubuntu, through sudo -n k3s ctr (and kubectl's read)
    rig.set_sudoers(sudoers)
    done = rig.d601.run_step(step, digest=image["digest"], image_id=image["imageId"], user=OPERATOR)
    assert done.returncode == 0 and done.json is not None, done.stdout + done.stderr
    assert done.json["elevated"] is True and done.json["ctr"] == "k3s"
    assert listed(rig, ref) == image["digest"]
    runs = audit_runs(rig, "k3s-import")[before:]
    assert [r["event"] for r in runs] == ["started", "finished"]
    assert runs[1]["verdict"] == "ok" and runs[1]["toCommit"] == C1 and runs[1]["digest"] == image["digest"]
    assert runs[1]["target"] == "d601-k3s" and runs[1]["service"] == SERVICE and runs[1]["stack"] == "prod"


def test_k3s_import_with_elevate_none_names_the_fix(rig: Rig, image: dict[str, str]) -> None:
    plan = operator_plan(rig, SERVICE, C1, elevate="none")
    step = plan.step_by_id["import"]
    ref = f"{rig.registry}/unidesk/{SERVICE}:{C1}"
    before = listed(rig, ref)
    result = rig.d601.run_step(step, digest=image["digest"], image_id=image["imageId"], user=OPERATOR)
    assert result.returncode == 5 and result.json is not None, result.stdout
    assert result.json["channel"] == "k3s-containerd" and "elevate sudo" in result.json["fix"]
    assert listed(rig, ref) == before


def test_k3s_verify_as_the_operator_reads_the_root_only_kubeconfig_through_sudo(
    rig: Rig, image: dict[str, str], sudoers: list[str]
) -> None:
    """With the lines: sudo -n k3s kubectl runs (and finds no API server on the rig: infra-blocked
    kubernetes-api, not a permission error). Without one: infra-blocked naming it, before any call."""
    plan = operator_plan(rig, SERVICE, C1)
    step = plan.step_by_id["verify"]
    ran = rig.d601.run_step(step, user=OPERATOR, timeout=120)
    assert ran.returncode == 5 and ran.json is not None, ran.stdout + ran.stderr
    assert ran.json["channel"] == "kubernetes-api" and "sudoers" not in ran.json
    assert "permission denied" not in ran.json["detail"].lower()

    rig.set_sudoers(without(sudoers, "kubectl -n unidesk rollout status"))
    blocked = rig.d601.run_step(step, user=OPERATOR, timeout=120)
    assert blocked.returncode == 5 and blocked.json is not None, blocked.stdout
    assert blocked.json["error"] == "infra-blocked" and blocked.json["channel"] == "kubernetes-api"
    assert [line for line in blocked.json["sudoers"]] == [
        next(x for x in sudoers if "kubectl -n unidesk rollout status" in x)
    ]


def _install_steps(rig: Rig) -> list[Any]:
    raw = rig.stack_config("prod", user=OPERATOR)
    cfg = parse_stack_config(raw, "prod")
    return [s for s in plan_registry_host(cfg).steps if s.script == "registry-install.sh"]


def _unit(rig: Rig) -> str:
    return "/etc/systemd/system/" + rig.registry_config().unit_name


def test_registry_install_as_the_operator_runs_its_sudo_path(rig: Rig, sudoers: list[str]) -> None:
    """The unit drifted: as ubuntu, the write stages it with sudo -n tee and renames it with sudo -n
    mv (root-owned, 0644), activate reloads systemd and restarts the unit with sudo -n systemctl;
    the registry answers again. Without the tee line: refused naming it, the drifted unit untouched."""
    unit = _unit(rig)
    rendered = rig.d601.read_file(unit)
    steps = _install_steps(rig)
    unit_step = next(s for s in steps if s.id == "registry-unit")
    try:
        rig.d601.write_file(unit, rendered + "# drifted by hand\n")
        rig.set_sudoers(without(sudoers, "/usr/bin/tee "))
        blocked = rig.d601.run_step(unit_step, user=OPERATOR)
        assert blocked.returncode == 5 and blocked.json is not None, blocked.stdout + blocked.stderr
        assert blocked.json["channel"] == "filesystem"
        assert blocked.json["sudoers"] == [next(x for x in sudoers if "/usr/bin/tee " in x)]
        assert rig.d601.read_file(unit).endswith("# drifted by hand\n"), "the unit is untouched"
        assert (
            rig.d601.sh('ls -a -- "$(dirname "$1")" | grep -c "^\\.unidesk" || true', unit).stdout.strip()
            == "0"
        )

        rig.set_sudoers(sudoers)
        before = len(audit_runs(rig, "registry-install"))
        results = {}
        for step in steps:
            result = rig.d601.run_step(step, user=OPERATOR, timeout=180)
            assert result.returncode == 0 and result.json is not None, (step.id, result.stdout, result.stderr)
            results[step.id] = result.json
        assert results["registry-unit"]["result"] == "written"
        assert results["registry-config"]["result"] == "unchanged"
        assert (
            results["registry-activate"]["reloaded"] is True
            and results["registry-activate"]["restarted"] is True
        )
        assert rig.d601.read_file(unit) == rendered
        assert rig.d601.sh('stat -c "%U %a" -- "$1"', unit).stdout.split() == ["root", "644"]
        assert rig.d601.systemctl_state(rig.registry_config().unit_name) == "active"
        runs = audit_runs(rig, "registry-install")[before:]
        assert [(r["event"], r["action"]) for r in runs] == [
            ("started", "write"),
            ("finished", "write"),
            ("started", "activate"),
            ("finished", "activate"),
        ]
        assert all(
            r["target"] == "registry-host" and r["verdict"] == "ok" for r in runs if r["event"] == "finished"
        )
    finally:
        rig.set_sudoers(sudoers)
        rig.ensure_ready()
    again = rig.d601.run_step(unit_step, user=OPERATOR)
    assert again.returncode == 0 and again.json is not None and again.json["result"] == "unchanged"


# --------------------------------------------------------------------------- pinned host keys


def run_cli(
    rig: Rig, workdir: Path, raw: dict[str, Any], *args: str, options: tuple[str, ...] = ()
) -> tuple[int, dict[str, Any]]:
    """``python -m artifact_cd <args> --stack prod`` against the rig (its hosts through a ProxyCommand)."""
    project = workdir / "project"
    project.mkdir(exist_ok=True)
    (project / "Pulumi.prod.yaml").write_text(
        yaml.safe_dump({"config": {f"{PROJECT}:{k}": v for k, v in raw.items()}})
    )
    dispatch = workdir / "dispatch"
    if not dispatch.exists():
        write_dispatch(rig, dispatch)
    argv = [
        sys.executable,
        "-m",
        "artifact_cd",
        "--project-dir",
        str(project),
        *args,
        "--stack",
        "prod",
        "--json",
    ]
    argv += ["--ssh-key", str(rig.machine_key_file), "--timeout", "60"]
    for option in (f"ProxyCommand={dispatch} %h %p", *options):
        argv += ["--ssh-option", option]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_a_wrong_pinned_host_key_makes_status_refuse(rig: Rig, tmp_path: Path) -> None:
    """hosts.d601.hostKey pins the only key the CLI trusts, whatever the operator's own options say
    (here: accept anything). The master's key pinned for D601 is refused as host-key-mismatch and
    nothing runs; the right key answers healthy."""
    loose = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null")
    raw = rig.stack_config("prod")
    code, doc = run_cli(rig, tmp_path, raw, "status", options=loose)
    assert code == 0 and doc["decision"] == "healthy", doc

    raw["hosts"]["d601"]["hostKey"] = rig.master.host_key
    code, doc = run_cli(rig, tmp_path, raw, "status", options=loose)
    assert code == 1 and doc["ok"] is False and doc["decision"] == "infra-blocked", doc
    assert doc["sshFailure"] == "host-key-mismatch" and "hostkeys --stack" in doc["fix"]
    code, doc = run_cli(rig, tmp_path, raw, "health", options=loose)
    assert code == 1 and doc["sshFailure"] == "host-key-mismatch"
    raw["services"] = {SERVICE: {"commit": C1}}  # the live view: D601 is needed by every service
    code, doc = run_cli(rig, tmp_path, raw, "status", "--services", options=loose)
    assert code == 1 and "host-key-mismatch" in json.dumps(doc)


def test_hostkeys_prints_the_pin_lines_and_checks_master_to_d601(rig: Rig, tmp_path: Path) -> None:
    raw = rig.stack_config("prod")
    for h in raw["hosts"].values():
        del h["hostKey"]
    # unpinned: the CLI's own connections trust the operator's known_hosts (here the rig's)
    code, doc = run_cli(
        rig, tmp_path, raw, "hostkeys", options=(f"UserKnownHostsFile={rig.dir / 'known_hosts'}",)
    )
    assert code == 0, json.dumps(doc)
    assert doc["commands"] == [
        f"pulumi config set --path 'hosts.d601.hostKey' '{rig.d601.host_key}'",
        f"pulumi config set --path 'hosts.master.hostKey' '{rig.master.host_key}'",
    ]
    assert [h["status"] for h in doc["hosts"]] == ["unpinned", "unpinned"]
    assert doc["masterToD601"]["ok"] is True and doc["masterToD601"]["target"] == rig.d601_from_master

    # pinned: one right, one wrong; the master operator's key for D601 opens D601's operator only
    raw["hosts"]["d601"]["hostKey"] = rig.d601.host_key
    raw["hosts"]["master"]["hostKey"] = rig.d601.host_key
    raw["transfer"]["d601SshTarget"] = "root@d601.rig"
    code, doc = run_cli(rig, tmp_path, raw, "hostkeys")
    assert code == 1, doc
    d601, master = doc["hosts"]
    assert d601["status"] == "pinned" and d601["command"] is None
    assert master["status"] == "host-key-mismatch" and master["shown"] == rig.master.host_key
    hop = doc["masterToD601"]
    assert hop["ok"] is False and hop["reason"] == "master-host-key-mismatch", hop

    raw["hosts"]["master"]["hostKey"] = rig.master.host_key
    code, doc = run_cli(rig, tmp_path, raw, "hostkeys")
    hop = doc["masterToD601"]
    assert code == 1 and hop["ok"] is False and hop["reason"] == "auth-failed", hop
    assert "authorized_keys" in hop["fix"] and "stream" in hop["neededBy"]
