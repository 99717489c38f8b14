"""The plan documents a human reviews before a live apply (the seed's dry-run), as typed models.

:class:`ServicePlan` is one service in one stack: its decision, target, registry reference,
labels, source, the no-build boundary, the executable steps (built in :mod:`.steps`), and the prose
fields: verification, rollback, runtime secrets, affected runtime and excluded targets.
:class:`RegistryHostPlan` is the registry install: its boundary, dependencies, paths, files, the
CD flow, and its steps. Every model prints the same JSON keys, in the same order, as the plan
has always printed.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, cast

from pydantic import Field

from .. import render
from ..catalog import (
    ComposeTarget,
    Deployment,
    Env,
    K3sTarget,
    NameFact,
    NameKey,
    NameSource,
    NoTarget,
    PreRollout,
    ServiceEntry,
    Target,
    TargetKind,
)
from ..config import StackConfig
from ..contract import (
    K3S_ENV_PREFIX,
    MANIFEST_MEDIA_TYPES,
    REVISION_LABEL,
    SERVICE_LABEL,
    SOURCE_LABEL,
    VerifyKind,
)
from ..gates import ApprovalStatus, Decision, SelfBootstrapGuard
from ..jsondoc import Doc
from .site import compose_site, image_ref
from .step import HOST_D601, Step, StepHost

ACCEPT_MEDIA_TYPES: tuple[str, ...] = MANIFEST_MEDIA_TYPES

CD_FLOW: tuple[str, ...] = (
    "1. the D601 artifact registry is installed and passes health",
    "2. D601 CI builds unidesk/<service-id>:<commit> from a pushed Git checkout",
    "3. CI pushes 127.0.0.1:5000/unidesk/<service-id>:<commit> and records the artifact summary "
    "(serviceId, sourceRepo, sourceCommit, dockerfile, imageRef, tag, digest, digestRef)",
    "4. CD confirms the commit tag and its digest exist (manifest HEAD on D601)",
    "5. Compose targets receive the image over SSH (registry port stays private); k3s imports it "
    "into native containerd on D601",
    "6. Compose retags and runs `up -d --no-build --no-deps --force-recreate <service>`; k3s "
    "patches the Deployment image/env/annotations and waits for the rollout",
    "7. the live commit is proven by image label, runtime env and the health payload",
)

COMMON_EXCLUDED: tuple[str, ...] = (
    "D601 registry storage and the registry service",
    "source checkouts and builds on every target",
)

# --------------------------------------------------------------------------- target documents


class ComposeTargetDoc(Doc):
    kind: Literal[TargetKind.COMPOSE_MASTER, TargetKind.COMPOSE_D601]
    host: StepHost
    host_address: str
    compose_service: str
    container_name: str
    compose_project: str | None
    compose_dir: str | None
    env_file: str | None
    images: tuple[str, ...]
    env_prefix: str
    recreate_command: str
    kubernetes_objects: tuple[str, ...] = ()
    compose_files: tuple[str, ...] = ()  # () = Compose's own discovery in the project directory


class PreRolloutDoc(Doc):
    from_: str = Field(alias="from")
    secret: str
    config_map: str


class K3sTargetDoc(Doc):
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"pre_rollout"})

    kind: Literal[TargetKind.K3S] = TargetKind.K3S
    host: StepHost = HOST_D601
    host_address: str
    namespace: str
    deployments: tuple[str, ...]  # namespace/name
    containers: dict[str, str]  # deployment name -> container name
    kubernetes_service: str
    health_via: str = "Kubernetes API service proxy"
    containerd_socket: str
    containerd_namespace: str
    env_prefix: str = K3S_ENV_PREFIX
    exposure: str = "no NodePort, hostPort, LoadBalancer, Ingress or public business port is created"
    pre_rollout: PreRolloutDoc | None = None


class NoTargetDoc(Doc):
    kind: Literal[TargetKind.NONE] = TargetKind.NONE
    reason: str


TargetDoc = Annotated[ComposeTargetDoc | K3sTargetDoc | NoTargetDoc, Field(discriminator="kind")]


def compose_target_doc(
    cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget, commit: str | None
) -> ComposeTargetDoc:
    site = compose_site(cfg, target)
    project = site.project
    return ComposeTargetDoc(
        kind=target.kind,
        host=site.host,
        host_address=site.address.host,
        compose_service=target.compose_service,
        container_name=target.container_name,
        compose_project=project.project_name if project else None,
        compose_dir=project.project_dir if project else None,
        env_file=project.env_file if project else None,
        images=(target.retag_name, f"{target.retag_name}:{commit or '<commit>'}"),
        env_prefix=entry.compose_env_prefix,
        recreate_command=(
            f"docker compose up -d --no-build --no-deps --force-recreate {target.compose_service}"
        ),
        compose_files=target.compose_files,
    )


def k3s_target_doc(cfg: StackConfig, target: K3sTarget) -> K3sTargetDoc:
    pre_rollout = None
    if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
        fa = cfg.frontend_auth
        pre_rollout = PreRolloutDoc(
            from_=f"master server {fa.config_path} (auth section)",
            secret=f"{target.namespace}/{fa.secret_name}",
            config_map=f"{target.namespace}/{fa.config_map_name}",
        )
    return K3sTargetDoc(
        host_address=cfg.hosts.d601.host,
        namespace=target.namespace,
        deployments=tuple(f"{target.namespace}/{d.name}" for d in target.deployments),
        containers={d.name: d.container for d in target.deployments},
        kubernetes_service=target.kubernetes_service,
        containerd_socket=cfg.k3s.containerd_socket,
        containerd_namespace=cfg.k3s.containerd_namespace,
        pre_rollout=pre_rollout,
    )


def target_doc(cfg: StackConfig, entry: ServiceEntry, target: Target, commit: str | None) -> TargetDoc:
    match target:
        case ComposeTarget():
            return compose_target_doc(cfg, entry, target, commit)
        case K3sTarget():
            return k3s_target_doc(cfg, target)
        case NoTarget():
            return NoTargetDoc(reason=target.gate_reason)


# --------------------------------------------------------------------------- registry and source


class RegistryRef(Doc):
    endpoint: str
    repository: str
    tag: str
    image_ref: str
    probe_url: str
    probe_method: str = "HEAD"
    accept_media_types: tuple[str, ...] = ACCEPT_MEDIA_TYPES
    digest: str | None = None
    digest_source: str = (
        "live registry manifest HEAD on D601 (Docker-Content-Digest) at apply time; null in a dry-run"
    )


def registry_ref(cfg: StackConfig, entry: ServiceEntry, commit: str) -> RegistryRef:
    endpoint = cfg.registry.endpoint
    return RegistryRef(
        endpoint=endpoint,
        repository=entry.repository,
        tag=commit,
        image_ref=image_ref(cfg, entry, commit),
        probe_url=f"http://{endpoint}/v2/{entry.repository}/manifests/{commit}",
    )


def required_labels(entry: ServiceEntry, commit: str | None) -> dict[str, str]:
    return {
        REVISION_LABEL: commit or "<commit>",
        SOURCE_LABEL: entry.source_repo,
        SERVICE_LABEL: entry.id,
    }


class SourceDoc(Doc):
    repo: str
    commit: str | None
    dockerfile: str
    build_context: str
    producer: str
    pushed_git_required: bool = True
    dirty_worktree_allowed: bool = False


def source_doc(entry: ServiceEntry, commit: str | None) -> SourceDoc:
    return SourceDoc(
        repo=entry.source_repo,
        commit=commit,
        dockerfile=entry.dockerfile,
        build_context=entry.build_context,
        producer=entry.producer,
    )


class BuildDoc(Doc):
    """CD never builds (R25): every ``will*`` is false."""

    will_compile: Literal[False] = False
    will_run_cargo_build: Literal[False] = False
    will_run_docker_build: Literal[False] = False
    will_run_docker_compose_build: Literal[False] = False
    boundary: str = "pull-only: CD pulls, retags/imports, recreates and verifies; it never builds"


# --------------------------------------------------------------------------- verification, rollback


class VerificationDoc(Doc):
    kind: VerifyKind
    health: str
    checks: tuple[str, ...]
    reject_old_revision: bool = True


def verification(entry: ServiceEntry, target: Target) -> VerificationDoc:
    checks: list[str]
    if isinstance(target, K3sTarget):
        checks = [
            "every listed Deployment finishes its rollout",
            f"GET {entry.health.path} through the Kubernetes API service proxy",
            "deploy.commit == commit and deploy.requestedCommit == commit",
            "an old healthy revision (other live or requested commit) is rejected",
        ]
    else:
        checks = [
            "the container runs the image whose ID matches the registry manifest's config digest",
            f"container image label {REVISION_LABEL} == commit",
        ]
        if entry.verification == VerifyKind.TODO_NOTE_SYNTHETIC:
            checks += [
                f"GET {entry.health.path} answers ok",
                "synthetic deploy.commit = the running image's revision label; deploy.requestedCommit = "
                f"the container's {entry.compose_env_prefix}COMMIT; both must equal the commit",
            ]
        else:
            checks.append(
                f"GET {entry.health.path}: deploy.commit == commit and deploy.requestedCommit == commit"
            )
        if entry.verification == VerifyKind.BAIDU_AUTH_GATE:
            checks += [
                "before recreate: "
                + ", ".join(entry.required_secret_keys)
                + " present (present/length only)",
                "after recreate: /health auth.configured, clientIdConfigured, clientSecretConfigured, "
                "tokenKeyConfigured and loggedIn all true, else failed/degraded",
            ]
    return VerificationDoc(
        kind=entry.verification,
        health=f"{entry.health.path} (port {entry.health.port})",
        checks=tuple(checks),
    )


class RollbackDoc(Doc):
    strategy: Literal["redeploy-older-commit"] = "redeploy-older-commit"
    how: str
    offline_plan: str
    note: str = (
        "the same consumer runs with the older commit; its manifest must still exist in the D601 "
        "registry. Never a legacy maintenance-channel rebuild."
    )


def rollback(stack: str, entry: ServiceEntry) -> RollbackDoc:
    return RollbackDoc(
        how=(
            f"pulumi stack select {stack} && pulumi config set --path 'services.{entry.id}.commit' "
            "<older full sha> && pulumi up"
        ),
        offline_plan=(
            f"python -m artifact_cd plan --stack {stack} --service {entry.id} --commit <older full sha>"
        ),
    )


# --------------------------------------------------------------------------- runtime secrets, runtime


class RuntimeSecretsDoc(Doc):
    """Which secret keys the deploy needs on the master server; values are never read or printed."""

    secret_source: str
    required_secret_keys: tuple[str, ...]
    required_secrets_present: bool | None = None  # known only after the deploy's preflight
    missing_secret_keys: tuple[str, ...] | None = None
    checked_by: str = (
        "deploy step preflight on the master server before recreate; reports present/length only"
    )
    recommended_action: str


def runtime_secrets(cfg: StackConfig, entry: ServiceEntry) -> RuntimeSecretsDoc | None:
    if not entry.required_secret_keys:
        return None
    project = cfg.compose.master
    source = project.env_file if project else "<compose.master.envFile>"
    return RuntimeSecretsDoc(
        secret_source=f"master server controlled env file {source} (providerGateway.upgrade.composeEnvFile)",
        required_secret_keys=entry.required_secret_keys,
        recommended_action=(
            "if the preflight reports missing keys: restore them in the env file, recreate only "
            f"{entry.id}, then verify `microservice health {entry.id}`; values are never printed"
        ),
    )


def affected_runtime(
    cfg: StackConfig, entry: ServiceEntry, target: Target, commit: str | None
) -> tuple[str, ...]:
    tag = commit or "<commit>"
    match target:
        case ComposeTarget():
            site = compose_site(cfg, target)
            project = site.configured_project
            return (
                f"{site.where} Compose project {project.project_name}: service {target.compose_service} "
                f"(container {target.container_name}) only",
                f"{site.where} images {target.retag_name}, {target.retag_name}:{tag}",
                f"{site.where} env file {project.env_file}: keys {entry.compose_env_prefix}* only",
            )
        case K3sTarget():
            out = [f"Deployment {target.namespace}/{d.name}" for d in target.deployments]
            out.append(f"D601 containerd ({cfg.k3s.containerd_namespace}) image {entry.repository}:{tag}")
            if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
                out.append(f"Secret {target.namespace}/{cfg.frontend_auth.secret_name}")
                out.append(f"ConfigMap {target.namespace}/{cfg.frontend_auth.config_map_name}")
            return tuple(out)
        case NoTarget():
            return ()


# --------------------------------------------------------------------------- names


class DeploymentNameDoc(Doc):
    name: str
    container: str


class NameDoc(Doc):
    """One name of the service's target (issue 11): its value, whether it is the catalog's default
    or the stack's (``source``), the key that sets it, and whether the default is a guess the seed
    does not fix (``assumed``; it is then listed in ``assumptions``)."""

    value: str | int | tuple[str, ...] | tuple[DeploymentNameDoc, ...]
    source: NameSource
    key: str
    assumed: bool


def names_doc(entry: ServiceEntry, facts: tuple[NameFact, ...]) -> dict[NameKey, NameDoc]:
    out: dict[NameKey, NameDoc] = {}
    for fact in facts:
        value: str | int | tuple[str, ...] | tuple[DeploymentNameDoc, ...]
        if fact.key == "deployments":
            deployments = cast("tuple[Deployment, ...]", fact.value)
            value = tuple(DeploymentNameDoc(name=d.name, container=d.container) for d in deployments)
        else:
            value = cast("str | int | tuple[str, ...]", fact.value)
        out[fact.key] = NameDoc(
            value=value,
            source=fact.source,
            key=f"services.{entry.id}.names.{fact.key}",
            assumed=fact.assumption is not None,
        )
    return out


# --------------------------------------------------------------------------- the service plan


class ServicePlan(Doc):
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"self_bootstrap_guard", "runtime_secrets"})

    service: str
    env: Env
    commit: str | None
    decision: Decision
    reason: str
    fix: str | None = None
    target: TargetDoc
    registry: RegistryRef | None
    required_labels: dict[str, str]
    source: SourceDoc
    build: BuildDoc = BuildDoc()
    steps: tuple[Step, ...]
    verification: VerificationDoc
    rollback: RollbackDoc
    requires_supervisor_approval: bool
    approval: ApprovalStatus | None
    affected_runtime: tuple[str, ...]
    excluded_targets: tuple[str, ...]
    deploy_env: dict[str, str]
    annotations: dict[str, str]
    self_bootstrap_guard: SelfBootstrapGuard | None = None
    runtime_secrets: RuntimeSecretsDoc | None = None
    assumptions: tuple[str, ...] = ()
    names: dict[NameKey, NameDoc] = Field(default_factory=dict)

    @property
    def step_by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}


# --------------------------------------------------------------------------- the registry host plan


class RegistryBoundary(Doc):
    runs_on: str = "D601 host OS: systemd unit running a Docker Compose project (not a k3s workload)"
    exposure: str
    never: tuple[str, ...] = (
        "NodePort",
        "hostPort",
        "LoadBalancer",
        "Ingress",
        "k3s Service",
        "public port",
        "public reverse proxy",
    )
    role: str = (
        "host-managed artifact cache for commit-pinned images; "
        "not a build orchestrator, not a deploy control plane"
    )


class RegistryPaths(Doc):
    unit: str
    unit_path: str
    compose_project: str
    container: str
    image: str
    config: str
    compose: str
    storage: str
    endpoint: str  # http://<endpoint>


class FileRef(Doc):
    path: str
    sha256: str


MUST_NOT_DEPEND_ON: tuple[str, ...] = (
    "k3s control plane or any k3s namespace",
    "a third-party image registry as the artifact source of truth",
    "any build on a target (cargo build, docker build, docker compose build)",
    "a public registry port or public reverse proxy",
    "k3s Service, NodePort, Ingress or any long-lived registry proxy",
)

STORAGE_POLICY = (
    "the registry storage is never deleted: not by install, reinstall, image upgrade, config "
    "change, replace or pulumi destroy"
)


class RegistryHostPlan(Doc):
    managed_by_this_stack: bool
    host: StepHost
    host_address: str
    boundary: RegistryBoundary
    dependencies: tuple[str, ...]
    must_not_depend_on: tuple[str, ...] = MUST_NOT_DEPEND_ON
    paths: RegistryPaths
    files: dict[str, FileRef]
    storage_policy: str = STORAGE_POLICY
    cd_flow: tuple[str, ...] = CD_FLOW
    steps: tuple[Step, ...]


def registry_boundary(cfg: StackConfig) -> RegistryBoundary:
    reg = cfg.registry
    return RegistryBoundary(
        exposure=(
            f"loopback only: {render.host_binding(reg)} "
            f"(container listens on :{render.CONTAINER_PORT} inside its own network namespace)"
        ),
    )


def registry_dependencies(cfg: StackConfig) -> tuple[str, ...]:
    reg = cfg.registry
    return (
        "D601 Docker Engine",
        "Docker Compose (plugin v2, or docker-compose v1)",
        "systemd",
        f"registry image {reg.image}",
        f"local directory {reg.storage_path}",
        "SSH to D601 only for read-only status/health",
    )


def registry_paths(cfg: StackConfig) -> RegistryPaths:
    reg = cfg.registry
    return RegistryPaths(
        unit=reg.unit_name,
        unit_path=render.unit_path(reg),
        compose_project=reg.compose_project,
        container=reg.container_name,
        image=reg.image,
        config=reg.config_path,
        compose=reg.compose_path,
        storage=reg.storage_path,
        endpoint=f"http://{reg.endpoint}",
    )


def registry_files(cfg: StackConfig) -> dict[str, FileRef]:
    return {f.name: FileRef(path=f.path, sha256=f.sha256) for f in render.render_all(cfg.registry)}
