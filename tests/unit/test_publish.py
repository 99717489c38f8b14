"""`publish` without daemons (R25, R26): the git source rules on real temporary repositories with a
bare "remote", the exact-tree export, the publish decisions (push / idempotent / immutable tag)
with a recording Docker and registry, the manifest-check result mapping, argument validation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import ci, publish, scripts
from artifact_cd.cli import main
from artifact_cd.publish import Manifest, Publisher, PublishFailure
from tests.git_source import SUMMARY_KEYS, Checkout, git
from tests.pty_support import run_on_terminal

SERVICE = "findjob"
DOCKERFILE = "src/components/microservices/findjob/Dockerfile"
REGISTRY = "127.0.0.1:5000"
ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64


@pytest.fixture
def repo(tmp_path: Path) -> Checkout:
    """A checkout with a Dockerfile at the catalog path, pushed to a bare remote."""
    r = Checkout.init(tmp_path)
    r.commit(".gitignore", "build-output/\n")
    r.commit(DOCKERFILE, "FROM scratch\nCOPY app.txt /app.txt\n")
    r.commit("app.txt", "v1\n", "app")
    r.push()
    git(r.path, "fetch", "-q", "origin")
    return r


# --------------------------------------------------------------------------- git source rules


def test_clean_pushed_checkout_is_accepted(repo: Checkout) -> None:
    source = publish.inspect_source(repo.path)
    assert source.commit == git(repo.path, "rev-parse", "HEAD")
    assert source.remote_branches == ("origin/main",)
    assert source.root == repo.path.resolve()


def test_a_subdirectory_resolves_to_the_repository_root(repo: Checkout) -> None:
    assert publish.inspect_source(repo.path / "src").root == repo.path.resolve()


def test_unpushed_commit_is_refused(repo: Checkout) -> None:
    """R25: the commit must come from pushed Git."""
    sha = repo.commit("app.txt", "v2\n")
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(repo.path)
    f = caught.value
    assert (f.exit_code, f.error) == (3, "commit-not-pushed")
    assert f.details["sourceCommit"] == sha and sha in f.reason
    repo.push()  # pushing updates origin/main: now accepted
    assert publish.inspect_source(repo.path).commit == sha


def test_commit_on_another_pushed_branch_is_accepted(repo: Checkout) -> None:
    git(repo.path, "checkout", "-q", "-b", "feature")
    sha = repo.commit("app.txt", "feature\n")
    git(repo.path, "push", "-q", "origin", "feature")
    git(repo.path, "checkout", "-q", "--detach", sha)
    assert publish.inspect_source(repo.path).remote_branches == ("origin/feature",)


@pytest.mark.parametrize("kind", ["modified", "staged", "untracked", "deleted"])
def test_dirty_worktree_is_refused(repo: Checkout, kind: str) -> None:
    """R25: never a dirty worktree: tracked changes, staged changes or untracked files."""
    if kind == "modified":
        (repo.path / "app.txt").write_text("local edit\n", encoding="utf-8")
    elif kind == "staged":
        (repo.path / "app.txt").write_text("staged edit\n", encoding="utf-8")
        git(repo.path, "add", "app.txt")
    elif kind == "untracked":
        (repo.path / "src" / "new.txt").write_text("x\n", encoding="utf-8")
    else:
        (repo.path / "app.txt").unlink()
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(repo.path)
    f = caught.value
    assert (f.exit_code, f.error) == (3, "dirty-worktree")
    assert f.details["dirtyCount"] == 1 and f.details["headPushed"] is True
    expected = "src/new.txt" if kind == "untracked" else "app.txt"
    assert f.details["dirtyPaths"][0].endswith(expected)


def test_dirty_and_unpushed_reports_both_facts(repo: Checkout) -> None:
    repo.commit("app.txt", "v3\n")
    (repo.path / "stray").write_text("x", encoding="utf-8")
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(repo.path)
    assert caught.value.error == "dirty-worktree" and caught.value.details["headPushed"] is False


def test_ignored_files_are_neither_dirt_nor_build_input(repo: Checkout, tmp_path: Path) -> None:
    (repo.path / "build-output").mkdir()
    (repo.path / "build-output" / "stale.bin").write_text("old build", encoding="utf-8")
    source = publish.inspect_source(repo.path)
    dest = tmp_path / "export" / "src"
    publish.export_tree(source.root, source.commit, dest)
    assert (dest / DOCKERFILE).read_text(encoding="utf-8").startswith("FROM scratch")
    assert (dest / "app.txt").read_text(encoding="utf-8") == "v1\n"
    assert not (dest / "build-output").exists()
    assert git(repo.path, "status", "--porcelain") == ""  # the checkout's index is untouched


def test_no_remote_and_empty_repository_are_refused(tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    subprocess.run(["git", "init", "-q", str(lonely)], check=True)
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(lonely)
    assert (caught.value.exit_code, caught.value.error) == (3, "no-commit")
    (lonely / "f").write_text("x", encoding="utf-8")
    git(lonely, "add", "f")
    git(lonely, "commit", "-q", "-m", "x")
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(lonely)
    assert caught.value.error == "commit-not-pushed"


def test_not_a_repository_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(tmp_path)
    assert (caught.value.exit_code, caught.value.error) == (2, "not-a-git-repo")
    with pytest.raises(PublishFailure) as caught:
        publish.inspect_source(tmp_path / "missing")
    assert caught.value.error == "not-a-git-repo"


def test_git_redirect_variables_cannot_point_at_another_repo(
    repo: Checkout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert publish.inspect_source(repo.path).remote_branches == ("origin/main",)


def test_submodules_are_refused(repo: Checkout, tmp_path: Path) -> None:
    head = git(repo.path, "rev-parse", "HEAD")
    (repo.path / "vendor" / "lib").mkdir(parents=True)  # an uninitialised submodule: an empty dir
    git(repo.path, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/lib")
    git(repo.path, "commit", "-q", "-m", "gitlink")
    repo.push()
    source = publish.inspect_source(repo.path)
    with pytest.raises(PublishFailure) as caught:
        publish.export_tree(source.root, source.commit, tmp_path / "x" / "src")
    assert caught.value.error == "submodules-unsupported"
    assert caught.value.details["submodules"] == ["vendor/lib"]


# --------------------------------------------------------------------------- publish decisions


@dataclass
class FakeDocker:
    image_id: str = ID_A
    push_digest: str | None = DIGEST_1
    wrong_label: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    contexts: list[dict[str, str]] = field(default_factory=list)

    def ping(self) -> None:
        self.calls.append(("ping", None))

    def build(
        self,
        dockerfile: Path,
        context: Path,
        ref: str,
        labels: Mapping[str, str],
        build_args: Mapping[str, str],
    ) -> str:
        # what a real build would see: record the context's files while the export exists
        files = {
            str(p.relative_to(context)): p.read_text(encoding="utf-8")
            for p in context.rglob("*")
            if p.is_file()
        }
        assert dockerfile.is_file()
        self.contexts.append(files)
        self.calls.append(
            ("build", (str(dockerfile.relative_to(context)), ref, dict(labels), dict(build_args)))
        )
        return self.image_id

    def labels(self, image: str) -> dict[str, str]:
        self.calls.append(("labels", image))
        build = next(c[1] for c in self.calls if c[0] == "build")
        labels: dict[str, str] = dict(build[2])
        if self.wrong_label:
            labels["org.opencontainers.image.revision"] = "0" * 40
        return labels

    def push(self, ref: str) -> str | None:
        self.calls.append(("push", ref))
        return self.push_digest

    def tag(self, source: str, target: str) -> None:
        self.calls.append(("tag", (source, target)))

    def untag(self, ref: str) -> None:
        self.calls.append(("untag", ref))

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class FakeRegistry:
    """Answers the manifest check from a dict; a push (via FakeDocker) is made visible by `after`."""

    tags: dict[str, Manifest] = field(default_factory=dict)
    after_push: Manifest | None = None
    checks: list[str] = field(default_factory=list)

    def check(self, registry: str, repository: str, tag: str) -> Manifest | None:
        ref = f"{registry}/{repository}:{tag}"
        self.checks.append(ref)
        if ref not in self.tags and self.after_push is not None and len(self.checks) > 1:
            self.tags[ref] = self.after_push
        return self.tags.get(ref)


def _publisher(docker: FakeDocker, registry: FakeRegistry) -> Publisher:
    return Publisher(ci.load_checked(), docker, registry)


def test_first_publish_builds_labels_pushes_and_reads_back(repo: Checkout) -> None:
    sha = git(repo.path, "rev-parse", "HEAD")
    docker = FakeDocker()
    registry = FakeRegistry(after_push=Manifest(DIGEST_1, ID_A))
    doc = _publisher(docker, registry).publish(SERVICE, repo.path, REGISTRY)
    ref = f"{REGISTRY}/unidesk/{SERVICE}:{sha}"
    assert docker.verbs() == ["ping", "build", "labels", "push"]
    assert docker.calls[1][1] == (
        DOCKERFILE,
        ref,
        {
            "org.opencontainers.image.revision": sha,
            "org.opencontainers.image.source": "https://github.com/pikasTech/unidesk",
            "io.unidesk.service": SERVICE,
        },
        {"UNIDESK_SOURCE_COMMIT": sha, "UNIDESK_SERVICE_ID": SERVICE},
    )
    assert set(docker.contexts[0]) == {".gitignore", DOCKERFILE, "app.txt"}
    assert registry.checks == [ref, ref]  # before the push and the read-back after it
    # R26: the summary contract
    for key in SUMMARY_KEYS:
        assert key in doc
    assert doc["serviceId"] == SERVICE and doc["sourceCommit"] == sha and doc["tag"] == sha
    assert doc["imageRef"] == ref and doc["dockerfile"] == DOCKERFILE
    assert doc["digest"] == DIGEST_1 and doc["digestRef"] == f"{REGISTRY}/unidesk/{SERVICE}@{DIGEST_1}"
    assert doc["imageId"] == ID_A and doc["ok"] is True


def test_republish_with_the_same_image_pushes_nothing_and_prints_the_same_summary(repo: Checkout) -> None:
    first_docker = FakeDocker()
    registry = FakeRegistry(after_push=Manifest(DIGEST_1, ID_A))
    first = _publisher(first_docker, registry).publish(SERVICE, repo.path, REGISTRY)
    again_docker = FakeDocker()
    again = _publisher(again_docker, registry).publish(SERVICE, repo.path, REGISTRY)
    assert "push" not in again_docker.verbs()
    assert again == first


def test_a_different_image_for_an_existing_commit_tag_is_refused(repo: Checkout) -> None:
    """Tags are immutable: the existing artifact stays, nothing is pushed."""
    sha = git(repo.path, "rev-parse", "HEAD")
    registry = FakeRegistry(tags={f"{REGISTRY}/unidesk/{SERVICE}:{sha}": Manifest(DIGEST_2, ID_B)})
    docker = FakeDocker(image_id=ID_A)
    with pytest.raises(PublishFailure) as caught:
        _publisher(docker, registry).publish(SERVICE, repo.path, REGISTRY)
    f = caught.value
    assert (f.exit_code, f.error) == (3, "tag-immutable")
    assert f.details["existingDigest"] == DIGEST_2 and f.details["builtImageId"] == ID_A
    assert f.details["sourceCommit"] == sha
    assert "push" not in docker.verbs()
    doc = f.as_json()
    assert doc["decision"] == "refused" and len(doc["actionsTaken"]) == 1
    assert doc["actionsTaken"][0].startswith(f"built {ID_A}") and "pushed" not in doc["actionsTaken"][0]


def test_read_back_mismatches_fail(repo: Checkout) -> None:
    raced = FakeRegistry(after_push=Manifest(DIGEST_2, ID_B))
    with pytest.raises(PublishFailure) as caught:
        _publisher(FakeDocker(), raced).publish(SERVICE, repo.path, REGISTRY)
    assert (caught.value.exit_code, caught.value.error) == (6, "tag-conflict")

    other_digest = FakeRegistry(after_push=Manifest(DIGEST_2, ID_A))
    with pytest.raises(PublishFailure) as caught:
        _publisher(FakeDocker(push_digest=DIGEST_1), other_digest).publish(SERVICE, repo.path, REGISTRY)
    assert caught.value.error == "digest-mismatch"

    vanished = FakeRegistry()
    with pytest.raises(PublishFailure) as caught:
        _publisher(FakeDocker(), vanished).publish(SERVICE, repo.path, REGISTRY)
    assert caught.value.error == "manifest-missing-after-push"


def test_wrong_labels_on_the_built_image_fail_before_any_push(repo: Checkout) -> None:
    docker = FakeDocker(wrong_label=True)
    with pytest.raises(PublishFailure) as caught:
        _publisher(docker, FakeRegistry()).publish(SERVICE, repo.path, REGISTRY)
    assert caught.value.error == "label-mismatch" and "push" not in docker.verbs()


def test_dockerfile_missing_at_the_commit_is_refused(repo: Checkout) -> None:
    git(repo.path, "rm", "-q", DOCKERFILE)
    git(repo.path, "commit", "-q", "-m", "drop dockerfile")
    repo.push()
    docker = FakeDocker()
    with pytest.raises(PublishFailure) as caught:
        _publisher(docker, FakeRegistry()).publish(SERVICE, repo.path, REGISTRY)
    assert (caught.value.exit_code, caught.value.error) == (3, "dockerfile-missing")
    assert "build" not in docker.verbs()


def test_git_refusal_happens_before_docker_is_touched(repo: Checkout) -> None:
    repo.commit("app.txt", "unpushed\n")
    docker = FakeDocker()
    with pytest.raises(PublishFailure) as caught:
        _publisher(docker, FakeRegistry()).publish(SERVICE, repo.path, REGISTRY)
    assert caught.value.error == "commit-not-pushed" and docker.calls == []


# --------------------------------------------------------------------------- run_publish / CLI


@pytest.mark.parametrize(
    "registry", ["0.0.0.0:5000", "registry.example.com:5000", "127.0.0.1", "127.0.0.1:99999"]
)
def test_non_loopback_registry_is_invalid(repo: Checkout, registry: str) -> None:
    code, doc = publish.run_publish(
        SERVICE, str(repo.path), registry, docker=FakeDocker(), manifests=FakeRegistry()
    )
    assert code == 2 and doc["error"] == "invalid-argument" and doc["decision"] == "invalid-arguments"


def test_unknown_and_upstream_services(repo: Checkout) -> None:
    code, doc = publish.run_publish("nope", str(repo.path), docker=FakeDocker(), manifests=FakeRegistry())
    assert code == 2 and doc["error"] == "unknown-service" and SERVICE in doc["knownServices"]
    code, doc = publish.run_publish("postgres", str(repo.path), docker=FakeDocker(), manifests=FakeRegistry())
    assert code == 3 and doc["error"] == "upstream-image" and doc["decision"] == "refused"


def test_inconsistent_ci_json_blocks_publish(repo: Checkout, tmp_path: Path) -> None:
    data = json.loads(ci.CI_PATH.read_text(encoding="utf-8"))
    data["artifacts"] = [a for a in data["artifacts"] if a["id"] != "pipeline"]
    path = tmp_path / "CI.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    docker = FakeDocker()
    code, doc = publish.run_publish(
        SERVICE, str(repo.path), ci_path=path, docker=docker, manifests=FakeRegistry()
    )
    assert code == 2 and doc["decision"] == "invalid-ci-catalog" and docker.calls == []


def test_missing_docker_is_infra_blocked(repo: Checkout) -> None:
    code, doc = publish.run_publish(
        SERVICE, str(repo.path), docker=publish.DockerCli("/nonexistent/docker"), manifests=FakeRegistry()
    )
    assert code == 5 and doc["decision"] == "infra-blocked" and doc["channel"] == "docker"
    assert doc["sourceCommit"] == git(repo.path, "rev-parse", "HEAD")


def test_cli_publish_refusal_is_json(repo: Checkout, capsys: pytest.CaptureFixture[str]) -> None:
    (repo.path / "stray.txt").write_text("x", encoding="utf-8")
    code = main(["publish", "--service", SERVICE, "--repo", str(repo.path)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3 and doc["error"] == "dirty-worktree" and doc["dirtyPaths"] == ["?? stray.txt"]


def test_cli_publish_requires_service_and_repo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["publish", "--service", SERVICE])
    doc = json.loads(capsys.readouterr().out)
    assert caught.value.code == 2 and doc["decision"] == "invalid-arguments" and "--repo" in doc["reason"]


# --------------------------------------------------------------------------- manifest check mapping


def _fake_bash(tmp_path: Path, rc: int, line: str) -> str:
    """A stand-in for bash that swallows the script on stdin and answers like manifest-check.sh."""
    path = tmp_path / "fake-bash"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\nprint({line!r})\nsys.exit({rc})\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def manifest_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real manifest-check.sh may not exist yet in this checkout: its text is irrelevant here."""
    monkeypatch.setattr(scripts, "script_text", lambda name: f"# {name}\n")


