"""What is live, and what to do about it (issue 10's "live view"): pure values, no I/O.

The live probe (``scripts/live-probe.sh``, one read-only SSH round trip per host) collects facts;
:class:`LiveView` holds them; :func:`decide_service` turns a service's plan and the view into a
:class:`ServiceStatus` verdict. ``status --services``, ``plan --live`` and the Pulumi program all
share these, as ``health`` shares the registry probe and :func:`artifact_cd.health.decide`.

Verdicts (:class:`Verdict`):

- ``in-sync``       live on the desired commit: image label, requested commit and both health
                    commits equal it, health answers, and the commit image is on the host;
- ``drifted``       something else is live (another commit, or requested/health commits differ);
- ``missing-image`` live on the desired commit, but the commit image is gone from the host;
- ``unhealthy``     the container/Deployment is there on the desired commit but does not serve;
- ``held``          a gated service without an approval for exactly this commit: nothing changes;
- ``not-deployed``  no container/Deployment of that name on the host;
- ``unknown``       the host (or the channel the facts need) could not be reached.

A drift fingerprint (:attr:`ServiceStatus.repair`) is a short hash of the live facts that make a
service not in sync; the program puts it into the triggers of the steps that repair it.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .gates import Decision


class Verdict(StrEnum):
    IN_SYNC = "in-sync"
    DRIFTED = "drifted"
    MISSING_IMAGE = "missing-image"
    UNHEALTHY = "unhealthy"
    HELD = "held"
    NOT_DEPLOYED = "not-deployed"
    UNKNOWN = "unknown"


# Verdicts a `pulumi up` repairs by running the service's steps again.
REPAIRABLE: frozenset[Verdict] = frozenset(
    {Verdict.DRIFTED, Verdict.MISSING_IMAGE, Verdict.UNHEALTHY, Verdict.NOT_DEPLOYED}
)


class _Facts(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class SecretPresence(_Facts):
    present: bool
    length: int = 0


class ServiceFacts(_Facts):
    """One planned service as the probe saw it on its host (never a secret value)."""

    service: str
    kind: str | None = None  # "compose" | "k3s"
    found: bool  # the container / every Deployment exists
    running: bool | None = None
    container_id: str | None = None  # compose: the container; k3s: None
    generation: str | None = None  # k3s: "<deployment>=<metadata.generation>,..." (every spec change)
    image_id: str | None = None  # the image the container runs (compose)
    image: str | None = None  # the container's / Deployment's image reference
    revision: str | None = None  # the running image's org.opencontainers.image.revision label
    requested_commit: str | None = None  # <PREFIX>COMMIT env of the container / Deployment
    health_ok: bool | None = None
    health_commit: str | None = None
    health_requested_commit: str | None = None
    image_present: bool | None = None  # the desired commit image is on the host
    secrets: dict[str, SecretPresence] = Field(default_factory=dict)
    detail: str | None = None  # why a fact is missing (e.g. the Kubernetes API does not answer)

    @property
    def live_commit(self) -> str | None:
        """The commit that is live: the image's revision label (compose) or the image tag (k3s)."""
        if self.revision:
            return self.revision
        if self.image and ":" in self.image.rsplit("/", 1)[-1]:
            return self.image.rsplit(":", 1)[-1]
        return None

    @property
    def missing_secrets(self) -> tuple[str, ...]:
        return tuple(k for k, v in sorted(self.secrets.items()) if not v.present)


class HostView(_Facts):
    """The probe's answer for one host (``d601`` or ``master``)."""

    host: str
    address: str
    reachable: bool
    error: str | None = None  # why the host could not be probed
    services: dict[str, ServiceFacts] = Field(default_factory=dict)
    registry: dict[str, Any] | None = None  # D601: the registry probe's facts (artifact_cd.health)
    manifests: dict[str, str | None] = Field(default_factory=dict)  # D601: "repo:tag" -> digest|None
    auth_sha256: str | None = None  # master: sha256 of the canonical auth section (frontend dev)
    seconds: float | None = None
    # additive (issue 10, the collector): why a fact is missing, and the probe's own view
    manifest_errors: dict[str, str] = Field(default_factory=dict)  # "repo:tag" -> why unknown
    auth_error: str | None = None  # config-missing | config-unreadable | config-invalid | auth-missing
    registry_error: str | None = None
    hostname: str | None = None
    docker_state: str | None = None  # reachable | not-installed | permission-denied | ...
    probe_seconds: float | None = None  # the probe's own time on the host (seconds: the round trip)


class LiveView(_Facts):
    stack: str
    hosts: dict[str, HostView] = Field(default_factory=dict)

    def host(self, name: str) -> HostView | None:
        return self.hosts.get(name)

    def manifest_digest(self, repository: str, tag: str) -> tuple[bool, str | None]:
        """(known, digest): whether D601 answered for ``repository:tag``, and its digest (None: missing)."""
        d601 = self.hosts.get("d601")
        key = f"{repository}:{tag}"
        if d601 is None or not d601.reachable or key not in d601.manifests:
            return False, None
        return True, d601.manifests[key]


