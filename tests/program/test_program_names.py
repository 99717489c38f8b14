"""The program with names a stack sets (issue 11 item 3) and its ownership refusals (issue 12).

The program runs the same parser as the offline plan, so a name set in ``services.<id>.names``
reaches the registered resources' exact commands and patches (R12: what the dry-run shows is
what runs), and a container or retag the sibling stack owns (its ``Pulumi.<other>.yaml`` in the
project root, read offline) refuses the run before any resource is registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .program_support import stack_config

COMMAND = "command:remote:Command"
DEPLOYMENT_PATCH = "kubernetes:apps/v1:DeploymentPatch"


def test_r12_names_set_in_config_reach_the_registered_commands_and_patches(
    cached_run: Any, healthy_registry: list[Mapping[str, Any]]
) -> None:
    prod = stack_config("prod")
    prod["services"]["findjob"]["names"] = {
        "containerName": "findjob-api",
        "retag": "findjob-live",
        "healthPort": 9000,
    }
    prod["services"]["mdtodo"]["names"] = {"deployments": [{"name": "mdtodo-web", "container": "web"}]}
    run = cached_run("prod", config=prod, preview=False)  # an up on fake hosts: every command is known
    assert run.error is None, run.error
    deploy = run.named("findjob-deploy")
    assert deploy.type == COMMAND
    argv = str(deploy.inputs["create"])
    for flag in ("--container findjob-api", "--retag findjob-live", "--health-port 9000"):
        assert flag in argv, (flag, argv)
    assert "findjob-backend" not in argv
    (patch,) = [r for r in run.children("mdtodo") if r.type == DEPLOYMENT_PATCH]
    assert (patch.inputs["metadata"]["namespace"], patch.inputs["metadata"]["name"]) == (
        "unidesk",
        "mdtodo-web",
    )
    assert [c["name"] for c in patch.inputs["spec"]["template"]["spec"]["containers"]] == ["web"]
    names = run.outputs["plans"]["findjob"]["names"]
    assert names["containerName"] == {
        "value": "findjob-api",
        "source": "config",
        "key": "services.findjob.names.containerName",
        "assumed": False,
    }


def test_issue12_a_container_the_dev_stack_owns_refuses_the_prod_run_before_anything(cached_run: Any) -> None:
    """The shipped Pulumi.dev.yaml (the project root) gives findjob dev the container
    findjob-backend-dev on the same D601: prod naming it too is refused, nothing registered."""
    prod = stack_config("prod")
    prod["services"]["findjob"]["names"] = {"containerName": "findjob-backend-dev"}
    run = cached_run("prod", config=prod)
    assert type(run.error).__name__ == "ProgramRefused"
    message = str(run.error)
    assert "unidesk-artifact-cd:services.findjob.names.containerName" in message
    assert "stack dev" in message and "Pulumi.dev.yaml" in message and "Fix:" in message
    assert not run.program_resources


def test_issue12_two_services_on_one_retag_refuse_the_run(cached_run: Any) -> None:
    dev = stack_config("dev")
    dev["services"]["pipeline"]["names"] = {"retag": "findjob-dev"}
    run = cached_run("dev", config=dev)
    assert type(run.error).__name__ == "ProgramRefused"
    assert "unidesk-artifact-cd:services.pipeline.names.retag" in str(run.error) and "in this stack" in str(
        run.error
    )
    assert not run.program_resources