@pytest.mark.usefixtures("manifest_script")
def test_manifest_check_results_map_to_publish_outcomes(tmp_path: Path) -> None:
    ok = json.dumps({"ok": True, "digest": DIGEST_1, "imageId": ID_A, "repository": "r", "tag": "t"})
    checker = publish.ScriptManifestChecker(bash=_fake_bash(tmp_path, 0, ok))
    assert checker.check(REGISTRY, "unidesk/x", "a" * 40) == Manifest(DIGEST_1, ID_A)

    missing = json.dumps({"ok": False, "error": "manifest-missing", "detail": "404", "retryable": False})
    checker = publish.ScriptManifestChecker(bash=_fake_bash(tmp_path, 3, missing))
    assert checker.check(REGISTRY, "unidesk/x", "a" * 40) is None

    cases: list[tuple[int, dict[str, Any], int, str]] = [
        (
            4,
            {"ok": False, "error": "registry-unreachable", "detail": "refused", "retryable": True},
            4,
            "registry-unreachable",
        ),
        (
            5,
            {"ok": False, "error": "infra-blocked", "detail": "no curl", "channel": "curl"},
            5,
            "infra-blocked",
        ),
        (1, {"ok": False, "error": "registry-error", "detail": "500"}, 6, "registry-error"),
        (0, {"ok": True, "digest": "sha256:short", "imageId": ID_A}, 6, "registry-error"),
    ]
    for rc, answer, exit_code, error in cases:
        checker = publish.ScriptManifestChecker(bash=_fake_bash(tmp_path, rc, json.dumps(answer)))
        with pytest.raises(PublishFailure) as caught:
            checker.check(REGISTRY, "unidesk/x", "a" * 40)
        assert (caught.value.exit_code, caught.value.error) == (exit_code, error)
        if rc == 4:
            assert caught.value.retryable is True
        if rc == 5:
            assert caught.value.channel == "curl"


