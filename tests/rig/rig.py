"""The rig: D601 and the master server as two real systemd hosts, linked only by SSH.

Topology (all of it inside namespaces this rig made; nothing on the machine's network)::

    machine (pytest) --ssh/ProxyCommand(nsenter -n + relay)--> d601   sshd 127.0.0.1:22
                     --ssh/ProxyCommand(nsenter -n + relay)--> master sshd 127.0.0.1:22
    master <== veth /30 (addresses unique per rig) ==> d601          (master: ssh ubuntu@d601.rig)
    d601:   docker.service, ssh.service, unidesk-artifact-registry.service (the project's own rendered
            unit/compose/config, installed by its own install steps as the operator; 127.0.0.1:5000
            in D601's netns only), rig-k3s-containerd.service (/run/k3s/containerd/containerd.sock)
    master: docker.service, ssh.service; its ``ubuntu`` has its own key (authorized for ubuntu on
            d601) and d601.rig in its known_hosts; root has no key for d601
    both:   root (key login, for the tests' own setup only) and the unprivileged operator ``ubuntu``
            set up as README "Non-root hosts" says for a real host: key login, the docker group,
            /var/log/unidesk, /home/ubuntu owning the registry's managed files, the Compose project
            dirs and env files its own; D601 as a default k3s host: a root-only containerd socket,
            a root-only /etc/rancher/k3s/k3s.yaml, /usr/local/bin/k3s (`k3s ctr`, `k3s kubectl`)
            and /etc/sudoers.d/unidesk-artifact-cd with exactly the lines of README "Non-root
            hosts" (artifact_cd.sudoers)

Every rig scenario reaches the hosts the way the product does, as ``ubuntu``: ``stack_config``
names it as ``hosts.<h>.user`` (elevate: the product's default ``sudo``), ``Host.ssh``/``run_step``/
``run_call``/``Rig.execute`` log in as it, and the master's hop to D601 is ``ubuntu@d601.rig``.
Root logins stay possible (``user="root"``) where a test truly needs one; the tests' inspection
and fault injection go through ``Host.sh`` (nsenter, root), which is not the product's path.

State lives in one directory (``rig.json``, one subdir per host). ``teardown(dir)`` needs only that
directory, is idempotent, and is what ``python -m tests.rig down --dir DIR`` and the reaper run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from artifact_cd import catalog, sudoers
from artifact_cd.config import HostConfig, Hosts, K3sConfig, RegistryConfig, StackConfig
from artifact_cd.contract import last_json_object
from artifact_cd.plan import plan_registry_host
from artifact_cd.scripts import script_text

from . import host as hostmod
from . import images
from .host import Host, RigError, start_detached

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_DIR = Path(tempfile.gettempdir())
DIR_PREFIX = "unidesk-rig-"
DOMAIN = "rig"
REGISTRY = "127.0.0.1:5000"
K3S_SOCKET = "/run/k3s/containerd/containerd.sock"
K3S_UNIT = "rig-k3s-containerd.service"
BASE_UNITS = ("docker.service", "ssh.service")
OPERATOR = "ubuntu"  # the unprivileged SSH user of a real host (hosts.<h>.user default)
# Compose v2: ./run's ensure_compose_v2 unpacks Debian's plugin here, outside Docker's plugin
# directories; link_compose_v2 gives one rig host v2 the way a real host has it.
COMPOSE_V2 = Path("/usr/local/lib/unidesk-rig/compose-v2/docker-compose")
COMPOSE_PLUGIN = "/usr/libexec/docker/cli-plugins/docker-compose"


def link_compose_v2(h: Host, *, linked: bool = True) -> None:
    """Link (or, ``linked=False``, unlink) the Compose v2 plugin in ``h``'s own /usr/libexec."""
    if linked:
        h.sh('install -d "${2%/*}" && ln -sfn -- "$1" "$2"', str(COMPOSE_V2), COMPOSE_PLUGIN)
    else:
        h.sh('rm -f -- "$1"', COMPOSE_PLUGIN)


SUDOERS_FILE = "/etc/sudoers.d/unidesk-artifact-cd"
K3S_BIN = "/usr/local/bin/k3s"
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"

K3S_DEPLOYMENTS = "/etc/unidesk-rig/k3s-deployments"  # <namespace>/<name>: its container names
K3S_CONTAINERS_JSONPATH = "jsonpath={.spec.template.spec.containers[*].name}"

