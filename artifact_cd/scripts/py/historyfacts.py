"""historyfacts.py: one host's deploy record for history-probe.sh, in one python3 launch (read-only).

    HISTORYFACTS_CONTAINER="$CONTAINER_PY" HISTORYFACTS_MANIFEST="$MANIFEST_PY" \\
    python3 -c "$HISTORYFACTS_PY" HOST STARTED DOCKER_MODE DOCKER_STATE REVISION_LABEL COMMIT_PATTERN \\
        DIGEST_PATTERN AUDIT_LOG TAIL_BYTES REGISTRY MAX_TAGS ARCH ITEM...
      -> exit 0: one JSON line {"ok": true, "probe": "history-probe", "host", "audit", "workloads",
                                "registry", ...}

ITEMs (validated by the script): ``compose=SERVICE:CONTAINER:ENV_PREFIX``, ``k3s=SERVICE:NAMESPACE:
DEPLOYMENT``, ``repository=REPO`` and ``accept=MEDIA_TYPE`` (the contract's four manifest media types).
REGISTRY is D601's loopback endpoint or empty. The label name and the patterns come from the script
(the contract's generated constants).

- audit: the newest TAIL_BYTES bytes of AUDIT_LOG, preceded by the end of ``AUDIT_LOG.1`` when the
  log is shorter (a cut first line is dropped); the lines are returned as they are (audit.sh never
  writes a secret value; the CLI side parses them: audit.py of the package);
  ``runningRuns``: the runs with a ``started`` line only whose process (its pid, on this host) still
  runs: in progress, not interrupted;
- workloads: per Compose service ``docker inspect`` of its container (the revision label, the
  ``<PREFIX>COMMIT`` env value only: container.py), per k3s service the Deployment's deploy stamp
  annotation (``kubectl``; a read the API refuses is reported, with its reason, as unknown). The
  script may name the kubectl to run (``HISTORYFACTS_KUBECTL``, e.g. ``sudo -n /usr/local/bin/k3s
  kubectl`` on a non-root host whose kubeconfig is root-only); a read ``sudo -n`` refuses names the
  sudoers line to add (``sudoers``);
- registry (D601): per repository its commit tags (``GET /v2/<repo>/tags/list``) and per tag (at
  most MAX_TAGS) the manifest digest, the config's created time and revision label, and the size
  (config + layers), from the manifest (all four media types accepted) and its config blob.
No tool's error text is returned beyond one short line; no env value but ``<PREFIX>COMMIT``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Dict, Protocol, Sequence, Tuple  # runtime subscripts: typing (3.8)

COMPACT = (",", ":")
HTTP_TIMEOUT = 5.0
TOOL_TIMEOUT = 10.0
KUBE_TIMEOUT = "--request-timeout=5s"
BODY_LIMIT = 1 << 20
TEXT_LIMIT = 200
WORKERS = 16
# the deploy stamp annotation k3s-verify.sh reads (the contract's ANNOTATION_PREFIX + "commit")
COMMIT_ANNOTATION = "unidesk.io/deploy-commit"
SUDOERS_FILE = "/etc/sudoers.d/unidesk-artifact-cd"  # the same path as sudoers.py SUDOERS_FILE
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

HttpAnswer = Tuple[int, Dict[str, str], bytes]
Runner = Callable[[Sequence[str], float], Tuple[int, str, str]]


class Requester(Protocol):
    def __call__(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        *,
        headers: Sequence[tuple[str, str]],
        timeout: float,
    ) -> HttpAnswer: ...


def clean(text: object, limit: int = TEXT_LIMIT) -> str:
    return CONTROL.sub(" ", str(text)).strip()[:limit]


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return clean(lines[-1]) if lines else ""


def run_tool(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a read-only tool; 127 when it is missing, 124 on timeout."""
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return 127, "", argv[0] + " is not installed"
    except subprocess.TimeoutExpired:
        return 124, "", argv[0] + " timed out"
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def http_get(
    method: str, host: str, port: int, path: str, *, headers: Sequence[tuple[str, str]], timeout: float
) -> HttpAnswer:
    """One plain HTTP request (never through a proxy): status, lower-cased headers, <= BODY_LIMIT bytes."""
    conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for key, value in headers:
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(BODY_LIMIT)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def load_helper(name: str, text: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, name + ".py", "exec"), module.__dict__)  # noqa: S102 - our own helper's text
    return module


def parallel(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs))) as pool:
        return list(pool.map(lambda job: job(), jobs))


# --------------------------------------------------------------------------- the audit log


