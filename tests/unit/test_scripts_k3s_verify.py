"""k3s-verify.sh with a FAKE `kubectl` on PATH (R13): there is no Kubernetes API on these machines.

The fake plays the three calls the script makes — `rollout status`, `get deployment -o jsonpath`
(the pod template's deploy-commit annotation) and `get --raw` on the service proxy — from files
a test writes, and records every call. What is proven: rollouts are awaited per Deployment, the
health is read only through the API service proxy, and an old healthy revision is rejected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from artifact_cd.contract import StepResult
from artifact_cd.scripts import command_line, script_text

NEW = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
BASH = shutil.which("bash") or "/bin/bash"

FAKE_KUBECTL = textwrap.dedent(
    """\
    #!/bin/bash
    # FAKE kubectl for unit tests only: answers from files under $FAKE_K8S, records each call.
    d=$FAKE_K8S
    printf '%s\\n' "$*" >> "$d/calls"
    if [[ -e $d/api-down ]]; then
      echo "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?" >&2
      exit 1
    fi
    args="$*"
    case "$args" in
      *"rollout status deployment/"*)
        dep=${args##*deployment/}; dep=${dep%% *}
        if [[ $(cat "$d/rollout-$dep" 2>/dev/null) == ok ]]; then
          echo "deployment \\"$dep\\" successfully rolled out"; exit 0
        fi
        echo "error: deployment \\"$dep\\" exceeded its progress deadline" >&2; exit 1 ;;
      *"get deployment "*)
        dep=${args##*get deployment }; dep=${dep%% *}
        cat "$d/annotation-$dep" 2>/dev/null; exit 0 ;;
      *"get --raw "*)
        n=$(( $(cat "$d/n" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$d/n"
        f=$d/health.$n
        [[ -e $f ]] || f=$(ls "$d"/health.* | sort -t. -k2 -n | tail -n 1)
        if [[ $(head -c 3 "$f") == ERR ]]; then
          echo "Error from server (ServiceUnavailable): the server is currently unable to handle the request" >&2
          exit 1
        fi
        cat "$f"; exit 0 ;;
    esac
    exit 1
    """
)


def health(commit: str, requested: str) -> str:
    return json.dumps({"status": "ok", "deploy": {"commit": commit, "requestedCommit": requested}})


class FakeCluster:
    def __init__(self, root: Path) -> None:
        self.dir = root / "k8s"
        self.dir.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        kubectl = self.bin / "kubectl"
        kubectl.write_text(FAKE_KUBECTL)
        kubectl.chmod(0o755)

    def deployment(self, name: str, *, rolled_out: bool = True, commit: str = NEW) -> None:
        (self.dir / f"rollout-{name}").write_text("ok" if rolled_out else "stuck")
        (self.dir / f"annotation-{name}").write_text(commit)

    def health(self, *bodies: str) -> None:
        for i, body in enumerate(bodies, start=1):
            (self.dir / f"health.{i}").write_text(body)

    def bare_bin(self) -> Path:
        """A PATH with bash's helpers only (this machine has a real kubectl in /usr/bin)."""
        bare = self.dir.parent / "bare"
        bare.mkdir(exist_ok=True)
        for tool in ("bash", "tr", "hostname", "python3", "mktemp", "rm"):
            found = shutil.which(tool)
            assert found, tool
            if not (bare / tool).exists():
                (bare / tool).symlink_to(found)
        return bare

    @property
    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def verify(self, *deployments: str, with_kubectl: bool = True) -> tuple[int, dict[str, Any], str]:
        args = ["--namespace", "unidesk-dev"]
        for dep in deployments:
            args += ["--deployment", dep]
        args += ["--service", "svc-dev", "--port", "8080", "--health-path", "/health", "--commit", NEW, "--timeout", "5"]
        path = f"{self.bin}:/usr/bin:/bin" if with_kubectl else str(self.bare_bin())
        proc = subprocess.run(
            [BASH, "-c", command_line(args)],
            input=script_text("k3s-verify.sh"),
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": path, "FAKE_K8S": str(self.dir)},
            check=False,
        )
        assert len([line for line in proc.stdout.splitlines() if line.strip()]) == 1, (proc.stdout, proc.stderr)
        return proc.returncode, StepResult.parse(proc.stdout, "k3s-verify.sh").data, proc.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    return FakeCluster(tmp_path)


def test_rollouts_then_health_through_the_service_proxy(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev")
    cluster.deployment("b-dev")
    cluster.health("ERR", health(NEW, NEW))  # first answer: endpoints not ready yet
    code, doc, _ = cluster.verify("a-dev", "b-dev")
    assert code == 0, doc
    assert [d["name"] for d in doc["deployments"]] == ["a-dev", "b-dev"]
    assert all(d["rolledOut"] and d["templateCommit"] == NEW for d in doc["deployments"])
    assert doc["health"] == {"deployCommit": NEW, "requestedCommit": NEW}
    raw = [c for c in cluster.calls if c.startswith("get --raw")]
    assert raw == ["get --raw /api/v1/namespaces/unidesk-dev/services/svc-dev:8080/proxy/health"] * 2
    rollouts = [c for c in cluster.calls if "rollout status" in c]
    assert rollouts == [
        "-n unidesk-dev rollout status deployment/a-dev --timeout=5s",
        "-n unidesk-dev rollout status deployment/b-dev --timeout=5s",
    ]


def test_a_stuck_rollout_fails_and_names_the_deployment(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev")
    cluster.deployment("b-dev", rolled_out=False)
    cluster.health(health(NEW, NEW))
    code, doc, _ = cluster.verify("a-dev", "b-dev")
    assert code == 6 and doc["error"] == "rollout-failed" and doc["deployment"] == "b-dev"
    assert not [c for c in cluster.calls if c.startswith("get --raw")], "no health read before every rollout is done"


def test_a_deployment_whose_template_is_on_another_commit_is_rejected(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev", commit=OLD)
    cluster.health(health(NEW, NEW))
    code, doc, _ = cluster.verify("a-dev")
    assert code == 6 and doc["error"] == "commit-mismatch" and OLD in doc["detail"]


@pytest.mark.parametrize("body", [health(OLD, OLD), health(NEW, OLD)])
def test_an_old_healthy_revision_is_rejected(cluster: FakeCluster, body: str) -> None:
    cluster.deployment("a-dev")
    cluster.health(body)
    code, doc, _ = cluster.verify("a-dev")
    assert code == 6 and doc["error"] == "commit-mismatch"
    deploy = json.loads(body)["deploy"]
    assert doc["health"] == {"deployCommit": deploy["commit"], "requestedCommit": deploy["requestedCommit"]}


def test_old_pods_leaving_the_service_within_the_grace_are_tolerated(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev")
    cluster.health(health(OLD, OLD), health(NEW, NEW))
    code, doc, _ = cluster.verify("a-dev")
    assert code == 0, doc
    assert doc["health"]["deployCommit"] == NEW


def test_health_that_never_answers_is_unhealthy(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev")
    cluster.health("ERR")
    code, doc, _ = cluster.verify("a-dev")
    assert code == 6 and doc["error"] == "unhealthy" and "ServiceUnavailable" in doc["detail"]


def test_unreachable_api_is_infra_blocked(cluster: FakeCluster) -> None:
    cluster.deployment("a-dev")
    (cluster.dir / "api-down").touch()
    code, doc, _ = cluster.verify("a-dev")
    assert code == 5 and doc["error"] == "infra-blocked" and doc["channel"] == "kubernetes-api"


def test_no_kubectl_is_infra_blocked(cluster: FakeCluster) -> None:
    code, doc, _ = cluster.verify("a-dev", with_kubectl=False)
    assert code == 5 and doc["error"] == "infra-blocked" and doc["channel"] == "kubectl"
    assert cluster.calls == []
