"""livefacts.py: one host's live facts for live-probe.sh, in one python3 launch (read-only).

    <registry facts JSON, or nothing> | \\
    LIVEFACTS_ENVFILE="$ENVFILE_PY" LIVEFACTS_CONTAINER="$CONTAINER_PY" LIVEFACTS_HEALTH="$HEALTH_PY" \\
    LIVEFACTS_AUTH="$AUTH_PY" python3 -c "$LIVEFACTS_PY" SPEC_B64 HOST STARTED DOCKER_MODE DOCKER_STATE \\
        REVISION_LABEL COMMIT_PATTERN DIGEST_PATTERN MEDIA_TYPE...
      -> exit 0: one JSON line {"ok": true, "probe": "live-probe", "host", "services", "manifests", ...}
       | exit 2: one JSON line {"ok": false, "error": "invalid-argument", "argument": "--spec-b64", ...}

SPEC_B64 is base64 of the live probe spec (the contract's LiveProbeSpec), checked here again
with the rules of lib.sh's ``is_*`` checks before anything is looked at. DOCKER_MODE is ``docker``,
``sudo`` (``sudo -n docker``, read-only use) or ``none`` (DOCKER_STATE says why). The label name, the
commit and digest patterns and the manifest media types come from the script (the contract's
generated constants). The registry facts (include/registry-facts.sh, collected by the script at the
same time) arrive on stdin and are embedded as they are.

Per service: the container (``docker inspect``) or the Deployments (``kubectl``), the health
payload's commits (read the way the deploy verifies them), whether the desired commit image is on the
host, and the required secret keys as present/length only. D601: each planned commit's manifest digest
(HEAD with the four media types). Master: the sha256 of the canonical frontend auth section. No secret
value, no env value but ``<PREFIX>COMMIT`` and no byte of config.json ever reaches the output.

The sibling helpers are reused, not copied: envfile.py (secret presence), container.py (the inspect
fields), health.py (the health fields) and auth.py (the auth section's hash) arrive as their text in
``LIVEFACTS_<NAME>`` and are loaded as modules.
"""

from __future__ import annotations

import base64
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
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Dict, Protocol, Sequence, Tuple  # runtime subscripts: typing (3.8)

INVALID = 2
COMPACT = (",", ":")
HTTP_TIMEOUT = 3.0  # seconds for one health GET or manifest HEAD
TOOL_TIMEOUT = 10.0  # seconds for one docker / kubectl / ctr call
KUBE_TIMEOUT = "--request-timeout=5s"
BODY_LIMIT = 1 << 16
TEXT_LIMIT = 200
WORKERS = 16
HELPERS = ("envfile", "container", "health", "auth")
VERIFY_KINDS = ("standard", "todo-note-synthetic", "baidu-auth-gate")
SYNTHETIC = "todo-note-synthetic"
AUTH_GATE = "baidu-auth-gate"
API_DOWN = re.compile(
    r"unable to connect to the server|connection refused|was refused|no such host|i/o timeout|"
    r"couldn't get current server API group|the server is currently unable",
    re.I,
)

# The rules of lib.sh's is_* checks (and of the contract's live probe spec).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ABS_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
DOTS = re.compile(r"(^|/)\.\.?(/|$)")
ENV_PREFIX = re.compile(r"[A-Z][A-Z0-9_]{0,80}_")
ENV_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,127}")
REPOSITORY = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*")
HTTP_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")
LOOPBACK = re.compile(r"(?:127\.0\.0\.1|\[::1\]|localhost):([0-9]{1,5})")
IMAGE_NAME = re.compile(r"[a-z0-9]+(?:[._/:-][a-z0-9]+)*")
K8S_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Runner = Callable[[Sequence[str], float], Tuple[int, str, str]]
HttpAnswer = Tuple[int, Dict[str, str], bytes]
HealthGot = Tuple[Any, bytes, str]  # (HTTP status or None, body, why there was no answer)


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