class ServiceStatus(_Facts):
    """The verdict on one service of the stack, and what to run about it."""

    service: str
    host: str | None
    desired_commit: str | None
    live_commit: str | None
    manifest_present: bool | None
    verdict: Verdict
    reason: str
    action: str
    repair: str | None = None  # drift fingerprint (the repairing steps' trigger), when repairable
    missing_secret_keys: tuple[str, ...] | None = None
    manifest_digest: str | None = None  # the commit's manifest digest in the D601 registry, when known

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def fingerprint(facts: ServiceFacts | None, verdict: Verdict) -> str:
    """A short, stable hash of what is live when a service is not in sync."""
    material = {"verdict": verdict.value, "facts": facts.model_dump(mode="json") if facts else None}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()
    return f"{verdict.value}:{digest[:16]}"


def _in_sync(facts: ServiceFacts, commit: str) -> bool:
    return (
        facts.live_commit == commit
        and facts.requested_commit == commit
        and facts.health_ok is True
        and facts.health_commit == commit
        and facts.health_requested_commit == commit
    )


def decide_service(
    *,
    service: str,
    decision: Decision,
    commit: str | None,
    host: str | None,
    repository: str,
    view: LiveView,
    approval_fix: str | None = None,
    stack: str = "<stack>",
) -> ServiceStatus:
    """The verdict on one service: its plan's decision and commit against the live facts."""
    manifest_known, digest = view.manifest_digest(repository, commit) if commit else (False, None)
    manifest_present = (digest is not None) if manifest_known else None
    hv = view.host(host) if host else None
    facts = hv.services.get(service) if hv is not None and hv.reachable else None
    live_commit = facts.live_commit if facts is not None else None
    missing = facts.missing_secrets if facts is not None and facts.secrets else None

    def status(verdict: Verdict, reason: str, action: str) -> ServiceStatus:
        repair = fingerprint(facts, verdict) if verdict in REPAIRABLE else None
        return ServiceStatus(
            service=service,
            host=host,
            desired_commit=commit,
            live_commit=live_commit,
            manifest_present=manifest_present,
            verdict=verdict,
            reason=reason,
            action=action,
            repair=repair,
            missing_secret_keys=missing,
            manifest_digest=digest,
        )

    up = f"pulumi up --stack {stack}"
    if decision == Decision.GATED:
        return status(
            Verdict.HELD,
            f"gated: no approval for exactly {commit}; nothing of it changes",
            approval_fix or f"pulumi config set --path approvals.{service}.commit {commit}",
        )
    if hv is None or not hv.reachable:
        why = hv.error if hv is not None and hv.error else "the host was not probed"
        return status(Verdict.UNKNOWN, f"host {host} unreachable: {why}", f"check SSH to {host}, then {up}")
    if facts is None:
        return status(Verdict.UNKNOWN, f"the probe of {host} reported nothing for {service}", up)
    if facts.detail and not facts.found:
        return status(Verdict.UNKNOWN, facts.detail, up)
    assert commit is not None
    publish = f"python -m artifact_cd publish --service {service} --repo <checkout at {commit}>"
    fix = up if manifest_present is not False else f"{publish}, then {up}"
    if missing:  # the deploy's preflight refuses before anything changes: restore them first
        fix = f"restore {', '.join(missing)} in the env file, then {fix}"
    if not facts.found:
        return status(Verdict.NOT_DEPLOYED, f"no container/Deployment of {service} on {host}", fix)
    if live_commit != commit or facts.requested_commit != commit:
        return status(
            Verdict.DRIFTED,
            f"live commit {live_commit or '<none>'} (requested {facts.requested_commit or '<none>'}), "
            f"desired {commit}",
            fix,
        )
    if facts.running is False or facts.health_ok is not True or not _in_sync(facts, commit):
        return status(
            Verdict.UNHEALTHY,
            f"on {commit} but not serving it: health ok={facts.health_ok}, "
            f"deploy.commit={facts.health_commit or '<none>'}, "
            f"requestedCommit={facts.health_requested_commit or '<none>'}",
            fix,
        )
    if facts.image_present is False:
        return status(Verdict.MISSING_IMAGE, f"live on {commit}, but its image is gone from {host}", fix)
    if missing:
        return status(
            Verdict.IN_SYNC,
            f"live and healthy on {commit}; required secret keys missing in the env file: "
            f"{', '.join(missing)} (the next deploy would be refused)",
            f"restore {', '.join(missing)} in the env file before the next deploy (values are never printed)",
        )
    return status(Verdict.IN_SYNC, f"live and healthy on {commit}", "nothing to do")
