"""CI publish on the real rig, then CD of that very commit (R25, R26, R11, R14).

`python -m artifact_cd publish` runs as CI does on D601: inside D601's network namespace (so
127.0.0.1:5000 is D601's registry) with D601's dockerd (``DOCKER_HOST``). The source is a temporary
git repository with a bare "remote"; its Dockerfile builds FROM scratch with busybox-static (no hub
pulls). Then the commit is planned and deployed with the Compose consumer steps exactly as the plan
gives them, and the digest the deploy verified must be the one the publish summary printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from artifact_cd import catalog
from artifact_cd.catalog import ComposeTarget, Env, ServiceEntry
from artifact_cd.config import parse_stack_config
from artifact_cd.gates import Decision
from artifact_cd.plan import plan_service
from lab import sample
from tests.git_source import SUMMARY_KEYS, Checkout, git
from tests.integration.compose_project import write_dispatch
from tests.pty_support import run_on_terminal
from tests.rig import Host, Rig
from tests.rig.images import fetch_manifest
from tests.rig.rig import operator_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV: Env = "prod"
SERVICE = "oa-event-flow"  # master-server Compose consumer: D601 registry -> SSH -> master
PROJECT_DIR = "/srv/unidesk-publish-test"  # a Compose project of its own on the master
PROJECT_NAME = "unidesk-publish-test"


def _entry() -> ServiceEntry:
    entry = catalog.get(SERVICE)
    assert entry is not None
    return entry


def _target() -> ComposeTarget:
    target = ENTRY.target(ENV)
    assert isinstance(target, ComposeTarget)
    return target


ENTRY = _entry()
TARGET = _target()
# The service as its own repository would ship it (lab/sample.py, the demo's sample service): the
# commit comes in as a build argument that `publish` passes (UNIDESK_SOURCE_COMMIT) and the health
# payload reports it next to the requested commit the consumer wrote into the env file.
DOCKERFILE = sample.DOCKERFILE


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    """A checkout of the service's repository with the Dockerfile at the catalog path (the demo's
    sample service, with wget)."""
    checkout = sample.create(tmp_path_factory.mktemp("publish-src"), SERVICE, extra_applets=("wget",))
    path = checkout.path
    (path / ".gitignore").write_text("node_modules/\n", encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "service source")
    return checkout


@dataclass(frozen=True)
class Run:
    code: int
    doc: dict[str, Any]
    stderr: str


def publish(
    rig: Rig, repo: Path, *extra: str, docker_log: Path | None = None, project: Path | None = None
) -> Run:
    """`python -m artifact_cd publish` as CI runs it on D601 (its netns, its dockerd)."""
    env = {
        **os.environ,
        "DOCKER_HOST": rig.d601.docker_host,
        "DOCKER_BUILDKIT": "0",
        "DOCKER_CLI_HINTS": "false",
    }
    if docker_log is not None:
        # a recording `docker` first on PATH: proves what publish asked Docker to do
        shim_dir = docker_log.parent / "shim"
        shim_dir.mkdir(exist_ok=True)
        real = shutil.which("docker")
        assert real is not None
        shim = shim_dir / "docker"
        shim.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{docker_log}"\nexec "{real}" "$@"\n', encoding="utf-8"
        )
        shim.chmod(0o755)
        env["PATH"] = f"{shim_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    argv = [*rig.d601.netns_argv(), sys.executable, "-m", "artifact_cd"]
    argv += ["--project-dir", str(project)] if project is not None else []
    argv += ["publish", "--service", SERVICE]
    argv += ["--repo", str(repo), "--registry", rig.registry, *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"publish printed no JSON (exit {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        )
    return Run(proc.returncode, doc, proc.stderr)


def registry_digest(rig: Rig, commit: str) -> str:
    manifest = fetch_manifest(rig.d601, rig.registry, ENTRY.repository, commit)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


@pytest.fixture(scope="module")
def published(
    rig: Rig, source: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Unpushed and dirty are refused before Docker is touched; the pushed clean commit publishes."""
    log = tmp_path_factory.mktemp("docker-log") / "refused.log"
    refused = publish(rig, source.path, docker_log=log)
    assert refused.code == 3 and refused.doc["error"] == "commit-not-pushed", refused.doc
    assert not log.exists()  # refused before any docker command

    source.push()
    (source.path / "notes.txt").write_text("not committed\n", encoding="utf-8")
    dirty = publish(rig, source.path, docker_log=log)
    assert dirty.code == 3 and dirty.doc["error"] == "dirty-worktree", dirty.doc
    assert dirty.doc["dirtyPaths"] == ["?? notes.txt"] and dirty.doc["headPushed"] is True
    assert not log.exists()
    (source.path / "notes.txt").unlink()

    first = publish(rig, source.path)
    assert first.code == 0, (first.doc, first.stderr[-3000:])
    yield first.doc


