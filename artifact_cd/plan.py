"""Plan documents (R4, R12, R15, R18, R20): pure values, no Pulumi, no I/O.

A :class:`ServicePlan` is everything a human reviews before a live apply; the Pulumi components
only translate its ``steps`` into resources, so the offline plan and ``pulumi preview`` cannot
drift apart. Step arguments are exact: the components and the real-rig tests run them as they
are, after replacing :data:`DIGEST` with the digest the manifest check returned.
"""

from __future__ import annotations

import base64
import json
import posixpath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from . import catalog, render
from .catalog import (
    ANNOTATION_PREFIX,
    K3S_ENV_PREFIX,
    REVISION_LABEL,
    SERVICE_LABEL,
    SOURCE_LABEL,
    ComposeTarget,
    Env,
    K3sTarget,
    NoTarget,
    PreRollout,
    ServiceEntry,
    TargetKind,
    VerificationKind,
)
from .config import StackConfig
from .gates import ApplyContext, Decision, GateResult, evaluate

# Placeholders for what the manifest check reads live: the manifest digest and the image ID
# (the config digest, which `docker load`, `docker pull` and `docker inspect` all agree on).
# Neither can pass a script's digest validation, so a step that was not given the real value
# fails before acting.
DIGEST = "<digest:manifest-check>"
IMAGE_ID = "<image-id:manifest-check>"
LIVE_PLACEHOLDERS = (DIGEST, IMAGE_ID)

ACCEPT_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)

HOST_D601 = "d601"
HOST_MASTER = "master"
HOST_K8S_API = "kubernetes-api"

NO_BUILD = {
    "willCompile": False,
    "willRunCargoBuild": False,
    "willRunDockerBuild": False,
    "willRunDockerComposeBuild": False,
    "boundary": "pull-only: CD pulls, retags/imports, recreates and verifies; it never builds",
}

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


class Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Step(Doc):
    id: str
    host: str
    action: str
    script: str | None = None
    args: tuple[str, ...] = ()
    mutates: bool
    patch: dict[str, Any] | None = None

    def resolved_args(self, digest: str, image_id: str) -> list[str]:
        """The exact argv, with the manifest check's live values in place of the placeholders."""
        live = {DIGEST: digest, IMAGE_ID: image_id}
        return [live.get(a, a) for a in self.args]

    @property
    def needs_manifest(self) -> bool:
        """Whether the step consumes the manifest check's live values (argv or patch body)."""
        in_patch = self.patch is not None and any(p in json.dumps(self.patch) for p in LIVE_PLACEHOLDERS)
        return in_patch or any(a in LIVE_PLACEHOLDERS for a in self.args)


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


class ServicePlan(Doc):
    service: str
    env: Env
    commit: str | None
    decision: Decision
    reason: str
    fix: str | None = None
    target: dict[str, Any]
    registry: RegistryRef | None
    required_labels: dict[str, str]
    source: dict[str, Any]
    build: dict[str, Any] = Field(default_factory=lambda: dict(NO_BUILD))
    steps: tuple[Step, ...]
    verification: dict[str, Any]
    rollback: dict[str, Any]
    requires_supervisor_approval: bool
    approval: dict[str, Any] | None
    affected_runtime: tuple[str, ...]
    excluded_targets: tuple[str, ...]
    deploy_env: dict[str, str]
    annotations: dict[str, str]
    self_bootstrap_guard: dict[str, Any] | None = None
    runtime_secrets: dict[str, Any] | None = None
    assumptions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = super().to_json()
        for optional in ("selfBootstrapGuard", "runtimeSecrets"):
            if doc[optional] is None:
                del doc[optional]
        return doc

    @property
    def step_by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}


# --------------------------------------------------------------------------- registry side


def image_ref(cfg: StackConfig, entry: ServiceEntry, commit: str) -> str:
    return f"{cfg.registry.endpoint}/{entry.repository}:{commit}"


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


