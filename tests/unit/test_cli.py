"""`python -m artifact_cd` verbs of the foundation: JSON out, structured refusals, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import catalog
from artifact_cd.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHA = "abcdef0123456789abcdef0123456789abcdef01"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.parametrize("stack", catalog.ENVS)
def test_plan_stack_covers_r10(capsys: pytest.CaptureFixture[str], stack: str) -> None:
    code, doc = run(capsys, "plan", "--stack", stack)
    assert code == 0
    assert {s["service"] for s in doc["services"]} == {e.id for e in catalog.services_for(doc["env"])}
    assert doc["registryHost"]["paths"]["unit"] == "unidesk-artifact-registry.service"
    assert sum(len(v) for v in doc["summary"].values()) == len(doc["services"])
    # R26: upstream-image entries of CI.json are listed, each refused with the reason
    upstream = {u["service"]: u for u in doc["upstreamImages"]}
    assert "artifact-registry" in upstream
    assert all(u["decision"] == "unsupported" and u["steps"] == [] for u in upstream.values())
    assert not set(upstream) & {s["service"] for s in doc["services"]}


def test_plan_one_service_with_commit_override(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(capsys, "plan", "--stack", "prod", "--service", "frontend", "--commit", SHA)
    assert code == 0
    assert doc["commit"] == SHA and doc["registry"]["tag"] == SHA


@pytest.mark.parametrize(
    ("argv", "decision", "code"),
    [
        (("plan", "--stack", "prod", "--service", "code-queue"), "unsupported", 3),
        (("plan", "--stack", "dev", "--service", "project-manager"), "unsupported", 3),
        (("plan", "--stack", "dev", "--service", "nope"), "unsupported", 3),
        (("plan", "--stack", "prod", "--service", "frontend", "--commit", "latest"), "invalid-config", 2),
        (("plan", "--stack", "prod", "--commit", SHA), "invalid-config", 2),
        (("deploy-backend-core", "--env", "prod", "--commit", SHA), "deprecated", 3),
        (("deploy-backend-core",), "deprecated", 3),
    ],
)
def test_refusals_are_json(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], decision: str, code: int) -> None:
    got, doc = run(capsys, *argv)
    assert got == code
    assert doc["decision"] == decision


def test_usage_errors_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "--stack", "staging"])
    assert info.value.code == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "invalid-arguments"


def test_hostile_stack_file_is_refused_before_any_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "Pulumi.prod.yaml").read_text().replace(
        '"982f612e3e1e3d22fb888fd0a3f835a4918de2d6"', '"982f612; rm -rf /"'
    )
    (tmp_path / "Pulumi.prod.yaml").write_text(text)
    code, doc = run(capsys, "--project-dir", str(tmp_path), "plan", "--stack", "prod")
    assert code == 2
    assert set(doc) == {"ok", "decision", "retryable", "problems"}
    assert doc["problems"][0]["key"] == "unidesk-artifact-cd:services.backend-core.commit"


def test_render_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render"]) == 0
    text = capsys.readouterr().out
    assert "### unit: /etc/systemd/system/unidesk-artifact-registry.service" in text
    code, doc = run(capsys, "render", "--format", "json")
    assert code == 0
    assert [f["name"] for f in doc["files"]] == ["config", "compose", "unit"]
    assert all(len(f["sha256"]) == 64 for f in doc["files"])
    assert f"### sha256 {doc['files'][0]['sha256']}" in text


def test_module_entry_point_runs_without_pulumi() -> None:
    # The offline CLI must not import the Pulumi SDK (it works where no engine exists).
    code = (
        "import sys, runpy; sys.argv=['artifact_cd','plan','--stack','dev'];\n"
        "try:\n    runpy.run_module('artifact_cd', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert not any(m == 'pulumi' or m.startswith('pulumi.') for m in sys.modules), 'pulumi imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stack"] == "dev"
