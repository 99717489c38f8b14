"""live-probe.sh and its helper py/livefacts.py: one host's live facts, read-only (issue 10).

- the helper's functions, called directly with a fake ``run`` (docker, kubectl, ctr) and a fake
  ``request`` (health GETs, manifest HEADs): what each fact is in every case, read the way the
  deploy verifies it; secrets as present/length only;
- the spec is validated twice: the contract's pydantic models and the helper agree on what is
  refused (hostile values never reach a tool);
- the script as sent, on this machine, with fake ``docker``/``kubectl``/``ctr`` on PATH and a local
  HTTP server playing the services' health and the registry: one JSON line, exit 0, nothing written,
  no secret value anywhere; invalid arguments refused before any tool runs.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from artifact_cd import contract
from artifact_cd.config import parse_stack_config
from artifact_cd.contract import (
    LiveComposeSpec,
    LiveK3sDeploymentSpec,
    LiveK3sSpec,
    LiveManifestSpec,
    LiveProbeArgs,
    LiveProbeSpec,
)
from artifact_cd.plan import registry_probe_call
from artifact_cd.scripts import PY_DIR, command_line, script_text
from artifact_cd.scripts.py import auth, container, envfile, health, livefacts
from tests.unit.script_support import PY38, needs_python38

A = "a" * 40
B = "b" * 40
DIGEST = "sha256:" + "d" * 64
IMAGE_ID = "sha256:" + "1" * 64
SECRET_VALUE = "hunter2-never-in-output"
REGISTRY = "127.0.0.1:5000"
HELPERS = {"envfile": envfile, "container": container, "health": health, "auth": auth}
COMMIT_RE = contract.COMMIT_RE
BASH = shutil.which("bash") or "/bin/bash"


def compose_spec(service: str = "oa-event-flow", **over: Any) -> LiveComposeSpec:
    prefix = "UNIDESK_" + service.upper().replace("-", "_") + "_DEPLOY_"
    values: dict[str, Any] = {
        "service": service,
        "container": f"{service}-backend",
        "image": f"{REGISTRY}/unidesk/{service}:{A}",
        "env_prefix": prefix,
        "verify": "standard",
        "health_path": "/health",
        "health_port": 8080,
        "env_file": "/srv/x/.env.deploy",
    }
    values.update(over)
    return LiveComposeSpec(**values)


def k3s_spec(service: str = "decision-center", **over: Any) -> LiveK3sSpec:
    values: dict[str, Any] = {
        "service": service,
        "namespace": "unidesk",
        "deployments": (LiveK3sDeploymentSpec(name=service, container=service),),
        "kubernetes_service": service,
        "health_path": "/health",
        "health_port": 8080,
        "image": f"{REGISTRY}/unidesk/{service}:{A}",
        "socket": "/run/k3s/containerd/containerd.sock",
        "containerd_namespace": "k8s.io",
    }
    values.update(over)
    return LiveK3sSpec(**values)


def raw(spec: LiveProbeSpec) -> dict[str, Any]:
    return livefacts.decode_spec(spec.to_b64(), COMMIT_RE)


def inspect_doc(
    name: str,
    prefix: str,
    *,
    revision: str = A,
    env_commit: str = A,
    status: str = "running",
    ip: str = "172.18.0.5",
    netmode: str = "bridge",
) -> dict[str, Any]:
    return {
        "Id": "c" * 64,
        "Name": "/" + name,
        "Image": IMAGE_ID,
        "State": {"Status": status, "Running": status == "running", "ExitCode": 0 if status == "running" else 1},
        "Config": {
            "Image": name.removesuffix("-backend"),
            "Labels": {contract.REVISION_LABEL: revision},
            "Env": [f"{prefix}COMMIT={env_commit}", f"SOME_SECRET={SECRET_VALUE}", "PATH=/bin"],
        },
        "HostConfig": {"NetworkMode": netmode},
        "NetworkSettings": {"Networks": {"default": {"IPAddress": ip if netmode != "host" else ""}}},
    }


class World:
    """Fake tools and HTTP for a Probe: records every call."""

    def __init__(self) -> None:
        self.containers: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self.health: dict[tuple[str, int, str], tuple[int, Any]] = {}
        self.manifests: dict[str, tuple[int, str]] = {}
        self.deployments: dict[str, Any] | None = {"items": []}
        self.kube_error = ""
        self.proxy: dict[str, Any] = {}
        self.ctr: list[str] | None = []
        self.tools = {"docker", "kubectl", "ctr"}
        self.calls: list[list[str]] = []
        self.requests: list[tuple[str, str, int, str, tuple[tuple[str, str], ...]]] = []

    def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "docker" and argv[1] == "inspect":
            names = argv[argv.index("--") + 1 :]
            found = [d for d in self.containers if d["Name"].lstrip("/") in names]
            missing = [n for n in names if n not in {d["Name"].lstrip("/") for d in found}]
            err = "".join(f"Error: No such container: {n}\n" for n in missing)
            return (1 if missing else 0), json.dumps(found), err
        if argv[:2] == ["docker", "image"]:
            refs = argv[argv.index("--") + 1 :]
            found = [{"Id": IMAGE_ID, "RepoTags": [r]} for r in refs if r in self.tags]
            missing = [r for r in refs if r not in self.tags]
            return (1 if missing else 0), json.dumps(found), "".join(f"Error: No such image: {r}\n" for r in missing)
        if argv[0] == "kubectl" and "deployments" in argv:
            if self.deployments is None:
                return 1, "", self.kube_error
            return 0, json.dumps(self.deployments), ""
        if argv[0] == "kubectl" and "--raw" in argv:
            path = argv[argv.index("--raw") + 1]
            if path not in self.proxy:
                return 1, "", self.kube_error or 'Error from server (ServiceUnavailable): no endpoints available for service "x"'
            return 0, json.dumps(self.proxy[path]), ""
        if argv[0] == "ctr":
            if self.ctr is None:
                return 1, "", "ctr: failed to dial"
            return 0, "\n".join(self.ctr) + "\n", ""
        raise AssertionError(f"unexpected tool call {argv}")

    def request(
        self, method: str, host: str, port: int, path: str, *, headers: Sequence[tuple[str, str]], timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, host, port, path, tuple(headers)))
        if method == "HEAD":
            if path not in self.manifests:
                raise ConnectionRefusedError(111, "Connection refused")
            code, digest = self.manifests[path]
            return code, ({"docker-content-digest": digest} if digest else {}), b""
        if (host, port, path) not in self.health:
            raise TimeoutError("timed out")
        code, body = self.health[(host, port, path)]
        return code, {}, (body if isinstance(body, bytes) else json.dumps(body).encode())

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.tools else None

    def probe(self, *, docker: bool = True, state: str = "reachable") -> livefacts.Probe:
        return livefacts.Probe(
            helpers=HELPERS,
            docker=["docker"] if docker else None,
            docker_state=state,
            revision_label=contract.REVISION_LABEL,
            digest_re=contract.DIGEST_RE,
            media_types=contract.MANIFEST_MEDIA_TYPES,
            run=self.run,
            request=self.request,
            which=self.which,
            exists=lambda path: True,
        )


def health_body(commit: str = A, requested: str = A, **extra: Any) -> dict[str, Any]:
    return {"status": "ok", "deploy": {"commit": commit, "requestedCommit": requested}, **extra}


# --------------------------------------------------------------------------- the spec, both sides


def test_the_helper_accepts_every_spec_the_contract_builds_and_reads_it_back() -> None:
    spec = LiveProbeSpec(
        compose=(compose_spec(required_secrets=("UNIDESK_X_TOKEN",)),),
        k3s=(k3s_spec(),),
        manifests=(LiveManifestSpec(endpoint=REGISTRY, repository="unidesk/oa-event-flow", tag=A),),
        auth_config="/home/ubuntu/unidesk/config.json",
    )
    decoded = raw(spec)
    assert decoded == spec.model_dump(mode="json", by_alias=True)
    assert set(decoded) == {"version", "compose", "k3s", "manifests", "authConfig"}, "k3s, not to_camel's k3S"
    assert LiveProbeSpec.from_b64(spec.to_b64()) == spec
    assert tuple(k.value for k in contract.VerifyKind) == livefacts.VERIFY_KINDS
    assert {*livefacts.COMPOSE_KEYS, "requiredSecrets"} == set(decoded["compose"][0])
    assert set(livefacts.K3S_KEYS) == set(decoded["k3s"][0])


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("container", {"container": "x; rm -rf /"}),
    ("container", {"container": "-rf"}),
    ("image", {"image": f"{REGISTRY}/unidesk/x:latest"}),
    ("image", {"image": f"{REGISTRY}/unidesk/x:{A}$(id)"}),
    ("envPrefix", {"env_prefix": "lower_"}),
    ("healthPath", {"health_path": "/health?x=$(id)"}),
    ("healthPort", {"health_port": 70000}),
    ("envFile", {"env_file": "/srv/../etc/shadow"}),
    ("envFile", {"env_file": "relative/.env"}),
    ("requiredSecrets", {"required_secrets": ("BAD KEY",)}),
]


@pytest.mark.parametrize(("key", "change"), HOSTILE, ids=[f"{k}-{i}" for i, (k, _) in enumerate(HOSTILE)])
def test_a_hostile_value_is_refused_on_both_sides(key: str, change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        compose_spec(**change)
    good = LiveProbeSpec(compose=(compose_spec(),)).model_dump(mode="json", by_alias=True)
    alias = {"env_prefix": "envPrefix", "health_path": "healthPath", "health_port": "healthPort",
             "env_file": "envFile", "required_secrets": "requiredSecrets"}  # fmt: skip
    field, value = next(iter(change.items()))
    good["compose"][0][alias.get(field, field)] = list(value) if isinstance(value, tuple) else value
    text = base64.b64encode(json.dumps(good).encode()).decode()
    with pytest.raises(livefacts.SpecError, match=key):
        livefacts.decode_spec(text, COMMIT_RE)
    with pytest.raises(ValueError):
        LiveProbeSpec.from_b64(text)


def test_the_spec_shape_is_checked_before_any_value() -> None:
    for doc, why in (
        ({"version": 2}, "version"),
        ({"version": 1, "extra": 1}, "unknown keys"),
        ({"version": 1, "compose": {}}, "not a list"),
        ({"version": 1, "k3s": [{"service": "x"}]}, "missing keys"),
        ({"version": 1, "manifests": [{"endpoint": "10.0.0.1:5000", "repository": "unidesk/x", "tag": A}]}, "endpoint"),
        ({"version": 1, "manifests": [{"endpoint": "127.0.0.1:99999", "repository": "unidesk/x", "tag": A}]}, "port"),
        ({"version": 1, "authConfig": "/a/./b"}, "authConfig"),
    ):
        with pytest.raises(livefacts.SpecError, match=why):
            livefacts.validate_spec(doc, COMMIT_RE)
    twice = LiveProbeSpec(compose=(compose_spec(),)).model_dump(mode="json", by_alias=True)
    twice["k3s"] = [k3s_spec(service="oa-event-flow").model_dump(mode="json", by_alias=True)]
    with pytest.raises(livefacts.SpecError, match="twice"):
        livefacts.validate_spec(twice, COMMIT_RE)
    with pytest.raises(ValueError, match="twice"):
        LiveProbeSpec(compose=(compose_spec(),), k3s=(k3s_spec(service="oa-event-flow"),))
    with pytest.raises(livefacts.SpecError, match="base64"):
        livefacts.decode_spec("not base64!", COMMIT_RE)


def test_the_args_model_carries_the_registry_probe_all_or_none() -> None:
    cfg = parse_stack_config({"env": "prod", "hosts": {"d601": {"host": "d601"}, "master": {"host": "m"}}}, "prod")
    registry = registry_probe_call(cfg)
    args = LiveProbeArgs.of("d601", LiveProbeSpec(), registry)
    assert args.registry == registry and args.spec == LiveProbeSpec()
    argv = args.to_argv()
    assert argv[:4] == ("--host", "d601", "--spec-b64", LiveProbeSpec().to_b64())
    assert argv[argv.index("--registry-endpoint") + 1] == registry.endpoint
    assert LiveProbeArgs.of("master", LiveProbeSpec()).to_argv() == ("--host", "master", "--spec-b64", LiveProbeSpec().to_b64())
    with pytest.raises(ValueError, match="all or none"):
        LiveProbeArgs(host="d601", spec_b64=LiveProbeSpec().to_b64(), registry_unit="x.service")
    with pytest.raises(ValueError):
        LiveProbeArgs(host="d601", spec_b64="eyJ2ZXJzaW9uIjogM30=")  # {"version": 3}
    with pytest.raises(ValueError):
        LiveProbeArgs(host="elsewhere", spec_b64=LiveProbeSpec().to_b64())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Compose facts


def test_a_compose_service_live_on_its_commit() -> None:
    w = World()
    spec = compose_spec()
    w.containers = [inspect_doc("oa-event-flow-backend", spec.env_prefix)]
    w.tags = [spec.image]
    w.health[("172.18.0.5", 8080, "/health")] = (200, health_body())
    facts = w.probe().compose_facts(raw(LiveProbeSpec(compose=(spec,)))["compose"])
    assert facts == {
        "oa-event-flow": {
            "service": "oa-event-flow",
            "kind": "compose",
            "found": True,
            "imagePresent": True,
            "containerId": "c" * 64,
            "imageId": IMAGE_ID,
            "image": "oa-event-flow",
            "revision": A,
            "requestedCommit": A,
            "running": True,
            "healthOk": True,
            "healthCommit": A,
            "healthRequestedCommit": A,
        }
    }
    assert [c[:2] for c in w.calls] == [["docker", "inspect"], ["docker", "image"]] or sorted(
        c[1] for c in w.calls
    ) == ["image", "inspect"], "one inspect of every container and one of every image, whatever the count"
    assert SECRET_VALUE not in json.dumps(facts)


def test_compose_faults_are_facts() -> None:
    w = World()
    specs = (
        compose_spec("oa-event-flow"),
        compose_spec("findjob"),
        compose_spec("project-manager"),
        compose_spec("frontend", verify="baidu-auth-gate"),
        compose_spec("todo-note", verify="todo-note-synthetic", health_path="/api/health"),
        compose_spec("backend-core"),
    )
    oa, _findjob, pm, front, todo, core = specs
    w.containers = [
        inspect_doc("oa-event-flow-backend", oa.env_prefix, revision=B, env_commit=B),  # drifted
        inspect_doc("project-manager-backend", pm.env_prefix, status="exited"),
        inspect_doc("frontend-backend", front.env_prefix),
        inspect_doc("todo-note-backend", todo.env_prefix, netmode="host", env_commit=B),
        inspect_doc("backend-core-backend", core.env_prefix, ip="172.18.0.9"),
    ]
    w.tags = [front.image]
    w.health[("172.18.0.5", 8080, "/health")] = (200, health_body(commit=B, requested=B, auth={"configured": True}))
    w.health[("127.0.0.1", 8080, "/api/health")] = (200, {"status": "ok"})
    w.health[("172.18.0.9", 8080, "/health")] = (500, b"boom")
    facts = w.probe().compose_facts(raw(LiveProbeSpec(compose=specs))["compose"])
    assert facts["oa-event-flow"]["revision"] == B and facts["oa-event-flow"]["healthCommit"] == B
    assert facts["oa-event-flow"]["imagePresent"] is False
    assert facts["findjob"] == {"service": "findjob", "kind": "compose", "found": False, "imagePresent": False}
    assert facts["project-manager"]["running"] is False and facts["project-manager"]["healthOk"] is False
    assert facts["project-manager"]["detail"] == "the container is exited"
    assert facts["frontend"]["healthOk"] is False, "baidu-auth-gate: the five auth booleans must all be true"
    assert facts["frontend"]["detail"] == "health: the auth booleans are not all true"
    todo_facts = facts["todo-note"]
    assert (todo_facts["healthOk"], todo_facts["healthCommit"], todo_facts["healthRequestedCommit"]) == (True, A, B), (
        "todo-note-synthetic: deploy.commit is the image label, requestedCommit the container env (127.0.0.1: host network)"
    )
    assert facts["backend-core"]["healthOk"] is False and facts["backend-core"]["detail"] == "health: HTTP 500"


def test_health_answers_read_the_way_the_deploy_verifies() -> None:
    p = World().probe()
    assert p.health_facts((None, b"", "TimeoutError: timed out"))["why"] == "health: no answer (TimeoutError: timed out)"
    assert p.health_facts((200, b"[1]", ""))["why"] == "health: HTTP 200 but not a JSON object"
    assert p.health_facts((200, b"{", ""))["healthOk"] is False
    evil = json.dumps({"deploy": {"commit": "$(id)", "requestedCommit": A}}).encode()
    assert p.health_facts((200, evil, ""))["healthCommit"] == "<other>", "only health.py's safe fields leave a body"
    gate = {"deploy": {"commit": A, "requestedCommit": A}, "auth": dict.fromkeys(health.AUTH_KEYS, True)}
    assert p.health_facts((200, json.dumps(gate).encode(), ""), verify="baidu-auth-gate")["healthOk"] is True
    down = p.health_facts((200, b'{"status":"degraded"}', ""), verify="todo-note-synthetic", revision=A, env_commit=A)
    assert down["healthOk"] is False and down["why"] == "health: status 'degraded', not ok"


def test_secrets_are_presence_and_length_only_even_without_docker(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"UNIDESK_X_ID={SECRET_VALUE}\nUNIDESK_X_EMPTY=\nOTHER=1\n")
    spec = compose_spec(env_file=str(env), required_secrets=("UNIDESK_X_ID", "UNIDESK_X_EMPTY", "UNIDESK_X_GONE"))
    w = World()
    facts = w.probe(docker=False, state="daemon-unreachable").compose_facts(raw(LiveProbeSpec(compose=(spec,)))["compose"])
    one = facts["oa-event-flow"]
    assert one["found"] is False and one["detail"] == "docker: daemon-unreachable on this host"
    assert one["secrets"] == {
        "UNIDESK_X_ID": {"present": True, "length": len(SECRET_VALUE)},
        "UNIDESK_X_EMPTY": {"present": False, "length": 0},
        "UNIDESK_X_GONE": {"present": False, "length": 0},
    }
    assert w.calls == [] and SECRET_VALUE not in json.dumps(facts)
    unreadable_spec = compose_spec(env_file=str(tmp_path), required_secrets=("UNIDESK_X_ID",))  # a directory
    one_spec = raw(LiveProbeSpec(compose=(unreadable_spec,)))["compose"][0]
    w.health[("172.18.0.5", 8080, "/health")] = (200, health_body())
    beside = w.probe().one_compose(one_spec, inspect_doc("oa-event-flow-backend", spec.env_prefix), [])
    assert beside["detail"] == f"env file {tmp_path}: IsADirectoryError" and "secrets" not in beside
    missing = w.probe().one_compose(one_spec, None, [])
    assert "detail" not in missing, "no container and an unreadable env file: not-deployed, not unknown"


def test_a_docker_that_does_not_answer_makes_every_compose_service_unknown() -> None:
    w = World()
    w.run = lambda argv, timeout: (1, "", "Cannot connect to the Docker daemon at unix:///x. Is it running?\n")  # type: ignore[method-assign]
    facts = w.probe().compose_facts(raw(LiveProbeSpec(compose=(compose_spec(),)))["compose"])
    assert facts["oa-event-flow"]["found"] is False
    assert facts["oa-event-flow"]["detail"].startswith("docker inspect failed: Cannot connect to the Docker daemon")
    assert facts["oa-event-flow"]["imagePresent"] is None


# --------------------------------------------------------------------------- k3s facts


def deployment(name: str, container_name: str, image: str, commit: str, ready: int = 1) -> dict[str, Any]:
    env = [{"name": "UNIDESK_DEPLOY_COMMIT", "value": commit}, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {}}}]
    return {
        "metadata": {"name": name, "generation": 3},
        "spec": {"template": {"spec": {"containers": [{"name": container_name, "image": image, "env": env}]}}},
        "status": {"readyReplicas": ready},
    }


def test_k3s_deployments_health_through_the_api_proxy_and_containerd_images() -> None:
    w = World()
    one = k3s_spec()
    two = k3s_spec(
        "code-queue",
        namespace="unidesk",
        deployments=(
            LiveK3sDeploymentSpec(name="code-queue-read-dev", container="code-queue-read"),
            LiveK3sDeploymentSpec(name="code-queue-write-dev", container="code-queue-write"),
        ),
        kubernetes_service="code-queue-read-dev",
    )
    three = k3s_spec("mdtodo")
    w.deployments = {
        "items": [
            deployment("decision-center", "decision-center", one.image, A),
            deployment("code-queue-read-dev", "code-queue-read", two.image, A),
            deployment("code-queue-write-dev", "code-queue-write", f"{REGISTRY}/unidesk/code-queue:{B}", B, ready=0),
        ]
    }
    w.proxy["/api/v1/namespaces/unidesk/services/decision-center:8080/proxy/health"] = health_body()
    w.ctr = [one.image, "docker.io/library/other:1"]
    facts = w.probe().k3s_facts(raw(LiveProbeSpec(k3s=(one, two, three)))["k3s"])
    assert facts["decision-center"] == {
        "service": "decision-center",
        "kind": "k3s",
        "imagePresent": True,
        "found": True,
        "image": one.image,
        "requestedCommit": A,
        "running": True,
        "generation": "decision-center=3",
        "healthOk": True,
        "healthCommit": A,
        "healthRequestedCommit": A,
    }
    cq = facts["code-queue"]
    assert cq["generation"] == "code-queue-read-dev=3,code-queue-write-dev=3"
    assert cq["found"] is True and cq["image"] is None and cq["requestedCommit"] is None and cq["running"] is False
    assert cq["imagePresent"] is False and "the Deployments disagree" in cq["detail"]
    assert "no endpoints available" in cq["detail"]
    assert facts["mdtodo"] == {"service": "mdtodo", "kind": "k3s", "imagePresent": False, "found": False}
    namespaces = [c for c in w.calls if "deployments" in c]
    assert len(namespaces) == 1, "one Deployment list per namespace"
    assert all("--request-timeout=5s" in c for c in w.calls if c[0] == "kubectl")


def test_an_api_that_does_not_answer_is_a_detail_not_a_failure() -> None:
    w = World()
    w.deployments = None
    w.kube_error = "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?\n"
    w.ctr = [k3s_spec().image]
    facts = w.probe().k3s_facts(raw(LiveProbeSpec(k3s=(k3s_spec(),)))["k3s"])["decision-center"]
    assert facts["found"] is False and facts["imagePresent"] is True
    assert facts["detail"].startswith("kubernetes-api: does not answer: The connection to the server")
    w.tools = {"ctr"}
    none = w.probe().k3s_facts(raw(LiveProbeSpec(k3s=(k3s_spec(),)))["k3s"])["decision-center"]
    assert none["detail"] == "kubernetes-api: neither k3s nor kubectl is installed here"
    w.tools = {"k3s"}
    p = w.probe()
    assert p._tool("kubectl") == ["k3s", "kubectl"] and p._tool("ctr") == ["k3s", "ctr"], "as k3s-verify/k3s-import"


# --------------------------------------------------------------------------- manifests and auth


def test_manifests_are_a_head_with_the_four_media_types() -> None:
    w = World()
    w.manifests = {f"/v2/unidesk/a/manifests/{A}": (200, DIGEST), f"/v2/unidesk/b/manifests/{A}": (404, ""),
                   f"/v2/unidesk/c/manifests/{A}": (500, "")}  # fmt: skip
    specs = [LiveManifestSpec(endpoint=REGISTRY, repository=f"unidesk/{r}", tag=A) for r in "abcd"]
    found, errors = w.probe().manifest_facts(raw(LiveProbeSpec(manifests=tuple(specs)))["manifests"])
    assert found == {f"unidesk/a:{A}": DIGEST, f"unidesk/b:{A}": None}
    assert errors == {
        f"unidesk/c:{A}": "registry-error: HTTP 500 (digest '')",
        f"unidesk/d:{A}": "registry-unreachable: ConnectionRefusedError: [Errno 111] Connection refused",
    }
    for method, host, port, _, headers in w.requests:
        assert (method, host, port) == ("HEAD", "127.0.0.1", 5000)
        assert headers == tuple(("Accept", m) for m in contract.MANIFEST_MEDIA_TYPES)


def test_the_auth_hash_is_the_canonical_section_never_its_values(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    section = {"clientSecret": SECRET_VALUE, "b": [1, "ü"], "a": {"z": 1, "y": 2}}
    config.write_text(json.dumps({"auth": section, "other": 1}, indent=4))
    from components.k3s_consumer import canonical_auth  # what the dev auth sync writes and hashes

    got = World().probe().auth_facts(str(config))
    expected = hashlib.sha256(canonical_auth(section).encode("utf-8")).hexdigest()
    assert got == {"configPath": str(config), "sha256": expected, "error": None}
    assert (World().probe().auth_facts(str(tmp_path / "none.json")) or {})["error"] == "config-missing"
    config.write_text("{not json " + SECRET_VALUE)
    bad = World().probe().auth_facts(str(config)) or {}
    assert bad["error"] == "config-invalid" and SECRET_VALUE not in json.dumps(bad)
    assert World().probe().auth_facts(None) is None


# --------------------------------------------------------------------------- the answer


def test_answer_embeds_the_registry_facts_and_refuses_a_bad_spec() -> None:
    texts = {f"LIVEFACTS_{n.upper()}": (PY_DIR / f"{n}.py").read_text() for n in livefacts.HELPERS}
    argv = [LiveProbeSpec().to_b64(), "d601", "1700000000.5", "none", "not-installed", contract.REVISION_LABEL,
            f"^{contract.COMMIT_PATTERN}$", f"^{contract.DIGEST_PATTERN}$", *contract.MANIFEST_MEDIA_TYPES]  # fmt: skip
    code, line = livefacts.answer(argv, texts, '{"ok":true,"probe":"registry-probe"}\n')
    doc = json.loads(line)
    assert code == 0 and doc["ok"] is True and doc["probe"] == "live-probe" and doc["host"] == "d601"
    assert doc["registry"] == {"ok": True, "probe": "registry-probe"} and doc["registryError"] is None
    assert doc["docker"] == {"state": "not-installed", "sudo": False} and doc["services"] == {}
    assert isinstance(doc["seconds"], float)
    assert livefacts.registry_facts("garbage") == (None, "the registry facts are not JSON")
    assert livefacts.registry_facts("") == (None, None)
    code, line = livefacts.answer(["e30=", *argv[1:]], texts, "")  # {}: no version
    assert code == 2 and json.loads(line)["argument"] == "--spec-b64" and json.loads(line)["error"] == "invalid-argument"


def test_a_helper_loaded_from_its_text_is_the_module() -> None:
    loaded = livefacts.load_helper("envfile", (PY_DIR / "envfile.py").read_text())
    assert loaded.__name__ == "envfile" and loaded.secrets_report.__doc__ == envfile.secrets_report.__doc__


# --------------------------------------------------------------------------- the script, as sent


def _exe(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[tuple[str, str], tuple[int, dict[str, str], bytes]]] = {}

    def _answer(self, method: str) -> None:
        code, headers, body = self.routes.get((method, self.path), (404, {}, b""))
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, dict[tuple[str, str], tuple[int, dict[str, str], bytes]]]]:
    routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], routes
    httpd.shutdown()


def run_probe(args: LiveProbeArgs | Sequence[str], env: dict[str, str]) -> tuple[int, dict[str, Any], str, str]:
    argv = args.to_argv() if isinstance(args, LiveProbeArgs) else tuple(args)
    proc = subprocess.run(
        [BASH, "-c", command_line(argv)], input=script_text("live-probe.sh"), capture_output=True, text=True,
        env=env, timeout=60, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0]), proc.stdout, proc.stderr


def test_shellcheck_clean_as_sent() -> None:
    assert shutil.which("shellcheck"), "shellcheck is one of ./run's rig packages"
    proc = subprocess.run(["shellcheck", "-s", "bash", "-"], input=script_text("live-probe.sh"), capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout


def test_the_script_follows_the_conventions() -> None:
    body = (Path(contract.__file__).parent / "scripts" / "live-probe.sh").read_text()
    assert body.rstrip().splitlines()[-1] == 'main "$@"' and "main() {\n  exec </dev/null" in body
    assert "eval" not in body and "set -euo pipefail" in body


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["--host", "elsewhere", "--spec-b64", "e30="], "--host"),
        (["--host", "d601", "--spec-b64", "not base64!"], "--spec-b64"),
        (["--host", "d601", "--spec-b64", "e30=", "--registry-unit", "x.service"], "--registry-unit"),
        (["--host", "d601", "--spec-b64", "e30=", "--other", "x"], "--other"),
        (["--host", "d601", "--spec-b64", "e30="], "--spec-b64"),  # {}: the helper refuses it
    ],
)
def test_invalid_arguments_are_refused_before_any_tool(argv: list[str], argument: str, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    called = tmp_path / "called"
    for tool in ("docker", "kubectl", "ctr", "k3s", "systemctl", "curl", "sudo"):
        _exe(bindir / tool, f'echo "$0" >> {called}\nexit 1\n')
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    code, doc, _, _ = run_probe(argv, env)
    assert code == 2 and doc["error"] == "invalid-argument" and doc["argument"] == argument
    assert not called.exists() or (argument == "--spec-b64" and called.read_text().split() == [str(bindir / "docker")]), (
        "only `docker version` (docker_probe) may run before the helper refuses the spec"
    )


def test_the_probe_on_this_machine_with_fake_tools(tmp_path: Path, server: tuple[int, dict[Any, Any]]) -> None:
    """The whole script: fake docker (an in-sync container on the host network), fake kubectl (an API
    that does not answer), fake ctr, a local server for health and the registry, the registry facts."""
    port, routes = server
    env_file = tmp_path / ".env.deploy"
    env_file.write_text(f"UNIDESK_OA_EVENT_FLOW_TOKEN={SECRET_VALUE}\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auth": {"secret": SECRET_VALUE}}))
    socket_path = tmp_path / "containerd.sock"
    socket_path.write_text("")
    oa = compose_spec(health_port=port, env_file=str(env_file), required_secrets=("UNIDESK_OA_EVENT_FLOW_TOKEN",))
    dc = k3s_spec(socket=str(socket_path))
    spec = LiveProbeSpec(
        compose=(oa,),
        k3s=(dc,),
        manifests=(LiveManifestSpec(endpoint=f"127.0.0.1:{port}", repository="unidesk/oa-event-flow", tag=A),),
        auth_config=str(config),
    )
    routes[("GET", "/health")] = (200, {}, json.dumps(health_body()).encode())
    routes[("HEAD", f"/v2/unidesk/oa-event-flow/manifests/{A}")] = (200, {"Docker-Content-Digest": DIGEST}, b"")
    inspect = json.dumps([inspect_doc("oa-event-flow-backend", oa.env_prefix, netmode="host")])
    images = json.dumps([{"Id": IMAGE_ID, "RepoTags": [oa.image]}])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    (tmp_path / "inspect.json").write_text(inspect)
    (tmp_path / "images.json").write_text(images)
    _exe(bindir / "docker", f"""printf '%s\\n' "docker $*" >> {calls}