def _manifest_step(cfg: StackConfig, entry: ServiceEntry, commit: str) -> Step:
    return Step(
        id="manifest-check",
        host=HOST_D601,
        action=(
            f"HEAD {cfg.registry.endpoint}/v2/{entry.repository}/manifests/{commit} with the four "
            "manifest media types; print the digest; nothing on any target is touched before it passes"
        ),
        script="manifest-check.sh",
        args=("--registry", cfg.registry.endpoint, "--repository", entry.repository, "--tag", commit),
        mutates=False,
    )


def _image_args(cfg: StackConfig, entry: ServiceEntry, commit: str) -> tuple[str, ...]:
    return (
        "--registry",
        cfg.registry.endpoint,
        "--repository",
        entry.repository,
        "--tag",
        commit,
        "--digest",
        DIGEST,
        "--image-id",
        IMAGE_ID,
    )


# --------------------------------------------------------------------------- Compose consumers


def _compose_steps(cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget, commit: str) -> list[Step]:
    on_master = target.kind == TargetKind.COMPOSE_MASTER
    host = HOST_MASTER if on_master else HOST_D601
    project = cfg.compose.master if on_master else cfg.compose.d601
    assert project is not None  # config cross-check guarantees it
    if on_master:
        move_args: tuple[str, ...] = (
            "--mode",
            cfg.transfer.mode,
            *_image_args(cfg, entry, commit),
            "--d601",
            cfg.transfer.d601_ssh_target,
            "--d601-port",
            str(cfg.transfer.d601_ssh_port),
        )
        move = Step(
            id="transfer",
            host=HOST_MASTER,
            action=(
                f"move the image by digest from D601 to the master server over SSH ({cfg.transfer.mode}: "
                + (
                    "pull through an SSH tunnel to D601's loopback registry; only missing layers travel"
                    if cfg.transfer.mode == "tunnel"
                    else "docker save on D601 streamed into docker load"
                )
                + "); verify the loaded image against the manifest digest"
            ),
            script="move-image.sh",
            args=move_args,
            mutates=True,
        )
    else:
        move = Step(
            id="pull",
            host=HOST_D601,
            action=(
                "pull the image by digest from the local registry on D601; "
                "verify it against the manifest digest"
            ),
            script="move-image.sh",
            args=("--mode", "local", *_image_args(cfg, entry, commit)),
            mutates=True,
        )
    deploy_args: list[str] = [
        "--service-id",
        entry.id,
        "--compose-service",
        target.compose_service,
        "--container",
        target.container_name,
        "--commit",
        commit,
        "--digest",
        DIGEST,
        "--image-id",
        IMAGE_ID,
        "--image",
        image_ref(cfg, entry, commit),
        "--retag",
        target.retag_name,
        "--project-dir",
        project.project_dir,
        "--project-name",
        project.project_name,
        "--env-file",
        project.env_file,
        "--env-prefix",
        entry.compose_env_prefix,
        "--verify",
        entry.verification.value,
        "--health-path",
        entry.health.path,
        "--health-port",
        str(entry.health.port),
        "--health-timeout",
        str(project.health_timeout_seconds),
    ]
    if project.command is not None:
        deploy_args += ["--compose-command", project.command]
    for key in entry.required_secret_keys:
        deploy_args += ["--required-secret", key]
    actions = ["take the per-service deploy lock"]
    if entry.required_secret_keys:
        actions.append("check the required secret keys are present in the env file (present/length only)")
    actions += [
        f"retag to {target.retag_name} and {target.retag_name}:{commit}",
        f"write {entry.compose_env_prefix}* into {project.env_file} atomically (other keys kept)",
        f"docker compose up -d --no-build --no-deps --force-recreate {target.compose_service}",
        "verify the container image, its revision label and the health payload's commits",
    ]
    deploy = Step(
        id="deploy",
        host=host,
        action="; ".join(actions),
        script="compose-deploy.sh",
        args=tuple(deploy_args),
        mutates=True,
    )
    return [_manifest_step(cfg, entry, commit), move, deploy]