def test_publish_summary_matches_the_registry(rig: Rig, source: Checkout, published: dict[str, Any]) -> None:
    """R26: the summary contract; the digest is the live registry manifest's digest."""
    commit = git(source.path, "rev-parse", "HEAD")
    doc = published
    for key in SUMMARY_KEYS:
        assert key in doc, key
    ref = f"{rig.registry}/{ENTRY.repository}:{commit}"
    assert doc["serviceId"] == SERVICE and doc["sourceCommit"] == commit and doc["tag"] == commit
    assert doc["sourceRepo"] == ENTRY.source_repo and doc["dockerfile"] == ENTRY.dockerfile
    assert doc["imageRef"] == ref
    assert doc["digest"] == registry_digest(rig, commit)
    assert doc["digestRef"] == f"{rig.registry}/{ENTRY.repository}@{doc['digest']}"
    manifest = json.loads(fetch_manifest(rig.d601, rig.registry, ENTRY.repository, commit))
    assert manifest["config"]["digest"] == doc["imageId"]
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", doc["imageId"]],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": rig.d601.docker_host},
        check=True,
    )
    labels = json.loads(inspect.stdout)
    assert labels[catalog.REVISION_LABEL] == commit
    assert labels[catalog.SOURCE_LABEL] == ENTRY.source_repo
    assert labels[catalog.SERVICE_LABEL] == SERVICE