case "$1 $2" in
  "version --format") echo 27.0.3 ;;
  "inspect --type")
    if [[ " $* " == *" --format "* ]]; then echo "Error: No such object: $6" >&2; exit 1; fi
    cat {tmp_path / "inspect.json"} ;;
  "image inspect")
    if [[ " $* " == *" --format "* ]]; then echo "Error: No such image" >&2; exit 1; fi
    cat {tmp_path / "images.json"} ;;
  *) echo "unexpected docker $*" >&2; exit 9 ;;
esac
""")  # fmt: skip
    _exe(bindir / "kubectl", f'printf "%s\\n" "kubectl $*" >> {calls}\necho "The connection to the server 127.0.0.1:6443 was refused" >&2\nexit 1\n')
    _exe(bindir / "ctr", f'printf "%s\\n" "ctr $*" >> {calls}\necho "{dc.image}"\n')
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    cfg = parse_stack_config({"env": "prod", "hosts": {"d601": {"host": "d601"}, "master": {"host": "m"}},
                              "registry": {"composeCommand": "/usr/bin/docker-compose"}}, "prod")  # fmt: skip
    calls.write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, doc, stdout, stderr = run_probe(LiveProbeArgs.of("d601", spec, registry_probe_call(cfg)), env)
    assert code == 0, stderr
    assert SECRET_VALUE not in stdout + stderr
    assert doc["probe"] == "live-probe" and doc["host"] == "d601" and doc["docker"]["state"] == "reachable"
    assert doc["services"]["oa-event-flow"]["healthOk"] is True and doc["services"]["oa-event-flow"]["revision"] == A
    assert doc["services"]["oa-event-flow"]["secrets"] == {"UNIDESK_OA_EVENT_FLOW_TOKEN": {"present": True, "length": len(SECRET_VALUE)}}
    assert doc["services"]["oa-event-flow"]["imagePresent"] is True
    assert doc["services"]["decision-center"]["found"] is False and doc["services"]["decision-center"]["imagePresent"] is True
    assert doc["services"]["decision-center"]["detail"].startswith("kubernetes-api: does not answer")
    assert doc["manifests"] == {f"unidesk/oa-event-flow:{A}": DIGEST} and doc["manifestErrors"] == {}
    assert len(doc["auth"]["sha256"]) == 64 and doc["tools"] == {"ctr": "ctr", "kubectl": "kubectl"}
    registry = doc["registry"]
    assert registry["probe"] == "registry-probe" and registry["expected"]["endpoint"] == cfg.registry.endpoint
    assert registry["files"]["config"]["expectedSha256"] == registry_probe_call(cfg).config_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "the probe wrote nothing"
    tools = calls.read_text().splitlines()
    read_only = {"docker": ("docker version ", "docker inspect ", "docker image inspect "),
                 "kubectl": ("kubectl -n unidesk get deployments ", "kubectl get --raw "),
                 "ctr": (f"ctr --address {socket_path} -n k8s.io images ls -q",)}  # fmt: skip
    assert [c for c in tools if not c.startswith(read_only[c.split()[0]])] == [], "read-only tool calls only"
    assert sum(1 for c in tools if c.startswith("docker inspect --type container -- ")) == 1


@needs_python38
def test_the_helper_runs_on_python_3_8_as_the_script_runs_it(tmp_path: Path) -> None:
    assert PY38 is not None
    env_file = tmp_path / ".env"
    env_file.write_text(f"UNIDESK_X_TOKEN={SECRET_VALUE}\n")
    spec = LiveProbeSpec(
        compose=(compose_spec(env_file=str(env_file), required_secrets=("UNIDESK_X_TOKEN",)),),
        manifests=(LiveManifestSpec(endpoint="127.0.0.1:9", repository="unidesk/x", tag=A),),
        auth_config=str(tmp_path / "config.json"),
    )
    env = {**os.environ, **{f"LIVEFACTS_{n.upper()}": (PY_DIR / f"{n}.py").read_text() for n in livefacts.HELPERS}}
    argv = [spec.to_b64(), "master", "1.0", "none", "not-installed", contract.REVISION_LABEL,
            f"^{contract.COMMIT_PATTERN}$", f"^{contract.DIGEST_PATTERN}$", *contract.MANIFEST_MEDIA_TYPES]  # fmt: skip
    proc = subprocess.run([PY38, "-c", (PY_DIR / "livefacts.py").read_text(), *argv], input="", env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    facts = doc["services"]["oa-event-flow"]
    assert facts["secrets"] == {"UNIDESK_X_TOKEN": {"present": True, "length": len(SECRET_VALUE)}}
    assert doc["auth"]["error"] == "config-missing" and f"unidesk/x:{A}" in doc["manifestErrors"]
    assert SECRET_VALUE not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the registry facts
# include/registry-facts.sh (registry-probe.sh: status, health; live-probe.sh on D601): the slow
# reads run at once and the JSON is built in variables (issue 14). The answer is what it was.

REGISTRY_KEYS = ["ok", "probe", "version", "host", "user", "expected", "systemd", "unit", "docker", "container",
                 "expectedImage", "listeners", "http", "storage", "files"]  # fmt: skip
CONTAINER_KEYS = ["queried", "exists", "id", "status", "running", "startedAt", "image", "imageId", "repoDigests",
                  "specLabel", "composeProject", "networkMode", "portBindings", "restartCount"]  # fmt: skip
EXPECTED_ID = "sha256:" + "e" * 64
OTHER_ID = "sha256:" + "f" * 64


def _probe_text_call(call: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``call`` (shell code) after the functions of registry-probe.sh's text, ``args`` as $1..."""
    text = script_text("registry-probe.sh").rstrip()
    assert text.endswith('main "$@"')
    proc = subprocess.run([BASH, "-c", text[: -len('main "$@"')] + "\n" + call, "bash", *args],
                          capture_output=True, text=True, check=True, env=env)  # fmt: skip
    return proc.stdout


