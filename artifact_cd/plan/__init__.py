"""Plan documents (R4, R12, R15, R18, R20): pure values, no Pulumi, no I/O.

A :class:`ServicePlan` is everything a human reviews before a live apply; the Pulumi components
only translate its ``steps`` into resources, so the offline plan and ``pulumi preview`` cannot
drift apart. Step arguments are exact: each script step holds the contract's args model, and the
components and the real-rig tests run its argv as it is, after replacing the live placeholders
(:data:`DIGEST`, :data:`IMAGE_ID`) with what the manifest check returned.

- :mod:`.step`     one typed step (script call or Kubernetes patch payload), the step hosts;
- :mod:`.steps`    the step builders per target kind (Compose, k3s, registry host);
- :mod:`.document` the typed documents and their prose (targets, verification, rollback, ...);
- :mod:`.assemble` ``plan_service``, ``plan_services``, ``plan_registry_host``, ``plan_stack``.
"""

from __future__ import annotations

from typing import Final

from ..contract import Live
from .assemble import plan_registry_host, plan_service, plan_services, plan_stack
from .document import (
    ACCEPT_MEDIA_TYPES,
    CD_FLOW,
    COMMON_EXCLUDED,
    BuildDoc,
    ComposeTargetDoc,
    FileRef,
    K3sTargetDoc,
    NoTargetDoc,
    PreRolloutDoc,
    RegistryBoundary,
    RegistryHostPlan,
    RegistryPaths,
    RegistryRef,
    RollbackDoc,
    RuntimeSecretsDoc,
    ServicePlan,
    SourceDoc,
    TargetDoc,
    VerificationDoc,
    registry_ref,
    required_labels,
)
from .site import ComposeSite, compose_site, image_ref
from .step import (
    HOST_D601,
    HOST_K8S_API,
    HOST_MASTER,
    AuthSyncPatch,
    Call,
    DeploymentPatch,
    K8sPatch,
    ObjectKey,
    Step,
    StepHost,
)
from .steps import deployment_patch, registry_probe_args, registry_probe_call

# The manifest check's live values, as placeholders: the contract's Live (same strings as always).
DIGEST: Final = Live.DIGEST
IMAGE_ID: Final = Live.IMAGE_ID
LIVE_PLACEHOLDERS: tuple[Live, ...] = (DIGEST, IMAGE_ID)

__all__ = [
    "ACCEPT_MEDIA_TYPES",
    "CD_FLOW",
    "COMMON_EXCLUDED",
    "DIGEST",
    "HOST_D601",
    "HOST_K8S_API",
    "HOST_MASTER",
    "IMAGE_ID",
    "LIVE_PLACEHOLDERS",
    "AuthSyncPatch",
    "BuildDoc",
    "Call",
    "ComposeSite",
    "ComposeTargetDoc",
    "DeploymentPatch",
    "FileRef",
    "K3sTargetDoc",
    "K8sPatch",
    "NoTargetDoc",
    "ObjectKey",
    "PreRolloutDoc",
    "RegistryBoundary",
    "RegistryHostPlan",
    "RegistryPaths",
    "RegistryRef",
    "RollbackDoc",
    "RuntimeSecretsDoc",
    "ServicePlan",
    "SourceDoc",
    "Step",
    "StepHost",
    "TargetDoc",
    "VerificationDoc",
    "compose_site",
    "deployment_patch",
    "image_ref",
    "plan_registry_host",
    "plan_service",
    "plan_services",
    "plan_stack",
    "registry_probe_args",
    "registry_probe_call",
    "registry_ref",
    "required_labels",
]
