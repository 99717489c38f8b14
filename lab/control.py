"""``./run lab up|down|status``: the local D601 + master hosts in the background.

One state directory (default ``/tmp/unidesk-lab``, ``--dir`` to change) holds everything:

- ``lab.json``: the lab server's PID (and start time, so a recycled PID is never taken for it),
  the rig's id and hosts, its phase (``starting``, ``up``, ``failed``, ``stopping``, ``down``);
- ``lab.log``: the server's output;
- ``rig/``: the rig's own directory (``tests/rig``: host roots, keys, ``ssh_config``, ``known_hosts``);
- ``project/Pulumi.dev.yaml``, ``project/Pulumi.prod.yaml``: stack configs pointing at the lab,
  its hosts reached as the unprivileged ``ubuntu`` like the real ones (no services: add
  ``services.<id>.commit``), ``dispatch`` (the ssh ProxyCommand into a host's
  network namespace) and ``env.sh`` (``ARTIFACT_CD_SSH_KEY``, ``ARTIFACT_CD_SSH_OPTIONS``), so
  ``. env.sh; ./run status --stack prod --project-dir DIR/project`` talks to the lab.

``up`` starts the server (``python -m lab serve``, its own session) and waits for the hosts; the
server runs ``tests.rig.Rig.up`` (whose reaper tears the hosts down should the server be killed)
and tears them down on SIGTERM. ``down`` stops it, cleans what a killed server left, then checks
that nothing is left (:func:`leftovers`) and removes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from artifact_cd.config import PROJECT as PULUMI_PROJECT
from tests.integration.compose_project import write_dispatch
from tests.rig import Rig, RigError, teardown
from tests.rig import host as hostmod
from tests.rig.rig import mounts_under, preflight, process_matches

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path(tempfile.gettempdir()) / "unidesk-lab"
ENVS = ("dev", "prod")
UP_TIMEOUT = 180.0
DOWN_TIMEOUT = 90.0


@dataclass(frozen=True)
class LabPaths:
    base: Path

    @property
    def state(self) -> Path:
        return self.base / "lab.json"

    @property
    def log(self) -> Path:
        return self.base / "lab.log"

    @property
    def rig(self) -> Path:
        return self.base / "rig"

    @property
    def project(self) -> Path:
        return self.base / "project"

    @property
    def env_file(self) -> Path:
        return self.base / "env.sh"

    @property
    def dispatch(self) -> Path:
        return self.base / "dispatch"


def proc_start(pid: int) -> str:
    """The process's start time in clock ticks ("" when it does not exist)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


# --------------------------------------------------------------------------- access files


def ssh_options(rig: Rig, dispatch: Path) -> list[str]:
    """The OpenSSH options that reach both hosts from the machine (CLI ``--ssh-option`` words)."""
    return [
        f"ProxyCommand={dispatch} %h %p",
        f"UserKnownHostsFile={rig.dir / 'known_hosts'}",
        "StrictHostKeyChecking=yes",
    ]


def write_stack_file(project_dir: Path, env: str, raw: Mapping[str, Any]) -> Path:
    """``Pulumi.<env>.yaml`` with ``raw`` (a stack config without namespace) under the project's keys."""
    project_dir.mkdir(parents=True, exist_ok=True)
    path = project_dir / f"Pulumi.{env}.yaml"
    path.write_text(yaml.safe_dump({"config": {f"{PULUMI_PROJECT}:{k}": v for k, v in raw.items()}}))
    return path


def write_access(rig: Rig, paths: LabPaths) -> None:
    """The files a user needs to point the CLI at the lab (see the module docstring)."""
    write_dispatch(rig, paths.dispatch)
    for env in ENVS:
        write_stack_file(paths.project, env, rig.stack_config(env, {}))
    words = " ".join(shlex.quote(o) for o in ssh_options(rig, paths.dispatch))
    paths.env_file.write_text(
        "# source me: the artifact_cd CLI then reaches the lab's hosts (./run lab status shows them)\n"
        f"export ARTIFACT_CD_SSH_KEY={shlex.quote(str(rig.machine_key_file))}\n"
        f"export ARTIFACT_CD_SSH_OPTIONS={shlex.quote(words)}\n"
    )


# --------------------------------------------------------------------------- state


def read_state(paths: LabPaths) -> dict[str, Any]:
    try:
        doc = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_state(paths: LabPaths, **fields: Any) -> dict[str, Any]:
    state = {**read_state(paths), **fields}
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(paths.state)
    return state


def server_alive(state: Mapping[str, Any]) -> bool:
    pid = int(state.get("pid") or 0)
    return process_matches(pid, str(state.get("start") or "")) and hostmod.is_running(pid)


# --------------------------------------------------------------------------- leftovers


