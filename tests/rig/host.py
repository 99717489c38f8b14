"""One rig host: a real systemd host (systemd as PID 1) in its own namespaces.

Boot: a sub-cgroup per v1/v2 hierarchy, then ``unshare --pid --fork --mount --cgroup --uts --ipc
--net`` runs ``hostinit.sh`` which builds an overlay root (machine ``/`` read-only below, a tmpfs
above), copies the host's *payload* (host key, sshd drop-in, authorized keys, units, masks) over
it, mounts fresh proc/sys/cgroup/dev, pivots and execs systemd. Facts behind each step:
``/work/shared/notes/systemd-hosts.md``.

Teardown never trusts a PID alone: a process is killed only if it sits in one of this host's
cgroups (whose names carry the rig id), so a recycled PID is never hit. ``teardown_host_dir`` works
from the files in the host dir only, so it also cleans what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from artifact_cd.contract import ManifestFacts, last_json_object
from artifact_cd.scripts import command_line, script_text

if TYPE_CHECKING:
    from artifact_cd.plan import Step



class ScriptCallLike(Protocol):
    """A script call: the contract's args models, or a test's own script with its argv."""

    @property
    def script(self) -> str: ...
    @property
    def needs_manifest(self) -> bool: ...
    def to_argv(self) -> tuple[str, ...]: ...
    def resolve(self, facts: ManifestFacts) -> Self: ...


RIG_DIR = Path(__file__).resolve().parent
HOSTINIT = RIG_DIR / "hostinit.sh"
RELAY = RIG_DIR / "relay.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
CGROUP_PREFIX = "unidesk-rig-"

# Units the machine has enabled or that would touch machine-global state (sysctl, binfmt, kernel
# modules) are masked inside every host. The wanted units are kept (allow list below).
ALWAYS_MASKED = (
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "systemd-firstboot.service",
    "systemd-repart.service",
    "systemd-pstore.service",
    "systemd-timesyncd.service",
    "console-getty.service",
    "getty@tty1.service",
    "getty.target",
    "docker-registry.service",
    "postgresql.service",
    "e2scrub_reap.service",
)
KEEP_ENABLED = frozenset({"containerd.service", "docker.service", "docker.socket", "ssh.service", "remote-fs.target"})


class RigError(RuntimeError):
    """The rig could not do what was asked; the message says what and why."""


@dataclass(frozen=True)
class StepResult:
    """The result of running one plan Step for real over SSH."""

    returncode: int
    stdout: str
    stderr: str
    json: dict[str, Any] | None  # the last non-empty stdout line parsed as a JSON object


parse_last_json = last_json_object  # the last non-empty stdout line as a JSON object, or None


class CommandError(subprocess.CalledProcessError):
    """A failed host command; ``str()`` shows the command's head and its stderr tail."""

    def __str__(self) -> str:
        args = self.cmd if isinstance(self.cmd, list) else [str(self.cmd)]
        shown = " ".join(str(a) for a in args)
        shown = shown if len(shown) <= 300 else shown[:297] + "..."
        stderr = str(self.stderr or "").strip()[-1500:]
        return f"exit {self.returncode}: {shown}\nstderr: {stderr}"


def _completed(argv: Sequence[str], proc: subprocess.CompletedProcess[bytes], check: bool) -> subprocess.CompletedProcess[str]:
    out = subprocess.CompletedProcess(
        list(argv),
        proc.returncode,
        proc.stdout.decode("utf-8", "replace") if proc.stdout is not None else "",
        proc.stderr.decode("utf-8", "replace") if proc.stderr is not None else "",
    )
    if check and out.returncode != 0:
        raise CommandError(out.returncode, out.args, out.stdout, out.stderr)
    return out


