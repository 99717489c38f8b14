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

    python3 -c "$MANIFEST_PY" referenced REGISTRY REPOSITORY TAG DIGEST MEDIA_TYPE...
        -> config|layer US <manifest digest>   DIGEST is the config or a layer of the tag's image
         | not-referenced US <manifest digest>
         | manifest-missing US <reason>          the tag is not in the registry
         | error US <reason>
    python3 -c "$MANIFEST_PY" verify-storage STORAGE BUDGET_SECONDS BUDGET_BYTES
        -> one JSON line: the registry storage scan (:func:`verify`)

One line of fields separated by US (\\x1f), so empty fields survive bash's ``read``; values never
reach a shell parser. An index entry is chosen for linux/ARCH, else linux/amd64. The label names
and media types come from the script (the contract's generated constants), never from this file.

``referenced`` asks the registry API (GET the tag's manifest; its sha256 must be the digest the
registry names); an index is not resolved (publish --repair handles single-platform images).
``verify-storage`` reads the filesystem storage of the CNCF distribution registry
(``<storage>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data``): the newest blobs first, each hashed
until the time or byte budget is spent; a blob whose sha256 is not its name is corrupt, and the
repository:tag pairs whose image references it are named (``usedBy``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
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


# --------------------------------------------------------------------------- registry blobs (issue 12)

CHUNK = 1 << 20
BLOBS = ("docker", "registry", "v2", "blobs", "sha256")
REPOSITORIES = ("docker", "registry", "v2", "repositories")
MAX_USED_BY = 20


def _line(*fields: object) -> str:
    return fields_line(fields)


def _get(url: str, accept: Sequence[str] = ()) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Accept": ", ".join(accept)} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http://<loopback registry>
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, answer.read(), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, b"", {}


def referenced(registry: str, repository: str, tag: str, digest: str, media_types: Sequence[str]) -> str:
    """Whether ``digest`` is the config or a layer of the image ``repository:tag`` names."""
    base = "http://" + registry + "/v2/" + repository
    try:
        status, body, headers = _get(base + "/manifests/" + tag, media_types)
    except (OSError, ValueError) as error:
        return _line("error", "the registry at " + registry + " did not answer: " + type(error).__name__)
    if status == 404:
        return _line("manifest-missing", repository + ":" + tag + " is not in the registry")
    if status != 200:
        return _line("error", "GET manifest " + repository + ":" + tag + " answered HTTP " + str(status))
    manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    named = headers.get("docker-content-digest", manifest_digest)
    if named != manifest_digest:
        return _line("error", "the manifest of " + tag + " hashes to " + manifest_digest + ", not " + named)
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError:
        return _line("error", "the manifest of " + tag + " is not JSON")
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        return _line("error", "the manifest of " + tag + " is not a single image manifest")
    if config.get("digest") == digest:
        return _line("config", manifest_digest)
    for layer in doc.get("layers") or []:
        if isinstance(layer, dict) and layer.get("digest") == digest:
            return _line("layer", manifest_digest)
    return _line("not-referenced", manifest_digest)


def _sha256_file(path: str, deadline: float) -> str | None:
    """The hex sha256 of ``path``; None when the deadline passed before the end."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
            if time.monotonic() > deadline:
                return None


def _blob_files(storage: str) -> list[tuple[float, int, str, str]]:
    """(mtime, size, hex, path) of every blob data file, newest first."""
    root = os.path.join(storage, *BLOBS)
    found: list[tuple[float, int, str, str]] = []
    try:
        prefixes = sorted(os.listdir(root))
    except OSError:
        return found
    for prefix in prefixes:
        try:
            names = os.listdir(os.path.join(root, prefix))
        except OSError:
            continue
        for name in names:
            path = os.path.join(root, prefix, name, "data")
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (
                len(name) == 64
                and name.startswith(prefix)
                and os.path.isfile(path)
                and not os.path.islink(path)
            ):
                found.append((st.st_mtime, st.st_size, name, path))
    found.sort(key=lambda item: (-item[0], item[2]))
    return found


def _read_link(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(200).strip()
    except OSError:
        return ""


def used_by(storage: str, digest: str) -> list[dict[str, str]]:
    """The repository:tag pairs whose image manifest (as stored) references ``digest``."""
    hexpart = digest.split(":", 1)[1]
    root = os.path.join(storage, *REPOSITORIES)
    out: list[dict[str, str]] = []
    for current, dirs, _ in os.walk(root):
        if "_layers" not in dirs or "_manifests" not in dirs:
            continue
        dirs[:] = [d for d in dirs if not d.startswith("_")]
        repository = os.path.relpath(current, root)
        linked = os.path.exists(os.path.join(current, "_layers", "sha256", hexpart, "link"))
        tags_dir = os.path.join(current, "_manifests", "tags")
        try:
            tags = sorted(os.listdir(tags_dir))
        except OSError:
            continue
        for tag in tags:
            manifest_digest = _read_link(os.path.join(tags_dir, tag, "current", "link"))
            if not manifest_digest.startswith("sha256:"):
                continue
            if manifest_digest == digest:
                out.append({"repository": repository, "tag": tag, "as": "manifest"})
            elif linked:
                mhex = manifest_digest[7:]
                path = os.path.join(storage, *BLOBS, mhex[:2], mhex, "data")
                try:
                    with open(path, "rb") as fh:
                        doc = json.loads(fh.read(4 << 20).decode("utf-8"))
                except (OSError, ValueError):
                    continue
                if not isinstance(doc, dict):
                    continue
                refs = [(doc.get("config") or {}).get("digest")]
                refs += [layer.get("digest") for layer in doc.get("layers") or [] if isinstance(layer, dict)]
                if digest in refs:
                    out.append({"repository": repository, "tag": tag, "as": "blob"})
            if len(out) >= MAX_USED_BY:
                return out
    return out


def verify(storage: str, budget_seconds: float, budget_bytes: int) -> dict[str, Any]:
    """Hash the newest blobs until a budget is spent; name the corrupt ones and who uses them."""
    started = time.monotonic()
    deadline = started + budget_seconds
    files = _blob_files(storage)
    checked = checked_bytes = unreadable = 0
    corrupt: list[dict[str, Any]] = []
    stopped = ""
    for _, size, hexpart, path in files:
        if time.monotonic() > deadline:
            stopped = "time"
            break
        if checked_bytes + size > budget_bytes and checked:
            stopped = "bytes"
            break
        try:
            actual = _sha256_file(path, deadline)
        except OSError:
            unreadable += 1
            continue
        if actual is None:
            stopped = "time"
            break
        checked += 1
        checked_bytes += size
        if actual != hexpart:
            corrupt.append({"digest": "sha256:" + hexpart, "actual": "sha256:" + actual, "bytes": size})
    for entry in corrupt:
        entry["usedBy"] = used_by(storage, str(entry["digest"]))
    return {
        "ok": True,
        "probe": "registry-blob-verify",
        "storage": storage,
        "storageExists": os.path.isdir(os.path.join(storage, *BLOBS)),
        "totalBlobs": len(files),
        "totalBytes": sum(f[1] for f in files),
        "checkedBlobs": checked,
        "checkedBytes": checked_bytes,
        "unreadableBlobs": unreadable,
        "complete": checked + unreadable == len(files),
        "stoppedBy": stopped or None,
        "budgetSeconds": budget_seconds,
        "budgetBytes": budget_bytes,
        "corrupt": corrupt,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["referenced"] and len(argv) >= 5:
        print(referenced(argv[1], argv[2], argv[3], argv[4], argv[5:]))
        return 0
    if argv[:1] == ["verify-storage"] and len(argv) == 4:
        print(json.dumps(verify(argv[1], float(argv[2]), int(argv[3])), separators=(",", ":")))
        return 0
    print(fields_line(parse_file(argv[0], argv[1], argv[2:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
