"""./run: the README's entry point; with no arguments it prints its usage and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
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
        proc = subprocess.run(
            ["bash", str(RUN), *argv], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == _header(), argv
        assert "set -euo pipefail" not in proc.stdout and "./run tests" in proc.stdout


def test_the_demo_is_the_first_command_of_the_usage() -> None:
    commands = [line.split()[0:2] for line in _header() if line.startswith("  ./run ")]
    assert commands[0] == ["./run", "demo"], commands
    assert ["./run", "tests"] in commands and ["./run", "lab"] in commands


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """``run`` as nobody, from a copy in a directory nobody may enter (a checkout can sit below a
    0700 directory, e.g. one made by mktemp -d); the refusal comes before ``run`` reads anything else."""
    directory = Path(tempfile.mkdtemp(prefix="unidesk-run-test."))
    try:
        directory.chmod(0o755)
        copy = directory / "run"
        shutil.copy2(RUN, copy)
        return _run_as_nobody(copy, *argv)
    finally:
        shutil.rmtree(directory)


def _run_as_nobody(run: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(run), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent"},
    )


def test_demo_and_lab_refuse_without_root_before_touching_anything() -> None:
    """The local hosts need root (namespaces, cgroups, mounts): refused up front, naming the way
    without root, before .venv or a Debian package is looked at (no sudo prompt, no pip)."""
    for argv in (["demo"], ["lab", "up"], ["lab", "down"], ["lab", "status"]):
        proc = _as_nobody(*argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert "needs root" in proc.stderr and "./run plan --stack dev" in proc.stderr, proc.stderr
        assert "installing" not in proc.stderr and proc.stdout == "", proc.stderr


def test_the_readme_sets_up_with_exactly_the_demo_and_the_tests() -> None:
    """A fresh Debian machine gets two commands: the main job (`./run demo`) and the whole suite."""
    readme = (RUN.parent / "README.md").read_text()
    section = readme.split("\n## Set up and run", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0].strip() for b in section.split("```bash\n")[1:]]
    assert blocks == ["./run demo", "./run tests"], blocks
    assert "./run tests" in (RUN.parent / ".ci" / "run").read_text()
