"""Plan documents (R4, R11, R12, R13, R14, R15, R16, R17, R18, R20): the reviewed dry-run content."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from artifact_cd import catalog, contract, plan
from artifact_cd.config import StackConfig, load_stack
from artifact_cd.gates import ApplyContext, Decision
from artifact_cd.scripts import SCRIPT_DIR, command_line

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = {
    "service",
    "env",
    "commit",
    "decision",
    "target",
    "registry",
    "requiredLabels",
    "source",
    "build",
    "steps",
    "verification",
    "rollback",
    "requiresSupervisorApproval",
    "affectedRuntime",
    "excludedTargets",
}


@pytest.fixture(scope="module", params=catalog.ENVS)
def cfg(request: pytest.FixtureRequest) -> StackConfig:
    return load_stack(ROOT, request.param)


def test_every_document_has_the_r12_keys(cfg: StackConfig) -> None:
    for doc in (p.to_json() for p in plan.plan_services(cfg)):
        assert set(doc) >= REQUIRED_KEYS, doc["service"]
        assert doc["build"]["willCompile"] is False
        assert doc["build"]["willRunCargoBuild"] is False
        assert doc["build"]["willRunDockerBuild"] is False
        assert doc["build"]["willRunDockerComposeBuild"] is False
        json.dumps(doc)  # serialisable


def test_registry_fields_in_dry_run(cfg: StackConfig) -> None:
    for p in plan.plan_services(cfg):
        if p.decision in (Decision.UNSUPPORTED, Decision.NOT_CONFIGURED):
            assert p.registry is None
            continue
        assert p.registry is not None and p.commit is not None
        reg = p.registry
        assert reg.digest is None
        assert "manifest HEAD" in reg.digest_source
        assert reg.image_ref == f"127.0.0.1:5000/unidesk/{p.service}:{p.commit}"
        assert reg.probe_url == f"http://127.0.0.1:5000/v2/unidesk/{p.service}/manifests/{p.commit}"
        assert len(reg.accept_media_types) == 4
        assert p.required_labels["org.opencontainers.image.revision"] == p.commit


def test_plan_covers_every_r10_row_of_the_env(cfg: StackConfig) -> None:
    services = {p.service for p in plan.plan_services(cfg)}
    assert services == {e.id for e in catalog.services_for(cfg.env)}


def test_manifest_check_comes_first_and_touches_nothing(cfg: StackConfig) -> None:
    for p in plan.plan_services(cfg):
        if not p.steps:
            continue
        first = p.steps[0]
        assert first.id == "manifest-check" and first.host == "d601" and not first.mutates
        assert first.args == ("--registry", "127.0.0.1:5000", "--repository", f"unidesk/{p.service}", "--tag", p.commit)
        assert not first.needs_manifest
        # every later step that changes a target consumes the manifest check's live values, so it
        # cannot run before the check passed (the auth sync is ordered after the import instead)
        for s in p.steps[1:]:
            assert s.needs_manifest or not s.mutates or s.id == "auth-sync", (p.service, s.id)


def test_step_scripts_are_named_files() -> None:
    names: set[str] = set()
    for stack in catalog.ENVS:
        cfg = load_stack(ROOT, stack)
        names |= {s.script for p in plan.plan_services(cfg) for s in p.steps if s.script}
        names |= {s.script for s in plan.plan_registry_host(cfg).steps if s.script}
    assert names == {
        "manifest-check.sh",
        "move-image.sh",
        "compose-deploy.sh",
        "k3s-import.sh",
        "k3s-verify.sh",
        "read-auth.sh",
        "registry-install.sh",
        "registry-probe.sh",
    }
    assert all("/" not in n for n in names)
    assert SCRIPT_DIR.name == "scripts"


def test_compose_master_shape_prod() -> None:
    cfg = load_stack(ROOT, "prod")
    p = plan.plan_service(cfg, "baidu-netdisk")
    assert [s.id for s in p.steps] == ["manifest-check", "transfer", "deploy"]
    transfer, deploy = p.steps[1], p.steps[2]
    assert transfer.host == deploy.host == "master"
    assert transfer.args[:2] == ("--mode", "tunnel")
    assert "--d601" in transfer.args
    args = list(deploy.args)
    assert args[args.index("--compose-service") + 1] == "baidu-netdisk"
    assert args[args.index("--container") + 1] == "baidu-netdisk-backend"
    assert args[args.index("--retag") + 1] == "baidu-netdisk"
    assert args[args.index("--env-prefix") + 1] == "UNIDESK_BAIDU_NETDISK_DEPLOY_"
    assert args[args.index("--verify") + 1] == "baidu-auth-gate"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--required-secret"] == [
        "UNIDESK_BAIDU_NETDISK_CLIENT_ID",
        "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
        "UNIDESK_BAIDU_NETDISK_TOKEN_KEY",
    ]
    assert p.target["recreateCommand"] == "docker compose up -d --no-build --no-deps --force-recreate baidu-netdisk"
    assert p.target["images"] == ["baidu-netdisk", f"baidu-netdisk:{p.commit}"]


def test_baidu_runtime_secrets_are_diagnosable_without_values() -> None:
    cfg = load_stack(ROOT, "prod")
    doc = plan.plan_service(cfg, "baidu-netdisk").to_json()
    rs = doc["runtimeSecrets"]
    assert set(rs) >= {"secretSource", "requiredSecretsPresent", "missingSecretKeys", "recommendedAction"}
    assert "/home/ubuntu/unidesk/.env.deploy" in rs["secretSource"]
    assert "recreate only baidu-netdisk" in rs["recommendedAction"]
    assert "runtimeSecrets" not in plan.plan_service(cfg, "frontend").to_json()


def test_d601_direct_shape() -> None:
    cfg = load_stack(ROOT, "dev")
    p = plan.plan_service(cfg, "findjob")
    assert [(s.id, s.host) for s in p.steps] == [("manifest-check", "d601"), ("pull", "d601"), ("deploy", "d601")]
    assert p.steps[1].args[:2] == ("--mode", "local")
    assert p.target["kubernetesObjects"] == []
    assert p.decision == Decision.PLANNED


def test_k3s_shape_backend_core_dev() -> None:
    cfg = load_stack(ROOT, "dev")
    p = plan.plan_service(cfg, "backend-core")
    assert [s.id for s in p.steps] == ["manifest-check", "import", "patch-backend-core-dev", "verify"]
    imp = p.steps[1]
    assert "/run/k3s/containerd/containerd.sock" in imp.args and "k8s.io" in imp.args
    patch = p.steps[2].patch
    assert patch is not None
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"127.0.0.1:5000/unidesk/backend-core:{p.commit}"
    assert container["name"] == "backend-core"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["UNIDESK_DEPLOY_COMMIT"] == p.commit
    assert env["UNIDESK_DEPLOY_DIGEST"] == plan.DIGEST
    assert patch["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
    assert patch["metadata"]["namespace"] == "unidesk-dev"
    assert patch["spec"]["template"]["metadata"]["annotations"]["unidesk.io/deploy-commit"] == p.commit
    verify = list(p.steps[3].args)
    assert verify[verify.index("--commit") + 1] == p.commit
    assert p.target["deployments"] == ["unidesk-dev/backend-core-dev"]
    text = json.dumps(p.to_json())
    for forbidden in ("NodePort", "hostPort", "LoadBalancer"):
        assert forbidden not in json.dumps(patch)
        assert f'"{forbidden}"' not in text


def test_frontend_dev_syncs_auth_before_patching() -> None:
    cfg = load_stack(ROOT, "dev")
    ids = [s.id for s in plan.plan_service(cfg, "frontend").steps]
    assert ids == ["manifest-check", "import", "auth-read", "auth-sync", "patch-frontend-dev", "verify"]
    assert ids.index("auth-sync") < ids.index("patch-frontend-dev")


def test_code_queue_dev_dry_run() -> None:
    cfg = load_stack(ROOT, "dev")
    doc = plan.plan_service(cfg, "code-queue").to_json()
    assert doc["decision"] == "gated"
    assert doc["requiresSupervisorApproval"] is True
    assert doc["selfBootstrapGuard"]["enabled"] is True
    assert [s["id"] for s in doc["steps"] if s["id"].startswith("patch-")] == [
        "patch-code-queue-scheduler-dev",
        "patch-code-queue-read-dev",
        "patch-code-queue-write-dev",
        "patch-code-queue-provider-egress-proxy-dev",
    ]
    assert any("production code-queue scheduler" in t for t in doc["excludedTargets"])
    assert doc["affectedRuntime"] and all("unidesk-dev" in a or "containerd" in a for a in doc["affectedRuntime"])
    assert doc["registry"]["tag"] == doc["commit"]  # commit tag provenance
    assert "pull-only" in doc["build"]["boundary"]


def test_code_queue_mgr_prod_dry_run() -> None:
    cfg = load_stack(ROOT, "prod")
    doc = plan.plan_service(cfg, "code-queue-mgr").to_json()
    assert doc["target"]["composeService"] == "code-queue-mgr"
    assert doc["target"]["containerName"] == "code-queue-mgr-backend"
    for word in ("scheduler", "runner", "tasks", "interrupt", "cancel"):
        assert any(word in t for t in doc["excludedTargets"]), word
    assert doc["decision"] == "gated"
    assert "selfBootstrapGuard" in doc


def test_code_queue_prod_unsupported_has_no_steps() -> None:
    cfg = load_stack(ROOT, "prod")
    p = plan.plan_service(cfg, "code-queue")
    assert p.decision == Decision.UNSUPPORTED
    assert p.steps == () and p.deploy_env == {} and p.affected_runtime == ()


def test_commit_override_and_rollback() -> None:
    cfg = load_stack(ROOT, "prod")
    older = "f" * 40
    p = plan.plan_service(cfg, "frontend", commit_override=older)
    assert p.commit == older
    assert all(older in s.args for s in p.steps if s.id in ("manifest-check", "deploy"))
    assert p.rollback["strategy"] == "redeploy-older-commit"
    assert "services.frontend.commit" in p.rollback["how"]


def test_resolved_args_replace_only_placeholders() -> None:
    cfg = load_stack(ROOT, "prod")
    deploy = plan.plan_service(cfg, "frontend").step_by_id["deploy"]
    digest, image_id = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    args = deploy.resolved_args(digest, image_id)
    assert plan.DIGEST not in args and plan.IMAGE_ID not in args
    assert args[args.index("--digest") + 1] == digest
    assert args[args.index("--image-id") + 1] == image_id
    assert shlex.split(command_line(args)) == ["bash", "-s", "--", *args]


def test_plan_is_deterministic_and_pure(cfg: StackConfig) -> None:
    assert plan.plan_stack(cfg) == plan.plan_stack(cfg)


def test_gated_context_changes_only_gated_docs() -> None:
    cfg = load_stack(ROOT, "dev")
    inside = plan.plan_stack(cfg, ApplyContext(code_queue_task_id="t1"))
    outside = plan.plan_stack(cfg)
    changed = {a["service"] for a, b in zip(inside["services"], outside["services"], strict=True) if a != b}
    assert changed == {"code-queue"}


def test_registry_host_plan() -> None:
    cfg = load_stack(ROOT, "prod")
    host = plan.plan_registry_host(cfg).to_json()
    assert host["managedByThisStack"] is True
    assert [s["id"] for s in host["steps"]] == [
        "registry-dirs",
        "registry-config",
        "registry-compose",
        "registry-unit",
        "registry-activate",
        "registry-acceptance",
    ]
    assert "127.0.0.1:5000:5000" in host["boundary"]["exposure"]
    assert set(host["files"]) == {"config", "compose", "unit"}
    assert "never deleted" in host["storagePolicy"]
    assert any("k3s" in d for d in host["mustNotDependOn"])
    assert len(host["cdFlow"]) == 7
    assert load_stack(ROOT, "dev").registry.manage is False


# --------------------------------------------------------------------------- typed steps and documents


def test_a_step_prints_its_typed_call_as_script_and_argv_in_the_document_order() -> None:
    cfg = load_stack(ROOT, "prod")
    deploy = plan.plan_service(cfg, "baidu-netdisk").step_by_id["deploy"]
    assert isinstance(deploy.call, contract.ComposeDeployArgs) and deploy.k8s is None
    assert deploy.script == contract.ComposeDeployArgs.script
    assert deploy.args == deploy.call.to_argv()
    assert deploy.call.required_secrets == ("UNIDESK_BAIDU_NETDISK_CLIENT_ID", "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
                                            "UNIDESK_BAIDU_NETDISK_TOKEN_KEY")  # fmt: skip
    doc = deploy.to_json()
    assert list(doc) == ["id", "host", "action", "script", "args", "mutates", "patch"]
    assert doc["args"] == list(deploy.args) and doc["patch"] is None


def test_a_k3s_patch_step_holds_a_typed_payload() -> None:
    cfg = load_stack(ROOT, "dev")
    p = plan.plan_service(cfg, "frontend")
    patch, sync = p.step_by_id["patch-frontend-dev"], p.step_by_id["auth-sync"]
    assert isinstance(patch.k8s, plan.DeploymentPatch) and patch.call is None
    assert patch.script is None and patch.args == () and patch.resolved_args("d", "i") == []
    assert patch.k8s.env == p.deploy_env and patch.k8s.annotations == p.annotations
    assert patch.patch == patch.k8s.to_json() and patch.needs_manifest
    assert isinstance(sync.k8s, plan.AuthSyncPatch) and not sync.needs_manifest
    assert sync.k8s.secret.key == "auth.json" and sync.patch is not None and sync.patch["configMap"]["key"] == "authSha256"


def test_a_step_is_either_a_script_call_or_a_patch() -> None:
    call = contract.ReadAuthArgs(config="/etc/x.json")
    body = plan.AuthSyncPatch(
        secret=plan.ObjectKey(namespace="n", name="s", key="k"), config_map=plan.ObjectKey(namespace="n", name="c", key="k")
    )
    with pytest.raises(ValueError, match="exactly one"):
        plan.Step(id="x", host="d601", action="a", mutates=False)
    with pytest.raises(ValueError, match="exactly one"):
        plan.Step(id="x", host="d601", action="a", call=call, k8s=body, mutates=False)


def test_target_documents_are_a_union_discriminated_on_kind(cfg: StackConfig) -> None:
    adapter: TypeAdapter[plan.TargetDoc] = TypeAdapter(plan.TargetDoc)
    kinds = {type(p.target) for p in plan.plan_services(cfg)}
    assert kinds <= {plan.ComposeTargetDoc, plan.K3sTargetDoc, plan.NoTargetDoc}
    for p in plan.plan_services(cfg):
        doc = p.target.to_json()
        again = adapter.validate_python(doc)
        assert type(again) is type(p.target) and again.to_json() == doc, p.service
        assert ("preRollout" in doc) == (p.service == "frontend" and cfg.env == "dev")


def test_one_compose_site_per_target_kind() -> None:
    cfg = load_stack(ROOT, "prod")
    for sid, host in (("backend-core", "master"), ("findjob", "d601")):
        entry = catalog.get(sid)
        assert entry is not None
        target = entry.target("prod")
        assert isinstance(target, catalog.ComposeTarget)
        site = plan.compose_site(cfg, target)
        p = plan.plan_service(cfg, sid)
        assert site.host == host == p.target["host"] == p.step_by_id["deploy"].host
        assert site.project is not None and site.project.project_name == p.target["composeProject"]
        assert p.affected_runtime[0].startswith(f"{site.where} Compose project {site.project.project_name}")


def test_the_deploy_stamp_is_the_contracts() -> None:
    cfg = load_stack(ROOT, "dev")
    compose, k3s = plan.plan_service(cfg, "findjob"), plan.plan_service(cfg, "backend-core")
    assert compose.commit is not None and k3s.commit is not None
    image = f"127.0.0.1:5000/unidesk/findjob:{compose.commit}"
    assert compose.deploy_env == contract.deploy_stamp("UNIDESK_FINDJOB_DEPLOY_", compose.commit, image, plan.DIGEST)
    image = f"127.0.0.1:5000/unidesk/backend-core:{k3s.commit}"
    assert k3s.annotations == contract.deploy_annotations("backend-core", k3s.commit, image, plan.DIGEST)
    assert k3s.deploy_env == {
        **contract.deploy_stamp(contract.K3S_ENV_PREFIX, k3s.commit, image, plan.DIGEST),
        "UNIDESK_DEPLOY_SERVICE": "backend-core",
    }
