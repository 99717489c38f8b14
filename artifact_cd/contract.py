"""The one contract between the plan, the Pulumi components and the step scripts.

Every fact more than one room needs is spelled here once:

- the shared constants: OCI label names, manifest media types, the registry spec label, the
  verify kinds, the commit and digest patterns, the deploy stamp (env keys and annotations);
- the exit codes of every step script (:class:`ExitCode`);
- the live placeholders a step carries until the manifest check has run (:class:`Live`);
- one typed args model per script (``<Script>Args``) whose :meth:`ScriptArgs.to_argv` is the exact
  argv the plan shows, the components send and the rig runs; ``flags()`` is what the script's
  ``parse_args`` accepts (a drift test holds the two together);
- the result of a step: one JSON object, the last non-empty stdout line (:class:`StepResult`).

The scripts get the shell side of these constants from :func:`shell_constants` (a generated
``readonly`` block that ``artifact_cd.scripts.script_text`` puts ahead of ``lib.sh``).
Pure: no Pulumi, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# --------------------------------------------------------------------------- shared constants

REVISION_LABEL = "org.opencontainers.image.revision"
SOURCE_LABEL = "org.opencontainers.image.source"
SERVICE_LABEL = "io.unidesk.service"  # the catalog service id on every published image (R26)
# The running registry container carries the sha256 of the rendered spec it was started from.
SPEC_LABEL = "io.unidesk.artifact-registry.spec-sha256"

# The deploy audit log on every target host (issue 13): one JSON line per event (scripts/include/
# audit.sh writes it, artifact_cd/audit.py reads it). A path in stack config overrides the default;
# when the file passes AUDIT_MAX_BYTES it is rotated to <path>.1 (one old file kept), so the log of
# a host is bounded by twice that.
AUDIT_LOG_DEFAULT = "/var/log/unidesk/deploy-audit.jsonl"
AUDIT_MAX_BYTES = 1_048_576
AUDIT_FORMAT_VERSION = 1

# HEAD/GET of a manifest must accept all four, else the registry answers a schema1 manifest with
# another digest (or 404 for an OCI index).
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)

COMMIT_PATTERN = "[0-9a-f]{40}"
DIGEST_PATTERN = "sha256:[0-9a-f]{64}"
COMMIT_RE = re.compile(COMMIT_PATTERN)
DIGEST_RE = re.compile(DIGEST_PATTERN)
# An SSH public host key as a known_hosts line holds it (stack config hosts.<h>.hostKey)
HOST_KEY_PATTERN = r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}"
HOST_KEY_RE = re.compile(HOST_KEY_PATTERN)
# Name rules that the stack config, CI.json and the live probe spec all check
REPOSITORY_PATTERN = "[a-z0-9]+(?:[._/-][a-z0-9]+)*"  # a registry repository (lib.sh is_repository)
TAG_PATTERN = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # an image tag
K8S_NAME_PATTERN = "[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?"  # a Kubernetes object name
ABS_PATH_PATTERN = "/[A-Za-z0-9._+@/-]*"  # plain characters only (lib.sh is_abs_path, less its . / .. rule)

# Deploy stamp: k3s consumers use the generic env prefix (R13), Compose consumers a per-service
# one (R14); both stamp COMMIT, IMAGE and DIGEST (k3s also SERVICE).
K3S_ENV_PREFIX = "UNIDESK_DEPLOY_"
ANNOTATION_PREFIX = "unidesk.io/deploy-"


class VerifyKind(StrEnum):
    """How a Compose consumer proves the live commit (``compose-deploy.sh --verify``)."""

    STANDARD = "standard"  # image label + /health deploy.commit and deploy.requestedCommit
    TODO_NOTE_SYNTHETIC = "todo-note-synthetic"  # /api/health + runtime metadata (R19)
    BAIDU_AUTH_GATE = "baidu-auth-gate"  # standard + secret preflight + auth booleans (R15)


class ExitCode(IntEnum):
    """Exit status of every step script; the result line's ``error`` names the case."""

    OK = 0
    INVALID = 2  # invalid argument
    PRECONDITION = 3  # precondition or artifact missing (manifest-missing, secret-missing, ...)
    RETRYABLE = 4  # transient (registry-unreachable, ssh-unreachable, transfer-failed)
    INFRA_BLOCKED = 5  # a tool or channel is missing; the result names it in ``channel``
    VERIFY_FAILED = 6  # verification failed after a change (unhealthy, commit-mismatch, ...)
    BUSY = 7  # lock-busy


