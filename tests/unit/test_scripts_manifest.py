"""manifest-check.sh against an in-process FAKE registry (R11): every answer a registry can give.

The fake is a Python HTTP server on 127.0.0.1 serving content-addressed manifests and blobs as the
distribution API does; it records each request so the Accept headers can be checked. The real
registry (CNCF distribution in the rig) is exercised in tests/integration/test_deploy_*.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from artifact_cd.contract import MANIFEST_MEDIA_TYPES, StepResult
from artifact_cd.scripts import command_line, script_text

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "unidesk/svc"
DIGEST_OTHER = "sha256:" + "9" * 64
DIFF_BASE = "sha256:" + "5" * 64
DIFF_OWN = "sha256:" + "6" * 64
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BASH = shutil.which("bash") or "/bin/bash"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    port: int = 0
    # path -> (status, content type, body, extra headers)
    routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, str, list[str]]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob(self, data: bytes) -> str:
        digest = sha(data)
        self.routes[f"/v2/{REPO}/blobs/{digest}"] = (200, "application/octet-stream", data, {})
        return digest

    def manifest(self, doc: dict[str, Any], media: str, *, tag: str | None = None) -> tuple[str, bytes]:
        body = json.dumps(doc, indent=3).encode()
        digest = sha(body)
        route = (200, media, body, {"Docker-Content-Digest": digest})
        self.routes[f"/v2/{REPO}/manifests/{digest}"] = route
        if tag:
            self.routes[f"/v2/{REPO}/manifests/{tag}"] = route
        return digest, body

    def image(
        self, *, revision: str = COMMIT, media: str = DOCKER_MANIFEST, arch: str = "amd64"
    ) -> tuple[str, str, int]:
        """One image: config + one layer + manifest. Returns (manifest digest, config digest, manifest size)."""
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {
                    "Labels": {
                        "org.opencontainers.image.revision": revision,
                        "org.opencontainers.image.source": "https://example.invalid/repo",
                        "io.unidesk.service": "svc",
                    }
                },
            }
        ).encode()
        config_digest = self.blob(config)
        layer = self.blob(b"layer-" + arch.encode())
        doc = {
            "schemaVersion": 2,
            "mediaType": media,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 13,
                    "digest": layer,
                }
            ],
        }
        digest, body = self.manifest(doc, media)
        return digest, config_digest, len(body)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            fake.requests.append((self.command, self.path, self.headers.get_all("Accept") or []))
            status, media, body, extra = fake.routes.get(
                self.path, (404, "application/json", b'{"errors":[]}', {})
            )
            if status == 0:  # a route that drops the connection without an answer (a transport failure)
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(False)

        def do_GET(self) -> None:
            self._answer(True)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def check(endpoint: str, tag: str = COMMIT) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [BASH, "-c", command_line(["--registry", endpoint, "--repository", REPO, "--tag", tag])],
        input=script_text("manifest-check.sh"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, StepResult.parse(proc.stdout, "manifest-check.sh").data, proc.stderr


def test_docker_manifest_gives_digest_image_id_and_labels(registry: FakeRegistry) -> None:
    digest, config_digest, size = registry.image()
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = registry.routes[f"/v2/{REPO}/manifests/{digest}"]
    code, doc, _ = check(registry.endpoint)
    assert code == 0, doc
    assert doc["digest"] == digest and doc["imageId"] == config_digest
    assert doc["mediaType"] == DOCKER_MANIFEST and doc["platform"] == "linux/amd64"
    assert doc["repository"] == REPO and doc["tag"] == COMMIT
    assert doc["labels"]["org.opencontainers.image.revision"] == COMMIT
    assert doc["layers"] == 1 and doc["layerBytes"] == 13
    head = [r for r in registry.requests if r[0] == "HEAD"]
    assert head and head[0][1] == f"/v2/{REPO}/manifests/{COMMIT}"
    accepted = {part.strip() for value in head[0][2] for part in value.split(",")}
    assert accepted == set(MANIFEST_MEDIA_TYPES), "all four media types, else schema1 digests or 404s"
    assert ("GET", f"/v2/{REPO}/blobs/{config_digest}") in [(m, p) for m, p, _ in registry.requests]
    assert size > 0


def test_an_index_resolves_to_this_hosts_platform(registry: FakeRegistry) -> None:
    arm, arm_config, arm_size = registry.image(arch="arm64", media=OCI_MANIFEST)
    amd, amd_config, amd_size = registry.image(arch="amd64", media=OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": arm,
                "size": arm_size,
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd,
                "size": amd_size,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": arm,
                "size": arm_size,
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
        ],
    }
    digest, _ = registry.manifest(index, OCI_INDEX, tag=COMMIT)
    code, doc, _ = check(registry.endpoint)
    assert code == 0, doc
    assert doc["digest"] == digest, "the digest is the tag's (the index), as ctr/docker pull it"
    assert doc["mediaType"] == OCI_INDEX and doc["platform"] == "linux/amd64"
    assert doc["imageId"] == amd_config != arm_config


def test_an_index_without_a_usable_platform_is_a_registry_error(registry: FakeRegistry) -> None:
    arm, _, arm_size = registry.image(arch="s390x", media=OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": arm,
                "size": arm_size,
                "platform": {"os": "linux", "architecture": "s390x"},
            }
        ],
    }
    registry.manifest(index, OCI_INDEX, tag=COMMIT)
    code, doc, _ = check(registry.endpoint)
    assert code == 5 and doc["error"] == "registry-error" and "linux/amd64" in doc["detail"]


def test_missing_tag_is_manifest_missing(registry: FakeRegistry) -> None:
    registry.image()
    code, doc, stderr = check(registry.endpoint)
    assert code == 3
    assert doc == {**doc, "ok": False, "error": "manifest-missing", "retryable": False, "tag": COMMIT}
    assert "manifest-missing" in stderr


@pytest.mark.parametrize(("status", "exit_code", "retryable"), [(503, 4, True), (401, 5, False)])
def test_registry_errors_are_distinct_from_missing(
    registry: FakeRegistry, status: int, exit_code: int, retryable: bool
) -> None:
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = (status, "application/json", b"{}", {})
    code, doc, _ = check(registry.endpoint)
    assert code == exit_code, doc
    assert (
        doc["error"] == "registry-error"
        and doc["retryable"] is retryable
        and doc["httpStatus"] in (status, str(status))
    )


def test_unreachable_registry_is_retryable(registry: FakeRegistry) -> None:
    with socket.socket() as s:  # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code, doc, _ = check(f"127.0.0.1:{port}")
    assert code == 4
    assert doc["error"] == "registry-unreachable" and doc["retryable"] is True


def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(registry: FakeRegistry) -> None:
    digest, _, _ = registry.image()
    status, media, body, extra = registry.routes[f"/v2/{REPO}/manifests/{digest}"]
    tampered = body.replace(b'"size": 13', b'"size": 14')
    assert tampered != body
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = (status, media, body, extra)
    registry.routes[f"/v2/{REPO}/manifests/{digest}"] = (status, media, tampered, extra)
    code, doc, _ = check(registry.endpoint)
    assert code == 5 and doc["error"] == "registry-error" and "hashes to" in doc["detail"]


def test_head_without_a_digest_header_is_refused(registry: FakeRegistry) -> None:
    digest, _, _ = registry.image()
    status, media, body, _ = registry.routes[f"/v2/{REPO}/manifests/{digest}"]
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = (status, media, body, {})
    code, doc, _ = check(registry.endpoint)
    assert code == 5 and doc["error"] == "registry-error" and "Docker-Content-Digest" in doc["detail"]


def test_an_image_whose_revision_label_is_another_commit_is_refused(registry: FakeRegistry) -> None:
    digest, _, _ = registry.image(revision="f" * 40)
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = registry.routes[f"/v2/{REPO}/manifests/{digest}"]
    code, doc, _ = check(registry.endpoint)
    assert code == 3 and doc["error"] == "label-mismatch"
    assert doc["labels"]["org.opencontainers.image.revision"] == "f" * 40
    assert doc["digest"] == digest


# --------------------------------------------------------------------------- layer blobs (issue 12)


def _tagged_image(registry: FakeRegistry, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """An image tagged COMMIT; returns (manifest digest, manifest document)."""
    digest, _, _ = registry.image(**kwargs)
    route = registry.routes[f"/v2/{REPO}/manifests/{digest}"]
    registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"] = route
    return digest, json.loads(route[2])


def test_every_layer_blob_is_proved_by_a_head(registry: FakeRegistry) -> None:
    _, doc = _tagged_image(registry)
    layer = doc["layers"][0]["digest"]
    code, out, _ = check(registry.endpoint)
    assert code == 0, out
    assert ("HEAD", f"/v2/{REPO}/blobs/{layer}") in [(m, p) for m, p, _ in registry.requests]
    assert ("GET", f"/v2/{REPO}/blobs/{layer}") not in [(m, p) for m, p, _ in registry.requests], (
        "HEAD only: cheap"
    )


def test_a_missing_layer_blob_is_registry_blob_missing(registry: FakeRegistry) -> None:
    digest, doc = _tagged_image(registry)
    layer = doc["layers"][0]["digest"]
    del registry.routes[f"/v2/{REPO}/blobs/{layer}"]
    code, out, stderr = check(registry.endpoint)
    assert code == 3, out
    assert out["ok"] is False and out["error"] == "registry-blob-missing" and out["retryable"] is False
    assert out["digest"] == layer != digest and layer in out["detail"]
    assert out["repository"] == REPO and out["tag"] == COMMIT
    assert "docker push" in out["fix"] and layer in out["fix"] and "publish --repair" in out["fix"]
    assert (
        out["manifestDigest"] == digest and out["imageId"] == doc["config"]["digest"]
    )  # for publish --repair
    assert "registry-blob-missing" in stderr


def test_a_missing_layer_under_an_index_names_the_platform_images_layer(registry: FakeRegistry) -> None:
    amd, _, amd_size = registry.image(arch="amd64", media=OCI_MANIFEST)
    amd_doc = json.loads(registry.routes[f"/v2/{REPO}/manifests/{amd}"][2])
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd,
                "size": amd_size,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    registry.manifest(index, OCI_INDEX, tag=COMMIT)
    layer = amd_doc["layers"][0]["digest"]
    del registry.routes[f"/v2/{REPO}/blobs/{layer}"]
    code, out, _ = check(registry.endpoint)
    assert code == 3 and out["error"] == "registry-blob-missing" and out["digest"] == layer, out


def test_a_layer_head_answering_5xx_stays_a_retryable_registry_error(registry: FakeRegistry) -> None:
    _, doc = _tagged_image(registry)
    layer = doc["layers"][0]["digest"]
    registry.routes[f"/v2/{REPO}/blobs/{layer}"] = (503, "application/json", b"{}", {})
    code, out, _ = check(registry.endpoint)
    assert code == 4 and out["error"] == "registry-error" and out["retryable"] is True, out


def test_the_layer_heads_lose_the_registry_is_registry_unreachable(registry: FakeRegistry) -> None:
    """The layer HEAD's transport failure: the blob route closes the connection without an answer."""
    _, doc = _tagged_image(registry)
    layer = doc["layers"][0]["digest"]
    registry.routes[f"/v2/{REPO}/blobs/{layer}"] = (0, "", b"", {})  # status 0: drop the connection
    code, out, _ = check(registry.endpoint)
    assert code == 4 and out["error"] == "registry-unreachable" and out["retryable"] is True, out


