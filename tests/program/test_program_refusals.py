"""What the program refuses, and that it refuses before registering anything.

R9/R10/R20 gates (supervisor approvals, the self-bootstrap guard, unsupported/plan-only), hostile
or unknown config (the same parser as the offline plan), secrets that are missing or stored in
plaintext, and the registry install's acceptance (R7, R21/R22: ``health.decide`` must say healthy).
A gated service without its approval no longer refuses the whole ``up`` (issue 10, problem 4):
it is held — at the commit it serves, or not registered at all — and every other service deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from artifact_cd.config import ConfigError, parse_stack_config

from .program_support import (
    FAKE_SECRETS,
    FakeHosts,
    Live,
    World,
    in_sync_world,
    is_verify_command,
    stack_config,
    use_live,
)

COMMAND = "command:remote:Command"


def _approve(cfg: dict[str, Any], service: str, commit: str | None = None) -> dict[str, Any]:
    cfg.setdefault("approvals", {})[service] = {
        "commit": commit or cfg["services"][service]["commit"],
        "by": "supervisor",
        "reason": "reviewed the dry-run",
    }
    return cfg


def _nothing_registered(run: Any) -> bool:
    return not run.program_resources


# --------------------------------------------------------------------------- gates


OLD = "0" * 39 + "1"


def _world_with(service: str, commit: str | None) -> Any:
    """A live source: everything in sync, ``service`` live on ``commit`` (None: not deployed)."""

    def source(cfg: Any, plans: Any, keys: Any) -> Any:
        world = in_sync_world(cfg, plans)
        if commit is None:
            world.services.pop(service, None)
        else:
            world.services[service] = Live(commit)
        return world.view(cfg, plans)

    return source


def test_r20_up_holds_a_gated_service_without_its_approval_and_deploys_the_others(
    engine: Any, healthy_registry: list[Mapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """code-queue-mgr (prod) has a new commit and no approval, and runs OLD: it is held at OLD
    (registered with every input ignored; on a fresh state its steps run for OLD only, the deploy in
    verify mode: nothing changes), the warning names the approval, `held` lists it; the others deploy."""
    use_live(monkeypatch, _world_with("code-queue-mgr", OLD))
    hosts = FakeHosts()
    run = engine.run_program(
        "prod", preview=False, config=stack_config("prod"), secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert run.error is None, run.error
    commit = stack_config("prod")["services"]["code-queue-mgr"]["commit"]
    fix = f"pulumi config set --path 'approvals.code-queue-mgr.commit' {commit}"
    [held] = run.outputs["held"]
    assert held["service"] == "code-queue-mgr" and held["commit"] == commit and held["liveCommit"] == OLD
    assert held["verdict"] == "held" and held["registered"] == "held-at-live-commit" and fix in held["fix"]
    assert any("code-queue-mgr: held" in w and fix in w for w in run.warnings())
    assert "code-queue-mgr" not in run.outputs["results"] and "backend-core" in run.outputs["results"]
    mine = [c for c in hosts.calls if c.name.startswith("code-queue-mgr-")]
    assert mine and all(OLD in c.command and commit not in c.command for c in mine)
    deploy = next(c for c in mine if c.name == "code-queue-mgr-deploy")
    assert is_verify_command(deploy.command)
    for r in run.children("code-queue-mgr"):
        assert set(r.inputs) <= set(r.options["ignoreChanges"]), r.name
    assert "backend-core-deploy" in hosts.names()


def test_r20_a_gated_service_serving_no_commit_in_sync_registers_nothing_but_is_planned(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_live(monkeypatch, _world_with("code-queue-mgr", None))
    run = engine.run_program("prod", config=stack_config("prod"), secrets=FAKE_SECRETS, environ={})
    assert run.error is None
    doc = run.outputs["plans"]["code-queue-mgr"]
    assert doc["decision"] == "gated" and doc["requiresSupervisorApproval"] is True
    assert doc["approval"]["status"] == "missing"
    assert not [r for r in run.resources if r.name == "code-queue-mgr" or r.parent == "code-queue-mgr"]
    assert [r for r in run.resources if r.parent == "backend-core"]  # the others are registered
    [held] = run.outputs["held"]
    assert held["registered"] == "nothing" and held["liveCommit"] is None
    assert any("code-queue-mgr: held" in w and "nothing of it is registered" in w for w in run.warnings())


def test_r20_up_with_a_matching_approval_registers_the_consumer_fake_hosts(
    engine: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    hosts = FakeHosts()
    cfg = _approve(stack_config("prod"), "code-queue-mgr")
    run = engine.run_program(
        "prod", preview=False, config=cfg, secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert run.error is None, run.error
    assert run.named("code-queue-mgr").type == "unidesk:cd:ComposeServiceConsumer"
    assert {"code-queue-mgr-manifest-check", "code-queue-mgr-transfer", "code-queue-mgr-deploy"} <= set(
        hosts.names()
    )
    assert run.outputs["plans"]["code-queue-mgr"]["approval"]["status"] == "approved"
    assert healthy_registry  # the install's acceptance was decided from the probe's facts


def test_r20_a_stale_approval_holds_the_service(
    cached_run: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    stale = "0" * 39 + "1"
    cfg = _approve(stack_config("prod"), "code-queue-mgr", commit=stale)
    run = cached_run("prod", preview=False, config=cfg)
    assert run.error is None, run.error
    assert run.outputs["plans"]["code-queue-mgr"]["approval"]["status"] == "stale"
    [held] = run.outputs["held"]
    assert held["service"] == "code-queue-mgr" and stale in held["reason"]
    assert "code-queue-mgr" not in run.outputs["results"]
    preview = cached_run("prod", config=cfg)
    assert preview.outputs["plans"]["code-queue-mgr"]["approval"]["status"] == "stale"


def test_r20_code_queue_is_refused_inside_a_code_queue_task(cached_run: Any) -> None:
    """Inside a Code Queue task a guarded service registers nothing at all (not even held: a
    create could touch it); every other service deploys."""
    cfg = _approve(stack_config("dev"), "code-queue")
    inside = {"UNIDESK_CODE_QUEUE_TASK_ID": "task-4711"}
    run = cached_run("dev", preview=False, config=cfg, environ=inside)
    assert run.error is None, run.error
    assert not run.children("code-queue") and "code-queue" not in run.outputs["results"]
    [held] = run.outputs["held"]
    assert held["service"] == "code-queue" and "self-bootstrap" in held["reason"]
    assert "inside a Code Queue task" in held["reason"] and held["registered"] == "nothing"
    assert "backend-core" in run.outputs["results"]
    preview = cached_run("dev", config=cfg, environ=inside)
    doc = preview.outputs["plans"]["code-queue"]
    assert doc["decision"] == "gated" and doc["selfBootstrapGuard"]["runningInsideCodeQueueTask"] is True
    assert not preview.children("code-queue")
    outside = cached_run("dev", preview=False, config=cfg)  # the same approval, applied by a human outside
    assert outside.error is None, outside.error
    assert outside.named("code-queue").type == "unidesk:cd:K3sServiceConsumer"


def test_r10_unsupported_and_plan_only_services_never_register_even_in_up_fake_hosts(
    engine: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    cfg = _approve(stack_config("prod"), "code-queue-mgr")
    run = engine.run_program(
        "prod", preview=False, config=cfg, secrets=FAKE_SECRETS, environ={}, executor=FakeHosts()
    )
    assert run.error is None, run.error
    plans = run.outputs["plans"]
    assert plans["code-queue"]["decision"] == "unsupported" and plans["code-queue"]["steps"] == []
    for service in ("met-nonlinear", "k3sctl-adapter"):
        assert plans[service]["decision"] == "plan-only" and plans[service]["reason"]
    for service in ("code-queue", "met-nonlinear", "k3sctl-adapter"):
        assert not [r for r in run.resources if service in (r.name, r.parent)], service


def test_not_configured_service_is_planned_with_its_reason_and_registers_nothing(cached_run: Any) -> None:
    cfg = stack_config("prod")
    del cfg["services"]["pipeline"]
    run = cached_run("prod", config=cfg)
    assert run.error is None
    doc = run.outputs["plans"]["pipeline"]
    assert doc["decision"] == "not-configured" and "services.pipeline.commit" in doc["fix"]
    assert not [r for r in run.resources if "pipeline" in (r.name, r.parent)]


# --------------------------------------------------------------------------- hostile config


def _set(cfg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = cfg
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return cfg


HOSTILE = [
    ("services.backend-core.commit", "$(reboot)"),
    ("services.findjob.commit", "latest"),
    ("services.findjob.commit", "a626628"),
    ("hosts.d601.host", "d601.internal;rm -rf /"),
    ("hosts.master.user", "root -oProxyCommand=x"),
    ("hosts.master.port", "22; reboot"),
    ("registry.endpoint", "0.0.0.0:5000"),
    ("registry.storagePath", "/home/ubuntu/$(id)"),
    ("compose.master.envFile", "/home/ubuntu/../../etc/passwd"),
    ("transfer.d601SshTarget", "-oProxyCommand=evil"),
    ("services.not-a-service.commit", "0" * 40),
    ("env", "prod"),
]


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize(("key", "value"), HOSTILE, ids=[k for k, _ in HOSTILE])
def test_hostile_config_fails_before_any_resource(
    cached_run: Any, key: str, value: Any, preview: bool
) -> None:
    run = cached_run("dev", preview=preview, config=_set(stack_config("dev"), key, value))
    assert type(run.error).__name__ == "ProgramRefused"
    top = key.split(".", maxsplit=1)[0]
    assert f"unidesk-artifact-cd:{top}" in str(run.error)
    assert "Fix:" in str(run.error)
    assert _nothing_registered(run)


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("d601SshKey", "hunter2", "pulumi config set --secret"),
        ("registryUrl", "http://0.0.0.0:5000", "pulumi config rm registryUrl"),
        ("hosts", "{not json", "is not a structured value"),
    ],
)
def test_unknown_or_malformed_keys_of_the_namespace_are_refused_like_the_offline_loader(
    cached_run: Any, key: str, value: str, hint: str
) -> None:
    cfg = stack_config("dev")
    cfg[key] = value
    run = cached_run("dev", config=cfg)
    assert type(run.error).__name__ == "ProgramRefused"
    assert f"unidesk-artifact-cd:{key}" in str(run.error) and hint in str(run.error)
    assert "hunter2" not in str(run.error)
    assert _nothing_registered(run)
    if key != "hosts":  # the offline loader reads YAML objects, never JSON text: same refusal otherwise
        with pytest.raises(ConfigError) as offline:
            parse_stack_config(cfg, "dev")
        for line in str(offline.value).splitlines():
            assert line in str(run.error)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_a_missing_secret_is_named_before_any_resource(cached_run: Any, preview: bool) -> None:
    secrets = {k: v for k, v in FAKE_SECRETS.items() if k != "kubeconfig"}
    run = cached_run(
        "dev", preview=preview, config=_approve(stack_config("dev"), "code-queue"), secrets=secrets
    )
    assert type(run.error).__name__ == "ProgramRefused"
    assert "unidesk-artifact-cd:kubeconfig is required by backend-core" in str(run.error)
    assert "pulumi config set --secret kubeconfig" in str(run.error)
    assert _nothing_registered(run)


def test_a_secret_stored_in_plaintext_is_refused_and_not_echoed(cached_run: Any) -> None:
    cfg = stack_config("dev")
    cfg["masterPrivateKey"] = "PLAINTEXT-KEY-0a1b2c"
    secrets = {k: v for k, v in FAKE_SECRETS.items() if k != "masterPrivateKey"}
    run = cached_run("dev", config=cfg, secrets=secrets)
    assert type(run.error).__name__ == "ProgramRefused"
    assert "masterPrivateKey is stored in plaintext" in str(run.error)
    assert "PLAINTEXT-KEY-0a1b2c" not in str(run.error)
    assert _nothing_registered(run)


def test_only_the_secrets_the_registered_resources_need_are_required(cached_run: Any) -> None:
    cfg = stack_config("dev")
    cfg["services"] = {"findjob": cfg["services"]["findjob"]}  # D601-direct only: no master, no k8s
    run = cached_run("dev", config=cfg, secrets={"d601PrivateKey": FAKE_SECRETS["d601PrivateKey"]})
    assert run.error is None, run.error
    assert [r.name for r in run.resources if r.parent == "findjob"] == [
        "findjob-manifest-check",
        "findjob-pull",
        "findjob-deploy",
    ]


# --------------------------------------------------------------------------- registry acceptance


def test_r7_up_fails_unless_the_registry_acceptance_decides_healthy_fake_hosts(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components import registry_host

    facts = {"ok": True, "probe": "registry-probe", "marker": "facts-under-test"}
    seen: list[Mapping[str, Any]] = []

    def degraded(given: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(given)
        return {
            "decision": "service-degraded",
            "failedScopes": ["unit"],
            "recommendedAction": "start the unit",
        }

    monkeypatch.setattr(registry_host, "health_decide", degraded)
    use_live(monkeypatch, World(registry_facts=facts))  # the live view sees what the probe sees
    cfg = _approve(stack_config("prod"), "code-queue-mgr")
    hosts = FakeHosts(probe_facts=facts)
    run = engine.run_program(
        "prod", preview=False, config=cfg, secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert type(run.error).__name__ == "RegistryUnhealthy"
    assert "service-degraded" in str(run.error) and "start the unit" in str(run.error)
    assert seen == [facts, facts]  # the live view's facts (not healthy: install again), then this run's probe
    # CD flow step 1: no consumer step ran against an unhealthy registry
    ran = hosts.names()
    assert "artifact-registry-registry-acceptance" in ran
    assert [n for n in ran if not n.startswith("artifact-registry-")] == []


def test_r9_consumers_wait_for_the_decided_registry_acceptance_fake_hosts(
    engine: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    cfg = _approve(stack_config("prod"), "code-queue-mgr")
    hosts = FakeHosts()
    run = engine.run_program(
        "prod", preview=False, config=cfg, secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert run.error is None, run.error
    checks = [r for r in run.resources if r.name.endswith("-manifest-check")]
    assert checks
    for check in checks:
        assert "artifact-registry-registry-acceptance" in check.options["dependsOn"], check.name
    ran = hosts.names()
    acceptance = ran.index("artifact-registry-registry-acceptance")
    assert all(ran.index(c.name) > acceptance for c in checks)


def test_r7_acceptance_uses_artifact_cd_health_decide_and_refuses_incomplete_fake_facts(engine: Any) -> None:
    cfg = stack_config("prod")
    cfg["services"] = {}
    hosts = FakeHosts(probe_facts={"ok": True})  # a probe result missing every fact
    run = engine.run_program(
        "prod", preview=False, config=cfg, secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert type(run.error).__name__ == "RegistryUnhealthy"
    assert "artifact-registry-registry-acceptance" in hosts.names()


def test_r6_preview_never_decides_the_acceptance(cached_run: Any) -> None:
    run = cached_run("prod")
    assert run.error is None
    assert run.outputs["registryAcceptance"] is run_unknown(run)


def run_unknown(run: Any) -> Any:
    from components.preview import UNKNOWN

    return UNKNOWN


def test_a_missing_step_script_is_refused_before_any_resource(
    engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import shutil

    from artifact_cd import scripts

    for path in scripts.SCRIPT_DIR.glob("*.sh"):
        if path.name != "k3s-verify.sh":
            shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(scripts, "SCRIPT_DIR", tmp_path)
    scripts.script_text.cache_clear()
    try:
        run = engine.run_program("dev", config=stack_config("dev"), secrets=FAKE_SECRETS, environ={})
    finally:
        scripts.script_text.cache_clear()
    assert type(run.error).__name__ == "ProgramRefused"
    assert "k3s-verify.sh, which is missing" in str(run.error) and "backend-core" in str(run.error)
    assert _nothing_registered(run)
