"""pulled.py: what a ``docker pull`` actually downloaded, from its log and the image manifest.

    python3 -c "$PULLED_PY" MANIFEST_FILE PULL_LOG -> "<layer bytes> <layers pulled> <layers present>"
    python3 -c "$PULLED_PY" missing MANIFEST_FILE CONFIG_FILE PRESENT_FILE
        -> "<bytes needed> <layers missing> <layers>"

Layer bytes are the registry sizes of the layers the log reports as pulled or downloaded (plus the
config blob when the image was new); move-image.sh reports them next to the bytes that crossed.

``missing`` is the disk pre-check's figure (issue 12): the config blob's size plus the registry
sizes of the layers this host does not hold yet. Layer i of the manifest is the config's
``rootfs.diff_ids[i]``; PRESENT_FILE lists the diff IDs of every local image (``docker image
inspect`` RootFS.Layers), one a line. Without a usable config every layer counts as missing.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

PULLED = re.compile(r"^([0-9a-f]{12}): (?:Pull complete|Download complete)", re.M)
PRESENT = re.compile(r"^([0-9a-f]{12}): Already exists", re.M)


def layer_counts(manifest: Mapping[str, Any], log: str) -> tuple[int, int, int]:
    """(bytes of the layers pulled, how many were pulled, how many were already present)."""
    done = set(PULLED.findall(log))
    layers = manifest.get("layers") or []
    total = sum(int(layer.get("size", 0)) for layer in layers if str(layer.get("digest", ""))[7:19] in done)
    if "Downloaded newer image" in log:
        total += int((manifest.get("config") or {}).get("size", 0))
    return total, len(done), len(set(PRESENT.findall(log)))


def missing_bytes(
    manifest: Mapping[str, Any], config: Mapping[str, Any], present: set[str]
) -> tuple[int, int, int]:
    """(config size + sizes of the layers whose diff ID is not present, their count, all layers)."""
    layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict)]
    rootfs = config.get("rootfs") if isinstance(config.get("rootfs"), dict) else {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        diff_ids = [None] * len(layers)
    needed = int((manifest.get("config") or {}).get("size", 0))
    count = 0
    for layer, diff_id in zip(layers, diff_ids):
        if diff_id is None or diff_id not in present:
            needed += int(layer.get("size", 0))
            count += 1
    return needed, count, len(layers)


def _json(path: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["missing"]:
        with open(argv[3], encoding="utf-8", errors="replace") as fh:
            present = {line.strip() for line in fh if line.strip()}
        print(*missing_bytes(_json(argv[1]), _json(argv[2]), present))
        return 0
    with open(argv[0], "rb") as fh:
        manifest = json.load(fh)
    with open(argv[1], encoding="utf-8", errors="replace") as fh:
        log = fh.read()
    print(*layer_counts(manifest, log))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
