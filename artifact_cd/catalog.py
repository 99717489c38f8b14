"""The service catalog: every service x environment of R10, as data.

Adding a service is adding one entry to ``CATALOG``. The three consumer kinds differ only in
how the image reaches the target and how it is started; everything else (manifest check, labels,
verification, rollback) is shared and derived in :mod:`artifact_cd.plan`.

Where the seed document is silent, the entry says so in ``assumptions``; those strings are
printed in the plan so an operator can see what was guessed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field

from . import contract

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
    model_config = ConfigDict(frozen=True, extra="forbid")


class Deployment(_Frozen):
    name: str
    container: str


class ComposeTarget(_Frozen):
    kind: Literal[TargetKind.COMPOSE_MASTER, TargetKind.COMPOSE_D601]
    compose_service: str
    container_name: str
    retag_name: str  # the stable image name the Compose file uses; also retagged :<commit>
    gate: Gate = Gate.NONE
    gate_reason: str = ""
    excluded_targets: tuple[str, ...] = ()


class K3sTarget(_Frozen):
    kind: Literal[TargetKind.K3S] = TargetKind.K3S
    namespace: str
    deployments: tuple[Deployment, ...]
    kubernetes_service: str  # the Service the API proxy reaches for /health
    gate: Gate = Gate.NONE
    gate_reason: str = ""
    pre_rollout: PreRollout = PreRollout.NONE
    excluded_targets: tuple[str, ...] = ()


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
    assumptions: tuple[str, ...] = ()

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
    **gate: Unpack[_GateOptions],
) -> ComposeTarget:
    return ComposeTarget(
        kind=host,
        compose_service=service,
        container_name=container,
        retag_name=retag,
        excluded_targets=_COMPOSE_EXCLUDED + excluded,
        **gate,
    )


def _k3s(
    namespace: str,
    deployment: str,
    container: str,
    pre_rollout: PreRollout = PreRollout.NONE,
) -> K3sTarget:
    return K3sTarget(
        namespace=namespace,
        deployments=(Deployment(name=deployment, container=container),),
        kubernetes_service=deployment,
        pre_rollout=pre_rollout,
        excluded_targets=(f"every other Deployment in namespace {namespace}",),
    )


def _both_envs(target: Target) -> dict[Env, Target]:
    """The same target in dev and prod (what differs is the stack's settings)."""
    return dict.fromkeys(ENVS, target)


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
        **options,
    )


_ASSUME_DOCKERFILE = "Dockerfile path follows the UniDesk microservice layout (seed names no path)"
_ASSUME_PORT = "health port 8080 (seed names no port)"
_ASSUME_K3S_CONTAINER = "k3s container name equals the service id; Service name equals the Deployment"

CATALOG: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        id="backend-core",
        producer=PRODUCER_BACKEND_CORE,
        source_repo=UNIDESK_REPO,
        dockerfile="src/components/backend-core/Dockerfile",
        targets={
            "dev": _k3s("unidesk-dev", "backend-core-dev", "backend-core"),
            "prod": _compose(
                TargetKind.COMPOSE_MASTER, "backend-core", "backend-core", "unidesk-backend-core"
            ),
        },
        assumptions=(
            "backend-core Dockerfile path src/components/backend-core/Dockerfile",
            "prod container name backend-core and retag name unidesk-backend-core",
            _ASSUME_PORT,
            _ASSUME_K3S_CONTAINER,
        ),
    ),
    _user_service(
        "baidu-netdisk",
        _both_envs(
            _compose(TargetKind.COMPOSE_MASTER, "baidu-netdisk", "baidu-netdisk-backend", "baidu-netdisk")
        ),
        (
            "dev validation uses the same master-server Compose shape; the dev stack's "
            "compose.master settings name the dev project directory and env file",
            _ASSUME_PORT,
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
            _ASSUME_PORT,
            _ASSUME_K3S_CONTAINER,
        ),
    ),
    *(
        _user_service(
            sid,
            {"dev": _k3s("unidesk-dev", f"{sid}-dev", sid), "prod": _k3s("unidesk", sid, sid)},
            (_ASSUME_DOCKERFILE, _ASSUME_PORT, _ASSUME_K3S_CONTAINER)
            + (() if sid == "decision-center" else ("Deployment names <id>-dev / <id>",)),
        )
        for sid in ("decision-center", "mdtodo", "claudeqq")
    ),
    *(
        _user_service(
            sid,
            {"prod": _compose(TargetKind.COMPOSE_MASTER, sid, f"{sid}-backend", sid)},
            (_ASSUME_PORT, f"retag name {sid}"),
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
            "prod": _compose(TargetKind.COMPOSE_MASTER, "todo-note", "todo-note-backend", "todo-note"),
        },
        assumptions=(_ASSUME_PORT, "retag name todo-note"),
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
            ),
        },
        (_ASSUME_DOCKERFILE, _ASSUME_PORT, "retag name code-queue-mgr"),
        self_bootstrap_guard=True,
    ),
    *(
        _user_service(
            sid,
            _both_envs(_compose(TargetKind.COMPOSE_D601, sid, f"{sid}-backend", sid)),
            (
                _ASSUME_DOCKERFILE,
                _ASSUME_PORT,
                f"container name {sid}-backend, retag name {sid}",
                "dev and prod differ by the stack's compose.d601 project directory",
            ),
        )
        for sid in ("findjob", "pipeline")
    ),
    _user_service(
        "met-nonlinear",
        _both_envs(
            _compose(
                TargetKind.COMPOSE_D601,
                "met-nonlinear",
                "met-nonlinear-backend",
                "met-nonlinear",
                gate=Gate.PLAN_ONLY,
                gate_reason=(
                    "live deploy blocked: the registered Dockerfile and the long-running "
                    "service contract disagree; only plan/dry-run is offered"
                ),
            )
        ),
        (_ASSUME_DOCKERFILE, _ASSUME_PORT, "container name met-nonlinear-backend"),
    ),
    _user_service(
        "k3sctl-adapter",
        _both_envs(
            _compose(
                TargetKind.COMPOSE_D601,
                "k3sctl-adapter",
                "k3sctl-adapter",
                "k3sctl-adapter",
                gate=Gate.PLAN_ONLY,
                gate_reason=(
                    "k3sctl-adapter is the UniDesk-to-k3s control bridge (outside the k3s fault "
                    "domain): plan/dry-run only; a live production deploy needs separate "
                    "supervisor confirmation outside this tool"
                ),
                excluded=("native k3s control plane and every k3s workload",),
            )
        ),
        (
            "runs as a D601 host Compose service outside k3s (seed: outside the k3s fault domain)",
            _ASSUME_DOCKERFILE,
            _ASSUME_PORT,
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
            ),
            "prod": NoTarget(
                gate_reason=(
                    "code-queue has no prod consumer target: no production artifact deploy, "
                    "rollout or manifest change is offered"
                ),
                excluded_targets=tuple("production " + t for t in CODE_QUEUE_EXECUTION_PLANE),
            ),
        },
        (
            "dev Deployments code-queue-{scheduler,read,write,provider-egress-proxy}-dev with "
            "containers code-queue-{part}",
            "health is read through Service code-queue-read-dev",
            _ASSUME_DOCKERFILE,
            _ASSUME_PORT,
        ),
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