def deploy_stamp(prefix: str, commit: str, image: str, digest: str) -> dict[str, str]:
    """The ``<PREFIX>COMMIT|IMAGE|DIGEST`` env a consumer writes next to the running service."""
    return {f"{prefix}COMMIT": commit, f"{prefix}IMAGE": image, f"{prefix}DIGEST": digest}


def deploy_annotations(service: str, commit: str, image: str, digest: str) -> dict[str, str]:
    """The ``unidesk.io/deploy-*`` annotations of a patched Deployment and its pod template."""
    return {
        f"{ANNOTATION_PREFIX}commit": commit,
        f"{ANNOTATION_PREFIX}image": image,
        f"{ANNOTATION_PREFIX}digest": digest,
        f"{ANNOTATION_PREFIX}service": service,
    }


# --------------------------------------------------------------------------- live placeholders


class Live(StrEnum):
    """What the manifest check reads live: the manifest digest and the image ID (config digest,
    which ``docker load``, ``docker pull`` and ``docker inspect`` agree on). Neither placeholder
    passes a script's digest validation, so a step that was not given the real value fails
    before it acts."""

    DIGEST = "<digest:manifest-check>"
    IMAGE_ID = "<image-id:manifest-check>"


def is_live(value: str) -> bool:
    return value in Live.__members__.values()


@dataclass(frozen=True)
class ManifestFacts:
    """The manifest check's live values, validated."""

    digest: str
    image_id: str

    def value_of(self, placeholder: Live) -> str:
        return self.digest if placeholder is Live.DIGEST else self.image_id

    def resolve(self, text: str) -> str:
        """``text`` with every live placeholder replaced by its value."""
        for placeholder in Live:
            text = text.replace(placeholder.value, self.value_of(placeholder))
        return text


# --------------------------------------------------------------------------- step results


class StepOutputError(RuntimeError):
    """A step's stdout is not the one-line JSON result its contract promises."""


def last_json_object(stdout: str | None) -> dict[str, Any] | None:
    """The last non-empty stdout line as a JSON object, or None when it is not one."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class StepResult:
    """A step's result: one JSON object, the last non-empty line of its stdout."""

    data: dict[str, Any]

    @classmethod
    def parse(cls, stdout: str | None, what: str = "step") -> StepResult:
        lines = [line for line in (stdout or "").splitlines() if line.strip()]
        if not lines:
            raise StepOutputError(f"{what}: printed no result line")
        try:
            value = json.loads(lines[-1])
        except json.JSONDecodeError:
            raise StepOutputError(f"{what}: the last stdout line is not JSON") from None
        if not isinstance(value, dict):
            raise StepOutputError(f"{what}: the result line is not a JSON object")
        return cls(value)

    @property
    def ok(self) -> bool:
        return self.data.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.data.get("error")
        return error if isinstance(error, str) else None

    def require_ok(self, what: str = "step") -> dict[str, Any]:
        if not self.ok:
            raise StepOutputError(f"{what}: the result is not ok: error={self.data.get('error')!r}")
        return self.data

    def manifest_facts(self, what: str = "manifest-check") -> ManifestFacts:
        """Digest and image ID of an ok manifest-check result, validated before any use."""
        data = self.require_ok(what)
        digest, image_id = data.get("digest"), data.get("imageId")
        for key, value in (("digest", digest), ("imageId", image_id)):
            if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
                raise StepOutputError(f"{what}: {key} is not a sha256 digest: {value!r}")
        assert isinstance(digest, str) and isinstance(image_id, str)
        return ManifestFacts(digest=digest, image_id=image_id)


# --------------------------------------------------------------------------- script args


@dataclass(frozen=True)
class Flag:
    """Field metadata: the script flag of a field whose name does not spell it (``dirs`` -> ``--dir``)."""

    name: str


def _flag_of(field_name: str, metadata: list[Any]) -> str:
    for item in metadata:
        if isinstance(item, Flag):
            return item.name
    return "--" + field_name.replace("_", "-")


def _is_multi(annotation: Any) -> bool:
    return get_origin(annotation) is tuple


