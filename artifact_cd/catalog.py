"""The service catalog: every service x environment of R10, as data.

Adding a service is adding one entry to ``CATALOG``. The three consumer kinds differ only in
how the image reaches the target and how it is started; everything else (manifest check, labels,
verification, rollback) is shared and derived in :mod:`artifact_cd.plan`.

Where the seed document is silent, the entry says so in ``assumptions``; those strings are
printed in the plan so an operator can see what was guessed.

Every name the catalog guesses (health port, container name, Compose service and files, retag
name, Deployment and container names, the k3s Service) can be set per service in stack config
(``services.<id>.names``, :class:`artifact_cd.config.ServiceNames`); :func:`apply_names` applies
what a stack sets and says, per name, whether it is the catalog's default or the stack's value
(:class:`NameFact`). A default the seed does not fix carries the assumption it rests on in
``assumed`` (per entry, or per target); an assumption a stack overrides is no longer listed.

Ownership (issue 12): the dev and prod stacks run side by side on the same hosts, so a Docker
container name and a retag name are never shared between the two envs. The seed fixes prod's
names (the prod dry-run table and the retag names it quotes); dev Compose targets get their own
``-dev`` container and retag names (the seed names no dev container). k3s Deployments are
namespaced (``unidesk-dev`` / ``unidesk``) and never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack, cast

from pydantic import BaseModel, ConfigDict, Field

from . import contract

if TYPE_CHECKING:
    from .config import ServiceNames

Env = Literal["dev", "prod"]
ENVS: tuple[Env, ...] = ("dev", "prod")

UNIDESK_REPO = "https://github.com/pikasTech/unidesk"
TODO_NOTE_REPO = "https://gitee.com/Lyon1998/todo_note"

PRODUCER_BACKEND_CORE = "ci publish-backend-core"
PRODUCER_USER_SERVICE = "ci publish-user-service"

# The image labels, the deploy-stamp prefixes and the verify kinds are the contract's facts;
# the catalog names stay for the callers that know them here.
SERVICE_LABEL = contract.SERVICE_LABEL  # the catalog service id on every published image (R26)
REVISION_LABEL = contract.REVISION_LABEL
SOURCE_LABEL = contract.SOURCE_LABEL
K3S_ENV_PREFIX = contract.K3S_ENV_PREFIX  # k3s consumers (R13); Compose ones use a per-service prefix (R14)
ANNOTATION_PREFIX = contract.ANNOTATION_PREFIX


class TargetKind(StrEnum):
    COMPOSE_MASTER = "compose-master"
    COMPOSE_D601 = "compose-d601"
    K3S = "k3s"
    NONE = "none"


class Gate(StrEnum):
    """What stands between a plan and a live apply."""

    NONE = "none"
    SUPERVISOR = "supervisor"  # live apply needs an approval for exactly this commit
    PLAN_ONLY = "plan-only"  # dry-run only; no live apply path exists yet
    UNSUPPORTED = "unsupported"  # no consumer target: structured refusal, no fallback


VerificationKind = contract.VerifyKind  # how a Compose consumer proves the live commit (the contract's kinds)


class PreRollout(StrEnum):
    NONE = "none"
    FRONTEND_AUTH_SYNC = "frontend-auth-sync"  # R17


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


# The names a stack may set per service (``services.<id>.names.<key>``), in the order the plan
# lists them; which of them a target kind has.
NameKey = Literal[
    "composeService",
    "containerName",
    "composeFiles",
    "retag",
    "deployments",
    "kubernetesService",
    "healthPort",
    "healthPath",
]
COMPOSE_NAME_KEYS: tuple[NameKey, ...] = (
    "composeService",
    "containerName",
    "composeFiles",
    "retag",
    "healthPort",
    "healthPath",
)
K3S_NAME_KEYS: tuple[NameKey, ...] = ("deployments", "kubernetesService", "healthPort", "healthPath")


class Deployment(_Frozen):
    name: str
    container: str


class ComposeTarget(_Frozen):
    kind: Literal[TargetKind.COMPOSE_MASTER, TargetKind.COMPOSE_D601]
    compose_service: str
    container_name: str
    retag_name: str  # the stable image name the Compose file uses; also retagged :<commit>
    # the project's Compose files, relative to its directory or absolute; () = Compose's own
    # discovery in the project directory (compose.yaml / docker-compose.yml, or COMPOSE_FILE)
    compose_files: tuple[str, ...] = ()
    gate: Gate = Gate.NONE
    gate_reason: str = ""
    excluded_targets: tuple[str, ...] = ()
    assumed: dict[NameKey, str] = Field(default_factory=dict)  # name key -> the guess it rests on


class K3sTarget(_Frozen):
    kind: Literal[TargetKind.K3S] = TargetKind.K3S
    namespace: str
    deployments: tuple[Deployment, ...]
    kubernetes_service: str  # the Service the API proxy reaches for /health
    gate: Gate = Gate.NONE
    gate_reason: str = ""
    pre_rollout: PreRollout = PreRollout.NONE
    excluded_targets: tuple[str, ...] = ()
    assumed: dict[NameKey, str] = Field(default_factory=dict)


class NoTarget(_Frozen):
    kind: Literal[TargetKind.NONE] = TargetKind.NONE
    gate: Literal[Gate.UNSUPPORTED] = Gate.UNSUPPORTED
    gate_reason: str
    excluded_targets: tuple[str, ...] = ()


Target = ComposeTarget | K3sTarget | NoTarget


class Health(_Frozen):
    path: str = "/health"
    port: int = 8080


class ServiceEntry(_Frozen):
    id: str
    producer: str
    source_repo: str
    dockerfile: str
    build_context: str = "."
    verification: VerificationKind = VerificationKind.STANDARD
    health: Health = Field(default_factory=Health)
    required_secret_keys: tuple[str, ...] = ()
    self_bootstrap_guard: bool = False
    targets: dict[Env, Target]
    assumptions: tuple[str, ...] = ()  # what the seed leaves open beyond the names below
    assumed: dict[NameKey, str] = Field(default_factory=dict)  # names guessed in every env

    @property
    def repository(self) -> str:
        """Registry repository name: ``unidesk/<id>`` (seed, Artifact CD step 2)."""
        return f"unidesk/{self.id}"

    @property
    def compose_env_prefix(self) -> str:
        return "UNIDESK_" + self.id.upper().replace("-", "_") + "_DEPLOY_"

    def target(self, env: Env) -> Target | None:
        return self.targets.get(env)


def _microservice(sid: str) -> str:
    return f"src/components/microservices/{sid}/Dockerfile"


CODE_QUEUE_EXECUTION_PLANE = (
    "code-queue scheduler",
    "code-queue runner",
    "queued and active code-queue tasks",
    "task interrupt state",
    "task cancel state",
)

_COMPOSE_EXCLUDED = ("every other Compose service of the project (--no-deps, single-service recreate)",)

_ASSUME_DOCKERFILE = "Dockerfile path follows the UniDesk microservice layout (seed names no path)"
_ASSUME_PORT = "health port 8080 (seed names no port)"
_ASSUME_FILES = (
    "Compose files: Compose's own discovery in the project directory (compose.yaml / "
    "docker-compose.yml, or COMPOSE_FILE); the seed names no file"
)
_ASSUME_K3S_CONTAINER = "k3s container name equals the service id (seed names no container)"
_ASSUME_K3S_SERVICE = "k3s Service name equals the Deployment (seed names no Service)"
_ENTRY_ASSUMED: dict[NameKey, str] = {"healthPort": _ASSUME_PORT}


class _GateOptions(TypedDict, total=False):
    """A target's gate, when it has one (the model's defaults: none)."""

    gate: Gate
    gate_reason: str


def _compose(
    host: Literal[TargetKind.COMPOSE_MASTER, TargetKind.COMPOSE_D601],
    service: str,
    container: str,
    retag: str,
    *,
    excluded: tuple[str, ...] = (),
    assumed: dict[NameKey, str] | None = None,
    **gate: Unpack[_GateOptions],
) -> ComposeTarget:
    return ComposeTarget(
        kind=host,
        compose_service=service,
        container_name=container,
        retag_name=retag,
        excluded_targets=_COMPOSE_EXCLUDED + excluded,
        assumed={"composeFiles": _ASSUME_FILES, **(assumed or {})},
        **gate,
    )


def _dev_names(target: ComposeTarget) -> ComposeTarget:
    """The dev twin of a prod Compose target: its own container and retag names (``-dev``), so the
    two stacks never own the same container or stable tag on one host (issue 12); the Compose
    service stays (each stack has its own Compose project)."""
    container, retag = f"{target.container_name}-dev", f"{target.retag_name}-dev"
    why = "the seed names none for dev; dev never shares prod's on one host (issue 12)"
    return target.model_copy(
        update={
            "container_name": container,
            "retag_name": retag,
            "assumed": {
                **target.assumed,
                "containerName": f"dev container name {container}: {why}",
                "retag": f"dev retag name {retag}: {why}",
            },
        }
    )


def _k3s(
    namespace: str,
    deployment: str,
    container: str,
    pre_rollout: PreRollout = PreRollout.NONE,
    *,
    deployment_assumed: str | None = None,
) -> K3sTarget:
    deployments = _ASSUME_K3S_CONTAINER
    if deployment_assumed:
        deployments = f"{deployment_assumed}; {_ASSUME_K3S_CONTAINER}"
    return K3sTarget(
        namespace=namespace,
        deployments=(Deployment(name=deployment, container=container),),
        kubernetes_service=deployment,
        pre_rollout=pre_rollout,
        excluded_targets=(f"every other Deployment in namespace {namespace}",),
        assumed={"deployments": deployments, "kubernetesService": _ASSUME_K3S_SERVICE},
    )


def _both_envs(prod: ComposeTarget) -> dict[Env, Target]:
    """A Compose target offered in both envs: prod's names, and dev's own (:func:`_dev_names`)."""
    return {"dev": _dev_names(prod), "prod": prod}


class _EntryOptions(TypedDict, total=False):
    """The ``ServiceEntry`` fields a user service may set beyond its id, targets and assumptions."""

    verification: VerificationKind
    required_secret_keys: tuple[str, ...]
    self_bootstrap_guard: bool


def _user_service(
    sid: str, targets: dict[Env, Target], assumptions: tuple[str, ...], **options: Unpack[_EntryOptions]
) -> ServiceEntry:
    """A UniDesk user service built from its microservice Dockerfile (most of the catalog)."""
    return ServiceEntry(
        id=sid,
        producer=PRODUCER_USER_SERVICE,
        source_repo=UNIDESK_REPO,
        dockerfile=_microservice(sid),
        targets=targets,
        assumptions=assumptions,
        assumed=_ENTRY_ASSUMED,
        **options,
    )


def _retag_assumed(retag: str) -> dict[NameKey, str]:
    return {"retag": f"retag name {retag} (seed names none)"}


def _direct(sid: str, container: str, **gate: Unpack[_GateOptions]) -> dict[Env, Target]:
    """A D601-direct Compose target (seed: a D601 Compose service; it names no Compose names)."""
    prod = _compose(
        TargetKind.COMPOSE_D601,
        sid,
        container,
        sid,
        assumed={
            "composeService": f"Compose service {sid} (seed names none)",
            "containerName": f"container name {container} (seed names none)",
            **_retag_assumed(sid),
        },
        excluded=(("native k3s control plane and every k3s workload",) if sid == "k3sctl-adapter" else ()),
        **gate,
    )
    return _both_envs(prod)


CATALOG: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        id="backend-core",
        producer=PRODUCER_BACKEND_CORE,
        source_repo=UNIDESK_REPO,
        dockerfile="src/components/backend-core/Dockerfile",
        targets={
            "dev": _k3s("unidesk-dev", "backend-core-dev", "backend-core"),
            "prod": _compose(
                TargetKind.COMPOSE_MASTER,
                "backend-core",
                "backend-core",
                "unidesk-backend-core",
                assumed={
                    "containerName": "prod container name backend-core (seed names the Compose service only)",
                    **_retag_assumed("unidesk-backend-core"),
                },
            ),
        },
        assumptions=("backend-core Dockerfile path src/components/backend-core/Dockerfile",),
        assumed=_ENTRY_ASSUMED,
    ),
    _user_service(
        "baidu-netdisk",
        _both_envs(
            _compose(TargetKind.COMPOSE_MASTER, "baidu-netdisk", "baidu-netdisk-backend", "baidu-netdisk")
        ),
        (
            "dev validation uses the same master-server Compose shape; the dev stack's "
            "compose.master settings name the dev project directory and env file",
        ),
        verification=VerificationKind.BAIDU_AUTH_GATE,
        required_secret_keys=(
            "UNIDESK_BAIDU_NETDISK_CLIENT_ID",
            "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
            "UNIDESK_BAIDU_NETDISK_TOKEN_KEY",
        ),
    ),
    ServiceEntry(
        id="frontend",
        producer=PRODUCER_USER_SERVICE,
        source_repo=UNIDESK_REPO,
        dockerfile="src/components/frontend/Dockerfile",
        targets={
            "dev": _k3s("unidesk-dev", "frontend-dev", "frontend", pre_rollout=PreRollout.FRONTEND_AUTH_SYNC),
            "prod": _compose(TargetKind.COMPOSE_MASTER, "frontend", "unidesk-frontend", "unidesk-frontend"),
        },
        assumptions=(
            "dev auth sync writes Secret unidesk-dev/frontend-dev-auth (key auth.json) and "
            "ConfigMap unidesk-dev/frontend-dev-auth-meta (key authSha256)",
        ),
        assumed=_ENTRY_ASSUMED,
    ),
    *(
        _user_service(
            sid,
            {
                "dev": _k3s("unidesk-dev", f"{sid}-dev", sid, deployment_assumed=names),
                "prod": _k3s("unidesk", sid, sid, deployment_assumed=names),
            },
            (_ASSUME_DOCKERFILE,),
        )
        for sid, names in (
            ("decision-center", None),
            ("mdtodo", "Deployment names <id>-dev / <id>"),
            ("claudeqq", "Deployment names <id>-dev / <id>"),
        )
    ),
    *(
        _user_service(
            sid,
            {
                "prod": _compose(
                    TargetKind.COMPOSE_MASTER, sid, f"{sid}-backend", sid, assumed=_retag_assumed(sid)
                )
            },
            (),
        )
        for sid in ("project-manager", "oa-event-flow")
    ),
    ServiceEntry(
        id="todo-note",
        producer=PRODUCER_USER_SERVICE,
        source_repo=TODO_NOTE_REPO,
        dockerfile="Dockerfile",
        verification=VerificationKind.TODO_NOTE_SYNTHETIC,
        health=Health(path="/api/health", port=8080),
        targets={
            "prod": _compose(
                TargetKind.COMPOSE_MASTER,
                "todo-note",
                "todo-note-backend",
                "todo-note",
                assumed=_retag_assumed("todo-note"),
            ),
        },
        assumed=_ENTRY_ASSUMED,
    ),
    _user_service(
        "code-queue-mgr",
        {
            "prod": _compose(
                TargetKind.COMPOSE_MASTER,
                "code-queue-mgr",
                "code-queue-mgr-backend",
                "code-queue-mgr",
                gate=Gate.SUPERVISOR,
                gate_reason="code-queue-mgr prod live apply is supervisor-only (seed: supervisor gate)",
                excluded=CODE_QUEUE_EXECUTION_PLANE,
                assumed=_retag_assumed("code-queue-mgr"),
            ),
        },
        (_ASSUME_DOCKERFILE,),
        self_bootstrap_guard=True,
    ),
    *(
        _user_service(
            sid,
            _direct(sid, f"{sid}-backend"),
            (
                _ASSUME_DOCKERFILE,
                "dev and prod differ by the stack's compose.d601 project and by dev's own -dev names",
            ),
        )
        for sid in ("findjob", "pipeline")
    ),
    _user_service(
        "met-nonlinear",
        _direct(
            "met-nonlinear",
            "met-nonlinear-backend",
            gate=Gate.PLAN_ONLY,
            gate_reason=(
                "live deploy blocked: the registered Dockerfile and the long-running "
                "service contract disagree; only plan/dry-run is offered"
            ),
        ),
        (_ASSUME_DOCKERFILE,),
    ),
    _user_service(
        "k3sctl-adapter",
        _direct(
            "k3sctl-adapter",
            "k3sctl-adapter",
            gate=Gate.PLAN_ONLY,
            gate_reason=(
                "k3sctl-adapter is the UniDesk-to-k3s control bridge (outside the k3s fault "
                "domain): plan/dry-run only; a live production deploy needs separate "
                "supervisor confirmation outside this tool"
            ),
        ),
        (
            "runs as a D601 host Compose service outside k3s (seed: outside the k3s fault domain)",
            _ASSUME_DOCKERFILE,
        ),
    ),
    _user_service(
        "code-queue",
        {
            "dev": K3sTarget(
                namespace="unidesk-dev",
                deployments=tuple(
                    Deployment(name=f"code-queue-{part}-dev", container=f"code-queue-{part}")
                    for part in ("scheduler", "read", "write", "provider-egress-proxy")
                ),
                kubernetes_service="code-queue-read-dev",
                gate=Gate.SUPERVISOR,
                gate_reason=(
                    "code-queue DEV live apply needs a supervisor/human authorization outside "
                    "any running Code Queue task"
                ),
                excluded_targets=(
                    *("production " + t for t in CODE_QUEUE_EXECUTION_PLANE),
                    "every Deployment outside the unidesk-dev Code Queue slice",
                ),
                assumed={
                    "deployments": (
                        "dev Deployments code-queue-{scheduler,read,write,provider-egress-proxy}-dev "
                        "with containers code-queue-{part}"
                    ),
                    "kubernetesService": "health is read through Service code-queue-read-dev",
                },
            ),
            "prod": NoTarget(
                gate_reason=(
                    "code-queue has no prod consumer target: no production artifact deploy, "
                    "rollout or manifest change is offered"
                ),
                excluded_targets=tuple("production " + t for t in CODE_QUEUE_EXECUTION_PLANE),
            ),
        },
        (_ASSUME_DOCKERFILE,),
        self_bootstrap_guard=True,
    ),
)

_BY_ID: dict[str, ServiceEntry] = {entry.id: entry for entry in CATALOG}


def service_ids() -> tuple[str, ...]:
    return tuple(_BY_ID)


def get(service_id: str) -> ServiceEntry | None:
    return _BY_ID.get(service_id)


def services_for(env: Env) -> tuple[ServiceEntry, ...]:
    """Every catalog entry that has any row (including a structured refusal) for ``env``."""
    return tuple(entry for entry in CATALOG if env in entry.targets)


# --------------------------------------------------------------------------- names a stack sets

NameSource = Literal["default", "config"]
NameValue = str | int | tuple[str, ...] | tuple[Deployment, ...]

# name key -> the attribute of artifact_cd.config.ServiceNames that sets it
NAME_ATTRS: dict[NameKey, str] = {
    "composeService": "compose_service",
    "containerName": "container_name",
    "composeFiles": "compose_files",
    "retag": "retag",
    "deployments": "deployments",
    "kubernetesService": "kubernetes_service",
    "healthPort": "health_port",
    "healthPath": "health_path",
}


@dataclass(frozen=True)
class NameFact:
    """One name of a service's target in one env: its value and where it comes from."""

    key: NameKey
    value: NameValue
    source: NameSource
    assumption: str | None  # the guess a default rests on; None: the seed fixes it, or a stack set it