def test_manifest_check_sends_the_project_script_and_exact_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scripts, "script_text", lambda name: f"# the text of {name}\n")
    record = tmp_path / "record.json"
    fake = tmp_path / "fake-bash"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(record)!r}, 'w'))\n"
        "print(json.dumps({'ok': False, 'error': 'manifest-missing'}))\nsys.exit(3)\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    assert publish.ScriptManifestChecker(bash=str(fake)).check(REGISTRY, "unidesk/x", "c" * 40) is None
    seen = json.loads(record.read_text(encoding="utf-8"))
    assert seen["argv"] == [
        "-s",
        "--",
        "--registry",
        REGISTRY,
        "--repository",
        "unidesk/x",
        "--tag",
        "c" * 40,
    ]
    assert seen["stdin"] == "# the text of manifest-check.sh\n"


# --------------------------------------------------------------------------- publish --repair (issue 12)

LAYER_1 = "sha256:" + "3" * 64
LAYER_2 = "sha256:" + "4" * 64


@dataclass
class RepairWorld:
    """One registry image (config ID_A + two layers) whose blobs are ok / missing / corrupt, seen by
    the manifest check, the blob reader, the D601 dropper and a push (which, like docker, uploads
    only blobs the registry answers 404 for). Blob data is shared by every repository (as in
    distribution's storage): a push to the scratch repository heals the commit's blobs, and gives
    the scratch tag ``digest_after_push`` (the rebuild's manifest) or the commit's digest."""

    state: dict[str, str] = field(default_factory=lambda: {ID_A: "ok", LAYER_1: "ok", LAYER_2: "ok"})
    digest: str = DIGEST_1
    digest_after_push: str | None = None
    tagged: bool = True
    drops: list[str] = field(default_factory=list)
    pushes: int = 0
    scratch_digest: str | None = None  # what the scratch repository's commit tag names

    # ManifestChecker
    def check(self, registry: str, repository: str, tag: str) -> Manifest | None:
        if not self.tagged:
            return None
        for digest, st in self.state.items():
            if st == "missing":
                raise PublishFailure(3, "registry-blob-missing", "gone", digest=digest,
                                     manifestDigest=self.digest, imageId=ID_A)  # fmt: skip
        return Manifest(self.digest, ID_A)

    # RegistryBlobs
    def image(self, registry: str, repository: str, tag: str) -> tuple[str, list[publish.Blob]]:
        kinds = {ID_A: "config", LAYER_1: "layer", LAYER_2: "layer"}
        digest = self.digest
        if repository.startswith(publish.REPAIR_NAMESPACE + "/"):
            assert self.scratch_digest is not None, "the scratch repository was not pushed to"
            digest = self.scratch_digest
        return digest, [publish.Blob(d, kinds[d], 100) for d in self.state]

    def state_of(self, digest: str) -> str:
        return self.state[digest]

    # BlobDropper
    def drop(
        self, registry: str, repository: str, tag: str, digest: str, manifest_digest: str
    ) -> dict[str, Any]:
        self.drops.append(digest)
        if self.state[digest] != "corrupt" or manifest_digest != self.digest:
            raise PublishFailure(3, "blob-intact", "refused")
        self.state[digest] = "missing"
        return {"ok": True, "dropped": True}

    def on_push(self, ref: str) -> None:
        assert ref == f"{REGISTRY}/{publish.REPAIR_NAMESPACE}/unidesk/{SERVICE}:{ref.rsplit(':', 1)[1]}", (
            f"a repair pushes to the scratch repository only, not {ref}"
        )
        self.pushes += 1
        self.state = {d: ("ok" if st == "missing" else st) for d, st in self.state.items()}
        self.scratch_digest = self.digest_after_push or self.digest


