"""Day two (issue 10): the program decides from what is live, over consecutive runs of one stack.

Each test is one numbered problem of issue 10, played as consecutive ``preview``/``up`` runs of
``__main__.py`` against one carried state (``tests.engine.Stack``) and one fake world of hosts
(``program_support.World``: what runs where; the executor, the k3s patcher and the program's
live view all read it). Between runs a test changes the world the way a hand fix or an outage
changes the hosts. The rules are docs/engine-semantics.md's (``rule n``; C/E/K<n>).

The acceptance of every scenario: after the ``up`` that repairs (or deploys), a ``preview`` with
nothing changed shows no change at all, resources and stack outputs alike (rule 15).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.engine import RunReport, Stack

from .program_support import (
    FAKE_AUTH,
    FAKE_SECRETS,
    FakeHosts,
    Live,
    World,
    approved,
    auth_sha256,
    is_verify_command,
    of_service,
    run_kw,
    stack_config,
    use_live,
    with_commit,
    world_of,
)

NEW = "1" * 40
DRIFT = "2" * 40
GATED_NEW = "3" * 40
HEALTHY_FACTS = {"ok": True, "probe": "registry-probe"}


def clean(report: RunReport) -> None:
    """rule 15: nothing to create, update, replace or delete, no output change, nothing ran."""
    assert report.error is None, report.error
    assert report.changed_names() == {}, report.changed_names()
    assert report.output_changes == {}, report.output_changes
    assert report.executed == [] and report.patched == []


@pytest.fixture
def registry_by_facts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """health.decide stands in as: healthy exactly when the probe's facts say ok."""
    from components import registry_host

    def decide_health(facts: Mapping[str, Any]) -> dict[str, Any]:
        if facts.get("ok") is True:
            return {"ok": True, "decision": "healthy", "failedScopes": [], "detail": "fine"}
        return {
            "ok": False,
            "decision": str(facts.get("decision", "unhealthy")),
            "failedScopes": ["registry-api"],
            "detail": str(facts.get("detail", "GET /v2/ answered 503")),
        }

    monkeypatch.setattr(registry_host, "health_decide", decide_health)
    yield


def deployed(
    name: str, monkeypatch: pytest.MonkeyPatch, cfg: Mapping[str, Any]
) -> tuple[Stack, World, FakeHosts]:
    """A stack after its first ``up`` of ``cfg`` from an empty state and an empty world, and the
    preview after it is clean."""
    world = World()
    use_live(monkeypatch, world)
    stack, hosts = Stack(name), FakeHosts(world=world)
    first = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert first.error is None, first.error
    assert set(first.ops.values()) == {"create"}
    clean(stack.preview(**run_kw(cfg)))
    world.recreated.clear()
    return stack, world, hosts


# =========================================================================== problem 1