def _processes(cgroup_leaf: str, path: Path) -> list[str]:
    """Running processes in a cgroup whose name starts with ``cgroup_leaf`` or naming ``path``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = (cgroup_leaf and "/" + cgroup_leaf in cgroups) or str(path).encode() in argv
        if named and hostmod.is_running(int(entry.name)):
            found.append(f"process {entry.name}: {b' '.join(argv).decode(errors='replace')[:120]}")
    return found


def leftovers(rig_id: str, rigdir: Path) -> list[str]:
    """What of the rig ``rig_id`` (directory ``rigdir``) is still on the machine: its directory,
    mounts under it, its cgroups, any process in them (host systemd, sshd, dockerd, containerd,
    containers and their shims) or naming the directory (the reaper), its veth link. A host's
    network namespace lives only as long as a process in it or an nsfs mount of it, so no process
    and no mount means no namespace. Empty when nothing is left."""
    rigdir = rigdir.resolve()
    found = [f"directory {rigdir}"] if rigdir.exists() else []
    found += [f"mount {m}" for m in mounts_under(rigdir)]
    leaf = f"{hostmod.CGROUP_PREFIX}{rig_id}-" if rig_id else ""
    if leaf:
        for h in hostmod.hierarchies():
            base = h.mount / h.own.lstrip("/")
            found += [f"cgroup {p}" for p in sorted(base.glob(leaf + "*"))]
    found += _processes(leaf, rigdir)
    if rig_id:
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False)
        for name in (f"r{rig_id[:6]}m", f"r{rig_id[:6]}d"):
            if f" {name}:" in links.stdout or f" {name}@" in links.stdout:
                found.append(f"network link {name}")
    return found


# --------------------------------------------------------------------------- server


def serve(paths: LabPaths) -> int:
    """The lab server (``python -m lab serve --dir DIR``): start the hosts, write the access files,
    wait for SIGTERM/SIGINT/SIGHUP (or the rig directory removed by ``python -m tests.rig down``),
    then tear the hosts down."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    paths.base.mkdir(parents=True, exist_ok=True)
    write_state(paths, phase="starting", pid=os.getpid(), start=proc_start(os.getpid()))
    try:
        rig = Rig.up(paths.rig)
    except Exception as error:  # reported in the state; Rig.up tore down what it had started
        write_state(paths, phase="failed", error=f"{type(error).__name__}: {error}")
        print(f"lab: the hosts could not start: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    problems: list[str] = []
    try:
        write_access(rig, paths)
        write_state(
            paths,
            phase="up",
            rigId=rig.id,
            rigDir=str(rig.dir),
            bootSeconds=round(rig.boot_seconds, 1),
            registry=rig.registry,
            hosts={h.name: {"address": h.address, "pid": h.pid, "user": h.user} for h in rig.hosts.values()},
        )
        print(f"lab: rig {rig.id} up in {rig.boot_seconds:.1f} s", flush=True)
        while not stop.wait(0.5):
            if not paths.rig.exists():
                break
    finally:
        write_state(paths, phase="stopping")
        problems = rig.down()
        write_state(paths, phase="down", problems=problems)
        print("lab: hosts down" + (f"; left: {problems}" if problems else ""), flush=True)
    return 1 if problems else 0


# --------------------------------------------------------------------------- up / down / status


def _log_tail(paths: LabPaths, chars: int = 3000) -> str:
    try:
        return paths.log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def up(paths: LabPaths, *, timeout: float = UP_TIMEOUT) -> int:
    try:
        preflight()
    except RigError as error:
        print(f"lab: cannot start the local hosts here: {error}", file=sys.stderr)
        return 2
    state = read_state(paths)
    if state.get("phase") == "up" and server_alive(state):
        print(f"lab: already up (rig {state.get('rigId')}, state in {paths.base})")
        print_access(paths, state)
        return 0
    if paths.base.exists():  # a stale lab (killed server, failed start): clean it first
        left = _clean(paths, state, quiet=True)
        if left:
            print(f"lab: a stale lab in {paths.base} could not be cleaned: {left}", file=sys.stderr)
            return 1
    paths.base.mkdir(parents=True, mode=0o700)
    started = time.monotonic()
    proc = hostmod.start_detached(
        [sys.executable, "-m", "lab", "serve", "--dir", str(paths.base)],
        paths.log,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    print(f"lab: starting the local D601 and master hosts (server PID {proc.pid}) ...", flush=True)
    while True:
        state = read_state(paths)
        if state.get("phase") == "up":
            break
        if state.get("phase") == "failed" or proc.poll() is not None or time.monotonic() - started > timeout:
            reason = state.get("error") or (
                f"the server exited ({proc.returncode})"
                if proc.poll() is not None
                else f"not up after {timeout:.0f} s"
            )
            print(f"lab: the hosts could not start: {reason}\n{_log_tail(paths)}", file=sys.stderr)
            _clean(paths, read_state(paths), quiet=True)
            return 1
        time.sleep(0.2)
    print(f"lab: up in {time.monotonic() - started:.1f} s (rig {state['rigId']}, state in {paths.base})")
    print_access(paths, state)
    return 0


def print_access(paths: LabPaths, state: Mapping[str, Any]) -> None:
    ssh_config = paths.rig / "ssh_config"
    print("A shell on a host (as the operator ubuntu, as every step logs in; add -l root for root):")
    for name, h in sorted((state.get("hosts") or {}).items()):
        print(f"  {name:7} ssh -F {ssh_config} {h['address']}")
    print("Point the CLI at it:")
    print(f"  . {paths.env_file}")
    print(f"  ./run --project-dir {paths.project} status --stack prod")
    print(f"  (stack configs: {paths.project}/Pulumi.{{dev,prod}}.yaml; add services.<id>.commit)")
    print("Take it down: ./run lab down" + ("" if paths.base == DEFAULT_DIR else f" --dir {paths.base}"))


def _stop_server(state: Mapping[str, Any], timeout: float) -> bool:
    """SIGTERM the server, wait for it to tear the hosts down and exit; SIGKILL after ``timeout``
    (then its reaper tears the hosts down). True when it is gone."""
    pid, start = int(state.get("pid") or 0), str(state.get("start") or "")
    if not process_matches(pid, start):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_matches(pid, start) and hostmod.is_running(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            return not hostmod.is_running(pid)
        time.sleep(0.1)
    return True


def _wait_reaper(rigdir: Path, timeout: float = 60.0) -> None:
    """A killed server's reaper tears the rig down by itself: let it finish rather than race it."""
    try:
        reaper = json.loads((rigdir / "rig.json").read_text()).get("reaper") or {}
    except (OSError, ValueError):
        return
    pid, start = int(reaper.get("pid") or 0), str(reaper.get("start") or "")
    deadline = time.monotonic() + timeout
    while process_matches(pid, start) and hostmod.is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _clean(paths: LabPaths, state: Mapping[str, Any], *, quiet: bool = False) -> list[str]:
    """Stop the server, tear down whatever is left, check nothing is, remove the directory."""
    if not _stop_server(state, DOWN_TIMEOUT):
        return [f"the lab server (PID {state.get('pid')}) did not exit"]
    _wait_reaper(paths.rig)
    rig_id = str(state.get("rigId") or "")
    if not rig_id:  # stopped before the server recorded it: the rig's own state has it
        with contextlib.suppress(OSError, ValueError):
            rig_id = str(json.loads((paths.rig / "rig.json").read_text()).get("id") or "")
    problems = teardown(paths.rig)
    left = problems + leftovers(rig_id, paths.rig)
    if not left:
        shutil.rmtree(paths.base, ignore_errors=True)
        if paths.base.exists():
            left.append(f"directory {paths.base}")
    if not quiet and not left:
        print(
            f"lab: down; nothing left of rig {rig_id or '?'}: no process, mount, cgroup, network link "
            f"or namespace, no directory ({paths.base} removed)"
        )
    return left


def down(paths: LabPaths) -> int:
    if not paths.base.exists():
        print(f"lab: not running (no {paths.base})")
        return 0
    if os.geteuid() != 0:
        print("lab: taking the hosts down needs root", file=sys.stderr)
        return 2
    state = read_state(paths)
    print(f"lab: stopping rig {state.get('rigId') or '?'} ...", flush=True)
    left = _clean(paths, state)
    if left:
        print("lab: could not clean everything:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    return 0


def _ssh(paths: LabPaths, address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(paths.rig / "ssh_config"), address, command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status(paths: LabPaths) -> int:
    state = read_state(paths)
    if not state:
        print(f"lab: down (no lab in {paths.base}); start it with ./run lab up")
        return 1
    if state.get("phase") != "up" or not server_alive(state):
        print(
            f"lab: not running (phase {state.get('phase')!r}, server "
            f"{'alive' if server_alive(state) else 'gone'}); ./run lab down cleans up what is left"
        )
        return 1
    ok = True
    print(f"lab: up (rig {state.get('rigId')}, server PID {state.get('pid')}, state in {paths.base})")
    for name, h in sorted((state.get("hosts") or {}).items()):
        proc = _ssh(paths, h["address"], "systemctl is-system-running; hostname")
        words = proc.stdout.split()
        system = words[0] if words else f"no answer over SSH (exit {proc.returncode})"
        ok = ok and system in ("running", "degraded")
        line = f"  {name:7} {h['address']:11} systemd PID {h['pid']}: {system}"
        if name == "d601":
            code = _ssh(
                paths,
                h["address"],
                f"curl -s -o /dev/null -w '%{{http_code}}' http://{state.get('registry')}/v2/",
            ).stdout.strip()
            ok = ok and code == "200"
            line += f"; registry {state.get('registry')}: " + (
                "answers" if code == "200" else f"HTTP {code or '-'}"
            )
        print(line)
    print_access(paths, state)
    return 0 if ok else 1