def read_tail(path: str, limit: int) -> dict[str, Any]:
    """The newest ``limit`` bytes of the log (and of ``<log>.1`` before it when the log is shorter),
    as whole lines; a first line cut by the limit is dropped."""
    out: dict[str, Any] = {"path": path, "exists": False, "lines": [], "bytes": 0, "truncated": False}
    chunks: list[bytes] = []
    left = limit
    mid_line = False  # the oldest chunk read starts inside a file: its first line may be cut
    older = False  # older bytes were left unread
    try:
        for name in (path, path + ".1"):
            try:
                size = os.path.getsize(name)
            except FileNotFoundError:
                if name == path:
                    continue
                break
            if name == path:
                out["exists"] = True
            if left <= 0:
                older = size > 0
                break
            with open(name, "rb") as handle:
                start = max(0, size - left)
                handle.seek(max(0, start - 1))
                before = handle.read(1) if start > 0 else b"\n"
                data = handle.read(size - start)
            chunks.insert(0, data)
            left -= len(data)
            older = start > 0
            mid_line = before != b"\n"
            if older:
                break
    except OSError as exc:
        out["error"] = clean(type(exc).__name__ + ": " + str(exc), 160)
        return out
    data = b"".join(chunks)
    if mid_line:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    out["bytes"] = len(data)
    out["truncated"] = older
    out["lines"] = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    out["error"] = None
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def running_runs(lines: Sequence[str], hostname: str, alive: Callable[[int], bool] = pid_alive) -> list[str]:
    """The runs of this host's log with a ``started`` line and no end line whose process still runs
    (in progress, not interrupted)."""
    started: dict[str, int] = {}
    ended: set[str] = set()
    for line in lines:
        try:
            rec = json.loads(line)
            run, event = str(rec["runId"]), rec["event"]
        except (ValueError, TypeError, KeyError):
            continue
        if event == "started" and rec.get("host") == hostname and isinstance(rec.get("pid"), int):
            started[run] = rec["pid"]
        elif event != "started":
            ended.add(run)
    return [run for run, pid in started.items() if run not in ended and pid > 1 and alive(pid)]


# --------------------------------------------------------------------------- the probe


