"""Pulumi state across consecutive runs of the real program (tests/engine.py ``Stack``).

Each test runs ``__main__.py`` several times against one stack's state, with ``FakeHosts`` as the
hosts, and checks each URN's operation against the rules of ``docs/engine-semantics.md``
("Rules a state-carrying test engine must follow", cited as ``rule n``; the engine/provider
sections as C/E/K<n>). The first block tests the engine's decisions on hand-made registrations;
the rest is the program.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from components.preview import COMMAND_TYPE, UNKNOWN, RegisteredResource
from tests.engine import (
    CommandCall,
    PatchCall,
    Stack,
    StoredResource,
    decide,
    diff_paths,
    format_property_path,
    ignore_changes,
    parse_property_path,
)

from .program_support import (
    FAKE_SECRETS,
    FakeHosts,
    World,
    approved,
    run_kw,
    use_live,
    with_commit,
    with_mode_verify,
    world_of,
)

DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"
NEW_COMMIT = "1" * 40


def commands(stack: Stack) -> set[str]:
    return {r.name for r in stack.resources.values() if r.type == COMMAND_TYPE}


def of_service(names: Mapping[str, Any] | set[str], service: str) -> set[str]:
    return {n for n in names if n == service or n.startswith(service + "-")}


@pytest.fixture(scope="module")
def dev_after_up() -> tuple[Stack, FakeHosts]:
    """The dev stack after one successful ``up`` of its own config (approved), from empty state."""
    stack, hosts = Stack("dev"), FakeHosts()
    report = stack.up(executor=hosts, **run_kw(approved("dev")))
    assert report.error is None, report.error
    assert set(report.ops.values()) == {"create"}
    return stack, hosts


@pytest.fixture
def dev(dev_after_up: tuple[Stack, FakeHosts]) -> Stack:
    """A private copy of the dev stack after its first ``up``."""
    return dev_after_up[0].copy()


@pytest.fixture
def registry_by_facts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry acceptance decides ``healthy`` exactly when the probe's facts say ``ok``."""
    from components import registry_host

    def decide_health(facts: Mapping[str, Any]) -> dict[str, Any]:
        if facts.get("ok") is True:
            return {"ok": True, "decision": "healthy", "failedScopes": []}
        return {"ok": False, "decision": "unhealthy", "failedScopes": ["registry-http"]}

    monkeypatch.setattr(registry_host, "health_decide", decide_health)
    yield


# =========================================================================== the engine's rules


def _registered(
    type_: str, inputs: dict[str, Any], *, custom: bool = True, **options: Any
) -> RegisteredResource:
    opts: dict[str, Any] = {"replaceOnChanges": [], "ignoreChanges": [], "additionalSecretOutputs": []}
    opts.update(options)
    return RegisteredResource(
        type=type_,
        name="r",
        urn=f"urn:pulumi:t::p::{type_}::r",
        parent=None,
        parent_urn=None,
        custom=custom,
        inputs=inputs,
        secret_paths=frozenset(),
        options=opts,
    )


def _stored(reg: RegisteredResource, inputs: dict[str, Any]) -> StoredResource:
    return StoredResource(
        urn=reg.urn,
        type=reg.type,
        name=reg.name,
        custom=reg.custom,
        parent_urn=None,
        inputs=inputs,
        outputs={"stdout": "x"},
        options=dict(reg.options),
    )


CMD_INPUTS: dict[str, Any] = {
    "create": "run --a 1",
    "stdin": "script",
    "triggers": ["c1", "s1", "a1"],
    "connection": {"host": "h", "port": 22, "user": "u", "privateKey": "k"},
    "logging": "stdoutAndStderr",
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "same"),
        ({"triggers": ["c2", "s1", "a1"]}, "replace"),  # one element (C3)
        ({"triggers": ["c1", "s1", "a1", "x"]}, "replace"),  # a longer array (C3)
        ({"triggers": ["s1", "c1", "a1"]}, "replace"),  # reordered (C3)
        ({"triggers": None}, "replace"),  # set -> unset (C3): the key is dropped below
        ({"triggers": ["c1", UNKNOWN, "a1"]}, "replace"),  # unknown in preview (rule 9, E10)
        ({"create": "run --a 2"}, "update"),  # every other input updates (C2)
        ({"stdin": "script v2"}, "update"),
        ({"update": "noop"}, "update"),
        ({"environment": {"A": "1"}}, "update"),
        ({"connection": {"host": "h", "port": 22, "user": "u", "privateKey": "k2"}}, "update"),
        ({"logging": "none"}, "update"),
        ({"create": UNKNOWN}, "update"),
    ],
)
def test_command_diff_replaces_only_on_triggers(change: dict[str, Any], expected: str) -> None:
    """rule 4 (C2, C3): a Command replaces iff its ``triggers`` differ; anything else updates."""
    new = {**CMD_INPUTS, **change}
    new = {k: v for k, v in new.items() if v is not None}
    reg = _registered(COMMAND_TYPE, new, replaceOnChanges=["triggers[*]"])
    assert decide(_stored(reg, CMD_INPUTS), reg, new, force_replace=False)[0] == expected
    assert decide(None, reg, new, force_replace=False)[0] == "create"  # rule 2
    assert decide(_stored(reg, CMD_INPUTS), reg, new, force_replace=True)[0] == "replace"  # rule 11, E6