class WorldBlobs:
    def __init__(self, world: RepairWorld) -> None:
        self.world = world

    def image(self, registry: str, repository: str, tag: str) -> tuple[str, list[publish.Blob]]:
        return self.world.image(registry, repository, tag)

    def state(self, registry: str, repository: str, blob: publish.Blob) -> str:
        return self.world.state_of(blob.digest)


@dataclass
class RepairDocker(FakeDocker):
    world: RepairWorld = field(default_factory=RepairWorld)

    def push(self, ref: str) -> str | None:
        self.world.on_push(ref)
        self.last_push_output = "0123456789ab: Pushed\nba9876543210: Mounted from unidesk/x\n"
        return super().push(ref)


def repair(
    world: RepairWorld, repo: Checkout, *, image_id: str = ID_A, dropper: bool = True
) -> tuple[dict[str, Any], RepairDocker]:
    docker = RepairDocker(image_id=image_id, world=world)
    publisher = Publisher(
        ci.load_checked(), docker, world, blobs=WorldBlobs(world), dropper=world if dropper else None
    )
    return publisher.publish(SERVICE, repo.path, REGISTRY, repair=True), docker


def refused(world: RepairWorld, repo: Checkout, **kw: Any) -> tuple[PublishFailure, RepairDocker]:
    docker = RepairDocker(image_id=kw.pop("image_id", ID_A), world=world)
    publisher = Publisher(
        ci.load_checked(),
        docker,
        world,
        blobs=WorldBlobs(world),
        dropper=world if kw.get("dropper", True) else None,
    )
    with pytest.raises(PublishFailure) as caught:
        publisher.publish(SERVICE, repo.path, REGISTRY, repair=True)
    return caught.value, docker