# k3s stand-in: the two subcommands the steps use, as k3s offers them (its own kubeconfig). No API
# server listens on the rig; the one read k3s-import.sh's preflight makes (a Deployment's container
# names) is answered from K3S_DEPLOYMENTS, root-only like the kubeconfig, with kubectl's own words.
K3S_SHIM = f"""\
#!/bin/sh
# k3s stand-in (unidesk rig): `k3s ctr` and `k3s kubectl` as k3s offers them.
case $1 in
  ctr) shift; exec /usr/bin/ctr "$@" ;;
  kubectl)
    shift
    if [ $# -eq 7 ] && [ "$1 $3 $4 $6" = "-n get deployment -o" ] && [ "$7" = '{K3S_CONTAINERS_JSONPATH}' ]; then
      if [ ! -r {K3S_KUBECONFIG} ]; then
        echo 'error: error loading config file "{K3S_KUBECONFIG}": open {K3S_KUBECONFIG}: permission denied' >&2
        exit 1
      fi
      case $2/$5 in */*/*|*..*) echo "error: bad name" >&2; exit 1 ;; esac
      if [ -f "{K3S_DEPLOYMENTS}/$2/$5" ]; then exec cat "{K3S_DEPLOYMENTS}/$2/$5"; fi
      echo "Error from server (NotFound): deployments.apps \"$5\" not found" >&2
      exit 1
    fi
    exec /usr/bin/kubectl --kubeconfig {K3S_KUBECONFIG} "$@" ;;
esac
echo "k3s (rig stand-in): only ctr and kubectl" >&2
exit 1
"""


def stand_in_deployments() -> dict[str, str]:
    """The stand-in's Deployments (payload path -> container names): the catalog's defaults of
    every k3s target in both envs, as a real D601 runs them."""
    found: dict[str, list[str]] = {}
    envs: tuple[catalog.Env, ...] = ("dev", "prod")
    for env in envs:
        for entry in catalog.services_for(env):
            target = entry.target(env)
            if isinstance(target, catalog.K3sTarget):
                for dep in target.deployments:
                    path = f"{K3S_DEPLOYMENTS}/{target.namespace}/{dep.name}".lstrip("/")
                    names = found.setdefault(path, [])
                    names += [] if dep.container in names else [dep.container]
    return {path: " ".join(names) for path, names in found.items()}


# k3s's admin kubeconfig, root-only as k3s writes it; no API server listens on the rig.
K3S_KUBECONFIG_TEXT = """\
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
users:
- name: default
  user: {token: rig-placeholder-not-a-secret}
"""

SSHD_DROPIN = """\
# unidesk rig: key-only root login; first value wins, so this file overrides sshd_config.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions 64
"""

K3S_CONTAINERD_CONFIG = f"""\
# unidesk rig: a containerd playing k3s's embedded one (own root, state and socket).
version = 2
root = "/var/lib/rancher/k3s/agent/containerd"
state = "/run/k3s/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{K3S_SOCKET}"

[ttrpc]
  address = "{K3S_SOCKET}.ttrpc"
"""

K3S_CONTAINERD_UNIT = """\
[Unit]
Description=containerd standing in for k3s's embedded containerd (unidesk rig)
After=network.target local-fs.target

[Service]
ExecStart=/usr/bin/containerd --config /etc/unidesk-rig/k3s-containerd.toml
Type=notify
Delegate=yes
KillMode=process
Restart=on-failure
LimitNOFILE=infinity

[Install]
WantedBy=multi-user.target
"""


MACHINE_TOOLS = {
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "dockerd": "docker.io",
    "containerd": "docker.io (containerd)",
    "ctr": "docker.io (containerd)",
    "docker": "docker.io",
    "docker-registry": "docker-registry",
    "docker-compose": "docker-compose",
    "skopeo": "skopeo",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "busybox": "busybox-static",
    "curl": "curl",
    "sudo": "sudo",
    "visudo": "sudo",
}


STOCK_BASHRC = (
    "# rig host as a stock Debian/Ubuntu host: nothing for a non-interactive shell\n"
    "case $- in *i*) ;; *) return ;; esac\n"
)


def preflight() -> None:
    """Refuse clearly when the machine cannot host a rig (missing tool, not root, no systemd)."""
    if os.geteuid() != 0:
        raise RigError("the rig needs root (namespaces, cgroups, mounts)")
    missing = sorted({pkg for tool, pkg in MACHINE_TOOLS.items() if shutil.which(tool) is None})
    if not Path("/lib/systemd/systemd").exists():
        missing.append("systemd")
    if not Path("/usr/bin/docker-registry").exists() and "docker-registry" not in missing:
        missing.append("docker-registry")
    if missing:
        raise RigError(
            "missing Debian packages for the rig: " + ", ".join(missing) + " (./run tests installs them)"
        )