def test_unset_to_set_triggers_replaces_and_update_runs_update_when_set() -> None:
    """rule 4 (C3): no triggers -> some replaces; rule 5 (C5, C8): an update runs the new ``update``
    when set, else ``create``, with the previous outputs in the environment."""
    old = {k: v for k, v in CMD_INPUTS.items() if k != "triggers"}
    reg = _registered(COMMAND_TYPE, CMD_INPUTS)
    assert decide(_stored(reg, old), reg, CMD_INPUTS, force_replace=False) == ("replace", ["triggers"])
    call = CommandCall._from(
        "r",
        {**CMD_INPUTS, "update": "refresh"},
        op="update",
        previous_outputs={"stdout": "before", "stderr": ""},
    )
    assert (call.op, call.command, call.create) == ("update", "refresh", "run --a 1")
    assert call.environment == {"PULUMI_COMMAND_STDOUT": "before", "PULUMI_COMMAND_STDERR": ""}
    call = CommandCall._from(
        "r",
        {**CMD_INPUTS, "addPreviousOutputInEnv": False},
        op="update",
        previous_outputs={"stdout": "before"},
    )
    assert (call.command, call.environment) == ("run --a 1", {})
    assert CommandCall._from("r", CMD_INPUTS).command == "run --a 1"  # create, the default op


def test_patch_diff_replaces_only_on_name_or_namespace() -> None:
    """rule 12 (K5): a Patch replaces on ``metadata.name``/``metadata.namespace``, else updates."""
    old = {"metadata": {"name": "d", "namespace": "n", "annotations": {"a": "1"}}, "spec": {"x": 1}}
    for change, expected in [
        (
            {"metadata": {"name": "d", "namespace": "n", "annotations": {"a": "1"}}, "spec": {"x": 2}},
            "update",
        ),
        (
            {"metadata": {"name": "d", "namespace": "n", "annotations": {"a": "2"}}, "spec": {"x": 1}},
            "update",
        ),
        (
            {"metadata": {"name": "e", "namespace": "n", "annotations": {"a": "1"}}, "spec": {"x": 1}},
            "replace",
        ),
        (
            {"metadata": {"name": "d", "namespace": "m", "annotations": {"a": "1"}}, "spec": {"x": 1}},
            "replace",
        ),
        (old, "same"),
    ]:
        reg = _registered(DEPLOYMENT_PATCH, change)
        assert decide(_stored(reg, old), reg, change, force_replace=False)[0] == expected, change


def test_replace_on_changes_and_components() -> None:
    """E3: a difference under a ``replaceOnChanges`` path replaces; a component with state is
    the same (no provider diffs it)."""
    old: dict[str, Any] = {"a": {"b": [1, 2]}, "c": 1}
    new: dict[str, Any] = {"a": {"b": [1, 3]}, "c": 1}
    reg = _registered("x:y:Z", new, replaceOnChanges=["a.b[*]"])
    assert decide(_stored(reg, old), reg, new, force_replace=False) == ("replace", ["a.b[1]"])
    reg = _registered("x:y:Z", new, replaceOnChanges=["c"])
    assert decide(_stored(reg, old), reg, new, force_replace=False)[0] == "update"
    comp = _registered("unidesk:cd:Thing", {}, custom=False)
    assert decide(_stored(comp, {}), comp, {}, force_replace=False)[0] == "same"


