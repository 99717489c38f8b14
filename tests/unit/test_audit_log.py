"""The deploy audit log (issue 13 item 1): include/audit.sh writes it, artifact_cd/audit.py reads it.

The writer runs for real under bash: the generated constants, lib.sh and include/audit.sh, then a
few lines standing in for a step script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from artifact_cd.audit import pair_runs, parse_log
from artifact_cd.contract import AUDIT_MAX_BYTES, shell_constants
from artifact_cd.scripts import INCLUDE_DIR, LIB, SCRIPT_DIR

SHA_A = "a" * 40
SHA_B = "b" * 40


def _harness(body: str) -> str:
    lib = (SCRIPT_DIR / LIB).read_text(encoding="utf-8")
    audit = (INCLUDE_DIR / "audit.sh").read_text(encoding="utf-8")
    return "set -euo pipefail\n" + shell_constants() + lib + audit + body


def _run(body: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", _harness(body), "step", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


STEP = f"""
audit_init "$1" dev dev todo-note d601-direct compose-deploy
AUDIT_FIELDS+=(toCommit '"{SHA_B}"' fromCommit '"{SHA_A}"')
audit_event started
"""


def test_a_run_writes_started_then_finished_with_the_identity_fields(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "audit.jsonl"
    done = _run(STEP + "audit_event finished verdict '\"ok\"' error null\n", str(log))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["started", "finished"]
    assert lines[0]["runId"] == lines[1]["runId"] and lines[1]["verdict"] == "ok"
    assert lines[1]["toCommit"] == SHA_B and lines[1]["fromCommit"] == SHA_A
    assert isinstance(lines[1]["seconds"], float | int) and "seconds" not in lines[0]
    runs = pair_runs(parse_log(log.read_text()).records)
    assert len(runs) == 1 and runs[0].verdict == "ok" and runs[0].record.stack == "dev"


def test_a_fail_after_started_leaves_a_failed_line_with_its_code(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    done = _run(STEP + 'fail "$EXIT_VERIFY_FAILED" unhealthy "no answer" false\n', str(log))
    assert done.returncode != 0
    end = json.loads(log.read_text().splitlines()[-1])
    assert end["event"] == "failed" and end["error"] == "unhealthy" and end["exitCode"] == done.returncode


def test_a_terminated_step_leaves_a_failed_line_and_a_killed_one_reads_interrupted(tmp_path: Path) -> None:
    for sig, verdict in ((signal.SIGTERM, "failed"), (signal.SIGKILL, "interrupted")):
        log = tmp_path / f"{sig.name}.jsonl"
        proc = subprocess.Popen(["bash", "-c", _harness(STEP + "sleep 30 & wait\n"), "step", str(log)])
        deadline = time.monotonic() + 10
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        runs = pair_runs(parse_log(log.read_text()).records)
        assert [r.verdict for r in runs] == [verdict], sig.name


def test_an_unwritable_log_refuses_before_anything_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = _run(STEP, str(blocker / "audit.jsonl"))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode != 0 and result["error"] == "infra-blocked" and result["channel"] == "audit-log"
    assert "install -d" in result["fix"]


def test_the_log_is_bounded_by_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("x" * (AUDIT_MAX_BYTES + 1) + "\n")
    assert _run(STEP + "audit_event finished verdict '\"ok\"' error null\n", str(log)).returncode == 0
    assert (tmp_path / "audit.jsonl.1").stat().st_size > AUDIT_MAX_BYTES
    assert len(log.read_text().splitlines()) == 2


def test_concurrent_writers_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    body = STEP + 'for i in $(seq 1 60); do audit_event finished verdict \'"ok"\' error null n "$i"; done\n'
    procs = [subprocess.Popen(["bash", "-c", _harness(body), "step", str(log)]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    parsed = parse_log(log.read_text())
    assert parsed.skipped_lines == 0 and len(parsed.records) == 3 * 61


def test_a_torn_line_is_skipped_not_fatal() -> None:
    good = json.dumps(
        {
            "v": 1,
            "time": "t",
            "event": "started",
            "runId": "r",
            "stack": "dev",
            "env": "dev",
            "service": "s",
            "target": "t",
            "step": "x",
            "host": "h",
            "user": "u",
            "pid": 1,
        }
    )
    parsed = parse_log(good + '\n{"v":1,"ti\n')
    assert len(parsed.records) == 1 and parsed.skipped_lines == 1
    assert pair_runs(parsed.records)[0].verdict == "interrupted"