def _compose_target_doc(
    cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget, commit: str | None
) -> dict[str, Any]:
    on_master = target.kind == TargetKind.COMPOSE_MASTER
    project = cfg.compose.master if on_master else cfg.compose.d601
    tag = commit or "<commit>"
    return {
        "kind": target.kind.value,
        "host": HOST_MASTER if on_master else HOST_D601,
        "hostAddress": (cfg.hosts.master if on_master else cfg.hosts.d601).host,
        "composeService": target.compose_service,
        "containerName": target.container_name,
        "composeProject": project.project_name if project else None,
        "composeDir": project.project_dir if project else None,
        "envFile": project.env_file if project else None,
        "images": [target.retag_name, f"{target.retag_name}:{tag}"],
        "envPrefix": entry.compose_env_prefix,
        "recreateCommand": (
            f"docker compose up -d --no-build --no-deps --force-recreate {target.compose_service}"
        ),
        "kubernetesObjects": [],
    }


# --------------------------------------------------------------------------- k3s consumers


def _k3s_env(cfg: StackConfig, entry: ServiceEntry, commit: str) -> dict[str, str]:
    return {
        f"{K3S_ENV_PREFIX}COMMIT": commit,
        f"{K3S_ENV_PREFIX}IMAGE": image_ref(cfg, entry, commit),
        f"{K3S_ENV_PREFIX}DIGEST": DIGEST,
        f"{K3S_ENV_PREFIX}SERVICE": entry.id,
    }


def _annotations(cfg: StackConfig, entry: ServiceEntry, commit: str) -> dict[str, str]:
    return {
        f"{ANNOTATION_PREFIX}commit": commit,
        f"{ANNOTATION_PREFIX}image": image_ref(cfg, entry, commit),
        f"{ANNOTATION_PREFIX}digest": DIGEST,
        f"{ANNOTATION_PREFIX}service": entry.id,
    }


def deployment_patch(
    cfg: StackConfig, entry: ServiceEntry, target: K3sTarget, index: int, commit: str
) -> dict[str, Any]:
    """The server-side-apply body of one DeploymentPatch (image = commit tag, env, annotations)."""
    dep = target.deployments[index]
    annotations = _annotations(cfg, entry, commit)
    return {
        "metadata": {
            "name": dep.name,
            "namespace": target.namespace,
            "annotations": {**annotations, "pulumi.com/patchForce": "true"},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containers": [
                        {
                            "name": dep.container,
                            "image": image_ref(cfg, entry, commit),
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": k, "value": v} for k, v in _k3s_env(cfg, entry, commit).items()],
                        }
                    ]
                },
            }
        },
    }


