"""Registry integrity on the real rig (issue 12): the manifest check proves every layer blob exists;
the move step names a corrupt or missing blob and a full disk (not a retryable transfer failure).

A throwaway commit is published to D601's registry; the blob of its last layer (``COPY build/``,
which holds the commit and so belongs to no other image) is moved out of the registry storage
(``RegistryConfig.storage_path``, ``docker/registry/v2/blobs/sha256/<xx>/<hex>/data``). The real
CNCF distribution then answers HEAD 404 for it while the manifest and config still resolve, and
``manifest-check.sh`` must say ``registry-blob-missing`` (exit 3, not retryable) naming that digest.
The check is read-only: no container or image changes on either host. The blob is moved back
afterwards (and the check passes again), so later tests see the registry as it was.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from artifact_cd import catalog
from artifact_cd.contract import ManifestCheckArgs, MoveImageArgs
from tests.rig import Host, Rig
from tests.rig.images import fetch_manifest

pytestmark = pytest.mark.integration

SERVICE = "oa-event-flow"
STORAGE = Rig.registry_config().storage_path  # the rig stack config's registry storage on D601
HEAD_STATUS = 'curl -sS -I -o /dev/null -w "%{http_code}" --max-time 10 "http://$1/v2/$2/blobs/$3"'


def _repository() -> str:
    entry = catalog.get(SERVICE)
    assert entry is not None
    return entry.repository


def blob_data(digest: str) -> str:
    hexpart = digest.split(":", 1)[1]
    return f"{STORAGE}/docker/registry/v2/blobs/sha256/{hexpart[:2]}/{hexpart}/data"


def head_status(rig: Rig, repository: str, digest: str) -> str:
    return rig.d601.sh(HEAD_STATUS, rig.registry, repository, digest).stdout.strip()


def target_state(h: Host) -> str:
    """Containers (ID, image, state) and image IDs: what a deploy step would change."""
    return h.sh(
        "docker ps -a --no-trunc --format '{{.ID}} {{.Image}} {{.State}}' | sort; echo --; "
        "docker image ls -q --no-trunc | sort -u"
    ).stdout


@pytest.fixture
def throwaway(rig: Rig) -> Iterator[tuple[str, str]]:
    """(commit, digest of its own last layer), the blob moved back after the test."""
    commit = secrets.token_hex(20)
    rig.publish_test_image(SERVICE, commit)
    manifest = json.loads(fetch_manifest(rig.d601, rig.registry, _repository(), commit))
    layer = str(manifest["layers"][-1]["digest"])
    data = blob_data(layer)
    assert rig.d601.sh('test -f "$1" && echo yes', data, check=False).stdout.strip() == "yes", data
    try:
        yield commit, layer
    finally:
        rig.d601.sh('[ -e "$1" ] || mv -- "$1.rig-aside" "$1"', data)


def check(rig: Rig, commit: str) -> dict[str, object]:
    result = rig.d601.run_call(
        ManifestCheckArgs(registry=rig.registry, repository=_repository(), tag=commit), timeout=60
    )
    assert result.json is not None, (result.returncode, result.stdout, result.stderr)
    return {"rc": result.returncode, **result.json}


def test_a_layer_blob_gone_from_storage_is_registry_blob_missing(
    rig: Rig, throwaway: tuple[str, str]
) -> None:
    commit, layer = throwaway
    repository = _repository()
    ok = check(rig, commit)
    assert ok["rc"] == 0 and ok["ok"] is True, ok
    assert head_status(rig, repository, layer) == "200"
    before = {h.name: target_state(h) for h in (rig.d601, rig.master)}

    rig.d601.sh('mv -- "$1" "$1.rig-aside"', blob_data(layer))
    assert head_status(rig, repository, layer) == "404", (
        "the real registry answers HEAD 404 for a blob without data"
    )
    missing = check(rig, commit)
    assert missing["rc"] == 3, missing
    assert (
        missing["ok"] is False
        and missing["error"] == "registry-blob-missing"
        and missing["retryable"] is False
    )
    assert missing["digest"] == layer and layer in str(missing["detail"]) and layer in str(missing["fix"])
    assert missing["tag"] == commit and missing["repository"] == repository

    assert {h.name: target_state(h) for h in (rig.d601, rig.master)} == before, "the check touched a target"

    rig.d601.sh('mv -- "$1.rig-aside" "$1"', blob_data(layer))
    assert head_status(rig, repository, layer) == "200"
    again = check(rig, commit)
    assert again["rc"] == 0 and again["digest"] == ok["digest"], again


# --------------------------------------------------------------------------- the move step (issue 12: 5, 6)

TMP_LEFT = "ls -d /tmp/unidesk-cd.* 2>/dev/null | wc -l"


def corrupt(rig: Rig, digest: str) -> None:
    """Overwrite 16 bytes in the middle of the blob's data file (same size, wrong content); the
    original is kept next to it for :func:`restore`."""
    data = blob_data(digest)
    rig.d601.sh(
        'cp -p -- "$1" "$1.rig-orig"; size=$(stat -c %s -- "$1"); '
        'printf "corrupted-by-rig" | dd of="$1" bs=1 seek=$((size / 2)) conv=notrunc status=none',
        data,
    )


def restore(rig: Rig, digest: str) -> None:
    data = blob_data(digest)
    rig.d601.sh(
        '[ ! -e "$1.rig-orig" ] || mv -f -- "$1.rig-orig" "$1"; [ ! -e "$1.rig-aside" ] || mv -f -- "$1.rig-aside" "$1"',
        data,
    )


@pytest.fixture
def image(rig: Rig) -> Iterator[dict[str, str]]:
    """A throwaway commit: its manifest check facts, its own last layer; the blob restored and the
    image removed from both hosts afterwards."""
    commit = secrets.token_hex(20)
    published = rig.publish_test_image(SERVICE, commit)
    manifest = json.loads(fetch_manifest(rig.d601, rig.registry, _repository(), commit))
    layer = str(manifest["layers"][-1]["digest"])
    facts = {"commit": commit, "layer": layer, "digest": published["digest"], "imageId": published["imageId"]}
    try:
        yield facts
    finally:
        restore(rig, layer)
        for h in (rig.d601, rig.master):
            h.sh(
                'docker image rm -f -- "$1" >/dev/null 2>&1 || true',
                f"{rig.registry}/{_repository()}:{commit}",
            )


def move(rig: Rig, h: Host, facts: dict[str, str], *, reserve_bytes: int | None = None) -> dict[str, object]:
    local = h is rig.d601
    call = MoveImageArgs(
        mode="local" if local else "tunnel", registry=rig.registry, repository=_repository(), tag=facts["commit"],
        digest=facts["digest"], image_id=facts["imageId"], d601=None if local else rig.d601_from_master,
        d601_port=None if local else 22, reserve_bytes=reserve_bytes,
    )  # fmt: skip
    result = h.run_call(call, timeout=300)
    assert result.json is not None, (result.returncode, result.stdout, result.stderr)
    return {"rc": result.returncode, **result.json}


def assert_nothing_moved(rig: Rig, h: Host, facts: dict[str, str]) -> None:
    """No E/R:SHA tag, no image with the commit's ID, no temp dir of the script, no SSH tunnel."""
    assert h.sh("pgrep -f '[s]sh .* -N -L' || true").stdout.strip() == "", "the tunnel was left open"
    ref = f"{rig.registry}/{_repository()}:{facts['commit']}"
    assert (
        h.sh('docker image inspect -- "$1" >/dev/null 2>&1 && echo tagged || echo none', ref).stdout.strip()
        == "none"
    )
    assert (
        h.sh(
            'docker image inspect -- "$1" >/dev/null 2>&1 && echo present || echo none', facts["imageId"]
        ).stdout.strip()
        == "none"
    )
    assert h.sh(TMP_LEFT).stdout.strip() == "0", h.sh("ls -d /tmp/unidesk-cd.*", check=False).stdout