def test_ignore_changes_keeps_the_stored_value() -> None:
    """rule 3 with ``ignoreChanges``: an ignored property takes the stored value (top-level,
    dotted, quoted and ``[*]`` paths, as Pulumi spells them); absent from the old inputs, it is
    dropped from the new."""
    old: dict[str, Any] = {"triggers": ["a", "b"], "stdin": "s1", "m": {"k.x": 1, "y": 2}, "l": [{"v": 1}]}
    new: dict[str, Any] = {
        "triggers": ["a", "c"],
        "stdin": "s2",
        "m": {"k.x": 9, "y": 3},
        "l": [{"v": 5}],
        "extra": 1,
    }
    assert ignore_changes(new, old, ["triggers", "stdin"])["triggers"] == ["a", "b"]
    assert ignore_changes(new, old, ["triggers[1]"])["triggers"] == ["a", "b"]
    assert ignore_changes(new, old, ["triggers[*]"])["triggers"] == ["a", "b"]
    assert ignore_changes(new, old, ['m["k.x"]'])["m"] == {"k.x": 1, "y": 3}
    assert ignore_changes(new, old, ["m.y"])["m"] == {"k.x": 9, "y": 2}
    assert ignore_changes(new, old, ["l[*].v"])["l"] == [{"v": 1}]
    assert "extra" not in ignore_changes(new, old, ["extra"])
    assert new["triggers"] == ["a", "c"]  # the registered inputs are not modified
    everything = ["triggers", "stdin", "m", "l", "extra"]
    assert diff_paths(old, ignore_changes(new, old, everything)) == []
    assert parse_property_path('a.b[0]["c.d"][*]') == ("a", "b", 0, "c.d", "*")
    assert format_property_path(("metadata", "annotations", "unidesk.io/x", 0)) == (
        'metadata.annotations["unidesk.io/x"][0]'
    )


def test_diff_paths_is_elementwise_and_unknown_never_equal() -> None:
    """C3 and E10: arrays by index, extra elements at their index; an unknown never equals."""
    assert diff_paths({"t": [1, 2]}, {"t": [1, 2, 3]}) == [("t", 2)]
    assert diff_paths({"t": [1, 2]}, {"t": [2, 1]}) == [("t", 0), ("t", 1)]
    assert diff_paths({"t": "x"}, {"t": UNKNOWN}) == [("t",)]
    assert diff_paths({"a": 1}, {"a": 1.0}) == []
    assert diff_paths({"a": True}, {"a": 1}) == [("a",)]


# =========================================================================== the program


def test_preview_after_up_with_nothing_changed_shows_no_changes(dev: Stack) -> None:
    """The day-two acceptance (rule 15, M4): after a successful ``up`` (R9), a ``preview`` with
    nothing changed is every resource ``same`` and executes nothing (R6); the stored outputs come
    back known (rule 3, E2), so the results are known in the preview. A second ``up`` runs nothing."""
    hosts = FakeHosts()
    report = dev.preview(executor=hosts, **run_kw(approved("dev")))
    assert report.error is None, report.error
    assert report.changes == {}
    assert set(report.ops) == set(dev.resources)
    assert hosts.calls == [] and report.executed == [] and report.patched == []
    results = report.run.outputs["results"]
    assert results["backend-core"]["digest"] == dev.outputs["results"]["backend-core"]["digest"]
    assert results["frontend"]["verdict"]["ok"] is True

    again = dev.up(executor=hosts, **run_kw(approved("dev")))
    assert again.error is None and again.changes == {} and hosts.calls == []
    assert again.output_changes == {}


def test_preview_after_up_on_prod_with_the_registry_shows_no_changes(registry_by_facts: None) -> None:
    """The same acceptance on prod, where the registry install (R7) is part of the stack: its
    stored acceptance output is decided again in the preview and is still healthy."""
    stack = Stack("prod")
    first = stack.up(executor=FakeHosts(), **run_kw(approved("prod")))
    assert first.error is None, first.error
    hosts = FakeHosts()
    report = stack.preview(executor=hosts, **run_kw(approved("prod")))
    assert report.error is None, report.error
    assert report.changes == {} and hosts.calls == []
    assert report.run.outputs["registryAcceptance"]["decision"] == "healthy"


def test_preview_after_up_shows_no_stack_output_changes(dev: Stack) -> None:
    """rule 15 on the outputs too: `plans` is the offline plan document in preview and up alike
    (the live digest is in `results`), so a preview after an up shows no `~ plans` (was a finding:
    the up exported the live digest into `plans`, the preview null)."""
    report = dev.preview(**run_kw(approved("dev")))
    assert report.error is None and report.changes == {}
    assert report.output_changes == {}