def test_layer_digests_skip_what_the_registry_never_holds() -> None:
    from artifact_cd.scripts.py import manifest

    doc = {
        "schemaVersion": 2,
        "config": {"digest": "sha256:" + "c" * 64},
        "layers": [
            {"digest": "sha256:" + "1" * 64},
            "not a layer",
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": "sha256:" + "f" * 64,
            },
            {
                "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": "sha256:" + "e" * 64,
            },
            {"digest": "sha256:" + "2" * 64},
        ],
    }
    assert manifest.layer_digests(doc) == ("layers", "sha256:" + "1" * 64, "sha256:" + "2" * 64)
    assert manifest.layer_digests({"schemaVersion": 2, "config": {}}) == ("layers",)
    assert manifest.layer_digests({"schemaVersion": 2, "manifests": []}) == ("error", "not an image manifest")


def test_a_config_blob_that_does_not_hash_to_its_digest_is_registry_blob_corrupt(
    registry: FakeRegistry,
) -> None:
    digest, doc = _tagged_image(registry)
    config = doc["config"]["digest"]
    status, media, _, extra = registry.routes[f"/v2/{REPO}/blobs/{config}"]
    registry.routes[f"/v2/{REPO}/blobs/{config}"] = (status, media, b'{"os":"linux","tampered":1}', extra)
    code, out, _ = check(registry.endpoint)
    assert code == 3 and out["error"] == "registry-blob-corrupt" and out["retryable"] is False, out
    assert out["digest"] == config == out["imageId"] and out["manifestDigest"] == digest
    assert "publish --repair" in out["fix"]


