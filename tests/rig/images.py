"""Images the rig builds locally (no hub pulls exist here): the registry and the test services.

* ``registry:2.8.3``: FROM scratch with Debian's CNCF distribution binary (``/usr/bin/docker-registry``),
  its two libraries and busybox-static as ``/bin/sh`` (notes: systemd-hosts.md).
* test service images: FROM scratch, busybox-static, a tiny HTTP server (busybox ``nc -ll -e``)
  answering the catalog's health path/port. Layers, bottom-up: busybox (shared by everything),
  optional random pad (shared by all commits of a size), the service+variant app, the per-commit
  build stamp. Hence a redeploy A -> B moves only a tiny top layer.

Every build runs on a host's dockerd through the machine's docker CLI (``DOCKER_HOST`` pointing at
``/proc/<pid>/root/run/docker.sock``) with the legacy builder (``DOCKER_BUILDKIT=0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from artifact_cd import catalog
from artifact_cd.contract import COMMIT_RE, MANIFEST_MEDIA_TYPES

from .host import RigError, run_bytes

if TYPE_CHECKING:
    from .host import Host

REGISTRY_IMAGE = "registry:2.8.3"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "nc", "cat", "tr", "sleep", "env", "printf", "kill", "ls", "wget")
VARIANTS = ("standard", "todo-note", "baidu", "unhealthy", "stale")
STALE_COMMIT = "5ea1e0000000000000000000000000000000dead"  # what the "stale" variant reports
MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES
_ENV_RE = re.compile(r"[A-Z][A-Z0-9_]*")


def docker(host: Host, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "DOCKER_HOST": host.docker_host,
        "DOCKER_BUILDKIT": "0",
        "DOCKER_CLI_HINTS": "false",
    }
    data = subprocess.run(["docker", *args], env=env, capture_output=True, timeout=timeout, check=False)
    out = subprocess.CompletedProcess(
        data.args, data.returncode, data.stdout.decode(errors="replace"), data.stderr.decode(errors="replace")
    )
    if check and out.returncode != 0:
        raise RigError(f"docker {' '.join(args[:3])} on {host.name} failed: {out.stderr.strip()[-1500:]}")
    return out


def _copy_exe(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def build_registry_image(host: Host, workdir: Path) -> None:
    """Build ``registry:2.8.3`` on ``host`` from the machine's distribution binary."""
    ctx = workdir / "registry-image"
    if ctx.exists():
        shutil.rmtree(ctx)
    root = ctx / "r"
    _copy_exe(Path("/usr/bin/docker-registry"), root / "bin/registry")
    _copy_exe(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "rm", "ls", "cat"):  # the official image is Alpine: its busybox applets are there
        (root / "bin" / applet).symlink_to("busybox")
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
        _copy_exe(Path(lib), root / lib.lstrip("/"))
    (root / "etc/docker/registry").mkdir(parents=True)
    (root / "etc/docker/registry/config.yml").write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n"
    )
    (root / "var/lib/registry").mkdir(parents=True)
    entry = root / "entrypoint.sh"
    entry.write_text(
        "#!/bin/sh\nset -e\n"
        'case "$1" in *.yaml|*.yml) set -- registry serve "$@";; '
        'serve|garbage-collect|help|-*) set -- registry "$@";; esac\n'
        'exec "$@"\n'
    )
    entry.chmod(0o755)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY r/ /\nENV PATH=/bin\nVOLUME /var/lib/registry\nEXPOSE 5000\n"
        'ENTRYPOINT ["/entrypoint.sh"]\nCMD ["/etc/docker/registry/config.yml"]\n'
    )
    docker(host, "build", "-q", "-t", REGISTRY_IMAGE, str(ctx))


def save_image(host: Host, image: str, tar: Path) -> None:
    docker(host, "save", "-o", str(tar), image)


def load_image(host: Host, tar: Path) -> None:
    docker(host, "load", "-q", "-i", str(tar))


# --------------------------------------------------------------------------- test service images


