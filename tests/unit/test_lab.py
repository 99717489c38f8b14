"""lab (``./run lab``, ``./run demo``) without starting hosts: state, leftovers, the CLI's answers
when there is no lab. The hosts themselves: tests/integration/test_demo.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from artifact_cd.config import PROJECT
from lab import control
from lab.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_leftovers_names_the_directory_and_its_mounts_and_nothing_else(tmp_path: Path) -> None:
    rigdir = tmp_path / "rig"
    assert control.leftovers("", rigdir) == []
    rigdir.mkdir()
    assert control.leftovers("", rigdir) == [f"directory {rigdir}"]
    # a rig id that never existed: no cgroup, process or link of it
    assert control.leftovers("0badc0de", rigdir) == [f"directory {rigdir}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_leftovers_sees_a_mount_under_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "rig" / "host" / "root"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "lab-test", str(target)], check=True)
    try:
        assert f"mount {target}" in control.leftovers("", tmp_path / "rig")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert control.leftovers("", tmp_path / "rig") == [f"directory {tmp_path / 'rig'}"]


def test_leftovers_sees_a_process_naming_the_directory(tmp_path: Path) -> None:
    rigdir = tmp_path / "rig"
    # Popen returns once exec has closed the child's error pipe, which is before the kernel has
    # set the new argv (/proc/PID/cmdline is empty for that moment; 73 misses in 300 under load),
    # so the scan waits for the child's first line
    code = "import time; print('ready', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(rigdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        found = control.leftovers("", rigdir)
        assert any(item.startswith(f"process {proc.pid}:") for item in found), found
    finally:
        proc.kill()
        proc.wait()
    assert control.leftovers("", rigdir) == []


def test_state_round_trip_and_a_dead_server_is_not_alive(tmp_path: Path) -> None:
    paths = control.LabPaths(tmp_path)
    assert control.read_state(paths) == {}
    me = os.getpid()
    state = control.write_state(paths, phase="up", pid=me, start=control.proc_start(me))
    assert control.read_state(paths) == state and control.server_alive(state)
    assert not control.server_alive({**state, "start": "1"})  # a recycled PID is not the server
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not control.server_alive({"pid": dead.pid, "start": "0"})
    paths.state.write_text("not json")
    assert control.read_state(paths) == {}


def test_status_and_down_without_a_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none"
    assert main(["status", "--dir", str(missing)]) == 1
    assert "lab: down" in capsys.readouterr().out
    assert main(["down", "--dir", str(missing)]) == 0
    assert "not running" in capsys.readouterr().out
    assert not missing.exists()


def test_status_of_a_lab_whose_server_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = control.LabPaths(tmp_path)
    control.write_state(paths, phase="up", pid=2**22 + 1, start="1", rigId="0badc0de")
    assert main(["status", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "not running" in out and "server gone" in out and "./run lab down" in out


def _plan(project: Path) -> str:
    argv = [
        sys.executable,
        "-m",
        "artifact_cd",
        "--project-dir",
        str(project),
        "plan",
        "--stack",
        "prod",
        "--json",
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_a_lab_stack_file_is_read_by_the_cli(tmp_path: Path) -> None:
    """The stack files `lab up` writes are Pulumi stack files the CLI reads (namespaced keys): the
    shipped prod stack written back by write_stack_file plans the same."""
    shipped = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in shipped.items() if k.startswith(prefix)}
    control.write_stack_file(tmp_path, "prod", raw)
    assert _plan(tmp_path) == _plan(REPO)