def test_repair_of_an_intact_commit_changes_nothing(repo: Checkout) -> None:
    world = RepairWorld()
    doc, docker = repair(world, repo)
    assert "push" not in docker.verbs() and world.drops == []
    assert doc["digest"] == DIGEST_1 and doc["repair"]["missing"] == doc["repair"]["corrupt"] == []
    assert doc["repair"]["checkedBlobs"] == 3


def test_repair_drops_the_corrupt_blob_pushes_and_keeps_the_digest(repo: Checkout) -> None:
    world = RepairWorld()
    world.state[LAYER_2] = "corrupt"
    doc, docker = repair(world, repo)
    assert world.drops == [LAYER_2] and docker.verbs().count("push") == 1
    assert doc["digest"] == DIGEST_1 and world.state == {ID_A: "ok", LAYER_1: "ok", LAYER_2: "ok"}
    r = doc["repair"]
    assert (r["corrupt"], r["dropped"], r["uploaded"], r["missing"]) == ([LAYER_2], [LAYER_2], [LAYER_2], [])
    assert (r["layersPushed"], r["layersMounted"], r["layersAlreadyPresent"]) == (1, 1, 0)
    scratch = f"{REGISTRY}/unidesk-repair/{doc['imageRef'].split('/', 1)[1]}"
    assert r["scratchRef"] == scratch
    pushes = [c for c in docker.calls if c[0] in ("tag", "push", "untag")]
    assert pushes == [("tag", (doc["imageRef"], scratch)), ("push", scratch), ("untag", scratch)], pushes


