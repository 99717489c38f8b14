"""The Compose project a rig test module deploys catalog services into, and the way in to both hosts.

Each module that deploys Compose services on the rig (test_deploy_compose, test_deploy_replay,
test_day_two, test_live_rig) has its own project, the same on both rig hosts: ``/srv/<name>``,
Compose project ``<name>``, the controlled env file ``/srv/<name>/.env.deploy``; each host's
``docker-compose.yml`` runs the catalog services placed on that host (image = retag name,
container_name, env_file = the controlled env file, init: true). Container names are global per
Docker daemon and the modules deploy the same catalog services, so a project removes every
container of its services on both hosts when it is installed and when it is removed.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifact_cd import catalog
from artifact_cd.catalog import ComposeTarget, Env
from tests.rig import Host, Rig
from tests.rig.host import RELAY
from tests.rig.rig import operator_dir

RIG_HOSTS = ("master", "d601")


def compose_target(service: str, env: Env = "prod") -> ComposeTarget:
    """The catalog's Compose target of ``service`` in ``env``."""
    entry = catalog.get(service)
    assert entry is not None, service
    target = entry.target(env)
    assert isinstance(target, ComposeTarget), (service, target)
    return target


@dataclass(frozen=True)
class ComposeProject:
    """``name``: the Compose project (and its directory ``/srv/<name>``); ``services``: each catalog
    service the project runs -> the rig host that runs it (``master`` or ``d601``)."""

    name: str
    services: Mapping[str, str]
    env: Env = "prod"

    @property
    def base(self) -> str:
        return f"/srv/{self.name}"

    @property
    def env_file(self) -> str:
        return f"{self.base}/.env.deploy"

    def settings(self) -> dict[str, Any]:
        """The stack config's ``compose.<host>`` of this project (the same on both hosts)."""
        return {
            "projectDir": self.base,
            "projectName": self.name,
            "envFile": self.env_file,
            "healthTimeoutSeconds": 20,
        }

    def stack_config(self, rig: Rig, commits: Mapping[str, str]) -> dict[str, Any]:
        """The rig's raw stack config for ``commits`` ({service: commit}), deploying into this project."""
        raw = rig.stack_config(self.env, dict(commits))
        raw["compose"] = {host: self.settings() for host in RIG_HOSTS}
        return raw

    def target(self, service: str) -> ComposeTarget:
        return compose_target(service, self.env)

    def host(self, rig: Rig, service: str) -> Host:
        """The rig host whose project runs ``service``."""
        return rig.host(self.services[service])

    def compose_file(self, host: str) -> str:
        lines = ['version: "2.4"', "services:"]
        for service, where in self.services.items():
            if where == host:
                t = self.target(service)
                lines += [
                    f"  {t.compose_service}:",
                    f"    image: {t.retag_name}",
                    f"    container_name: {t.container_name}",
                    f"    env_file: {self.env_file}",
                    "    init: true",
                ]
        return "\n".join(lines) + "\n"

    def write_env_file(self, h: Host, content: str) -> None:
        """The controlled env file on ``h``, as an operator keeps it: the operator's, mode 0600."""
        h.write_file(self.env_file, content, mode="0600", owner=h.user)

    def _remove_containers(self, h: Host) -> None:
        h.remove_containers(*(self.target(s).container_name for s in self.services))

    def install(self, rig: Rig, env_file: str) -> None:
        """Each host's project dir, docker-compose.yml and the env file ``env_file``, the
        operator's (README "Non-root hosts"); no container of the project's services left from
        another module."""
        for host in RIG_HOSTS:
            h = rig.host(host)
            self._remove_containers(h)
            operator_dir(h, self.base)
            h.write_file(f"{self.base}/docker-compose.yml", self.compose_file(host), owner=h.user)
            self.write_env_file(h, env_file)

    def remove(self, rig: Rig) -> None:
        """Down the project on both hosts and remove its containers and directory."""
        for host in RIG_HOSTS:
            h = rig.host(host)
            h.sh('cd "$1" && docker-compose -p "$2" --env-file "$3" down -t 1 >/dev/null 2>&1 || true',
                 self.base, self.name, self.env_file, check=False)  # fmt: skip
            self._remove_containers(h)
            h.sh('rm -rf -- "$1"', self.base, check=False)


def write_dispatch(rig: Rig, path: Path) -> Path:
    """An ssh ProxyCommand for both rig hosts (``ProxyCommand=<path> %h %p``): into the host's
    network namespace, then its sshd on loopback. Returns ``path``."""
    arms = "".join(f"  {h.address}) pid={h.pid} ;;\n" for h in (rig.d601, rig.master))
    relay = shlex.join([sys.executable, "-I", "-S", str(RELAY), "127.0.0.1"])
    path.write_text(
        "#!/bin/bash\n# ProxyCommand for both rig hosts: the host's network namespace, then its loopback\n"
        f'case $1 in\n{arms}  *) echo "no rig host $1" >&2; exit 1 ;;\nesac\n'
        f'exec nsenter -t "$pid" -n -- {relay} "$2"\n'
    )
    path.chmod(0o755)
    return path