def test_republish_is_idempotent_and_a_different_image_is_refused(
    rig: Rig, source: Checkout, published: dict[str, Any], tmp_path: Path
) -> None:
    """Same commit, same image: same summary, nothing pushed. Same commit, another image
    (a fresh build without cache): refused, the registry keeps the first artifact."""
    commit = published["sourceCommit"]
    log = tmp_path / "docker.log"
    again = publish(rig, source.path, docker_log=log)
    assert again.code == 0, again.doc
    assert again.doc == published
    verbs = [line.split()[0] for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert "build" in verbs and "push" not in verbs, verbs

    # a CI host without the build cache: the rebuild gets new timestamps, hence a new image ID
    docker_env = {**os.environ, "DOCKER_HOST": rig.d601.docker_host}
    subprocess.run(
        ["docker", "rmi", "-f", published["imageRef"]], env=docker_env, capture_output=True, check=True
    )
    log.unlink()
    other = publish(rig, source.path, docker_log=log)
    assert other.code == 3, other.doc
    assert other.doc["error"] == "tag-immutable" and other.doc["decision"] == "refused"
    assert other.doc["existingDigest"] == published["digest"]
    assert other.doc["existingImageId"] == published["imageId"] != other.doc["builtImageId"]
    verbs = [line.split()[0] for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert "push" not in verbs
    assert registry_digest(rig, commit) == published["digest"]


COMPOSE_FILE = f"""\
version: "2.4"
services:
  {TARGET.compose_service}:
    image: {TARGET.retag_name}
    container_name: {TARGET.container_name}
    init: true
    restart: "no"
    env_file: [.env.deploy]
"""


@pytest.fixture
def compose_project(rig: Rig) -> Iterator[str]:
    """The master's Compose project for the service; brought down afterwards (container names are
    global on the master's dockerd)."""
    rig.master.remove_containers(TARGET.container_name)  # other modules deploy the same service
    operator_dir(rig.master, PROJECT_DIR)  # the operator's project, as on the real master
    rig.master.write_file(f"{PROJECT_DIR}/docker-compose.yml", COMPOSE_FILE, owner=rig.master.user)
    rig.master.write_file(f"{PROJECT_DIR}/.env.deploy", "", mode="0600", owner=rig.master.user)
    yield PROJECT_DIR
    rig.master.sh(
        'cd -- "$1" && docker-compose -p "$2" down --remove-orphans', PROJECT_DIR, PROJECT_NAME, check=False
    )
    rig.master.remove_containers(TARGET.container_name)


def test_the_published_commit_deploys_with_the_verified_digest(
    rig: Rig, published: dict[str, Any], compose_project: str
) -> None:
    """CI -> CD: plan the published commit, run the Compose consumer steps for real; the digest the
    deploy verified equals the publish summary's digest (R11, R14, R26)."""
    commit = published["sourceCommit"]
    raw = rig.stack_config(ENV, {SERVICE: commit})
    raw["compose"]["master"] = {
        "projectDir": compose_project,
        "projectName": PROJECT_NAME,
        "envFile": f"{compose_project}/.env.deploy",
    }
    cfg = parse_stack_config(raw, ENV)
    plan = plan_service(cfg, SERVICE)
    assert plan.decision == Decision.PLANNED, plan.reason
    assert [s.id for s in plan.steps] == ["manifest-check", "transfer", "deploy"]
    assert plan.build["willRunDockerBuild"] is False  # CD never builds (R25)

    results = deploy(rig, commit, compose_project)
    assert results["transfer"]["digest"] == published["digest"]
    verdict = results["deploy"]
    assert verdict["ok"] is True
    assert verdict["registryDigest"] == published["digest"]
    assert verdict["imageId"] == published["imageId"] == verdict["containerImageId"]
    assert verdict["revisionLabel"] == commit
    assert verdict["health"]["deployCommit"] == commit == verdict["health"]["requestedCommit"]


def deploy(rig: Rig, commit: str, project_dir: str) -> dict[str, dict[str, Any]]:
    """The Compose consumer steps of ``commit`` as the plan gives them, run for real; each result."""
    raw = rig.stack_config(ENV, {SERVICE: commit})
    raw["compose"]["master"] = {
        "projectDir": project_dir,
        "projectName": PROJECT_NAME,
        "envFile": f"{project_dir}/.env.deploy",
    }
    plan = plan_service(parse_stack_config(raw, ENV), SERVICE)
    assert plan.decision == Decision.PLANNED, plan.reason
    check = rig.d601.run_step(plan.steps[0])
    assert check.returncode == 0 and check.json is not None, (check.stdout, check.stderr)
    results = {"manifest-check": check.json}
    for step in plan.steps[1:]:
        host: Host = getattr(rig, step.host)
        result = host.run_step(step, digest=check.json["digest"], image_id=check.json["imageId"])
        assert result.returncode == 0 and result.json is not None, (
            step.id,
            result.stdout[-2000:],
            result.stderr[-3000:],
        )
        results[step.id] = result.json
    return results


# --------------------------------------------------------------------------- publish --repair (issue 12)

STORAGE = Rig.registry_config().storage_path  # the rig stack config's registry storage on D601
EXTRA_DOCKERFILE = DOCKERFILE.replace("COPY rootfs/ /\n", "COPY rootfs/ /\nCOPY extra/ /extra/\n")


def blob_data(digest: str) -> str:
    hexpart = digest.split(":", 1)[1]
    return f"{STORAGE}/docker/registry/v2/blobs/sha256/{hexpart[:2]}/{hexpart}/data"


def blob_sha256(rig: Rig, digest: str) -> str:
    return "sha256:" + rig.d601.sh('sha256sum -- "$1"', blob_data(digest)).stdout.split()[0]


@dataclass(frozen=True)
class Operator:
    """The operator's CLI against the rig (a Pulumi.prod.yaml of the rig's stack config, real SSH
    through the rig's dispatch ProxyCommand and known_hosts)."""

    rig: Rig
    project: Path
    ssh: tuple[str, ...]

    def health(self) -> dict[str, Any]:
        argv = [
            sys.executable,
            "-m",
            "artifact_cd",
            "--project-dir",
            str(self.project),
            "health",
            "--stack",
            ENV,
        ]
        argv += ["--integrity", "--json", *self.ssh]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        assert proc.stdout.strip(), proc.stderr
        doc: dict[str, Any] = json.loads(proc.stdout)
        assert proc.returncode == (0 if doc["ok"] else 1), proc.stderr
        return doc

    def repair(self, repo: Path, *, stack: bool = True, docker_log: Path | None = None) -> Run:
        extra = ["--repair"]
        if stack:
            extra += ["--stack", ENV, *self.ssh]
        return publish(self.rig, repo, *extra, docker_log=docker_log, project=self.project)


@pytest.fixture(scope="module")
def operator(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Operator:
    workdir = tmp_path_factory.mktemp("operator")
    project = workdir / "project"
    project.mkdir()
    raw = rig.stack_config(ENV)
    doc = {"config": {f"unidesk-artifact-cd:{k}": v for k, v in raw.items()}}
    (project / f"Pulumi.{ENV}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    dispatch = write_dispatch(rig, workdir / "dispatch")
    ssh = ["--ssh-key", str(rig.machine_key_file), "--timeout", "90"]
    for option in (
        f"ProxyCommand={dispatch} %h %p",
        f"UserKnownHostsFile={rig.dir / 'known_hosts'}",
        "StrictHostKeyChecking=yes",
    ):
        ssh += ["--ssh-option", option]
    return Operator(rig, project, tuple(ssh))


@pytest.fixture
def fresh(rig: Rig, source: Checkout, published: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A new pushed commit with a layer of its own (``COPY extra/``, last in the manifest), published;
    ``layer`` is that layer's digest. The blob's data file is put back if a test left it damaged."""
    (source.path / ENTRY.dockerfile).write_text(EXTRA_DOCKERFILE, encoding="utf-8")
    git(source.path, "add", ENTRY.dockerfile)
    source.commit("extra/stamp", secrets.token_hex(16) + "\n", "a layer of its own")
    source.push()
    run = publish(rig, source.path)
    assert run.code == 0, (run.doc, run.stderr[-2000:])
    manifest = json.loads(fetch_manifest(rig.d601, rig.registry, ENTRY.repository, run.doc["sourceCommit"]))
    assert len(manifest["layers"]) == 2, manifest
    layer = str(manifest["layers"][-1]["digest"])
    data = blob_data(layer)
    rig.d601.sh('cp -p -- "$1" "$1.rig-orig"', data)
    try:
        yield {**run.doc, "layer": layer, "firstLayer": manifest["layers"][0]["digest"]}
    finally:
        rig.d601.sh('[ ! -e "$1.rig-orig" ] || mv -f -- "$1.rig-orig" "$1"', data)


def corrupt(rig: Rig, digest: str) -> None:
    rig.d601.sh(
        'size=$(stat -c %s -- "$1"); printf "corrupted-by-rig" | dd of="$1" bs=1 seek=$((size / 2)) conv=notrunc status=none',
        blob_data(digest),
    )


def assert_pushed_to_scratch_only(rig: Rig, commit: str, repair: dict[str, Any], digest: str) -> None:
    """The repair's push went to unidesk-repair/<repo>:<commit> (same manifest digest there); the
    CI host keeps no scratch name."""
    scratch_repo = f"unidesk-repair/{ENTRY.repository}"
    assert repair["scratchRef"] == f"{rig.registry}/{scratch_repo}:{commit}", repair
    scratch = fetch_manifest(rig.d601, rig.registry, scratch_repo, commit)
    assert "sha256:" + hashlib.sha256(scratch).hexdigest() == digest
    names = rig.d601.sh("docker image ls --format '{{.Repository}}'").stdout.split()
    assert f"{rig.registry}/{scratch_repo}" not in names, names


def push_verbs(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_a_corrupt_layer_is_reported_by_health_and_repaired_with_the_same_digest(
    rig: Rig, source: Checkout, fresh: dict[str, Any], operator: Operator, compose_project: str
) -> None:
    """Issue 12: corrupt one layer -> health --integrity fails storage-integrity with
    registry-blob-corrupt naming the blob and the commit -> publish --repair drops exactly that blob
    on D601 and pushes the rebuild to the scratch repository unidesk-repair/<repo> (never to the
    commit tag): the blob data that push uploads is the registry's shared, content-addressed copy,
    so the commit's own blob is correct again; the manifest digest is unchanged, only that layer
    travelled, health passes the scope, and a deploy of the commit succeeds.

    The drop is never elevated (README "Registry integrity"): the registry (root, in its container)
    owns the blob directories, so as the operator ``ubuntu`` (docker group) the file is removed by
    the registry's own container, after the script checked that it runs and mounts exactly that
    storage (``droppedBy``: ``registry-container``)."""
    commit, layer = fresh["sourceCommit"], fresh["layer"]
    corrupt(rig, layer)
    corrupted = blob_sha256(rig, layer)
    assert corrupted != layer

    sick = operator.health()
    assert "storage-integrity" in sick["failedScopes"], sick["failedScopes"]
    check = sick["checks"]["blobIntegrity"]
    assert check["ok"] is False and check["error"] == "registry-blob-corrupt", check
    corrupt_blobs = sick["storageIntegrity"]["corrupt"]
    assert [c["digest"] for c in corrupt_blobs] == [layer], corrupt_blobs
    assert {"repository": ENTRY.repository, "tag": commit, "as": "blob"} in corrupt_blobs[0]["usedBy"]
    assert sick["storageIntegrity"]["checkedBlobs"] >= 1 and sick["storageIntegrity"]["totalBlobs"] >= 1
    assert any("publish --repair" in a for a in sick["actions"])

    run = operator.repair(source.path)
    assert run.code == 0, (run.doc, run.stderr[-3000:])
    repair = run.doc["repair"]
    assert repair["corrupt"] == [layer] and repair["missing"] == [] and repair["dropped"] == [layer]
    assert repair["droppedBy"] == {layer: "registry-container"}, repair
    assert repair["uploaded"] == [layer]
    assert repair["layersPushed"] == 1, repair  # the good layer did not travel (mounted or present)
    assert repair["layersMounted"] + repair["layersAlreadyPresent"] == 1, repair
    assert run.doc["digest"] == fresh["digest"] == registry_digest(rig, commit) == repair["manifestDigest"]
    assert blob_sha256(rig, layer) == layer, "the push to the other repository re-created the blob data"
    assert_pushed_to_scratch_only(rig, commit, repair, fresh["digest"])

    well = operator.health()
    assert "storage-integrity" in well["healthyScopes"] and well["checks"]["blobIntegrity"]["ok"] is True
    verdict = deploy(rig, commit, compose_project)["deploy"]
    assert verdict["ok"] is True and verdict["registryDigest"] == fresh["digest"]
    assert verdict["health"]["deployCommit"] == commit


def test_a_missing_layer_is_repaired_without_ssh(
    rig: Rig, source: Checkout, fresh: dict[str, Any], operator: Operator, compose_project: str
) -> None:
    """Issue 12: a layer gone from storage: publish refuses (registry-blob-missing, the fix names
    --repair); publish --repair (no --stack: nothing to drop) uploads it again; same digest; deploy."""
    commit, layer = fresh["sourceCommit"], fresh["layer"]
    rig.d601.sh('rm -f -- "$1"', blob_data(layer))
    refused = publish(rig, source.path)
    assert refused.code == 3 and refused.doc["error"] == "registry-blob-missing", refused.doc
    assert refused.doc["digest"] == layer and "--repair" in refused.doc["fix"]

    run = operator.repair(source.path, stack=False)
    assert run.code == 0, (run.doc, run.stderr[-3000:])
    repair = run.doc["repair"]
    assert repair["missing"] == [layer] and repair["corrupt"] == [] and repair["dropped"] == []
    assert repair["layersPushed"] == 1, repair
    assert repair["layersMounted"] + repair["layersAlreadyPresent"] == 1, repair
    assert run.doc["digest"] == fresh["digest"] == registry_digest(rig, commit)
    assert blob_sha256(rig, layer) == layer, "the push to the other repository re-created the blob data"
    assert_pushed_to_scratch_only(rig, commit, repair, fresh["digest"])
    verdict = deploy(rig, commit, compose_project)["deploy"]
    assert verdict["ok"] is True and verdict["registryDigest"] == fresh["digest"]


def test_a_repair_with_different_content_is_refused_and_drops_nothing(
    rig: Rig, source: Checkout, fresh: dict[str, Any], operator: Operator, tmp_path: Path
) -> None:
    """Issue 12: without the build cache the rebuild has another image ID: publish --repair refuses
    (tag-immutable) before anything is dropped or pushed; the corrupt blob and the tag stay as they
    were (so an operator can still repair from the CI host that built it)."""
    commit, layer = fresh["sourceCommit"], fresh["layer"]
    corrupt(rig, layer)
    damaged = blob_sha256(rig, layer)
    docker_env = {**os.environ, "DOCKER_HOST": rig.d601.docker_host}
    subprocess.run(
        ["docker", "rmi", "-f", fresh["imageRef"]], env=docker_env, capture_output=True, check=True
    )
    log = tmp_path / "docker.log"
    run = operator.repair(source.path, docker_log=log)
    assert run.code == 3, run.doc
    assert run.doc["error"] == "tag-immutable" and run.doc["existingImageId"] == fresh["imageId"], run.doc
    assert run.doc["actionsTaken"] == [
        f"built {run.doc['builtImageId']} and tagged it {fresh['imageRef']} on the CI Docker host"
    ]
    assert "push" not in push_verbs(log)
    assert blob_sha256(rig, layer) == damaged, "nothing was dropped"
    assert registry_digest(rig, commit) == fresh["digest"]


def on_terminal(rig: Rig, repo: Path) -> tuple[int, str]:
    """`publish` as a person runs it on D601: stdout and stderr on a pseudo-terminal."""
    env = {**os.environ, "DOCKER_HOST": rig.d601.docker_host, "DOCKER_BUILDKIT": "0", "COLUMNS": "120"}
    argv = [*rig.d601.netns_argv(), sys.executable, "-m", "artifact_cd", "publish", "--service", SERVICE]
    argv += ["--repo", str(repo), "--registry", rig.registry]
    code, screen, _ = run_on_terminal(argv, cwd=ROOT, env=env, stderr_too=True, timeout=600)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))


def test_publish_on_a_terminal_shows_the_push_bytes_and_layers_then_a_summary(
    rig: Rig, source: Checkout, published: dict[str, Any]
) -> None:
    """Issue 13 item 5: on a terminal the phases are drawn (build steps; the push's bytes and layers
    from the Engine API's progress) and a summary ends it; piped, the same commit's summary is the
    JSON document (the other tests here read it)."""
    (source.path / ENTRY.dockerfile).write_text(EXTRA_DOCKERFILE, encoding="utf-8")
    git(source.path, "add", ENTRY.dockerfile)
    commit = source.commit("extra/stamp", secrets.token_hex(16) + "\n", "a layer of its own")
    source.push()
    code, screen = on_terminal(rig, source.path)
    assert code == 0, screen[-3000:]
    assert "Traceback" not in screen
    for phase in ("source", "build", "manifest check", "push", "verify"):
        assert phase in screen, (phase, screen[-3000:])
    assert re.search(r"step \d+/\d+", screen), screen[-3000:]
    assert re.search(r"[0-9.]+ [kM]?B/[0-9.]+ [kM]?B · layers 2/2", screen), screen[-3000:]
    digest = registry_digest(rig, commit)
    assert f"published {rig.registry}/{ENTRY.repository}:{commit}" in screen and digest in screen
    piped = publish(rig, source.path)
    assert piped.code == 0 and piped.doc["digest"] == digest and piped.doc["sourceCommit"] == commit
