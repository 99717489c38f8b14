"""The executable steps of a plan, per target kind: pure values, no Pulumi, no I/O.

- compose-master: ``manifest-check`` (d601) → ``transfer`` (master) → ``deploy`` (master);
- compose-d601:   ``manifest-check`` (d601) → ``pull`` (d601) → ``deploy`` (d601);
- k3s:            ``manifest-check`` → ``import`` → [``auth-read`` → ``auth-sync``] →
                  ``patch-<deployment>`` (one per Deployment) → ``verify``;
- registry host:  ``registry-dirs`` → ``registry-{config,compose,unit}`` → ``registry-activate`` →
                  ``registry-acceptance``.

Every script step holds the contract's args model; the live values the manifest check reads
(:data:`artifact_cd.contract.Live`) stay placeholders until the components or the rig resolve them.
"""

from __future__ import annotations

import base64
import posixpath
from typing import Literal, TypedDict

from .. import render
from ..catalog import ComposeTarget, K3sTarget, PreRollout, ServiceEntry, TargetKind
from ..config import StackConfig
from ..contract import (
    ANNOTATION_PREFIX,
    K3S_ENV_PREFIX,
    ComposeDeployArgs,
    K3sImportArgs,
    K3sVerifyArgs,
    Live,
    ManifestCheckArgs,
    MoveImageArgs,
    ReadAuthArgs,
    RegistryActivateArgs,
    RegistryDirsArgs,
    RegistryProbeArgs,
    RegistryWriteArgs,
    deploy_annotations,
    deploy_stamp,
)
from .site import compose_site, image_ref
from .step import HOST_D601, HOST_K8S_API, HOST_MASTER, AuthSyncPatch, DeploymentPatch, ObjectKey, Step

# --------------------------------------------------------------------------- the deploy stamp


def compose_deploy_env(entry: ServiceEntry, image: str, commit: str) -> dict[str, str]:
    """``UNIDESK_<SERVICE>_DEPLOY_COMMIT|IMAGE|DIGEST`` (the digest a live placeholder)."""
    return deploy_stamp(entry.compose_env_prefix, commit, image, Live.DIGEST.value)


def k3s_deploy_env(entry: ServiceEntry, image: str, commit: str) -> dict[str, str]:
    """``UNIDESK_DEPLOY_COMMIT|IMAGE|DIGEST|SERVICE`` (the digest a live placeholder)."""
    return {
        **deploy_stamp(K3S_ENV_PREFIX, commit, image, Live.DIGEST.value),
        f"{K3S_ENV_PREFIX}SERVICE": entry.id,
    }


def k3s_annotations(entry: ServiceEntry, image: str, commit: str) -> dict[str, str]:
    return deploy_annotations(entry.id, commit, image, Live.DIGEST.value)


# --------------------------------------------------------------------------- shared steps


def manifest_step(cfg: StackConfig, entry: ServiceEntry, commit: str) -> Step:
    return Step(
        id="manifest-check",
        host=HOST_D601,
        action=(
            f"HEAD {cfg.registry.endpoint}/v2/{entry.repository}/manifests/{commit} with the four "
            "manifest media types; print the digest; nothing on any target is touched before it passes"
        ),
        call=ManifestCheckArgs(registry=cfg.registry.endpoint, repository=entry.repository, tag=commit),
        mutates=False,
    )


# --------------------------------------------------------------------------- Compose consumers


def _move_step(cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget, commit: str) -> Step:
    endpoint, repository = cfg.registry.endpoint, entry.repository
    if target.kind == TargetKind.COMPOSE_MASTER:
        mode = cfg.transfer.mode
        how = (
            "pull through an SSH tunnel to D601's loopback registry; only missing layers travel"
            if mode == "tunnel"
            else "docker save on D601 streamed into docker load"
        )
        return Step(
            id="transfer",
            host=HOST_MASTER,
            action=(
                f"move the image by digest from D601 to the master server over SSH ({mode}: {how}); "
                "verify the loaded image against the manifest digest"
            ),
            call=MoveImageArgs(
                mode=mode,
                registry=endpoint,
                repository=repository,
                tag=commit,
                d601=cfg.transfer.d601_ssh_target,
                d601_port=cfg.transfer.d601_ssh_port,
                d601_host_key=cfg.hosts.d601.host_key,
            ),
            mutates=True,
        )
    return Step(
        id="pull",
        host=HOST_D601,
        action=(
            "pull the image by digest from the local registry on D601; verify it against the manifest digest"
        ),
        call=MoveImageArgs(mode="local", registry=endpoint, repository=repository, tag=commit),
        mutates=True,
    )