class ScriptArgs(BaseModel):
    """The typed arguments of one step script; :meth:`to_argv` is its exact argv.

    Fields are emitted in declaration order as ``--flag value``; ``None`` is left out; a tuple
    field repeats its flag once per value; ``Live`` placeholders stay in the argv until
    :meth:`resolve` replaces them with the manifest check's values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    script: ClassVar[str]
    subcommand: ClassVar[str | None] = None

    def to_argv(self) -> tuple[str, ...]:
        argv: list[str] = [self.subcommand] if self.subcommand else []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            flag = _flag_of(name, info.metadata)
            for item in value if isinstance(value, tuple) else (value,):
                argv += [flag, str(item)]
        return tuple(argv)

    @classmethod
    def flags(cls) -> frozenset[str]:
        """Every flag the script takes for this model (the drift test compares ``parse_args``)."""
        return frozenset(_flag_of(name, info.metadata) for name, info in cls.model_fields.items())

    @classmethod
    def repeated_flags(cls) -> frozenset[str]:
        return frozenset(
            _flag_of(name, info.metadata)
            for name, info in cls.model_fields.items()
            if _is_multi(info.annotation)
        )

    @property
    def needs_manifest(self) -> bool:
        """Whether the argv carries a live placeholder (the step must wait for the manifest check)."""
        return any(is_live(a) for a in self.to_argv())

    def resolve(self, facts: ManifestFacts) -> Self:
        """This call with the manifest check's values in place of the live placeholders."""
        updates = {
            name: facts.value_of(Live(value))
            for name, value in self
            if isinstance(value, str) and is_live(value)
        }
        return self.model_copy(update=updates)


def _commit(value: str) -> str:
    if not COMMIT_RE.fullmatch(value):
        raise ValueError(f"not a full 40-hex commit: {value!r}")
    return value


def _digest_or_live(value: str) -> str:
    if not (is_live(value) or DIGEST_RE.fullmatch(value)):
        raise ValueError(f"neither a sha256 digest nor a live placeholder: {value!r}")
    return value


def _host_key(value: str) -> str:
    if not HOST_KEY_RE.fullmatch(value):
        raise ValueError("not an SSH public host key ('ssh-ed25519 AAAA...')")
    return value


Commit = Annotated[str, AfterValidator(_commit)]
HostKeyArg = Annotated[str, AfterValidator(_host_key)]
DigestOrLive = Annotated[str, AfterValidator(_digest_or_live)]


class ManifestCheckArgs(ScriptArgs):
    """``manifest-check.sh``: HEAD the commit tag's manifest; print its digest and image ID."""

    script: ClassVar[str] = "manifest-check.sh"
    registry: str
    repository: str
    tag: Commit


class MoveImageArgs(ScriptArgs):
    """``move-image.sh``: bring the commit image onto the target (local pull, SSH tunnel or stream)."""

    script: ClassVar[str] = "move-image.sh"
    mode: Literal["local", "tunnel", "stream"]
    registry: str
    repository: str
    tag: Commit
    digest: DigestOrLive = Live.DIGEST.value
    image_id: DigestOrLive = Live.IMAGE_ID.value
    d601: str | None = None
    d601_port: int | None = None
    # bytes to keep free on the target's Docker data root after the pull (the disk-full pre-check
    # refuses when free < layer bytes + this); None: not emitted, the script keeps 0
    reserve_bytes: int | None = None
    # D601's pinned SSH host key (hosts.d601.hostKey, issue 11): the master -> D601 hop of tunnel and
    # stream trusts exactly this key (a private known_hosts); None: the master's own known_hosts
    d601_host_key: HostKeyArg | None = None


class RegistryBlobVerifyArgs(ScriptArgs):
    """``registry-blob-verify.sh``: read-only; hash the registry's blob files within a budget."""

    script: ClassVar[str] = "registry-blob-verify.sh"
    storage: str
    budget_seconds: Annotated[int, Field(ge=1, le=99_999)] = 10
    budget_bytes: Annotated[int, Field(ge=0, le=10**15 - 1)] = 512 * 2**20


class RegistryBlobDropArgs(ScriptArgs):
    """``registry-blob-drop.sh``: remove one corrupt blob of the named commit's image (publish --repair)."""

    script: ClassVar[str] = "registry-blob-drop.sh"
    registry: str
    repository: str
    tag: Commit
    digest: str
    manifest_digest: str
    storage: str
    container: str  # the registry's container: removes the file when the SSH user may not


