"""K3sServiceConsumer: a commit-pinned image into native k3s Deployments on D601 (R11, R13, R17).

Steps (from the plan): ``manifest-check`` (D601) → ``import`` (D601: pull by digest, import into
the k3s containerd, namespace ``k8s.io``) → [``auth-read`` (master, secret stdout) → ``auth-sync``:
a ``SecretPatch`` (auth.json) and a ``ConfigMapPatch`` (authSha256)] → one ``DeploymentPatch`` per
Deployment (image = commit tag, ``UNIDESK_DEPLOY_*`` env, ``unidesk.io/deploy-*`` annotations;
forced server-side apply; retained on delete) → ``verify`` (D601: rollout + health through the
Kubernetes API service proxy; an old healthy revision is rejected).

Only patches of existing objects are registered: never a Service, NodePort, hostPort or Ingress.

How the live view shapes it (``components.reconcile``): in a repair, ``import`` and ``verify``
carry the drift fingerprint in their live slot (replaced: they run again) and each
``DeploymentPatch`` gets the pod-template annotation ``unidesk.io/deploy-repair: <fingerprint>``
(an update: a forced server-side apply of the whole patch, which takes a hand-edited image or env
back, and a new pod template, which restarts the pods — the k3s counterpart of a Compose
recreate; docs/engine-semantics.md K4, K5, K7). In sync, that annotation keeps its stored value
(``ignore_changes``). The patch document of the plan stays as it is; the annotation is added here.
The auth read's live slot is the master's auth hash: a changed auth section replaces the read, and
the Secret/ConfigMap patches update with the new value. Held, every input is ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from artifact_cd import plan as core_plan
from artifact_cd.contract import (
    ANNOTATION_PREFIX,
    K3sImportArgs,
    K3sVerifyArgs,
    ManifestCheckArgs,
    ReadAuthArgs,
)
from artifact_cd.plan import AuthSyncPatch, DeploymentPatch, K3sTargetDoc, ServicePlan, Step

from .reconcile import Posture, ServiceAction
from .steps import (
    PATCH_INPUTS,
    ConsumerArgs,
    LiveValues,
    ServiceConsumer,
    contains_placeholder,
    ok_result,
    planned_commit,
    remote_step,
    require_scripts,
    resolve_live,
)

TYPE = "unidesk:cd:K3sServiceConsumer"
PATCH_FORCE = DeploymentPatch.FORCE
REPAIR_ANNOTATION = f"{ANNOTATION_PREFIX}repair"
# the property path of the repair annotation in a DeploymentPatch's inputs (ignore_changes)
REPAIR_ANNOTATION_PATH = f'spec.template.metadata.annotations["{REPAIR_ANNOTATION}"]'


@dataclass(frozen=True, kw_only=True)
class K3sServiceConsumerArgs(ConsumerArgs):
    """What every consumer is given (``ConsumerArgs``) and the Kubernetes provider of the patches."""

    provider: k8s.Provider


@dataclass(frozen=True)
class AuthSync:
    """The frontend dev auth sync: read the auth section on the master server, then patch."""

    read: Step  # read-auth.sh (secret stdout)
    sync: Step  # the Secret and ConfigMap patches
    patch: AuthSyncPatch


@dataclass(frozen=True)
class K3sSteps:
    """The steps of a k3s consumer plan, typed."""

    commit: str
    target: K3sTargetDoc
    check: Step  # manifest-check.sh
    imported: Step  # k3s-import.sh
    auth: AuthSync | None
    patches: tuple[tuple[Step, DeploymentPatch], ...]  # one per Deployment
    verify: Step  # k3s-verify.sh


def canonical_auth(auth: Any) -> str:
    """auth.json as written into the Secret: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(auth, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _auth_from(stdout: str | None, what: str) -> str:
    result = ok_result(stdout, what)
    if not isinstance(result.get("auth"), dict):
        raise ValueError(f"{what}: the result has no auth object")
    return canonical_auth(result["auth"])


def _not_k3s(plan: ServicePlan) -> ValueError:
    return ValueError(
        f"{plan.service}: not a k3s consumer plan (steps {[s.id for s in plan.steps]}, "
        f"kind {plan.target.kind.value!r})"
    )


def check_plan(plan: ServicePlan) -> K3sSteps:
    """The plan is one this component can translate (else ValueError); returns its typed steps."""
    commit = planned_commit(plan)
    match plan.target, plan.steps:
        case (
            K3sTargetDoc() as target,
            (
                Step(call=ManifestCheckArgs()) as check,
                Step(call=K3sImportArgs()) as imported,
                *middle,
                Step(call=K3sVerifyArgs()) as verify,
            ),
        ):
            pass
        case _:
            raise _not_k3s(plan)
    auth: AuthSync | None = None
    match middle:
        case [
            Step(call=ReadAuthArgs()) as read,
            Step(host=core_plan.HOST_K8S_API, k8s=AuthSyncPatch() as auth_patch) as sync,
            *rest,
        ]:
            auth = AuthSync(read=read, sync=sync, patch=auth_patch)
        case rest:
            pass
    patches: list[tuple[Step, DeploymentPatch]] = []
    for step in rest:
        match step:
            case Step(host=core_plan.HOST_K8S_API, k8s=DeploymentPatch() as body):
                patches.append((step, body))
            case _:
                raise ValueError(f"{plan.service}: step {step.id} is not a Deployment patch")
    if not patches:
        raise _not_k3s(plan)
    steps = K3sSteps(
        commit=commit,
        target=target,
        check=check,
        imported=imported,
        auth=auth,
        patches=tuple(patches),
        verify=verify,
    )
    require_scripts(plan.steps)
    return steps


class K3sServiceConsumer(ServiceConsumer):
    def __init__(
        self, name: str, args: K3sServiceConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        plan, conns, action = args.plan, args.connections, args.live
        steps = check_plan(plan)
        commit, hold = steps.commit, action.hold
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, retain_on_delete=True)
        repairs = action.slot(repairs=True)

        check, live = self._manifest_check(name, args, steps.check, commit)
        imported = remote_step(
            self, name, steps.imported, conns, commit, slot=repairs, hold=hold, live=live, depends_on=[check]
        )
        before_patches: list[pulumi.Resource] = [imported]

        if steps.auth is not None:
            read = remote_step(
                self, name, steps.auth.read, conns, commit, slot=action.auth_slot(), hold=hold,
                depends_on=[imported],
            )  # fmt: skip
            before_patches = list(self._auth_sync(name, steps.auth, read, plan, k8s_opts, hold=hold))

        patches: list[pulumi.Resource] = [
            self._deployment_patch(
                name, step, body, live=live, k8s_opts=k8s_opts, depends_on=before_patches, action=action
            )
            for step, body in steps.patches
        ]

        verify = remote_step(
            self, name, steps.verify, conns, commit, slot=repairs, hold=hold, depends_on=patches
        )

        imported_result = imported.stdout.apply(lambda out: ok_result(out, f"{plan.service} import"))
        self._register_consumer(
            args, commit, steps.target, (verify, "verify"),
            imported=imported_result, deployments=list(steps.target.deployments),
        )  # fmt: skip

    def _deployment_patch(
        self,
        name: str,
        step: Step,
        patch: DeploymentPatch,
        *,
        live: LiveValues,
        k8s_opts: pulumi.ResourceOptions,
        depends_on: list[pulumi.Resource],
        action: ServiceAction,
    ) -> k8s.apps.v1.DeploymentPatch:
        body = resolve_live(patch.to_json(), live)
        if contains_placeholder(body):
            raise ValueError(f"{step.id}: a live placeholder is left in the patch")
        ignore: list[str] = []
        if action.hold:
            ignore = list(PATCH_INPUTS)
        elif action.posture == Posture.REPAIR and action.repair:
            template = body["spec"]["template"]["metadata"]
            template["annotations"] = {**template["annotations"], REPAIR_ANNOTATION: action.repair}
        else:
            ignore = [REPAIR_ANNOTATION_PATH]
        return k8s.apps.v1.DeploymentPatch(
            f"{name}-{step.id}",
            metadata=cast(Any, body["metadata"]),
            spec=cast(Any, body["spec"]),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts, pulumi.ResourceOptions(depends_on=depends_on, ignore_changes=ignore or None)
            ),
        )

    def _auth_sync(
        self,
        name: str,
        auth: AuthSync,
        read: pulumi.Resource,
        plan: ServicePlan,
        k8s_opts: pulumi.ResourceOptions,
        *,
        hold: bool,
    ) -> tuple[pulumi.Resource, pulumi.Resource]:
        secret, config_map = auth.patch.secret, auth.patch.config_map
        stdout = cast(Any, read).stdout
        # The engine also marks stdout secret (additional_secret_outputs); be explicit anyway.
        auth_json = pulumi.Output.secret(stdout).apply(
            lambda out: _auth_from(out, f"{plan.service} auth-read")
        )
        auth_sha = auth_json.apply(lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest())
        after_read = pulumi.ResourceOptions.merge(
            k8s_opts,
            pulumi.ResourceOptions(depends_on=[read], ignore_changes=list(PATCH_INPUTS) if hold else None),
        )
        secret_patch = k8s.core.v1.SecretPatch(
            f"{name}-{auth.sync.id}-secret",
            metadata={"name": secret.name, "namespace": secret.namespace, "annotations": dict(PATCH_FORCE)},
            string_data={secret.key: auth_json},
            opts=after_read,
        )
        map_patch = k8s.core.v1.ConfigMapPatch(
            f"{name}-{auth.sync.id}-configmap",
            metadata={
                "name": config_map.name,
                "namespace": config_map.namespace,
                "annotations": dict(PATCH_FORCE),
            },
            data={config_map.key: auth_sha},
            opts=after_read,
        )
        return secret_patch, map_patch
