"""The Pulumi program under mocks: what it registers per service of R10, and the exact commands.

R10 (the matrix), R11 (manifest first), R13 (k3s), R14/R16 (Compose), R17 (frontend auth sync),
R2/R13 (no exposure), R6/R12 (preview = dry-run: digest null), R7 (registry host, storage kept).
The live view is the default one (tests/program/conftest.py): every service live on its desired
commit, so a gated service without its approval is held at that commit (R20).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from artifact_cd import plan as core_plan
from artifact_cd import scripts
from artifact_cd.config import StackConfig, parse_stack_config
from artifact_cd.plan import plan_registry_host, plan_services, registry_probe_args

from .program_support import (
    FAKE_AUTH,
    FAKE_SECRETS,
    GATED,
    FakeHosts,
    approved,
    auth_sha256,
    fake_digest,
    stack_config,
    with_mode_verify,
)

COMMAND = "command:remote:Command"
DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"
SECRET_PATCH = "kubernetes:core/v1:SecretPatch"
CONFIGMAP_PATCH = "kubernetes:core/v1:ConfigMapPatch"
COMPOSE = "unidesk:cd:ComposeServiceConsumer"
K3S = "unidesk:cd:K3sServiceConsumer"
REGISTRY = "unidesk:registry:ArtifactRegistryHost"
ALLOWED_TYPES = {
    "pulumi:pulumi:Stack",
    "pulumi:providers:kubernetes",
    COMMAND,
    DEPLOYMENT_PATCH,
    SECRET_PATCH,
    CONFIGMAP_PATCH,
    COMPOSE,
    K3S,
    REGISTRY,
}

CODE_QUEUE_DEV = [
    "code-queue-provider-egress-proxy-dev",
    "code-queue-read-dev",
    "code-queue-scheduler-dev",
    "code-queue-write-dev",
]
# R10, written out independently of the catalog: service -> (component, [(child step, host)], deployments)
CM = [("manifest-check", "d601"), ("transfer", "master"), ("deploy", "master")]
CD = [("manifest-check", "d601"), ("pull", "d601"), ("deploy", "d601")]
KS = [("manifest-check", "d601"), ("import", "d601"), ("verify", "d601")]
KS_AUTH = [("manifest-check", "d601"), ("import", "d601"), ("auth-read", "master"), ("verify", "d601")]
R10: dict[str, dict[str, tuple[str, list[tuple[str, str]], list[str]] | None]] = {
    "dev": {
        "backend-core": (K3S, KS, ["unidesk-dev/backend-core-dev"]),
        "baidu-netdisk": (COMPOSE, CM, []),
        "frontend": (K3S, KS_AUTH, ["unidesk-dev/frontend-dev"]),
        "decision-center": (K3S, KS, ["unidesk-dev/decision-center-dev"]),
        "mdtodo": (K3S, KS, ["unidesk-dev/mdtodo-dev"]),
        "claudeqq": (K3S, KS, ["unidesk-dev/claudeqq-dev"]),
        "findjob": (COMPOSE, CD, []),
        "pipeline": (COMPOSE, CD, []),
        "met-nonlinear": None,  # plan-only
        "k3sctl-adapter": None,  # plan-only
        "code-queue": (K3S, KS, [f"unidesk-dev/{d}" for d in CODE_QUEUE_DEV]),  # gated: held (R20)
    },
    "prod": {
        "backend-core": (COMPOSE, CM, []),
        "baidu-netdisk": (COMPOSE, CM, []),
        "frontend": (COMPOSE, CM, []),
        "decision-center": (K3S, KS, ["unidesk/decision-center"]),
        "mdtodo": (K3S, KS, ["unidesk/mdtodo"]),
        "claudeqq": (K3S, KS, ["unidesk/claudeqq"]),
        "project-manager": (COMPOSE, CM, []),
        "oa-event-flow": (COMPOSE, CM, []),
        "todo-note": (COMPOSE, CM, []),
        "code-queue-mgr": (COMPOSE, CM, []),  # gated (supervisor): held at its live commit (R20)
        "findjob": (COMPOSE, CD, []),
        "pipeline": (COMPOSE, CD, []),
        "met-nonlinear": None,
        "k3sctl-adapter": None,
        "code-queue": None,  # unsupported in prod
    },
}


def _cfg(stack: str) -> Any:
    return parse_stack_config(stack_config(stack), stack)


def _plans(stack: str) -> dict[str, Any]:
    return {p.service: p for p in plan_services(_cfg(stack))}


def _up_both_stacks(
    engine: Any, configure: Callable[[str], dict[str, Any]]
) -> dict[str, tuple[Any, FakeHosts]]:
    """`pulumi up` of dev and prod against fake hosts; the registry acceptance decides healthy."""
    from components import registry_host

    original = registry_host.health_decide
    registry_host.health_decide = lambda facts: {"decision": "healthy"}
    try:
        out = {}
        for stack in ("dev", "prod"):
            hosts = FakeHosts()
            run = engine.run_program(
                stack, preview=False, config=configure(stack), secrets=FAKE_SECRETS, environ={},
                executor=hosts,
            )  # fmt: skip
            out[stack] = (run, hosts)
        return out
    finally:
        registry_host.health_decide = original


@pytest.fixture(scope="module")
def up_runs(engine: Any) -> dict[str, tuple[Any, FakeHosts]]:
    """As configured: gated services are held (approved_up_runs approves them)."""
    return _up_both_stacks(engine, stack_config)


@pytest.fixture(scope="module")
def approved_up_runs(engine: Any) -> dict[str, tuple[Any, FakeHosts]]:
    out = _up_both_stacks(engine, approved)
    for run, _hosts in out.values():
        assert run.error is None, run.error
    return out


def _approved_up(
    approved_up_runs: dict[str, tuple[Any, FakeHosts]], stack: str
) -> tuple[Any, FakeHosts, StackConfig]:
    """The stack's approved ``up`` (run, fake hosts) and the config it ran with."""
    run, hosts = approved_up_runs[stack]
    return run, hosts, parse_stack_config(approved(stack), stack)