def test_a_corrupt_layer_fails_the_move_as_registry_blob_corrupt(rig: Rig, image: dict[str, str]) -> None:
    """Issue 12 (6): a layer whose content no longer matches its digest: HEAD still answers 200, so
    the manifest check passes; the pull to the master (tunnel; D601 keeps the layer from the build)
    fails and the move says registry-blob-corrupt (exit 3, not
    retryable) with the digest and the repair, leaving nothing tagged; once the blob is good again
    the same move succeeds."""
    corrupt(rig, image["layer"])
    assert check(rig, image["commit"])["rc"] == 0  # existence only: HEAD cannot see content
    failed = move(rig, rig.master, image)
    assert failed["rc"] == 3, failed
    assert failed["error"] == "registry-blob-corrupt" and failed["retryable"] is False, failed
    assert failed["digest"] == image["layer"] and image["layer"] in str(failed["detail"])
    assert "publish --repair" in str(failed["fix"]) and image["commit"] in str(failed["fix"])
    assert_nothing_moved(rig, rig.master, image)

    restore(rig, image["layer"])
    again = move(rig, rig.master, image)
    assert again["rc"] == 0 and again["ok"] is True and again["imageId"] == image["imageId"], again


def test_a_layer_gone_after_the_check_fails_the_move_as_registry_blob_missing(
    rig: Rig, image: dict[str, str]
) -> None:
    """Issue 12 (6): the blob disappears between the manifest check and the pull (master, tunnel):
    registry-blob-missing naming the digest, not transfer-failed; the tunnel is closed, nothing tagged."""
    assert check(rig, image["commit"])["rc"] == 0
    rig.d601.sh('mv -- "$1" "$1.rig-aside"', blob_data(image["layer"]))
    failed = move(rig, rig.master, image)
    assert failed["rc"] == 3, failed
    assert failed["error"] == "registry-blob-missing" and failed["retryable"] is False, failed
    assert failed["digest"] == image["layer"], failed
    assert_nothing_moved(rig, rig.master, image)

    restore(rig, image["layer"])
    again = move(rig, rig.master, image)
    assert again["rc"] == 0 and again["ok"] is True, again


