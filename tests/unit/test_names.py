"""Names a stack sets (issue 11 item 3) and ownership of live targets (issue 12, first bullet).

- every name the catalog guesses can be set in ``services.<id>.names`` and reaches the steps'
  exact args (R12: the dry-run shows the target it will touch), the target document, the
  verification and the live probe's spec;
- ``plan`` lists every name with ``source: default|config``; a guess the stack overrides is no
  longer listed in ``assumptions`` (and the terminal table counts what is left);
- a bad or misplaced name is refused naming ``services.<id>.names.<key>`` and the fix;
- two services of a stack (R10 targets), or the dev and prod stacks, never own one container,
  retag name, Deployment or Compose service on one host: refused offline, naming the key to change
  and both stacks.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import catalog, ownership
from artifact_cd.cli import main
from artifact_cd.config import (
    PROJECT,
    ConfigError,
    Problem,
    StackConfig,
    load_stack,
    parse_stack_config,
    read_stack_file,
)
from artifact_cd.contract import ComposeDeployArgs, K3sVerifyArgs
from artifact_cd.liveprobe import probe_requests
from artifact_cd.plan import DeploymentPatch, plan_service
from artifact_cd.plan.table import format_plan_service

ROOT = Path(__file__).resolve().parents[2]


def raw(stack: str) -> dict[str, Any]:
    return copy.deepcopy(read_stack_file(ROOT / f"Pulumi.{stack}.yaml"))


def named(stack: str, **names: dict[str, Any]) -> dict[str, Any]:
    """The shipped stack with ``names`` set per service (``findjob={...}``; ``_`` for ``-``)."""
    doc = raw(stack)
    for sid, values in names.items():
        doc["services"].setdefault(sid.replace("_", "-"), {"commit": "1" * 40})["names"] = values
    return doc


def refused(doc: dict[str, Any], stack: str) -> list[Problem]:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(doc, stack)
    return error.value.problems


def keys(problems: list[Problem]) -> list[str]:
    return [p.key for p in problems]


# --------------------------------------------------------------------------- overrides reach the steps


def test_r12_compose_names_set_in_config_reach_the_deploy_args_target_and_verification() -> None:
    names = {
        "containerName": "core",
        "composeService": "backend",
        "retag": "unidesk/backend-core-live",
        "healthPort": 9000,
        "healthPath": "/api/healthz",
    }
    cfg = parse_stack_config(named("prod", backend_core=names), "prod")
    plan = plan_service(cfg, "backend-core")
    deploy = plan.step_by_id["deploy"].call
    assert isinstance(deploy, ComposeDeployArgs)
    assert (deploy.container, deploy.compose_service, deploy.retag) == (
        "core",
        "backend",
        "unidesk/backend-core-live",
    )
    assert (deploy.health_port, deploy.health_path) == (9000, "/api/healthz")
    argv = deploy.to_argv()
    assert (
        argv[argv.index("--container") + 1] == "core"
        and argv[argv.index("--compose-service") + 1] == "backend"
    )
    target = plan.target.to_json()
    assert (target["containerName"], target["composeService"]) == ("core", "backend")
    assert target["images"][0] == "unidesk/backend-core-live"
    assert target["recreateCommand"].endswith("--force-recreate backend")
    assert plan.verification.health == "/api/healthz (port 9000)"
    assert any("service backend (container core)" in a for a in plan.affected_runtime)
    # the live view probes the names the deploy uses
    (spec,) = probe_requests(cfg, [plan])["master"].spec.compose
    assert (spec.container, spec.health_port, spec.health_path) == ("core", 9000, "/api/healthz")


def test_r12_k3s_names_set_in_config_reach_the_patches_and_the_verify_step() -> None:
    names = {
        "deployments": [{"name": "dc-api", "container": "api"}, {"name": "dc-worker", "container": "worker"}],
        "kubernetesService": "dc-http",
        "healthPort": 3000,
        "healthPath": "/healthz",
    }
    cfg = parse_stack_config(named("dev", decision_center=names), "dev")
    plan = plan_service(cfg, "decision-center")
    patches = [s.k8s for s in plan.steps if isinstance(s.k8s, DeploymentPatch)]
    assert [(p.namespace, p.name, p.container) for p in patches] == [
        ("unidesk-dev", "dc-api", "api"),
        ("unidesk-dev", "dc-worker", "worker"),
    ]
    verify = plan.step_by_id["verify"].call
    assert isinstance(verify, K3sVerifyArgs)
    assert (verify.deployments, verify.service, verify.port, verify.health_path) == (
        ("dc-api", "dc-worker"),
        "dc-http",
        3000,
        "/healthz",
    )
    target = plan.target.to_json()
    assert target["deployments"] == ["unidesk-dev/dc-api", "unidesk-dev/dc-worker"]
    assert target["containers"] == {"dc-api": "api", "dc-worker": "worker"}
    assert target["kubernetesService"] == "dc-http"
    (spec,) = probe_requests(cfg, [plan])["d601"].spec.k3s
    assert [(d.name, d.container) for d in spec.deployments] == [("dc-api", "api"), ("dc-worker", "worker")]
    assert (spec.kubernetes_service, spec.health_port) == ("dc-http", 3000)


def test_an_unset_name_keeps_the_catalog_default() -> None:
    cfg = parse_stack_config(named("prod", findjob={"healthPort": 8081}), "prod")
    deploy = plan_service(cfg, "findjob").step_by_id["deploy"].call
    assert isinstance(deploy, ComposeDeployArgs)
    assert (deploy.container, deploy.retag, deploy.health_port, deploy.health_path) == (
        "findjob-backend",
        "findjob",
        8081,
        "/health",
    )


# --------------------------------------------------------------------------- default vs config in plan


def test_r12_plan_lists_every_name_with_its_source_and_drops_the_guesses_a_stack_set() -> None:
    default = plan_service(parse_stack_config(raw("prod"), "prod"), "oa-event-flow").to_json()
    assert list(default["names"]) == [
        "composeService",
        "containerName",
        "composeFiles",
        "retag",
        "healthPort",
        "healthPath",
    ]
    assert {k: (v["value"], v["source"], v["assumed"]) for k, v in default["names"].items()} == {
        "composeService": ("oa-event-flow", "default", False),  # the seed's dry-run table fixes these
        "containerName": ("oa-event-flow-backend", "default", False),
        "composeFiles": ([], "default", True),
        "retag": ("oa-event-flow", "default", True),
        "healthPort": (8080, "default", True),
        "healthPath": ("/health", "default", False),
    }
    assert default["names"]["retag"]["key"] == "services.oa-event-flow.names.retag"
    assert "health port 8080 (seed names no port)" in default["assumptions"]
    assert "retag name oa-event-flow (seed names none)" in default["assumptions"]

    cfg = parse_stack_config(
        named("prod", oa_event_flow={"healthPort": 8080, "retag": "oa-event-flow"}), "prod"
    )
    doc = plan_service(cfg, "oa-event-flow").to_json()
    assert doc["names"]["healthPort"] == {
        "value": 8080,
        "source": "config",  # set in the stack, even to the default's value
        "key": "services.oa-event-flow.names.healthPort",
        "assumed": False,
    }
    assert (
        doc["names"]["retag"]["source"] == "config" and doc["names"]["containerName"]["source"] == "default"
    )
    assert set(default["assumptions"]) - set(doc["assumptions"]) == {
        "health port 8080 (seed names no port)",
        "retag name oa-event-flow (seed names none)",
    }
    # every other key of the document is the same
    assert {k: v for k, v in doc.items() if k not in ("names", "assumptions")} == {
        k: v for k, v in default.items() if k not in ("names", "assumptions")
    }


def test_the_terminal_table_counts_the_guesses_left_and_the_names_set() -> None:
    before = format_plan_service(
        plan_service(parse_stack_config(raw("prod"), "prod"), "oa-event-flow").to_json()
    )
    cfg = parse_stack_config(
        named("prod", oa_event_flow={"healthPort": 8080, "retag": "oa-event-flow"}), "prod"
    )
    doc = plan_service(cfg, "oa-event-flow").to_json()
    after = format_plan_service(doc)
    assert (
        f"assumptions: {len(doc['assumptions']) + 2} (" in before
        and "names set in stack config" not in before
    )
    assert f"assumptions: {len(doc['assumptions'])} (" in after
    assert "names set in stack config: 2" in after


def test_a_service_without_a_target_has_no_names() -> None:
    doc = plan_service(parse_stack_config(raw("prod"), "prod"), "code-queue").to_json()
    assert doc["names"] == {}


# --------------------------------------------------------------------------- refused names

BAD_NAMES: list[tuple[str, str, str, Any, str]] = [
    # (stack, service, key, value, what the message says)
    ("prod", "findjob", "containerName", "Findjob Backend", "is not a lowercase name"),
    ("prod", "findjob", "containerName", "-x", "is not a lowercase name"),
    ("prod", "findjob", "composeService", "a;rm -rf /", "is not a lowercase name"),
    ("prod", "findjob", "retag", "findjob:latest", "is not an image name without tag"),
    ("prod", "findjob", "retag", "Findjob", "is not an image name without tag"),
    ("prod", "findjob", "healthPort", 0, "greater than or equal to 1"),
    ("prod", "findjob", "healthPort", 70000, "less than or equal to 65535"),
    ("prod", "findjob", "healthPort", "8080", "valid integer"),
    ("prod", "findjob", "healthPath", "health", "is not an HTTP path"),
    ("prod", "findjob", "healthPath", "/he alth", "is not an HTTP path"),
    ("prod", "findjob", "composeFiles", ["compose/../x.yml"], "'..' segment"),
    ("prod", "findjob", "composeFiles", ["x.yml;rm"], "is not a Compose file path"),
    ("prod", "findjob", "composeFiles", [], "must list 1 to 16 items, not 0"),
    ("prod", "findjob", "composeFiles", ["a.yml", "a.yml"], "composeFiles names a.yml more than once"),
    ("prod", "decision-center", "kubernetesService", "1svc", "is not a Kubernetes Service name"),
    ("prod", "decision-center", "deployments", [], "must list 1 to 16 items, not 0"),
    (
        "prod",
        "decision-center",
        "deployments",
        [{"name": "Dc", "container": "c"}],
        "is not a Kubernetes name",
    ),
    ("prod", "decision-center", "deployments", [{"name": "dc", "container": "a.b"}], "container name"),
    ("prod", "decision-center", "deployments", [{"name": "dc"}], "is required"),
    (
        "prod",
        "decision-center",
        "deployments",
        [{"name": "dc", "container": "a"}, {"name": "dc", "container": "b"}],
        "deployments names dc more than once",
    ),
]


@pytest.mark.parametrize(("stack", "service", "key", "value", "says"), BAD_NAMES)
def test_a_bad_name_is_refused_naming_its_key_and_the_fix(
    stack: str, service: str, key: str, value: Any, says: str
) -> None:
    (problem,) = refused(named(stack, **{service.replace("-", "_"): {key: value}}), stack)
    assert problem.key.startswith(f"services.{service}.names.{key}"), problem
    assert says in problem.message, problem.message
    assert "pulumi config" in problem.fix
    assert problem.render().startswith(f"{PROJECT}:services.{service}.names.{key}")


def test_an_unknown_name_key_is_refused() -> None:
    (problem,) = refused(named("prod", findjob={"container": "x"}), "prod")
    assert problem.key == "services.findjob.names.container"
    assert problem.message == "is not a known setting" and "pulumi config rm --path" in problem.fix


@pytest.mark.parametrize(
    ("stack", "service", "names", "bad"),
    [
        ("prod", "findjob", {"deployments": [{"name": "f", "container": "f"}]}, "deployments"),
        ("prod", "findjob", {"kubernetesService": "f"}, "kubernetesService"),
        ("dev", "decision-center", {"containerName": "dc"}, "containerName"),
        ("dev", "frontend", {"retag": "frontend", "healthPort": 80}, "retag"),  # k3s in dev, Compose in prod
        ("prod", "code-queue", {"healthPort": 80}, "healthPort"),  # no prod target: no names
    ],
)
def test_a_name_of_another_target_kind_is_refused(
    stack: str, service: str, names: dict[str, Any], bad: str
) -> None:
    (problem,) = refused(named(stack, **{service.replace("-", "_"): names}), stack)
    assert problem.key == f"services.{service}.names.{bad}"
    assert "does not apply" in problem.message and "which takes" in problem.message
    assert problem.fix == f"pulumi config rm --path 'services.{service}.names.{bad}'"


def test_compose_files_set_in_config_reach_the_deploy_argv_in_order() -> None:
    """composeFiles reaches compose-deploy.sh as one --compose-file per file, in the configured order
    (each a `-f` of every Compose call there); the plan shows them with source config. Unset: no
    --compose-file at all (Compose's own discovery, COMPOSE_FILE of the project's .env included)."""
    files = ["compose.yml", "/srv/extra.yml"]
    cfg = parse_stack_config(named("prod", findjob={"composeFiles": files}), "prod")
    plan = plan_service(cfg, "findjob")
    deploy = plan.step_by_id["deploy"].call
    assert isinstance(deploy, ComposeDeployArgs) and deploy.compose_files == tuple(files)
    argv = deploy.to_argv()
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--compose-file"] == files
    doc = plan.to_json()
    assert doc["names"]["composeFiles"] == {
        "value": files,
        "source": "config",
        "key": "services.findjob.names.composeFiles",
        "assumed": False,
    }
    assert doc["target"]["composeFiles"] == files

    default = plan_service(parse_stack_config(raw("prod"), "prod"), "findjob")
    unset = default.step_by_id["deploy"].call
    assert isinstance(unset, ComposeDeployArgs) and "--compose-file" not in unset.to_argv()
    assert default.to_json()["names"]["composeFiles"]["source"] == "default"


# --------------------------------------------------------------------------- ownership within a stack


@pytest.mark.parametrize(
    ("names", "key", "other"),
    [
        # two services of prod on the master server: one container name
        (
            {"project_manager": {"containerName": "oa-event-flow-backend"}},
            "services.project-manager.names.containerName",
            "oa-event-flow",
        ),
        # one stable tag on D601
        ({"findjob": {"retag": "pipeline"}}, "services.findjob.names.retag", "pipeline"),
        # one Deployment in namespace unidesk
        (
            {"mdtodo": {"deployments": [{"name": "claudeqq", "container": "mdtodo"}]}},
            "services.mdtodo.names.deployments[0].name",
            "claudeqq",
        ),
        # the registry's own container on D601
        (
            {"pipeline": {"containerName": "unidesk-artifact-registry"}},
            "services.pipeline.names.containerName",
            "registry.containerName",
        ),
        # one Compose service of the master's project
        (
            {"todo_note": {"composeService": "frontend"}},
            "services.todo-note.names.composeService",
            "frontend",
        ),
    ],
)
def test_issue12_two_services_of_a_stack_never_own_one_target(
    names: dict[str, Any], key: str, other: str
) -> None:
    (problem,) = refused(named("prod", **names), "prod")
    assert problem.key == key, problem
    assert other in problem.message and "in this stack" in problem.message and "issue 12" in problem.message
    assert "pulumi config set --path" in problem.fix


def test_issue12_the_service_that_sets_the_name_is_the_one_named() -> None:
    """oa-event-flow comes after project-manager in the stack file; the key named is the one set."""
    (problem,) = refused(named("prod", oa_event_flow={"containerName": "project-manager-backend"}), "prod")
    assert problem.key == "services.oa-event-flow.names.containerName"
    assert "project-manager" in problem.message


def test_issue12_the_same_name_on_two_hosts_is_not_a_collision() -> None:
    # findjob runs on D601, oa-event-flow on the master server
    cfg = parse_stack_config(
        named("prod", findjob={"containerName": "oa-event-flow-backend", "retag": "oa-event-flow"}), "prod"
    )
    assert plan_service(cfg, "findjob").target["containerName"] == "oa-event-flow-backend"


def test_issue12_one_address_for_both_hosts_is_one_host() -> None:
    doc = named("prod", findjob={"containerName": "oa-event-flow-backend"})
    doc["hosts"]["d601"] = dict(doc["hosts"]["master"])
    (problem,) = refused(doc, "prod")
    assert (
        problem.key == "services.findjob.names.containerName"
        and "master.unidesk.internal:22" in problem.message
    )


# --------------------------------------------------------------------------- ownership across the stacks


def project(tmp_path: Path, edit: dict[str, Any] | None = None, stack: str = "prod") -> Path:
    """A copy of the project's two stack files; ``edit`` sets ``services.<id>.names`` in ``stack``'s."""
    for name in ("Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    if edit:
        path = tmp_path / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        services = doc["config"][f"{PROJECT}:services"]
        for sid, names in edit.items():
            services[sid]["names"] = names
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path


def load_refused(path: Path, stack: str) -> list[Problem]:
    with pytest.raises(ConfigError) as error:
        load_stack(path, stack)
    return error.value.problems


def test_issue12_the_shipped_stacks_own_nothing_in_common() -> None:
    dev, prod = load_stack(ROOT, "dev"), load_stack(ROOT, "prod")
    assert ownership.collisions(ownership.claims(dev), ownership.claims(prod)) == []
    # they do share the hosts: the guard has something to check
    assert ownership.host_identity(dev.hosts.d601) == ownership.host_identity(prod.hosts.d601)
    dev_containers = {c.name for c in ownership.claims(dev) if c.kind == "container"}
    assert {"findjob-backend-dev", "baidu-netdisk-backend-dev", "unidesk-artifact-registry"} <= dev_containers


def test_issue12_a_container_the_other_stack_owns_is_refused_offline_in_both_stacks(tmp_path: Path) -> None:
    path = project(tmp_path, {"findjob": {"containerName": "findjob-backend-dev"}})
    (problem,) = load_refused(path, "prod")
    assert problem.key == "services.findjob.names.containerName"
    assert "container findjob-backend-dev on D601 (d601.unidesk.internal:22)" in problem.message
    assert (
        "stack dev" in problem.message
        and "Pulumi.dev.yaml" in problem.message
        and "stacks prod and dev" in problem.message
    )
    assert problem.fix.startswith(
        "pulumi config set --path 'services.findjob.names.containerName' findjob-backend-prod"
    )
    assert "in stack dev" in problem.fix
    # the dev stack, whose file did not change, is refused too: the two own one container
    (problem,) = load_refused(path, "dev")
    assert problem.key == "services.findjob.names.containerName" and "stack prod" in problem.message


def test_issue12_a_retag_the_other_stack_owns_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path, {"baidu-netdisk": {"retag": "baidu-netdisk"}}, stack="dev")
    (problem,) = load_refused(path, "dev")
    assert problem.key == "services.baidu-netdisk.names.retag"
    assert "retag baidu-netdisk on the master server" in problem.message and "stack prod" in problem.message


def test_issue12_one_compose_project_for_both_stacks_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path)
    dev = tmp_path / "Pulumi.dev.yaml"
    doc = yaml.safe_load(dev.read_text())
    doc["config"][f"{PROJECT}:compose"]["d601"]["projectName"] = "unidesk-d601"  # prod's project
    dev.write_text(yaml.safe_dump(doc, sort_keys=False))
    problems = load_refused(path, "dev")
    services = [p for p in problems if p.key.endswith(".composeService")]
    assert {p.key for p in services} == {
        f"services.{s}.names.composeService"
        for s in ("findjob", "pipeline", "met-nonlinear", "k3sctl-adapter")
    }
    assert all("compose.d601.projectName" in p.fix for p in services)


def test_issue12_other_hosts_or_no_sibling_file_collide_with_nothing(tmp_path: Path) -> None:
    path = project(tmp_path, {"findjob": {"containerName": "findjob-backend-dev"}})
    prod = tmp_path / "Pulumi.prod.yaml"
    doc = yaml.safe_load(prod.read_text())
    doc["config"][f"{PROJECT}:hosts"]["d601"]["host"] = "d601-b.unidesk.internal"
    prod.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_stack(path, "prod").hosts.d601.host == "d601-b.unidesk.internal"
    (tmp_path / "Pulumi.dev.yaml").unlink()
    assert isinstance(load_stack(path, "prod"), StackConfig)


def test_issue12_a_refused_sibling_stack_is_a_refusal(tmp_path: Path) -> None:
    path = project(tmp_path)
    dev = tmp_path / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text().replace('"a626628b6cdc46d5bdb5acfb8709154ddbf4fd12"', '"a626628"'))
    (problem,) = load_refused(path, "prod")
    assert problem.key == "(sibling stack)" and "Pulumi.dev.yaml" in problem.message
    assert "services.findjob.commit" in problem.message and "plan --stack dev" in problem.fix


def test_issue12_plan_refuses_a_collision_as_json_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project(tmp_path, {"findjob": {"containerName": "findjob-backend-dev"}})
    code = main(["--project-dir", str(path), "plan", "--stack", "prod", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and doc["decision"] == "invalid-config"
    assert [p["key"] for p in doc["problems"]] == [f"{PROJECT}:services.findjob.names.containerName"]


def test_claims_follow_the_names_a_stack_sets() -> None:
    cfg = parse_stack_config(named("prod", findjob={"containerName": "fj", "retag": "fj-image"}), "prod")
    mine = {(c.kind, c.name): c for c in ownership.claims(cfg) if c.service == "findjob"}
    assert set(mine) == {
        ("container", "fj"),
        ("retag", "fj-image"),
        ("compose service", "unidesk-d601/findjob"),
    }
    assert (
        mine[("container", "fj")].configured
        and not mine[("compose service", "unidesk-d601/findjob")].configured
    )
    assert catalog.apply_names(catalog.CATALOG[0], "prod", None)[0] is catalog.CATALOG[0]
