"""lib.sh's temp dirs: removed on every exit the script sees, and swept after one it cannot see.

A SIGKILLed step (a killed deploy, issue 12: "temp files are removed on every exit path") leaves
its ``unidesk-cd.<pid>.*`` dir; the next step script on that host removes it, and never the dir of
a step that is still running.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from artifact_cd.contract import shell_constants
from artifact_cd.scripts import LIB, SCRIPT_DIR


def _run(tmpdir: Path, body: str) -> subprocess.CompletedProcess[str]:
    text = "set -euo pipefail\n" + shell_constants() + (SCRIPT_DIR / LIB).read_text(encoding="utf-8") + body
    return subprocess.run(["bash", "-c", text], env={"TMPDIR": str(tmpdir), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False, timeout=30)  # fmt: skip


def _dead_pid() -> int:
    proc = subprocess.run(["bash", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_make_tmp_sweeps_a_dead_step_s_dir_and_keeps_a_running_one_s(tmp_path: Path) -> None:
    dead = tmp_path / f"unidesk-cd.{_dead_pid()}.AbCdEfGh"
    (dead / "sub").mkdir(parents=True)
    live = subprocess.Popen(["sleep", "30"])
    try:
        running = tmp_path / f"unidesk-cd.{live.pid}.AbCdEfGh"
        running.mkdir()
        foreign = tmp_path / "unidesk-cd.AbCdEfGh"  # not a pid-named dir: never touched
        foreign.mkdir()
        done = _run(tmp_path, 'make_tmp\nprintf "%s\\n" "$TMP"\n')
        assert done.returncode == 0, done.stderr
        made = Path(done.stdout.strip())
        assert not dead.exists(), "the dir of a process that is gone is swept"
        assert running.is_dir() and foreign.is_dir()
        assert made.name.startswith("unidesk-cd.") and not made.exists(), "its own dir is removed at exit"
    finally:
        live.kill()
        live.wait()


def test_a_symlink_named_like_a_temp_dir_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "keep"
    target.mkdir()
    (target / "file").write_text("x")
    (tmp_path / f"unidesk-cd.{_dead_pid()}.AbCdEfGh").symlink_to(target)
    assert _run(tmp_path, "make_tmp\n").returncode == 0
    assert (target / "file").exists()
