"""``python -m artifact_cd publish``: CI builds and publishes one commit-pinned image (R25, R26).

The CI side of the loop, and the only place where an image is built (CD never builds):

1. CI.json is loaded and checked against the service catalog; the service must be a
   ``service-image`` entry (``upstream-image`` entries are catalog only and are refused).
2. The checkout must be clean (no tracked changes, no untracked files) and its HEAD commit must be
   contained in a remote-tracking branch (``git branch -r --contains``): the commit comes from
   pushed Git. Remote-tracking refs are used as they are; CI fetches before it publishes.
3. The tree of exactly that commit is exported to a temporary directory (a temporary index plus
   ``git checkout-index``: ignored build leftovers of the checkout never reach the build context)
   and built with the catalog's Dockerfile and context (build args ``UNIDESK_SOURCE_COMMIT=<sha>``
   and ``UNIDESK_SERVICE_ID=<id>`` let the image bake in the commit its health reports), labelled
   ``org.opencontainers.image.revision=<sha>``, ``org.opencontainers.image.source=<catalog repo>``
   and ``io.unidesk.service=<id>``, tagged ``<registry>/unidesk/<id>:<40-hex sha>``.
4. The project's manifest check (``scripts/manifest-check.sh``, run locally as ``bash -s --``)
   decides: tag absent -> push; present with the same image ID (config digest) -> nothing is
   pushed, same summary; present with another image ID -> refused (tags are immutable).
5. After a push the digest is read back with the manifest check and must carry the built image ID
   (and equal the digest ``docker push`` reported).

stdout is one JSON document: the summary (``serviceId, sourceCommit, sourceRepo, dockerfile,
imageRef, tag, digest, digestRef`` plus ``buildContext, producer, imageId, labels``), identical for
a first publish and an idempotent re-publish; or a structured refusal/failure. Progress and the
build/push logs go to stderr. Docker is reached through ``DOCKER_HOST`` when it is set.

Exit codes: 0 published (or already published) · 2 invalid argument or CI.json · 3 refused
(dirty worktree, unpushed commit, immutable tag, upstream-image, Dockerfile missing at the commit,
submodules) · 4 transient, retryable (registry unreachable, push failed) · 5 infra-blocked (docker,
git or bash missing or the Docker daemon unreachable; names the channel) · 6 failed (build failed,
digest or image mismatch after push).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from . import scripts
from .ci import CI_PATH, CICatalog, CIError, ServiceArtifact, load_checked
from .config import LoopbackEndpoint
from .contract import (
    COMMIT_RE,
    DIGEST_RE,
    REVISION_LABEL,
    SERVICE_LABEL,
    SOURCE_LABEL,
    ManifestCheckArgs,
    last_json_object,
)

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_RETRYABLE = 4
EXIT_INFRA = 5
EXIT_FAILED = 6

_DECISIONS = {
    EXIT_INVALID: "invalid-arguments",
    EXIT_REFUSED: "refused",
    EXIT_RETRYABLE: "failed",
    EXIT_INFRA: "infra-blocked",
    EXIT_FAILED: "failed",
}

_PUSH_DIGEST_RE = re.compile(rf"digest: ({DIGEST_RE.pattern})")
MANIFEST_SCRIPT = ManifestCheckArgs.script
BUILD_ARG_COMMIT = "UNIDESK_SOURCE_COMMIT"
BUILD_ARG_SERVICE = "UNIDESK_SERVICE_ID"
MAX_LISTED_PATHS = 20

# Variables that would point git at another repository, index or work tree than --repo.
_GIT_REDIRECTS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
)


def log(message: str) -> None:
    sys.stderr.write(f"publish: {message}\n")
    sys.stderr.flush()


class PublishFailure(Exception):
    """A structured refusal or failure; ``as_json`` is what the CLI prints."""

    def __init__(
        self,
        exit_code: int,
        error: str,
        reason: str,
        *,
        fix: str | None = None,
        retryable: bool = False,
        channel: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(f"{error}: {reason}")
        self.exit_code = exit_code
        self.error = error
        self.reason = reason
        self.fix = fix
        self.retryable = retryable
        self.channel = channel
        self.details = details

    def as_json(self, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": False,
            "decision": _DECISIONS.get(self.exit_code, "failed"),
            "error": self.error,
            "retryable": self.retryable,
            "reason": self.reason,
        }
        if self.channel is not None:
            doc["channel"] = self.channel
        if self.fix is not None:
            doc["fix"] = self.fix
        doc.update(context or {})
        doc.update(self.details)
        doc["actionsTaken"] = self.details.get("actionsTaken", [])
        return doc


# --------------------------------------------------------------------------- git


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    return env


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    argv = ["git", "-C", str(repo), "--no-optional-locks", *args]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=dict(env or _git_env()), timeout=300, check=False
        )
    except FileNotFoundError:
        raise PublishFailure(
            EXIT_INFRA, "infra-blocked", "git is not installed", channel="git", fix="install git"
        ) from None
    if check and proc.returncode != 0:
        raise PublishFailure(
            EXIT_FAILED,
            "git-failed",
            f"git {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[:500]}",
        )
    return proc.stdout


@dataclass(frozen=True)
class Source:
    """A checkout that passed the CI source rules: clean, HEAD contained in a remote branch."""

    root: Path
    commit: str
    remote_branches: tuple[str, ...]


def _toplevel(repo: Path) -> Path:
    if not repo.is_dir():
        raise PublishFailure(EXIT_INVALID, "not-a-git-repo", f"--repo {repo} is not a directory")
    proc = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        env=_git_env(),
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise PublishFailure(
            EXIT_INVALID,
            "not-a-git-repo",
            f"--repo {repo} is not inside a git work tree: {proc.stderr.strip()[:300]}",
            fix="pass the path of a git checkout of the service's source repository",
        )
    return Path(proc.stdout.strip())


def dirty_paths(root: Path) -> list[str]:
    """Tracked changes (staged or not) and untracked files; ignored files do not count."""
    out = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none")
    return [entry for entry in out.split("\0") if entry]


def head_commit(root: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        capture_output=True,
        text=True,
        env=_git_env(),
        check=False,
    )
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not COMMIT_RE.fullmatch(commit):
        raise PublishFailure(
            EXIT_REFUSED,
            "no-commit",
            f"{root} has no HEAD commit (empty repository?)",
            fix="commit and push the source first",
        )
    return commit


def remote_branches_containing(root: Path, commit: str) -> tuple[str, ...]:
    out = git(root, "branch", "-r", "--contains", commit, "--format=%(refname:short)")
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def inspect_source(repo: Path) -> Source:
    """Refuse a dirty worktree and a HEAD commit that no remote-tracking branch contains."""
    root = _toplevel(repo)
    commit = head_commit(root)
    branches = remote_branches_containing(root, commit)
    dirty = dirty_paths(root)
    if dirty:
        raise PublishFailure(
            EXIT_REFUSED,
            "dirty-worktree",
            f"{root} has {len(dirty)} uncommitted change(s) or untracked file(s); CI publishes only "
            "what pushed Git holds",
            fix="commit and push (or remove) the changes, then publish from a clean checkout",
            sourceCommit=commit,
            dirtyPaths=dirty[:MAX_LISTED_PATHS],
            dirtyCount=len(dirty),
            headPushed=bool(branches),
        )
    if not branches:
        raise PublishFailure(
            EXIT_REFUSED,
            "commit-not-pushed",
            f"HEAD {commit} is not contained in any remote-tracking branch (git branch -r --contains); "
            "the commit must come from pushed Git",
            fix="git push <remote> HEAD:<branch> (or git fetch when it was pushed elsewhere), then publish",
            sourceCommit=commit,
        )
    return Source(root=root, commit=commit, remote_branches=branches)


def gitlinks(root: Path, commit: str) -> list[str]:
    out = git(root, "ls-tree", "-r", "-z", commit)
    return [entry.split("\t", 1)[1] for entry in out.split("\0") if entry.startswith("160000 ")]


def export_tree(root: Path, commit: str, dest: Path) -> None:
    """Write exactly the tree of ``commit`` into ``dest`` (a temporary index; the repo is untouched)."""
    links = gitlinks(root, commit)
    if links:
        raise PublishFailure(
            EXIT_REFUSED,
            "submodules-unsupported",
            "the commit contains submodules, whose content is not part of its tree; publish cannot "
            "guarantee the image is built from exactly this commit",
            fix="vendor the submodule content or build this service with a producer that pins submodules",
            submodules=links[:MAX_LISTED_PATHS],
        )
    dest.mkdir(parents=True, exist_ok=True)
    env = _git_env()
    env["GIT_INDEX_FILE"] = str(dest.parent / "export.index")
    git(root, "read-tree", commit, env=env)
    git(root, "checkout-index", "--all", "--force", f"--prefix={dest}/", env=env)


# --------------------------------------------------------------------------- registry / docker


@dataclass(frozen=True)
class Manifest:
    digest: str
    image_id: str


class ManifestChecker(Protocol):
    def check(self, registry: str, repository: str, tag: str) -> Manifest | None: ...


class Docker(Protocol):
    def ping(self) -> None: ...
    def build(
        self,
        dockerfile: Path,
        context: Path,
        ref: str,
        labels: Mapping[str, str],
        build_args: Mapping[str, str],
    ) -> str: ...
    def labels(self, image: str) -> dict[str, str]: ...
    def push(self, ref: str) -> str | None: ...


class ScriptManifestChecker:
    """Runs the project's ``manifest-check.sh`` locally, exactly as a remote step would."""

    def __init__(self, bash: str = "bash", timeout: float = 120) -> None:
        self.bash = bash
        self.timeout = timeout

    def check(self, registry: str, repository: str, tag: str) -> Manifest | None:
        try:
            text = scripts.script_text(MANIFEST_SCRIPT)
        except (OSError, ValueError) as error:
            raise PublishFailure(
                EXIT_INFRA,
                "infra-blocked",
                f"the project's {MANIFEST_SCRIPT} is not available: {error}",
                channel=MANIFEST_SCRIPT,
            ) from None
        call = ManifestCheckArgs(registry=registry, repository=repository, tag=tag)
        argv = [self.bash, "-s", "--", *call.to_argv()]
        try:
            proc = subprocess.run(
                argv, input=text, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise PublishFailure(
                EXIT_INFRA, "infra-blocked", "bash is not installed", channel="bash"
            ) from None
        except subprocess.TimeoutExpired:
            raise PublishFailure(
                EXIT_RETRYABLE,
                "registry-unreachable",
                f"the manifest check of {registry}/{repository}:{tag} timed out after {self.timeout:.0f}s",
                retryable=True,
            ) from None
        doc = last_json_object(proc.stdout) or {}
        if proc.returncode == 0 and doc.get("ok") is True:
            digest, image_id = doc.get("digest"), doc.get("imageId")
            if not (
                isinstance(digest, str)
                and isinstance(image_id, str)
                and DIGEST_RE.fullmatch(digest)
                and DIGEST_RE.fullmatch(image_id)
            ):
                shown = json.dumps(doc)[:400]
                raise PublishFailure(
                    EXIT_FAILED, "registry-error", f"manifest check: no valid digest/imageId in {shown}"
                )
            return Manifest(digest=digest, image_id=image_id)
        code = str(doc.get("error", "")) or "manifest-check-failed"
        detail = str(doc.get("detail", "")) or proc.stderr.strip()[-500:]
        if proc.returncode == 3 and code == "manifest-missing":
            return None
        if proc.returncode == 4:
            raise PublishFailure(
                EXIT_RETRYABLE, code, f"manifest check: {detail}", retryable=True, registry=registry
            )
        if proc.returncode == 5:
            channel = doc.get("channel")
            raise PublishFailure(
                EXIT_INFRA,
                "infra-blocked",
                f"manifest check: {detail}",
                channel=str(channel) if channel else MANIFEST_SCRIPT,
            )
        raise PublishFailure(
            EXIT_FAILED, code, f"manifest check exited {proc.returncode}: {detail}", registry=registry
        )


class DockerCli:
    """The docker CLI (``DOCKER_HOST`` is honoured as the CLI honours it)."""

    def __init__(self, binary: str = "docker") -> None:
        self.binary = binary

    def _run(
        self, args: Sequence[str], *, timeout: float, capture: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            if capture:
                return subprocess.run(
                    [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False
                )
            # Long-running build: its log streams to our stderr (stdout is reserved for the summary).
            return subprocess.run(
                [self.binary, *args],
                stdout=sys.stderr,
                stderr=sys.stderr,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise PublishFailure(
                EXIT_INFRA, "infra-blocked", f"{self.binary} is not installed", channel="docker"
            ) from None
        except subprocess.TimeoutExpired:
            raise PublishFailure(
                EXIT_FAILED, "docker-timeout", f"docker {args[0]} did not finish within {timeout:.0f}s"
            ) from None

    def ping(self) -> None:
        proc = self._run(["version", "--format", "{{.Server.Version}}"], timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise PublishFailure(
                EXIT_INFRA,
                "infra-blocked",
                "the Docker daemon is not reachable: " + proc.stderr.strip()[:300],
                channel="docker",
                fix="start Docker on the CI host or point DOCKER_HOST at it",
            )

    def build(
        self,
        dockerfile: Path,
        context: Path,
        ref: str,
        labels: Mapping[str, str],
        build_args: Mapping[str, str],
    ) -> str:
        with tempfile.TemporaryDirectory(prefix="artifact-cd-iid-") as tmp:
            iidfile = Path(tmp) / "image.iid"
            args = ["build", "--file", str(dockerfile), "--tag", ref, "--iidfile", str(iidfile)]
            for key, value in labels.items():
                args += ["--label", f"{key}={value}"]
            for key, value in build_args.items():
                args += ["--build-arg", f"{key}={value}"]
            args.append(str(context))
            proc = self._run(args, timeout=3600, capture=False)
            if proc.returncode != 0:
                raise PublishFailure(
                    EXIT_FAILED,
                    "build-failed",
                    f"docker build exited {proc.returncode} (see the build log on stderr)",
                )
            image_id = iidfile.read_text(encoding="utf-8").strip() if iidfile.exists() else ""
        if not DIGEST_RE.fullmatch(image_id):
            raise PublishFailure(
                EXIT_FAILED, "build-failed", f"docker build reported no image ID ({image_id!r})"
            )
        return image_id

    def labels(self, image: str) -> dict[str, str]:
        proc = self._run(["image", "inspect", "--format", "{{json .Config.Labels}}", image], timeout=60)
        if proc.returncode != 0:
            raise PublishFailure(EXIT_FAILED, "inspect-failed", proc.stderr.strip()[:300])
        data = json.loads(proc.stdout or "null") or {}
        return {str(k): str(v) for k, v in data.items()}

    def push(self, ref: str) -> str | None:
        proc = self._run(["push", ref], timeout=1800)
        sys.stderr.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise PublishFailure(
                EXIT_RETRYABLE,
                "push-failed",
                f"docker push {ref} exited {proc.returncode}: {proc.stderr.strip()[-300:]}",
                retryable=True,
            )
        match = _PUSH_DIGEST_RE.search(proc.stdout)
        return match.group(1) if match else None


# --------------------------------------------------------------------------- publish


@dataclass
class Publisher:
    ci: CICatalog
    docker: Docker = field(default_factory=DockerCli)
    manifests: ManifestChecker = field(default_factory=ScriptManifestChecker)
    actions: list[str] = field(default_factory=list)  # what the last publish changed, for refusals

    def artifact(self, service_id: str) -> ServiceArtifact:
        if service_id in self.ci.upstream:
            up = self.ci.upstream[service_id]
            raise PublishFailure(
                EXIT_REFUSED,
                "upstream-image",
                f"{service_id} is an upstream-image entry of CI.json ({up.upstream_image}@"
                f"{up.upstream_digest}): catalog coverage only; no mirror producer exists",
                fix="publish service-image entries only; mirror upstream images with a dedicated producer",
                serviceId=service_id,
            )
        artifact = self.ci.services.get(service_id)
        if artifact is None:
            raise PublishFailure(
                EXIT_INVALID,
                "unknown-service",
                f"{service_id!r} is not a service-image entry of CI.json",
                knownServices=sorted(self.ci.services),
            )
        return artifact

    def publish(self, service_id: str, repo: Path, registry: str) -> dict[str, Any]:
        artifact = self.artifact(service_id)
        source = inspect_source(repo)
        commit = source.commit
        ref = f"{registry}/{artifact.image}:{commit}"
        labels = {
            REVISION_LABEL: commit,
            SOURCE_LABEL: artifact.source_repo,
            SERVICE_LABEL: artifact.id,
        }
        context = {"serviceId": artifact.id, "sourceCommit": commit, "imageRef": ref}
        self.actions = []
        try:
            return self._publish(artifact, source, registry, ref, labels)
        except PublishFailure as failure:
            for key, value in context.items():
                failure.details.setdefault(key, value)
            failure.details["actionsTaken"] = list(self.actions)
            raise

    def _publish(
        self, artifact: ServiceArtifact, source: Source, registry: str, ref: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        commit = source.commit
        log(f"{artifact.id}: commit {commit} is clean and pushed ({', '.join(source.remote_branches)})")
        self.docker.ping()
        workdir = Path(tempfile.mkdtemp(prefix="artifact-cd-publish-"))
        try:
            tree = workdir / "src"
            export_tree(source.root, commit, tree)
            dockerfile = tree / artifact.dockerfile
            build_context = tree if artifact.build_context == "." else tree / artifact.build_context
            if not dockerfile.is_file():
                raise PublishFailure(
                    EXIT_REFUSED,
                    "dockerfile-missing",
                    f"the catalog Dockerfile {artifact.dockerfile} does not exist at commit {commit}",
                    fix="fix CI.json/catalog dockerfile or publish a commit that has it",
                )
            if not build_context.is_dir():
                raise PublishFailure(
                    EXIT_REFUSED,
                    "build-context-missing",
                    f"the catalog build context {artifact.build_context} does not exist at commit {commit}",
                )
            log(f"{artifact.id}: docker build -f {artifact.dockerfile} {artifact.build_context} -> {ref}")
            image_id = self.docker.build(dockerfile, build_context, ref, labels, build_args(artifact, commit))
            self.actions.append(f"built {image_id} and tagged it {ref} on the CI Docker host")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        actual = self.docker.labels(image_id)
        wrong = {k: actual.get(k) for k, v in labels.items() if actual.get(k) != v}
        if wrong:
            raise PublishFailure(
                EXIT_FAILED, "label-mismatch", f"the built image has wrong labels: {wrong}", imageId=image_id
            )
        repository = artifact.image
        existing = self.manifests.check(registry, repository, commit)
        if existing is not None:
            if existing.image_id != image_id:
                raise PublishFailure(
                    EXIT_REFUSED,
                    "tag-immutable",
                    f"{ref} already exists with image ID {existing.image_id}; this build produced "
                    f"{image_id}. Tags are immutable: the existing artifact is kept and nothing is pushed",
                    fix=(
                        "consume the existing artifact by its digest; to publish new content, "
                        "push a new commit"
                    ),
                    existingDigest=existing.digest,
                    existingImageId=existing.image_id,
                    builtImageId=image_id,
                )
            log(f"{artifact.id}: {ref} is already published with the same image ID; nothing pushed")
            manifest = existing
        else:
            log(f"{artifact.id}: pushing {ref}")
            pushed_digest = self.docker.push(ref)
            self.actions.append(f"pushed {ref}")
            after = self.manifests.check(registry, repository, commit)
            if after is None:
                raise PublishFailure(
                    EXIT_FAILED, "manifest-missing-after-push", f"{ref} is not in the registry after the push"
                )
            if after.image_id != image_id:
                raise PublishFailure(
                    EXIT_FAILED,
                    "tag-conflict",
                    f"after the push {ref} carries image ID {after.image_id}, not the built {image_id} "
                    "(another publisher raced this one)",
                    digest=after.digest,
                    builtImageId=image_id,
                )
            if pushed_digest is not None and pushed_digest != after.digest:
                raise PublishFailure(
                    EXIT_FAILED,
                    "digest-mismatch",
                    f"docker push reported {pushed_digest} but the registry manifest is {after.digest}",
                    digest=after.digest,
                )
            log(f"{artifact.id}: pushed {ref} -> {after.digest}")
            manifest = after
        return summary(artifact, commit, registry, manifest, labels)


def build_args(artifact: ServiceArtifact, commit: str) -> dict[str, str]:
    """Build arguments every producer passes, so a Dockerfile can bake in the commit its health
    payload reports as ``deploy.commit`` (``ARG UNIDESK_SOURCE_COMMIT``); unused ones are harmless."""
    return {BUILD_ARG_COMMIT: commit, BUILD_ARG_SERVICE: artifact.id}


def summary(
    artifact: ServiceArtifact, commit: str, registry: str, manifest: Manifest, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The producer summary (seed: ``docs/reference/ci.md`` contract; R26)."""
    return {
        "ok": True,
        "serviceId": artifact.id,
        "sourceCommit": commit,
        "sourceRepo": artifact.source_repo,
        "dockerfile": artifact.dockerfile,
        "buildContext": artifact.build_context,
        "producer": artifact.producer,
        "imageRef": f"{registry}/{artifact.image}:{commit}",
        "tag": commit,
        "digest": manifest.digest,
        "digestRef": f"{registry}/{artifact.image}@{manifest.digest}",
        "imageId": manifest.image_id,
        "labels": dict(labels),
        "buildArgs": build_args(artifact, commit),
    }


_ENDPOINT: TypeAdapter[str] = TypeAdapter(LoopbackEndpoint)


def validate_registry(value: str) -> str:
    try:
        return _ENDPOINT.validate_python(value)
    except ValidationError as error:
        raise PublishFailure(
            EXIT_INVALID,
            "invalid-argument",
            f"--registry: {error.errors()[0]['msg']}",
            fix="--registry 127.0.0.1:5000",
        ) from None


def run_publish(
    service_id: str,
    repo: str,
    registry: str = "127.0.0.1:5000",
    *,
    ci_path: Path = CI_PATH,
    docker: Docker | None = None,
    manifests: ManifestChecker | None = None,
) -> tuple[int, dict[str, Any]]:
    """Exit code and the JSON document to print; never raises for an expected refusal."""
    try:
        endpoint = validate_registry(registry)
        try:
            ci = load_checked(ci_path)
        except CIError as error:
            return EXIT_INVALID, error.as_json()
        publisher = Publisher(ci, docker or DockerCli(), manifests or ScriptManifestChecker())
        return EXIT_OK, publisher.publish(service_id, Path(repo), endpoint)
    except PublishFailure as failure:
        doc = failure.as_json()
        doc.setdefault("serviceId", service_id)
        return failure.exit_code, doc
