"""R10: every service x env row of the matrix, as the catalog holds it."""

from __future__ import annotations

import pytest

from artifact_cd import catalog
from artifact_cd.catalog import (
    ComposeTarget,
    Gate,
    K3sTarget,
    NoTarget,
    PreRollout,
    TargetKind,
    VerificationKind,
)

M = TargetKind.COMPOSE_MASTER
D = TargetKind.COMPOSE_D601
K = TargetKind.K3S

# (service, env) -> (kind, compose service / k3s namespace, container / deployments, gate)
R10: dict[tuple[str, str], tuple[TargetKind, str, tuple[str, ...], Gate]] = {
    ("backend-core", "dev"): (K, "unidesk-dev", ("backend-core-dev",), Gate.NONE),
    ("backend-core", "prod"): (M, "backend-core", ("backend-core",), Gate.NONE),
    # dev Compose targets own their container (and retag) names: the seed names prod's only, and the
    # two stacks share the hosts (issue 12: dev and prod never own one container)
    ("baidu-netdisk", "dev"): (M, "baidu-netdisk", ("baidu-netdisk-backend-dev",), Gate.NONE),
    ("baidu-netdisk", "prod"): (M, "baidu-netdisk", ("baidu-netdisk-backend",), Gate.NONE),
    ("frontend", "dev"): (K, "unidesk-dev", ("frontend-dev",), Gate.NONE),
    ("frontend", "prod"): (M, "frontend", ("unidesk-frontend",), Gate.NONE),
    ("decision-center", "dev"): (K, "unidesk-dev", ("decision-center-dev",), Gate.NONE),
    ("decision-center", "prod"): (K, "unidesk", ("decision-center",), Gate.NONE),
    ("mdtodo", "dev"): (K, "unidesk-dev", ("mdtodo-dev",), Gate.NONE),
    ("mdtodo", "prod"): (K, "unidesk", ("mdtodo",), Gate.NONE),
    ("claudeqq", "dev"): (K, "unidesk-dev", ("claudeqq-dev",), Gate.NONE),
    ("claudeqq", "prod"): (K, "unidesk", ("claudeqq",), Gate.NONE),
    ("project-manager", "prod"): (M, "project-manager", ("project-manager-backend",), Gate.NONE),
    ("oa-event-flow", "prod"): (M, "oa-event-flow", ("oa-event-flow-backend",), Gate.NONE),
    ("todo-note", "prod"): (M, "todo-note", ("todo-note-backend",), Gate.NONE),
    ("code-queue-mgr", "prod"): (M, "code-queue-mgr", ("code-queue-mgr-backend",), Gate.SUPERVISOR),
    ("findjob", "dev"): (D, "findjob", ("findjob-backend-dev",), Gate.NONE),
    ("findjob", "prod"): (D, "findjob", ("findjob-backend",), Gate.NONE),
    ("pipeline", "dev"): (D, "pipeline", ("pipeline-backend-dev",), Gate.NONE),
    ("pipeline", "prod"): (D, "pipeline", ("pipeline-backend",), Gate.NONE),
    ("met-nonlinear", "dev"): (D, "met-nonlinear", ("met-nonlinear-backend-dev",), Gate.PLAN_ONLY),
    ("met-nonlinear", "prod"): (D, "met-nonlinear", ("met-nonlinear-backend",), Gate.PLAN_ONLY),
    ("k3sctl-adapter", "dev"): (D, "k3sctl-adapter", ("k3sctl-adapter-dev",), Gate.PLAN_ONLY),
    ("k3sctl-adapter", "prod"): (D, "k3sctl-adapter", ("k3sctl-adapter",), Gate.PLAN_ONLY),
    (
        "code-queue",
        "dev",
    ): (
        K,
        "unidesk-dev",
        (
            "code-queue-scheduler-dev",
            "code-queue-read-dev",
            "code-queue-write-dev",
            "code-queue-provider-egress-proxy-dev",
        ),
        Gate.SUPERVISOR,
    ),
    ("code-queue", "prod"): (TargetKind.NONE, "", (), Gate.UNSUPPORTED),
}


def _entry(sid: str) -> catalog.ServiceEntry:
    entry = catalog.get(sid)
    assert entry is not None, sid
    return entry


def test_catalog_has_exactly_the_r10_rows() -> None:
    rows = {(e.id, env) for e in catalog.CATALOG for env in e.targets}
    assert rows == set(R10)


@pytest.mark.parametrize(("service", "env"), sorted(R10))
def test_r10_row(service: str, env: str) -> None:
    kind, place, names, gate = R10[(service, env)]
    target = _entry(service).target(env)  # type: ignore[arg-type]
    assert target is not None
    assert target.kind == kind
    assert target.gate == gate
    if isinstance(target, ComposeTarget):
        assert (target.compose_service, (target.container_name,)) == (place, names)
    elif isinstance(target, K3sTarget):
        assert target.namespace == place
        assert tuple(d.name for d in target.deployments) == names
    else:
        assert isinstance(target, NoTarget)
        assert target.gate_reason


