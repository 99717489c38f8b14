"""k3s consumer steps on the real rig (R13, R17): what can run without a Kubernetes API.

D601's containerd on /run/k3s/containerd/containerd.sock plays k3s containerd. The ``import`` step
first proves each Deployment to patch exists with its container (the stand-in ``k3s kubectl``
answers that one read from the rig's Deployments), then pulls the commit tag from D601's loopback
registry into namespace k8s.io and proves the listed digest and the config digest; the frontend-dev ``auth-read`` step reads the master server's
config.json. The ``verify`` step needs a Kubernetes API, which does not exist here: on the rig it
must refuse as infra-blocked naming the channel (its logic is unit-tested with a fake kubectl in
tests/unit/test_scripts_k3s_verify.py). Steps run exactly as the plan gives them, over real SSH.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from artifact_cd.config import parse_stack_config
from artifact_cd.plan import plan_service
from tests.rig import Rig

pytestmark = pytest.mark.integration

SERVICE = "decision-center"
K1 = hashlib.sha1(b"k3s-tests:one").hexdigest()  # noqa: S324 - a test id
K2 = hashlib.sha1(b"k3s-tests:two").hexdigest()  # noqa: S324


@pytest.fixture(scope="module")
def images(rig: Rig) -> dict[str, dict[str, str]]:
    return {c: rig.publish_test_image(SERVICE, c) for c in (K1, K2)}


def plan_for(rig: Rig, env: str, service: str, commit: str, names: dict[str, Any] | None = None) -> Any:
    raw = rig.stack_config(env, {service: commit})
    if names:
        raw["services"][service]["names"] = names
    return plan_service(parse_stack_config(raw, env), service)


def listed(rig: Rig, socket: str, ref: str) -> str:
    out = rig.d601.sh('ctr --address "$1" -n k8s.io images ls "name==$2"', socket, ref).stdout
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    return next((row[2] for row in rows if row[0] == ref), "")


def test_import_into_k3s_containerd_keeps_the_registry_digest(rig: Rig, images: dict[str, dict[str, str]]) -> None:
    plan = plan_for(rig, "prod", SERVICE, K1)
    assert [s.id for s in plan.steps] == ["manifest-check", "import", f"patch-{SERVICE}", "verify"]
    check = rig.d601.run_step(plan.steps[0])
    assert check.returncode == 0 and check.json is not None, check.stderr
    assert check.json["digest"] == images[K1]["digest"]
    step = plan.step_by_id["import"]
    socket = step.args[step.args.index("--socket") + 1]
    ref = f"{rig.registry}/unidesk/{SERVICE}:{K1}"

    first = rig.d601.run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
    assert first.returncode == 0 and first.json is not None, (first.stdout, first.stderr)
    assert first.json["image"] == ref and first.json["namespace"] == "k8s.io"
    assert first.json["digest"] == images[K1]["digest"] and first.json["imageId"] == images[K1]["imageId"]
    assert listed(rig, socket, ref) == images[K1]["digest"], "ctr lists the commit tag with the registry digest"

    again = rig.d601.run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
    assert again.returncode == 0, again.stderr

    # The tag moved in the registry after the manifest check (K2's digest is what the check saw):
    moved = rig.d601.run_step(step, digest=images[K2]["digest"], image_id=images[K2]["imageId"])
    assert moved.returncode == 6 and moved.json is not None, moved.stdout
    assert moved.json["error"] == "digest-mismatch" and moved.json["listedDigest"] == images[K1]["digest"]
    assert listed(rig, socket, ref) == "", "a mismatching tag is removed so no rollout can use it"

    restored = rig.d601.run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
    assert restored.returncode == 0 and listed(rig, socket, ref) == images[K1]["digest"]


def test_import_with_the_registry_down_is_retryable(rig: Rig, images: dict[str, dict[str, str]]) -> None:
    plan = plan_for(rig, "prod", SERVICE, K2)
    rig.d601.sh("systemctl stop unidesk-artifact-registry.service")
    try:
        result = rig.d601.run_step(plan.step_by_id["import"], digest=images[K2]["digest"], image_id=images[K2]["imageId"])
    finally:
        rig.d601.sh(
            "systemctl start unidesk-artifact-registry.service; for i in $(seq 150); do "
            "[ \"$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/)\" = 200 ] && exit 0; sleep 0.2; done; exit 1"
        )
    assert result.returncode == 4 and result.json is not None, result.stdout
    assert result.json["error"] == "registry-unreachable" and result.json["retryable"] is True


def test_a_wrong_deployment_name_stops_the_import_before_anything_is_pulled(
    rig: Rig, images: dict[str, dict[str, str]]
) -> None:
    """Issue 11 item 3: before anything is imported, the import step reads (read-only) each
    Deployment the patches target and its container names (the rig's k3s stand-in answers that read
    as kubectl does). A wrong Deployment or container name set in config stops it, naming the key;
    nothing is pulled into k3s containerd. The right names then import."""
    ref = f"{rig.registry}/unidesk/{SERVICE}:{K2}"
    socket = ""
    for names, error in (
        ({"deployments": [{"name": "decision-centre", "container": SERVICE}]}, "deployment-missing"),
        ({"deployments": [{"name": SERVICE, "container": "api"}]}, "container-missing"),
    ):
        step = plan_for(rig, "prod", SERVICE, K2, names).step_by_id["import"]
        socket = step.args[step.args.index("--socket") + 1]
        rig.d601.sh('ctr --address "$1" -n k8s.io images rm "$2" >/dev/null 2>&1 || true', socket, ref)
        result = rig.d601.run_step(step, digest=images[K2]["digest"], image_id=images[K2]["imageId"])
        assert result.returncode == 3 and result.json is not None, (result.stdout, result.stderr)
        assert result.json["error"] == error and result.json["retryable"] is False
        assert result.json["namespace"] == "unidesk"
        assert result.json["key"] == f"services.{SERVICE}.names.deployments"
        assert listed(rig, socket, ref) == "", "nothing was imported"
    step = plan_for(rig, "prod", SERVICE, K2).step_by_id["import"]
    assert step.args[step.args.index("--deployment") + 1] == f"{SERVICE}:{SERVICE}"
    done = rig.d601.run_step(step, digest=images[K2]["digest"], image_id=images[K2]["imageId"])
    assert done.returncode == 0 and done.json is not None, (done.stdout, done.stderr)
    assert listed(rig, socket, ref) == images[K2]["digest"]


def test_verify_without_a_kubernetes_api_is_infra_blocked(rig: Rig, images: dict[str, dict[str, str]]) -> None:
    plan = plan_for(rig, "prod", SERVICE, K1)
    result = rig.d601.run_step(plan.step_by_id["verify"])
    assert result.returncode == 5 and result.json is not None, (result.stdout, result.stderr)
    assert result.json["error"] == "infra-blocked" and result.json["channel"] in ("kubectl", "kubernetes-api")


def test_frontend_dev_auth_read_on_the_master(rig: Rig) -> None:
    """R17: the auth section of the master's config.json, one JSON line, nothing else of the file."""
    commit = hashlib.sha1(b"k3s-tests:frontend").hexdigest()  # noqa: S324
    plan = plan_for(rig, "dev", "frontend", commit)
    step = plan.step_by_id["auth-read"]
    path = step.args[step.args.index("--config") + 1]
    auth = {"users": [{"name": "admin", "passwordHash": "h$1"}], "sessionSecret": "s-e-c-r-e-t"}
    rig.master.write_file(
        path, json.dumps({"auth": auth, "database": {"password": "db-pass-not-auth"}}), mode="0600", owner=rig.master.user
    )
    try:
        result = rig.master.run_step(step)
        assert result.returncode == 0 and result.json is not None, result.stderr
        assert result.json["auth"] == auth
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", result.json["authSha256"])
        assert "db-pass-not-auth" not in result.stdout + result.stderr
        rig.master.write_file(
            path, json.dumps({"database": {"password": "db-pass-not-auth"}}), mode="0600", owner=rig.master.user
        )
        missing = rig.master.run_step(step)
        assert missing.returncode == 3 and missing.json is not None and missing.json["error"] == "auth-missing"
        assert "db-pass-not-auth" not in missing.stdout + missing.stderr
    finally:
        rig.master.sh('rm -f -- "$1"', path)
