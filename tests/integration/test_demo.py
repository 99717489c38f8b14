"""``./run demo`` and ``./run lab up|status|down`` from the checkout (issue 13 item 6; R9, R14, R18).

Each starts its own local hosts (not the session rig): the demo is what a newcomer runs first, so it
is run exactly as the README gives it. What must hold: exit 0, every phase announced with its
duration, A live and then B live (B's deploy names A as what ran before), ``status --services``
showing B in sync, ``history`` B live, ``rollback`` proposing A, and afterwards nothing of the hosts
on the machine (:func:`lab.control.leftovers`: no process, cgroup, mount, veth, directory). A phase
that fails, or a demo terminated, still tears everything down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab import control, demo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "run"


def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(RUN), *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def rig_and_workdir(out: str) -> tuple[str, Path]:
    rig = re.search(r"^ +rig ([0-9a-f]{8}): ", out, re.M)
    workdir = re.search(r"(/\S*unidesk-demo-\S+) removed", out)
    assert rig and workdir, out
    return rig.group(1), Path(workdir.group(1))


def test_run_demo_deploys_a_then_b_and_leaves_nothing_behind() -> None:
    proc = run("demo")
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-3000:]

    headers = re.findall(r"^\[(\d+)/(\d+)\] ", out, re.M)
    total = int(headers[0][1])
    assert [int(i) for i, _ in headers] == list(range(1, total + 1)), headers
    assert len(re.findall(r"^ +done in \d+\.\d s$", out, re.M)) == total, "every phase shows its duration"

    a = re.search(r"^ +A = ([0-9a-f]{12}) ", out, re.M)
    b = re.search(r"^ +B = ([0-9a-f]{12}) ", out, re.M)
    assert a and b and a.group(1) != b.group(1), out
    live_a = out.index(f"LIVE on master: {demo.SERVICE} at A ({a.group(1)}), before: nothing")
    live_b = out.index(f"LIVE on master: {demo.SERVICE} at B ({b.group(1)}), before: A")
    assert live_a < live_b
    row = re.search(rf"^ +{demo.SERVICE} +master +(\S+) +(\S+) +yes +in-sync$", out, re.M)
    assert row and row.groups() == (b.group(1), b.group(1)), out  # status --services: B desired and live
    assert f"{demo.SERVICE} on master-compose: live {b.group(1)}, requested {b.group(1)}" in out  # history
    # every deploy ran as the unprivileged operator (history's USER column), never as root
    users = re.findall(r"^ +\d{4}-\d\d-\d\dT\S+Z +ok +.* (\S+)$", out, re.M)
    assert users and set(users) == {"ubuntu"}, out
    assert f"=> rollback suggests A ({a.group(1)})" in out, out  # rollback: A, with the commands
    to = re.search(
        rf"pulumi config set --path 'services\.{demo.SERVICE}\.commit' ([0-9a-f]{{40}})$", out, re.M
    )
    assert to and to.group(1).startswith(a.group(1)), out
    assert "demo OK" in out

    rig_id, workdir = rig_and_workdir(out)
    assert control.leftovers(rig_id, workdir / "rig") == []
    assert not workdir.exists()


def test_a_failed_phase_still_tears_everything_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(self: demo.Demo, label: str, greeting: str) -> None:
        raise demo.DemoFailed(f"publish of {label} refused (test)")

    monkeypatch.setattr(demo.Demo, "publish", refuse)
    assert demo.run_demo() == 1
    out = capsys.readouterr().out
    assert "FAILED after" in out and "publish of A refused (test)" in out and "demo FAILED" in out
    assert "LIVE on master" not in out
    rig_id, workdir = rig_and_workdir(out)
    assert control.leftovers(rig_id, workdir / "rig") == []
    assert not workdir.exists()


def test_a_terminated_demo_tears_down_before_it_exits() -> None:
    """SIGTERM (as from a CI timeout or `kill`) while the demo runs: the phase stops, the hosts are
    torn down all the same, exit 1."""
    proc = subprocess.Popen(["bash", str(RUN), "demo"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # `run` execs the demo: proc.pid is the demo's own PID
        lines.append(line)
        if line.startswith("[3/"):  # the hosts are up: publishing
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 1, out
    assert "interrupted" in out and "demo FAILED" in out and "LIVE on master" not in out, out
    rig_id, workdir = rig_and_workdir(out)
    assert control.leftovers(rig_id, workdir / "rig") == []
    assert not workdir.exists()


def _lab_state(base: Path) -> dict[str, object]:
    state = json.loads((base / "lab.json").read_text())
    assert isinstance(state, dict)
    return state


def test_lab_up_status_down_and_after_a_killed_server(tmp_path: Path) -> None:
    base = tmp_path / "lab"
    up = run("lab", "up", "--dir", str(base))
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"ssh -F {base}/rig/ssh_config d601.rig" in up.stdout and f". {base}/env.sh" in up.stdout
    again = run("lab", "up", "--dir", str(base))
    assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
    status = run("lab", "status", "--dir", str(base))
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"d601 .*: running; registry 127\.0\.0\.1:5000: answers", status.stdout), status.stdout

    # what `lab up` tells a user to run: the CLI reaches the lab's D601 through env.sh
    cli = subprocess.run(
        ["bash", "-c", '. "$1" && ./run --project-dir "$2" status --stack prod --json', "bash",
         str(base / "env.sh"), str(base / "project")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-2000:]
    assert json.loads(cli.stdout)["decision"] == "healthy"

    rig_id = str(_lab_state(base)["rigId"])
    down = run("lab", "down", "--dir", str(base))
    assert down.returncode == 0 and "nothing left" in down.stdout, down.stdout + down.stderr
    assert control.leftovers(rig_id, base / "rig") == [] and not base.exists()
    assert run("lab", "status", "--dir", str(base)).returncode == 1

    # a killed lab server: its reaper takes the hosts down, status says so, down cleans the rest
    up = run("lab", "up", "--dir", str(base))
    assert up.returncode == 0, up.stdout + up.stderr
    state = _lab_state(base)
    os.kill(int(str(state["pid"])), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (base / "rig").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # the reaper's teardown removes the rig dir
    status = run("lab", "status", "--dir", str(base))
    assert status.returncode == 1 and "server gone" in status.stdout, status.stdout
    down = run("lab", "down", "--dir", str(base))
    assert down.returncode == 0, down.stdout + down.stderr
    assert control.leftovers(str(state["rigId"]), base / "rig") == [] and not base.exists()