@pytest.mark.parametrize(
    "value",
    ["plain", 'a "quoted" \\ back\\slash', "tab\tnewline\ncr\r", "bell\x07 esc\x1b del\x7f end", "ü €", ""],
)
def test_the_registry_facts_quote_strings_as_json_str(value: str) -> None:
    """rf_q (no subshell) escapes exactly as lib.sh's json_str: the same JSON text, the value back."""
    quoted, by_lib = _probe_text_call('rf_q v "$1"; printf "%s\\n" "$v"; json_str "$1"', value).split("\n")
    assert quoted == by_lib
    assert json.loads(quoted) == "".join(c for c in value if c in "\t\n\r" or not (ord(c) < 0x20))


def test_the_registry_facts_build_objects_and_lists() -> None:
    got = _probe_text_call(
        'rf_obj o raw true s:str "a\\"b" n:empty "" n:full x; rf_list l "" "c d" "e\\f"; rf_tf t a a; rf_ft f a a;'
        ' printf "%s\\n" "$o" "$l" "$t$f"'
    ).splitlines()
    assert json.loads(got[0]) == {"raw": True, "str": 'a"b', "empty": None, "full": "x"}
    assert list(json.loads(got[0])) == ["raw", "str", "empty", "full"]
    assert json.loads(got[1]) == ["", "c d", "e\\f"] and got[2] == "truefalse"