def _k3s_steps(cfg: StackConfig, entry: ServiceEntry, target: K3sTarget, commit: str) -> list[Step]:
    steps = [
        _manifest_step(cfg, entry, commit),
        Step(
            id="import",
            host=HOST_D601,
            action=(
                f"pull the commit image on D601 and import it into native k3s containerd "
                f"({cfg.k3s.containerd_socket}, namespace {cfg.k3s.containerd_namespace}); "
                "verify it is listed with the commit tag and the manifest digest"
            ),
            script="k3s-import.sh",
            args=(
                "--socket",
                cfg.k3s.containerd_socket,
                "--namespace",
                cfg.k3s.containerd_namespace,
                *_image_args(cfg, entry, commit),
            ),
            mutates=True,
        ),
    ]
    if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
        fa = cfg.frontend_auth
        steps += [
            Step(
                id="auth-read",
                host=HOST_MASTER,
                action=f"read the auth section of {fa.config_path} on the master server (output kept secret)",
                script="read-auth.sh",
                args=("--config", fa.config_path),
                mutates=False,
            ),
            Step(
                id="auth-sync",
                host=HOST_K8S_API,
                action=(
                    f"patch Secret {target.namespace}/{fa.secret_name} (auth.json) and ConfigMap "
                    f"{target.namespace}/{fa.config_map_name} (authSha256) before the rollout"
                ),
                mutates=True,
                patch={
                    "secret": {"namespace": target.namespace, "name": fa.secret_name, "key": "auth.json"},
                    "configMap": {
                        "namespace": target.namespace,
                        "name": fa.config_map_name,
                        "key": "authSha256",
                    },
                },
            ),
        ]
    for index, dep in enumerate(target.deployments):
        steps.append(
            Step(
                id=f"patch-{dep.name}",
                host=HOST_K8S_API,
                action=(
                    f"server-side patch Deployment {target.namespace}/{dep.name}: image = commit tag, "
                    f"{K3S_ENV_PREFIX}* env and {ANNOTATION_PREFIX}* annotations (forced, retained on delete)"
                ),
                mutates=True,
                patch=deployment_patch(cfg, entry, target, index, commit),
            )
        )
    verify_args: list[str] = ["--namespace", target.namespace]
    for dep in target.deployments:
        verify_args += ["--deployment", dep.name]
    verify_args += [
        "--service",
        target.kubernetes_service,
        "--port",
        str(entry.health.port),
        "--health-path",
        entry.health.path,
        "--commit",
        commit,
        "--timeout",
        str(cfg.k3s.rollout_timeout_seconds),
    ]
    steps.append(
        Step(
            id="verify",
            host=HOST_D601,
            action=(
                "wait for every rollout, then read /health through the Kubernetes API service proxy; "
                "deploy.commit and deploy.requestedCommit must equal the commit (an old healthy "
                "revision is rejected)"
            ),
            script="k3s-verify.sh",
            args=tuple(verify_args),
            mutates=False,
        )
    )
    return steps


def _k3s_target_doc(cfg: StackConfig, target: K3sTarget) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": TargetKind.K3S.value,
        "host": HOST_D601,
        "hostAddress": cfg.hosts.d601.host,
        "namespace": target.namespace,
        "deployments": [f"{target.namespace}/{d.name}" for d in target.deployments],
        "containers": {d.name: d.container for d in target.deployments},
        "kubernetesService": target.kubernetes_service,
        "healthVia": "Kubernetes API service proxy",
        "containerdSocket": cfg.k3s.containerd_socket,
        "containerdNamespace": cfg.k3s.containerd_namespace,
        "envPrefix": K3S_ENV_PREFIX,
        "exposure": "no NodePort, hostPort, LoadBalancer, Ingress or public business port is created",
    }
    if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
        doc["preRollout"] = {
            "from": f"master server {cfg.frontend_auth.config_path} (auth section)",
            "secret": f"{target.namespace}/{cfg.frontend_auth.secret_name}",
            "configMap": f"{target.namespace}/{cfg.frontend_auth.config_map_name}",
        }
    return doc


# --------------------------------------------------------------------------- the document


def _verification(entry: ServiceEntry, target: ComposeTarget | K3sTarget | NoTarget) -> dict[str, Any]:
    health = f"{entry.health.path} (port {entry.health.port})"
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
        if entry.verification == VerificationKind.TODO_NOTE_SYNTHETIC:
            checks += [
                f"GET {entry.health.path} answers ok",
                "synthetic deploy.commit = the running image's revision label; deploy.requestedCommit = "
                f"the container's {entry.compose_env_prefix}COMMIT; both must equal the commit",
            ]
        else:
            checks.append(
                f"GET {entry.health.path}: deploy.commit == commit and deploy.requestedCommit == commit"
            )
        if entry.verification == VerificationKind.BAIDU_AUTH_GATE:
            checks += [
                "before recreate: "
                + ", ".join(entry.required_secret_keys)
                + " present (present/length only)",
                "after recreate: /health auth.configured, clientIdConfigured, clientSecretConfigured, "
                "tokenKeyConfigured and loggedIn all true, else failed/degraded",
            ]
    return {"kind": entry.verification.value, "health": health, "checks": checks, "rejectOldRevision": True}


