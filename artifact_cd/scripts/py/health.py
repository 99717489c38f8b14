"""health.py: the few fields of a service's health body that the deploy scripts compare.

    python3 -c "$HEALTH_PY" FILE
        -> json US deploy.commit US deploy.requestedCommit US status US <5 auth booleans>
         | invalid

Only these fields ever leave the body, each reduced to a safe charset (anything else is
``<other>``); the auth booleans print as true/false/null. ``status`` is ``ok`` when the body has no
status but ``"ok": true``. Used by lib.sh's ``health_fields`` (compose-deploy.sh, k3s-verify.sh).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

US = "\x1f"
SAFE = re.compile(r"[0-9A-Za-z._:-]{0,100}")
AUTH_KEYS = ("configured", "clientIdConfigured", "clientSecretConfigured", "tokenKeyConfigured", "loggedIn")


def safe_text(value: object) -> str:
    if isinstance(value, str) and SAFE.fullmatch(value):
        return value
    return "" if value is None else "<other>"


def json_bool(value: object) -> str:
    return "true" if value is True else ("false" if value is False else "null")


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def health_fields(doc: Mapping[str, Any]) -> list[str]:
    deploy, auth = _section(doc, "deploy"), _section(doc, "auth")
    status = doc.get("status")
    if status is None and doc.get("ok") is True:
        status = "ok"
    commits = [safe_text(deploy.get("commit")), safe_text(deploy.get("requestedCommit"))]
    return ["json", *commits, safe_text(status)] + [json_bool(auth.get(key)) for key in AUTH_KEYS]


def read_fields(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except Exception:  # unreadable or not JSON: the caller retries or fails on "invalid"
        return ["invalid"]
    return health_fields(doc) if isinstance(doc, dict) else ["invalid"]


def main(argv: Sequence[str]) -> int:
    print(US.join(read_fields(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
