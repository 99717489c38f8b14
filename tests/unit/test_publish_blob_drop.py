"""publish --repair's D601 drop (``SshBlobDropper``): a refusal of registry-blob-drop.sh reaches the
operator with the script's own channel, path and fix (issue 11: as the non-root ``ubuntu`` the
registry's root-owned blob cannot be removed; the fix names the manual removal and the sha256)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from artifact_cd import remote
from artifact_cd.config import HostConfig
from artifact_cd.publish import PublishFailure, SshBlobDropper
from artifact_cd.sshlink import SshSettings

DIGEST = "sha256:" + "a" * 64
MANIFEST = "sha256:" + "b" * 64
DATA = f"/home/ubuntu/.unidesk/registry-storage/docker/registry/v2/blobs/sha256/aa/{'a' * 64}/data"


@dataclass
class Answer:
    returncode: int
    doc: dict[str, Any]
    stderr: str = ""

    @property
    def json(self) -> dict[str, Any]:
        return self.doc


def drop_with(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> PublishFailure:
    monkeypatch.setattr(remote, "run_call", lambda host, call, settings: answer)
    dropper = SshBlobDropper(
        HostConfig(host="d601.example"),
        SshSettings(),
        "/home/ubuntu/.unidesk/registry-storage",
        "unidesk-artifact-registry",
    )
    with pytest.raises(PublishFailure) as caught:
        dropper.drop("127.0.0.1:5000", "unidesk/svc", "c" * 40, DIGEST, MANIFEST)
    return caught.value


def test_a_refused_drop_carries_the_scripts_channel_path_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fix = f"remove the corrupt file by hand after checking it (sudo rm -f -- {DATA}: its sha256 is x, not {DIGEST})"
    failure = drop_with(
        monkeypatch,
        Answer(
            5,
            {
                "ok": False,
                "error": "infra-blocked",
                "detail": "ubuntu may not remove files in the blob dir: nothing was dropped",
                "channel": "registry-storage",
                "path": DATA,
                "fix": fix,
            },
        ),
    )
    doc = failure.as_json()
    assert doc["error"] == "infra-blocked" and doc["channel"] == "registry-storage"
    assert doc["path"] == DATA and doc["fix"] == fix and doc["digest"] == DIGEST
    assert "may not remove" in doc["reason"]


def test_a_drop_failure_without_those_keys_stays_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    failure = drop_with(
        monkeypatch, Answer(3, {"ok": False, "error": "blob-intact", "detail": "intact", "path": 7})
    )
    doc = failure.as_json()
    assert doc["error"] == "blob-intact" and failure.exit_code == 3
    assert "channel" not in doc and "fix" not in doc and "path" not in doc, json.dumps(doc)
