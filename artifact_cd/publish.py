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

``publish --repair --stack S`` (issue 12) re-uploads exactly the same content for a commit whose
blobs are missing or corrupt in the D601 registry: the build must carry the image ID (config
digest) the registry's manifest names (else ``tag-immutable``, as always); every blob of that
manifest is fetched through the registry API and hashed; each corrupt one is dropped on D601 by
``registry-blob-drop.sh`` over SSH (only a blob of this very manifest, only when its content is
wrong). Nothing is ever pushed to the commit tag itself: the rebuilt image is pushed to a scratch
repository of the same registry, ``unidesk-repair/<repository>:<commit>``. The registry's blob data
is content-addressed and shared by every repository, so that upload re-creates the dropped or
missing data files the commit's repository links to, while the commit tag keeps naming its
manifest (a push only writes the links and the manifest of the repository pushed to). Then the
scratch manifest's digest must equal the commit's (else ``repair-digest-changed``: the rebuild
differs, e.g. another layer compression; the commit tag was not touched) and every blob of the
commit's manifest must hash to its digest (else ``repair-incomplete``). A commit with nothing
damaged is a no-op. The summary gains ``repair`` (what was checked, found, dropped and uploaded,
``scratchRef``).

Exit codes: 0 published (or already published) · 2 invalid argument or CI.json · 3 refused
(dirty worktree, unpushed commit, immutable tag, upstream-image, Dockerfile missing at the commit,
submodules) · 4 transient, retryable (registry unreachable, push failed) · 5 infra-blocked (docker,
git or bash missing or the Docker daemon unreachable; names the channel) · 6 failed (build failed,
digest or image mismatch after push).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import TypeAdapter, ValidationError

from . import scripts
from .ci import CI_PATH, CICatalog, CIError, ServiceArtifact, load_checked
from .config import HostConfig, LoopbackEndpoint
from .contract import (
    COMMIT_RE,
    DIGEST_RE,
    MANIFEST_MEDIA_TYPES,
    REVISION_LABEL,
    SERVICE_LABEL,
    SOURCE_LABEL,
    ManifestCheckArgs,
    RegistryBlobDropArgs,
    last_json_object,
)
from .publish_progress import Progress

if TYPE_CHECKING:
    from .sshlink import SshSettings

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
BLOB_ERRORS = ("registry-blob-missing", "registry-blob-corrupt")
MANIFEST_SCRIPT = ManifestCheckArgs.script
BUILD_ARG_COMMIT = "UNIDESK_SOURCE_COMMIT"
BUILD_ARG_SERVICE = "UNIDESK_SERVICE_ID"
MAX_LISTED_PATHS = 20
# publish --repair pushes to <registry>/REPAIR_NAMESPACE/<repository>:<commit>, never to the commit tag
REPAIR_NAMESPACE = "unidesk-repair"

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


_PROGRESS: list[Progress] = []  # the running publish's progress (issue 13 item 5); plain when empty


def log(message: str) -> None:
    if _PROGRESS:
        _PROGRESS[-1].message(message)
        return
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
    def tag(self, source: str, target: str) -> None: ...
    def untag(self, ref: str) -> None: ...


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
        if proc.returncode == 3 and code in BLOB_ERRORS:
            raise PublishFailure(
                EXIT_REFUSED,
                code,
                f"manifest check: {detail}",
                fix="python -m artifact_cd publish --repair --stack <stack> (same service, same checkout) "
                "uploads the same content again",
                registry=registry,
                digest=doc.get("digest"),
                manifestDigest=doc.get("manifestDigest"),
                imageId=doc.get("imageId"),
            )
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