def compose_steps(cfg: StackConfig, entry: ServiceEntry, target: ComposeTarget, commit: str) -> list[Step]:
    """manifest-check → transfer (compose-master) or pull (compose-d601) → deploy."""
    site = compose_site(cfg, target)
    project = site.configured_project
    actions = [f"lock the service, container {target.container_name} and retag {target.retag_name}"]
    if entry.required_secret_keys:
        actions.append("check the required secret keys are present in the env file (present/length only)")
    actions += [
        "prove the Compose project loads with the new values and knows the service (nothing changed yet)",
        f"stage {entry.compose_env_prefix}* for {project.env_file} beside it (other keys kept)",
        f"detached from the session: retag to {target.retag_name} and {target.retag_name}:{commit}, "
        f"rename the staged env file into place, docker compose up -d --no-build --no-deps --force-recreate "
        f"{target.compose_service} (a failure before the recreate restores the tags and env file)",
        "verify the container image, its revision label and the health payload's commits",
    ]
    if project.auto_restore:
        actions.append("on a failed verification put the previous commit back and verify it (autoRestore)")
    deploy = Step(
        id="deploy",
        host=site.host,
        action="; ".join(actions),
        call=ComposeDeployArgs(
            service_id=entry.id,
            compose_service=target.compose_service,
            container=target.container_name,
            commit=commit,
            image=image_ref(cfg, entry, commit),
            retag=target.retag_name,
            project_dir=project.project_dir,
            project_name=project.project_name,
            env_file=project.env_file,
            env_prefix=entry.compose_env_prefix,
            verify=entry.verification,
            health_path=entry.health.path,
            health_port=entry.health.port,
            health_timeout=project.health_timeout_seconds,
            compose_command=project.command,
            required_secrets=entry.required_secret_keys,
            auto_restore="yes" if project.auto_restore else None,
            audit_log=site.address.audit_log,
            stack=cfg.env,
            target="master-compose" if target.kind == TargetKind.COMPOSE_MASTER else "d601-compose",
            compose_files=target.compose_files,
        ),
        mutates=True,
    )
    return [manifest_step(cfg, entry, commit), _move_step(cfg, entry, target, commit), deploy]


# --------------------------------------------------------------------------- k3s consumers


def deployment_patch(
    cfg: StackConfig, entry: ServiceEntry, target: K3sTarget, index: int, commit: str
) -> DeploymentPatch:
    """The server-side-apply body of one DeploymentPatch (image = commit tag, env, annotations)."""
    dep = target.deployments[index]
    image = image_ref(cfg, entry, commit)
    return DeploymentPatch(
        namespace=target.namespace,
        name=dep.name,
        container=dep.container,
        image=image,
        env=k3s_deploy_env(entry, image, commit),
        annotations=k3s_annotations(entry, image, commit),
    )


def _auth_steps(cfg: StackConfig, target: K3sTarget) -> list[Step]:
    fa = cfg.frontend_auth
    return [
        Step(
            id="auth-read",
            host=HOST_MASTER,
            action=f"read the auth section of {fa.config_path} on the master server (output kept secret)",
            call=ReadAuthArgs(config=fa.config_path),
            mutates=False,
        ),
        Step(
            id="auth-sync",
            host=HOST_K8S_API,
            action=(
                f"patch Secret {target.namespace}/{fa.secret_name} (auth.json) and ConfigMap "
                f"{target.namespace}/{fa.config_map_name} (authSha256) before the rollout"
            ),
            k8s=AuthSyncPatch(
                secret=ObjectKey(namespace=target.namespace, name=fa.secret_name, key="auth.json"),
                config_map=ObjectKey(namespace=target.namespace, name=fa.config_map_name, key="authSha256"),
            ),
            mutates=True,
        ),
    ]