def test_repair_of_a_missing_blob_needs_no_drop_and_no_ssh(repo: Checkout) -> None:
    world = RepairWorld()
    world.state[LAYER_1] = "missing"
    doc, _ = repair(world, repo, dropper=False)
    assert (
        world.drops == [] and doc["repair"]["missing"] == [LAYER_1] and doc["repair"]["uploaded"] == [LAYER_1]
    )


def test_repair_with_another_image_id_is_refused_before_any_drop_or_push(repo: Checkout) -> None:
    world = RepairWorld()
    world.state[LAYER_2] = "corrupt"
    failure, docker = refused(world, repo, image_id=ID_B)
    assert (failure.exit_code, failure.error) == (3, "tag-immutable")
    assert failure.details["existingImageId"] == ID_A and failure.details["builtImageId"] == ID_B
    assert world.drops == [] and "push" not in docker.verbs() and world.state[LAYER_2] == "corrupt"


def test_repair_of_a_commit_not_in_the_registry_is_refused(repo: Checkout) -> None:
    world = RepairWorld(tagged=False)
    failure, docker = refused(world, repo)
    assert (failure.exit_code, failure.error) == (3, "repair-not-published") and "push" not in docker.verbs()


def test_a_corrupt_blob_without_a_stack_to_drop_it_is_refused_before_the_push(repo: Checkout) -> None:
    world = RepairWorld()
    world.state[LAYER_1] = "corrupt"
    failure, docker = refused(world, repo, dropper=False)
    assert (failure.exit_code, failure.error) == (2, "invalid-argument") and "--stack" in failure.reason
    assert "push" not in docker.verbs()


