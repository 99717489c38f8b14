"""Where a consumer's image goes: the image reference and the Compose site of a Compose target.

The steps, the target document and the affected runtime all read the Compose host and project
from :func:`compose_site`, so they cannot disagree about where a service runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import ComposeTarget, ServiceEntry, TargetKind
from ..config import ComposeProject, HostConfig, StackConfig
from .step import HOST_D601, HOST_MASTER, StepHost


def image_ref(cfg: StackConfig, entry: ServiceEntry, commit: str) -> str:
    """The commit-pinned image in the D601 registry: ``<endpoint>/unidesk/<id>:<commit>``."""
    return f"{cfg.registry.endpoint}/{entry.repository}:{commit}"


@dataclass(frozen=True)
class ComposeSite:
    """The host and Compose project of a Compose target in one stack."""

    host: StepHost  # the step host: master (compose-master) or d601 (compose-d601)
    where: str  # the host in prose
    address: HostConfig
    project: ComposeProject | None  # None only when the stack configures no project there

    @property
    def configured_project(self) -> ComposeProject:
        """The project; the config cross-check guarantees it for every configured service."""
        if self.project is None:
            raise ValueError(f"no Compose project is configured on {self.where}")
        return self.project


def compose_site(cfg: StackConfig, target: ComposeTarget) -> ComposeSite:
    if target.kind == TargetKind.COMPOSE_MASTER:
        return ComposeSite(HOST_MASTER, "master server", cfg.hosts.master, cfg.compose.master)
    return ComposeSite(HOST_D601, "D601", cfg.hosts.d601, cfg.compose.d601)