class Probe:
    def __init__(
        self,
        *,
        container: types.ModuleType,
        manifest: types.ModuleType,
        docker: list[str] | None,
        docker_state: str,
        revision_label: str,
        commit_re: re.Pattern[str],
        digest_re: re.Pattern[str],
        media_types: Sequence[str],
        arch: str,
        run: Runner = run_tool,
        request: Requester = http_get,
        which: Callable[[str], str | None] = shutil.which,
        kubectl: Sequence[str] = (),
    ) -> None:
        self.container = container
        self.manifest = manifest
        self.docker = docker
        self.docker_state = docker_state
        self.revision_label = revision_label
        self.commit_re = commit_re
        self.digest_re = digest_re
        self.media_types = tuple(media_types)
        self.arch = arch
        self.run = run
        self.request = request
        self.which = which
        self.kubectl = tuple(kubectl)  # the script's choice ("sudo -n <k3s> kubectl"); empty: found here

    # ------------------------------------------------------------------ Compose

    def compose(self, items: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
        if not items:
            return {}
        if self.docker is None:
            why = "docker: " + (self.docker_state or "unavailable") + " on this host"
            return {s: {"kind": "compose", "found": None, "detail": why} for s, _, _ in items}
        names = sorted({c for _, c, _ in items})
        rc, out, err = self.run([*self.docker, "inspect", "--type", "container", "--", *names], TOOL_TIMEOUT)
        try:
            docs = json.loads(out or "[]")
        except ValueError:
            docs = []
        docs = [d for d in docs if isinstance(d, dict)] if isinstance(docs, list) else []
        if rc != 0 and not docs and "No such" not in err:
            why = "docker inspect failed: " + (last_line(err) or "exit " + str(rc))
            return {s: {"kind": "compose", "found": None, "detail": why} for s, _, _ in items}
        by_name = {str(d.get("Name", "")).lstrip("/"): d for d in docs}
        facts = {}
        for service, name, prefix in items:
            doc = by_name.get(name)
            if doc is None:
                facts[service] = {"kind": "compose", "container": name, "found": False, "detail": None}
                continue
            fields = self.container.container_fields(doc, prefix + "COMMIT", self.revision_label)
            _, cid, image_id, status, _, revision, _, _, env_commit = fields
            state = doc.get("State") or {}
            facts[service] = {
                "kind": "compose",
                "container": name,
                "found": True,
                "liveCommit": clean(revision, 100) or None,
                "requestedCommit": clean(env_commit, 100) or None,
                "running": status == "running",
                "status": clean(status, 40) or None,
                "containerId": clean(cid, 80) or None,
                "imageId": clean(image_id, 80) or None,
                "startedAt": clean(state.get("StartedAt") or "", 40) or None,
                "detail": None,
            }
        return facts

    # ------------------------------------------------------------------ k3s

    def k3s(self, items: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
        if not items:
            return {}
        kubectl: list[str] | None = list(self.kubectl)
        if not kubectl:
            kubectl = (
                ["k3s", "kubectl"] if self.which("k3s") else ["kubectl"] if self.which("kubectl") else None
            )
        sudo = kubectl is not None and kubectl[:2] == ["sudo", "-n"]
        facts = {}
        for service, namespace, deployment in items:
            base: dict[str, Any] = {"kind": "k3s", "deployment": namespace + "/" + deployment}
            if kubectl is None:
                facts[service] = {
                    **base,
                    "found": None,
                    "detail": "neither k3s nor kubectl is installed here",
                }
                continue
            argv = [*kubectl, "-n", namespace, "get", "deployment", deployment, "-o", "json", KUBE_TIMEOUT]
            rc, out, err = self.run(argv, TOOL_TIMEOUT)
            if rc != 0 and sudo and err.lstrip().startswith("sudo:"):
                # the rule k3s-verify.sh uses (sudoers.py k3s_rules): one per namespace
                rule = " ".join(kubectl[2:]) + " -n " + namespace + " get deployment *"
                line = user_name() + " ALL=(root) NOPASSWD: " + rule
                facts[service] = {
                    **base,
                    "found": None,
                    "detail": "sudo -n refused the read ("
                    + last_line(err)
                    + "); add to "
                    + SUDOERS_FILE
                    + " (visudo -f): "
                    + line,
                    "sudoers": line,
                }
                continue
            if rc != 0:
                found = False if "NotFound" in err or "not found" in err else None
                why = "kubectl: " + (last_line(err) or "exit " + str(rc))
                facts[service] = {**base, "found": found, "detail": why if found is None else None}
                continue
            try:
                doc = json.loads(out)
                template = ((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}
                annotations = (
                    template.get("annotations") or (doc.get("metadata") or {}).get("annotations") or {}
                )
            except (ValueError, AttributeError):
                facts[service] = {**base, "found": None, "detail": "kubectl: the Deployment is not JSON"}
                continue
            commit = clean(annotations.get(COMMIT_ANNOTATION) or "", 100)
            ready = int((doc.get("status") or {}).get("readyReplicas") or 0) >= 1
            facts[service] = {
                **base,
                "found": True,
                "liveCommit": commit or None,
                "running": ready,
                "detail": None,
            }
        return facts

    # ------------------------------------------------------------------ the registry

    def _get(self, endpoint: str, path: str, accept: bool) -> HttpAnswer:
        host, _, port = endpoint.rpartition(":")
        headers = [("Accept", m) for m in self.media_types] if accept else []
        return self.request("GET", host, int(port), path, headers=headers, timeout=HTTP_TIMEOUT)

    def tag(self, endpoint: str, repository: str, tag: str) -> dict[str, Any]:
        """One commit tag: manifest digest, created, revision label, size (or why it is unknown)."""
        try:
            status, headers, body = self._get(endpoint, "/v2/" + repository + "/manifests/" + tag, True)
            if status == 404:
                return {"present": False}
            digest = headers.get("docker-content-digest", "")
            if status != 200 or not self.digest_re.fullmatch(digest):
                return {"present": None, "error": "registry-error: HTTP " + str(status)}
            fields = self.manifest.manifest_fields(json.loads(body), self.arch)
            if fields[0] == "index":
                status, _, body = self._get(
                    endpoint, "/v2/" + repository + "/manifests/" + str(fields[1]), True
                )
                fields = (
                    self.manifest.manifest_fields(json.loads(body), self.arch)
                    if status == 200
                    else ("error",)
                )
            if fields[0] != "manifest":
                return {"present": True, "digest": digest, "error": "not an image manifest"}
            _, config_digest, _, config_size, _, layer_bytes = fields
            out: dict[str, Any] = {
                "present": True,
                "digest": digest,
                "size": int(config_size) + int(layer_bytes),
            }
            status, _, body = self._get(endpoint, "/v2/" + repository + "/blobs/" + str(config_digest), False)
            if status != 200:
                return {**out, "error": "config blob: HTTP " + str(status)}
            config = json.loads(body)
            labels = (config.get("config") or {}).get("Labels") or {}
            out["created"] = clean(config.get("created") or "", 40) or None
            out["revision"] = clean(labels.get(self.revision_label) or "", 100) or None
            return out
        except (OSError, http.client.HTTPException) as exc:
            return {"present": None, "error": "registry-unreachable: " + clean(type(exc).__name__, 60)}
        except (ValueError, TypeError, AttributeError):
            return {"present": None, "error": "registry-error: a document is not JSON"}

    def _tag_pair(self, endpoint: str, repository: str, tag: str) -> tuple[str, dict[str, Any]]:
        return tag, self.tag(endpoint, repository, tag)

    def _repository_pair(self, endpoint: str, repository: str, max_tags: int) -> tuple[str, dict[str, Any]]:
        return repository, self.repository(endpoint, repository, max_tags)

    def repository(self, endpoint: str, repository: str, max_tags: int) -> dict[str, Any]:
        try:
            status, _, body = self._get(endpoint, "/v2/" + repository + "/tags/list", False)
        except (OSError, http.client.HTTPException) as exc:
            return {"error": "registry-unreachable: " + clean(type(exc).__name__, 60), "tags": {}}
        if status == 404:
            return {"error": None, "tags": {}, "otherTags": 0, "notDescribed": 0}
        try:
            tags = json.loads(body).get("tags") or [] if status == 200 else None
        except (ValueError, AttributeError):
            tags = None
        if tags is None:
            return {"error": "registry-error: tags/list HTTP " + str(status), "tags": {}}
        commits = sorted(t for t in tags if isinstance(t, str) and self.commit_re.fullmatch(t))
        described = commits[:max_tags]
        got = parallel([partial(self._tag_pair, endpoint, repository, t) for t in described])
        return {
            "error": None,
            "tags": {t: facts for t, facts in got if facts.get("present") is not False},
            "otherTags": len(tags) - len(commits),
            "notDescribed": len(commits) - len(described),
        }

    def registry(self, endpoint: str, repositories: Sequence[str], max_tags: int) -> dict[str, Any] | None:
        if not endpoint:
            return None
        got = parallel([partial(self._repository_pair, endpoint, r, max_tags) for r in repositories])
        return {"endpoint": endpoint, "repositories": dict(got)}


# --------------------------------------------------------------------------- main


def user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def _items(values: Sequence[str], kind: str) -> list[tuple[str, ...]]:
    prefix = kind + "="
    return [tuple(v[len(prefix) :].split(":")) for v in values if v.startswith(prefix)]


def answer(argv: Sequence[str], environ: Mapping[str, str], factory: Any = Probe) -> str:
    """The one output line for the script's argv and the sibling helpers' texts."""
    host, started, docker_mode, docker_state, revision_label, commit_pattern, digest_pattern = argv[:7]
    audit_log, tail_bytes, registry, max_tags, arch = argv[7:12]
    items = list(argv[12:])
    probe = factory(
        container=load_helper("container", environ["HISTORYFACTS_CONTAINER"]),
        manifest=load_helper("manifest", environ["HISTORYFACTS_MANIFEST"]),
        docker={"docker": ["docker"], "sudo": ["sudo", "-n", "docker"]}.get(docker_mode),
        docker_state=docker_state,
        revision_label=revision_label,
        commit_re=re.compile(commit_pattern.strip("^$")),
        digest_re=re.compile(digest_pattern.strip("^$")),
        media_types=[v[len("accept=") :] for v in items if v.startswith("accept=")],
        arch=arch,
        kubectl=environ.get("HISTORYFACTS_KUBECTL", "").split(),
    )
    compose = [(s, c, p) for s, c, p in _items(items, "compose")]
    k3s = [(s, n, d) for s, n, d in _items(items, "k3s")]
    repositories: list[str] = [v[len("repository=") :] for v in items if v.startswith("repository=")]
    jobs: list[Callable[[], Any]] = [
        lambda: read_tail(audit_log, int(tail_bytes)),
        lambda: probe.compose(compose),
        lambda: probe.k3s(k3s),
        lambda: probe.registry(registry, repositories, int(max_tags)),
    ]
    audit, compose_facts, k3s_facts, registry_facts = parallel(jobs)
    audit["runningRuns"] = running_runs(audit["lines"], socket.gethostname())
    try:
        seconds: float | None = round(time.time() - float(started), 3)
    except ValueError:
        seconds = None
    doc = {
        "ok": True,
        "probe": "history-probe",
        "version": 1,
        "host": host,
        "hostname": clean(socket.gethostname(), 100),
        "user": clean(user_name(), 40),
        "docker": {"state": docker_state, "sudo": docker_mode == "sudo"},
        "audit": audit,
        "workloads": {**compose_facts, **k3s_facts},
        "registry": registry_facts,
        "seconds": seconds,
    }
    return json.dumps(doc, separators=COMPACT, ensure_ascii=False)


def main(argv: Sequence[str]) -> int:
    sys.stdout.write(answer(argv, os.environ) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