class SpecError(ValueError):
    """The spec is not one this probe accepts (nothing was looked at)."""


# --------------------------------------------------------------------------- the spec


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SpecError(f"{what} is not valid: {value!r}"[:300])
    return value


def _path(value: object, what: str) -> str:
    path = _check(ABS_PATH, value, what)
    if DOTS.search(path):
        raise SpecError(f"{what} has a . or .. segment")
    return path


def _port(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise SpecError(f"{what} is not a port: {value!r}")
    return value


def _commit_image(value: object, what: str, commit_re: re.Pattern[str]) -> str:
    if not isinstance(value, str) or len(value) > 300:
        raise SpecError(f"{what} is not a commit image")
    name, _, tag = value.rpartition(":")
    if not IMAGE_NAME.fullmatch(name) or not commit_re.fullmatch(tag):
        raise SpecError(f"{what} is not a commit image <registry>/<repo>:<sha>: {value!r}")
    return value


def _object(value: object, what: str, keys: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{what} is not an object")
    required = set(keys)
    extra, missing = sorted(set(value) - required - set(optional)), sorted(required - set(value))
    if extra or missing:
        raise SpecError(f"{what}: unknown keys {extra} / missing keys {missing}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{what} is not a list")
    return value


COMPOSE_KEYS = ("service", "container", "image", "envPrefix", "verify", "healthPath", "healthPort", "envFile")
K3S_KEYS = (
    "service",
    "namespace",
    "deployments",
    "kubernetesService",
    "healthPath",
    "healthPort",
    "image",
    "envPrefix",
    "socket",
    "containerdNamespace",
)


def validate_compose(item: object, where: str, commit_re: re.Pattern[str]) -> dict[str, Any]:
    doc = _object(item, where, COMPOSE_KEYS, ("requiredSecrets",))
    _check(NAME, doc["service"], where + ".service")
    _check(NAME, doc["container"], where + ".container")
    _commit_image(doc["image"], where + ".image", commit_re)
    _check(ENV_PREFIX, doc["envPrefix"], where + ".envPrefix")
    if doc["verify"] not in VERIFY_KINDS:
        raise SpecError(f"{where}.verify is not a verify kind: {doc['verify']!r}")
    _check(HTTP_PATH, doc["healthPath"], where + ".healthPath")
    _port(doc["healthPort"], where + ".healthPort")
    _path(doc["envFile"], where + ".envFile")
    for key in _list(doc.get("requiredSecrets", []), where + ".requiredSecrets"):
        _check(ENV_KEY, key, where + ".requiredSecrets[]")
    return doc


def validate_k3s(item: object, where: str, commit_re: re.Pattern[str]) -> dict[str, Any]:
    doc = _object(item, where, K3S_KEYS)
    _check(NAME, doc["service"], where + ".service")
    _check(K8S_NAME, doc["namespace"], where + ".namespace")
    deployments = _list(doc["deployments"], where + ".deployments")
    if not deployments:
        raise SpecError(f"{where}.deployments is empty")
    for dep in deployments:
        _object(dep, where + ".deployments[]", ("name", "container"))
        _check(K8S_NAME, dep["name"], where + ".deployments[].name")
        _check(K8S_NAME, dep["container"], where + ".deployments[].container")
    _check(K8S_NAME, doc["kubernetesService"], where + ".kubernetesService")
    _check(HTTP_PATH, doc["healthPath"], where + ".healthPath")
    _port(doc["healthPort"], where + ".healthPort")
    _commit_image(doc["image"], where + ".image", commit_re)
    _check(ENV_PREFIX, doc["envPrefix"], where + ".envPrefix")
    _path(doc["socket"], where + ".socket")
    _check(K8S_NAME, doc["containerdNamespace"], where + ".containerdNamespace")
    return doc


def validate_manifest(item: object, where: str, commit_re: re.Pattern[str]) -> dict[str, Any]:
    doc = _object(item, where, ("endpoint", "repository", "tag"))
    port = LOOPBACK.fullmatch(_check(LOOPBACK, doc["endpoint"], where + ".endpoint"))
    if port is None or not 1 <= int(port.group(1)) <= 65535:
        raise SpecError(where + ".endpoint has no valid port")
    _check(REPOSITORY, doc["repository"], where + ".repository")
    _check(commit_re, doc["tag"], where + ".tag")
    return doc


def validate_spec(raw: object, commit_re: re.Pattern[str]) -> dict[str, Any]:
    """The decoded spec, every value checked (SpecError names the first bad one)."""
    spec = _object(raw, "spec", ("version",), ("compose", "k3s", "manifests", "authConfig"))
    if spec["version"] != 1:
        raise SpecError("spec.version is not 1")
    compose = [
        validate_compose(s, f"compose[{i}]", commit_re)
        for i, s in enumerate(_list(spec.get("compose", []), "compose"))
    ]
    k3s = [validate_k3s(s, f"k3s[{i}]", commit_re) for i, s in enumerate(_list(spec.get("k3s", []), "k3s"))]
    for i, m in enumerate(_list(spec.get("manifests", []), "manifests")):
        validate_manifest(m, f"manifests[{i}]", commit_re)
    services = [s["service"] for s in compose + k3s]
    if len(services) != len(set(services)):
        raise SpecError("a service is listed twice")
    if spec.get("authConfig") is not None:
        _path(spec["authConfig"], "authConfig")
    return spec


def decode_spec(value: str, commit_re: re.Pattern[str]) -> dict[str, Any]:
    try:
        raw = json.loads(base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8"))
    except ValueError as exc:  # binascii.Error, UnicodeError and JSONDecodeError are ValueErrors
        raise SpecError(f"not base64 JSON ({type(exc).__name__})") from None
    return validate_spec(raw, commit_re)


# --------------------------------------------------------------------------- the world (injectable)


def clean(text: object, limit: int = TEXT_LIMIT) -> str:
    """One short line of diagnostic text (control characters dropped)."""
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
        return 127, "", f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout:g} s"
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def http_request(
    method: str, host: str, port: int, path: str, *, headers: Sequence[tuple[str, str]], timeout: float
) -> HttpAnswer:
    """One plain HTTP request (never through a proxy): status, lower-cased headers, <= BODY_LIMIT bytes."""
    conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        for key, value in headers:
            conn.putheader(key, value)  # a repeated key stays repeated (the four Accept headers)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(BODY_LIMIT) if method != "HEAD" else b""
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def load_helper(name: str, text: str) -> types.ModuleType:
    """A sibling helper (its text, as the script carries it) loaded as a module; its main does not run."""
    module = types.ModuleType(name)
    exec(compile(text, name + ".py", "exec"), module.__dict__)  # noqa: S102 - our own helper's text
    return module


def parallel(jobs: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    if not jobs:
        return {}
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs))) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}




