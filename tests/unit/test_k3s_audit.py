"""The audit lines of k3s-verify.sh (issue 13; step ``k3s-deploy``: the rollout after the Deployment
patch), with the fake kubectl of test_scripts_k3s_verify. k3s-import's lines are proven on the rig
(tests/integration/test_non_root.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from artifact_cd.audit import pair_runs, parse_log
from artifact_cd.scripts import command_line, script_text
from tests.unit.test_scripts_k3s_verify import BASH, NEW, FakeCluster, health


def verify_audited(cluster: FakeCluster, log: Path) -> tuple[int, dict[str, Any]]:
    args = ["--namespace", "unidesk-dev", "--deployment", "a-dev", "--service", "svc-dev", "--port", "8080",
            "--health-path", "/health", "--commit", NEW, "--timeout", "3",
            "--service-id", "frontend", "--elevate", "sudo", "--audit-log", str(log), "--stack", "dev"]  # fmt: skip
    proc = subprocess.run(
        [BASH, "-c", command_line(args)],
        input=script_text("k3s-verify.sh"),
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{cluster.bin}:/usr/bin:/bin", "FAKE_K8S": str(cluster.dir)},
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


def test_a_verified_rollout_is_one_ok_run_and_a_failed_one_a_failed_run(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path)
    log = tmp_path / "audit" / "deploy-audit.jsonl"
    cluster.deployment("a-dev")
    cluster.health(health(NEW, NEW))
    code, doc = verify_audited(cluster, log)
    assert code == 0 and doc["ok"] is True, doc

    cluster.deployment("a-dev", rolled_out=False)
    code, doc = verify_audited(cluster, log)
    assert code == 6 and doc["error"] == "rollout-failed"

    records = parse_log(log.read_text())
    assert records.skipped_lines == 0
    runs = pair_runs(records.records)
    assert [r.verdict for r in runs] == ["ok", "failed"]
    for run in runs:
        rec = run.record
        assert (rec.step, rec.target, rec.service, rec.stack, rec.env) == (
            "k3s-deploy",
            "d601-k3s",
            "frontend",
            "dev",
            "dev",
        )
        assert rec.to_commit == NEW and rec.from_commit is None
    assert runs[1].ended is not None and runs[1].ended.error == "rollout-failed"
