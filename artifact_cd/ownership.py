"""Ownership of live targets (issue 12): what each stack mutates on a host, and where two collide.

The dev and prod stacks deploy onto the same hosts (D601, the master server), each into its own
Compose project or k3s namespace. A Compose project keeps its services apart, but a Docker
container name and a stable image tag (the retag name) are global per Docker daemon, and a
Deployment is global per namespace. So one of them owned by two stacks (or by two services of one
stack) lets one deploy recreate, retag or patch what the other runs.

A :class:`Claim` is one such name on one host (``host:port`` of the stack's ``hosts.<name>``), with
the config key that sets it. :func:`collisions` pairs two claims on the same host, kind and name;
:func:`artifact_cd.config.parse_stack_config` refuses those within a stack, and
:func:`artifact_cd.config.load_stack` (and the Pulumi program) those against the sibling stack
(``Pulumi.<other>.yaml`` next to ``Pulumi.yaml``), offline, before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from . import catalog
from .catalog import ComposeTarget, K3sTarget, TargetKind

if TYPE_CHECKING:
    from .config import HostConfig, StackConfig

ClaimKind = Literal["container", "retag", "deployment", "compose service"]

REGISTRY = "(registry)"  # the claim of the registry container, shared by design by both stacks


@dataclass(frozen=True)
class Claim:
    host: str  # the host's identity: "<address>:<ssh port>" of hosts.<name>
    where: str  # the host in prose
    kind: ClaimKind
    name: str  # container / retag name, "<namespace>/<deployment>", "<project>/<compose service>"
    service: str  # the service id (REGISTRY for the registry container)
    key: str  # the config key that sets the name
    configured: bool = False  # the stack sets it (services.<id>.names), not the catalog's default

    @property
    def identity(self) -> tuple[str, ClaimKind, str]:
        return (self.host, self.kind, self.name)


def host_identity(host: HostConfig) -> str:
    return f"{host.host.lower()}:{host.port}"


def claims(cfg: StackConfig) -> list[Claim]:
    """Every container, retag, Deployment and Compose service this stack's configured services
    mutate (whatever their gate), and the registry container on D601."""
    env = cfg.env
    d601 = host_identity(cfg.hosts.d601)
    out = [Claim(d601, "D601", "container", cfg.registry.container_name, REGISTRY, "registry.containerName")]
    for sid, svc in cfg.services.items():
        entry = catalog.get(sid)
        if entry is None:
            continue
        resolved, _ = catalog.apply_names(entry, env, svc.names)
        target = resolved.target(env)
        key = f"services.{sid}.names"
        names = svc.names.keys_set()
        match target:
            case ComposeTarget():
                on_master = target.kind == TargetKind.COMPOSE_MASTER
                address = cfg.hosts.master if on_master else cfg.hosts.d601
                where = "the master server" if on_master else "D601"
                host = host_identity(address)
                project = cfg.compose.master if on_master else cfg.compose.d601
                out += [
                    Claim(
                        host,
                        where,
                        "container",
                        target.container_name,
                        sid,
                        f"{key}.containerName",
                        "containerName" in names,
                    ),
                    Claim(host, where, "retag", target.retag_name, sid, f"{key}.retag", "retag" in names),
                ]
                if project is not None:
                    out.append(
                        Claim(
                            host,
                            where,
                            "compose service",
                            f"{project.project_name}/{target.compose_service}",
                            sid,
                            f"{key}.composeService",
                            "composeService" in names,
                        )
                    )
            case K3sTarget():
                out += [
                    Claim(
                        d601,
                        "D601's k3s",
                        "deployment",
                        f"{target.namespace}/{dep.name}",
                        sid,
                        f"{key}.deployments[{index}].name",
                        "deployments" in names,
                    )
                    for index, dep in enumerate(target.deployments)
                ]
            case _:
                pass
    return out


def collisions(mine: Sequence[Claim], theirs: Sequence[Claim] | None = None) -> list[tuple[Claim, Claim]]:
    """Pairs (this claim, the one it collides with). Without ``theirs``: within ``mine``, two
    services on one name (each pair once: first the claim a stack set, else the later one; never
    the registry's, which has its own key). With ``theirs`` (the sibling
    stack's claims): each of ``mine`` against each of theirs; the registry container, which both
    stacks name by design, does not collide with itself."""
    pairs: list[tuple[Claim, Claim]] = []
    if theirs is None:
        first: dict[tuple[str, ClaimKind, str], Claim] = {}
        for claim in mine:
            earlier = first.setdefault(claim.identity, claim)
            if earlier is not claim and earlier.service != claim.service:
                first_is_mine = earlier.service != REGISTRY and (
                    claim.service == REGISTRY or (earlier.configured and not claim.configured)
                )
                pairs.append((earlier, claim) if first_is_mine else (claim, earlier))
        return pairs
    by_identity = {claim.identity: claim for claim in theirs}
    for claim in mine:
        other = by_identity.get(claim.identity)
        if other is not None and not (claim.service == REGISTRY and other.service == REGISTRY):
            pairs.append((claim, other))
    return pairs


def suggestion(claim: Claim, env: str) -> str:
    """A name for ``claim`` that its env owns alone: ``<name>-<env>`` (an env suffix replaced)."""
    name = claim.name.rsplit("/", 1)[-1]
    for suffix in ("-dev", "-prod"):
        name = name.removesuffix(suffix)
    return f"{name}-{env}"
