"""One plan step, typed: a script call (the contract's args model) or a Kubernetes patch payload.

A step's JSON is what the plan document prints (``id``, ``host``, ``action``, ``script``, ``args``,
``mutates``, ``patch``); ``script``, ``args`` and ``patch`` are derived from the typed call or
payload, so the argv the plan shows is the argv the components send and the rig runs.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import model_serializer, model_validator

from ..contract import Live, ManifestFacts, ScriptCall
from ..jsondoc import Doc

StepHost = Literal["d601", "master", "kubernetes-api"]
HOST_D601: Final = "d601"
HOST_MASTER: Final = "master"
HOST_K8S_API: Final = "kubernetes-api"


Call = ScriptCall


class DeploymentPatch(Doc):
    """The server-side-apply body of one DeploymentPatch: the commit image, the deploy env and the
    ``unidesk.io/deploy-*`` annotations on the Deployment and its pod template; always forced."""

    FORCE: ClassVar[dict[str, str]] = {"pulumi.com/patchForce": "true"}

    namespace: str
    name: str
    container: str
    image: str
    env: dict[str, str]
    annotations: dict[str, str]

    @model_serializer(mode="plain")
    def _body(self) -> dict[str, Any]:
        return {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "annotations": {**self.annotations, **self.FORCE},
            },
            "spec": {
                "template": {
                    "metadata": {"annotations": dict(self.annotations)},
                    "spec": {
                        "containers": [
                            {
                                "name": self.container,
                                "image": self.image,
                                "imagePullPolicy": "IfNotPresent",
                                "env": [{"name": k, "value": v} for k, v in self.env.items()],
                            }
                        ]
                    },
                }
            },
        }


class ObjectKey(Doc):
    """One key of one namespaced Kubernetes object."""

    namespace: str
    name: str
    key: str


class AuthSyncPatch(Doc):
    """The frontend dev auth sync: the auth section into a Secret key, its sha256 into a ConfigMap key."""

    secret: ObjectKey
    config_map: ObjectKey


K8sPatch = DeploymentPatch | AuthSyncPatch


class Step(Doc):
    """One step of a plan: a remote script call (``call``) or a Kubernetes patch (``k8s``)."""

    id: str
    host: StepHost
    action: str
    call: Call | None = None
    k8s: K8sPatch | None = None
    mutates: bool

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.call is None) == (self.k8s is None):
            raise ValueError(f"step {self.id}: exactly one of a script call and a Kubernetes patch")
        return self

    @property
    def script(self) -> str | None:
        return self.call.script if self.call is not None else None

    @property
    def args(self) -> tuple[str, ...]:
        """The exact argv (live placeholders unresolved)."""
        return self.call.to_argv() if self.call is not None else ()

    @property
    def patch(self) -> dict[str, Any] | None:
        """The patch body as the plan document prints it (live placeholders unresolved)."""
        return self.k8s.to_json() if self.k8s is not None else None

    def resolved_args(self, digest: str, image_id: str) -> list[str]:
        """The exact argv, with the manifest check's live values in place of the placeholders."""
        if self.call is None:
            return []
        return list(self.call.resolve(ManifestFacts(digest=digest, image_id=image_id)).to_argv())

    @property
    def needs_manifest(self) -> bool:
        """Whether the step consumes the manifest check's live values (argv or patch body)."""
        if self.call is not None:
            return self.call.needs_manifest
        body = json.dumps(self.patch)
        return any(placeholder.value in body for placeholder in Live)

    @model_serializer(mode="plain")
    def _document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "action": self.action,
            "script": self.script,
            "args": list(self.args),
            "mutates": self.mutates,
            "patch": self.patch,
        }
