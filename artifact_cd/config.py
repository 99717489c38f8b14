"""Stack configuration: ``Pulumi.<stack>.yaml`` validated once into pydantic models.

The same :func:`parse_stack_config` runs for the offline CLI (reading the YAML file) and for the
Pulumi program (reading ``pulumi.Config``), so both refuse exactly the same values, before any
resource is registered, with a message that names the config key and the fix.

Secrets (SSH keys, kubeconfig) are not part of this model: they are read only through
``config.require_secret`` by the program. The offline loader checks they are stored encrypted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import catalog
from .catalog import Env, Gate, TargetKind
from .contract import (
    ABS_PATH_PATTERN,
    AUDIT_LOG_DEFAULT,
    COMMIT_RE,
    DIGEST_PATTERN,
    HOST_KEY_RE,
    K8S_NAME_PATTERN,
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    matching,
)

if TYPE_CHECKING:
    from .ownership import Claim

PROJECT = "unidesk-artifact-cd"
SECRET_KEYS: tuple[str, ...] = ("d601PrivateKey", "masterPrivateKey", "kubeconfig")
PLAIN_KEYS: tuple[str, ...] = (
    "env",
    "hosts",
    "registry",
    "compose",
    "transfer",
    "k3s",
    "frontendAuth",
    "services",
    "approvals",
)

_HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]+")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_PATH_RE = re.compile(ABS_PATH_PATTERN)
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_K8S_NAME_RE = re.compile(K8S_NAME_PATTERN)
_UNIT_RE = re.compile(r"[A-Za-z0-9_.@-]{1,240}\.service")
_IMAGE_RE = re.compile(
    rf"(?P<name>{REPOSITORY_PATTERN})(?::(?P<tag>{TAG_PATTERN}))?(?:@(?P<digest>{DIGEST_PATTERN}))?"
)
_COMPOSE_CMD_RE = re.compile(r"/[A-Za-z0-9._/-]+(?: compose)?")
_PERSON_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MUTABLE_TAGS = frozenset({"latest", "stable", "main", "master", "dev", "prod", "edge", "nightly"})


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    key: str  # path below the project namespace, e.g. "services.backend-core.commit"
    message: str
    fix: str

    @property
    def full_key(self) -> str:
        """The config key as Pulumi names it; command-line arguments (``--x``) stay as they are."""
        return self.key if self.key.startswith("-") else f"{PROJECT}:{self.key}"

    def render(self) -> str:
        return f"{self.full_key}: {self.message}. Fix: {self.fix}"


class ConfigError(ValueError):
    """One or more config values were refused. ``str()`` names every key and its fix."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": False,
            "decision": "invalid-config",
            "retryable": False,
            "problems": [{"key": p.full_key, "message": p.message, "fix": p.fix} for p in self.problems],
        }


def _set_fix(key: str, placeholder: str) -> str:
    return f"pulumi config set --path '{key}' {placeholder}"


# --------------------------------------------------------------------------- field validators


def describe_commit_problem(value: object) -> str | None:
    """Why ``value`` is not a full lowercase 40-hex commit sha, or None if it is one."""
    if isinstance(value, bool) or not isinstance(value, str):
        return (
            f"must be a quoted string, got {type(value).__name__} "
            "(an unquoted all-digit sha turns into a number in YAML)"
        )
    if value == "":
        return "is empty; a full 40-hex commit sha is required"
    if COMMIT_RE.fullmatch(value):
        return None
    shown = repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if _HEX_ANY_CASE.fullmatch(value.strip() or "-") and value.strip() != value:
        return f"{shown} has surrounding whitespace or a newline"
    if value.lower() in MUTABLE_TAGS:
        return f"{shown} is a mutable tag; deploys are pinned to a full commit sha, never a tag"
    if _HEX_ANY_CASE.fullmatch(value):
        if value.lower() != value:
            return f"{shown} has uppercase letters; commit tags are lowercase hex"
        if len(value) < 40:
            return f"{shown} is a {len(value)}-character short sha; the full 40-hex sha is required"
        return f"{shown} is {len(value)} hex characters; a commit sha is exactly 40"
    return (
        f"{shown} is not a commit sha (only 40 lowercase hex characters are accepted; "
        "tags, refs and shell metacharacters are refused)"
    )


def _commit(value: object) -> str:
    problem = describe_commit_problem(value)
    if problem is not None:
        raise PydanticCustomError("commit", problem)
    assert isinstance(value, str)
    return value


