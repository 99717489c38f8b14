"""The master -> D601 hop of the transfer trusts D601's pinned key (issue 11 item 4, R23).

One throwaway commit, moved to the master in tunnel mode (the default transfer) with the plan's
``--d601-host-key``: a key D601 does not show (the master's own) stops the move as
``host-key-mismatch`` before any byte travels (no tag, no image, no tunnel, no temp dir); D601's
real key (the one ``hosts.d601.hostKey`` pins in the rig's stack config) moves it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from artifact_cd import catalog
from artifact_cd.contract import MoveImageArgs
from tests.rig import Rig

pytestmark = pytest.mark.integration

SERVICE = "oa-event-flow"
TMP_LEFT = "ls -d /tmp/unidesk-cd.* 2>/dev/null | wc -l"


def _repository() -> str:
    entry = catalog.get(SERVICE)
    assert entry is not None
    return entry.repository


@pytest.fixture
def image(rig: Rig) -> Iterator[dict[str, str]]:
    commit = secrets.token_hex(20)
    published = rig.publish_test_image(SERVICE, commit)
    try:
        yield {"commit": commit, "digest": published["digest"], "imageId": published["imageId"]}
    finally:
        rig.master.sh(
            'docker image rm -f -- "$1" >/dev/null 2>&1 || true', f"{rig.registry}/{_repository()}:{commit}"
        )


def move(rig: Rig, facts: dict[str, str], host_key: str) -> dict[str, object]:
    call = MoveImageArgs(
        mode="tunnel", registry=rig.registry, repository=_repository(), tag=facts["commit"],
        digest=facts["digest"], image_id=facts["imageId"], d601=rig.d601_from_master, d601_port=22,
        d601_host_key=host_key,
    )  # fmt: skip
    result = rig.master.run_call(call, timeout=300)
    assert result.json is not None, (result.returncode, result.stdout, result.stderr)
    return {"rc": result.returncode, **result.json}


def test_a_wrong_pinned_d601_key_stops_the_move_and_the_right_one_moves_it(
    rig: Rig, image: dict[str, str]
) -> None:
    assert rig.master.host_key and rig.master.host_key != rig.d601.host_key
    refused = move(rig, image, rig.master.host_key)
    assert refused["rc"] == 5 and refused["error"] == "host-key-mismatch", refused
    assert refused["retryable"] is False and "hostkeys --stack" in str(refused["fix"])
    h = rig.master
    assert h.sh("pgrep -f '[s]sh .* -N -L' || true").stdout.strip() == "", "the tunnel was left open"
    ref = f"{rig.registry}/{_repository()}:{image['commit']}"
    for name in (ref, image["imageId"]):
        assert (
            h.sh(
                'docker image inspect -- "$1" >/dev/null 2>&1 && echo present || echo none', name
            ).stdout.strip()
            == "none"
        )
    assert h.sh(TMP_LEFT).stdout.strip() == "0"

    moved = move(rig, image, rig.d601.host_key)
    assert moved["rc"] == 0 and moved["ok"] is True and moved["imageId"] == image["imageId"], moved
    assert h.sh(TMP_LEFT).stdout.strip() == "0"