class ComposeDeployArgs(ScriptArgs):
    """``compose-deploy.sh``: retag, stamp, recreate and verify one Compose service."""

    script: ClassVar[str] = "compose-deploy.sh"
    service_id: str
    compose_service: str
    container: str
    commit: Commit
    digest: DigestOrLive = Live.DIGEST.value
    image_id: DigestOrLive = Live.IMAGE_ID.value
    image: str
    retag: str
    project_dir: str
    project_name: str
    env_file: str
    env_prefix: str
    verify: VerifyKind
    health_path: str
    health_port: int
    health_timeout: int | None = None
    compose_command: str | None = None
    required_secrets: Annotated[tuple[str, ...], Flag("--required-secret")] = ()
    lock_wait: int | None = None
    # deploy (the default; None: not emitted, so the plan's argv is unchanged) or verify: read-only,
    # no lock, retag, env write or recreate; the same verdict with recreated false (the Pulumi
    # Command's ``update``, run when only its script text or connection changed)
    mode: Literal["deploy", "verify"] | None = None
    # yes: a recreated commit that fails verification is replaced by the previous commit (its image
    # still here), which is then verified (compose.<host>.autoRestore); None/no: reported as it stands
    auto_restore: Literal["yes", "no"] | None = None
    # the deploy audit log (hosts.<host>.auditLog), the stack and the target (audit lines; issue 13)
    audit_log: str | None = None
    stack: str | None = None
    target: Literal["master-compose", "d601-compose"] | None = None
    # services.<id>.names.composeFiles: each file as `-f` to every Compose call, in order (relative
    # to --project-dir or absolute); (): Compose's own discovery there (COMPOSE_FILE of its .env)
    compose_files: Annotated[tuple[str, ...], Flag("--compose-file")] = ()
    # where the locks, the state file and the run dir live (None: /run/lock; either falls back to
    # the project dir when missing or not writable); the plan never sets it (tests do: a tmp dir)
    lock_dir: str | None = None


class K3sImportArgs(ScriptArgs):
    """``k3s-import.sh``: pull the commit image into k3s containerd, keeping the registry digest."""

    script: ClassVar[str] = "k3s-import.sh"
    socket: str
    namespace: str
    registry: str
    repository: str
    tag: Commit
    digest: DigestOrLive = Live.DIGEST.value
    image_id: DigestOrLive = Live.IMAGE_ID.value
    # the catalog service (audit lines), how root-only commands run (hosts.d601.elevate, issue 11;
    # None: sudo), the deploy audit log (hosts.d601.auditLog) and the stack (issue 13)
    service_id: str | None = None
    elevate: Literal["sudo", "none"] | None = None
    audit_log: str | None = None
    stack: str | None = None
    # the read-only preflight before the import (issue 11): every Deployment the step's patches
    # target, NAME:CONTAINER, must exist in this Kubernetes namespace with that container
    deployment_namespace: str | None = None
    deployments: Annotated[tuple[str, ...], Flag("--deployment")] = ()


class K3sVerifyArgs(ScriptArgs):
    """``k3s-verify.sh``: wait for the rollouts, then prove the commit through the API service proxy."""

    script: ClassVar[str] = "k3s-verify.sh"
    namespace: str
    deployments: Annotated[tuple[str, ...], Flag("--deployment")]
    service: str
    port: int
    health_path: str
    commit: Commit
    timeout: int
    # as K3sImportArgs (the audit step is k3s-deploy: the rollout after the Deployment patch)
    service_id: str | None = None
    elevate: Literal["sudo", "none"] | None = None
    audit_log: str | None = None
    stack: str | None = None


class ReadAuthArgs(ScriptArgs):
    """``read-auth.sh``: the auth section of the master server's config.json (secret stdout)."""

    script: ClassVar[str] = "read-auth.sh"
    config: str


class RegistryDirsArgs(ScriptArgs):
    """``registry-install.sh dirs``: the managed directories and the storage directory."""

    script: ClassVar[str] = "registry-install.sh"
    subcommand: ClassVar[str | None] = "dirs"
    dirs: Annotated[tuple[str, ...], Flag("--dir")]
    storage: str
    # how root-only commands run (hosts.d601.elevate, issue 11; None: sudo), the deploy audit log
    # (hosts.d601.auditLog) and the stack (issue 13)
    elevate: Literal["sudo", "none"] | None = None
    audit_log: str | None = None
    stack: str | None = None