def _strict_str(value: object) -> object:
    # YAML turns 22 into an int and yes into a bool: refuse types silently coerced otherwise.
    if isinstance(value, bool):
        raise PydanticCustomError("type", "must be a string, got a boolean")
    return value


def _hostname(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if _CONTROL_RE.search(value) or not _HOSTNAME_RE.fullmatch(value) or value.startswith("-"):
        raise PydanticCustomError("format", f"{value!r} is not a hostname or IP address")
    return value


def _abs_path(value: str) -> str:
    if _CONTROL_RE.search(value) or not _PATH_RE.fullmatch(value):
        raise PydanticCustomError(
            "format",
            f"{value!r} is not an absolute path of plain characters "
            "(letters, digits, . _ + @ - /; no spaces or shell metacharacters)",
        )
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise PydanticCustomError("format", f"{value!r} contains '.' or '..' segments")
    if value != "/" and value.endswith("/"):
        raise PydanticCustomError("format", f"{value!r} ends with '/'")
    if value == "/":
        raise PydanticCustomError("format", "'/' is not an acceptable directory here")
    return value


def _loopback_endpoint(value: str) -> str:
    match = re.fullmatch(r"(?P<host>127\.0\.0\.1|\[::1\]|localhost):(?P<port>[0-9]{1,5})", value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise PydanticCustomError(
            "loopback",
            f"{value!r} is not a loopback endpoint; the registry is reachable only at "
            "127.0.0.1:<port> or [::1]:<port> (R2)",
        )
    return value


def _pinned_image(value: str) -> str:
    match = _IMAGE_RE.fullmatch(value) if not _CONTROL_RE.search(value) else None
    if match is None:
        raise PydanticCustomError("image", f"{value!r} is not an image reference")
    if match["tag"] is None and match["digest"] is None:
        raise PydanticCustomError("image", f"{value!r} has no tag or digest; pin a version")
    if match["tag"] is not None and match["tag"].lower() in MUTABLE_TAGS and match["digest"] is None:
        raise PydanticCustomError("image", f"{value!r} uses the mutable tag {match['tag']!r}")
    return value


def _ssh_target(value: str) -> str:
    user, _, host = value.rpartition("@")
    if user and not _USER_RE.fullmatch(user):
        raise PydanticCustomError("format", f"{value!r} has an invalid user part")
    _hostname(host)
    return value


def _free_text(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise PydanticCustomError("format", "contains a newline or control character")
    if not value.strip():
        raise PydanticCustomError("format", "is empty")
    return value


_HOST_KEY_RE = HOST_KEY_RE  # contract.HOST_KEY_PATTERN: move-image.sh's --d601-host-key takes the same keys

StrictStr = Annotated[str, BeforeValidator(_strict_str)]
Commit = Annotated[str, BeforeValidator(_commit)]
Hostname = Annotated[StrictStr, AfterValidator(_hostname)]
User = Annotated[StrictStr, matching(_USER_RE, "a POSIX user name")]
AbsPath = Annotated[StrictStr, AfterValidator(_abs_path)]
Name = Annotated[StrictStr, matching(_NAME_RE, "a lowercase name (a-z 0-9 _ . -)")]
K8sName = Annotated[StrictStr, matching(_K8S_NAME_RE, "a Kubernetes name")]
UnitName = Annotated[StrictStr, matching(_UNIT_RE, "a systemd .service unit name")]
LoopbackEndpoint = Annotated[StrictStr, AfterValidator(_loopback_endpoint)]
PinnedImage = Annotated[StrictStr, AfterValidator(_pinned_image)]
ComposeCommand = Annotated[
    StrictStr,
    matching(
        _COMPOSE_CMD_RE, "an absolute compose command ('/usr/bin/docker compose' or a docker-compose path)"
    ),
]
SshTarget = Annotated[StrictStr, AfterValidator(_ssh_target)]
Person = Annotated[
    StrictStr, matching(_PERSON_RE, "a plain identifier of who approved (no spaces or metacharacters)")
]
FreeText = Annotated[StrictStr, Field(max_length=300), AfterValidator(_free_text)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
HostKey = Annotated[StrictStr, matching(_HOST_KEY_RE, "an SSH public host key ('ssh-ed25519 AAAA...')")]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
        # every model's validator is built on its first use, not at import: a CLI verb pays only for
        # the models it touches (status/health start-up, issue 14); the same in catalog, contract, jsondoc
        defer_build=True,
    )


class HostConfig(_Model):
    host: Hostname
    user: User = "ubuntu"
    port: Port = 22
    # The host's SSH public key ("ssh-ed25519 AAAA..."), pinned by Pulumi's remote Commands.
    # Unset: pulumi-command does not verify the host key (say so in a review; set it in production).
    host_key: HostKey | None = None
    # The append-only deploy audit log on this host (issue 13): one JSON line per changing step
    # (scripts/include/audit.sh); bounded by rotation to <path>.1. `history` reads it back.
    audit_log: AbsPath = AUDIT_LOG_DEFAULT
    # How the commands that need root run on this host (issue 11; README "Non-root hosts"):
    # "sudo": `sudo -n` for exactly those commands (k3s ctr/kubectl on root-only sockets, the
    # systemd unit write, systemctl), everything else as `user` (Docker through the docker group);
    # a root login needs nothing. "none": never elevate (root login, or the access is granted
    # otherwise); a missing access fails infra-blocked naming the fix.
    elevate: Literal["sudo", "none"] = "sudo"


class Hosts(_Model):
    d601: HostConfig
    master: HostConfig


class RegistryConfig(_Model):
    """R1 defaults; each one may be overridden by stack config.

    ``manage``: whether this stack installs the registry host. The registry is shared by both
    environments; exactly one stack (prod in the examples) should own its install.
    """

    manage: bool = True
    endpoint: LoopbackEndpoint = "127.0.0.1:5000"
    image: PinnedImage = "registry:2.8.3"
    unit_name: UnitName = "unidesk-artifact-registry.service"
    compose_project: Name = "unidesk-artifact-registry"
    container_name: Name = "unidesk-artifact-registry"
    config_path: AbsPath = "/home/ubuntu/.unidesk/artifact-registry/config.yml"
    compose_path: AbsPath = "/home/ubuntu/.unidesk/artifact-registry/compose.yml"
    storage_path: AbsPath = "/home/ubuntu/.unidesk/registry-storage"
    compose_command: ComposeCommand = "/usr/bin/docker compose"

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0]

    @model_validator(mode="after")
    def _storage_apart(self) -> RegistryConfig:
        for key, path in (("configPath", self.config_path), ("composePath", self.compose_path)):
            if path == self.storage_path or path.startswith(self.storage_path + "/"):
                raise PydanticCustomError(
                    "layout", f"{key} {path!r} lies inside storagePath; managed files stay apart from storage"
                )
        return self


class ComposeProject(_Model):
    project_dir: AbsPath
    project_name: Name
    env_file: AbsPath  # the controlled env file (seed: providerGateway.upgrade.composeEnvFile)
    command: ComposeCommand | None = None  # None: `docker compose` (v2) when present, else docker-compose
    # how long a recreated container may take to answer its health path before the deploy fails
    health_timeout_seconds: Annotated[int, Field(ge=5, le=900, strict=True)] = 45
    # after a recreate whose verification fails: put the previous commit back (its tag, the env
    # file) and verify it (compose-deploy.sh --auto-restore yes); off: report the failure as it stands
    auto_restore: Annotated[bool, Field(strict=True)] = False


class ComposeConfig(_Model):
    master: ComposeProject | None = None
    d601: ComposeProject | None = None


class TransferConfig(_Model):
    """How the master server reaches D601 (provider-gateway Host SSH) to move an image."""

    mode: Literal["tunnel", "stream"] = "tunnel"
    d601_ssh_target: SshTarget = "d601"
    d601_ssh_port: Port = 22


class K3sConfig(_Model):
    containerd_socket: AbsPath = "/run/k3s/containerd/containerd.sock"
    containerd_namespace: K8sName = "k8s.io"
    rollout_timeout_seconds: Annotated[int, Field(ge=10, le=3600, strict=True)] = 180


class FrontendAuthConfig(_Model):
    config_path: AbsPath = "/home/ubuntu/unidesk/config.json"  # on the master server
    secret_name: K8sName = "frontend-dev-auth"  # noqa: S105 - a Secret object name, not a secret
    config_map_name: K8sName = "frontend-dev-auth-meta"


_CONTAINER_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a k8s container name (DNS label)
_SERVICE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a k8s Service name (DNS-1035 label)
_HTTP_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{0,200}")  # lib.sh is_http_path
_RETAG_RE = re.compile(REPOSITORY_PATTERN)  # lib.sh is_repository
_COMPOSE_FILE_RE = re.compile(r"[A-Za-z0-9_+@][A-Za-z0-9._+@/-]{0,239}|/[A-Za-z0-9._+@/-]{1,240}")


def _compose_file(value: str) -> str:
    if value.endswith("/") or any(part in {".", ".."} for part in value.split("/")):
        raise PydanticCustomError("format", f"{value!r} has a '.' or '..' segment or ends with '/'")
    return value


ComposeFile = Annotated[
    StrictStr,
    matching(_COMPOSE_FILE_RE, "a Compose file path, relative to compose.<host>.projectDir or absolute"),
    AfterValidator(_compose_file),
]


RetagName = Annotated[
    StrictStr, Field(max_length=128), matching(_RETAG_RE, "an image name without tag (a-z 0-9 . _ / -)")
]


class DeploymentName(_Model):
    """One Deployment of a k3s target and the container in it that runs the image."""

    name: K8sName
    container: Annotated[StrictStr, matching(_CONTAINER_RE, "a Kubernetes container name (a DNS label)")]


def _distinct(field: str) -> AfterValidator:
    """1 to 16 items, no name twice (checked after the items, so a bad item is one problem)."""

    def validate(values: tuple[Any, ...]) -> tuple[Any, ...]:
        if not 1 <= len(values) <= 16:
            raise PydanticCustomError("length", f"{field} must list 1 to 16 items, not {len(values)}")
        names = [getattr(v, "name", v) for v in values]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PydanticCustomError("distinct", f"{field} names {', '.join(repeated)} more than once")
        return values

    return AfterValidator(validate)


ComposeFiles = Annotated[tuple[ComposeFile, ...], _distinct("composeFiles")]
DeploymentNames = Annotated[tuple[DeploymentName, ...], _distinct("deployments")]
KubernetesService = Annotated[
    StrictStr, matching(_SERVICE_RE, "a Kubernetes Service name (a DNS-1035 label)")
]
HttpPath = Annotated[StrictStr, matching(_HTTP_PATH_RE, "an HTTP path such as /health")]


class ServiceNames(_Model):
    """``services.<id>.names``: the names the catalog guesses, set for this stack (issue 11).

    Unset keys keep the catalog's default; ``plan`` lists every name with ``source: default|config``.
    Compose targets take ``containerName``, ``composeService``, ``composeFiles``, ``retag``; k3s
    targets ``deployments`` and ``kubernetesService``; both ``healthPort`` and ``healthPath``.
    """

    container_name: Name | None = None
    compose_service: Name | None = None
    compose_files: ComposeFiles | None = None
    retag: RetagName | None = None
    deployments: DeploymentNames | None = None
    kubernetes_service: KubernetesService | None = None
    health_port: Port | None = None
    health_path: HttpPath | None = None

    def keys_set(self) -> tuple[catalog.NameKey, ...]:
        """The name keys this stack sets, in the plan's order."""
        return tuple(key for key, attr in catalog.NAME_ATTRS.items() if getattr(self, attr) is not None)


class ServiceConfig(_Model):
    commit: Commit
    names: ServiceNames = Field(default_factory=ServiceNames)


class Approval(_Model):
    commit: Commit
    by: Person
    reason: FreeText


class StackConfig(_Model):
    env: Literal["dev", "prod"]
    hosts: Hosts
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    compose: ComposeConfig = Field(default_factory=ComposeConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    k3s: K3sConfig = Field(default_factory=K3sConfig)
    frontend_auth: FrontendAuthConfig = Field(default_factory=FrontendAuthConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    approvals: dict[str, Approval] = Field(default_factory=dict)

    def commit_of(self, service_id: str) -> str | None:
        svc = self.services.get(service_id)
        return svc.commit if svc else None


# --------------------------------------------------------------------------- parsing

_FIXES: dict[str, str] = {
    "commit": '<full 40-hex sha, quoted; e.g. "$(git rev-parse HEAD)" of a pushed commit>',
    "loopback": "127.0.0.1:5000",
    "image": "registry:2.8.3 (or registry:2.8.3@sha256:<64-hex digest>)",
}


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _problems_from(error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors():
        key = _key(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            leaf = str(err["loc"][-1])
            if "key" in leaf.lower() or "password" in leaf.lower() or "secret" in leaf.lower():
                fix = "secrets go only in encrypted keys: pulumi config set --secret " + "|".join(SECRET_KEYS)
            else:
                fix = f"remove it: pulumi config rm --path '{key}' (check the spelling against README)"
            problems.append(Problem(key, "is not a known setting", fix))
            continue
        if kind == "missing":
            problems.append(Problem(key, "is required", _set_fix(key, "<value>")))
            continue
        placeholder = _FIXES.get(kind, "<valid value>")
        problems.append(Problem(key, err["msg"], _set_fix(key, placeholder)))
    return problems


def _cross_check(cfg: StackConfig, stack: str) -> list[Problem]:
    problems: list[Problem] = []
    env: Env = cfg.env
    if env != stack:
        problems.append(
            Problem("env", f"is {env!r} but this is stack {stack!r}", f"pulumi config set env {stack}")
        )
    needs_compose: dict[str, list[str]] = {"master": [], "d601": []}
    for sid in cfg.services:
        entry = catalog.get(sid)
        key = f"services.{sid}"
        if entry is None:
            problems.append(
                Problem(
                    key,
                    "is not a service in the catalog (known: "
                    + ", ".join(catalog.service_ids())
                    + "; CI.json upstream-image entries are catalog-only and never deployable)",
                    f"pulumi config rm --path '{key}'",
                )
            )
            continue
        target = entry.target(env)
        if target is None:
            offered = ", ".join(e for e in catalog.ENVS if e in entry.targets)
            problems.append(
                Problem(
                    key,
                    f"{sid} is not offered in {env} (offered in: {offered})",
                    f"pulumi config rm --path '{key}'",
                )
            )
            continue
        if target.kind == TargetKind.COMPOSE_MASTER:
            needs_compose["master"].append(sid)
        elif target.kind == TargetKind.COMPOSE_D601:
            needs_compose["d601"].append(sid)
    for host, users in needs_compose.items():
        if users and getattr(cfg.compose, host) is None:
            problems.append(
                Problem(
                    f"compose.{host}",
                    f"is required by {', '.join(users)} (projectDir, projectName, envFile)",
                    _set_fix(f"compose.{host}.projectDir", "<absolute path>") + " (and projectName, envFile)",
                )
            )
    for sid in cfg.approvals:
        key = f"approvals.{sid}"
        entry = catalog.get(sid)
        target = entry.target(env) if entry else None
        if entry is None or target is None:
            problems.append(
                Problem(key, f"{sid!r} is not a service of {env}", f"pulumi config rm --path '{key}'")
            )
        elif target.gate != Gate.SUPERVISOR:
            problems.append(
                Problem(
                    key,
                    f"{sid} has no supervisor gate in {env}; an approval means nothing here",
                    f"pulumi config rm --path '{key}'",
                )
            )
    problems += _names_check(cfg)
    if not problems:
        problems += _ownership_check(cfg)
    return problems


def _names_check(cfg: StackConfig) -> list[Problem]:
    """``services.<id>.names``: only the keys of the service's target kind in this env."""
    problems: list[Problem] = []
    for sid, svc in cfg.services.items():
        entry = catalog.get(sid)
        target = entry.target(cfg.env) if entry else None
        if target is None:
            continue  # not a service of this env: refused above
        allowed = catalog.name_keys(target)
        for name in svc.names.keys_set():
            key = f"services.{sid}.names.{name}"
            if name in allowed:
                continue
            kind = target.kind.value
            takes = ", ".join(allowed) or "no names"
            problems.append(
                Problem(
                    key,
                    f"does not apply: {sid} has a {kind} target in {cfg.env}, which takes {takes}",
                    f"pulumi config rm --path '{key}'",
                )
            )
    return problems


def _collision_problem(mine: Claim, other: Claim, env: str, other_stack: str | None) -> Problem:
    from .ownership import suggestion

    where = f"{mine.kind} {mine.name} on {mine.where} ({mine.host})"
    if other_stack is None:
        message = (
            f"{where} is also {other.service}'s in this stack ({other.key}); two services never "
            f"own the same {mine.kind} on one host (issue 12)"
        )
        also = ""
    else:
        message = (
            f"{where} is owned by stack {other_stack} too ({other.service}: {other.key} in "
            f"Pulumi.{other_stack}.yaml); stacks {env} and {other_stack} never own the same "
            f"{mine.kind} on one host (issue 12)"
        )
        also = f" (or change {other.key} in stack {other_stack})"
    if mine.kind == "compose service" and other_stack is None:
        fix = _set_fix(mine.key, f"<the Compose service of {mine.service} in its project>")
    elif mine.kind == "compose service":
        host = "master" if "master" in mine.where else "d601"
        fix = "give each stack its own Compose project: " + _set_fix(f"compose.{host}.projectName", "<name>")
    elif other_stack is None:
        fix = _set_fix(mine.key, f"<a {mine.kind} name no other service of this stack uses on that host>")
    else:
        fix = _set_fix(mine.key, suggestion(mine, env)) + also
    return Problem(mine.key, message, fix)


def _ownership_check(cfg: StackConfig) -> list[Problem]:
    """Two services of this stack never own one container, retag, Deployment or Compose service."""
    from . import ownership

    pairs = ownership.collisions(ownership.claims(cfg))
    return [_collision_problem(mine, other, cfg.env, None) for mine, other in pairs]


def sibling_problems(cfg: StackConfig, project_dir: Path) -> list[Problem]:
    """This stack's targets against the other stack's as configured (``Pulumi.<other>.yaml`` in
    ``project_dir``, read offline): a container, retag, Deployment or Compose service both stacks
    own on one host is refused, naming the key to change and both stacks (issue 12). No sibling
    file: nothing to collide with. A sibling file that is refused itself is refused here too:
    what it owns cannot be known."""
    from . import ownership

    other_stack = "prod" if cfg.env == "dev" else "dev"
    path = project_dir / f"Pulumi.{other_stack}.yaml"
    if not path.exists():
        return []
    try:
        other = parse_stack_config(read_stack_file(path), other_stack)
    except ConfigError as error:
        first = error.problems[0].render() if error.problems else str(error)
        return [
            Problem(
                "(sibling stack)",
                f"stack {other_stack} ({path.name}) is refused, so what it owns on the hosts cannot be "
                f"checked against this stack: {first}",
                f"fix {path.name} (python -m artifact_cd plan --stack {other_stack} names every problem)",
            )
        ]
    pairs = ownership.collisions(ownership.claims(cfg), ownership.claims(other))
    return [_collision_problem(mine, theirs, cfg.env, other_stack) for mine, theirs in pairs]


def parse_stack_config(raw: Mapping[str, Any], stack: str) -> StackConfig:
    """Validate the project's plain config keys (namespace stripped) for ``stack``.

    Raises :class:`ConfigError` naming every refused key and how to fix it.
    """
    problems: list[Problem] = []
    if stack not in catalog.ENVS:
        raise ConfigError(
            [
                Problem(
                    "env",
                    f"stack {stack!r} is not an environment (dev, prod)",
                    "pulumi stack select dev|prod",
                )
            ]
        )
    data = dict(raw)
    for key in list(data):
        if key in SECRET_KEYS:
            data.pop(key)
        elif key not in PLAIN_KEYS:
            fix = (
                "secrets go only in encrypted keys: pulumi config set --secret " + "|".join(SECRET_KEYS)
                if "key" in key.lower() or "secret" in key.lower()
                else f"remove it: pulumi config rm {key}"
            )
            problems.append(Problem(key, "is not a known setting", fix))
            data.pop(key)
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(problems + _problems_from(error)) from None
    problems += _cross_check(cfg, stack)
    if problems:
        raise ConfigError(problems)
    return cfg


def read_stack_file(path: Path) -> dict[str, Any]:
    """Read ``Pulumi.<stack>.yaml`` and return the project's keys with the namespace stripped.

    Secret keys must be stored encrypted (``{secure: ...}``); a plaintext one is refused.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(
            [Problem("(file)", f"{path} does not exist", "pulumi stack init <dev|prod>")]
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(
            [Problem("(file)", f"{path} is not valid YAML: {error}", "fix the YAML syntax")]
        ) from None
    config = document.get("config", {}) if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(
            [Problem("(file)", f"{path} has no 'config' mapping", "pulumi config set env <stack>")]
        )
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    prefix = PROJECT + ":"
    for full_key, value in config.items():
        if not isinstance(full_key, str) or not full_key.startswith(prefix):
            continue  # other namespaces (kubernetes:, pulumi:) are not ours
        key = full_key[len(prefix) :]
        if key in SECRET_KEYS and not (isinstance(value, dict) and set(value) == {"secure"}):
            problems.append(
                Problem(
                    key,
                    "is stored in plaintext",
                    f"pulumi config rm {key} && pulumi config set --secret {key} < FILE",
                )
            )
            continue
        out[key] = value
    if problems:
        raise ConfigError(problems)
    return out


def load_stack(project_dir: Path, stack: str) -> StackConfig:
    """The stack's config, refused when it owns a target the sibling stack owns (issue 12)."""
    cfg = parse_stack_config(read_stack_file(project_dir / f"Pulumi.{stack}.yaml"), stack)
    problems = sibling_problems(cfg, project_dir)
    if problems:
        raise ConfigError(problems)
    return cfg