# --------------------------------------------------------------------------- the probe


def no_health(why: str) -> dict[str, Any]:
    """The health fields of a service whose health could not be read, and why."""
    return {"healthOk": False, "healthCommit": None, "healthRequestedCommit": None, "why": why}


def with_detail(
    facts: dict[str, Any], whys: list[str], health: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``facts`` with the ``health`` fields merged in and every reason (``whys``, then the health's
    ``why``) as its ``detail``."""
    if health is not None:
        why = health.pop("why", None)
        facts.update(health)
        whys = [*whys, why] if why else whys
    if whys:
        facts["detail"] = "; ".join(whys)
    return facts


class Probe:
    """The facts of one host; every tool call and request goes through ``run`` / ``request``."""

    def __init__(
        self,
        *,
        helpers: Mapping[str, Any],
        docker: Sequence[str] | None,
        docker_state: str,
        revision_label: str,
        digest_re: re.Pattern[str],
        media_types: Sequence[str],
        run: Runner = run_tool,
        request: Requester = http_request,
        which: Callable[[str], Any] = shutil.which,
        exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self.envfile = helpers["envfile"]
        self.container = helpers["container"]
        self.health = helpers["health"]
        self.auth = helpers["auth"]
        self.docker = list(docker) if docker else None
        self.docker_state = docker_state
        self.revision_label = revision_label
        self.digest_re = digest_re
        self.media_types = list(media_types)
        self.run = run
        self.request = request
        self.which = which
        self.exists = exists
        self.tools: dict[str, str | None] = {}

    # ------------------------------------------------------------------ health payloads

    def health_facts(
        self, got: HealthGot, *, verify: str = "standard", revision: str = "", env_commit: str = ""
    ) -> dict[str, Any]:
        """healthOk, healthCommit, healthRequestedCommit and ``why`` (not ok), read as the deploy does:
        standard: deploy.commit and deploy.requestedCommit of a JSON object (HTTP 200);
        todo-note-synthetic: status ok, the commits are the image label and the container env;
        baidu-auth-gate: standard and the five auth booleans all true."""
        status, body, error = got
        if status is None:
            return no_health(f"health: no answer ({error or 'unreachable'})")
        if status != 200:
            return no_health(f"health: HTTP {status}")
        try:
            doc = json.loads(body.decode("utf-8", "replace"))
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return no_health("health: HTTP 200 but not a JSON object")
        out: dict[str, Any] = {"healthOk": False, "healthCommit": None, "healthRequestedCommit": None}
        fields = self.health.health_fields(doc)
        commit, requested, state = fields[1:4]
        if verify == SYNTHETIC:
            out.update(healthCommit=revision or None, healthRequestedCommit=env_commit or None)
            out["healthOk"] = state == "ok"
            if state != "ok":
                out["why"] = f"health: status {state!r}, not ok"
            return out
        out.update(healthOk=True, healthCommit=commit or None, healthRequestedCommit=requested or None)
        if verify == AUTH_GATE and fields[4:9] != ["true"] * 5:
            out["healthOk"] = False
            out["why"] = "health: the auth booleans are not all true"
        return out

    def get_health(self, addr: str, port: int, path: str) -> HealthGot:
        try:
            accept = (("Accept", "application/json"),)
            status, _, body = self.request("GET", addr, port, path, headers=accept, timeout=HTTP_TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            return None, b"", clean(f"{type(exc).__name__}: {exc}", 120)
        return status, body, ""

    # ------------------------------------------------------------------ Compose

    def _docker(self, *args: str) -> tuple[int, str, str]:
        assert self.docker is not None
        return self.run([*self.docker, *args], TOOL_TIMEOUT)

    @staticmethod
    def _objects(text: str) -> list[dict[str, Any]]:
        try:
            doc = json.loads(text or "[]")
        except ValueError:
            return []
        return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []

    def compose_facts(self, specs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        if not specs:
            return {}
        if self.docker is None:
            return self.unknown(specs, f"docker: {self.docker_state or 'unavailable'} on this host")
        names = sorted({s["container"] for s in specs})
        refs = sorted({s["image"] for s in specs})
        got = parallel(
            {
                "containers": partial(self._docker, "inspect", "--type", "container", "--", *names),
                "images": partial(self._docker, "image", "inspect", "--", *refs),
            }
        )
        rc, out, err = got["containers"]
        docs = self._objects(out)
        if rc != 0 and not docs and "No such" not in err:
            return self.unknown(specs, "docker inspect failed: " + (last_line(err) or f"exit {rc}"))
        by_name = {str(d.get("Name", "")).lstrip("/"): d for d in docs}
        irc, iout, ierr = got["images"]
        tags = {tag for d in self._objects(iout) for tag in d.get("RepoTags") or []}
        present = tags if irc == 0 or "No such" in ierr or tags else None
        jobs = {
            s["service"]: partial(self.one_compose, s, by_name.get(s["container"]), present) for s in specs
        }
        return parallel(jobs)

    def unknown(self, specs: Iterable[Mapping[str, Any]], why: str) -> dict[str, dict[str, Any]]:
        """Every Compose service of ``specs`` as "could not tell" (found false, a detail); the env
        file's secret presence is still read."""
        out = {}
        for s in specs:
            facts = self.one_compose(s, None, None)
            facts["detail"] = "; ".join(filter(None, [why, facts.get("detail")]))
            out[s["service"]] = facts
        return out

    def one_compose(
        self, spec: Mapping[str, Any], doc: Mapping[str, Any] | None, present: Iterable[str] | None
    ) -> dict[str, Any]:
        """One Compose service: its inspected container (None: no such container) and the local tags."""
        facts: dict[str, Any] = {"service": spec["service"], "kind": "compose", "found": doc is not None}
        facts["imagePresent"] = (spec["image"] in present) if present is not None else None
        whys: list[str] = []
        health: dict[str, Any] | None = None
        if spec.get("requiredSecrets"):
            try:
                facts["secrets"], _ = self.envfile.secrets_report(spec["envFile"], spec["requiredSecrets"])
            except OSError as exc:
                if doc is not None:  # found=false with a detail would read "could not tell"
                    whys.append(f"env file {spec['envFile']}: {type(exc).__name__}")
        if doc is not None:
            fields = self.container.container_fields(doc, spec["envPrefix"] + "COMMIT", self.revision_label)
            _, cid, image_id, status, _, revision, netmode, ip, env_commit = fields
            facts.update(
                containerId=cid or None,
                imageId=image_id or None,
                image=clean((doc.get("Config") or {}).get("Image") or "", 300) or None,
                revision=clean(revision, 100) or None,
                requestedCommit=clean(env_commit, 100) or None,
                running=status == "running",
            )
            addr = "127.0.0.1" if netmode == "host" else ip
            if status != "running":
                health = no_health(f"the container is {clean(status, 40) or 'not running'}")
            elif not addr:
                health = no_health("the container has no network address")
            else:
                got = self.get_health(addr, spec["healthPort"], spec["healthPath"])
                health = self.health_facts(
                    got, verify=spec["verify"], revision=revision, env_commit=env_commit
                )
        return with_detail(facts, whys, health)

    # ------------------------------------------------------------------ k3s

    def _tool(self, name: str) -> list[str] | None:
        """``k3s <name>`` when k3s is installed, else ``<name>`` itself (as k3s-verify/k3s-import do)."""
        argv = ["k3s", name] if self.which("k3s") else [name] if self.which(name) else None
        self.tools[name] = " ".join(argv) if argv else None
        return argv

    def k3s_facts(self, specs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        if not specs:
            return {}
        kubectl, ctr = self._tool("kubectl"), self._tool("ctr")
        jobs: dict[str, Callable[[], Any]] = {}
        if kubectl is not None:
            for ns in sorted({s["namespace"] for s in specs}):
                argv = [*kubectl, "-n", ns, "get", "deployments", "-o", "json", KUBE_TIMEOUT]
                jobs["ns:" + ns] = partial(self.run, argv, TOOL_TIMEOUT)
            for s in specs:
                path = (
                    f"/api/v1/namespaces/{s['namespace']}/services/{s['kubernetesService']}:{s['healthPort']}"
                )
                argv = [*kubectl, "get", "--raw", path + "/proxy" + s["healthPath"], KUBE_TIMEOUT]
                jobs["health:" + s["service"]] = partial(self.run, argv, TOOL_TIMEOUT)
        for sock, cns in sorted({(s["socket"], s["containerdNamespace"]) for s in specs}):
            if ctr is not None and self.exists(sock):
                argv = [*ctr, "--address", sock, "-n", cns, "images", "ls", "-q"]
                jobs[f"ctr:{sock}:{cns}"] = partial(self.run, argv, TOOL_TIMEOUT)
        got = parallel(jobs)
        out = {}
        for s in specs:
            listing = got.get(f"ctr:{s['socket']}:{s['containerdNamespace']}")
            present = None if listing is None or listing[0] != 0 else s["image"] in listing[1].split()
            out[s["service"]] = self.one_k3s(s, got if kubectl is not None else None, present)
        return out

    def one_k3s(
        self, spec: Mapping[str, Any], got: Mapping[str, Any] | None, present: bool | None
    ) -> dict[str, Any]:
        """One k3s service from the namespace's Deployment list and its health through the API proxy
        (``got`` None: no kubectl here)."""
        facts: dict[str, Any] = {"service": spec["service"], "kind": "k3s", "imagePresent": present}
        if got is None:
            facts.update(found=False, detail="kubernetes-api: neither k3s nor kubectl is installed here")
            return facts
        rc, out, err = got["ns:" + spec["namespace"]]
        if rc != 0:
            down = "does not answer" if API_DOWN.search(err) or rc in (124, 127) else "refused the read"
            facts.update(found=False, detail=f"kubernetes-api: {down}: {last_line(err) or f'exit {rc}'}")
            return facts
        try:
            items = json.loads(out).get("items") or []
        except (ValueError, AttributeError):
            facts.update(found=False, detail="kubernetes-api: the Deployment list is not JSON")
            return facts
        by_name = {str((i.get("metadata") or {}).get("name")): i for i in items if isinstance(i, dict)}
        facts["found"] = all(d["name"] in by_name for d in spec["deployments"])
        if not facts["found"]:
            return facts
        images, requested, ready, generations = [], [], [], []
        for d in spec["deployments"]:
            item = by_name[d["name"]]
            generations.append(f"{d['name']}={clean((item.get('metadata') or {}).get('generation', ''), 20)}")
            pod = ((item.get("spec") or {}).get("template") or {}).get("spec") or {}
            containers = [c for c in pod.get("containers") or [] if c.get("name") == d["container"]]
            mine: dict[str, Any] = containers[0] if containers else {}
            env = [e for e in mine.get("env") or [] if e.get("name") == spec["envPrefix"] + "COMMIT"]
            images.append(clean(mine.get("image") or "", 300))
            requested.append(clean(env[-1].get("value") or "", 100) if env else "")
            ready.append(int((item.get("status") or {}).get("readyReplicas") or 0) >= 1)
        whys: list[str] = []
        if len(set(images)) > 1 or len(set(requested)) > 1:
            whys.append(f"the Deployments disagree: images {images}, requested commits {requested}")
        facts.update(
            image=images[0] if len(set(images)) == 1 and images[0] else None,
            requestedCommit=requested[0] if len(set(requested)) == 1 and requested[0] else None,
            running=all(ready),
            generation=",".join(generations),
        )
        if not all(ready):
            whys.append("not every Deployment has a ready replica")
        hrc, body, herr = got["health:" + spec["service"]]
        answer = (
            (200, body.encode("utf-8"), "") if hrc == 0 else (None, b"", "service proxy: " + last_line(herr))
        )
        return with_detail(facts, whys, self.health_facts(answer))

    # ------------------------------------------------------------------ manifests, auth

    def manifest(self, m: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
        """(repo:tag, its digest or None when the registry has no such manifest, why it is unknown)."""
        key = f"{m['repository']}:{m['tag']}"
        host, _, port = str(m["endpoint"]).rpartition(":")
        path = f"/v2/{m['repository']}/manifests/{m['tag']}"
        accept = [("Accept", media_type) for media_type in self.media_types]
        try:
            status, headers, _ = self.request(
                "HEAD", host, int(port), path, headers=accept, timeout=HTTP_TIMEOUT
            )
        except (OSError, http.client.HTTPException) as exc:
            return key, None, "registry-unreachable: " + clean(f"{type(exc).__name__}: {exc}", 120)
        if status == 404:
            return key, None, None
        digest = headers.get("docker-content-digest", "")
        if status == 200 and self.digest_re.fullmatch(digest):
            return key, digest, None
        return key, None, f"registry-error: HTTP {status} (digest {clean(digest, 80)!r})"

    def manifest_facts(
        self, specs: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, str | None], dict[str, str]]:
        found: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        for key, digest, error in parallel(
            {str(i): partial(self.manifest, m) for i, m in enumerate(specs)}
        ).values():
            if error is None:
                found[key] = digest
            else:
                errors[key] = error
        return found, errors

    def auth_facts(self, path: str | None) -> dict[str, Any] | None:
        """The sha256 hex of the canonical auth section (what the dev auth sync stores), never the section."""
        if path is None:
            return None
        code, line = self.auth.read_auth(path)
        if code != 0:
            return {"configPath": path, "sha256": None, "error": clean(line.split(" ", 1)[0], 40)}
        digest = str(json.loads(line).get("authSha256", ""))
        return {"configPath": path, "sha256": digest.split(":", 1)[-1], "error": None}

    # ------------------------------------------------------------------ everything

    def collect(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        got = parallel(
            {
                "compose": partial(self.compose_facts, spec.get("compose", [])),
                "k3s": partial(self.k3s_facts, spec.get("k3s", [])),
                "manifests": partial(self.manifest_facts, spec.get("manifests", [])),
                "auth": partial(self.auth_facts, spec.get("authConfig")),
            }
        )
        manifests, errors = got["manifests"]
        return {
            "services": {**got["compose"], **got["k3s"]},
            "manifests": manifests,
            "manifestErrors": errors,
            "auth": got["auth"],
            "tools": dict(sorted(self.tools.items())),
        }


# --------------------------------------------------------------------------- main


def registry_facts(text: str) -> tuple[Any, str | None]:
    """The registry probe's facts (stdin; None when not collected here), or why they are missing."""
    if not text.strip():
        return None, None
    try:
        doc = json.loads(text.strip().splitlines()[-1])
    except ValueError:
        return None, "the registry facts are not JSON"
    return (doc, None) if isinstance(doc, dict) else (None, "the registry facts are not an object")


def user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def answer(
    argv: Sequence[str], environ: Mapping[str, str], stdin: str, factory: Any = Probe
) -> tuple[int, str]:
    """(exit code, the one output line) for the script's argv, the helpers' texts and the registry facts."""
    spec_b64, host, started, docker_mode, docker_state = argv[:5]
    revision_label, commit_pattern, digest_pattern = argv[5:8]
    try:
        spec = decode_spec(spec_b64, re.compile(commit_pattern.strip("^$")))
    except SpecError as exc:
        refusal = {
            "ok": False,
            "error": "invalid-argument",
            "detail": "--spec-b64: " + clean(exc, 300),
            "retryable": False,
            "argument": "--spec-b64",
        }
        return INVALID, json.dumps(refusal, separators=COMPACT)
    probe = factory(
        helpers={name: load_helper(name, environ["LIVEFACTS_" + name.upper()]) for name in HELPERS},
        docker={"docker": ["docker"], "sudo": ["sudo", "-n", "docker"]}.get(docker_mode),
        docker_state=docker_state,
        revision_label=revision_label,
        digest_re=re.compile(digest_pattern.strip("^$")),
        media_types=argv[8:],
    )
    facts = probe.collect(spec)
    registry, registry_error = registry_facts(stdin)
    try:
        seconds: float | None = round(time.time() - float(started), 3)
    except ValueError:
        seconds = None
    doc = {
        "ok": True,
        "probe": "live-probe",
        "version": 1,
        "host": host,
        "hostname": clean(socket.gethostname(), 100),
        "user": clean(user_name(), 40),
        "docker": {"state": docker_state, "sudo": docker_mode == "sudo"},
        **facts,
        "registry": registry,
        "registryError": registry_error,
        "seconds": seconds,
    }
    return 0, json.dumps(doc, separators=COMPACT, ensure_ascii=False)


def main(argv: Sequence[str]) -> int:
    code, line = answer(argv, os.environ, sys.stdin.read())
    sys.stdout.write(line + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
