"""What ends up in the Pulumi state: no secret in clear, triggers that change only for the service
whose commit changed (the commit, the live slot and the argv hash; never the script text),
failures that stop the dependants, and the offline ``plan --resources`` view (stable JSON; the
same program in preview, without a live view)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from artifact_cd import scripts

from .program_support import FAKE_AUTH_SECRET, FAKE_SECRETS, FakeHosts, approved, stack_config

COMMAND = "command:remote:Command"
FAKES = [*FAKE_SECRETS.values(), FAKE_AUTH_SECRET]


@pytest.fixture(scope="module")
def dev_up(engine: Any) -> tuple[Any, FakeHosts]:
    hosts = FakeHosts()
    run = engine.run_program(
        "dev", preview=False, config=approved("dev"), secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert run.error is None, run.error
    return run, hosts


# --------------------------------------------------------------------------- secrets


def test_no_secret_value_appears_in_any_input_not_marked_secret_fake_hosts(
    cached_run: Any, dev_up: Any
) -> None:
    run, _ = dev_up
    runs = [run, cached_run("dev"), cached_run("prod"), cached_run("prod", config=approved("prod"))]
    seen_in_secret: set[str] = set()
    for r in (res for one in runs for res in one.resources):
        redacted = json.dumps(r.redacted_inputs, default=str)
        for fake in FAKES:
            assert fake not in redacted, (r.type, r.name, fake)
        full = json.dumps(r.inputs, default=str)
        seen_in_secret |= {fake for fake in FAKES if fake in full}
    # the detector works: every fake value was registered, always under a secret mark
    assert seen_in_secret == set(FAKES)
    for one in runs:
        for fake in FAKES:
            assert fake not in json.dumps(one.outputs, default=str)


def test_secret_bearing_stdout_is_a_secret_output_and_not_logged_fake_hosts(dev_up: Any) -> None:
    run, _ = dev_up
    for r in run.of_type(COMMAND):
        secret_stdout = r.name == "frontend-auth-read"
        assert ({"stdout", "stderr"} <= set(r.options["additionalSecretOutputs"])) is secret_stdout, r.name
        assert r.inputs["logging"] == ("none" if secret_stdout else "stdoutAndStderr")
        assert r.input_is_secret("connection.privateKey")
        assert r.inputs["connection"]["privateKey"] in FAKE_SECRETS.values()
    assert run.named("d601-k3s").input_is_secret("kubeconfig")


def test_a_failing_secret_step_does_not_echo_its_stdout_fake_hosts(engine: Any) -> None:
    leak = json.dumps({"ok": False, "error": "x", "auth": {"token": FAKE_AUTH_SECRET}})
    hosts = FakeHosts(fail={"frontend-auth-read": (3, leak + "\n")})
    run = engine.run_program(
        "dev", preview=False, config=approved("dev"), secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert type(run.error).__name__ == "CommandFailed"
    assert "frontend-auth-read" in str(run.error) and FAKE_AUTH_SECRET not in str(run.error)
    assert "frontend-verify" not in hosts.names()


# --------------------------------------------------------------------------- triggers


def _triggers(run: Any) -> dict[str, Any]:
    return {r.name: (r.parent, r.inputs["triggers"]) for r in run.of_type(COMMAND)}


@pytest.mark.parametrize(("stack", "service"), [("dev", "frontend"), ("prod", "findjob")])
def test_changing_one_commit_changes_only_that_services_triggers(
    cached_run: Any, stack: str, service: str
) -> None:
    before = cached_run(stack)
    cfg = stack_config(stack)
    new = hashlib.sha1(b"another pushed commit").hexdigest()  # noqa: S324 (a commit-shaped value)
    cfg["services"][service]["commit"] = new
    after = cached_run(stack, config=cfg)
    assert after.error is None
    t0, t1 = _triggers(before), _triggers(after)
    assert set(t0) == set(t1)
    changed = {name for name in t0 if t0[name] != t1[name]}
    assert changed == {name for name, (parent, _) in t0.items() if parent == service}
    assert changed  # the service has Commands, and all of them change
    for name in changed:
        subject, slot, _ = t1[name][1]
        assert subject == new and slot == t0[name][1][1]  # the commit changed, not the live slot
    others = {r.name: r.inputs for r in before.program_resources if r.parent not in (service, None)}
    assert others == {r.name: r.inputs for r in after.program_resources if r.parent not in (service, None)}


def test_triggers_are_the_commit_the_live_slot_and_the_argv_hash_never_the_script(cached_run: Any) -> None:
    """[subject, live slot, sha256 of the argv template]: what must redeploy, never the script text
    (a new script version is a stdin change: an update, docs/engine-semantics.md C2). In sync, the
    live slot keeps its stored value (ignore_changes triggers[1]); the registry, which the default
    fake facts do not show healthy, carries its drift fingerprint there."""
    run = cached_run("prod")
    plan_steps = {}
    for doc in run.outputs["plans"].values():
        for step in doc["steps"]:
            plan_steps[f"{doc['service']}-{step['id']}"] = (doc["commit"], step)
    for step in run.outputs["registryHost"]["steps"]:
        plan_steps[f"artifact-registry-{step['id']}"] = (None, step)
    scripts_hashes = {
        hashlib.sha256(scripts.script_text(s["script"]).encode()).hexdigest()
        for _, s in plan_steps.values()
        if s["script"]
    }
    for r in run.of_type(COMMAND):
        commit, step = plan_steps[r.name]
        subject, slot, argv_hash = r.inputs["triggers"]
        assert subject == (commit or f"registry-host:{run.outputs['registryHost']['paths']['image']}")
        assert argv_hash == hashlib.sha256("\0".join(step["args"]).encode()).hexdigest()
        assert slot not in scripts_hashes
        if commit is None:
            assert slot.startswith("registry:infra-blocked:") and r.options["ignoreChanges"] == []
        elif r.parent == "code-queue-mgr":  # gated without its approval: held, every input ignored
            assert slot == "live:held" and {"triggers", "create", "stdin"} <= set(r.options["ignoreChanges"])
        else:
            assert slot == "live:in-sync" and r.options["ignoreChanges"] == ["triggers[1]"]


# --------------------------------------------------------------------------- executor


def test_executor_failure_stops_the_dependants_only_fake_hosts(engine: Any) -> None:
    missing = json.dumps({"ok": False, "error": "manifest-missing", "retryable": False})
    hosts = FakeHosts(fail={"findjob-manifest-check": (3, missing + "\n")})
    run = engine.run_program(
        "dev", preview=False, config=approved("dev"), secrets=FAKE_SECRETS, environ={}, executor=hosts
    )
    assert type(run.error).__name__ == "CommandFailed"
    assert "findjob-manifest-check" in str(run.error) and "manifest-missing" in str(run.error)
    names = hosts.names()
    assert "findjob-manifest-check" in names
    assert "findjob-pull" not in names and "findjob-deploy" not in names  # nothing touched on the target
    assert "pipeline-deploy" in names  # an independent service still deploys, as with the real engine


def test_commands_are_executed_from_worker_threads_with_each_call_recorded_once_fake_hosts(
    dev_up: Any,
) -> None:
    run, hosts = dev_up
    names = hosts.names()
    assert len(names) == len(set(names)) == len(run.of_type(COMMAND))
    assert all(not t.startswith("MainThread") for t in hosts.threads)


# --------------------------------------------------------------------------- plan --resources


@pytest.fixture(scope="module")
def resources_json() -> dict[str, Any]:
    import contextlib
    import io

    from artifact_cd.cli import main

    outs = []
    for _ in range(2):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(["plan", "--stack", "dev", "--resources"]) == 0
        outs.append(buffer.getvalue())
    assert outs[0] == outs[1]  # stable across runs (registration order varies with threads)
    doc: dict[str, Any] = json.loads(outs[0])
    assert outs[0] == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # sorted keys
    return doc


def test_plan_resources_lists_every_resource_beside_the_plan_documents(
    resources_json: dict[str, Any], cached_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from artifact_cd.cli import main

    assert main(["plan", "--stack", "dev"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert resources_json["plans"] == {d["service"]: d for d in offline["services"]}
    assert resources_json["registryHost"] == offline["registryHost"]
    run = cached_run("dev", secrets=None)  # placeholder secrets: no live view, as --resources
    names = sorted(r.name for r in run.program_resources)
    assert sorted(d["name"] for d in resources_json["resources"]) == names
    keys = [(d["parent"] or "", d["type"], d["name"]) for d in resources_json["resources"]]
    assert keys == sorted(keys)
    assert "offline-placeholder" not in json.dumps(resources_json)


def test_plan_resources_shows_commands_with_templates_and_stdin_hashes(
    resources_json: dict[str, Any],
) -> None:
    commands = [d for d in resources_json["resources"] if d["type"] == COMMAND]
    steps = {
        f"{svc}-{s['id']}": s
        for svc, doc in resources_json["plans"].items()
        if doc["decision"] == "planned"
        for s in doc["steps"]
        if s["script"]
    }
    assert {d["name"] for d in commands} == set(steps)
    for d in commands:
        step = steps[d["name"]]
        cmd = d["command"]
        assert cmd["create"] == scripts.command_line(step["args"])
        assert cmd["createResolved"] is not ("<digest:manifest-check>" in step["args"])
        assert (
            cmd["stdinSha256"] == hashlib.sha256(scripts.script_text(step["script"]).encode()).hexdigest()
            and cmd["script"] == step["script"]
        )
        assert cmd["step"] == step["id"] and cmd["connection"] == "[secret]"
        assert cmd["delete"] is None and d["protect"] is False


def test_plan_resources_shows_patch_specs_and_retain_flags(resources_json: dict[str, Any]) -> None:
    patches = [d for d in resources_json["resources"] if d["type"] == "kubernetes:apps/v1:DeploymentPatch"]
    assert patches
    for d in patches:
        step = next(s for s in resources_json["plans"][d["parent"]]["steps"] if d["name"].endswith(s["id"]))
        assert d["patch"] == step["patch"] and d["patchResolved"] is False
        assert d["retainOnDelete"] is True and d["provider"] == "d601-k3s"
    secret = next(d for d in resources_json["resources"] if d["type"] == "kubernetes:core/v1:SecretPatch")
    assert secret["patch"]["stringData"] == "[secret]"


def test_plan_resources_refuses_a_single_service(capsys: pytest.CaptureFixture[str]) -> None:
    from artifact_cd.cli import main

    assert main(["plan", "--stack", "dev", "--service", "findjob", "--resources"]) == 2
    assert "--resources" in capsys.readouterr().out