def test_a_rebuild_with_another_manifest_digest_is_refused_and_the_commit_tag_is_untouched(
    repo: Checkout,
) -> None:
    """Issue 12: the rebuild has the image ID but other layer digests (another compression): the
    scratch tag shows it; the commit tag was never pushed to and still names the original."""
    world = RepairWorld(digest_after_push=DIGEST_2)
    world.state[LAYER_1] = "missing"
    failure, docker = refused(world, repo)
    assert (failure.exit_code, failure.error) == (6, "repair-digest-changed")
    assert failure.details["expectedDigest"] == DIGEST_1 and failure.details["digest"] == DIGEST_2
    assert world.digest == DIGEST_1 and "was not pushed to" in failure.reason
    ref = failure.details["imageRef"]
    assert ("push", ref) not in docker.calls and failure.details["scratchRef"] != ref
    assert docker.verbs()[-1] == "untag", "the scratch name is removed from the CI host"


def test_a_blob_still_bad_after_the_push_is_repair_incomplete(repo: Checkout) -> None:
    """A corrupt blob the dropper left in place: docker skips it (HEAD 200), the repair says so."""

    class KeepingWorld(RepairWorld):
        def drop(
            self, registry: str, repository: str, tag: str, digest: str, manifest_digest: str
        ) -> dict[str, Any]:
            self.drops.append(digest)
            return {"ok": True, "dropped": False, "state": "absent"}

    world = KeepingWorld()
    world.state[LAYER_1] = "corrupt"
    failure, _ = refused(world, repo)
    assert (failure.exit_code, failure.error) == (6, "repair-incomplete") and LAYER_1 in failure.reason


def test_a_plain_publish_of_a_commit_with_a_missing_blob_points_at_repair(tmp_path: Path) -> None:
    """The manifest check's registry-blob-missing is a refusal (3) whose fix names --repair."""
    doc = {"ok": False, "error": "registry-blob-missing", "detail": "gone", "digest": LAYER_1,
           "manifestDigest": DIGEST_1, "imageId": ID_A}  # fmt: skip
    checker = publish.ScriptManifestChecker(bash=_fake_bash(tmp_path, 3, json.dumps(doc)))
    with pytest.raises(PublishFailure) as caught:
        checker.check(REGISTRY, "unidesk/x", "0" * 40)
    f = caught.value
    assert (f.exit_code, f.error) == (3, "registry-blob-missing") and "--repair" in str(f.fix)
    assert f.details["manifestDigest"] == DIGEST_1 and f.details["imageId"] == ID_A


@pytest.mark.parametrize(
    "extra",
    [["--stack", "prod"], ["--ssh-option", "Port=22"], ["--timeout", "5"]],
    ids=["stack-without-repair", "ssh-without-stack", "timeout-without-stack"],
)
def test_cli_publish_repair_options_are_checked(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["publish", "--service", SERVICE, "--repo", "/nonexistent", *extra])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2 and doc["ok"] is False, doc


# --------------------------------------------------------------------------- progress on a terminal (issue 13, item 5)

