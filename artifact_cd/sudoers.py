"""The minimal sudoers entries of a non-root host (issue 11; README "Non-root hosts").

The step scripts run as the SSH user and elevate (``sudo -n``, ``hosts.<h>.elevate: sudo``) only the
commands that need root. Each script checks its own rules before it changes anything and, when one
is missing, names the exact command and the line to add (``scripts/include/elevate.sh``). This
module spells the same rules from the stack config, in the scripts' words, so README, the rig's
sudoers file and the scripts' error messages are the same lines:

- D601, k3s containerd (``k3s-import.sh``): ``<k3s> ctr --address SOCK -n NS`` + ``version``,
  ``images pull --plain-http *``, ``images ls *``, ``images rm *``, ``content get *``;
- D601, the k3s API (``k3s-verify.sh``, read-only verbs): per namespace of the env's k3s services
  ``<k3s> kubectl -n NS rollout status *``, ``... get deployment *`` and
  ``<k3s> kubectl get --raw /api/v1/namespaces/NS/services/*``; ``history-probe.sh`` reads the
  Deployments' live commit, and ``k3s-import.sh``'s preflight their container names, with the same
  ``get deployment`` rule (no line of their own);
- D601, the registry install (``registry-install.sh``, ``registry.manage``): the unit file, staged
  and renamed (``tee <dir>/.<unit>.new``, ``mv -f -T <dir>/.<unit>.new <dir>/<unit>``), and the six
  ``systemctl`` calls of ``activate``; a managed path outside the user's home needs the same two
  lines for its file and ``mkdir -p -- <dir>`` for its directory.

Pure: no I/O. A ``*`` in a sudoers rule matches any characters, spaces included: the rules pin
the binary, the socket, the namespace and the verb, not every argument.
"""

from __future__ import annotations

import posixpath

from . import catalog, render
from .catalog import K3sTarget
from .config import StackConfig

K3S = "/usr/local/bin/k3s"  # the k3s install script's path
SYSTEMCTL = "/usr/bin/systemctl"
TEE = "/usr/bin/tee"
MV = "/usr/bin/mv"
MKDIR = "/usr/bin/mkdir"
SUDOERS_FILE = "/etc/sudoers.d/unidesk-artifact-cd"


def k3s_namespaces(cfg: StackConfig) -> tuple[str, ...]:
    """The namespaces of the env's k3s services (the verify step's kubectl calls name them)."""
    found = set()
    for entry in catalog.services_for(cfg.env):
        target = entry.target(cfg.env)
        if isinstance(target, K3sTarget):
            found.add(target.namespace)
    return tuple(sorted(found))


def _user_writable(path: str, user: str) -> bool:
    """Whether the scripts write ``path`` as the user: under the user's home (or root's login)."""
    home = "/root" if user == "root" else f"/home/{user}"
    return path == home or path.startswith(home + "/")


def k3s_rules(cfg: StackConfig, *, k3s: str = K3S) -> list[str]:
    base = f"{k3s} ctr --address {cfg.k3s.containerd_socket} -n {cfg.k3s.containerd_namespace}"
    rules = [
        f"{base} version",
        f"{base} images pull --plain-http *",
        f"{base} images ls *",
        f"{base} images rm *",
        f"{base} content get *",
    ]
    for ns in k3s_namespaces(cfg):
        rules += [
            f"{k3s} kubectl -n {ns} rollout status *",
            f"{k3s} kubectl -n {ns} get deployment *",
            f"{k3s} kubectl get --raw /api/v1/namespaces/{ns}/services/*",
        ]
    return rules


def registry_rules(cfg: StackConfig, *, user: str | None = None) -> list[str]:
    if not cfg.registry.manage:
        return []
    user = user or cfg.hosts.d601.user
    rules: list[str] = []
    dirs = sorted({posixpath.dirname(f.path) for f in render.render_all(cfg.registry)[:2]})
    for d in [*dirs, cfg.registry.storage_path]:
        if not _user_writable(d, user):
            rules.append(f"{MKDIR} -p -- {d}")
    for f in render.render_all(cfg.registry):
        if _user_writable(f.path, user):
            continue
        staged = f"{posixpath.dirname(f.path)}/.{posixpath.basename(f.path)}.new"
        rules += [f"{TEE} {staged}", f"{MV} -f -T {staged} {f.path}"]
    unit = cfg.registry.unit_name
    rules += [
        f"{SYSTEMCTL} daemon-reload",
        f"{SYSTEMCTL} enable --quiet -- {unit}",
        f"{SYSTEMCTL} start --no-block -- {unit}",
        f"{SYSTEMCTL} stop -- {unit}",
        f"{SYSTEMCTL} restart --no-block -- {unit}",
        f"{SYSTEMCTL} reset-failed -- {unit}",
    ]
    return rules


def sudoers_rules(cfg: StackConfig, *, k3s: str = K3S) -> list[str]:
    """Every rule D601's SSH user needs with ``elevate: sudo`` (the master server needs none)."""
    return k3s_rules(cfg, k3s=k3s) + registry_rules(cfg)


def sudoers_lines(cfg: StackConfig, *, k3s: str = K3S, user: str | None = None) -> list[str]:
    """The lines of ``/etc/sudoers.d/unidesk-artifact-cd`` on D601 (``visudo -f`` checks them)."""
    who = user or cfg.hosts.d601.user
    return [f"{who} ALL=(root) NOPASSWD: {rule}" for rule in sudoers_rules(cfg, k3s=k3s)]