# --------------------------------------------------------------------------- R10 shapes


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r10_component_type_and_children_per_service_in_preview(cached_run: Any, stack: str) -> None:
    run = cached_run(stack)
    assert run.error is None, run.error
    cfg = _cfg(stack)
    assert set(run.outputs["plans"]) == set(R10[stack])
    for service, expected in R10[stack].items():
        components = [r for r in run.resources if r.name == service and r.parent is None]
        children = run.children(service)
        if expected is None:
            assert components == [] and children == [], f"{service} must register nothing in {stack}"
            continue
        kind, commands, deployments = expected
        assert [c.type for c in components] == [kind], service
        got_commands = [(c.name, c.inputs["connection"]["host"]) for c in children if c.type == COMMAND]
        hosts = {"d601": cfg.hosts.d601.host, "master": cfg.hosts.master.host}
        assert sorted(got_commands) == sorted((f"{service}-{sid}", hosts[h]) for sid, h in commands)
        patches = [c for c in children if c.type == DEPLOYMENT_PATCH]
        got_deployments = [
            f"{p.inputs['metadata']['namespace']}/{p.inputs['metadata']['name']}" for p in patches
        ]
        assert sorted(got_deployments) == sorted(deployments)
        auth = sorted(c.type for c in children if c.type in (SECRET_PATCH, CONFIGMAP_PATCH))
        assert auth == ([CONFIGMAP_PATCH, SECRET_PATCH] if (stack, service) == ("dev", "frontend") else [])
        assert {c.type for c in children} <= {COMMAND, DEPLOYMENT_PATCH, SECRET_PATCH, CONFIGMAP_PATCH}
        held = service == GATED[stack]  # R20: no approval; live on its commit, so held there
        for child in children:
            ignored = set(child.options["ignoreChanges"])
            if held:
                assert set(child.inputs) <= ignored, (child.name, "a held resource ignores every input")
            else:
                assert ignored <= {
                    "triggers[1]",
                    'spec.template.metadata.annotations["unidesk.io/deploy-repair"]',
                }


def test_r10_code_queue_dev_with_approval_patches_only_the_execution_slice_fake_hosts(
    approved_up_runs: Any,
) -> None:
    run, _ = approved_up_runs["dev"]
    patches = [r for r in run.children("code-queue") if r.type == DEPLOYMENT_PATCH]
    assert sorted(p.inputs["metadata"]["name"] for p in patches) == CODE_QUEUE_DEV
    assert {p.inputs["metadata"]["namespace"] for p in patches} == {"unidesk-dev"}
    assert run.named("code-queue").type == K3S