class RegistryWriteArgs(ScriptArgs):
    """``registry-install.sh write``: one rendered file, written only when its hash differs."""

    script: ClassVar[str] = "registry-install.sh"
    subcommand: ClassVar[str | None] = "write"
    path: str
    mode: str
    sha256: str
    content_b64: str
    # how root-only commands run (hosts.d601.elevate, issue 11; None: sudo), the deploy audit log
    # (hosts.d601.auditLog) and the stack (issue 13)
    elevate: Literal["sudo", "none"] | None = None
    audit_log: str | None = None
    stack: str | None = None


class RegistryActivateArgs(ScriptArgs):
    """``registry-install.sh activate``: daemon-reload, enable --now, restart on a spec change."""

    script: ClassVar[str] = "registry-install.sh"
    subcommand: ClassVar[str | None] = "activate"
    unit: str
    container: str
    spec_sha256: str
    # how root-only commands run (hosts.d601.elevate, issue 11; None: sudo), the deploy audit log
    # (hosts.d601.auditLog) and the stack (issue 13)
    elevate: Literal["sudo", "none"] | None = None
    audit_log: str | None = None
    stack: str | None = None


class RegistryProbeArgs(ScriptArgs):
    """``registry-probe.sh``: the read-only facts behind status, health and the install acceptance."""

    script: ClassVar[str] = "registry-probe.sh"
    unit: str
    unit_path: str
    unit_sha256: str
    project: str
    container: str
    image: str
    endpoint: str
    storage: str
    config_path: str
    config_sha256: str
    compose_path: str
    compose_sha256: str
    spec_sha256: str


# --------------------------------------------------------------------------- the live probe
#
# live-probe.sh reports what runs on one host (the live view, artifact_cd.live). What it must look
# at is a LiveProbeSpec, sent as base64 JSON (``--spec-b64``) and validated twice: here, and by the
# target's helper (scripts/py/livefacts.py) with the same rules as lib.sh's ``is_*`` checks.

_SPEC_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # lib.sh is_name
_SPEC_PATH_RE = re.compile(ABS_PATH_PATTERN)  # lib.sh is_abs_path (plus no . or .. segment)
_SPEC_DOTS_RE = re.compile(r"(^|/)\.\.?(/|$)")
_SPEC_ENV_PREFIX_RE = re.compile(r"[A-Z][A-Z0-9_]{0,80}_")  # lib.sh is_env_prefix
_SPEC_ENV_KEY_RE = re.compile(r"[A-Z][A-Z0-9_]{0,127}")  # lib.sh is_env_key
_SPEC_REPOSITORY_RE = re.compile(REPOSITORY_PATTERN)  # lib.sh is_repository
_SPEC_HTTP_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]*")  # lib.sh is_http_path
_SPEC_LOOPBACK_RE = re.compile(r"(?:127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}")  # is_loopback_endpoint
_SPEC_K8S_NAME_RE = re.compile(K8S_NAME_PATTERN)
# the commit image: <registry>/<repository>:<40-hex commit> (lib.sh is_image_ref, tag = a commit)
_SPEC_COMMIT_IMAGE_RE = re.compile(rf"[a-z0-9]+(?:[._/:-][a-z0-9]+)*:{COMMIT_PATTERN}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
LIVE_SPEC_MAX_B64 = 65536  # live-probe.sh refuses a longer --spec-b64


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """The validator of a string that ``pattern`` matches whole (no control character); the stack
    config, CI.json and the live probe's spec all validate with it."""

    def validate(value: str) -> str:
        if _CONTROL_RE.search(value) or not pattern.fullmatch(value):
            raise PydanticCustomError("format", f"{value!r} is not {what}")
        return value

    return AfterValidator(validate)


def _abs_path(value: str) -> str:
    if not _SPEC_PATH_RE.fullmatch(value) or _SPEC_DOTS_RE.search(value):
        raise ValueError(f"not an absolute path without . or .. segments: {value!r}")
    return value


SpecName = Annotated[str, matching(_SPEC_NAME_RE, "a name")]
SpecPath = Annotated[str, AfterValidator(_abs_path)]
SpecEnvPrefix = Annotated[str, matching(_SPEC_ENV_PREFIX_RE, "an env prefix (UPPER_CASE_)")]
SpecEnvKey = Annotated[str, matching(_SPEC_ENV_KEY_RE, "an env key")]
SpecRepository = Annotated[str, matching(_SPEC_REPOSITORY_RE, "a repository name")]
SpecHttpPath = Annotated[str, matching(_SPEC_HTTP_PATH_RE, "an HTTP path")]
SpecLoopback = Annotated[str, matching(_SPEC_LOOPBACK_RE, "a loopback endpoint")]
SpecK8sName = Annotated[str, matching(_SPEC_K8S_NAME_RE, "a Kubernetes name")]
SpecCommitImage = Annotated[str, matching(_SPEC_COMMIT_IMAGE_RE, "a commit image <registry>/<repo>:<sha>")]
SpecPort = Annotated[int, Field(ge=1, le=65535, strict=True)]
LiveHost = Literal["d601", "master"]


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", defer_build=True
    )