def handler_script(service_id: str, variant: str) -> str:
    """The busybox-sh CGI-ish handler ``nc -ll -e`` runs per connection (shellcheck-clean)."""
    entry = catalog.get(service_id)
    if entry is None:
        raise RigError(f"{service_id!r} is not in the catalog")
    prefix = entry.compose_env_prefix
    if not _ENV_RE.fullmatch(prefix):
        raise RigError(f"unexpected env prefix {prefix!r}")
    deploy = '"deploy":{"commit":"%s","requestedCommit":%s}'
    status = "500 Internal Server Error" if variant == "unhealthy" else "200 OK"
    lines = []
    if variant == "todo-note":
        lines.append("body='{\"status\":\"ok\"}'")
    else:
        lines += [
            f"service={service_id}",
            "built=$(cat /app/build/commit)",
            f"req=${{UNIDESK_DEPLOY_COMMIT:-${{{prefix}COMMIT:-}}}}",
            "req=$(printf '%s' \"$req\" | tr -cd 'A-Za-z0-9._-')",
            'if [ -n "$req" ]; then reqj="\\"$req\\""; else reqj=null; fi',
        ]
        word = "error" if variant == "unhealthy" else "ok"
        if variant == "baidu":
            lines += [
                'b() { if [ -n "$1" ]; then echo true; else echo false; fi; }',
                'cid=$(b "${UNIDESK_BAIDU_NETDISK_CLIENT_ID:-}")',
                'csec=$(b "${UNIDESK_BAIDU_NETDISK_CLIENT_SECRET:-}")',
                'tkey=$(b "${UNIDESK_BAIDU_NETDISK_TOKEN_KEY:-}")',
                "conf=false",
                'if [ "$cid" = true ] && [ "$csec" = true ] && [ "$tkey" = true ]; then conf=true; fi',
                "auth=$(printf ',\"auth\":{\"configured\":%s,\"clientIdConfigured\":%s,"
                "\"clientSecretConfigured\":%s,\"tokenKeyConfigured\":%s,\"loggedIn\":%s}' "
                '"$conf" "$cid" "$csec" "$tkey" "$conf")',
                f"body=$(printf '{{\"status\":\"{word}\",\"service\":\"%s\",{deploy}%s}}' "
                '"$service" "$built" "$reqj" "$auth")',
            ]
        else:
            lines.append(
                f"body=$(printf '{{\"status\":\"{word}\",\"service\":\"%s\",{deploy}}}' "
                '"$service" "$built" "$reqj")'
            )
    ok = "\n  ".join(lines)
    return f"""#!/bin/sh
# unidesk rig test service {service_id} ({variant}): answers GET {entry.health.path}
cr=$(printf '\\r')
read -r method path _ || exit 0
# shellcheck disable=SC3045 # busybox read has -t
while read -r -t 5 line; do
  case "$line" in ""|"$cr") break ;; esac
done
path=${{path%%\\?*}}
if [ "$path" = "{entry.health.path}" ] && {{ [ "$method" = GET ] || [ "$method" = HEAD ]; }}; then
  status="{status}"
  {ok}
else
  status="404 Not Found"
  body='{{"error":"not found"}}'
fi
printf 'HTTP/1.1 %s\\r\\nContent-Type: application/json\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n' \\
  "$status" "${{#body}}"
[ "$method" = HEAD ] || printf '%s' "$body"
"""


def entry_script(port: int) -> str:
    # PID 1 or not (compose uses init: true), exit at once on SIGTERM.
    return f"""#!/bin/sh
trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
nc -ll -p {port} -e /app/handler.sh &
child=$!
wait "$child"
"""


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _pad_file(workdir: Path, pad_bytes: int) -> Path:
    pad = workdir / "pads" / f"pad-{pad_bytes}.bin"
    if not pad.exists():
        pad.parent.mkdir(parents=True, exist_ok=True)
        tmp = pad.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            left = pad_bytes
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                out.write(chunk)
                left -= len(chunk)
        tmp.rename(pad)
    return pad


