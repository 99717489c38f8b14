"""auth.py: the ``auth`` section of a config.json, for read-auth.sh.

python3 -c "$AUTH_PY" CONFIG
    -> exit 0: {"ok":true,"auth":{...},"authSha256":"sha256:<hex of the canonical JSON>"}
     | exit 3: "<code> <why>" with code config-missing, config-unreadable, config-invalid or
       auth-missing (never a byte of the file's content)
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence

FAILED = 3
COMPACT = (",", ":")


def read_auth(path: str) -> tuple[int, str]:
    """(exit code, the one output line)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return FAILED, "config-missing"
    except OSError as exc:
        return FAILED, "config-unreadable " + type(exc).__name__
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return FAILED, "config-invalid not JSON (line {})".format(getattr(exc, "lineno", 0))
    if not isinstance(doc, dict):
        return FAILED, "config-invalid the top level is not an object"
    auth = doc.get("auth")
    if not isinstance(auth, dict):
        return FAILED, "auth-missing " + ("no auth key" if auth is None else "auth is not an object")
    canonical = json.dumps(auth, sort_keys=True, separators=COMPACT, ensure_ascii=False)
    digest = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    answer = {"ok": True, "auth": auth, "authSha256": digest}
    return 0, json.dumps(answer, separators=COMPACT, ensure_ascii=False)


def main(argv: Sequence[str]) -> int:
    code, line = read_auth(argv[0])
    sys.stdout.write(line + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