def _fake_docker(
    bindir: Path, calls: Path, *, container_image: str, version: str = "", down: bool = False
) -> None:
    """docker: version, the container (running ``container_image``), the expected image (EXPECTED_ID)
    and OTHER_ID, each with repo digests; ``down``: a daemon that does not answer."""
    _exe(bindir / "docker", f"""printf '%s\\n' "docker $*" >> {calls}
{'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1' if down else ''}
ref=${{*: -1}}
case "$1 $2" in
  "version --format") echo {version or "27.0.3"} ;;
  "inspect --type")
    [[ $ref == unidesk-artifact-registry ]] || {{ echo "Error: No such object: $ref" >&2; exit 1; }}
    echo "{"c" * 64}|running|true|2026-01-01T00:00:00Z|registry:2.8.3|{container_image}|{"5" * 64}|unidesk-artifact-registry|unidesk-artifact-registry_default|5000/tcp=127.0.0.1=5000 |2" ;;
  "image inspect")
    case $ref in
      registry:2.8.3 | {EXPECTED_ID}) echo "{EXPECTED_ID}|registry@sha256:{"a" * 64} mirror/registry@sha256:{"b" * 64} " ;;
      {OTHER_ID}) echo "{OTHER_ID}|old@sha256:{"c" * 64} " ;;
      *) echo "Error: No such image: $ref" >&2; exit 1 ;;
    esac ;;
  *) echo "unexpected docker $*" >&2; exit 9 ;;
esac
""")  # fmt: skip