# --------------------------------------------------------------------------- move-image.sh (issue 12)
# local mode against the fake registry and a fake docker whose pull fails as the real one does;
# the free bytes are the real `df` figure of a temporary "Docker data root".

FAKE_DOCKER = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1" in
  version) echo 20.10.24 ;;
  info) echo "$FAKE_ROOT" ;;
  image)
    case "$2" in
      ls) printf '%s\\n' "${FAKE_IMAGES:-}" ;;
      inspect) [[ -n ${FAKE_LAYERS:-} && $* == *RootFS* ]] || exit 1; printf '%s\\n' $FAKE_LAYERS ;;
      *) exit 1 ;;
    esac ;;
  pull) printf '%s\\n' "$FAKE_PULL_OUT"; exit 1 ;;
  load) cat >/dev/null; printf '%s\\n' "$FAKE_PULL_OUT" >&2; exit 1 ;;
  *) exit 1 ;;
esac
"""
FAKE_SSH = """#!/bin/bash
# the D601 side of stream mode: a tar's worth of bytes on stdout
head -c 70000 /dev/zero
"""


@dataclass
class Mover:
    registry: FakeRegistry
    env: dict[str, str]
    log: Any
    root: str

    def run(
        self, digest: str, image_id: str, *extra: str, pull_out: str = "", mode: str = "local", **env: str
    ) -> tuple[int, dict[str, Any]]:
        args = ["--mode", mode, "--registry", self.registry.endpoint, "--repository", REPO, "--tag", COMMIT,
                "--digest", digest, "--image-id", image_id, *extra]  # fmt: skip
        proc = subprocess.run(
            [BASH, "-c", command_line(args)],
            input=script_text("move-image.sh"),
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env, "FAKE_PULL_OUT": pull_out, **env},
            check=False,
        )
        return proc.returncode, StepResult.parse(proc.stdout, "move-image.sh").data

    def calls(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]


@pytest.fixture
def mover(registry: FakeRegistry, tmp_path: Any) -> Mover:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    root = tmp_path / "docker-root"
    root.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "FAKE_LOG": str(log),
        "FAKE_ROOT": str(root),
        "TMPDIR": str(tmp_path),
    }
    return Mover(registry, env, log, str(root))


def free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


def test_move_refuses_before_the_pull_when_the_image_does_not_fit(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    free = free_bytes(mover.root)
    code, out = mover.run(digest, doc["config"]["digest"], "--reserve-bytes", str(free + 2**30))
    assert code == 3 and out["error"] == "disk-full" and out["retryable"] is False, out
    image_bytes = doc["config"]["size"] + sum(layer["size"] for layer in doc["layers"])
    assert out["bytesNeeded"] == image_bytes + free + 2**30 and out["reserveBytes"] == free + 2**30
    assert abs(out["bytesFree"] - free) < 2**30 and out["path"] == mover.root and out["host"]
    assert "pull" not in mover.calls(), "refused before the pull"


def test_move_with_room_to_spare_pulls(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    code, out = mover.run(digest, doc["config"]["digest"], "--reserve-bytes", "0", pull_out="some failure")
    assert "pull" in mover.calls()
    assert code == 4 and out["error"] == "transfer-failed" and out["retryable"] is True, out


def test_enospc_during_the_pull_is_disk_full(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    code, out = mover.run(
        digest, doc["config"]["digest"],
        pull_out="failed to register layer: write /var/lib/docker/overlay2/x/diff/pad.bin: no space left on device",
    )  # fmt: skip
    assert code == 3 and out["error"] == "disk-full" and out["retryable"] is False, out
    assert out["path"] == mover.root and "no space left on device" in out["detail"]


def test_a_verification_failure_is_registry_blob_corrupt_naming_the_layer(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    layer = doc["layers"][0]["digest"]
    code, out = mover.run(
        digest, doc["config"]["digest"],
        pull_out=f"{mover.registry.endpoint}/{REPO}@{digest}: Pulling from {REPO}\nfilesystem layer verification failed for digest {layer}",
    )  # fmt: skip
    assert code == 3 and out["error"] == "registry-blob-corrupt" and out["retryable"] is False, out
    assert out["digest"] == layer != digest and "publish --repair" in out["fix"] and COMMIT in out["fix"]


def test_an_unknown_blob_is_registry_blob_missing_naming_the_404_layer(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    layer = doc["layers"][0]["digest"]
    del mover.registry.routes[f"/v2/{REPO}/blobs/{layer}"]
    code, out = mover.run(digest, doc["config"]["digest"], pull_out="unknown blob")
    assert code == 3 and out["error"] == "registry-blob-missing" and out["retryable"] is False, out
    assert out["digest"] == layer


@pytest.mark.parametrize("value", ["-1", "1e9", "12 ", "9999999999999999999"])
def test_reserve_bytes_must_be_a_byte_count(mover: Mover, value: str) -> None:
    digest, doc = _tagged_image(mover.registry)
    code, out = mover.run(digest, doc["config"]["digest"], "--reserve-bytes", value)
    assert code == 2 and out["error"] == "invalid-argument" and out["argument"] == "--reserve-bytes", out
    assert mover.calls() == [], "refused before docker is asked anything"


# --------------------------------------------------------------------------- registry-blob-drop.sh / -verify.sh (issue 12)
# the fake registry answers the API; a temporary directory is the registry's filesystem storage


def store(storage: Any, data: bytes, digest: str | None = None) -> Any:
    """Write a blob data file under its digest (``digest``: another name, i.e. corrupt content)."""
    hexpart = (digest or sha(data)).split(":", 1)[1]
    path = storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run(name: str, args: list[str]) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [BASH, "-c", command_line(args)],
        input=script_text(name),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, StepResult.parse(proc.stdout, name).data


@dataclass
class Stored:
    registry: FakeRegistry
    storage: Any
    digest: str  # the tag's manifest digest
    doc: dict[str, Any]
    layer: str

    def drop(self, digest: str, manifest_digest: str | None = None) -> tuple[int, dict[str, Any]]:
        return run("registry-blob-drop.sh", [
            "--registry", self.registry.endpoint, "--repository", REPO, "--tag", COMMIT, "--digest", digest,
            "--manifest-digest", manifest_digest or self.digest, "--storage", str(self.storage),
            "--container", REGISTRY_CONTAINER])  # fmt: skip

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.storage)) for p in self.storage.rglob("*") if p.is_file())


@pytest.fixture
def stored(registry: FakeRegistry, tmp_path: Any) -> Stored:
    digest, doc = _tagged_image(registry)
    storage = tmp_path / "registry-storage"
    layer = doc["layers"][0]["digest"]
    store(storage, b"layer-amd64")  # the layer (FakeRegistry.image's content), intact
    return Stored(registry, storage, digest, doc, layer)


def test_drop_removes_exactly_the_corrupt_blob_of_the_named_image(stored: Stored) -> None:
    path = store(stored.storage, b"not the layer", stored.layer)
    other = store(stored.storage, b"another image's blob")
    code, out = stored.drop(stored.layer)
    assert code == 0 and out["dropped"] is True and out["blobKind"] == "layer", out
    assert not path.exists() and path.parent.is_dir() and other.exists()
    assert out["actual"] == sha(b"not the layer") and out["manifestDigest"] == stored.digest
    again = stored.drop(stored.layer)
    assert again[0] == 0 and again[1]["dropped"] is False and again[1]["state"] == "absent"


def test_drop_refuses_an_intact_blob(stored: Stored) -> None:
    before = stored.files()
    code, out = stored.drop(stored.layer)
    assert code == 3 and out["error"] == "blob-intact", out
    assert stored.files() == before


def test_drop_refuses_a_blob_of_another_image(stored: Stored) -> None:
    foreign = sha(b"another image's blob")
    path = store(stored.storage, b"garbage", foreign)  # corrupt, but not part of this commit's image
    code, out = stored.drop(foreign)
    assert code == 3 and out["error"] == "blob-not-referenced", out
    assert path.exists()


def test_drop_refuses_when_the_tag_names_another_manifest(stored: Stored) -> None:
    path = store(stored.storage, b"not the layer", stored.layer)
    code, out = stored.drop(stored.layer, manifest_digest=DIGEST_OTHER)
    assert code == 3 and out["error"] == "manifest-changed" and out["manifestDigest"] == stored.digest, out
    assert path.exists()


def test_drop_refuses_a_symlinked_blob(stored: Stored, tmp_path: Any) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the layer")
    hexpart = stored.layer.split(":", 1)[1]
    link = stored.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    link.unlink()
    link.symlink_to(outside)
    code, out = stored.drop(stored.layer)
    assert code == 3 and out["error"] == "blob-path-refused", out
    assert outside.exists() and link.is_symlink()


def test_drop_of_a_commit_not_in_the_registry_is_manifest_missing(stored: Stored) -> None:
    del stored.registry.routes[f"/v2/{REPO}/manifests/{COMMIT}"]
    path = store(stored.storage, b"not the layer", stored.layer)
    code, out = stored.drop(stored.layer)
    assert code == 3 and out["error"] == "manifest-missing", out
    assert path.exists()


@pytest.mark.parametrize("slot", [5, 7, 9, 11, 13])
def test_drop_validates_every_argument(stored: Stored, slot: int) -> None:
    args = ["--registry", stored.registry.endpoint, "--repository", REPO, "--tag", COMMIT, "--digest", stored.layer,
            "--manifest-digest", stored.digest, "--storage", str(stored.storage),
            "--container", REGISTRY_CONTAINER]  # fmt: skip
    args[slot] = "../etc;id"
    code, out = run("registry-blob-drop.sh", args)
    assert code == 2 and out["error"] == "invalid-argument", out


def test_verify_names_the_corrupt_blob_and_the_tag_that_uses_it(stored: Stored) -> None:
    store(stored.storage, b"not the layer", stored.layer)
    manifest_body = stored.registry.routes[f"/v2/{REPO}/manifests/{stored.digest}"][2]
    store(stored.storage, manifest_body)
    repo_dir = stored.storage / "docker/registry/v2/repositories" / REPO
    tag_link = repo_dir / "_manifests/tags" / COMMIT / "current/link"
    tag_link.parent.mkdir(parents=True)
    tag_link.write_text(stored.digest)
    layer_link = repo_dir / "_layers/sha256" / stored.layer.split(":", 1)[1] / "link"
    layer_link.parent.mkdir(parents=True)
    layer_link.write_text(stored.layer)
    code, out = run(
        "registry-blob-verify.sh",
        ["--storage", str(stored.storage), "--budget-seconds", "10", "--budget-bytes", "1000000"],
    )
    assert code == 0 and out["probe"] == "registry-blob-verify", out
    assert (out["totalBlobs"], out["checkedBlobs"], out["complete"]) == (2, 2, True)
    assert [c["digest"] for c in out["corrupt"]] == [stored.layer]
    assert out["corrupt"][0]["usedBy"] == [{"repository": REPO, "tag": COMMIT, "as": "blob"}]


def test_verify_stops_at_the_byte_budget_and_says_so(stored: Stored) -> None:
    for i in range(3):
        store(stored.storage, bytes([i]) * 100)
    code, out = run(
        "registry-blob-verify.sh",
        ["--storage", str(stored.storage), "--budget-seconds", "10", "--budget-bytes", "150"],
    )
    assert code == 0 and out["totalBlobs"] == 4, out
    assert out["checkedBlobs"] < 4 and out["checkedBytes"] <= 150 and out["complete"] is False
    assert out["stoppedBy"] == "bytes" and out["corrupt"] == []


@pytest.mark.parametrize(
    ("flag", "value"), [("--budget-seconds", "0"), ("--budget-bytes", "-1"), ("--storage", "relative")]
)
def test_verify_validates_its_budget(stored: Stored, flag: str, value: str) -> None:
    args = {"--storage": str(stored.storage), "--budget-seconds": "10", "--budget-bytes": "100"} | {
        flag: value
    }
    code, out = run("registry-blob-verify.sh", [a for pair in args.items() for a in pair])
    assert code == 2 and out["error"] == "invalid-argument" and out["argument"] == flag, out


def test_drop_with_the_registry_down_is_retryable_and_drops_nothing(stored: Stored) -> None:
    path = store(stored.storage, b"not the layer", stored.layer)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    code, out = run("registry-blob-drop.sh", [
        "--registry", closed, "--repository", REPO, "--tag", COMMIT, "--digest", stored.layer,
        "--manifest-digest", stored.digest, "--storage", str(stored.storage),
        "--container", REGISTRY_CONTAINER])  # fmt: skip
    assert code == 4 and out["error"] == "registry-unreachable" and out["retryable"] is True, out
    assert path.exists()


REGISTRY_CONTAINER = "unidesk-artifact-registry"

# A fake docker for the user who may not write the storage: `container inspect` answers FAKE_INSPECT
# (running|mount source; unset: no such container), `exec` records its argv and exits FAKE_EXEC_RC.
FAKE_CONTAINER_DOCKER = """#!/bin/bash
case "$1 $2" in
  "container inspect") [[ -n ${FAKE_INSPECT:-} ]] || exit 1; printf '%s\\n' "$FAKE_INSPECT"; exit 0 ;;
  "exec $FAKE_CONTAINER") printf '%s\\n' "$*" >> "$FAKE_LOG"; exit "${FAKE_EXEC_RC:-0}" ;;
