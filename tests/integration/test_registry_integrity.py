"""Registry integrity on the real rig (issue 12): the manifest check proves every layer blob exists.

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
from artifact_cd.contract import ManifestCheckArgs
from tests.rig import Host, Rig
from tests.rig.images import fetch_manifest

pytestmark = pytest.mark.integration

SERVICE = "oa-event-flow"
STORAGE = Rig.registry_config().storage_path  # the rig stack config's registry storage on D601
HEAD_STATUS = (
    'curl -sS -I -o /dev/null -w "%{http_code}" --max-time 10 "http://$1/v2/$2/blobs/$3"'
)


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
    result = rig.d601.run_call(ManifestCheckArgs(registry=rig.registry, repository=_repository(), tag=commit), timeout=60)
    assert result.json is not None, (result.returncode, result.stdout, result.stderr)
    return {"rc": result.returncode, **result.json}


def test_a_layer_blob_gone_from_storage_is_registry_blob_missing(rig: Rig, throwaway: tuple[str, str]) -> None:
    commit, layer = throwaway
    repository = _repository()
    ok = check(rig, commit)
    assert ok["rc"] == 0 and ok["ok"] is True, ok
    assert head_status(rig, repository, layer) == "200"
    before = {h.name: target_state(h) for h in (rig.d601, rig.master)}

    rig.d601.sh('mv -- "$1" "$1.rig-aside"', blob_data(layer))
    assert head_status(rig, repository, layer) == "404", "the real registry answers HEAD 404 for a blob without data"
    missing = check(rig, commit)
    assert missing["rc"] == 3, missing
    assert missing["ok"] is False and missing["error"] == "registry-blob-missing" and missing["retryable"] is False
    assert missing["digest"] == layer and layer in str(missing["detail"]) and layer in str(missing["fix"])
    assert missing["tag"] == commit and missing["repository"] == repository

    assert {h.name: target_state(h) for h in (rig.d601, rig.master)} == before, "the check touched a target"

    rig.d601.sh('mv -- "$1.rig-aside" "$1"', blob_data(layer))
    assert head_status(rig, repository, layer) == "200"
    again = check(rig, commit)
    assert again["rc"] == 0 and again["digest"] == ok["digest"], again
