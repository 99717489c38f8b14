"""Readable output (issue 13, item 4): ``plan`` prints a table on a terminal, JSON when piped or with
``--json``; the JSON is the same document byte for byte. ``render`` keeps its text form; ``--format
json`` (or ``--json``) is JSON on a terminal too. Run under a real pseudo-terminal (``pty``)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import catalog
from artifact_cd.plan.table import format_plan_service, format_plan_stack
from tests.pty_support import run_on_terminal

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "artifact_cd")


def on_terminal(*argv: str) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal; (exit code, what the terminal showed)."""
    code, screen, err = run_on_terminal([*CLI, *argv], cwd=ROOT)
    assert b"Traceback" not in err, err.decode()
    return code, screen.decode("utf-8").replace("\r\n", "\n")


def piped(*argv: str) -> tuple[int, str]:
    proc = subprocess.run([*CLI, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("stack", catalog.ENVS)
def test_plan_stack_on_a_terminal_is_a_table_and_piped_is_the_json(stack: str) -> None:
    code, table = on_terminal("plan", "--stack", stack)
    piped_code, out = piped("plan", "--stack", stack)
    assert code == piped_code == 0
    assert not is_json(table) and "{" not in table, table
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "the piped JSON is today's document"
    lines = table.splitlines()
    assert lines[0].startswith(f"plan {stack} (env {stack}): {len(doc['services'])} services")
    assert lines[1].split() == ["SERVICE", "TARGET", "COMMIT", "DECISION", "STEPS", "GATES"]
    for s in doc["services"]:
        row = next(line for line in lines if line.split()[:1] == [s["service"]])
        target = s["target"]["kind"] + (f"@{s['target']['host']}" if s["target"].get("host") else "")
        commit = s["commit"][:12] if s["commit"] else "-"
        assert row.split()[1:5] == [target, commit, s["decision"], str(len(s["steps"]))], row
        if s["commit"]:
            assert s["commit"] not in row, "short commits unless --full"
        if s["requiresSupervisorApproval"]:
            assert "approval missing" in row
    registry = doc["registryHost"]
    assert f"registry host {registry['host']} ({registry['hostAddress']})" in table
    assumptions = sum(len(d["assumptions"]) for d in doc["services"] + doc["upstreamImages"])
    assert f"assumptions: {assumptions} " in table
    assert f"plan --stack {stack} --json" in table


def test_plan_full_shows_full_commits_and_json_on_a_terminal_is_the_piped_json() -> None:
    _, out = piped("plan", "--stack", "prod")
    doc = json.loads(out)
    code, table = on_terminal("plan", "--stack", "prod", "--full")
    assert code == 0 and not is_json(table)
    assert all(s["commit"] in table for s in doc["services"] if s["commit"])
    code, as_json = on_terminal("plan", "--stack", "prod", "--json")
    assert code == 0 and as_json == out
    assert piped("plan", "--stack", "prod", "--json", "--full") == (0, out)


@pytest.mark.parametrize(
    ("stack", "service", "exit_code"),
    [("dev", "code-queue", 0), ("prod", "frontend", 0), ("prod", "code-queue", 3)],
)
def test_plan_one_service_on_a_terminal(stack: str, service: str, exit_code: int) -> None:
    code, table = on_terminal("plan", "--stack", stack, "--service", service)
    piped_code, out = piped("plan", "--stack", stack, "--service", service)
    assert code == piped_code == exit_code, "exit codes do not depend on the terminal"
    doc = json.loads(out)
    assert not is_json(table) and "{" not in table
    assert table.startswith(f"plan {stack} {service}: {doc['decision']} ({doc['reason']})")
    for step in doc["steps"]:
        assert any(line.split()[:2] == [step["id"], step["host"]] for line in table.splitlines()), step
    assert f"assumptions: {len(doc['assumptions'])} " in table
    assert on_terminal("plan", "--stack", stack, "--service", service, "--json") == (exit_code, out)


def test_refusals_and_resources_stay_json_on_a_terminal() -> None:
    unknown = on_terminal("plan", "--stack", "dev", "--service", "no-such-service")
    assert unknown == piped("plan", "--stack", "dev", "--service", "no-such-service")
    assert unknown[0] == 3 and json.loads(unknown[1])["decision"] == "unsupported"
    invalid = on_terminal("plan", "--stack", "dev", "--commit", "abc")
    assert invalid[0] == 2 and json.loads(invalid[1])["decision"] == "invalid-config"
    resources = on_terminal("plan", "--stack", "dev", "--resources")
    assert resources == piped("plan", "--stack", "dev", "--resources")
    assert resources[0] == 0 and is_json(resources[1])


def test_render_keeps_its_text_and_json_on_a_terminal() -> None:
    code, text = on_terminal("render", "--stack", "prod")
    assert (code, text) == piped("render", "--stack", "prod")
    assert text.startswith("### ") and not is_json(text)
    _, out = piped("render", "--stack", "prod", "--format", "json")
    assert set(json.loads(out)) == {"specSha256", "files"}
    assert on_terminal("render", "--stack", "prod", "--format", "json") == (0, out)
    assert on_terminal("render", "--stack", "prod", "--json") == (0, out)


def _with_live(doc: dict[str, Any]) -> dict[str, Any]:
    live = copy.deepcopy(doc)
    for s in live["services"]:
        s["live"] = {
            "verdict": "in-sync",
            "liveCommit": s["commit"],
            "reason": "r",
            "action": "nothing to do",
        }
    live["services"][0]["live"] = None  # not probed
    live["liveView"] = {
        "hosts": {
            "d601": {"reachable": True, "seconds": 0.5},
            "master": {"reachable": False, "error": "refused"},
        },
        "registry": {"decision": "healthy", "recommendedAction": "none"},
        "inSync": False,
    }
    return live


def test_plan_live_table_adds_the_live_columns() -> None:
    _, out = piped("plan", "--stack", "dev")
    doc = _with_live(json.loads(out))
    table = format_plan_stack(doc)
    lines = table.splitlines()
    assert lines[1].split()[-2:] == ["LIVE", "VERDICT"]
    first = doc["services"][0]
    assert next(line for line in lines if line.split()[:1] == [first["service"]]).endswith("not probed")
    assert "live: NOT in sync (d601: 0.5 s; master: UNREACHABLE (refused))" in table
    assert "registry on d601: healthy" in table
    one = format_plan_service({**doc["services"][1], "liveView": doc["liveView"]})
    assert "live: in-sync: r (run: nothing to do)" in one
