"""k3s-import.sh's read-only preflight (issue 11 item 3) with a FAKE `k3s` on PATH.

Before anything is pulled into k3s containerd, every Deployment the plan's patches target
(``--deployment NAME:CONTAINER`` in ``--deployment-namespace``) must exist with that container;
a wrong name stops the step as ``deployment-missing`` / ``container-missing`` (exit 3, not
retryable) naming the Deployment, the namespace and the config key, with nothing imported. The fake
plays ``k3s ctr`` (version answers; a pull is recorded and answered "not found", so a run that gets
past the preflight ends ``manifest-missing``: the import was reached) and ``k3s kubectl -n NS get
deployment NAME -o jsonpath=...`` from files a test writes, with kubectl's own error words. The
elevated path (a root-only kubeconfig, ``sudo -n``) runs on the rig (tests/integration/test_non_root.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifact_cd.contract import ExitCode, K3sImportArgs, StepResult
from artifact_cd.scripts import command_line, script_text

BASH = shutil.which("bash") or "/bin/bash"
TAG = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "a" * 64
IMAGE_ID = "sha256:" + "b" * 64
JSONPATH = "jsonpath={.spec.template.spec.containers[*].name}"

FAKE_K3S = textwrap.dedent(
    """\
    #!/bin/bash
    # FAKE k3s for unit tests only: `k3s ctr` and `k3s kubectl` from files under $FAKE_K3S_DIR.
    d=$FAKE_K3S_DIR
    printf '%s\\n' "$*" >> "$d/calls"
    case $1 in
      ctr)
        case " $* " in
          *" version "*) echo "Client: fake"; exit 0 ;;
          *" images pull "*) echo "ctr: failed to resolve reference: not found" >&2; exit 1 ;;
        esac
        exit 1 ;;
      kubectl)
        if [[ -e $d/api-down ]]; then
          echo "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?" >&2
          exit 1
        fi
        if [[ $2 == -n && $4 == get && $5 == deployment && $7 == -o ]]; then
          f=$d/deployment.$3.$6
          if [[ -f $f ]]; then cat "$f"; exit 0; fi
          echo "Error from server (NotFound): deployments.apps \\"$6\\" not found" >&2
          exit 1
        fi
        exit 1 ;;
    esac
    exit 1
    """
)


class FakeK3s:
    def __init__(self, root: Path) -> None:
        self.dir = root / "k3s"
        self.dir.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        k3s = self.bin / "k3s"
        k3s.write_text(FAKE_K3S)
        k3s.chmod(0o755)
        self.socket_path = root / "containerd.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(str(self.socket_path))  # -S: a socket is there (the fake ctr answers)

    def close(self) -> None:
        self._socket.close()

    def deployment(self, namespace: str, name: str, *containers: str) -> None:
        (self.dir / f"deployment.{namespace}.{name}").write_text(" ".join(containers))

    @property
    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def args(self, *deployments: str, namespace: str | None = "unidesk") -> K3sImportArgs:
        return K3sImportArgs(
            socket=str(self.socket_path),
            namespace="k8s.io",
            registry="127.0.0.1:5000",
            repository="unidesk/decision-center",
            tag=TAG,
            digest=DIGEST,
            image_id=IMAGE_ID,
            service_id="decision-center",
            elevate="sudo",
            deployment_namespace=namespace if deployments else None,
            deployments=deployments,
        )

    def run(self, argv: tuple[str, ...] | list[str]) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            [BASH, "-c", command_line(list(argv))],
            input=script_text("k3s-import.sh"),
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_K3S_DIR": str(self.dir), "TMPDIR": str(self.dir)},
            check=False,
        )
        assert len([line for line in proc.stdout.splitlines() if line.strip()]) == 1, (
            proc.stdout,
            proc.stderr,
        )
        return proc.returncode, StepResult.parse(proc.stdout, "k3s-import.sh").data

    @property
    def pulled(self) -> bool:
        return any(" images pull " in f" {c} " for c in self.calls)


@pytest.fixture
def k3s(tmp_path: Path) -> Iterator[FakeK3s]:
    fake = FakeK3s(tmp_path)
    yield fake
    fake.close()


def test_present_deployments_and_containers_let_the_import_run(k3s: FakeK3s) -> None:
    k3s.deployment("unidesk", "dc-api", "sidecar", "api")
    k3s.deployment("unidesk", "dc-worker", "worker")
    code, doc = k3s.run(k3s.args("dc-api:api", "dc-worker:worker").to_argv())
    # past the preflight: the pull ran (the fake registry has nothing: manifest-missing)
    assert (code, doc["error"]) == (ExitCode.PRECONDITION, "manifest-missing"), doc
    reads = [c for c in k3s.calls if c.startswith("kubectl")]
    assert reads == [
        f"kubectl -n unidesk get deployment dc-api -o {JSONPATH}",
        f"kubectl -n unidesk get deployment dc-worker -o {JSONPATH}",
    ]
    assert k3s.pulled
    assert k3s.calls.index(reads[-1]) < next(i for i, c in enumerate(k3s.calls) if "images pull" in c)


def test_a_missing_deployment_stops_before_anything_is_imported(k3s: FakeK3s) -> None:
    k3s.deployment("unidesk", "dc-api", "api")
    code, doc = k3s.run(k3s.args("dc-api:api", "dc-wrker:worker").to_argv())
    assert code == ExitCode.PRECONDITION and doc["error"] == "deployment-missing", doc
    assert doc["retryable"] is False
    assert (doc["deployment"], doc["namespace"]) == ("dc-wrker", "unidesk")
    assert doc["key"] == "services.decision-center.names.deployments"
    assert (
        "services.decision-center.names.deployments" in doc["detail"]
        and "nothing was imported" in doc["detail"]
    )
    assert not k3s.pulled, "nothing is pulled or imported"


def test_a_deployment_in_another_namespace_is_missing_here(k3s: FakeK3s) -> None:
    k3s.deployment("unidesk-dev", "dc-api", "api")
    code, doc = k3s.run(k3s.args("dc-api:api").to_argv())
    assert code == ExitCode.PRECONDITION and doc["error"] == "deployment-missing", doc
    assert not k3s.pulled


def test_a_missing_container_stops_before_anything_is_imported(k3s: FakeK3s) -> None:
    k3s.deployment("unidesk", "dc-api", "api-server", "sidecar")
    code, doc = k3s.run(k3s.args("dc-api:api").to_argv())
    assert code == ExitCode.PRECONDITION and doc["error"] == "container-missing", doc
    assert (doc["deployment"], doc["container"], doc["containers"]) == ("dc-api", "api", "api-server sidecar")
    assert doc["key"] == "services.decision-center.names.deployments" and doc["retryable"] is False
    assert not k3s.pulled


def test_an_unreachable_api_is_infra_blocked_not_a_missing_name(k3s: FakeK3s) -> None:
    k3s.deployment("unidesk", "dc-api", "api")
    (k3s.dir / "api-down").touch()
    code, doc = k3s.run(k3s.args("dc-api:api").to_argv())
    assert code == ExitCode.INFRA_BLOCKED and doc["error"] == "infra-blocked", doc
    assert doc["channel"] == "kubernetes-api"
    assert not k3s.pulled


def test_without_deployments_there_is_no_kubectl_read(k3s: FakeK3s) -> None:
    code, doc = k3s.run(k3s.args().to_argv())
    assert (code, doc["error"]) == (ExitCode.PRECONDITION, "manifest-missing"), doc
    assert not [c for c in k3s.calls if c.startswith("kubectl")]


@pytest.mark.parametrize(
    ("extra", "argument"),
    [
        (["--deployment", "dc-api"], "--deployment"),  # no container
        (["--deployment", "dc-api:Api"], "--deployment"),
        (["--deployment", "dc api:api"], "--deployment"),
        (["--deployment", "dc-api:api;x"], "--deployment"),
        (["--deployment-namespace", "unidesk"], "--deployment"),  # a namespace and no Deployment
        (["--deployment", "dc-api:api"], "--deployment-namespace"),  # a Deployment and no namespace
        (["--deployment-namespace", "Uni_desk", "--deployment", "dc-api:api"], "--deployment-namespace"),
    ],
)
def test_bad_deployment_arguments_are_refused_before_any_call(
    k3s: FakeK3s, extra: list[str], argument: str
) -> None:
    code, doc = k3s.run([*k3s.args().to_argv(), *extra])
    assert code == ExitCode.INVALID and doc["error"] == "invalid-argument", doc
    assert doc["argument"] == argument
    assert k3s.calls == []