def test_one_commit_change_replaces_only_that_services_commands(dev: Stack) -> None:
    """up A, then a new commit for backend-core (k3s, R13) and findjob (D601 Compose, R16): only
    their Commands replace (the commit is ``triggers[0]``, rule 4), backend-core's DeploymentPatch
    updates (rule 12), everything else is the same and runs nothing (rule 3). The preview before
    the ``up`` reports exactly these operations and executes nothing (rule 9, R6). Rolling back to
    A is the same deploy again (R18)."""
    cfg_a = approved("dev")
    cfg_b = with_commit(cfg_a, backend_core=NEW_COMMIT, findjob="2" * 40)
    changed = of_service(commands(dev), "backend-core") | of_service(commands(dev), "findjob")
    expected = dict.fromkeys(changed, "replace")
    expected["backend-core-patch-backend-core-dev"] = "update"

    hosts = FakeHosts()
    preview = dev.preview(executor=hosts, **run_kw(cfg_b))
    assert preview.error is None, preview.error
    assert preview.changed_names() == expected
    assert hosts.calls == [] and preview.executed == []
    # the patch's new image is only known after the manifest check: unknown in the preview
    assert any(
        "containers[0].image" in p for p in preview.diffs[preview.urn("backend-core-patch-backend-core-dev")]
    )

    up = dev.up(executor=hosts, **run_kw(cfg_b))
    assert up.error is None, up.error
    assert up.changed_names() == expected
    assert {c.name for c in up.executed} == changed == set(hosts.names())
    assert all(c.op == "create" and c.command == c.create for c in up.executed)  # a replace creates
    assert [p.name for p in up.patched] == ["backend-core-patch-backend-core-dev"]
    assert up.patched[0].op == "update"
    assert (
        NEW_COMMIT
        in dev.named("backend-core-patch-backend-core-dev").inputs["spec"]["template"]["spec"]["containers"][
            0
        ]["image"]
    )
    assert dev.preview(**run_kw(cfg_b)).changes == {}

    rollback = dev.up(executor=FakeHosts(), **run_kw(cfg_a))
    assert rollback.error is None and rollback.changed_names() == expected


def test_preview_over_reports_dependents_of_unknown_outputs(dev: Stack) -> None:
    """rule 9 (E10): a new frontend commit replaces its auth read (R17), whose stdout is unknown in
    the preview, so the Secret/ConfigMap patches built from it show as updates; in the ``up`` the
    read returns the same auth and the patches are the same."""
    cfg = with_commit(approved("dev"), frontend=NEW_COMMIT)
    syncs = {"frontend-auth-sync-secret", "frontend-auth-sync-configmap"}
    preview = dev.preview(**run_kw(cfg))
    assert {n: preview.op(n) for n in syncs} == dict.fromkeys(syncs, "update")
    up = dev.up(executor=FakeHosts(), **run_kw(cfg))
    assert up.error is None, up.error
    assert {n: up.op(n) for n in syncs} == dict.fromkeys(syncs, "same")
    assert up.op("frontend-auth-read") == "replace"
    assert set(up.changes) < set(preview.changes)


def test_a_failed_create_stores_nothing_and_the_next_up_retries_it() -> None:
    """rule 7 (C10): findjob's pull fails, so it is not in the state and its deploy never
    registers (R11: nothing after a failed step runs); every other step completed and is stored.
    The next ``up`` creates exactly those two and runs nothing else."""
    stack = Stack("dev")
    first = stack.up(
        executor=FakeHosts(fail={"findjob-pull": (1, '{"ok": false}\n')}), **run_kw(approved("dev"))
    )
    assert type(first.error).__name__ == "CommandFailed"
    assert [n.rsplit("::", 1)[-1] for n in first.failed] == ["findjob-pull"]
    assert "findjob-pull" not in commands(stack) and "findjob-deploy" not in commands(stack)
    assert "findjob-manifest-check" in commands(stack)

    hosts = FakeHosts()
    retry = stack.up(executor=hosts, **run_kw(approved("dev")))
    assert retry.error is None, retry.error
    assert retry.changed_names() == {"findjob-pull": "create", "findjob-deploy": "create"}
    assert hosts.names() == ["findjob-pull", "findjob-deploy"]