def k3s_steps(cfg: StackConfig, entry: ServiceEntry, target: K3sTarget, commit: str) -> list[Step]:
    """manifest-check → import → [auth-read → auth-sync] → patch-<deployment>... → verify."""
    steps = [
        manifest_step(cfg, entry, commit),
        Step(
            id="import",
            host=HOST_D601,
            action=(
                f"read-only first: every Deployment to patch exists in {target.namespace} with its "
                "container (else nothing is imported); then pull the commit image on D601 and import "
                f"it into native k3s containerd ({cfg.k3s.containerd_socket}, namespace "
                f"{cfg.k3s.containerd_namespace}); verify it is listed with the commit tag and the "
                "manifest digest"
            ),
            call=K3sImportArgs(
                socket=cfg.k3s.containerd_socket,
                namespace=cfg.k3s.containerd_namespace,
                registry=cfg.registry.endpoint,
                repository=entry.repository,
                tag=commit,
                service_id=entry.id,
                elevate=cfg.hosts.d601.elevate,
                audit_log=cfg.hosts.d601.audit_log,
                stack=cfg.env,
                deployment_namespace=target.namespace,
                deployments=tuple(f"{d.name}:{d.container}" for d in target.deployments),
            ),
            mutates=True,
        ),
    ]
    if target.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC:
        steps += _auth_steps(cfg, target)
    for index, dep in enumerate(target.deployments):
        steps.append(
            Step(
                id=f"patch-{dep.name}",
                host=HOST_K8S_API,
                action=(
                    f"server-side patch Deployment {target.namespace}/{dep.name}: image = commit tag, "
                    f"{K3S_ENV_PREFIX}* env and {ANNOTATION_PREFIX}* annotations (forced, retained on delete)"
                ),
                k8s=deployment_patch(cfg, entry, target, index, commit),
                mutates=True,
            )
        )
    steps.append(
        Step(
            id="verify",
            host=HOST_D601,
            action=(
                "wait for every rollout, then read /health through the Kubernetes API service proxy; "
                "deploy.commit and deploy.requestedCommit must equal the commit (an old healthy "
                "revision is rejected)"
            ),
            call=K3sVerifyArgs(
                namespace=target.namespace,
                deployments=tuple(d.name for d in target.deployments),
                service=target.kubernetes_service,
                port=entry.health.port,
                health_path=entry.health.path,
                commit=commit,
                timeout=cfg.k3s.rollout_timeout_seconds,
                service_id=entry.id,
                elevate=cfg.hosts.d601.elevate,
                audit_log=cfg.hosts.d601.audit_log,
                stack=cfg.env,
            ),
            mutates=False,
        )
    )
    return steps


# --------------------------------------------------------------------------- registry host


def registry_probe_call(cfg: StackConfig) -> RegistryProbeArgs:
    """The read-only probe behind status, health and the install's acceptance."""
    reg = cfg.registry
    files = {f.name: f for f in render.render_all(reg)}
    return RegistryProbeArgs(
        unit=reg.unit_name,
        unit_path=files["unit"].path,
        unit_sha256=files["unit"].sha256,
        project=reg.compose_project,
        container=reg.container_name,
        image=reg.image,
        endpoint=reg.endpoint,
        storage=reg.storage_path,
        config_path=files["config"].path,
        config_sha256=files["config"].sha256,
        compose_path=files["compose"].path,
        compose_sha256=files["compose"].sha256,
        spec_sha256=render.spec_sha256(reg),
    )


def registry_probe_args(cfg: StackConfig) -> tuple[str, ...]:
    return registry_probe_call(cfg).to_argv()


class _RegistryHostArgs(TypedDict):
    elevate: Literal["sudo", "none"]
    audit_log: str
    stack: str


def _registry_host_args(cfg: StackConfig) -> _RegistryHostArgs:
    """The install steps' host arguments: how root-only commands run, the audit log, the stack."""
    d601 = cfg.hosts.d601
    return {"elevate": d601.elevate, "audit_log": d601.audit_log, "stack": cfg.env}


def registry_host_steps(cfg: StackConfig) -> list[Step]:
    """dirs → one write per rendered file → activate → acceptance (the probe)."""
    reg = cfg.registry
    steps = [
        Step(
            id="registry-dirs",
            host=HOST_D601,
            action=(
                "create the managed directories and the storage directory (existing content is never touched)"
            ),
            call=RegistryDirsArgs(
                dirs=(posixpath.dirname(reg.config_path), posixpath.dirname(reg.compose_path)),
                storage=reg.storage_path,
                **_registry_host_args(cfg),
            ),
            mutates=True,
        )
    ]
    for f in render.render_all(reg):
        steps.append(
            Step(
                id=f"registry-{f.name}",
                host=HOST_D601,
                action=f"write {f.path} only if its SHA-256 differs from {f.sha256}",
                call=RegistryWriteArgs(
                    path=f.path,
                    mode=f.mode,
                    sha256=f.sha256,
                    content_b64=base64.b64encode(f.content.encode("utf-8")).decode("ascii"),
                    **_registry_host_args(cfg),
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
            call=RegistryActivateArgs(
                unit=reg.unit_name,
                container=reg.container_name,
                spec_sha256=render.spec_sha256(reg),
                **_registry_host_args(cfg),
            ),
            mutates=True,
        ),
        Step(
            id="registry-acceptance",
            host=HOST_D601,
            action="run the same read-only probe as health; the install fails unless the decision is healthy",
            call=registry_probe_call(cfg),
            mutates=False,
        ),
    ]
    return steps