def test_r10_code_queue_mgr_prod_with_approval_is_a_single_compose_service_fake_hosts(
    approved_up_runs: Any,
) -> None:
    run, hosts = approved_up_runs["prod"]
    assert run.named("code-queue-mgr").type == COMPOSE
    deploy = next(c for c in hosts.calls if c.name == "code-queue-mgr-deploy")
    argv = deploy.create.split()
    assert argv[argv.index("--compose-service") + 1] == "code-queue-mgr"
    assert argv[argv.index("--container") + 1] == "code-queue-mgr-backend"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r2_r13_no_exposure_resource_is_ever_registered(cached_run: Any, up_runs: Any, stack: str) -> None:
    for run in (cached_run(stack), up_runs[stack][0], cached_run(stack, config=approved(stack))):
        types = {r.type for r in run.resources}
        assert types <= ALLOWED_TYPES, types - ALLOWED_TYPES
        for r in run.resources:
            if r.type.startswith("kubernetes:"):
                text = json.dumps(r.redacted_inputs, default=str)
                for word in ("nodePort", "NodePort", "hostPort", "LoadBalancer", "Ingress", '"ports"'):
                    assert word not in text, (r.name, word)


# --------------------------------------------------------------------------- exact commands


def _expected_triggers(commit: str, step: core_plan.Step, slot: str = "live:in-sync") -> list[str]:
    """[commit, live slot, sha256 of the argv template]: the script text is no trigger."""
    assert step.script is not None
    argv_hash = hashlib.sha256("\0".join(step.args).encode()).hexdigest()
    return [commit, slot, argv_hash]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r11_each_command_runs_exactly_the_plan_step_script_and_argv_fake_hosts(
    approved_up_runs: Any, stack: str
) -> None:
    run, hosts, cfg = _approved_up(approved_up_runs, stack)
    by_name = {c.name: c for c in hosts.calls}
    commands = {r.name: r for r in run.of_type(COMMAND)}
    checked = 0
    for plan in plan_services(cfg):
        if plan.decision.value != "planned":
            assert not [r for r in commands.values() if r.parent == plan.service], plan.service
            continue
        assert plan.registry is not None and plan.commit is not None
        repo, commit = plan.registry.repository, plan.commit
        digest, image_id = fake_digest("manifest", repo, commit), fake_digest("config", repo, commit)
        for step in plan.steps:
            if step.script is None:
                continue
            name = f"{plan.service}-{step.id}"
            host = {"d601": cfg.hosts.d601, "master": cfg.hosts.master}[step.host]
            call = by_name[name]
            expected_create = scripts.command_line(step.resolved_args(digest, image_id))
            assert call.create == expected_create
            assert (call.host, call.port, call.user) == (host.host, host.port, host.user)
            assert call.stdin == scripts.script_text(step.script) and call.script == step.script
            res = commands[name]
            assert res.parent == plan.service
            assert res.inputs["create"] == expected_create and res.inputs["stdin"] == call.stdin
            auth = "auth:" + auth_sha256(FAKE_AUTH) if step.id == "auth-read" else "live:in-sync"
            assert res.inputs["triggers"] == _expected_triggers(commit, step, auth)
            assert res.options["ignoreChanges"] == ([] if step.id == "auth-read" else ["triggers[1]"])
            assert "delete" not in res.inputs
            if step.id == "deploy":  # an update re-verifies read-only (compose-deploy.sh --mode verify)
                assert res.inputs["update"] == with_mode_verify(expected_create)
            else:
                assert "update" not in res.inputs
            if step.needs_manifest:
                assert digest in call.create and image_id in call.create
                assert f"{plan.service}-manifest-check" in res.options["dependsOn"]
            checked += 1
    assert checked == len(hosts.calls) - (6 if stack == "prod" else 0)  # prod: + the registry install


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r6_preview_commands_that_need_the_live_digest_are_unknown_the_others_exact(
    cached_run: Any, engine: Any, stack: str
) -> None:
    run = cached_run(stack)
    for plan in _plans(stack).values():
        for step in plan.steps:
            if step.script is None or plan.decision.value != "planned":
                continue
            res = run.named(f"{plan.service}-{step.id}")
            if step.needs_manifest:
                assert res.inputs["create"] is engine.UNKNOWN
            else:
                assert res.inputs["create"] == scripts.command_line(step.args)
            assert res.inputs["stdin"] == scripts.script_text(step.script)


def test_r11_dependency_order_manifest_check_first_then_move_then_deploy_fake_hosts(
    approved_up_runs: Any,
) -> None:
    for stack in ("dev", "prod"):
        run, hosts = approved_up_runs[stack]
        order = hosts.names()
        for service, expected in R10[stack].items():
            if expected is None:
                continue
            names = [f"{service}-{sid}" for sid, _ in expected[1]]
            assert [n for n in order if n in names] == names, (stack, service)
            verify = run.named(f"{service}-{expected[1][-1][0]}")
            if expected[0] == K3S:  # verify waits for every Deployment patch
                patches = {p.name for p in run.children(service) if p.type == DEPLOYMENT_PATCH}
                assert patches <= set(verify.options["dependsOn"])