def _busybox_root(workdir: Path) -> Path:
    root = workdir / "busybox-root"
    if not (root / "bin/busybox").exists():
        _copy_exe(BUSYBOX, root / "bin/busybox")
        for applet in BUSYBOX_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        (root / "tmp").mkdir()
    return root


def publish_test_image(
    host: Host,
    workdir: Path,
    registry: str,
    service_id: str,
    commit: str,
    *,
    variant: str = "standard",
    pad_bytes: int = 0,
) -> dict[str, str]:
    """Build and push ``<registry>/unidesk/<id>:<commit>``; the local tag is removed afterwards so a
    later pull on the host is a real pull (the build cache stays)."""
    entry = catalog.get(service_id)
    if entry is None:
        raise RigError(f"{service_id!r} is not in the catalog")
    if not COMMIT_RE.fullmatch(commit):
        raise RigError(f"commit {commit!r} is not 40 lowercase hex")
    if variant not in VARIANTS:
        raise RigError(f"variant {variant!r} is not one of {VARIANTS}")
    if pad_bytes < 0:
        raise RigError("pad_bytes must be >= 0")
    ref = f"{registry}/{entry.repository}:{commit}"
    ctx = workdir / "ctx" / f"{service_id}-{variant}-{commit[:12]}-{pad_bytes}"
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    shutil.copytree(_busybox_root(workdir), ctx / "rootfs", symlinks=True)
    app = ctx / "app"
    app.mkdir()
    (app / "handler.sh").write_text(handler_script(service_id, variant))
    (app / "entry.sh").write_text(entry_script(entry.health.port))
    for name in ("handler.sh", "entry.sh"):
        (app / name).chmod(0o755)
    (ctx / "build").mkdir()
    (ctx / "build/commit").write_text((STALE_COMMIT if variant == "stale" else commit) + "\n")
    lines = ["FROM scratch", "COPY rootfs/ /"]
    if pad_bytes:
        _link_or_copy(_pad_file(workdir, pad_bytes), ctx / "pad.bin")
        lines.append("COPY pad.bin /pad/base.bin")
    lines += [
        "COPY app/ /app/",
        "COPY build/ /app/build/",
        f"LABEL {catalog.REVISION_LABEL}={commit} {catalog.SOURCE_LABEL}={entry.source_repo} "
        f"{catalog.SERVICE_LABEL}={service_id} io.unidesk.rig.variant={variant}",
        "ENV PATH=/bin",
        f"EXPOSE {entry.health.port}",
        'ENTRYPOINT ["/app/entry.sh"]',
    ]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    docker(host, "build", "-q", "-t", ref, str(ctx))
    image_id = docker(host, "image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
    docker(host, "push", "-q", ref)
    docker(host, "rmi", "--no-prune", ref)
    shutil.rmtree(ctx)
    manifest = fetch_manifest(host, registry, entry.repository, commit)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    config_digest = json.loads(manifest)["config"]["digest"]
    if config_digest != image_id:
        raise RigError(f"pushed {ref}: config digest {config_digest} != built image {image_id}")
    return {"digest": digest, "imageId": image_id, "ref": ref}


def fetch_manifest(host: Host, registry: str, repository: str, reference: str) -> bytes:
    """GET the manifest bytes from the host's loopback registry (curl inside its netns)."""
    argv = [*host.netns_argv(), "curl", "-sS", "-f", "--max-time", "20"]
    for media in MANIFEST_ACCEPT:
        argv += ["-H", f"Accept: {media}"]
    argv.append(f"http://{registry}/v2/{repository}/manifests/{reference}")
    proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RigError(f"manifest {repository}:{reference}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def http_status(host: Host, url: str, *, timeout: float = 5) -> int:
    """HTTP status code of GET ``url`` from inside the host's netns (0 when no connection)."""
    proc = run_bytes(
        [*host.netns_argv(), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout), url],
        input=None,
        check=False,
        timeout=timeout + 5,
    )
    try:
        return int(proc.stdout.strip() or "0")
    except ValueError:
        return 0