def _rollback(stack: str, entry: ServiceEntry) -> dict[str, Any]:
    return {
        "strategy": "redeploy-older-commit",
        "how": (
            f"pulumi stack select {stack} && pulumi config set --path 'services.{entry.id}.commit' "
            "<older full sha> && pulumi up"
        ),
        "offlinePlan": (
            f"python -m artifact_cd plan --stack {stack} --service {entry.id} --commit <older full sha>"
        ),
        "note": (
            "the same consumer runs with the older commit; its manifest must still exist in the D601 "
            "registry. Never a legacy maintenance-channel rebuild."
        ),
    }


def _runtime_secrets(cfg: StackConfig, entry: ServiceEntry) -> dict[str, Any] | None:
    if not entry.required_secret_keys:
        return None
    project = cfg.compose.master
    source = project.env_file if project else "<compose.master.envFile>"
    return {
        "secretSource": (
            f"master server controlled env file {source} (providerGateway.upgrade.composeEnvFile)"
        ),
        "requiredSecretKeys": list(entry.required_secret_keys),
        "requiredSecretsPresent": None,
        "missingSecretKeys": None,
        "checkedBy": (
            "deploy step preflight on the master server before recreate; reports present/length only"
        ),
        "recommendedAction": (
            "if the preflight reports missing keys: restore them in the env file, recreate only "
            f"{entry.id}, then verify `microservice health {entry.id}`; values are never printed"
        ),
    }


def _affected(
    cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget | K3sTarget | NoTarget, commit: str | None
) -> tuple[str, ...]:
    tag = commit or "<commit>"
    if isinstance(target, ComposeTarget):
        on_master = target.kind == TargetKind.COMPOSE_MASTER
        where = "master server" if on_master else "D601"
        project = cfg.compose.master if on_master else cfg.compose.d601
        assert project is not None
        return (
            f"{where} Compose project {project.project_name}: service {target.compose_service} "
            f"(container {target.container_name}) only",
            f"{where} images {target.retag_name}, {target.retag_name}:{tag}",
            f"{where} env file {project.env_file}: keys {entry.compose_env_prefix}* only",
        )
    if isinstance(target, K3sTarget):
        out = [f"Deployment {target.namespace}/{d.name}" for d in target.deployments]
        out.append(f"D601 containerd ({cfg.k3s.containerd_namespace}) image {entry.repository}:{tag}")
        if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
            out.append(f"Secret {target.namespace}/{cfg.frontend_auth.secret_name}")
            out.append(f"ConfigMap {target.namespace}/{cfg.frontend_auth.config_map_name}")
        return tuple(out)
    return ()


COMMON_EXCLUDED: tuple[str, ...] = (
    "D601 registry storage and the registry service",
    "source checkouts and builds on every target",
)


