"""K3sServiceConsumer: a commit-pinned image into native k3s Deployments on D601 (R11, R13, R17).

Steps (from the plan): ``manifest-check`` (D601) → ``import`` (D601: pull by digest, import into
the k3s containerd, namespace ``k8s.io``) → [``auth-read`` (master, secret stdout) → ``auth-sync``:
a ``SecretPatch`` (auth.json) and a ``ConfigMapPatch`` (authSha256)] → one ``DeploymentPatch`` per
Deployment (image = commit tag, ``UNIDESK_DEPLOY_*`` env, ``unidesk.io/deploy-*`` annotations;
forced server-side apply; retained on delete) → ``verify`` (D601: rollout + health through the
Kubernetes API service proxy; an old healthy revision is rejected).

Only patches of existing objects are registered: never a Service, NodePort, hostPort or Ingress.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from artifact_cd import plan as core_plan
from artifact_cd.catalog import TargetKind
from artifact_cd.gates import Decision
from artifact_cd.plan import ServicePlan, Step

from .steps import (
    Connections,
    LiveValues,
    contains_placeholder,
    manifest_facts,
    ok_result,
    remote_step,
    replace_placeholder,
    step_script,
)

TYPE = "unidesk:cd:K3sServiceConsumer"
PATCH_FORCE = {"pulumi.com/patchForce": "true"}


@dataclass(frozen=True)
class K3sServiceConsumerArgs:
    plan: ServicePlan
    connections: Connections
    provider: k8s.Provider
    # what the manifest check waits for (see ComposeServiceConsumerArgs.after)
    after: Sequence[pulumi.Input[pulumi.Resource]] = ()


def canonical_auth(auth: Any) -> str:
    """auth.json as written into the Secret: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(auth, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _auth_from(stdout: str | None, what: str) -> str:
    result = ok_result(stdout, what)
    if not isinstance(result.get("auth"), dict):
        raise ValueError(f"{what}: the result has no auth object")
    return canonical_auth(result["auth"])


def check_plan(plan: ServicePlan) -> None:
    """The plan is one this component can translate (else ValueError)."""
    if plan.decision != Decision.PLANNED or plan.commit is None:
        raise ValueError(
            f"{plan.service}: decision {plan.decision.value}; a consumer is only built for planned services"
        )
    ids = [s.id for s in plan.steps]
    patches = [s for s in plan.steps if s.id.startswith("patch-")]
    head = ["manifest-check", "import"]
    auth = ["auth-read", "auth-sync"] if "auth-read" in ids else []
    expected = head + auth + [s.id for s in patches] + ["verify"]
    if plan.target.get("kind") != TargetKind.K3S.value or ids != expected or not patches:
        raise ValueError(
            f"{plan.service}: not a k3s consumer plan (steps {ids}, kind {plan.target.get('kind')!r})"
        )
    for step in patches:
        if step.host != core_plan.HOST_K8S_API or not isinstance(step.patch, dict):
            raise ValueError(f"{plan.service}: step {step.id} has no Deployment patch")
        annotations = step.patch.get("metadata", {}).get("annotations", {})
        if annotations.get("pulumi.com/patchForce") != "true":
            raise ValueError(f"{plan.service}: step {step.id} is not a forced patch")
    for step in plan.steps:
        if step.script is not None:
            step_script(step)


class K3sServiceConsumer(pulumi.ComponentResource):
    digest: pulumi.Output[str]
    image_id: pulumi.Output[str]
    verdict: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: K3sServiceConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        plan = args.plan
        check_plan(plan)
        assert plan.commit is not None
        commit = plan.commit
        conns = args.connections
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, retain_on_delete=True)

        steps = plan.step_by_id
        check = remote_step(self, name, steps["manifest-check"], conns, commit, depends_on=args.after)
        facts = check.stdout.apply(lambda out: manifest_facts(out, f"{plan.service} manifest-check"))
        live = LiveValues(digest=facts.apply(lambda f: f.digest), image_id=facts.apply(lambda f: f.image_id))
        imported = remote_step(self, name, steps["import"], conns, commit, live=live, depends_on=[check])
        before_patches: list[pulumi.Resource] = [imported]

        if "auth-read" in steps:
            read = remote_step(self, name, steps["auth-read"], conns, commit, depends_on=[imported])
            before_patches = list(self._auth_sync(name, steps["auth-sync"], read, plan, k8s_opts))

        patches: list[pulumi.Resource] = []
        for step in plan.steps:
            if step.id.startswith("patch-"):
                patches.append(self._deployment_patch(name, step, live, k8s_opts, before_patches))

        verify = remote_step(self, name, steps["verify"], conns, commit, depends_on=patches)

        self.digest = live.digest
        self.image_id = live.image_id
        self.verdict = verify.stdout.apply(lambda out: ok_result(out, f"{plan.service} verify"))
        self.register_outputs(
            {
                "service": plan.service,
                "commit": commit,
                "targetKind": TargetKind.K3S.value,
                "digest": self.digest,
                "imageId": self.image_id,
                "imported": imported.stdout.apply(lambda out: ok_result(out, f"{plan.service} import")),
                "deployments": list(plan.target.get("deployments", [])),
                "verdict": self.verdict,
            }
        )

    def _deployment_patch(
        self,
        name: str,
        step: Step,
        live: LiveValues,
        k8s_opts: pulumi.ResourceOptions,
        depends_on: list[pulumi.Resource],
    ) -> k8s.apps.v1.DeploymentPatch:
        assert step.patch is not None
        body = replace_placeholder(step.patch, core_plan.DIGEST, live.digest)
        body = replace_placeholder(body, core_plan.IMAGE_ID, live.image_id)
        if contains_placeholder(body):
            raise ValueError(f"{step.id}: a live placeholder is left in the patch")
        return k8s.apps.v1.DeploymentPatch(
            f"{name}-{step.id}",
            metadata=cast(Any, body["metadata"]),
            spec=cast(Any, body["spec"]),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=depends_on)),
        )

    def _auth_sync(
        self,
        name: str,
        step: Step,
        read: pulumi.Resource,
        plan: ServicePlan,
        k8s_opts: pulumi.ResourceOptions,
    ) -> tuple[pulumi.Resource, pulumi.Resource]:
        spec = step.patch or {}
        secret, config_map = spec.get("secret"), spec.get("configMap")
        if not isinstance(secret, dict) or not isinstance(config_map, dict):
            raise ValueError(f"{plan.service}: auth-sync has no secret/configMap patch")
        stdout = cast(Any, read).stdout
        # The engine also marks stdout secret (additional_secret_outputs); be explicit anyway.
        auth_json = pulumi.Output.secret(stdout).apply(
            lambda out: _auth_from(out, f"{plan.service} auth-read")
        )
        auth_sha = auth_json.apply(lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest())
        after_read = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[read]))
        secret_patch = k8s.core.v1.SecretPatch(
            f"{name}-{step.id}-secret",
            metadata={
                "name": secret["name"],
                "namespace": secret["namespace"],
                "annotations": dict(PATCH_FORCE),
            },
            string_data={str(secret["key"]): auth_json},
            opts=after_read,
        )
        map_patch = k8s.core.v1.ConfigMapPatch(
            f"{name}-{step.id}-configmap",
            metadata={
                "name": config_map["name"],
                "namespace": config_map["namespace"],
                "annotations": dict(PATCH_FORCE),
            },
            data={str(config_map["key"]): auth_sha},
            opts=after_read,
        )
        return secret_patch, map_patch