class LiveComposeSpec(_Spec):
    """One Compose service to report: its container, commit image, health and required secrets."""

    service: SpecName
    container: SpecName
    image: SpecCommitImage  # the desired commit image: is it present on the host?
    env_prefix: SpecEnvPrefix  # <PREFIX>COMMIT is read from the container env (nothing else)
    verify: VerifyKind  # todo-note-synthetic: health commits come from the label and the env
    health_path: SpecHttpPath
    health_port: SpecPort
    env_file: SpecPath
    required_secrets: tuple[SpecEnvKey, ...] = ()  # present/length only, never a value

    @classmethod
    def of(cls, service: str, deploy: ComposeDeployArgs) -> LiveComposeSpec:
        """What to report of ``service``, deployed by ``deploy``: its call's values of these fields."""
        return cls(service=service, **deploy.model_dump(include=set(cls.model_fields) - {"service"}))


class LiveK3sDeploymentSpec(_Spec):
    name: SpecK8sName
    container: SpecK8sName


class LiveK3sSpec(_Spec):
    """One k3s service to report: its Deployments, health through the API proxy, containerd image."""

    service: SpecName
    namespace: SpecK8sName
    deployments: Annotated[tuple[LiveK3sDeploymentSpec, ...], Field(min_length=1)]
    kubernetes_service: SpecK8sName
    health_path: SpecHttpPath
    health_port: SpecPort
    image: SpecCommitImage
    env_prefix: SpecEnvPrefix = K3S_ENV_PREFIX
    socket: SpecPath  # k3s containerd
    containerd_namespace: SpecK8sName


class LiveManifestSpec(_Spec):
    """One commit manifest to HEAD in the D601 registry (the four media types)."""

    endpoint: SpecLoopback
    repository: SpecRepository
    tag: Commit

    @property
    def key(self) -> str:
        return f"{self.repository}:{self.tag}"


class LiveProbeSpec(_Spec):
    """What one host's live probe looks at (``--spec-b64``: base64 of this model's JSON)."""

    version: Literal[1] = 1
    compose: tuple[LiveComposeSpec, ...] = ()
    k3s: tuple[LiveK3sSpec, ...] = Field(default=(), alias="k3s")  # not to_camel's "k3S"
    manifests: tuple[LiveManifestSpec, ...] = ()
    auth_config: SpecPath | None = None  # master: sha256 of this config.json's canonical auth section

    @model_validator(mode="after")
    def _one_entry_per_service(self) -> Self:
        services = [s.service for s in self.compose] + [s.service for s in self.k3s]
        if len(services) != len(set(services)):
            raise ValueError(f"a service is listed twice: {sorted(services)}")
        return self

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s.service for s in self.compose) + tuple(s.service for s in self.k3s)

    def to_b64(self) -> str:
        doc = self.model_dump(mode="json", by_alias=True)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return base64.b64encode(text.encode("ascii")).decode("ascii")

    @classmethod
    def from_b64(cls, value: str) -> LiveProbeSpec:
        if len(value) > LIVE_SPEC_MAX_B64 or not _B64_RE.fullmatch(value):
            raise ValueError("not base64 (or longer than the probe accepts)")
        try:
            return cls.model_validate_json(base64.b64decode(value, validate=True))
        except (binascii.Error, ValidationError) as error:
            raise ValueError(f"not a live probe spec: {error}") from None


def _spec_b64(value: str) -> str:
    LiveProbeSpec.from_b64(value)
    return value