def plan_service(
    cfg: StackConfig,
    service_id: str,
    ctx: ApplyContext | None = None,
    commit_override: str | None = None,
) -> ServicePlan:
    """The plan document of one service in this stack. ``service_id`` must be in the catalog."""
    ctx = ctx or ApplyContext()
    entry = catalog.get(service_id)
    if entry is None:
        raise KeyError(service_id)
    env: Env = cfg.env
    commit = commit_override or cfg.commit_of(service_id)
    gate: GateResult = evaluate(entry, env, commit, cfg.approvals, ctx)
    target = entry.target(env) or NoTarget(gate_reason=gate.reason)

    steps: list[Step] = []
    target_doc: dict[str, Any]
    deploy_env: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if isinstance(target, ComposeTarget):
        target_doc = _compose_target_doc(cfg, entry, target, commit)
        if commit is not None:
            steps = _compose_steps(cfg, entry, target, commit)
            deploy_env = {
                f"{entry.compose_env_prefix}COMMIT": commit,
                f"{entry.compose_env_prefix}IMAGE": image_ref(cfg, entry, commit),
                f"{entry.compose_env_prefix}DIGEST": DIGEST,
            }
    elif isinstance(target, K3sTarget):
        target_doc = _k3s_target_doc(cfg, target)
        if commit is not None:
            steps = _k3s_steps(cfg, entry, target, commit)
            deploy_env = _k3s_env(cfg, entry, commit)
            annotations = _annotations(cfg, entry, commit)
    else:
        target_doc = {"kind": TargetKind.NONE.value, "reason": target.gate_reason}

    if gate.decision == Decision.UNSUPPORTED:
        steps, deploy_env, annotations = [], {}, {}

    return ServicePlan(
        service=entry.id,
        env=env,
        commit=commit,
        decision=gate.decision,
        reason=gate.reason,
        fix=gate.fix,
        target=target_doc,
        registry=registry_ref(cfg, entry, commit)
        if commit and gate.decision != Decision.UNSUPPORTED
        else None,
        required_labels=required_labels(entry, commit),
        source={
            "repo": entry.source_repo,
            "commit": commit,
            "dockerfile": entry.dockerfile,
            "buildContext": entry.build_context,
            "producer": entry.producer,
            "pushedGitRequired": True,
            "dirtyWorktreeAllowed": False,
        },
        steps=tuple(steps),
        verification=_verification(entry, target),
        rollback=_rollback(env, entry),
        requires_supervisor_approval=gate.requires_supervisor_approval,
        approval=gate.approval,
        affected_runtime=_affected(cfg, entry, target, commit)
        if gate.decision != Decision.UNSUPPORTED
        else (),
        excluded_targets=tuple(target.excluded_targets) + COMMON_EXCLUDED,
        deploy_env=deploy_env,
        annotations=annotations,
        self_bootstrap_guard=gate.self_bootstrap_guard,
        runtime_secrets=_runtime_secrets(cfg, entry),
        assumptions=entry.assumptions,
    )


def plan_services(cfg: StackConfig, ctx: ApplyContext | None = None) -> list[ServicePlan]:
    """Every catalog row of the stack's env: configured services and structured refusals."""
    return [plan_service(cfg, entry.id, ctx) for entry in catalog.services_for(cfg.env)]


# --------------------------------------------------------------------------- registry host


def registry_probe_args(cfg: StackConfig) -> tuple[str, ...]:
    reg = cfg.registry
    files = {f.name: f for f in render.render_all(reg)}
    return (
        "--unit",
        reg.unit_name,
        "--unit-path",
        files["unit"].path,
        "--unit-sha256",
        files["unit"].sha256,
        "--project",
        reg.compose_project,
        "--container",
        reg.container_name,
        "--image",
        reg.image,
        "--endpoint",
        reg.endpoint,
        "--storage",
        reg.storage_path,
        "--config-path",
        files["config"].path,
        "--config-sha256",
        files["config"].sha256,
        "--compose-path",
        files["compose"].path,
        "--compose-sha256",
        files["compose"].sha256,
        "--spec-sha256",
        render.spec_sha256(reg),
    )


class RegistryHostPlan(Doc):
    managed_by_this_stack: bool
    host: str
    host_address: str
    boundary: dict[str, Any]
    dependencies: tuple[str, ...]
    must_not_depend_on: tuple[str, ...]
    paths: dict[str, str]
    files: dict[str, dict[str, str]]
    storage_policy: str
    cd_flow: tuple[str, ...] = CD_FLOW
    steps: tuple[Step, ...]