def _registry_args(tmp_path: Path, port: int) -> tuple[contract.RegistryProbeArgs, dict[str, str]]:
    files = {"config": tmp_path / "config.yml", "unit": tmp_path / "unit.service"}  # compose: missing
    for name, path in files.items():
        path.write_text(f"{name}\n")
    sums = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    (tmp_path / "storage" / "docker" / "registry" / "v2").mkdir(parents=True)
    args = contract.RegistryProbeArgs(
        unit="unidesk-artifact-registry.service", unit_path=str(files["unit"]), unit_sha256=sums["unit"],
        project="unidesk-artifact-registry", container="unidesk-artifact-registry", image="registry:2.8.3",
        endpoint=f"127.0.0.1:{port}", storage=str(tmp_path / "storage"), config_path=str(files["config"]),
        config_sha256="0" * 64, compose_path=str(tmp_path / "compose.yml"), compose_sha256=sums["config"],
        spec_sha256="5" * 64,
    )  # fmt: skip
    return args, sums


def _run_registry_probe(args: contract.RegistryProbeArgs, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([BASH, "-c", command_line(args.to_argv())], input=script_text("registry-probe.sh"),
                          capture_output=True, text=True, env=env, timeout=60, check=False)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(lines) == 1, (proc.stdout, proc.stderr)
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


@pytest.mark.parametrize("same_image", [True, False], ids=["runs-the-expected-image", "runs-another-image"])
def test_the_registry_facts_with_fake_docker(
    tmp_path: Path, server: tuple[int, dict[Any, Any]], same_image: bool
) -> None:
    """registry-probe.sh as sent, fake docker: every fact as before; docker is asked the container,
    the expected image (with its repo digests) and its version, and once more only when the
    container runs another image; nothing is written."""
    port, routes = server
    routes[("GET", "/v2/")] = (200, {}, b"{}")
    work = tmp_path / "w"
    work.mkdir()
    args, sums = _registry_args(work, port)
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    _fake_docker(bindir, calls, container_image=EXPECTED_ID if same_image else OTHER_ID)
    before = sorted(p.name for p in work.rglob("*"))
    doc = _run_registry_probe(args, {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert list(doc) == REGISTRY_KEYS and list(doc["container"]) == CONTAINER_KEYS
    assert doc["host"] == socket.gethostname() and doc["user"] == pwd.getpwuid(os.geteuid()).pw_name
    assert doc["expected"] == {"unit": args.unit, "project": args.project, "container": args.container,
                               "image": args.image, "endpoint": args.endpoint, "specSha256": "5" * 64}  # fmt: skip
    assert doc["docker"] == {
        "installed": True,
        "reachable": True,
        "state": "reachable",
        "serverVersion": "27.0.3",
    }
    digests = (
        [f"registry@sha256:{'a' * 64}", f"mirror/registry@sha256:{'b' * 64}"]
        if same_image
        else [f"old@sha256:{'c' * 64}"]
    )
    assert doc["container"] == {
        "queried": True, "exists": True, "id": "c" * 64, "status": "running", "running": True,
        "startedAt": "2026-01-01T00:00:00Z", "image": "registry:2.8.3",
        "imageId": EXPECTED_ID if same_image else OTHER_ID, "repoDigests": digests, "specLabel": "5" * 64,
        "composeProject": "unidesk-artifact-registry", "networkMode": "unidesk-artifact-registry_default",
        "portBindings": [{"containerPort": "5000/tcp", "hostIp": "127.0.0.1", "hostPort": "5000"}], "restartCount": 2,
    }  # fmt: skip
    assert doc["expectedImage"] == {"ref": "registry:2.8.3", "present": True, "localImageId": EXPECTED_ID}
    assert doc["http"] == {"url": f"http://127.0.0.1:{port}/v2/", "client": "curl", "code": 200}
    assert doc["storage"] == {"path": args.storage, "exists": True, "isDir": True, "hasData": True}
    assert doc["files"] == {
        "config": {"path": args.config_path, "exists": True, "readable": True, "sha256": sums["config"],
                   "expectedSha256": "0" * 64, "matches": False},
        "compose": {"path": args.compose_path, "exists": False, "readable": False, "sha256": None,
                    "expectedSha256": sums["config"], "matches": False},
        "unit": {"path": args.unit_path, "exists": True, "readable": True, "sha256": sums["unit"],
                 "expectedSha256": sums["unit"], "matches": True},
    }  # fmt: skip
    assert doc["listeners"]["port"] == port and "127.0.0.1" in doc["listeners"]["addresses"]
    tools = calls.read_text().splitlines()
    assert sorted(c.split(" --format")[0] for c in tools) == sorted(
        ["docker version", "docker inspect --type container", "docker image inspect"]
        + ([] if same_image else ["docker image inspect"])
    )
    assert sorted(p.name for p in work.rglob("*")) == before, "the probe wrote nothing"


@pytest.mark.parametrize("answer", ["down", "no-container"])
def test_the_registry_facts_when_docker_does_not_answer_or_has_no_container(
    tmp_path: Path, answer: str
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    args, _ = _registry_args(work, 9)
    if answer == "no-container":
        args = args.model_copy(update={"container": "gone"})
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    _fake_docker(bindir, calls, container_image=EXPECTED_ID, down=answer == "down")
    doc = _run_registry_probe(args, {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert list(doc) == REGISTRY_KEYS
    if answer == "down":
        assert doc["docker"] == {
            "installed": True,
            "reachable": False,
            "state": "daemon-unreachable",
            "serverVersion": None,
        }
        assert doc["container"] == {"queried": False, "exists": None}
        assert doc["expectedImage"] == {"ref": "registry:2.8.3", "present": None, "localImageId": None}
    else:
        assert doc["docker"]["reachable"] is True and doc["container"] == {"queried": True, "exists": False}
        assert doc["expectedImage"] == {"ref": "registry:2.8.3", "present": True, "localImageId": EXPECTED_ID}
    assert doc["http"] == {"url": "http://127.0.0.1:9/v2/", "client": "curl", "code": 0}