class LiveProbeArgs(ScriptArgs):
    """``live-probe.sh``: one host's live facts, read-only (the live view; docs/contracts.md "Live view").

    ``--host`` names the host the probe runs on; ``--spec-b64`` what to look at; on D601 the
    ``--registry-*`` values are the registry probe's (``RegistryProbeArgs``), all or none."""

    script: ClassVar[str] = "live-probe.sh"
    host: LiveHost
    spec_b64: Annotated[str, AfterValidator(_spec_b64)]
    registry_unit: str | None = None
    registry_unit_path: str | None = None
    registry_unit_sha256: str | None = None
    registry_project: str | None = None
    registry_container: str | None = None
    registry_image: str | None = None
    registry_endpoint: str | None = None
    registry_storage: str | None = None
    registry_config_path: str | None = None
    registry_config_sha256: str | None = None
    registry_compose_path: str | None = None
    registry_compose_sha256: str | None = None
    registry_spec_sha256: str | None = None

    @model_validator(mode="after")
    def _registry_all_or_none(self) -> Self:
        given = [name for name in self.registry_fields() if getattr(self, name) is not None]
        if given and len(given) != len(self.registry_fields()):
            raise ValueError("the --registry-* values are given all or none")
        return self

    @staticmethod
    def registry_fields() -> tuple[str, ...]:
        return tuple("registry_" + name for name in RegistryProbeArgs.model_fields)

    @classmethod
    def of(
        cls, host: LiveHost, spec: LiveProbeSpec, registry: RegistryProbeArgs | None = None
    ) -> LiveProbeArgs:
        values: dict[str, Any] = {}
        if registry is not None:
            values = {f"registry_{name}": getattr(registry, name) for name in RegistryProbeArgs.model_fields}
        return cls(host=host, spec_b64=spec.to_b64(), **values)

    @property
    def spec(self) -> LiveProbeSpec:
        return LiveProbeSpec.from_b64(self.spec_b64)

    @property
    def registry(self) -> RegistryProbeArgs | None:
        if self.registry_unit is None:
            return None
        return RegistryProbeArgs(
            **{name: getattr(self, f"registry_{name}") for name in RegistryProbeArgs.model_fields}
        )


# --------------------------------------------------------------------------- the history probe
#
# history-probe.sh reports one host's deploy record for `history` and `rollback` (issue 13),
# read-only: the tail of the audit log (and <log>.1), the live commit of each named Compose
# container or k3s Deployment, and on D601 the commit tags of each repository in the registry.

HISTORY_TAIL_BYTES = 262_144  # the audit log bytes a probe reads (the newest; <log>.1 when short)
HISTORY_MAX_TAGS = 100  # commit tags described per repository (the rest are counted)
_HISTORY_COMPOSE_RE = re.compile(
    rf"(?:{_SPEC_NAME_RE.pattern}):(?:{_SPEC_NAME_RE.pattern}):(?:{_SPEC_ENV_PREFIX_RE.pattern})"
)
_HISTORY_K3S_RE = re.compile(
    rf"(?:{_SPEC_NAME_RE.pattern}):(?:{_SPEC_K8S_NAME_RE.pattern}):(?:{_SPEC_K8S_NAME_RE.pattern})"
)


class HistoryProbeArgs(ScriptArgs):
    """``history-probe.sh``: one host's deploy record, read-only (``history`` and ``rollback``).

    ``--compose SERVICE:CONTAINER:ENV_PREFIX`` and ``--k3s SERVICE:NAMESPACE:DEPLOYMENT`` name the
    workloads whose live commit to read; ``--registry`` (D601's loopback endpoint) and each
    ``--repository`` the commit tags to describe (digest, created, revision label, size)."""

    script: ClassVar[str] = "history-probe.sh"
    host: LiveHost
    audit_log: SpecPath
    tail_bytes: Annotated[int, Field(ge=1024, le=16 * AUDIT_MAX_BYTES)] = HISTORY_TAIL_BYTES
    compose: tuple[Annotated[str, matching(_HISTORY_COMPOSE_RE, "SERVICE:CONTAINER:ENV_PREFIX_")], ...] = ()
    k3s: tuple[Annotated[str, matching(_HISTORY_K3S_RE, "SERVICE:NAMESPACE:DEPLOYMENT")], ...] = ()
    registry: SpecLoopback | None = None
    repository: tuple[SpecRepository, ...] = ()
    max_tags: Annotated[int, Field(ge=1, le=1000)] = HISTORY_MAX_TAGS
    # how the k3s Deployment read runs when the kubeconfig is root-only (hosts.<h>.elevate, issue 11;
    # None: sudo): `sudo -n <k3s> kubectl -n NS get deployment ...`, k3s-verify.sh's sudoers rule
    elevate: Literal["sudo", "none"] | None = None

    @model_validator(mode="after")
    def _repositories_need_the_registry(self) -> Self:
        if self.repository and self.registry is None:
            raise ValueError("--repository needs --registry")
        return self