# --------------------------------------------------------------------------- k3s patches


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r13_deployment_patch_image_env_annotations_forced_and_retained_fake_hosts(
    approved_up_runs: Any, stack: str
) -> None:
    run, _, cfg = _approved_up(approved_up_runs, stack)
    patches = run.of_type(DEPLOYMENT_PATCH)
    assert patches
    for p in patches:
        service = p.parent
        commit = cfg.services[service].commit
        image = f"127.0.0.1:5000/unidesk/{service}:{commit}"
        digest = fake_digest("manifest", f"unidesk/{service}", commit)
        meta, template = p.inputs["metadata"], p.inputs["spec"]["template"]
        assert meta["annotations"]["pulumi.com/patchForce"] == "true"
        expected_ann = {
            "unidesk.io/deploy-commit": commit,
            "unidesk.io/deploy-image": image,
            "unidesk.io/deploy-digest": digest,
            "unidesk.io/deploy-service": service,
        }
        assert {k: v for k, v in meta["annotations"].items() if k != "pulumi.com/patchForce"} == expected_ann
        assert template["metadata"]["annotations"] == expected_ann
        (container,) = template["spec"]["containers"]
        assert container["image"] == image
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {
            "UNIDESK_DEPLOY_COMMIT": commit,
            "UNIDESK_DEPLOY_IMAGE": image,
            "UNIDESK_DEPLOY_DIGEST": digest,
            "UNIDESK_DEPLOY_SERVICE": service,
        }
        assert p.options["retainOnDelete"] is True and p.options["protect"] is False
        assert p.options["provider"] and "::d601-k3s::" in p.options["provider"]
        assert (
            f"{service}-import" in p.options["dependsOn"]
            or f"{service}-auth-sync-secret" in p.options["dependsOn"]
        )


def test_r17_frontend_dev_auth_sync_patches_secret_and_configmap_before_the_rollout_fake_hosts(
    approved_up_runs: Any,
) -> None:
    run, hosts = approved_up_runs["dev"]
    secret, cmap = run.named("frontend-auth-sync-secret"), run.named("frontend-auth-sync-configmap")
    auth_json = json.dumps({"clientId": "frontend", "clientSecret": "FAKE-AUTH-CLIENT-SECRET-93ac11"},
                           sort_keys=True, separators=(",", ":"))  # fmt: skip
    assert secret.inputs["metadata"] == {
        "name": "frontend-dev-auth", "namespace": "unidesk-dev", "annotations": {"pulumi.com/patchForce": "true"},
    }  # fmt: skip
    assert secret.inputs["stringData"] == {"auth.json": auth_json}
    assert secret.input_is_secret("stringData.auth.json")
    assert cmap.inputs["metadata"]["name"] == "frontend-dev-auth-meta"
    assert cmap.inputs["data"] == {"authSha256": hashlib.sha256(auth_json.encode()).hexdigest()}
    patch = run.named("frontend-patch-frontend-dev")
    assert {"frontend-auth-sync-secret", "frontend-auth-sync-configmap"} <= set(patch.options["dependsOn"])
    read = run.named("frontend-auth-read")
    assert {"stdout", "stderr"} <= set(read.options["additionalSecretOutputs"])
    assert read.inputs["logging"] == "none"
    assert secret.options["retainOnDelete"] and cmap.options["retainOnDelete"]
    order = hosts.names()
    assert order.index("frontend-import") < order.index("frontend-auth-read") < order.index("frontend-verify")


# --------------------------------------------------------------------------- registry host


def test_r7_registry_host_steps_in_order_retained_never_deleting(cached_run: Any) -> None:
    run = cached_run("prod")
    cfg = _cfg("prod")
    reg_plan = plan_registry_host(cfg)
    assert run.named("artifact-registry").type == REGISTRY
    children = run.children("artifact-registry")
    assert [c.name for c in children if c.type == COMMAND] == [
        f"artifact-registry-{s.id}" for s in reg_plan.steps
    ]
    previous = None
    for step, res in zip(reg_plan.steps, children, strict=True):
        assert res.options["retainOnDelete"] is True
        assert "delete" not in res.inputs
        assert res.inputs["create"] == scripts.command_line(step.args)
        assert step.script is not None and res.inputs["stdin"] == scripts.script_text(step.script)
        assert res.inputs["connection"]["host"] == cfg.hosts.d601.host
        if previous is not None:
            assert previous in res.options["dependsOn"]
        previous = res.name
    files = {f["path"]: f["sha256"] for f in reg_plan.files.values()}
    for step in reg_plan.steps:
        if step.args[0] == "write":
            assert (
                files[step.args[step.args.index("--path") + 1]] == step.args[step.args.index("--sha256") + 1]
            )
    acceptance = run.named("artifact-registry-registry-acceptance")
    assert acceptance.inputs["create"] == scripts.command_line(registry_probe_args(cfg))


