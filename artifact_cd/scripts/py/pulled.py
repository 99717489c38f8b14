"""pulled.py: what a ``docker pull`` actually downloaded, from its log and the image manifest.

    python3 -c "$PULLED_PY" MANIFEST_FILE PULL_LOG -> "<layer bytes> <layers pulled> <layers present>"

Layer bytes are the registry sizes of the layers the log reports as pulled or downloaded (plus the
config blob when the image was new); move-image.sh reports them next to the bytes that crossed.
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


def main(argv: Sequence[str]) -> int:
    with open(argv[0], "rb") as fh:
        manifest = json.load(fh)
    with open(argv[1], encoding="utf-8", errors="replace") as fh:
        log = fh.read()
    print(*layer_counts(manifest, log))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