def plan_registry_host(cfg: StackConfig) -> RegistryHostPlan:
    reg = cfg.registry
    files = render.render_all(reg)
    steps: list[Step] = [
        Step(
            id="registry-dirs",
            host=HOST_D601,
            action=(
                "create the managed directories and the storage directory "
                "(existing content is never touched)"
            ),
            script="registry-install.sh",
            args=(
                "dirs",
                "--dir",
                posixpath.dirname(reg.config_path),
                "--dir",
                posixpath.dirname(reg.compose_path),
                "--storage",
                reg.storage_path,
            ),
            mutates=True,
        )
    ]
    for f in files:
        steps.append(
            Step(
                id=f"registry-{f.name}",
                host=HOST_D601,
                action=f"write {f.path} only if its SHA-256 differs from {f.sha256}",
                script="registry-install.sh",
                args=(
                    "write",
                    "--path",
                    f.path,
                    "--mode",
                    f.mode,
                    "--sha256",
                    f.sha256,
                    "--content-b64",
                    base64.b64encode(f.content.encode("utf-8")).decode("ascii"),
                ),
                mutates=True,
            )
        )
    steps += [
        Step(
            id="registry-activate",
            host=HOST_D601,
            action=(
                f"daemon-reload only if {reg.unit_name} changed on disk; enable --now; restart only if "
                "the running container's spec label differs from the rendered spec"
            ),
            script="registry-install.sh",
            args=(
                "activate",
                "--unit",
                reg.unit_name,
                "--container",
                reg.container_name,
                "--spec-sha256",
                render.spec_sha256(reg),
            ),
            mutates=True,
        ),
        Step(
            id="registry-acceptance",
            host=HOST_D601,
            action="run the same read-only probe as health; the install fails unless the decision is healthy",
            script="registry-probe.sh",
            args=registry_probe_args(cfg),
            mutates=False,
        ),
    ]
    return RegistryHostPlan(
        managed_by_this_stack=reg.manage,
        host=HOST_D601,
        host_address=cfg.hosts.d601.host,
        boundary={
            "runsOn": "D601 host OS: systemd unit running a Docker Compose project (not a k3s workload)",
            "exposure": f"loopback only: {render.host_binding(reg)} "
            f"(container listens on :{render.CONTAINER_PORT} "
            "inside its own network namespace)",
            "never": [
                "NodePort",
                "hostPort",
                "LoadBalancer",
                "Ingress",
                "k3s Service",
                "public port",
                "public reverse proxy",
            ],
            "role": (
                "host-managed artifact cache for commit-pinned images; "
                "not a build orchestrator, not a deploy control plane"
            ),
        },
        dependencies=(
            "D601 Docker Engine",
            "Docker Compose (plugin v2, or docker-compose v1)",
            "systemd",
            f"registry image {reg.image}",
            f"local directory {reg.storage_path}",
            "SSH to D601 only for read-only status/health",
        ),
        must_not_depend_on=(
            "k3s control plane or any k3s namespace",
            "a third-party image registry as the artifact source of truth",
            "any build on a target (cargo build, docker build, docker compose build)",
            "a public registry port or public reverse proxy",
            "k3s Service, NodePort, Ingress or any long-lived registry proxy",
        ),
        paths={
            "unit": reg.unit_name,
            "unitPath": render.unit_path(reg),
            "composeProject": reg.compose_project,
            "container": reg.container_name,
            "image": reg.image,
            "config": reg.config_path,
            "compose": reg.compose_path,
            "storage": reg.storage_path,
            "endpoint": f"http://{reg.endpoint}",
        },
        files={f.name: {"path": f.path, "sha256": f.sha256} for f in files},
        storage_policy=(
            "the registry storage is never deleted: not by install, reinstall, image upgrade, config "
            "change, replace or pulumi destroy"
        ),
        steps=tuple(steps),
    )


def plan_stack(cfg: StackConfig, ctx: ApplyContext | None = None) -> dict[str, Any]:
    services = plan_services(cfg, ctx)
    summary: dict[str, list[str]] = {}
    for p in services:
        summary.setdefault(p.decision.value, []).append(p.service)
    return {
        "stack": cfg.env,
        "env": cfg.env,
        "registryHost": plan_registry_host(cfg).to_json(),
        "services": [p.to_json() for p in services],
        "summary": summary,
    }