def docker_root_free(h: Host) -> tuple[str, int]:
    root = h.sh("docker info --format '{{.DockerRootDir}}'").stdout.strip()
    free = int(h.sh('df -P -B1 -- "$1" | tail -n 1', root).stdout.split()[3])
    return root, free


def test_a_full_docker_data_root_is_disk_full_before_the_pull(rig: Rig, image: dict[str, str]) -> None:
    """Issue 12 (5): the pre-check compares the real free bytes of the target's Docker data root
    (df) with the image's registry sizes plus --reserve-bytes. The rig's data root is a directory on
    a large shared disk, so "full" is made by reserving the disk's free bytes (the same comparison
    a full disk meets): disk-full, exit 3, not retryable, naming host, path, filesystem and bytes;
    nothing pulled. With a reserve well below the free bytes the same move succeeds."""
    root, free = docker_root_free(rig.master)
    full = move(rig, rig.master, image, reserve_bytes=free + 2**30)
    assert full["rc"] == 3, full
    assert full["error"] == "disk-full" and full["retryable"] is False, full
    assert full["host"] == rig.master.sh("hostname").stdout.strip()
    assert full["path"] == root and full["filesystem"] and full["mountPoint"]
    needed, have = int(str(full["bytesNeeded"])), int(str(full["bytesFree"]))
    assert needed > free + 2**30  # the image's own bytes come on top of the reserve
    assert abs(have - free) < 2**30, (have, free)  # the real figure of that filesystem
    assert root in str(full["detail"]) and str(full["host"]) in str(full["detail"])
    assert_nothing_moved(rig, rig.master, image)

    fits = move(rig, rig.master, image, reserve_bytes=max(0, free - 2**30))
    assert fits["rc"] == 0 and fits["ok"] is True, fits