_BUILD_STEP_RE = re.compile(r"^(?:Step (\d+)/(\d+) :|#\d+ \[(?:[\w.-]+ )?(\d+)/(\d+)\])")
_PUSH_LINE_RE = re.compile(r"^([0-9a-f]{12}): (.+?)\s*$")
LOG_TAIL_LINES = 60


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the Docker Engine API over its unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_socket(environ: Mapping[str, str]) -> str | None:
    """The Engine API's unix socket the docker CLI would use (None: a TCP/SSH DOCKER_HOST)."""
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return "/var/run/docker.sock"
    return host.removeprefix("unix://") if host.startswith("unix://") else None


class DockerCli:
    """The docker CLI (``DOCKER_HOST`` is honoured as the CLI honours it). With a live progress (a
    terminal), the build's output is read line by line for its step count and the push goes through
    the Engine API's JSON stream (bytes per layer) when the daemon is on a unix socket."""

    def __init__(self, binary: str = "docker", progress: Progress | None = None) -> None:
        self.binary = binary
        self.progress = progress or Progress()

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
            if self.progress.live:
                proc = self._build_watched(args, timeout=3600)
            else:
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

    def _build_watched(self, args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """``docker build`` with its output read here: the step count to the progress, the log kept
        and written to stderr only when the build fails."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        try:
            with subprocess.Popen(
                [self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    match = _BUILD_STEP_RE.match(line)
                    if match:
                        step, total = match.group(1) or match.group(3), match.group(2) or match.group(4)
                        self.progress.build_step(int(step), int(total))
                    if time.monotonic() > deadline:
                        proc.kill()
                        raise PublishFailure(
                            EXIT_FAILED,
                            "docker-timeout",
                            f"docker build did not finish within {timeout:.0f}s",
                        )
                code = proc.wait()
        except FileNotFoundError:
            raise PublishFailure(
                EXIT_INFRA, "infra-blocked", f"{self.binary} is not installed", channel="docker"
            ) from None
        if code != 0:
            self.progress.close()
            sys.stderr.write("".join(lines[-LOG_TAIL_LINES:]))
        return subprocess.CompletedProcess([self.binary, *args], code, "".join(lines), "")

    def labels(self, image: str) -> dict[str, str]:
        proc = self._run(["image", "inspect", "--format", "{{json .Config.Labels}}", image], timeout=60)
        if proc.returncode != 0:
            raise PublishFailure(EXIT_FAILED, "inspect-failed", proc.stderr.strip()[:300])
        data = json.loads(proc.stdout or "null") or {}
        return {str(k): str(v) for k, v in data.items()}

    def tag(self, source: str, target: str) -> None:
        proc = self._run(["tag", source, target], timeout=60)
        if proc.returncode != 0:
            raise PublishFailure(
                EXIT_FAILED, "tag-failed", f"docker tag {target}: {proc.stderr.strip()[:300]}"
            )

    def untag(self, ref: str) -> None:
        """Remove the name ``ref`` only (the image keeps its other tags; best effort)."""
        self._run(["image", "rm", "--no-prune", ref], timeout=60)

    last_push_output = ""  # the stdout of the last push (its per-layer lines)

    def push(self, ref: str) -> str | None:
        proc = self._push_watched(ref) if self.progress.live else None
        if proc is None:
            proc = self._run(["push", ref], timeout=1800)
            for line in proc.stdout.splitlines() if self.progress.live else ():
                if match := _PUSH_LINE_RE.match(line):
                    self.progress.layer(match.group(1), match.group(2))
        self.last_push_output = proc.stdout
        if not self.progress.live:
            sys.stderr.write(proc.stdout + proc.stderr)
        elif proc.returncode != 0:
            self.progress.close()
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

    def _push_watched(self, ref: str) -> subprocess.CompletedProcess[str] | None:
        """The push through the Engine API (its JSON progress: bytes per layer), as the lines the
        CLI prints; None when the daemon is not on a unix socket or does not answer there (the
        caller then runs ``docker push``)."""
        path = docker_socket(os.environ) if self.binary == "docker" else None
        if path is None or not os.path.exists(path):
            return None
        name, _, tag = ref.rpartition(":")
        url = f"/images/{urllib.parse.quote(name, safe='/:')}/push?tag={urllib.parse.quote(tag)}"
        auth = base64.urlsafe_b64encode(b"{}").decode()
        conn = _UnixHTTPConnection(path, timeout=1800)
        try:
            conn.request("POST", url, headers={"X-Registry-Auth": auth})
            answer = conn.getresponse()
        except OSError:
            conn.close()
            return None
        out: list[str] = []
        error = (
            ""
            if answer.status == 200
            else f"HTTP {answer.status}: {answer.read().decode(errors='replace')[:300]}"
        )
        try:
            while not error and (raw := answer.readline()):
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                error = str(event.get("error") or "")
                layer, status = str(event.get("id") or ""), str(event.get("status") or "")
                detail = event.get("progressDetail") or {}
                if layer and status:
                    current, total = detail.get("current"), detail.get("total")
                    self.progress.layer(layer, status, current, total)
                    if status != "Pushing":
                        out.append(f"{layer}: {status}\n")
                elif status:
                    out.append(status + "\n")
        finally:
            conn.close()
        return subprocess.CompletedProcess(["docker", "push", ref], 1 if error else 0, "".join(out), error)


# --------------------------------------------------------------------------- repair (issue 12)


@dataclass(frozen=True)
class Blob:
    digest: str
    kind: str  # "config" | "layer"
    size: int


class RegistryBlobs(Protocol):
    def image(self, registry: str, repository: str, tag: str) -> tuple[str, list[Blob]]: ...
    def state(self, registry: str, repository: str, blob: Blob) -> str: ...


class BlobDropper(Protocol):
    def drop(
        self, registry: str, repository: str, tag: str, digest: str, manifest_digest: str
    ) -> dict[str, Any]: ...


class HttpRegistryBlobs:
    """The registry API, read-only: the tag's manifest and each blob hashed (``ok`` / ``missing`` /
    ``corrupt``)."""

    def __init__(self, timeout: float = 120) -> None:
        self.timeout = timeout

    def _open(self, url: str, accept: Sequence[str] = ()) -> Any:
        headers = {"Accept": ", ".join(accept)} if accept else {}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http://<loopback registry>
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as error:
            return error
        except (OSError, ValueError) as error:
            raise PublishFailure(
                EXIT_RETRYABLE,
                "registry-unreachable",
                f"GET {url}: {type(error).__name__}: {error}",
                retryable=True,
            ) from None

    def image(self, registry: str, repository: str, tag: str) -> tuple[str, list[Blob]]:
        with self._open(f"http://{registry}/v2/{repository}/manifests/{tag}", MANIFEST_MEDIA_TYPES) as answer:
            status, body = answer.status, answer.read()
        if status != 200:
            raise PublishFailure(
                EXIT_FAILED, "registry-error", f"GET manifest {repository}:{tag}: HTTP {status}"
            )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        doc = json.loads(body)
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict):
            raise PublishFailure(
                EXIT_REFUSED,
                "repair-unsupported",
                f"{repository}:{tag} names an index, not one image manifest: publish --repair repairs "
                "single-platform images (the ones publish pushes)",
            )
        blobs = [Blob(str(config.get("digest")), "config", int(config.get("size", 0)))]
        blobs += [
            Blob(str(layer.get("digest")), "layer", int(layer.get("size", 0)))
            for layer in doc.get("layers") or []
            if isinstance(layer, dict)
        ]
        for blob in blobs:
            if not DIGEST_RE.fullmatch(blob.digest):
                raise PublishFailure(
                    EXIT_FAILED, "registry-error", f"a blob of {repository}:{tag} has no digest"
                )
        return digest, blobs

    def state(self, registry: str, repository: str, blob: Blob) -> str:
        h = hashlib.sha256()
        with self._open(f"http://{registry}/v2/{repository}/blobs/{blob.digest}") as answer:
            if answer.status == 404:
                return "missing"
            if answer.status != 200:
                raise PublishFailure(
                    EXIT_RETRYABLE,
                    "registry-error",
                    f"GET blob {blob.digest}: HTTP {answer.status}",
                    retryable=True,
                )
            while chunk := answer.read(1 << 20):
                h.update(chunk)
        return "ok" if "sha256:" + h.hexdigest() == blob.digest else "corrupt"


class SshBlobDropper:
    """``registry-blob-drop.sh`` on D601 over SSH (the stack's hosts.d601 and registry storage)."""

    def __init__(self, host: HostConfig, settings: SshSettings, storage: str, container: str) -> None:
        self.host = host
        self.settings = settings
        self.storage = storage
        self.container = container

    def drop(
        self, registry: str, repository: str, tag: str, digest: str, manifest_digest: str
    ) -> dict[str, Any]:
        from .remote import SshFailure, run_call

        call = RegistryBlobDropArgs(
            registry=registry,
            repository=repository,
            tag=tag,
            digest=digest,
            manifest_digest=manifest_digest,
            storage=self.storage,
            container=self.container,
        )
        try:
            result = run_call(self.host, call, self.settings)
        except SshFailure as failure:
            raise PublishFailure(
                EXIT_RETRYABLE if failure.retryable else EXIT_INFRA,
                "ssh-unreachable" if failure.retryable else "infra-blocked",
                f"ssh to D601 ({self.host.user}@{self.host.host}:{self.host.port}): {failure.detail}",
                retryable=failure.retryable,
                channel=None if failure.retryable else "ssh",
            ) from None
        doc = result.json or {}
        if result.returncode != 0 or doc.get("ok") is not True:
            # the script's own channel, path and fix reach the operator (e.g. a non-root user who may
            # not remove the registry's file: the manual removal, with the file's sha256)
            passed = {k: doc[k] for k in ("channel", "fix", "path") if isinstance(doc.get(k), str)}
            raise PublishFailure(
                EXIT_REFUSED if result.returncode == 3 else EXIT_FAILED,
                str(doc.get("error") or "blob-drop-failed"),
                f"{RegistryBlobDropArgs.script} on D601: {doc.get('detail') or result.stderr.strip()[-300:]}",
                fix=passed.pop("fix", None),
                channel=passed.pop("channel", None),
                digest=digest,
                **passed,
            )
        return doc


def push_counts(output: str) -> dict[str, int]:
    """Layer lines of a ``docker push``: how many were uploaded and how many the registry had."""
    return {
        "layersPushed": len(re.findall(r"^[0-9a-f]{12}: Pushed\s*$", output, re.M)),
        "layersAlreadyPresent": len(re.findall(r"^[0-9a-f]{12}: Layer already exists\s*$", output, re.M)),
        # linked from another repository of the registry (docker's cross-repository mount): no bytes
        "layersMounted": len(re.findall(r"^[0-9a-f]{12}: Mounted from \S+\s*$", output, re.M)),
    }


# --------------------------------------------------------------------------- publish


@dataclass
class Publisher:
    ci: CICatalog
    docker: Docker = field(default_factory=DockerCli)
    manifests: ManifestChecker = field(default_factory=ScriptManifestChecker)
    actions: list[str] = field(default_factory=list)  # what the last publish changed, for refusals
    blobs: RegistryBlobs = field(default_factory=HttpRegistryBlobs)
    dropper: BlobDropper | None = None  # publish --repair: drops a corrupt blob on D601
    progress: Progress = field(default_factory=Progress)  # what a person sees (stderr)

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

    def publish(self, service_id: str, repo: Path, registry: str, *, repair: bool = False) -> dict[str, Any]:
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
        _PROGRESS.append(self.progress)
        try:
            return self._publish(artifact, source, registry, ref, labels, repair=repair)
        except PublishFailure as failure:
            for key, value in context.items():
                failure.details.setdefault(key, value)
            failure.details["actionsTaken"] = list(self.actions)
            raise
        finally:
            _PROGRESS.remove(self.progress)
            self.progress.close()

    def _publish(
        self,
        artifact: ServiceArtifact,
        source: Source,
        registry: str,
        ref: str,
        labels: dict[str, str],
        *,
        repair: bool = False,
    ) -> dict[str, Any]:
        commit = source.commit
        self.progress.phase("source")
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
            self.progress.phase("build")
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
        self.progress.phase("manifest check")
        if repair:
            return self._repair(
                artifact, commit, registry=registry, ref=ref, image_id=image_id, labels=labels
            )
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
            self.progress.phase("push")
            pushed_digest = self.docker.push(ref)
            self.actions.append(f"pushed {ref}")
            self.progress.phase("verify")
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

    def _existing_for_repair(self, registry: str, repository: str, commit: str) -> Manifest | None:
        """The registry's manifest of the commit, also when the check stops at a damaged blob."""
        try:
            return self.manifests.check(registry, repository, commit)
        except PublishFailure as failure:
            digest, image_id = failure.details.get("manifestDigest"), failure.details.get("imageId")
            if (
                failure.error not in BLOB_ERRORS
                or not isinstance(digest, str)
                or not isinstance(image_id, str)
            ):
                raise
            if not (DIGEST_RE.fullmatch(digest) and DIGEST_RE.fullmatch(image_id)):
                raise
            log(f"{repository}:{commit}: {failure.error} {failure.details.get('digest')}")
            return Manifest(digest=digest, image_id=image_id)

    def _repair(
        self,
        artifact: ServiceArtifact,
        commit: str,
        *,
        registry: str,
        ref: str,
        image_id: str,
        labels: Mapping[str, str],
    ) -> dict[str, Any]:
        repository = artifact.image
        existing = self._existing_for_repair(registry, repository, commit)
        if existing is None:
            raise PublishFailure(
                EXIT_REFUSED,
                "repair-not-published",
                f"{ref} is not in the registry: there is nothing to repair",
                fix="publish without --repair",
            )
        if existing.image_id != image_id:
            raise PublishFailure(
                EXIT_REFUSED,
                "tag-immutable",
                f"{ref} exists with image ID {existing.image_id}; this build produced {image_id}. A repair "
                "uploads only the very same content (same image ID, same manifest digest): nothing is "
                "dropped or pushed",
                fix="repair from the CI host that built the original (its build cache gives the same image "
                "ID), or push a new commit",
                existingDigest=existing.digest,
                existingImageId=existing.image_id,
                builtImageId=image_id,
            )
        manifest_digest, blobs = self.blobs.image(registry, repository, commit)
        if manifest_digest != existing.digest:
            raise PublishFailure(
                EXIT_RETRYABLE,
                "manifest-changed",
                f"{ref} named {existing.digest} at the check and {manifest_digest} now",
                retryable=True,
            )
        self.progress.phase("repair: hash every blob")
        states = {blob.digest: self.blobs.state(registry, repository, blob) for blob in blobs}
        missing = [d for d, st in states.items() if st == "missing"]
        corrupt = [d for d, st in states.items() if st == "corrupt"]
        report: dict[str, Any] = {
            "manifestDigest": manifest_digest,
            "checkedBlobs": len(blobs),
            "checkedBytes": sum(b.size for b in blobs),
            "missing": missing,
            "corrupt": corrupt,
            "dropped": [],
            "uploaded": [],
        }
        if not missing and not corrupt:
            log(f"{artifact.id}: every blob of {ref} is present and correct; nothing to repair")
            return {**summary(artifact, commit, registry, existing, labels), "repair": report}
        if corrupt and self.dropper is None:
            raise PublishFailure(
                EXIT_INVALID,
                "invalid-argument",
                "a corrupt blob must be dropped on D601: --repair needs --stack",
            )
        for digest in corrupt:
            assert self.dropper is not None
            log(f"{artifact.id}: dropping the corrupt blob {digest} on D601")
            dropped = self.dropper.drop(registry, repository, commit, digest, manifest_digest)
            self.actions.append(f"dropped the corrupt blob {digest} from the D601 registry storage")
            if dropped.get("dropped") is True:
                report["dropped"].append(digest)
                report.setdefault("droppedBy", {})[digest] = dropped.get("removedBy")
        # The commit tag is never pushed to: a push there would move it to whatever manifest the
        # rebuild gives. The scratch repository shares the registry's content-addressed blob data.
        scratch_repository = f"{REPAIR_NAMESPACE}/{repository}"
        scratch_ref = f"{registry}/{scratch_repository}:{commit}"
        report["scratchRef"] = scratch_ref
        log(f"{artifact.id}: pushing {scratch_ref} (only the missing blobs travel; {ref} is not pushed to)")
        self.progress.phase("push")
        self.docker.tag(ref, scratch_ref)
        try:
            self.docker.push(scratch_ref)
        finally:
            self.docker.untag(scratch_ref)
        self.actions.append(
            f"pushed {scratch_ref} to re-upload {len(missing) + len(corrupt)} blob(s) "
            f"({ref} was not pushed to)"
        )
        report.update(push_counts(str(getattr(self.docker, "last_push_output", ""))))
        self.progress.phase("verify")
        scratch_digest, _ = self.blobs.image(registry, scratch_repository, commit)
        if scratch_digest != existing.digest:
            raise PublishFailure(
                EXIT_FAILED,
                "repair-digest-changed",
                f"the rebuilt image's manifest is {scratch_digest} (pushed as {scratch_ref}), not "
                f"{existing.digest}: the CI Docker host compressed a layer differently, so its blobs "
                f"are not the ones {ref} needs. {ref} was not pushed to and still names {existing.digest}",
                fix="repair from the CI host that pushed the original (its layer cache gives the same "
                "blobs), or push a new commit",
                digest=scratch_digest,
                expectedDigest=existing.digest,
                scratchRef=scratch_ref,
            )
        after = self.manifests.check(registry, repository, commit)
        if after is None or after.digest != existing.digest or after.image_id != image_id:
            raise PublishFailure(
                EXIT_FAILED,
                "manifest-changed",
                f"{ref} names {after.digest if after else 'nothing'} after the repair, not {existing.digest} "
                "(this repair did not push to it: another publisher did)",
                digest=after.digest if after else None,
                expectedDigest=existing.digest,
            )
        still = [
            b.digest
            for b in blobs
            if states[b.digest] != "ok" and self.blobs.state(registry, repository, b) != "ok"
        ]
        if still:
            raise PublishFailure(
                EXIT_FAILED, "repair-incomplete", f"after the repair push these blobs are still bad: {still}"
            )
        report["uploaded"] = missing + corrupt
        log(
            f"{artifact.id}: repaired {ref}: {manifest_digest} unchanged, "
            f"{len(report['uploaded'])} blob(s) uploaded"
        )
        return {**summary(artifact, commit, registry, existing, labels), "repair": report}


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
    repair: bool = False,
    dropper: BlobDropper | None = None,
    blobs: RegistryBlobs | None = None,
    progress: Progress | None = None,
) -> tuple[int, dict[str, Any]]:
    """Exit code and the JSON document to print; never raises for an expected refusal."""
    try:
        endpoint = validate_registry(registry)
        try:
            ci = load_checked(ci_path)
        except CIError as error:
            return EXIT_INVALID, error.as_json()
        shown = progress or Progress()
        publisher = Publisher(
            ci,
            docker or DockerCli(progress=shown),
            manifests or ScriptManifestChecker(),
            blobs=blobs or HttpRegistryBlobs(),
            dropper=dropper,
            progress=shown,
        )
        return EXIT_OK, publisher.publish(service_id, Path(repo), endpoint, repair=repair)
    except PublishFailure as failure:
        doc = failure.as_json()
        doc.setdefault("serviceId", service_id)
        return failure.exit_code, doc
