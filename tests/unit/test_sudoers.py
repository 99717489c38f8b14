"""Non-root hosts (issue 11): the sudoers rules the scripts check are the ones README lists.

The scripts run here as ``nobody`` (``setpriv``) with a ``sudo`` that allows nothing and a ``k3s``
stand-in on PATH: every step that needs root then refuses before it changes anything and lists
the lines it needs, which must be exactly :mod:`artifact_cd.sudoers`'s for that config. The real
elevation (sudo -n with the lines in place) runs on the rig: tests/integration/test_non_root.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import sudoers
from artifact_cd.config import load_stack, parse_stack_config
from artifact_cd.contract import ManifestFacts, ScriptArgs, last_json_object
from artifact_cd.plan import plan_registry_host, plan_service
from artifact_cd.scripts import command_line, script_text

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "a" * 40
FACTS = ManifestFacts(digest="sha256:" + "1" * 64, image_id="sha256:" + "2" * 64)
as_root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="runs the scripts as nobody with setpriv (needs root)"
)


def test_readme_lists_the_sudoers_lines_of_the_shipped_stacks() -> None:
    lines: list[str] = []
    for env in ("dev", "prod"):
        for line in sudoers.sudoers_lines(load_stack(ROOT, env)):
            if line not in lines:
                lines.append(line)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(
        r"<!-- sudoers lines: [^\n]*-->\n```\n(.*?)```\n<!-- end sudoers lines -->", readme, re.S
    )
    assert block, "README has the generated sudoers block"
    assert block.group(1).splitlines() == lines


def test_no_rule_for_paths_in_the_users_home_and_none_without_the_registry() -> None:
    raw = _raw("ubuntu")
    cfg = parse_stack_config(raw, "prod")
    rules = sudoers.registry_rules(cfg)
    assert not any("/home/ubuntu/" in r for r in rules), "the managed files under the home are the user's"
    assert any(r.startswith("/usr/bin/tee /etc/systemd/system/.") for r in rules)
    raw["registry"]["manage"] = False
    assert sudoers.registry_rules(parse_stack_config(raw, "prod")) == []
    raw["registry"] = {"manage": True, "configPath": "/etc/unidesk/registry/config.yml"}
    rules = sudoers.registry_rules(parse_stack_config(raw, "prod"))
    assert "/usr/bin/mkdir -p -- /etc/unidesk/registry" in rules
    assert "/usr/bin/tee /etc/unidesk/registry/.config.yml.new" in rules


def _raw(user: str, **d601: Any) -> dict[str, Any]:
    return {
        "env": "prod",
        "hosts": {"d601": {"host": "d601", "user": user, **d601}, "master": {"host": "master", "user": user}},
        "registry": {"manage": True},
    }


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A directory nobody can read: a ``sudo`` that allows nothing, a ``k3s`` stand-in."""
    d = Path(tempfile.mkdtemp(prefix="unidesk-sudoers-"))
    try:
        d.chmod(0o755)
        (d / "bin").mkdir(mode=0o755)
        (d / "bin" / "sudo").write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
        (d / "bin" / "k3s").write_text("#!/bin/sh\necho 'k3s stand-in: must not run here' >&2\nexit 97\n")
        for f in (d / "bin").iterdir():
            f.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_as_nobody(call: ScriptArgs, sandbox: Path) -> tuple[int, dict[str, Any] | None]:
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
         "env", "-i", f"PATH={sandbox / 'bin'}:/usr/bin:/bin", "HOME=/nonexistent", f"TMPDIR={sandbox}",
         "bash", "-c", command_line(call.to_argv())],
        input=script_text(call.script), capture_output=True, text=True, timeout=60, check=False, cwd=sandbox,
    )  # fmt: skip
    return proc.returncode, last_json_object(proc.stdout)


def _lines(rules: list[str]) -> list[str]:
    return [f"nobody ALL=(root) NOPASSWD: {r}" for r in rules]