def name_keys(target: Target | None) -> tuple[NameKey, ...]:
    """The names a stack may set for this target (none for a service without a target)."""
    match target:
        case ComposeTarget():
            return COMPOSE_NAME_KEYS
        case K3sTarget():
            return K3S_NAME_KEYS
        case _:
            return ()


def _defaults(entry: ServiceEntry, target: ComposeTarget | K3sTarget) -> dict[NameKey, NameValue]:
    health: dict[NameKey, NameValue] = {"healthPort": entry.health.port, "healthPath": entry.health.path}
    if isinstance(target, ComposeTarget):
        return {
            "composeService": target.compose_service,
            "containerName": target.container_name,
            "composeFiles": target.compose_files,
            "retag": target.retag_name,
            **health,
        }
    return {"deployments": target.deployments, "kubernetesService": target.kubernetes_service, **health}


def _set_value(names: ServiceNames | None, key: NameKey) -> NameValue | None:
    if names is None:
        return None
    value = getattr(names, NAME_ATTRS[key])
    if value is None:
        return None
    if key == "deployments":
        return tuple(Deployment(name=d.name, container=d.container) for d in value)
    return value  # type: ignore[no-any-return]


def apply_names(
    entry: ServiceEntry, env: Env, names: ServiceNames | None
) -> tuple[ServiceEntry, tuple[NameFact, ...]]:
    """``entry`` with the names the stack set for ``env`` (``services.<id>.names``), and every
    name of its target there with its source. Keys that do not fit the target's kind are refused
    by the config's cross-check before this runs; here they are ignored."""
    target = entry.target(env)
    if not isinstance(target, ComposeTarget | K3sTarget):
        return entry, ()
    assumed = {**entry.assumed, **target.assumed}
    facts: list[NameFact] = []
    values: dict[NameKey, NameValue] = {}
    for key, default in _defaults(entry, target).items():
        value = _set_value(names, key)
        if value is None:
            facts.append(NameFact(key, default, "default", assumed.get(key)))
            values[key] = default
        else:
            facts.append(NameFact(key, value, "config", None))
            values[key] = value
    if all(f.source == "default" for f in facts):
        return entry, tuple(facts)
    update: dict[str, object]
    if isinstance(target, ComposeTarget):
        update = {
            "compose_service": values["composeService"],
            "container_name": values["containerName"],
            "compose_files": values["composeFiles"],
            "retag_name": values["retag"],
        }
    else:
        update = {"deployments": values["deployments"], "kubernetes_service": values["kubernetesService"]}
    health = Health(path=cast(str, values["healthPath"]), port=cast(int, values["healthPort"]))
    resolved = entry.model_copy(
        update={"health": health, "targets": {**entry.targets, env: target.model_copy(update=update)}}
    )
    return resolved, tuple(facts)


def name_assumptions(entry: ServiceEntry, facts: tuple[NameFact, ...]) -> tuple[str, ...]:
    """The service's assumptions in one env: the entry's own, then each name still guessed."""
    out = list(entry.assumptions)
    for fact in facts:
        if fact.assumption and fact.assumption not in out:
            out.append(fact.assumption)
    return tuple(out)