ScriptCall = (
    ManifestCheckArgs
    | MoveImageArgs
    | RegistryBlobVerifyArgs
    | RegistryBlobDropArgs
    | ComposeDeployArgs
    | K3sImportArgs
    | K3sVerifyArgs
    | ReadAuthArgs
    | RegistryDirsArgs
    | RegistryWriteArgs
    | RegistryActivateArgs
    | RegistryProbeArgs
    | LiveProbeArgs
    | HistoryProbeArgs
)

ARGS_MODELS: tuple[type[ScriptArgs], ...] = tuple(get_args(ScriptCall))

# Scripts whose stdout carries a secret value: the Command marks stdout/stderr secret, logs nothing.
SECRET_STDOUT_SCRIPTS: frozenset[str] = frozenset({ReadAuthArgs.script})


def models_of(script: str) -> tuple[type[ScriptArgs], ...]:
    """The args models of one script (several for a script with subcommands)."""
    return tuple(m for m in ARGS_MODELS if m.script == script)


# --------------------------------------------------------------------------- the shell side


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _shell_items() -> Iterator[tuple[str, str | int | tuple[str, ...]]]:
    yield "REVISION_LABEL", REVISION_LABEL
    yield "SOURCE_LABEL", SOURCE_LABEL
    yield "SERVICE_LABEL", SERVICE_LABEL
    yield "SPEC_LABEL", SPEC_LABEL
    yield "COMMIT_PATTERN", f"^{COMMIT_PATTERN}$"
    yield "DIGEST_PATTERN", f"^{DIGEST_PATTERN}$"
    yield "HOST_KEY_PATTERN", f"^{HOST_KEY_PATTERN}$"
    yield "VERIFY_KINDS", tuple(k.value for k in VerifyKind)
    yield "MANIFEST_MEDIA_TYPES", MANIFEST_MEDIA_TYPES
    yield "AUDIT_MAX_BYTES", AUDIT_MAX_BYTES
    yield "AUDIT_FORMAT_VERSION", AUDIT_FORMAT_VERSION
    for code in ExitCode:
        yield f"EXIT_{code.name}", int(code)


def shell_constants() -> str:
    """The generated ``readonly`` block every script text starts with (after its shebang-less header).

    The ``readonly`` lines form one brace group, so the block's shellcheck directive covers the
    block only; the block must follow a first command (``script_text`` puts ``set -euo pipefail``
    there): a directive before a script's first command would cover the whole script.
    """
    lines = [
        "# ---- generated from artifact_cd/contract.py (shell_constants); do not edit by hand ----",
        "# shellcheck disable=SC2034 # not every script reads every constant",
        "{",
    ]
    for name, value in _shell_items():
        if isinstance(value, tuple):
            items = " ".join(_shell_quote(v) for v in value)
            lines.append(f"  readonly -a {name}=({items})")
        elif isinstance(value, int):
            lines.append(f"  readonly {name}={value}")
        else:
            lines.append(f"  readonly {name}={_shell_quote(value)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def shell_constant_names() -> tuple[str, ...]:
    return tuple(name for name, _ in _shell_items())


# --------------------------------------------------------------------------- docs


def argv_table() -> str:
    """The Markdown argv table of docs/contracts.md (generated; a test fails when the doc is stale)."""
    rows = ["| script | argv (in plan order; `[...]` optional, `...` repeated) |", "| --- | --- |"]
    for model in ARGS_MODELS:
        parts: list[str] = [model.subcommand] if model.subcommand else []
        for name, info in model.model_fields.items():
            flag = _flag_of(name, info.metadata)
            meta = flag.removeprefix("--").upper()
            if _is_multi(info.annotation):
                parts.append(f"[{flag} {meta}]...")
            elif not info.is_required():
                default = info.default
                shown = f" (default {default})" if default is not None and not is_live(str(default)) else ""
                if isinstance(default, str) and is_live(default):
                    parts.append(f"{flag} {default}")
                else:
                    parts.append(f"[{flag} {meta}]{shown}")
            else:
                parts.append(f"{flag} {meta}")
        rows.append(f"| {model.script} | `{' '.join(parts)}` |")
    return "\n".join(rows) + "\n"