@as_root_only
def test_k3s_import_refuses_listing_exactly_the_ctr_rules(sandbox: Path) -> None:
    cfg = parse_stack_config(_raw("nobody"), "prod")
    plan = plan_service(cfg, "decision-center", commit_override=COMMIT)
    call = plan.step_by_id["import"].call
    assert call is not None
    code, doc = run_as_nobody(call.resolve(FACTS), sandbox)
    assert code == 5 and doc is not None, doc
    assert doc["error"] == "infra-blocked" and doc["channel"] == "k3s-containerd"
    k3s = str(sandbox / "bin" / "k3s")
    ctr = [r for r in sudoers.k3s_rules(cfg, k3s=k3s) if " ctr " in r]
    assert doc["sudoers"] == _lines(ctr)
    assert doc["command"] == f"sudo -n {k3s} ctr --address {cfg.k3s.containerd_socket} -n k8s.io version"


@as_root_only
def test_k3s_import_with_elevate_none_names_the_fix(sandbox: Path) -> None:
    sock_path = sandbox / "containerd.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        sock_path.chmod(0o600)
        raw = _raw("nobody", elevate="none")
        raw["k3s"] = {"containerdSocket": str(sock_path)}
        plan = plan_service(parse_stack_config(raw, "prod"), "decision-center", commit_override=COMMIT)
        call = plan.step_by_id["import"].call
        assert call is not None
        code, doc = run_as_nobody(call.resolve(FACTS), sandbox)
    finally:
        server.close()
    assert code == 5 and doc is not None and doc["channel"] == "k3s-containerd"
    assert "sudoers" not in doc and "elevate sudo" in doc["fix"]


@as_root_only
def test_k3s_verify_refuses_listing_exactly_the_kubectl_rules(sandbox: Path) -> None:
    if Path("/etc/rancher/k3s/k3s.yaml").exists():
        pytest.skip("this machine has a k3s kubeconfig")
    cfg = parse_stack_config(_raw("nobody"), "prod")
    plan = plan_service(cfg, "decision-center", commit_override=COMMIT)
    call = plan.step_by_id["verify"].call
    assert call is not None
    code, doc = run_as_nobody(call, sandbox)
    assert code == 5 and doc is not None, doc
    assert doc["channel"] == "kubernetes-api"
    k3s = str(sandbox / "bin" / "k3s")
    ns = plan.to_json()["target"]["namespace"]
    expected = [
        r
        for r in sudoers.k3s_rules(cfg, k3s=k3s)
        if " kubectl " in r and (f"-n {ns} " in r or f"/namespaces/{ns}/" in r)
    ]
    assert sorted(doc["sudoers"]) == sorted(_lines(expected))


@as_root_only
def test_a_file_in_a_root_only_directory_is_staged_with_the_tee_and_mv_rules(sandbox: Path) -> None:
    raw = _raw("nobody")
    root_dir = sandbox / "etc"
    root_dir.mkdir(mode=0o755)
    raw["registry"] = {"manage": True, "configPath": f"{root_dir}/config.yml"}
    cfg = parse_stack_config(raw, "prod")
    step = next(s for s in plan_registry_host(cfg).steps if s.id == "registry-config")
    assert step.call is not None
    code, doc = run_as_nobody(step.call, sandbox)
    assert code == 5 and doc is not None, doc
    assert doc["channel"] == "filesystem"
    rules = [
        r for r in sudoers.registry_rules(cfg, user="nobody") if f"{root_dir}/" in r and "mkdir" not in r
    ]
    assert doc["sudoers"] == _lines(rules) and len(rules) == 2
    assert sorted(p.name for p in root_dir.iterdir()) == [], "nothing staged, nothing written"

    raw["hosts"]["d601"]["elevate"] = "none"
    step = next(
        s for s in plan_registry_host(parse_stack_config(raw, "prod")).steps if s.id == "registry-config"
    )
    assert step.call is not None
    code, doc = run_as_nobody(step.call, sandbox)
    assert code == 5 and doc is not None and doc["channel"] == "filesystem" and "sudoers" not in doc


@as_root_only
def test_activate_as_a_non_root_user_without_elevation_is_refused_first(sandbox: Path) -> None:
    raw = _raw("nobody", elevate="none")
    step = next(
        s for s in plan_registry_host(parse_stack_config(raw, "prod")).steps if s.id == "registry-activate"
    )
    assert step.call is not None
    code, doc = run_as_nobody(step.call, sandbox)
    assert code == 5 and doc is not None and doc["channel"] == "systemd", doc
    assert "elevate sudo" in doc["fix"]