def test_problem_1_an_unhealthy_registry_never_wedges_the_stack(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry fails its acceptance (R7): the up fails and no consumer runs (R9). The preview
    while it is still unhealthy does not fail; once the registry is fixed by hand the next ``up``
    passes without ``--replace``: the acceptance is this run's live decision, not the stored
    unhealthy stdout (C4, C7). Then the preview is clean."""
    cfg = approved("prod")
    world = World(registry_facts={"ok": False}, install_repairs_registry=False)
    use_live(monkeypatch, world)
    stack = Stack("prod")
    hosts = FakeHosts(world=world)
    first = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert type(first.error).__name__ == "RegistryUnhealthy"
    assert [n for n in hosts.names() if not n.startswith("artifact-registry-")] == []

    still = stack.preview(**run_kw(cfg))
    assert still.error is None, still.error
    assert any("artifact registry: unhealthy" in w for w in still.run.warnings())

    world.registry_facts = dict(HEALTHY_FACTS)  # an operator restarts the registry by hand
    hosts = FakeHosts(world=world)
    fixed = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert fixed.error is None, fixed.error
    assert not of_service(fixed.changed_names(), "artifact-registry"), (
        "in sync: the install is left as stored"
    )
    assert fixed.run.outputs["registryAcceptance"]["decision"] == "healthy"
    assert "backend-core-deploy" in hosts.names()
    clean(stack.preview(**run_kw(cfg)))


def test_problem_2_registry_drift_runs_the_install_and_accepts_this_runs_probe(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-edited registry config (drift): the preview shows the install and its acceptance
    as replacements, the up runs them (the install restores the render) and decides the
    acceptance from this run's probe; the next preview is clean."""
    cfg = approved("prod")
    stack, world, _ = deployed("prod", monkeypatch, cfg)
    world.registry_facts = {"ok": False, "decision": "service-degraded", "detail": "config.yml differs"}
    preview = stack.preview(**run_kw(cfg))
    registry_steps = {r.name for r in stack.resources.values() if r.name.startswith("artifact-registry-")}
    assert preview.changed_names() == dict.fromkeys(registry_steps, "replace")
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert set(hosts.names()) == registry_steps
    assert up.run.outputs["registryAcceptance"]["decision"] == "healthy"
    clean(stack.preview(**run_kw(cfg)))


# =========================================================================== problem 2


def test_problem_2_a_service_recreated_by_hand_on_another_commit_is_repaired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """findjob (Compose on D601) and backend-core (k3s) are put on another commit by hand. The
    preview shows the replacement of exactly their repair steps (pull + deploy; import + verify)
    and the update of backend-core's DeploymentPatch (its repair annotation), with a warning; the
    manifest checks and everything else stay. The up repairs both; the next preview is clean."""
    cfg = approved("dev")
    stack, world, _ = deployed("dev", monkeypatch, cfg)
    world.drift("findjob", DRIFT)
    world.drift("backend-core", DRIFT)
    expected = {
        "findjob-pull": "replace",
        "findjob-deploy": "replace",
        "backend-core-import": "replace",
        "backend-core-verify": "replace",
        "backend-core-patch-backend-core-dev": "update",
    }
    preview = stack.preview(**run_kw(cfg))
    assert preview.error is None, preview.error
    assert preview.changed_names() == expected
    warned = preview.run.warnings()
    assert any(w.startswith("findjob: drifted") and DRIFT in w for w in warned), warned
    assert any(w.startswith("backend-core: drifted") for w in warned), warned
    slot = stack.named("findjob-deploy").inputs["triggers"][1]
    assert preview.run.named("findjob-deploy").inputs["triggers"][1] != slot

    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert up.changed_names() == expected
    assert sorted(hosts.names()) == sorted(n for n, op in expected.items() if op == "replace")
    commit = cfg["services"]["findjob"]["commit"]
    assert world.in_sync("findjob", commit) and world.in_sync(
        "backend-core", cfg["services"]["backend-core"]["commit"]
    )
    [patch] = up.patched
    assert patch.inputs["spec"]["template"]["metadata"]["annotations"]["unidesk.io/deploy-repair"].startswith(
        "drifted:"
    )
    clean(stack.preview(**run_kw(cfg)))


def test_problem_2_an_unhealthy_service_and_a_missing_image_are_repaired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """unhealthy (on its commit, not serving) and missing-image (its image gone from the host) are
    repaired the same way; a Compose repair of an unhealthy container recreates it."""
    cfg = approved("dev")
    stack, world, _ = deployed("dev", monkeypatch, cfg)
    world.services["pipeline"].healthy = False
    world.services["mdtodo"].image_present = False
    preview = stack.preview(**run_kw(cfg))
    assert set(preview.changed_names()) == {
        "pipeline-pull", "pipeline-deploy", "mdtodo-import", "mdtodo-verify", "mdtodo-patch-mdtodo-dev",
    }  # fmt: skip
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert "pipeline" in world.recreated and world.services["pipeline"].healthy
    assert world.services["mdtodo"].image_present
    clean(stack.preview(**run_kw(cfg)))


# =========================================================================== problem 3


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_problem_3_a_fresh_state_with_everything_live_recreates_nothing(
    stack_name: str, registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost state (or a new stack) while every service already runs its commit: the up creates
    every resource and runs every step (E8), but each deploy finds its service live and changes
    nothing (alreadyLive, recreated false) and each DeploymentPatch applies the values that are
    live (no restart). The next preview is clean."""
    cfg = approved(stack_name)
    world = world_of(stack_name, cfg)
    use_live(monkeypatch, world)
    stack, hosts = Stack(stack_name), FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert set(up.ops.values()) == {"create"}
    deploys = [c for c in hosts.calls if c.script == "compose-deploy.sh"]
    assert deploys and all("--mode" not in c.command for c in deploys)
    assert world.recreated == [], "nothing live was recreated or restarted"
    for service, result in up.run.outputs["results"].items():
        if "recreated" in result["verdict"]:
            assert result["verdict"]["recreated"] is False and result["verdict"]["alreadyLive"] is True, (
                service
            )
    clean(stack.preview(**run_kw(cfg)))

    # an old exported state imported again (pulumi stack import): the same, nothing to do
    again = Stack(stack_name)
    again.import_(stack.export(), stack.outputs)
    clean(again.preview(**run_kw(cfg)))


# =========================================================================== problem 4


def test_problem_4_a_gated_commit_without_approval_is_held_and_the_others_deploy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """code-queue (dev, gated) gets a new commit without its approval while backend-core gets a new
    commit: the preview shows nothing of code-queue (held at the commit it serves), warns naming
    the approval, and lists it in `held`; the up deploys backend-core, code-queue stays live on its
    old commit; the next preview is clean. With the approval the next up deploys it."""
    cfg_a = approved("dev")
    stack, world, _ = deployed("dev", monkeypatch, cfg_a)
    old = cfg_a["services"]["code-queue"]["commit"]
    cfg_b = with_commit(cfg_a, code_queue=GATED_NEW, backend_core=NEW)
    preview = stack.preview(**run_kw(cfg_b))
    assert preview.error is None, preview.error
    assert not of_service(preview.changed_names(), "code-queue"), preview.changed_names()
    assert of_service(preview.changed_names(), "backend-core")
    fix = f"pulumi config set --path 'approvals.code-queue.commit' {GATED_NEW}"
    assert any(w.startswith("code-queue: held") and fix in w for w in preview.run.warnings())
    [held] = preview.run.outputs["held"]
    assert (held["service"], held["commit"], held["liveCommit"]) == ("code-queue", GATED_NEW, old)
    assert fix in held["fix"]

    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg_b))
    assert up.error is None, up.error
    assert not of_service(up.changed_names(), "code-queue") and not of_service(
        set(hosts.names()), "code-queue"
    )
    assert world.in_sync("backend-core", NEW) and world.in_sync("code-queue", old)
    assert up.run.outputs["held"] == preview.run.outputs["held"]
    clean(stack.preview(**run_kw(cfg_b)))

    cfg_c = copy.deepcopy(cfg_b)
    cfg_c["approvals"]["code-queue"]["commit"] = GATED_NEW
    deploy = stack.up(**FakeHosts(world=world).up_kw(), **run_kw(cfg_c))
    assert deploy.error is None, deploy.error
    assert deploy.op("code-queue-verify") == "replace" and world.in_sync("code-queue", GATED_NEW)
    assert deploy.run.outputs["held"] == []
    clean(stack.preview(**run_kw(cfg_c)))


# =========================================================================== problem 5


def test_problem_5_a_script_only_change_replaces_nothing_and_recreates_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new version of this project's scripts (every stdin changes): the preview shows updates
    and no replace; the up runs each Compose deploy's ``update`` (verify mode, read-only) and the
    other steps' ``create`` again (idempotent), recreating nothing; the next preview is clean."""
    from artifact_cd import scripts

    cfg = approved("dev")
    stack, world, _ = deployed("dev", monkeypatch, cfg)
    original = scripts.script_text
    monkeypatch.setattr(scripts, "script_text", lambda name: original(name) + "# v2\n")
    preview = stack.preview(**run_kw(cfg))
    assert preview.error is None, preview.error
    assert set(preview.changed_names().values()) == {"update"}
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert "replace" not in up.ops.values()
    deploys = [c for c in up.executed if c.script == "compose-deploy.sh"]
    assert deploys and all(c.op == "update" and is_verify_command(c.command) for c in deploys)
    assert world.recreated == [] and up.patched == []
    clean(stack.preview(**run_kw(cfg)))


# =========================================================================== problem 6


def test_problem_6_a_new_auth_section_on_the_master_re_syncs_the_frontend_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The master's config.json auth section changes (its hash in the live view): the auth read is
    replaced (its live slot is the hash), the Secret and ConfigMap patches update with the new
    values; the frontend itself is not redeployed; the next preview is clean."""
    cfg = approved("dev")
    stack, world, _ = deployed("dev", monkeypatch, cfg)
    world.auth = {**FAKE_AUTH, "clientId": "frontend-v2"}
    preview = stack.preview(**run_kw(cfg))
    assert preview.changed_names() == {
        "frontend-auth-read": "replace",
        "frontend-auth-sync-secret": "update",
        "frontend-auth-sync-configmap": "update",
    }
    assert preview.run.named("frontend-auth-read").inputs["triggers"][1] == "auth:" + auth_sha256(world.auth)
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert up.error is None, up.error
    assert hosts.names() == ["frontend-auth-read"]
    secret = stack.named("frontend-auth-sync-secret").inputs["stringData"]["auth.json"]
    assert "frontend-v2" in secret
    assert stack.named("frontend-auth-sync-configmap").inputs["data"]["authSha256"] == auth_sha256(world.auth)
    assert {p.name for p in up.patched} == {"frontend-auth-sync-secret", "frontend-auth-sync-configmap"}
    clean(stack.preview(**run_kw(cfg)))


# =========================================================================== a silent host


def silent_preview(
    name: str, monkeypatch: pytest.MonkeyPatch, silent: str, **commits: str
) -> tuple[Stack, World, dict[str, Any], RunReport]:
    """A deployed stack, new ``commits``, the host ``silent`` not answering, and the preview of it."""
    cfg_a = approved(name)
    stack, world, _ = deployed(name, monkeypatch, cfg_a)
    cfg_b = with_commit(cfg_a, **commits)
    world.silent = {silent}
    preview = stack.preview(**run_kw(cfg_b))
    assert preview.error is None, preview.error
    return stack, world, cfg_b, preview


def test_a_host_that_does_not_answer_holds_only_its_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """The master does not answer SSH while findjob (D601) gets a new commit. The preview says
    unknown for the master's services (baidu-netdisk, and frontend, whose auth read runs there)
    and only them, shows them as stored, and shows findjob's new commit. The up deploys findjob,
    registers nothing of the master's services and ends failed naming them (so the engine deletes
    nothing: E1); their state is kept. Once the master answers, the preview is clean."""
    stack, world, cfg_b, preview = silent_preview("dev", monkeypatch, "master", findjob=NEW)
    assert set(preview.changed_names()) == {n for n in preview.by_name if n.startswith("findjob-")}
    unknown = {h["service"] for h in preview.run.outputs["held"] if h["verdict"] == "unknown"}
    assert unknown == {"baidu-netdisk", "frontend"}
    warned = [w for w in preview.run.warnings() if ": unknown (" in w]
    assert sorted(w.split(":")[0] for w in warned) == ["baidu-netdisk", "frontend"]

    before = copy.deepcopy(stack.resources)
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg_b))
    assert type(up.error).__name__ == "ServicesRefused"
    assert "baidu-netdisk" in str(up.error) and "frontend" in str(up.error) and "findjob" not in str(up.error)
    assert world.in_sync("findjob", NEW)
    assert not of_service(set(hosts.names()), "baidu-netdisk") and not of_service(
        set(hosts.names()), "frontend"
    )
    assert "delete" not in up.ops.values()
    for name in ("baidu-netdisk", "frontend"):
        kept = {u: r for u, r in stack.resources.items() if of_service({r.name}, name)}
        assert kept == {u: r for u, r in before.items() if of_service({r.name}, name)}, f"{name}: state kept"
    assert any(": unknown (" in e for e in up.run.errors())

    world.silent = set()
    clean_or_outputs = stack.preview(**run_kw(cfg_b))
    assert clean_or_outputs.error is None and clean_or_outputs.changed_names() == {}
    assert stack.up(**FakeHosts(world=world).up_kw(), **run_kw(cfg_b)).error is None  # records the outputs
    clean(stack.preview(**run_kw(cfg_b)))


def test_a_gated_service_held_on_a_silent_host_is_shown_as_stored(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """code-queue-mgr (prod, gated, on the master) gets a new commit without its approval while the
    master does not answer: the preview does not refuse; it says unknown for the master's services
    (code-queue-mgr among them) and shows them as stored; the up refuses only them."""
    stack, world, cfg_b, preview = silent_preview("prod", monkeypatch, "master", code_queue_mgr=GATED_NEW)
    assert preview.changed_names() == {}, preview.changed_names()
    unknown = {h["service"] for h in preview.run.outputs["held"] if h["verdict"] == "unknown"}
    assert "code-queue-mgr" in unknown and "findjob" not in unknown
    up = stack.up(**FakeHosts(world=world).up_kw(), **run_kw(cfg_b))
    assert type(up.error).__name__ == "ServicesRefused" and "code-queue-mgr" in str(up.error)
    assert "delete" not in up.ops.values()


def test_d601_silent_refuses_the_registry_and_every_service(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D601 does not answer (prod): every consumer needs it (the manifest check runs there), and
    the registry install lives there. The preview warns and shows everything as stored; the up
    registers nothing, runs nothing and fails, deleting nothing."""
    cfg = approved("prod")
    stack, world, _ = deployed("prod", monkeypatch, cfg)
    world.silent = {"d601"}
    preview = stack.preview(**run_kw(cfg))
    assert preview.error is None and preview.changed_names() == {}
    assert any(w.startswith("artifact registry: unknown") for w in preview.run.warnings())
    hosts = FakeHosts(world=world)
    up = stack.up(**hosts.up_kw(), **run_kw(cfg))
    assert type(up.error).__name__ == "ServicesRefused" and "the registry install" in str(up.error)
    assert hosts.calls == [] and "delete" not in up.ops.values()


def test_a_live_view_is_read_once_per_run_with_the_private_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program reads the live view once per preview and per up (one probe per host per run),
    and hands the probe only the private keys of the hosts it needs."""
    world = World(services={"findjob": Live("0" * 40)})
    seen = use_live(monkeypatch, world)
    cfg = stack_config("dev")
    cfg["services"] = {"findjob": cfg["services"]["findjob"]}
    stack = Stack("dev")
    stack.preview(config=cfg, secrets={"d601PrivateKey": FAKE_SECRETS["d601PrivateKey"]}, environ={})
    assert len(seen) == 1
    report = stack.up(
        **FakeHosts(world=world).up_kw(), config=cfg, secrets={"d601PrivateKey": "k"}, environ={}
    )
    assert report.error is None, report.error
    assert len(seen) == 2
