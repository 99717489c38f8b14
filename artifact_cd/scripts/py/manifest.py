"""manifest.py: read a registry or containerd JSON document for lib.sh's ``manifest_parse``.

    python3 -c "$MANIFEST_PY" manifest FILE [ARCH]
        -> index US <child digest> US <mediaType> US <platform>
         | manifest US <config digest> US <mediaType> US <config size> US <layer count> US <layer bytes>
         | error US <reason>
    python3 -c "$MANIFEST_PY" config FILE [LABEL ...]
        -> config US <os> US <architecture> US <value of each LABEL, "" when absent>
    python3 -c "$MANIFEST_PY" layers FILE
        -> layers US <digest of each layer the registry must hold, in manifest order>
         | error US <reason>

One line of fields separated by US (\\x1f), so empty fields survive bash's ``read``; values never
reach a shell parser. An index entry is chosen for linux/ARCH, else linux/amd64. The label names
come from the script (the contract's generated constants), never from this file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

US = "\x1f"
FALLBACK_ARCH = "amd64"


def fields_line(fields: Sequence[object]) -> str:
    """The US-separated line: a US or newline inside a value becomes a space."""
    return US.join(str(f).replace(US, " ").replace("\n", " ") for f in fields)


def _pick(entries: Sequence[Mapping[str, Any]], arch: str) -> Mapping[str, Any] | None:
    for entry in entries:
        platform = entry["platform"]
        if platform.get("os") == "linux" and platform.get("architecture") == arch:
            return entry
    return None


def manifest_fields(doc: Mapping[str, Any], arch: str = FALLBACK_ARCH) -> tuple[object, ...]:
    """An image manifest, or an index resolved to linux/``arch`` (linux/amd64 fallback)."""
    if doc.get("schemaVersion") != 2:
        return ("error", "schemaVersion is not 2")
    media = doc.get("mediaType") or ""
    if isinstance(doc.get("manifests"), list):
        entries = [m for m in doc["manifests"] if isinstance(m, dict) and isinstance(m.get("platform"), dict)]
        chosen = _pick(entries, arch) or _pick(entries, FALLBACK_ARCH)
        if chosen is None:
            return ("error", "the index has no linux/" + arch + " or linux/" + FALLBACK_ARCH + " entry")
        platform = chosen["platform"]
        variant = "/" + str(platform["variant"]) if platform.get("variant") else ""
        name = "linux/" + str(platform.get("architecture", "")) + variant
        return ("index", chosen.get("digest", ""), media, name)
    config = doc.get("config")
    if isinstance(config, dict):
        layers = [layer for layer in doc.get("layers") or [] if isinstance(layer, dict)]
        total = sum(int(layer.get("size", 0)) for layer in layers)
        return ("manifest", config.get("digest", ""), media, int(config.get("size", 0)), len(layers), total)
    return ("error", "neither an image manifest nor an index")


# Foreign / non-distributable layers (Windows base layers) live at their ``urls``, never in the
# registry: a HEAD there is no proof of anything, so they are not listed.
_NOT_IN_REGISTRY = ("foreign", "nondistributable")


def layer_digests(doc: Mapping[str, Any]) -> tuple[object, ...]:
    """The digests of an image manifest's layers, as written (the script validates each one)."""
    if doc.get("schemaVersion") != 2 or not isinstance(doc.get("config"), dict):
        return ("error", "not an image manifest")
    digests: list[str] = []
    for layer in doc.get("layers") or []:
        if not isinstance(layer, dict):
            continue
        media = str(layer.get("mediaType") or "")
        if any(word in media for word in _NOT_IN_REGISTRY):
            continue
        digests.append(str(layer.get("digest", "")))
    return ("layers", *digests)


def config_fields(doc: Mapping[str, Any], labels: Sequence[str]) -> tuple[object, ...]:
    """An image config blob: os, architecture and the string value of each label asked for."""
    found = (doc.get("config") or {}).get("Labels") or {}
    values = [found.get(name) if isinstance(found.get(name), str) else "" for name in labels]
    return ("config", doc.get("os", ""), doc.get("architecture", ""), *values)


def parse_file(mode: str, path: str, extra: Sequence[str] = ()) -> tuple[object, ...]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except Exception as exc:  # any unreadable document is an answer, not a traceback
        return ("error", "not a JSON document (" + type(exc).__name__ + ")")
    if not isinstance(doc, dict):
        return ("error", "not a JSON object")
    if mode == "manifest":
        return manifest_fields(doc, extra[0] if extra else FALLBACK_ARCH)
    if mode == "config":
        return config_fields(doc, extra)
    if mode == "layers":
        return layer_digests(doc)
    return ("error", "unknown mode")


def main(argv: Sequence[str]) -> int:
    print(fields_line(parse_file(argv[0], argv[1], argv[2:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