def test_a_connection_change_updates_by_running_create_again_and_a_failed_update_keeps_the_old_state(
    dev: Stack,
) -> None:
    """rules 4, 5 and 7 (C2, C5, C8, C11): a new master SSH key is an update of every Command on
    the master. Each runs its ``create`` again, except the Compose deploy, whose ``update`` is its
    read-only verify mode (rotating a key no longer recreates baidu-netdisk, R14). The deploy's
    verification fails: it keeps its old inputs (the old key) and outputs; the next ``up``
    updates only it."""
    rotated = dict(FAKE_SECRETS, masterPrivateKey="FAKE-ROTATED-MASTER-KEY")
    old_stdout = dev.named("baidu-netdisk-deploy").outputs["stdout"]
    hosts = FakeHosts(fail={"baidu-netdisk-deploy": (1, '{"ok": false}\n')})
    first = dev.up(executor=hosts, **run_kw(approved("dev"), rotated))
    assert type(first.error).__name__ == "CommandFailed"
    master = {"baidu-netdisk-transfer", "baidu-netdisk-deploy", "frontend-auth-read"}
    assert first.changed_names() == dict.fromkeys(master, "update")
    for call in first.executed:
        expected = with_mode_verify(call.create) if call.name == "baidu-netdisk-deploy" else call.create
        assert (call.op, call.command) == ("update", expected)
        assert "PULUMI_COMMAND_STDOUT" in call.environment
    deploy = dev.named("baidu-netdisk-deploy")
    assert deploy.inputs["connection"]["privateKey"] == FAKE_SECRETS["masterPrivateKey"]
    assert deploy.outputs["stdout"] == old_stdout
    assert dev.named("baidu-netdisk-transfer").inputs["connection"]["privateKey"] == "FAKE-ROTATED-MASTER-KEY"

    again = dev.up(executor=FakeHosts(), **run_kw(approved("dev"), rotated))
    assert again.error is None, again.error
    assert again.changed_names() == {"baidu-netdisk-deploy": "update"}


def test_a_removed_service_is_deleted_and_its_retained_patch_only_dropped(dev: Stack) -> None:
    """rule 8 (E1, E5, K8): mdtodo leaves the stack config; the preview reports its component,
    Commands and DeploymentPatch as deletes; the ``up`` runs nothing for them (no ``delete``
    commands; the patch is ``retainOnDelete``: no relinquish) and drops them from the state.
    A failed run deletes nothing (rule 7)."""
    cfg = approved("dev")
    del cfg["services"]["mdtodo"]
    gone = of_service({r.name for r in dev.resources.values()}, "mdtodo")
    assert "mdtodo-patch-mdtodo-dev" in gone
    assert dev.named("mdtodo-patch-mdtodo-dev").options["retainOnDelete"] is True

    failed = dev.copy().up(
        executor=FakeHosts(fail={"findjob-deploy": (1, "{}\n")}),
        **run_kw(with_commit(cfg, findjob=NEW_COMMIT)),
    )
    assert failed.error is not None and "delete" not in failed.ops.values()

    preview = dev.preview(**run_kw(cfg))
    assert preview.changed_names() == dict.fromkeys(gone, "delete")
    hosts = FakeHosts()
    up = dev.up(executor=hosts, **run_kw(cfg))
    assert up.error is None, up.error
    assert up.changed_names() == dict.fromkeys(gone, "delete")
    names = list(up.changed_names())
    assert names.index("mdtodo-verify") < names.index("mdtodo-manifest-check") < names.index("mdtodo")
    assert hosts.calls == [] and up.patched == []
    assert not of_service({r.name for r in dev.resources.values()}, "mdtodo")


def test_a_patcher_sees_every_patch_create() -> None:
    """The optional patch hook (rule 12, K4): every ``*Patch`` create of an ``up`` goes through it."""
    seen: list[PatchCall] = []
    stack = Stack("dev")
    report = stack.up(executor=FakeHosts(), patcher=seen.append, **run_kw(approved("dev")))
    assert report.error is None
    assert {p.name for p in seen} == {r.name for r in stack.resources.values() if r.type.endswith("Patch")}
    assert {p.op for p in seen} == {"create"}


