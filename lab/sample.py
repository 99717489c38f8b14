"""The demo's sample service: a git repository as the service's team would keep it.

The image is FROM scratch with busybox-static (no registry on the internet is reached): a tiny
HTTP server answering the catalog's health path with ``{"status": "ok", "deploy": {"commit":
<the commit it was built from>, "requestedCommit": <the commit the deploy asked for>}}``. The
built commit comes in as the build argument ``UNIDESK_SOURCE_COMMIT`` that ``publish`` passes; the
requested one from the env file the deploy writes. ``origin`` is a bare repository beside it, so
that ``publish`` finds the commit pushed, as CI would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from artifact_cd import catalog
from artifact_cd.catalog import ServiceEntry
from tests.git_source import Checkout, git

APPLETS = ("sh", "nc", "cat", "tr", "printf", "env", "sleep", "kill")
BUSYBOX = Path("/bin/busybox")

DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
ARG UNIDESK_SOURCE_COMMIT
ENV PATH=/bin UNIDESK_BUILT_COMMIT=${UNIDESK_SOURCE_COMMIT}
EXPOSE 8080
ENTRYPOINT ["/app/entry.sh"]
"""


def entry_script(entry: ServiceEntry) -> str:
    return f"""\
#!/bin/sh
trap 'kill "$server" 2>/dev/null; exit 0' TERM INT
nc -ll -p {entry.health.port} -e /app/health.sh &
server=$!
wait "$server"
"""


def health_script(entry: ServiceEntry) -> str:
    return f"""\
#!/bin/sh
# GET {entry.health.path} -> {{"status":"ok","deploy":{{"commit":<built>,"requestedCommit":<env>}}}}
read -r method target proto || exit 0
while read -r line; do
  case "$line" in "" | "$(printf '\\r')") break ;; esac
done
requested=$(printf '%s' "${{{entry.compose_env_prefix}COMMIT:-}}" | tr -cd '0-9a-f')
built=$(printf '%s' "${{UNIDESK_BUILT_COMMIT:-}}" | tr -cd '0-9a-f')
if [ "${{target%%\\?*}}" = "{entry.health.path}" ]; then
  body=$(printf '{{"status":"ok","deploy":{{"commit":"%s","requestedCommit":"%s"}}}}' "$built" "$requested")
  status="200 OK"
else
  body='{{"error":"not found"}}'
  status="404 Not Found"
fi
printf 'HTTP/1.1 %s\\r\\nContent-Type: application/json\\r\\n' "$status"
printf 'Content-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' "${{#body}}" "$body"
"""


def create(base: Path, service: str, extra_applets: tuple[str, ...] = ()) -> Checkout:
    """The service's repository in ``base/work`` (``origin`` = ``base/remote.git``), nothing committed.
    ``extra_applets``: more busybox applets in the image (tests/integration/test_publish_rig: wget)."""
    entry = catalog.get(service)
    if entry is None:
        raise ValueError(f"{service} is not in the catalog")
    base.mkdir(parents=True, exist_ok=True)
    checkout = Checkout.init(base)
    rootfs = checkout.path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in (*APPLETS, *extra_applets):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "app").mkdir()
    for name, text in (("entry.sh", entry_script(entry)), ("health.sh", health_script(entry))):
        (rootfs / "app" / name).write_text(text, encoding="utf-8")
        (rootfs / "app" / name).chmod(0o755)
    dockerfile = checkout.path / entry.dockerfile
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(DOCKERFILE, encoding="utf-8")
    return checkout


def commit_and_push(checkout: Checkout, greeting: str, message: str) -> str:
    """Change the service's greeting, commit everything, push; returns the new commit."""
    (checkout.path / "rootfs" / "app" / "greeting").write_text(greeting + "\n", encoding="utf-8")
    git(checkout.path, "add", "-A")
    git(checkout.path, "commit", "-q", "-m", message)
    checkout.push()
    return git(checkout.path, "rev-parse", "HEAD")