def test_seed_named_retag_names() -> None:
    # Seed: baidu-netdisk retags to baidu-netdisk and baidu-netdisk:<commit>; frontend to unidesk-frontend.
    def retag(sid: str) -> str:
        target = _entry(sid).target("prod")
        assert isinstance(target, ComposeTarget)
        return target.retag_name

    assert retag("baidu-netdisk") == "baidu-netdisk"
    assert retag("frontend") == "unidesk-frontend"


def test_dev_and_prod_never_share_a_container_or_retag_name() -> None:
    """Issue 12: both stacks deploy onto the same hosts; a Compose service offered in both envs has
    its own container and retag name in dev (the seed fixes prod's, and names no dev one)."""
    both = [
        e for e in catalog.CATALOG if all(isinstance(e.target(env), ComposeTarget) for env in ("dev", "prod"))
    ]
    assert {e.id for e in both} == {"baidu-netdisk", "findjob", "pipeline", "met-nonlinear", "k3sctl-adapter"}
    for e in both:
        dev, prod = e.target("dev"), e.target("prod")
        assert isinstance(dev, ComposeTarget) and isinstance(prod, ComposeTarget)
        assert (
            dev.container_name == f"{prod.container_name}-dev" and dev.retag_name == f"{prod.retag_name}-dev"
        )
        assert dev.compose_service == prod.compose_service  # one service name, in each stack's own project
        assert "containerName" in dev.assumed and "retag" in dev.assumed


def test_env_prefixes_and_repositories() -> None:
    entry = _entry("baidu-netdisk")
    assert entry.compose_env_prefix == "UNIDESK_BAIDU_NETDISK_DEPLOY_"
    assert entry.repository == "unidesk/baidu-netdisk"
    assert _entry("todo-note").compose_env_prefix == "UNIDESK_TODO_NOTE_DEPLOY_"
    assert catalog.K3S_ENV_PREFIX == "UNIDESK_DEPLOY_"
    for e in catalog.CATALOG:
        assert e.repository == f"unidesk/{e.id}"


def test_producers_and_sources() -> None:
    for e in catalog.CATALOG:
        expected = catalog.PRODUCER_BACKEND_CORE if e.id == "backend-core" else catalog.PRODUCER_USER_SERVICE
        assert e.producer == expected, e.id
    todo = _entry("todo-note")
    assert todo.source_repo == "https://gitee.com/Lyon1998/todo_note"
    assert todo.dockerfile == "Dockerfile"
    assert _entry("frontend").dockerfile == "src/components/frontend/Dockerfile"


def test_verification_kinds_and_secrets() -> None:
    kinds = {e.id: e.verification for e in catalog.CATALOG}
    assert kinds["todo-note"] == VerificationKind.TODO_NOTE_SYNTHETIC
    assert kinds["baidu-netdisk"] == VerificationKind.BAIDU_AUTH_GATE
    assert {k for k, v in kinds.items() if v != VerificationKind.STANDARD} == {"todo-note", "baidu-netdisk"}
    assert _entry("baidu-netdisk").required_secret_keys == (
        "UNIDESK_BAIDU_NETDISK_CLIENT_ID",
        "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
        "UNIDESK_BAIDU_NETDISK_TOKEN_KEY",
    )
    assert _entry("todo-note").health.path == "/api/health"


def test_frontend_dev_syncs_auth_first_and_only_there() -> None:
    syncing = [
        (e.id, env)
        for e in catalog.CATALOG
        for env, t in e.targets.items()
        if isinstance(t, K3sTarget) and t.pre_rollout == PreRollout.FRONTEND_AUTH_SYNC
    ]
    assert syncing == [("frontend", "dev")]


def test_code_queue_mgr_excludes_the_execution_plane() -> None:
    entry = _entry("code-queue-mgr")
    target = entry.target("prod")
    assert target is not None
    for item in ("scheduler", "runner", "tasks", "interrupt", "cancel"):
        assert any(item in t for t in target.excluded_targets), item
    assert entry.self_bootstrap_guard


def test_guarded_services() -> None:
    assert {e.id for e in catalog.CATALOG if e.self_bootstrap_guard} == {"code-queue", "code-queue-mgr"}


def test_assumptions_are_stated_where_the_seed_is_silent() -> None:
    cq = _entry("code-queue").target("dev")
    assert isinstance(cq, K3sTarget)
    assert "code-queue-{scheduler,read,write,provider-egress-proxy}-dev" in cq.assumed["deployments"]
    for e in catalog.CATALOG:
        assert e.assumed.get("healthPort") == "health port 8080 (seed names no port)", e.id
    # names the seed fixes are defaults, not guesses
    frontend = _entry("frontend").target("prod")
    assert isinstance(frontend, ComposeTarget)
    assert {"composeService", "containerName", "retag"}.isdisjoint(frontend.assumed)
    pm = _entry("project-manager").target("prod")
    assert isinstance(pm, ComposeTarget) and set(pm.assumed) == {"composeFiles", "retag"}


def test_services_for_env() -> None:
    dev = {e.id for e in catalog.services_for("dev")}
    prod = {e.id for e in catalog.services_for("prod")}
    assert "project-manager" not in dev and "project-manager" in prod
    assert "code-queue" in dev and "code-queue" in prod  # prod row is the structured refusal
    assert "code-queue-mgr" not in dev