esac
exit 1
"""


@pytest.mark.parametrize(
    ("inspect", "exec_rc", "why"),
    [
        (None, 0, "no container unidesk-artifact-registry"),
        ("false|{storage}", 0, "is not running"),
        ("true|/elsewhere", 0, "does not mount"),
        ("true|", 0, "does not mount"),
        ("true|{storage}", 1, "docker exec unidesk-artifact-registry rm failed"),
        ("true|{storage}", 0, "still there"),  # the fake exec removes nothing: the host check sees it
        ("nodocker", 0, "docker is not installed"),
    ],
)
def test_drop_by_a_user_who_may_not_write_the_storage_goes_through_the_registry_container_or_names_the_fix(
    registry: FakeRegistry, inspect: str | None, exec_rc: int, why: str
) -> None:
    """The registry writes its blobs as root; a non-root SSH user (here uid 65534) may not remove
    one. The drop then asks the registry's own container -- only while it runs and mounts exactly
    the checked storage at /var/lib/registry -- and proves the file gone on the host. Every way that
    fails is infra-blocked naming why, the file and the manual fix; nothing is dropped. (The
    container's successful removal runs on the rig: tests/integration/test_publish_rig.py.)"""
    digest, doc = _tagged_image(registry)
    layer = doc["layers"][0]["digest"]
    base = Path(tempfile.mkdtemp(prefix="unidesk-drop-"))
    try:
        base.chmod(0o755)
        storage = base / "registry-storage"
        path = store(storage, b"not the layer", layer)  # root-owned, 0755 dirs: readable, not writable
        bindir = base / "bin"
        bindir.mkdir(mode=0o755)
        log = base / "docker.log"
        log.touch(mode=0o666)
        log.chmod(0o666)
        if inspect != "nodocker":
            (bindir / "docker").write_text(FAKE_CONTAINER_DOCKER)
            (bindir / "docker").chmod(0o755)
            path_dirs = f"{bindir}:/usr/bin:/bin"
        else:  # this machine's tools without any docker
            nodocker = base / "nodocker"
            nodocker.mkdir(mode=0o755)
            for tool in Path("/usr/bin").iterdir():
                if not tool.name.startswith("docker"):
                    (nodocker / tool.name).symlink_to(tool)
            path_dirs = str(nodocker)
        args = ["--registry", registry.endpoint, "--repository", REPO, "--tag", COMMIT, "--digest", layer,
                "--manifest-digest", digest, "--storage", str(storage), "--container", REGISTRY_CONTAINER]  # fmt: skip
        env = {"PATH": path_dirs, "HOME": "/nonexistent", "FAKE_LOG": str(log),
               "FAKE_CONTAINER": REGISTRY_CONTAINER, "FAKE_EXEC_RC": str(exec_rc)}  # fmt: skip
        if inspect not in (None, "nodocker"):
            env["FAKE_INSPECT"] = inspect.format(storage=storage)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BASH, "-c", command_line(args)],
            input=script_text("registry-blob-drop.sh"), capture_output=True, text=True, timeout=60, check=False,
            env=env,
        )  # fmt: skip
        out = StepResult.parse(proc.stdout, "registry-blob-drop.sh").data
        assert proc.returncode == 5 and out["error"] == "infra-blocked", (out, proc.stderr)
        assert why in out["detail"], out["detail"]
        assert (
            out["channel"] == "registry-storage"
            and str(path) in out["fix"]
            and "publish --repair" in out["fix"]
        )
        assert path.exists()
        calls = log.read_text().splitlines()
        tried = inspect is not None and inspect.startswith("true|") and inspect != "true|" and "elsewhere" not in inspect
        rel = f"{layer.removeprefix('sha256:')[:2]}/{layer.removeprefix('sha256:')}"
        want = f"exec {REGISTRY_CONTAINER} rm -f -- /var/lib/registry/docker/registry/v2/blobs/sha256/{rel}/data"
        assert calls == ([want] if tried else [])  # exactly that file, and only through a checked container
    finally:
        shutil.rmtree(base)


