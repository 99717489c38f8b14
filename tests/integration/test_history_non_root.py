"""``history`` as the unprivileged operator on the rig's k3s host (issue 11 + 13): the Deployment
read behind a k3s service's live commit goes through ``sudo -n <k3s> kubectl`` with README's
``get deployment`` line, and names that line when it is missing.

The rig's k3s stand-in has a root-only kubeconfig and no API server: with the line, the read runs
as root and fails only on the connection (never "permission denied"); without it, ``sudo -n``
refuses and the fact names exactly the README line. Two read-only probes, nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from artifact_cd.config import parse_stack_config
from artifact_cd.history import probe_requests, workloads
from artifact_cd.plan import plan_services
from tests.rig import Rig
from tests.rig.rig import OPERATOR

pytestmark = pytest.mark.integration

SERVICE = "decision-center"  # a k3s consumer in prod


@pytest.fixture
def sudoers(rig: Rig) -> Iterator[list[str]]:
    lines = rig.sudoers_lines()
    try:
        yield lines
    finally:
        rig.set_sudoers(lines)


def k3s_fact(rig: Rig, elevate: str = "sudo") -> dict[str, object]:
    raw = rig.stack_config("prod", user=OPERATOR)
    raw["hosts"]["d601"]["elevate"] = elevate
    cfg = parse_stack_config(raw, "prod")
    request = probe_requests(cfg, workloads(plan_services(cfg)))["d601"]
    assert request.elevate == elevate
    call = request.model_copy(update={"registry": None, "repository": ()})  # the k3s read only
    result = rig.d601.run_call(call, user=OPERATOR, timeout=120)
    assert result.returncode == 0 and result.json is not None, result.stdout + result.stderr
    fact: dict[str, object] = result.json["workloads"][SERVICE]
    return fact


def test_history_as_the_operator_reads_k3s_through_sudo_and_names_a_missing_line(
    rig: Rig, sudoers: list[str]
) -> None:
    rig.set_sudoers(sudoers)
    plain = k3s_fact(rig, elevate="none")  # as the operator: the root-only kubeconfig refuses
    assert plain["found"] is None and "permission denied" in str(plain["detail"]).lower(), plain
    elevated = k3s_fact(rig)
    assert elevated["found"] is None and "sudoers" not in elevated, elevated
    assert "permission denied" not in str(elevated["detail"]).lower(), elevated

    line = next(x for x in sudoers if "kubectl -n unidesk get deployment" in x)
    rig.set_sudoers([x for x in sudoers if x != line])
    refused = k3s_fact(rig)
    assert refused["found"] is None and refused["sudoers"] == line, refused
    assert line in str(refused["detail"])