FAKE_DOCKER_CLI = """#!/bin/bash
# a docker CLI for the progress test: a classic-builder build log, a push log; labels kept in a file
case "$1" in
  version) echo 20.10.24 ;;
  build)
    labels="{"
    while (($#)); do
      case $1 in
        --iidfile) iid=$2; shift ;;
        --label) labels+="\\"${2%%=*}\\":\\"${2#*=}\\","; shift ;;
      esac
      shift
    done
    printf '%s' "${labels%,}}" > "$FAKE_DIR/labels.json"
    for i in 1 2 3; do echo "Step $i/3 : RUN step $i"; echo " ---> Running in 0123"; done
    echo "Successfully built 0123456789ab"
    printf '%s' "$FAKE_ID" > "$iid" ;;
  image) cat "$FAKE_DIR/labels.json" ;;
  push)
    echo "The push refers to repository [$2]"
    echo "0123456789ab: Preparing"; echo "ba9876543210: Preparing"
    echo "0123456789ab: Pushed"; echo "ba9876543210: Layer already exists"
    echo "${2##*:}: digest: $FAKE_DIGEST size: 527" ;;
  *) exit 1 ;;
esac
"""

# the child: the real CLI (publish, DockerCli with the fake docker CLI); only the manifest check is
# replaced by the in-memory registry (absent before the push, the pushed image after it)
CHILD = """
import sys
from artifact_cd import publish
from artifact_cd.cli import main
from tests.unit.test_publish import FakeRegistry, Manifest, DIGEST_1, ID_A
registry = FakeRegistry(after_push=Manifest(DIGEST_1, ID_A))
publish.ScriptManifestChecker = lambda: registry
sys.exit(main(sys.argv[1:]))
"""


def _publish_child(repo: Checkout, tmp_path: Path, *, terminal: bool) -> tuple[int, str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER_CLI, encoding="utf-8")
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path), "FAKE_ID": ID_A,
           "FAKE_DIGEST": DIGEST_1, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "COLUMNS": "120"}  # fmt: skip
    argv = [
        sys.executable,
        "-c",
        CHILD,
        "publish",
        "--service",
        SERVICE,
        "--repo",
        str(repo.path),
        "--registry",
        REGISTRY,
    ]
    root = Path(__file__).resolve().parents[2]
    if not terminal:
        proc = subprocess.run(
            argv, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        return proc.returncode, proc.stdout, proc.stderr
    code, screen, _ = run_on_terminal(argv, cwd=root, env=env, stderr_too=True)
    return code, screen.decode("utf-8", "replace"), ""


def test_publish_on_a_terminal_shows_phases_build_steps_push_layers_and_a_summary(
    repo: Checkout, tmp_path: Path
) -> None:
    sha = git(repo.path, "rev-parse", "HEAD")
    code, screen, _ = _publish_child(repo, tmp_path, terminal=True)
    assert code == 0, screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "Traceback" not in plain
    for phase in ("source", "build", "manifest check", "push", "verify"):
        assert phase in plain, (phase, plain)
    assert "step 3/3" in plain and "layers 2/2" in plain, plain
    assert f"published {REGISTRY}/unidesk/{SERVICE}:{sha}" in plain and DIGEST_1 in plain
    assert "Step 1/3" not in plain, "docker's own log is kept, not drawn, when nothing failed"
    assert not plain.lstrip().startswith("{"), "a person gets the summary, not the JSON"


def test_publish_piped_prints_only_the_json_summary_and_plain_logs(repo: Checkout, tmp_path: Path) -> None:
    code, out, err = _publish_child(repo, tmp_path, terminal=False)
    assert code == 0, err
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2, ensure_ascii=False) + "\n", "stdout is the JSON document only"
    assert doc["digest"] == DIGEST_1 and doc["imageId"] == ID_A
    assert "\x1b[" not in out + err, "no terminal control sequences when piped"
    assert "publish: " in err and "Step 1/3" in err and "0123456789ab: Pushed" in err, (
        "the plain log as before"
    )


def test_a_commit_tag_moved_by_another_publisher_during_the_repair_is_reported(repo: Checkout) -> None:
    """The repair never pushes to the commit tag; if it names another manifest afterwards (someone
    else pushed), the repair says so instead of claiming the original is healed."""

    class RacedWorld(RepairWorld):
        def on_push(self, ref: str) -> None:
            super().on_push(ref)
            self.digest = DIGEST_2

    world = RacedWorld()
    world.state[LAYER_1] = "missing"
    failure, _ = refused(world, repo)
    assert (failure.exit_code, failure.error) == (6, "manifest-changed")
    assert "another publisher" in failure.reason
    assert failure.details["digest"] == DIGEST_2 and failure.details["expectedDigest"] == DIGEST_1
