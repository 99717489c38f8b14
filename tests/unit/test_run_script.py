"""./run: the README's entry point; with no arguments it prints its usage and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "run"


def _header() -> list[str]:
    lines = RUN.read_text().splitlines()[1:]
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[2:] if line.startswith("# ") else line[1:])
    return header


def test_run_without_arguments_prints_its_usage_only() -> None:
    for argv in ([], ["--help"], ["-h"]):
        proc = subprocess.run(["bash", str(RUN), *argv], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == _header(), argv
        assert "set -euo pipefail" not in proc.stdout and "./run tests" in proc.stdout