def test_a_full_tmpdir_is_disk_full_before_anything_moves(mover: Mover, tmp_path: Path) -> None:
    """TMPDIR on a full filesystem (a 16 KiB tmpfs, filled, in a mount namespace of its own)."""
    digest, doc = _tagged_image(mover.registry)
    full = tmp_path / "full-tmp"
    full.mkdir()
    args = ["--mode", "local", "--registry", mover.registry.endpoint, "--repository", REPO, "--tag", COMMIT,
            "--digest", digest, "--image-id", doc["config"]["digest"]]  # fmt: skip
    wrapper = 'mount -t tmpfs -o size=16k tmpfs "$1" && { head -c 16384 /dev/zero > "$1/fill" || true; } && TMPDIR="$1" exec bash -c "$2"'
    proc = subprocess.run(
        ["unshare", "-m", BASH, "-c", wrapper, "wrapper", str(full), command_line(args)],
        input=script_text("move-image.sh"), capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in mover.env.items() if k != "TMPDIR"},
    )  # fmt: skip
    out = StepResult.parse(proc.stdout, "move-image.sh").data
    assert proc.returncode == 3 and out["error"] == "disk-full" and out["retryable"] is False, (
        out,
        proc.stderr,
    )
    assert out["path"] == str(full) and out["bytesFree"] == 0 and out["filesystem"] == "tmpfs"
    assert "pull" not in mover.calls()