def run_bytes(
    argv: Sequence[str], *, input: str | bytes | None, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    data = input.encode("utf-8") if isinstance(input, str) else input
    proc = subprocess.run(
        list(argv),
        input=data,
        stdin=subprocess.DEVNULL if data is None else None,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return _completed(argv, proc, check)


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class Hierarchy:
    mount: Path  # e.g. /sys/fs/cgroup/cpu
    fstype: str  # cgroup | cgroup2
    options: str  # controllers for `mount -o` (cgroup v1): "cpu", "none,name=systemd"
    own: str  # this process's cgroup path in it, e.g. "/" or "/process_api/abc"


def hierarchies() -> list[Hierarchy]:
    """The machine's cgroup hierarchies under /sys/fs/cgroup and this process's place in each."""
    subsystems = set()
    for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
        subsystems.add(line.split()[0])
    own_v1: dict[frozenset[str], str] = {}
    own_v2 = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            own_v2 = path
        else:
            own_v1[frozenset(controllers.split(","))] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _source, superopts = post.split(" ", 2)
        mountpoint = Path(pre.split(" ")[4])
        if fstype not in ("cgroup", "cgroup2") or mountpoint.parent != CGROUP_ROOT:
            continue
        if fstype == "cgroup2":
            found.append(Hierarchy(mountpoint, fstype, "", own_v2))
            continue
        opts = [o for o in superopts.split(",") if o in subsystems or o.startswith("name=")]
        key = frozenset(opts)
        if key not in own_v1:
            continue
        options = ",".join(opts) if any(o in subsystems for o in opts) else "none," + ",".join(opts)
        found.append(Hierarchy(mountpoint, fstype, options, own_v1[key]))
    if not found:
        raise RigError("no cgroup hierarchies mounted under /sys/fs/cgroup")
    return found


def create_cgroups(leaf: str) -> tuple[list[Path], list[str]]:
    """Make ``leaf`` in every hierarchy; returns the cgroup dirs and the hostinit mount lines."""
    dirs: list[Path] = []
    mounts: list[str] = []
    for h in hierarchies():
        parent = h.mount / h.own.lstrip("/")
        path = parent / leaf
        path.mkdir(exist_ok=True)
        if (path / "cpuset.cpus").exists() and not (path / "cpuset.cpus").read_text().strip():
            (path / "cpuset.cpus").write_text((parent / "cpuset.cpus").read_text())
            (path / "cpuset.mems").write_text((parent / "cpuset.mems").read_text())
        dirs.append(path)
        mounts.append(f"{h.mount.name} {h.fstype} {h.options or '-'}")
    return dirs, mounts


def cgroup_pids(cgroup_dirs: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs:
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def remove_cgroups(cgroup_dirs: Iterable[Path]) -> list[str]:
    """rmdir each tree bottom-up; returns the dirs that could not be removed."""
    left = []
    for top in cgroup_dirs:
        if not top.is_dir():
            continue
        subdirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for path in [*subdirs, top]:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                left.append(str(path))
    return left


def is_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie holds no resources; its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def in_cgroups(pid: int, cgroup_dirs: Iterable[Path]) -> bool:
    """Whether ``pid`` lives in (a descendant of) one of the given cgroups."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    names = {d.name for d in cgroup_dirs}
    return any(name and f"/{name}" in line for line in lines for name in names)


# --------------------------------------------------------------------------- host


class Host:
    """A rig host. Attributes as in the rig API (``tests/rig/__init__.py``)."""

    def __init__(
        self, name: str, hostdir: Path, *, address: str, private_key: str, ssh_config: Path, user: str = "root"
    ) -> None:
        self.name = name
        self.hostdir = hostdir
        self.address = address
        self.port = 22
        # The login of the product's steps (stack config hosts.<name>.user): the rig's unprivileged
        # operator ``ubuntu`` on D601 and the master; ssh/run_step/run_call log in as it by default.
        self.user = user
        self.private_key = private_key
        self.ssh_config = ssh_config
        self.pid = 0
        self.host_key = ""  # "ssh-ed25519 AAAA..." of this host's sshd (stack config hosts.<name>.hostKey)

    def __repr__(self) -> str:
        return f"Host({self.name!r}, pid={self.pid}, address={self.address!r})"

    # ---- access

    @property
    def docker_host(self) -> str:
        return f"unix:///proc/{self.pid}/root/run/docker.sock"

    def netns_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n"]

    def sh_argv(self, script: str, *args: str) -> list[str]:
        return [
            "nsenter", "-t", str(self.pid), "-a",
            "env", "-i", f"PATH={HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root",
            "bash", "-c", script, "bash", *args,
        ]  # fmt: skip

    def sh(
        self,
        script: str,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` inside all the host's namespaces (setup, inspection, faults)."""
        return run_bytes(self.sh_argv(script, *args), input=input, check=check, timeout=timeout)

    def ssh_argv(self, command: str | None = None, *, user: str | None = None) -> list[str]:
        """Log in as ``user``; None: as :attr:`user`, the login the product's steps use (the
        operator ``ubuntu``). ``user="root"`` only where a test truly needs root."""
        argv = ["ssh", "-F", str(self.ssh_config), "-l", user or self.user, self.address]
        return [*argv, command] if command is not None else argv

    def ssh(
        self,
        command: str,
        *,
        input: str | bytes | None = None,
        check: bool = False,
        timeout: float = 600,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Real OpenSSH (key auth, BatchMode) to this host's sshd, as ``user`` (default :attr:`user`)."""
        return run_bytes(self.ssh_argv(command, user=user), input=input, check=check, timeout=timeout)

    def run_step(
        self, step: Step, *, digest: str = "", image_id: str = "", timeout: float = 600, user: str | None = None
    ) -> StepResult:
        """Run a plan Step exactly as the Pulumi remote Command does: same command line, same stdin,
        logged in as the operator (:attr:`user`) unless ``user`` says otherwise."""
        if step.call is None:
            raise ValueError(f"step {step.id} runs no script")
        return self.run_call(step.call, digest=digest, image_id=image_id, timeout=timeout, user=user)

    def run_call(
        self,
        call: ScriptCallLike,
        *,
        digest: str = "",
        image_id: str = "",
        timeout: float = 600,
        user: str | None = None,
    ) -> StepResult:
        """Run a script call (``bash -s -- <argv>``, the script text on stdin), the manifest check's
        live values in place of the placeholders; as :attr:`user` (the operator), or as ``user``."""
        if call.needs_manifest:
            call = call.resolve(ManifestFacts(digest=digest, image_id=image_id))
        proc = self.ssh(command_line(call.to_argv()), input=script_text(call.script), timeout=timeout, user=user)
        return StepResult(proc.returncode, proc.stdout, proc.stderr, parse_last_json(proc.stdout))

    def write_file(self, path: str, content: str | bytes, *, mode: str = "0644", owner: str | None = None) -> None:
        """Write ``content`` to ``path`` on the host (parent dirs created, atomic rename), as root;
        with ``owner``: as that user (``runuser``), so the file and any parent it creates are that
        user's, as when the operator keeps them (a path the user cannot write fails here)."""
        script = (
            'set -euo pipefail; d=$(dirname -- "$1"); mkdir -p -- "$d"; t=$(mktemp "$1.rig.XXXXXX"); '
            'cat >"$t"; chmod "$2" "$t"; mv -f -- "$t" "$1"'
        )
        if owner is None:
            self.sh(script, path, mode, input=content)
        else:
            self.sh('exec runuser -u "$1" -- bash -c "$2" bash "${@:3}"', owner, script, path, mode, input=content)

    def remove_containers(self, *names: str) -> list[str]:
        """Force-remove every container named NAME, or ``<id>_NAME`` (Compose v1 renames the old
        container so during a recreate; an interrupted one leaves it behind). Container names are
        global per Docker daemon, so test modules sharing a catalog service clean up with this on
        setup and teardown. Returns the names removed. Test setup only, never a product step."""
        proc = self.sh(
            'docker ps -a --format "{{.ID}} {{.Names}}" | while read -r id name; do '
            'for n in "$@"; do case $name in "$n" | *_"$n") docker rm -f "$id" >/dev/null && echo "$name";; esac; '
            "done; done",
            *names,
        )
        return proc.stdout.split()

    def read_file(self, path: str) -> str:
        return self.sh('cat -- "$1"', path).stdout

    def systemctl_state(self, unit: str) -> str:
        return self.sh('systemctl is-active -- "$1" || true', unit).stdout.strip()

    def alive(self) -> bool:
        return self.pid > 0 and in_cgroups(self.pid, read_cgroup_list(self.hostdir))


# --------------------------------------------------------------------------- boot and teardown


def read_cgroup_list(hostdir: Path) -> list[Path]:
    try:
        return [Path(line) for line in (hostdir / "cgroups.list").read_text().split() if line]
    except OSError:
        return []


def prepare(
    hostdir: Path,
    name: str,
    rig_id: str,
    *,
    payload: dict[str, str | bytes],
    masks: Iterable[str],
    binds: Sequence[tuple[Path, str]],
    modes: dict[str, int] | None = None,
    symlinks: dict[str, str] | None = None,
) -> None:
    """Lay out ``hostdir`` for hostinit.sh: payload tree, binds, cgroup mounts, cgroups.list."""
    if not NAME_RE.fullmatch(name):
        raise RigError(f"host name {name!r} must match {NAME_RE.pattern}")
    for sub in ("payload", "root", "ovl"):
        (hostdir / sub).mkdir(parents=True, exist_ok=True)
    (hostdir / "console.log").touch()
    payload_dir = hostdir / "payload"
    for rel, content in payload.items():
        target = payload_dir / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        target.chmod((modes or {}).get(rel, 0o644))
    for rel, dest in (symlinks or {}).items():
        link = payload_dir / rel.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(dest)
    unit_dir = payload_dir / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in masks:
        (unit_dir / unit).unlink(missing_ok=True)
        (unit_dir / unit).symlink_to("/dev/null")
    ssh_dir = payload_dir / "root/.ssh"
    if ssh_dir.exists():
        ssh_dir.chmod(0o700)
    lines = []
    for src, dst in binds:
        src.mkdir(parents=True, exist_ok=True)
        lines.append(f"{src} {dst}")
    (hostdir / "binds").write_text("".join(line + "\n" for line in lines))
    leaf = f"{CGROUP_PREFIX}{rig_id}-{name}"
    cgroup_dirs, mounts = create_cgroups(leaf)
    (hostdir / "cgroups.list").write_text("".join(f"{d}\n" for d in cgroup_dirs))
    (hostdir / "cgroup-mounts").write_text("".join(m + "\n" for m in mounts))


def machine_enabled_units() -> set[str]:
    """Units the machine's /etc enables (they would start inside a host over the same /)."""
    units: set[str] = set()
    for wants in Path("/etc/systemd/system").glob("*.wants"):
        units.update(p.name for p in wants.iterdir())
    return units


def default_masks(extra_keep: Iterable[str] = ()) -> list[str]:
    keep = KEEP_ENABLED | set(extra_keep)
    return sorted(set(ALWAYS_MASKED) | {u for u in machine_enabled_units() if u not in keep})


def start_detached(argv: Sequence[str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, no stdin, stdout and stderr into ``log`` (truncated)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )


def spawn(hostdir: Path, name: str) -> int:
    """Start the host; returns the PID of its systemd (PID 1 inside)."""
    cgroup_dirs = read_cgroup_list(hostdir)
    wrapper = (
        'for c in "${@:4}"; do echo "$$" >"$c/cgroup.procs"; done; '
        "exec unshare --pid --fork --kill-child --mount --cgroup --uts --ipc --net --propagation private "
        '-- /bin/bash "$1" "$2" "$3"'
    )
    proc = start_detached(
        ["bash", "-c", wrapper, "bash", str(HOSTINIT), str(hostdir), name, *map(str, cgroup_dirs)],
        hostdir / "unshare.log",
    )
    (hostdir / "unshare.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 20
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RigError(f"host {name} failed to start: {(hostdir / 'unshare.log').read_text()[-2000:]}")
        try:
            kids = children.read_text().split()
        except OSError:
            kids = []
        if kids:
            pid = int(kids[0])
            (hostdir / "pid").write_text(f"{pid}\n")
            return pid
        time.sleep(0.01)
    raise RigError(f"host {name}: no PID 1 appeared within 20 s")


def wait_booted(host: Host, *, units: Sequence[str], timeout: float = 60) -> str:
    """Wait for systemd to finish booting; returns the system state (running / degraded)."""
    deadline = time.monotonic() + timeout
    private = Path(f"/proc/{host.pid}/root/run/systemd/private")
    while not private.exists():
        if time.monotonic() > deadline or not Path(f"/proc/{host.pid}").exists():
            raise RigError(f"host {host.name}: systemd did not come up: {console_tail(host.hostdir)}")
        time.sleep(0.02)
    left = max(5.0, deadline - time.monotonic())
    state = host.sh("systemctl is-system-running --wait || true", timeout=left).stdout.strip()
    bad = {}
    for unit in units:
        unit_state = host.systemctl_state(unit)
        if unit_state != "active":
            bad[unit] = unit_state
    if state not in ("running", "degraded") or bad:
        failed = host.sh("systemctl --failed --no-legend --plain || true").stdout.strip()
        raise RigError(
            f"host {host.name} booted to {state!r}; units not active: {bad}; failed units: {failed}; "
            f"console: {console_tail(host.hostdir)}"
        )
    return state


def console_tail(hostdir: Path, chars: int = 1500) -> str:
    try:
        return (hostdir / "console.log").read_text(errors="replace")[-chars:]
    except OSError:
        return "(no console log)"


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def teardown_host_dir(hostdir: Path, *, timeout: float = 20) -> list[str]:
    """Stop everything of one host (idempotent); returns what could not be cleaned."""
    cgroup_dirs = read_cgroup_list(hostdir)
    problems: list[str] = []
    pid = _read_int(hostdir / "pid")
    if pid and in_cgroups(pid, cgroup_dirs):
        # SIGKILL to PID 1 of a pid namespace kills every process in it (containers included);
        # the mount and network namespaces (overlay, tmpfs, veth) go with their last process.
        os.kill(pid, signal.SIGKILL)
    unshare_pid = _read_int(hostdir / "unshare.pid")
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if unshare_pid:
            with contextlib.suppress(ChildProcessError):  # reap it when it is our child
                os.waitpid(unshare_pid, os.WNOHANG)
        pids = {p for p in cgroup_pids(cgroup_dirs) if p != os.getpid() and is_running(p)}
        if unshare_pid and time.monotonic() - started < 2:
            # unshare reaps PID 1 and exits by itself; killed first, it would leave PID 1 a zombie
            pids.discard(unshare_pid)
            if is_running(unshare_pid) and in_cgroups(unshare_pid, cgroup_dirs):
                time.sleep(0.02)
                continue
        if not pids:
            break
        if time.monotonic() > deadline:
            problems.append(f"{hostdir.name}: processes still alive: {sorted(pids)}")
            break
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)
    problems += [f"cgroup not removed: {d}" for d in remove_cgroups(cgroup_dirs)]
    for name in ("pid", "unshare.pid"):
        (hostdir / name).unlink(missing_ok=True)
    return problems


def ssh_config_text(host_alias: str, *, pid: int, key_file: Path, known_hosts: Path, user: str = "root") -> str:
    proxy = shlex.join(["nsenter", "-t", str(pid), "-n", "--", sys.executable, "-I", "-S", str(RELAY), "127.0.0.1", "%p"])
    return (
        f"Host {host_alias}\n"
        f"  HostName {host_alias}\n"
        f"  User {user}\n"
        "  Port 22\n"
        f"  IdentityFile {key_file}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 15\n"
        "  ServerAliveInterval 10\n"
        "  ServerAliveCountMax 3\n"
        "  LogLevel ERROR\n"
        f"  ProxyCommand {proxy}\n"
    )