def test_export_import_round_trip_and_lost_state(dev: Stack) -> None:
    """E8: an exported state imported into a new stack gives the same operations (all same); an
    older state imported after a commit change makes that service replace again; a lost (empty)
    state creates everything and runs every Command again (the deploys then find the services
    live and recreate nothing: test_day_two.py, problem 3)."""
    cfg_a, cfg_b = approved("dev"), with_commit(approved("dev"), backend_core=NEW_COMMIT)
    exported = dev.export()
    assert exported == dev.resources and exported is not dev.resources
    restored = Stack("dev")
    restored.import_(exported, dev.outputs)
    assert restored.preview(**run_kw(cfg_a)).changes == {}

    assert dev.up(executor=FakeHosts(), **run_kw(cfg_b)).error is None
    back = Stack("dev")
    back.import_(exported)  # the state from before the new commit
    report = back.preview(**run_kw(cfg_b))
    assert set(report.changed_names()) == of_service(commands(dev), "backend-core") | {
        "backend-core-patch-backend-core-dev"
    }

    lost = Stack("dev")
    lost.import_({})
    hosts = FakeHosts()
    fresh = lost.up(executor=hosts, **run_kw(cfg_b))
    assert fresh.error is None, fresh.error
    assert set(fresh.ops.values()) == {"create"}
    assert set(hosts.names()) == commands(dev)


def test_an_unhealthy_registry_can_still_be_left_with_replace(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rule 11 (E6): ``pulumi up --replace <acceptance>`` runs the acceptance probe again. Since
    day two it is no longer the only way out of an unhealthy registry (the next test)."""
    world = World(registry_facts={"ok": False}, install_repairs_registry=False)
    use_live(monkeypatch, world)
    stack = Stack("prod")
    first = stack.up(**FakeHosts(world=world).up_kw(), **run_kw(approved("prod")))
    assert type(first.error).__name__ == "RegistryUnhealthy"
    world.registry_facts = {"ok": True, "probe": "registry-probe"}  # fixed by hand
    hosts = FakeHosts(world=world)
    out = stack.up(
        **hosts.up_kw(), replace=["artifact-registry-registry-acceptance"], **run_kw(approved("prod"))
    )
    assert out.error is None, out.error
    assert out.op("artifact-registry-registry-acceptance") == "replace"
    assert "artifact-registry-registry-acceptance" in hosts.names()


def test_a_fixed_registry_lets_the_next_up_pass(
    registry_by_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R7 (was a finding: issue 10, problem 1): registry-probe.sh exits 0 on an unhealthy registry,
    so the acceptance Command's unhealthy stdout is stored, and an unchanged Command never runs
    again (C4, C7). The acceptance is now decided from the live view of each run when nothing
    needs installing, so once the registry is fixed the next ``up`` passes without ``--replace``."""
    world = World(registry_facts={"ok": False}, install_repairs_registry=False)
    use_live(monkeypatch, world)
    stack = Stack("prod")
    first = stack.up(**FakeHosts(world=world).up_kw(), **run_kw(approved("prod")))
    assert type(first.error).__name__ == "RegistryUnhealthy"
    assert stack.preview(**run_kw(approved("prod"))).error is None
    world.registry_facts = {"ok": True, "probe": "registry-probe"}  # fixed by hand
    assert stack.up(**FakeHosts(world=world).up_kw(), **run_kw(approved("prod"))).error is None


def test_a_gated_commit_without_approval_holds_only_that_service(
    dev: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R10, R20 (was a finding: issue 10, problem 4): code-queue (dev) gets a new commit without an
    approval while backend-core gets one too: code-queue is held at the commit it serves (every
    input ignored: all same, nothing runs), backend-core deploys."""
    use_live(monkeypatch, world_of("dev", approved("dev")))  # what the first up deployed
    cfg = with_commit(approved("dev"), code_queue="3" * 40, backend_core=NEW_COMMIT)
    preview = dev.preview(**run_kw(cfg))
    assert preview.error is None, preview.error
    assert not of_service(set(preview.changed_names()), "code-queue"), preview.changed_names()
    up = dev.up(executor=FakeHosts(), **run_kw(cfg))
    assert up.error is None, up.error
    assert up.op("backend-core-manifest-check") == "replace"


def test_a_script_only_change_replaces_nothing(dev: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new version of this project's scripts (here: one more comment line in every script's
    stdin) may update, but replaces no Command (was a finding: issue 10, problem 5, when the
    script text's hash was a trigger)."""
    from artifact_cd import scripts

    original = scripts.script_text
    monkeypatch.setattr(scripts, "script_text", lambda name: original(name) + "# v2\n")
    preview = dev.preview(**run_kw(approved("dev")))
    assert preview.error is None, preview.error
    assert "replace" not in preview.ops.values(), sorted(preview.changed_names())
