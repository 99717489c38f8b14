"""container.py: the facts compose-deploy.sh reads from ``docker inspect <container>``.

    docker inspect C | python3 -c "$CONTAINER_PY" ENV_KEY REVISION_LABEL
        -> found US <id> US <image id> US <status> US <exit code> US <REVISION_LABEL value>
           US <network mode> US <first network IP> US <value of ENV_KEY in the container env>
         | missing US "" ... (no such container)

Of the container env only ENV_KEY (the deploy stamp's ``<PREFIX>COMMIT``) is read: no secret
value ever reaches the output. The label name comes from the script (the contract's constants).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

US = "\x1f"
FIELDS = 9


def fields_line(fields: Sequence[object]) -> str:
    return US.join(str(f).replace(US, " ").replace("\n", " ") for f in fields)


def container_fields(doc: Mapping[str, Any], env_key: str, revision_label: str) -> list[str]:
    config = doc.get("Config") or {}
    prefix = env_key + "="
    env = [e[len(prefix) :] for e in config.get("Env") or [] if e.startswith(prefix)]
    labels = config.get("Labels") or {}
    state = doc.get("State") or {}
    networks = ((doc.get("NetworkSettings") or {}).get("Networks") or {}).values()
    ips = [n.get("IPAddress") for n in networks if isinstance(n, dict) and n.get("IPAddress")]
    return [
        "found",
        doc.get("Id", ""),
        doc.get("Image", ""),
        state.get("Status", ""),
        str(state.get("ExitCode", "")),
        labels.get(revision_label, ""),
        (doc.get("HostConfig") or {}).get("NetworkMode", ""),
        ips[0] if ips else "",
        env[-1] if env else "",
    ]


def read_fields(stream: TextIO, env_key: str, revision_label: str) -> list[str]:
    try:
        doc = json.load(stream)[0]
    except Exception:  # no such container: docker printed [] (or nothing)
        return ["missing"] + [""] * (FIELDS - 1)
    return container_fields(doc, env_key, revision_label)


def main(argv: Sequence[str]) -> int:
    print(fields_line(read_fields(sys.stdin, argv[0], argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