def test_enospc_in_the_stream_load_is_disk_full(mover: Mover) -> None:
    digest, doc = _tagged_image(mover.registry)
    code, out = mover.run(
        digest, doc["config"]["digest"], "--d601", "root@d601", "--d601-port", "22", mode="stream",
        pull_out="Error processing tar file(exit status 1): write /var/lib/docker/tmp/x: no space left on device",
    )  # fmt: skip
    assert code == 3 and out["error"] == "disk-full" and out["retryable"] is False, out
    assert out["path"] == mover.root and "no space left on device" in out["detail"]
    assert "load" in mover.calls()


def test_the_disk_pre_check_counts_only_the_layers_this_host_does_not_hold(mover: Mover) -> None:
    """Layer i is the config's rootfs.diff_ids[i]; a diff ID some local image has needs no room."""
    base_layer, own_layer = b"base layer bytes" * 100, b"own layer"
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {}},
                         "rootfs": {"type": "layers", "diff_ids": [DIFF_BASE, DIFF_OWN]}}).encode()  # fmt: skip
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": mover.registry.blob(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": mover.registry.blob(layer)} for layer in (base_layer, own_layer)],
    }  # fmt: skip
    digest, _ = mover.registry.manifest(doc, DOCKER_MANIFEST)
    free = free_bytes(mover.root)
    held = {"FAKE_IMAGES": "sha256:" + "e" * 64, "FAKE_LAYERS": DIFF_BASE}
    code, out = mover.run(digest, doc["config"]["digest"], "--reserve-bytes", str(free + 2**30), **held)
    assert code == 3 and out["error"] == "disk-full", out
    assert out["bytesNeeded"] == len(config) + len(own_layer) + free + 2**30, (
        "the held base layer needs no room"
    )
    assert (out["layersMissing"], out["layers"]) == (1, 2)
    code, out = mover.run(digest, doc["config"]["digest"], "--reserve-bytes", str(free + 2**30))
    assert out["bytesNeeded"] == len(config) + len(base_layer) + len(own_layer) + free + 2**30
    assert (out["layersMissing"], out["layers"]) == (2, 2)