def test_r7_registry_host_only_where_registry_manage_is_true(cached_run: Any) -> None:
    assert not [r for r in cached_run("dev").resources if r.type == REGISTRY]  # Pulumi.dev.yaml: manage false
    cfg = stack_config("dev")
    cfg["registry"]["manage"] = True
    assert [r.name for r in cached_run("dev", config=cfg).resources if r.type == REGISTRY] == [
        "artifact-registry"
    ]


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r12_preview_plan_outputs_equal_the_offline_plan(
    cached_run: Any, stack: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from artifact_cd.cli import main

    for var in ("UNIDESK_CODE_QUEUE_TASK_ID", "CODE_QUEUE_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert main(["plan", "--stack", stack]) == 0
    offline = json.loads(capsys.readouterr().out)
    # the offline plan reads the shipped Pulumi.<stack>.yaml, which pins no host key (stack_config
    # pins fake prod keys; a pinned D601 key adds --d601-host-key to the transfer argv): compare
    # the preview of that very file
    shipped = stack_config(stack)
    for host in shipped["hosts"].values():
        host.pop("hostKey", None)
    run = cached_run(stack, config=shipped)
    assert run.outputs["plans"] == {doc["service"]: doc for doc in offline["services"]}
    assert run.outputs["registryHost"] == offline["registryHost"]
    assert all(
        doc["registry"] is None or doc["registry"]["digest"] is None for doc in run.outputs["plans"].values()
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_r12_up_with_fake_hosts_exports_the_live_digest_and_verdicts(
    approved_up_runs: Any, cached_run: Any, stack: str
) -> None:
    """The plan documents are the offline plan's in up as in preview (a preview after an up shows
    no output change); the live digest, image ID and verdict of each consumer are in `results`."""
    run, _ = approved_up_runs[stack]
    preview = cached_run(stack, config=approved(stack))
    assert run.outputs["plans"] == preview.outputs["plans"]
    for service, doc in run.outputs["plans"].items():
        assert doc["registry"] is None or doc["registry"]["digest"] is None
        if doc["decision"] == "planned":
            repo, commit = doc["registry"]["repository"], doc["commit"]
            result = run.outputs["results"][service]
            assert result["commit"] == commit
            assert result["digest"] == fake_digest("manifest", repo, commit)
            assert result["imageId"] == fake_digest("config", repo, commit)
            assert result["verdict"]["ok"] is True
        else:
            assert service not in run.outputs["results"]
    assert run.outputs["held"] == []
    if stack == "prod":
        assert run.outputs["registryAcceptance"]["decision"] == "healthy"
    else:
        assert "registryAcceptance" not in run.outputs


def test_fake_hosts_outputs_give_a_wellformed_live_digest(cached_run: Any) -> None:
    cfg = stack_config("dev")
    cfg["services"] = {"findjob": cfg["services"]["findjob"]}
    run = cached_run("dev", preview=False, config=cfg)  # cached_run: a FakeHosts executor
    assert run.error is None, run.error
    digest = run.outputs["results"]["findjob"]["digest"]
    assert digest.startswith("sha256:") and len(digest) == 71
    assert digest in run.named("findjob-deploy").inputs["create"]


def test_a_configured_host_key_is_pinned_on_that_hosts_connections(cached_run: Any) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnly0000000000000000000"
    cfg = stack_config("prod")
    cfg["hosts"]["d601"]["hostKey"] = key
    run = cached_run("prod", config=cfg)
    assert run.error is None, run.error
    for r in run.of_type(COMMAND):
        pinned = r.inputs["connection"].get("hostKey")
        other = cfg["hosts"]["master"].get("hostKey")  # prod pins both (program_support.FAKE_HOST_KEYS)
        assert pinned == (key if r.inputs["connection"]["host"] == cfg["hosts"]["d601"]["host"] else other), (
            r.name
        )
