"""Renderers for the registry host files (R1, R2, R5): registry config, Compose file, systemd unit.

Each rendering is deterministic text; its SHA-256 is what install compares with the remote file
and what status/health report as drift. The Compose file carries a label with the hash of the
whole rendered spec, so the activate step can tell whether the running container is current.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from . import contract
from .config import RegistryConfig

HEADER = "# Managed by unidesk-artifact-cd (python -m artifact_cd render). Local edits show as drift.\n"
SPEC_LABEL = contract.SPEC_LABEL  # the running container carries the hash of the spec it started from
CONTAINER_PORT = 5000
UNIT_DIR = "/etc/systemd/system"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RenderedFile:
    name: str  # config | compose | unit
    path: str
    mode: str
    content: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.content)


def unit_path(registry: RegistryConfig) -> str:
    return f"{UNIT_DIR}/{registry.unit_name}"


def render_registry_config(registry: RegistryConfig) -> str:
    # The registry listens on :5000 inside its own container network namespace; the only host
    # exposure is the loopback port mapping of the Compose file (seed: inside the container the
    # registry may listen on :5000; the boundary is the host loopback binding). Deletes are
    # disabled: tags are immutable here.
    del registry  # the config has no stack-dependent value today; the signature keeps it possible
    return HEADER + (
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  fields:\n"
        "    service: unidesk-artifact-registry\n"
        "storage:\n"
        "  filesystem:\n"
        "    rootdirectory: /var/lib/registry\n"
        "  delete:\n"
        "    enabled: false\n"
        "  maintenance:\n"
        "    uploadpurging:\n"
        "      enabled: true\n"
        "      age: 168h\n"
        "      interval: 24h\n"
        "      dryrun: false\n"
        "http:\n"
        f"  addr: :{CONTAINER_PORT}\n"
        "  headers:\n"
        "    X-Content-Type-Options: [nosniff]\n"
        "health:\n"
        "  storagedriver:\n"
        "    enabled: true\n"
        "    interval: 10s\n"
        "    threshold: 3\n"
    )


def host_binding(registry: RegistryConfig) -> str:
    host = "127.0.0.1" if registry.host == "localhost" else registry.host
    return f"{host}:{registry.port}:{CONTAINER_PORT}"


def _compose_body(registry: RegistryConfig, spec_sha256: str) -> str:
    return HEADER + (
        "services:\n"
        "  registry:\n"
        f"    image: {registry.image}\n"
        f"    container_name: {registry.container_name}\n"
        "    init: true\n"
        '    restart: "no"  # systemd owns restarts\n'
        "    ports:\n"
        f'      - "{host_binding(registry)}"\n'
        "    volumes:\n"
        "      - type: bind\n"
        f"        source: {registry.config_path}\n"
        "        target: /etc/docker/registry/config.yml\n"
        "        read_only: true\n"
        "      - type: bind\n"
        f"        source: {registry.storage_path}\n"
        "        target: /var/lib/registry\n"
        "    labels:\n"
        f'      {SPEC_LABEL}: "{spec_sha256}"\n'
    )


def _compose_cmd(registry: RegistryConfig) -> str:
    return f"{registry.compose_command} -p {registry.compose_project} -f {registry.compose_path}"


def render_unit(registry: RegistryConfig) -> str:
    compose = _compose_cmd(registry)
    return HEADER + (
        "[Unit]\n"
        f"Description=UniDesk artifact registry (CNCF distribution, loopback {registry.endpoint})\n"
        "Documentation=https://github.com/pikasTech/unidesk\n"
        "Requires=docker.service\n"
        "After=docker.service\n"
        "StartLimitIntervalSec=300\n"
        "StartLimitBurst=5\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"WorkingDirectory={posixpath.dirname(registry.compose_path)}\n"
        f"ExecStartPre={compose} config --quiet\n"
        f"ExecStart={compose} up --no-build --abort-on-container-exit\n"
        f"ExecStop={compose} stop\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStartSec=120\n"
        "TimeoutStopSec=60\n"
        "\n"
        "[Install]\n"
        # docker.service too: a stop+start of Docker brings the registry back (Requires= alone
        # only propagates the stop)
        "WantedBy=multi-user.target docker.service\n"
    )


def spec_sha256(registry: RegistryConfig) -> str:
    """Hash of everything rendered except the label itself: config, compose body, unit."""
    return sha256_text(
        "\0".join((render_registry_config(registry), _compose_body(registry, ""), render_unit(registry)))
    )


def render_compose(registry: RegistryConfig) -> str:
    return _compose_body(registry, spec_sha256(registry))


def render_all(registry: RegistryConfig) -> tuple[RenderedFile, RenderedFile, RenderedFile]:
    return (
        RenderedFile("config", registry.config_path, "0644", render_registry_config(registry)),
        RenderedFile("compose", registry.compose_path, "0644", render_compose(registry)),
        RenderedFile("unit", unit_path(registry), "0644", render_unit(registry)),
    )