def _keygen(path: Path, comment: str) -> tuple[str, str]:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), (path.parent / (path.name + ".pub")).read_text().strip()


def _proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_matches(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and _proc_start(pid) == start


def _parallel(*jobs: Callable[[], object]) -> None:
    """Run jobs in threads; re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Rig:
    """The whole rig. Create with :meth:`Rig.up`; stop with :meth:`down` (or ``teardown(dir)``)."""

    registry = REGISTRY

    def __init__(self, rigdir: Path, rig_id: str) -> None:
        self.dir = rigdir
        self.id = rig_id
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._registry_tar: Path | None = None
        self.boot_seconds = 0.0
        self.timings: dict[str, float] = {}
        octet2, octet3 = random.randint(64, 127), random.randint(0, 255)  # noqa: S311 - not crypto
        self.link_net = f"10.{octet2}.{octet3}"
        self.master_link_addr = f"{self.link_net}.1"
        self.d601_link_addr = f"{self.link_net}.2"
        self.machine_key_file = rigdir / "keys" / "id_ed25519"

    # ------------------------------------------------------------------ API attributes

    @property
    def d601(self) -> Host:
        return self.hosts["d601"]

    @property
    def master(self) -> Host:
        return self.hosts["master"]

    @property
    def d601_from_master(self) -> str:
        """The master -> D601 hop (``transfer.d601SshTarget``): the master's operator, with its own
        key and known_hosts entry, logs in as the operator on D601."""
        return f"{OPERATOR}@d601.{DOMAIN}"

    def host(self, name_or_address: str) -> Host:
        """The host whose name or address (as in stack config hosts.<name>.host) this is."""
        for h in self.hosts.values():
            if name_or_address in (h.name, h.address):
                return h
        raise KeyError(name_or_address)

    def execute(self, call: Any) -> dict[str, Any]:
        """An executor for ``tests.engine.run_program``: run ``call.create`` over real SSH on
        the rig host ``call.host`` names, as the user it names (the operator, or root for a stack
        config that says ``user: root``; the port must match), ``call.stdin`` on stdin."""
        h = self.host(str(call.host))
        if str(call.user) not in (h.user, "root") or int(call.port) != h.port:
            raise RigError(f"{call.user}@{call.host}:{call.port} is not how the rig's {h.name} is reached")
        proc = h.ssh(str(call.create), input=call.stdin, user=str(call.user))
        return {"stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def up(cls, rigdir: Path | None = None, *, owner_pid: int | None = None, reaper: bool = True) -> Rig:
        """Start a rig in ``rigdir`` (a fresh temp dir when None). Torn down again on failure."""
        start = time.monotonic()
        preflight()
        if rigdir is None:
            rigdir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=BASE_DIR))
        else:
            rigdir = rigdir.resolve()
            if rigdir.exists() and any(rigdir.iterdir()):
                leftovers = teardown(rigdir)
                if leftovers:
                    raise RigError(f"could not clean the stale rig in {rigdir}: {leftovers}")
            rigdir.mkdir(parents=True, exist_ok=True)
        rig = cls(rigdir, secrets.token_hex(4))
        owner = owner_pid or os.getpid()
        rig._write_state(owner)
        try:
            if reaper:
                rig._start_reaper(owner)
            rig._boot()
        except BaseException:
            rig.down()
            raise
        rig.boot_seconds = time.monotonic() - start
        return rig

    def _write_state(self, owner: int, **extra: Any) -> None:
        state_file = self.dir / "rig.json"
        state: dict[str, Any] = {}
        if state_file.exists():
            state = json.loads(state_file.read_text())
        state.update(
            {
                "id": self.id,
                "owner": {"pid": owner, "start": _proc_start(owner)},
                "linkNet": self.link_net,
                **extra,
            }
        )
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.rename(state_file)

    def _start_reaper(self, owner: int) -> None:
        proc = start_detached(
            [sys.executable, "-m", "tests.rig", "reap", "--dir", str(self.dir), "--owner", str(owner)],
            self.dir / "reaper.log",
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        self._reaper = proc
        self._write_state(owner, reaper={"pid": proc.pid, "start": _proc_start(proc.pid)})

    def _host_payload(self, name: str, authorized: list[str], peers: dict[str, str]) -> tuple[dict[str, str | bytes], dict[str, int], str]:
        hostdir = self.dir / name
        hostdir.mkdir(parents=True, exist_ok=True)
        keydir = self.dir / "keys"
        host_key, host_pub = _keygen(keydir / f"host_{name}", f"{name}.{DOMAIN}")
        hosts = [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"127.0.1.1\t{name}.{DOMAIN} {name}",
            *(f"{addr}\t{peer}.{DOMAIN} {peer}" for peer, addr in peers.items()),
        ]
        payload: dict[str, str | bytes] = {
            "etc/hostname": name + "\n",
            "etc/hosts": "\n".join(hosts) + "\n",
            "etc/machine-id": secrets.token_hex(16) + "\n",
            "etc/ssh/ssh_host_ed25519_key": host_key,
            "etc/ssh/ssh_host_ed25519_key.pub": host_pub + "\n",
            "etc/ssh/sshd_config.d/00-unidesk-rig.conf": SSHD_DROPIN,
            "root/.ssh/authorized_keys": "".join(k + "\n" for k in authorized),
            # A stock host's ~/.bashrc does nothing for a non-interactive shell; this machine's (the
            # overlay's lower layer) runs `pyenv init` for every SSH command and puts pyenv's shims
            # ahead of /usr/bin/python3, which no real D601 or master does (benchmarks/ratios.py).
            "root/.bashrc": STOCK_BASHRC,
        }
        modes = {"etc/ssh/ssh_host_ed25519_key": 0o600, "root/.ssh/authorized_keys": 0o600}
        return payload, modes, host_pub

    def _prepare_host(
        self,
        name: str,
        *,
        authorized: list[str],
        peers: dict[str, str],
        extra: dict[str, str | bytes] | None = None,
        extra_modes: dict[str, int] | None = None,
        symlinks: dict[str, str] | None = None,
        binds: tuple[tuple[str, str], ...] = (),
        user: str = OPERATOR,
    ) -> tuple[Host, str]:
        payload, modes, host_pub = self._host_payload(name, authorized, peers)
        payload.update(extra or {})
        modes.update(extra_modes or {})
        hostdir = self.dir / name
        all_binds = [
            (hostdir / "docker-data", "/var/lib/docker"),
            (hostdir / "containerd-data", "/var/lib/containerd"),
            *((hostdir / src, dst) for src, dst in binds),
        ]
        hostmod.prepare(
            hostdir,
            name,
            self.id,
            payload=payload,
            masks=hostmod.default_masks(extra_keep=[K3S_UNIT]),
            binds=all_binds,
            modes=modes,
            symlinks=symlinks,
        )
        address = f"{name}.{DOMAIN}"
        with (self.dir / "known_hosts").open("a") as known:
            known.write(f"{address} {host_pub}\n")
        h = Host(
            name,
            hostdir,
            address=address,
            private_key=self.machine_key_file.read_text(),
            ssh_config=hostdir / "ssh_config",
            user=user,
        )
        h.host_key = " ".join(host_pub.split()[:2])
        return h, host_pub

    def _spawn(self, h: Host) -> None:
        h.pid = hostmod.spawn(h.hostdir, h.name)
        (h.hostdir / "ssh_config").write_text(
            hostmod.ssh_config_text(
                h.address,
                pid=h.pid,
                key_file=self.machine_key_file,
                known_hosts=self.dir / "known_hosts",
                user=h.user,
            )
        )
        with self._lock:
            self.hosts[h.name] = h
            self._write_ssh_config()

    def _write_ssh_config(self) -> None:
        text = "".join((h.hostdir / "ssh_config").read_text() + "\n" for h in self.hosts.values())
        (self.dir / "ssh_config").write_text(text)

    def _boot(self) -> None:
        keydir = self.dir / "keys"
        keydir.mkdir(mode=0o700)
        _, machine_pub = _keygen(self.machine_key_file, f"unidesk-rig-{self.id}-machine")
        # the master's operator's own key for the hop to D601 (README "Non-root hosts")
        master_key, master_pub = _keygen(keydir / "master_id_ed25519", f"{OPERATOR}@master.{DOMAIN}")
        d601, d601_pub = self._prepare_host(
            "d601",
            authorized=[machine_pub],
            peers={"master": self.master_link_addr},
            extra={
                "etc/unidesk-rig/k3s-containerd.toml": K3S_CONTAINERD_CONFIG,
                f"etc/systemd/system/{K3S_UNIT}": K3S_CONTAINERD_UNIT,
                K3S_BIN.lstrip("/"): K3S_SHIM,
                K3S_KUBECONFIG.lstrip("/"): K3S_KUBECONFIG_TEXT,
                **stand_in_deployments(),
            },
            extra_modes={
                K3S_BIN.lstrip("/"): 0o755,
                K3S_KUBECONFIG.lstrip("/"): 0o600,
                **{path: 0o600 for path in stand_in_deployments()},
            },
            symlinks={f"etc/systemd/system/multi-user.target.wants/{K3S_UNIT}": f"/etc/systemd/system/{K3S_UNIT}"},
            binds=(("k3s-containerd", "/var/lib/rancher/k3s/agent/containerd"),),
        )
        master, _ = self._prepare_host(
            "master",
            authorized=[machine_pub],
            peers={"d601": self.d601_link_addr},
        )
        t0 = time.monotonic()
        self._spawn(d601)
        self._spawn(master)
        self._link(master, d601)
        _parallel(
            lambda: hostmod.wait_booted(d601, units=(*BASE_UNITS, K3S_UNIT)),
            lambda: hostmod.wait_booted(master, units=BASE_UNITS),
        )
        _parallel(
            lambda: self._add_operator(d601, [machine_pub, master_pub]),
            lambda: self._add_operator(
                master, [machine_pub], key=(master_key, master_pub), known_hosts=f"d601.{DOMAIN} {d601_pub}\n"
            ),
        )
        self.set_sudoers(self.sudoers_lines())
        t1 = time.monotonic()
        images.build_registry_image(d601, self.dir)
        t2 = time.monotonic()
        install_registry(d601, self.registry_config(), user=OPERATOR)
        t3 = time.monotonic()
        self.timings = {"hostsBooted": t1 - t0, "registryImage": t2 - t1, "registryInstalled": t3 - t2}
        self._write_state(self._owner(), timings={k: round(v, 2) for k, v in self.timings.items()})

    def _link(self, master: Host, d601: Host) -> None:
        """The private point-to-point link: a veth pair created straight inside the two netns."""
        m_if, d_if = f"r{self.id[:6]}m", f"r{self.id[:6]}d"
        subprocess.run(
            ["ip", "link", "add", "name", m_if, "netns", str(master.pid), "type", "veth",
             "peer", "name", d_if, "netns", str(d601.pid)],
            check=True, capture_output=True,
        )  # fmt: skip
        for h, ifname, addr in ((master, m_if, self.master_link_addr), (d601, d_if, self.d601_link_addr)):
            subprocess.run([*h.netns_argv(), "ip", "addr", "add", f"{addr}/30", "dev", ifname], check=True)
            subprocess.run([*h.netns_argv(), "ip", "link", "set", ifname, "up"], check=True)
        self._write_state(self._owner(), link={"master": m_if, "d601": d_if})

    @staticmethod
    def _add_operator(
        h: Host, authorized: list[str], *, key: tuple[str, str] | None = None, known_hosts: str = ""
    ) -> None:
        """The unprivileged operator, set up as README "Non-root hosts" says for a real host: key
        login (``authorized``), the docker group, a home of its own, the deploy audit log's
        directory; on the master its own key for D601 (``key``: private, public) and D601's host
        key in its known_hosts. Everything else (the Compose project dirs, their env files) the
        operator owns as it would on the real host (``stack_config``, the test helpers)."""
        h.sh(
            'set -euo pipefail; u=$1; useradd -m -s /bin/bash -G docker -- "$u"; usermod -p "*" -- "$u"; '
            'install -d -o "$u" -g "$u" -m 0700 "/home/$u/.ssh"; '
            'printf "%s" "$2" | install -o "$u" -g "$u" -m 0600 /dev/stdin "/home/$u/.ssh/authorized_keys"; '
            'install -d -o "$u" -g "$u" -m 0755 /var/log/unidesk; '
            '[[ -z $3 ]] || printf "%s\\n" "$3" | install -o "$u" -g "$u" -m 0600 /dev/stdin "/home/$u/.ssh/id_ed25519"; '
            '[[ -z $4 ]] || printf "%s\\n" "$4" | install -o "$u" -g "$u" -m 0644 /dev/stdin "/home/$u/.ssh/id_ed25519.pub"; '
            '[[ -z $5 ]] || printf "%s" "$5" | install -o "$u" -g "$u" -m 0644 /dev/stdin "/home/$u/.ssh/known_hosts"',
            OPERATOR,
            "".join(k + "\n" for k in authorized),
            key[0].strip() if key else "",
            key[1] if key else "",
            known_hosts,
        )

    def operator_config(self, env: str) -> StackConfig:
        """A StackConfig of this rig as the operator reaches it (the registry and k3s settings of
        ``stack_config``), for :mod:`artifact_cd.sudoers`."""
        return StackConfig(
            env=env,  # type: ignore[arg-type]
            hosts=Hosts(
                d601=HostConfig(host=f"d601.{DOMAIN}", user=OPERATOR),
                master=HostConfig(host=f"master.{DOMAIN}", user=OPERATOR),
            ),
            registry=self.registry_config(),
            k3s=K3sConfig(containerd_socket=K3S_SOCKET, containerd_namespace="k8s.io"),
        )

    def sudoers_lines(self) -> list[str]:
        """D601's minimal sudoers lines for the operator, for both stacks (README "Non-root hosts")."""
        lines: list[str] = []
        for env in ("dev", "prod"):
            for line in sudoers.sudoers_lines(self.operator_config(env), k3s=K3S_BIN):
                if line not in lines:
                    lines.append(line)
        return lines

    def set_sudoers(self, lines: list[str], h: Host | None = None) -> None:
        """Replace D601's (or ``h``'s) /etc/sudoers.d/unidesk-artifact-cd (checked by visudo first)."""
        (h or self.d601).sh(
            'set -euo pipefail; t=$(mktemp /etc/sudoers.d/.unidesk.XXXXXX); cat >"$t"; chmod 0440 "$t"; '
            'visudo -cqf "$t" || { rm -f "$t"; exit 1; }; mv -f "$t" "$1"',
            SUDOERS_FILE,
            input="".join(line + "\n" for line in lines),
        )

    def operator_audit_ready(self) -> None:
        """The deploy audit log files writable by the operator (a root-run test may have created
        them root-owned; on a real host the operator's steps create them)."""
        for h in (self.d601, self.master):
            h.sh(
                'set -euo pipefail; install -d -o "$1" -g "$1" -m 0755 /var/log/unidesk; '
                'for f in /var/log/unidesk/deploy-audit.jsonl /var/log/unidesk/deploy-audit.jsonl.lock; do '
                '[[ -e $f ]] || continue; chown "$1:$1" -- "$f"; done',
                OPERATOR,
            )

    def _owner(self) -> int:
        state = json.loads((self.dir / "rig.json").read_text())
        return int(state["owner"]["pid"])

    def ensure_ready(self) -> None:
        """Bring D601 and the master back to the rig's baseline after a fault test (via nsenter, so a
        stopped sshd is no obstacle): docker, ssh (and on D601 the k3s containerd) active; the registry
        files as rendered, its unit running and ``/v2/`` answering 200."""
        start = 'for u in "$@"; do systemctl is-active -q -- "$u" || systemctl start -- "$u"; done'
        self.master.sh(start, *BASE_UNITS)
        self.d601.sh(start, *BASE_UNITS, K3S_UNIT)
        registry = self.registry_config()
        if images.http_status(self.d601, f"http://{registry.endpoint}/v2/", timeout=2) != 200:
            # e.g. the container was stopped under a still-active unit: don't wait for Restart=
            self.d601.sh('systemctl reset-failed -- "$1"; systemctl restart -- "$1"', registry.unit_name)
        install_registry(self.d601, registry, user=self.d601.user)

    def down(self) -> list[str]:
        """Tear everything down; returns what could not be cleaned (empty when all is gone)."""
        return teardown(self.dir)

    # ------------------------------------------------------------------ services

    @staticmethod
    def registry_config() -> RegistryConfig:
        """The rig's registry settings: R1 defaults, Compose v1 (the only Compose packaged here)."""
        return RegistryConfig(compose_command="/usr/bin/docker-compose")

    def publish_test_image(
        self, service_id: str, commit: str, *, variant: str = "standard", pad_bytes: int = 0
    ) -> dict[str, str]:
        with self._publish_lock:
            return images.publish_test_image(
                self.d601, self.dir / "build", self.registry, service_id, commit, variant=variant, pad_bytes=pad_bytes
            )

    def stack_config(
        self, env: str = "dev", services: dict[str, str] | None = None, *, user: str | None = None
    ) -> dict[str, Any]:
        """A raw config dict (for ``parse_stack_config(raw, env)``) pointing at this rig. The hosts
        are reached as each host's :attr:`Host.user`, the unprivileged operator ``ubuntu``, with
        the product's default ``hosts.<h>.elevate: sudo`` (D601's sudoers file holds README's
        lines); ``user="root"`` only where a test truly needs a root login. The Compose project
        dirs belong to the operator, as README "Non-root hosts" asks of a real host."""
        if env not in ("dev", "prod"):
            raise RigError(f"env must be dev or prod, not {env!r}")
        base = f"/srv/unidesk-{env}"
        for h in (self.d601, self.master):
            operator_dir(h, base)
        project = {
            "projectDir": base,
            "projectName": f"unidesk-{env}",
            "envFile": f"{base}/.env.deploy",
            "healthTimeoutSeconds": 20,  # test containers answer in about a second
        }
        return {
            "env": env,
            "hosts": {
                name: {"host": h.address, "user": user or h.user, "port": h.port, "hostKey": h.host_key}
                for name, h in (("d601", self.d601), ("master", self.master))
            },
            "registry": {
                "manage": True,
                "endpoint": self.registry,
                "image": images.REGISTRY_IMAGE,
                "composeCommand": "/usr/bin/docker-compose",
            },
            "compose": {"master": dict(project), "d601": dict(project)},
            "transfer": {"mode": "tunnel", "d601SshTarget": self.d601_from_master, "d601SshPort": 22},
            "k3s": {"containerdSocket": K3S_SOCKET, "containerdNamespace": "k8s.io", "rolloutTimeoutSeconds": 60},
            "frontendAuth": {"configPath": f"{base}/config.json"},
            "services": {sid: {"commit": commit} for sid, commit in (services or {}).items()},
        }

    @contextlib.contextmanager
    def fresh_host(self, name: str) -> Iterator[Host]:
        """An extra systemd host in its own private netns: docker.service, ssh.service, the local
        ``registry:2.8.3`` image and the operator ``ubuntu`` (key login, the docker group, the audit
        log dir, README's sudoers lines) as on D601; nothing installed. Torn down when the block ends."""
        if name in self.hosts or not hostmod.NAME_RE.fullmatch(name):
            raise RigError(f"fresh host name {name!r} is taken or invalid ({hostmod.NAME_RE.pattern})")
        machine_pub = self.machine_key_file.with_suffix(".pub").read_text().strip()
        h, _ = self._prepare_host(name, authorized=[machine_pub], peers={})
        try:
            self._spawn(h)
            hostmod.wait_booted(h, units=BASE_UNITS)
            self._add_operator(h, [machine_pub])
            self.set_sudoers(self.sudoers_lines(), h)
            with self._lock:
                if self._registry_tar is None:
                    tar = self.dir / "build" / "registry-image.tar"
                    tar.parent.mkdir(parents=True, exist_ok=True)
                    images.save_image(self.d601, images.REGISTRY_IMAGE, tar)
                    self._registry_tar = tar
            images.load_image(h, self._registry_tar)
            yield h
        finally:
            problems = hostmod.teardown_host_dir(h.hostdir)
            with self._lock:
                self.hosts.pop(name, None)
                self._write_ssh_config()
                known = self.dir / "known_hosts"
                kept = [line for line in known.read_text().splitlines(True) if not line.startswith(h.address + " ")]
                known.write_text("".join(kept))
            shutil.rmtree(h.hostdir, ignore_errors=True)
            if problems:
                raise RigError(f"fresh host {name} teardown left: {problems}")


# --------------------------------------------------------------------------- operator's files


def operator_dir(h: Host, path: str, user: str | None = None) -> None:
    """``path`` and its missing parents as a directory of the operator (``user``, default the
    host's login), mode 0755: a Compose project dir as the operator keeps it on a real host."""
    h.sh(
        'set -euo pipefail; u=$1; d=$2; [[ -d $(dirname -- "$d") ]] || mkdir -p -- "$(dirname -- "$d")"; '
        'install -d -o "$u" -g "$u" -m 0755 -- "$d"',
        user or h.user,
        path,
    )


# --------------------------------------------------------------------------- registry bootstrap


def install_registry(
    h: Host, registry: RegistryConfig, *, timeout: float = 60, user: str | None = None
) -> dict[str, str]:
    """Install the registry with the project's own install steps (R5, R7): the registry host plan's
    ``registry-install.sh`` steps (dirs, write x3, activate), the same script text and argv the
    Pulumi Commands send, run inside the host (nsenter, so it also works while sshd is stopped by a
    fault test) as ``user`` (``runuser``; the operator, elevating through its sudoers lines as over
    SSH) or, when None, as root. Then wait for ``/v2/`` 200. Returns {path: written|unchanged}."""
    cfg = StackConfig(
        env="prod",
        hosts=Hosts(d601=HostConfig(host=h.address), master=HostConfig(host=h.address)),
        registry=registry,
    )
    result: dict[str, str] = {}
    for step in plan_registry_host(cfg).steps:
        if step.script != "registry-install.sh":
            continue  # the acceptance probe is the health tests' business
        run = 'bash -s -- "$@"' if user is None else 'u=$1; shift; exec runuser -u "$u" -- bash -s -- "$@"'
        argv = step.args if user is None else (user, *step.args)
        proc = h.sh(run, *argv, input=script_text(step.script), check=False, timeout=timeout)
        doc = last_json_object(proc.stdout) or {}
        if proc.returncode != 0 or not doc.get("ok"):
            raise RigError(f"registry install step {step.id} failed on {h.name}: {proc.stdout}{proc.stderr}")
        if doc.get("action") == "write":
            result[doc["path"]] = doc["result"]
    deadline = time.monotonic() + timeout
    url = f"http://{registry.endpoint}/v2/"
    while images.http_status(h, url, timeout=2) != 200:
        if time.monotonic() > deadline:
            journal = h.sh('journalctl -u "$1" --no-pager -n 40 || true', registry.unit_name, check=False).stdout
            raise RigError(f"registry on {h.name} did not answer {url} with 200 in {timeout} s:\n{journal}")
        time.sleep(0.1)
    return result


# --------------------------------------------------------------------------- teardown


def mounts_under(path: Path) -> list[str]:
    """Every mount point at or below ``path`` (this process's mount namespace); lab/ uses it too."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split(" ")[4]
        if mountpoint == str(path) or mountpoint.startswith(prefix):
            found.append(mountpoint)
    return found


def _rig_cgroups(rig_id: str) -> list[Path]:
    found = []
    for h in hostmod.hierarchies():
        base = h.mount / h.own.lstrip("/")
        found += [p for p in base.glob(f"{hostmod.CGROUP_PREFIX}{rig_id}-*") if p.is_dir()]
    return found


def teardown(rigdir: Path) -> list[str]:
    """Stop and remove everything of the rig in ``rigdir``: host processes, cgroups, namespaces
    (veth, mounts go with them), the reaper, the directory. Idempotent; works on a stale dir from a
    killed run. Returns what could not be cleaned."""
    rigdir = rigdir.resolve()
    if not rigdir.exists():
        return []
    problems: list[str] = []
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((rigdir / "rig.json").read_text())
    hostdirs = [p.parent for p in rigdir.glob("*/cgroups.list")]
    results: dict[str, list[str]] = {}

    def stop(d: Path) -> None:
        results[d.name] = hostmod.teardown_host_dir(d)

    _parallel(*(lambda d=d: stop(d) for d in hostdirs))
    for leftover in results.values():
        problems += leftover
    rig_id = state.get("id")
    if isinstance(rig_id, str) and rig_id:
        stray = _rig_cgroups(rig_id)
        if stray:
            for pid in hostmod.cgroup_pids(stray):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            problems += [f"cgroup not removed: {d}" for d in hostmod.remove_cgroups(stray)]
    for mountpoint in mounts_under(rigdir):
        subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
    reaper = state.get("reaper") or {}
    reaper_pid = int(reaper.get("pid", 0))
    if reaper_pid and reaper_pid != os.getpid() and process_matches(reaper_pid, str(reaper.get("start", ""))):
        with contextlib.suppress(ProcessLookupError):
            os.kill(reaper_pid, 15)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(reaper_pid, 0)
    if not problems:
        shutil.rmtree(rigdir, ignore_errors=True)
        if rigdir.exists():
            problems.append(f"{rigdir} could not be removed")
    return problems


def stale_rig_dirs(base: Path = BASE_DIR) -> list[Path]:
    """Rig dirs under ``base`` whose owner and reaper are both gone (a killed run)."""
    stale = []
    for d in base.glob(DIR_PREFIX + "*"):
        try:
            state = json.loads((d / "rig.json").read_text())
        except (OSError, ValueError):
            continue
        owner, reaper = state.get("owner") or {}, state.get("reaper") or {}
        alive = process_matches(int(owner.get("pid", 0)), str(owner.get("start", ""))) or process_matches(
            int(reaper.get("pid", 0)), str(reaper.get("start", ""))
        )
        if not alive:
            stale.append(d)
    return stale


def reap(rigdir: Path, owner: int, *, interval: float = 0.5) -> int:
    """Wait for ``owner`` to end, then tear the rig down (unless it is gone already)."""
    start = _proc_start(owner)
    while rigdir.exists():
        if not process_matches(owner, start):
            if rigdir.exists():
                problems = teardown(rigdir)
                if problems:
                    print("\n".join(problems), file=sys.stderr)
                    return 1
            return 0
        time.sleep(interval)
    return 0