# --------------------------------------------------------------------------- move-image.sh: D601's pinned key (issue 11)

PINNED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedPinnedPinnedPinnedPinnedPinnedPinnedPin"
# OpenSSH refusing the hop: the known_hosts it was given is kept for the test, the refusal goes to
# the -E log as the real client writes it
REFUSING_SSH = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_SSH_ARGV"
log=/dev/stderr
while (($#)); do
  case $1 in
    -E) log=$2; shift ;;
    -o) [[ $2 != UserKnownHostsFile=* ]] || cp -- "${2#UserKnownHostsFile=}" "$FAKE_SSH_KH"; shift ;;
  esac
  shift
done
printf '%s\\n' '@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@' \\
  '@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @' 'Host key verification failed.' >> "$log"
exit 255
"""


@pytest.mark.parametrize("mode", ["tunnel", "stream"])
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_the_hop_to_d601_trusts_only_the_pinned_key(
    mover: Mover, tmp_path: Path, mode: str, pinned: bool
) -> None:
    """R23 / issue 11 (4): with --d601-host-key the hop's first options are a private known_hosts with
    only that key (alias unidesk-d601) and StrictHostKeyChecking=yes; D601 showing another key is
    host-key-mismatch (5, not retryable) naming the hostkeys verb, nothing moved, the temp dir gone.
    Without a pin the same refusal stays infra-blocked (the master's own known_hosts decided)."""
    (tmp_path / "bin" / "ssh").write_text(REFUSING_SSH)
    argv_file, kh_copy = tmp_path / "ssh.argv", tmp_path / "kh.copy"
    digest, doc = _tagged_image(mover.registry)
    extra = ["--d601", "ubuntu@d601", "--d601-port", "22", *(["--d601-host-key", PINNED] if pinned else [])]
    code, out = mover.run(
        digest,
        doc["config"]["digest"],
        *extra,
        mode=mode,
        FAKE_SSH_ARGV=str(argv_file),
        FAKE_SSH_KH=str(kh_copy),
    )
    assert code == 5 and out["retryable"] is False and out["channel"] == "ssh-d601", out
    argv = argv_file.read_text().splitlines()
    if pinned:
        assert out["error"] == "host-key-mismatch" and PINNED in out["detail"], out
        assert "python -m artifact_cd hostkeys --stack" in out["fix"]
        assert kh_copy.read_text() == f"unidesk-d601 {PINNED}\n"
        options = [argv[i + 1] for i in range(0, 10, 2)]
        assert argv[0:10:2] == ["-o"] * 5, argv
        assert options[0].startswith("UserKnownHostsFile=") and options[1:] == [
            "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "HostKeyAlias=unidesk-d601",
            "CheckHostIP=no",
        ]  # fmt: skip
    else:
        assert out["error"] == "infra-blocked" and not kh_copy.exists(), out
        assert not any(a.startswith(("UserKnownHostsFile=", "HostKeyAlias=")) for a in argv)
    assert not {"pull", "tag"} & set(mover.calls()), "nothing pulled or tagged (stream's load got no bytes)"
    assert list(tmp_path.glob("unidesk-cd.*")) == [], "the temp dir (and the pinned known_hosts) is removed"


@pytest.mark.parametrize(
    "value",
    ["ssh-ed25519", "ssh-dss AAAAB3Nza", "ssh-ed25519 AAAA;id", "ssh-ed25519 AAAA\nx", "ssh-ed25519  AAAA"],
)
def test_a_d601_host_key_that_is_not_a_public_key_is_refused_before_use(mover: Mover, value: str) -> None:
    digest, doc = _tagged_image(mover.registry)
    extra = ["--d601", "ubuntu@d601", "--d601-port", "22", "--d601-host-key", value]
    code, out = mover.run(digest, doc["config"]["digest"], *extra, mode="stream")
    assert code == 2 and out["error"] == "invalid-argument" and out["argument"] == "--d601-host-key", out
    assert mover.calls() == []
