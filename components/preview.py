"""The program previewed in-process: ``__main__.py`` under ``pulumi.runtime.set_mocks``.

No Pulumi CLI exists on these machines, so this is how ``python -m artifact_cd plan --stack S
--resources`` shows the program: the very same ``__main__.py`` an operator's ``pulumi preview`` /
``pulumi up`` runs, evaluated against a mock monitor that records every ``RegisterResource``
request (type, name, parent, inputs with their secret marks, options: protect, retainOnDelete,
dependsOn, additionalSecretOutputs, provider...). As in a real preview, the outputs a provider
computes (a Command's ``stdout``/``stderr``) stay unknown.

The seam for other runs is :class:`ProgramMocks`: ``run_program(..., mocks=...)`` takes a subclass
that sets ``preview = False`` and overrides :meth:`ProgramMocks.created_outputs`, which gets each
registered resource (URN, decoded inputs, options) when the engine would create it — after
everything it depends on — and returns what the provider computes. The test engine
(``tests/engine.py``) does that to run Commands through an executor.

``run_program`` is not re-entrant (the Pulumi runtime settings are process-global); calls are
serialised by a lock. Each call starts a fresh root stack.

Without ``secrets`` a run gets placeholder secrets, which reach no host: the program then decides
without a live view (``components.live_source.without_live_view``): every service as planned, the
way ``plan --resources`` shows it. What the program logs (``pulumi.log``: the live view's warnings,
held and refused services) is in ``ProgramRun.logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import runpy
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format  # type: ignore[import-untyped]
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from artifact_cd import config as core_config
from artifact_cd import gates, scripts

from . import live_source

PROGRAM_DIR = Path(__file__).resolve().parent.parent  # the Pulumi project: Pulumi.yaml, __main__.py
COMMAND_TYPE = "command:remote:Command"
STACK_TYPE = "pulumi:pulumi:Stack"

_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (Pulumi's wire marker, not a secret)
_UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

PLACEHOLDER_SECRET = "offline-placeholder-not-a-secret"  # noqa: S105 (what an offline preview gets)
_RUN_LOCK = threading.Lock()


class _Unknown:
    """A value the engine does not know yet (preview)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


@dataclass
class RegisteredResource:
    type: str
    name: str
    urn: str
    parent: str | None  # the parent's name; None for resources parented by the stack
    parent_urn: str | None
    custom: bool
    inputs: dict[str, Any]  # plain values (secrets unwrapped); UNKNOWN where the engine does not know yet
    secret_paths: frozenset[str]  # dotted paths of the inputs that were marked secret
    options: dict[str, Any]  # protect, retainOnDelete, dependsOn, additionalSecretOutputs, provider, ...
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def redacted_inputs(self) -> dict[str, Any]:
        """The inputs with every secret-marked value replaced by ``"[secret]"``."""
        redacted: dict[str, Any] = _redact(self.inputs, "", self.secret_paths)
        return redacted

    def input_is_secret(self, path: str) -> bool:
        return any(path == p or path.startswith(p + ".") for p in self.secret_paths)


@dataclass
class ProgramRun:
    stack: str
    preview: bool
    resources: list[RegisteredResource]
    outputs: dict[str, Any]
    error: BaseException | None
    logs: list[tuple[str, str]] = field(default_factory=list)  # (level name, message) from pulumi.log

    def warnings(self) -> list[str]:
        return [message for level, message in self.logs if level == "WARNING"]

    def errors(self) -> list[str]:
        return [message for level, message in self.logs if level == "ERROR"]

    def of_type(self, type_: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> RegisteredResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def children(self, parent: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.parent == parent]

    @property
    def program_resources(self) -> list[RegisteredResource]:
        """Everything the program registered (the root stack excluded)."""
        return [r for r in self.resources if r.type != STACK_TYPE]


# --------------------------------------------------------------------------- decoding


def _decode(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            secrets.add(path)
            return _decode(value.get("value"), path, secrets)
        return {k: _decode(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, f"{path}.{i}", secrets) for i, v in enumerate(value)]
    if value == _UNKNOWN_VALUE:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redact(value: Any, path: str, secrets: frozenset[str]) -> Any:
    if path and path in secrets:
        return "[secret]"
    if isinstance(value, dict):
        return {k: _redact(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, f"{path}.{i}", secrets) for i, v in enumerate(value)]
    return value


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _plain(value: Any) -> Any:
    secrets: set[str] = set()
    return _decode(value, "", secrets)


def script_of(stdin: str) -> str | None:
    """The step script (``lib.sh`` + script) a Command's stdin carries, when it is one of ours."""
    for path in sorted(scripts.SCRIPT_DIR.glob("*.sh")):
        if path.name == scripts.LIB:
            continue
        if scripts.script_text(path.name) == stdin:
            return path.name
    return None


# --------------------------------------------------------------------------- the mock engine


class ProgramMocks(pulumi.runtime.Mocks):
    """The provider side of a run under mocks. As is, a preview: no resource gets an output beyond
    its inputs, so a Command's ``stdout``/``stderr`` stay unknown.

    A run that creates (a test engine's ``pulumi up``) subclasses it: ``preview = False`` and
    :meth:`created_outputs`. Raising there fails the resource (and the run) like a provider error.
    """

    preview: bool = True

    def created_outputs(self, resource: RegisteredResource) -> Mapping[str, Any]:
        """What the provider computes when it creates ``resource`` (beyond its inputs); the engine
        calls this once per registration, after everything the resource depends on. A preview
        creates nothing."""
        return {}

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)


class RecordingMonitor(MockMonitor):
    """The mock monitor: records every registration as a :class:`RegisteredResource`, and adds
    :meth:`ProgramMocks.created_outputs` to the outputs the SDK gets back."""

    def __init__(self, program_mocks: ProgramMocks) -> None:
        super().__init__(program_mocks)
        self.program_mocks = program_mocks
        self._lock = threading.Lock()
        self.recorded: list[RegisteredResource] = []

    def RegisterResource(self, request: Any) -> Any:
        raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
        secrets: set[str] = set()
        inputs = _decode(raw, "", secrets)
        parent_urn = request.parent or None
        parent = _name_of(parent_urn) if parent_urn and f"::{STACK_TYPE}::" not in parent_urn else None
        options = {
            "protect": bool(request.protect),
            "retainOnDelete": bool(request.retainOnDelete),
            "dependsOn": sorted(_name_of(u) for u in request.dependencies),
            "additionalSecretOutputs": sorted(request.additionalSecretOutputs),
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            "ignoreChanges": list(request.ignoreChanges),
            "replaceOnChanges": list(request.replaceOnChanges),
            "provider": request.provider or None,
            "deletedWith": request.deletedWith or None,
        }
        urn = self.make_urn(request.parent, request.type, request.name)
        record = RegisteredResource(
            type=request.type,
            name=request.name,
            urn=urn,
            parent=parent,
            parent_urn=parent_urn,
            custom=bool(request.custom),
            inputs=inputs,
            secret_paths=frozenset(secrets),
            options=options,
        )
        with self._lock:
            self.recorded.append(record)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != STACK_TYPE:
            created = self.program_mocks.created_outputs(record)
            if created:
                response.object.MergeFrom(_sync_await(rpc.serialize_properties(dict(created), {})))
            record.outputs = _plain(
                json_format.MessageToDict(response.object, preserving_proto_field_name=True)
            )
        return response


# --------------------------------------------------------------------------- running


@contextmanager
def _environment(environ: Mapping[str, str] | None) -> Iterator[None]:
    """For the run: no stray Pulumi config from the process; gate variables only from ``environ``."""
    drop = {"PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"}
    if environ is not None:
        drop |= set(gates.SELF_BOOTSTRAP_ENV_VARS)
    saved = {k: os.environ[k] for k in list(os.environ) if k in drop or k.startswith("PULUMI_CONFIG_")}
    for key in saved:
        del os.environ[key]
    added = dict(environ or {})
    previous = {k: os.environ.get(k) for k in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.update(saved)


def _config_values(stack: str, config: Mapping[str, Any] | None, project_dir: Path) -> dict[str, Any]:
    """Plain config values. An encrypted secret (``{secure: ...}``) cannot be read here and is
    dropped; a secret key given as a plain string stays plain — as ``pulumi config set`` without
    ``--secret`` would store it (the program refuses that)."""
    if config is None:
        config = core_config.read_stack_file(project_dir / f"Pulumi.{stack}.yaml")
    return {k: v for k, v in config.items() if not (k in core_config.SECRET_KEYS and isinstance(v, dict))}


def _to_config_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _resolve(value: Any) -> Any:
    if isinstance(value, pulumi.Output):
        known = await value.is_known()
        if not known:
            return UNKNOWN
        return await _resolve(await value.future(with_unknowns=True))
    if isinstance(value, dict):
        return {k: await _resolve(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [await _resolve(v) for v in value]
    if value is not None and type(value).__name__ == "Unknown":
        return UNKNOWN
    return value


_LOG = logging.getLogger("components.preview")


class _Recorder(logging.Handler):
    """Keeps what the program logs through ``pulumi.log`` during one run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


@contextmanager
def _recording() -> Iterator[_Recorder]:
    recorder = _Recorder()
    _LOG.addHandler(recorder)
    try:
        yield recorder
    finally:
        _LOG.removeHandler(recorder)


def _quiet_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A failed run leaves Outputs nobody awaits; their error is already ``ProgramRun.error``."""
    message = str(context.get("message", ""))
    if message.endswith("exception was never retrieved"):
        _LOG.debug("%s: %r", message, context.get("exception"))
        return
    loop.default_exception_handler(context)


def _run_main() -> None:
    """Exactly what the Python language host does with ``main: .``: run the directory's ``__main__.py``."""
    runpy.run_path(str(PROGRAM_DIR), run_name="__main__")


def run_program(
    stack: str,
    *,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    project_dir: Path | None = None,
    mocks: ProgramMocks | None = None,
) -> ProgramRun:
    """Evaluate ``__main__.py`` for ``stack`` under mocks; never raises for a program error.

    ``config``: the project's keys without namespace (objects as Python values); default: read
    ``Pulumi.<stack>.yaml`` from ``project_dir`` (default: the project beside this package).
    ``secrets`` gives the secret keys, stored as Pulumi secrets; default: a placeholder for every
    secret key (a plain string for a secret key in ``config`` is passed unencrypted).
    ``environ``: the variables the gates read (e.g. ``UNIDESK_CODE_QUEUE_TASK_ID``); when given,
    the process's own gate variables are hidden for the run.
    ``mocks``: the provider side of the run; default ``ProgramMocks()``, a preview.
    """
    project_dir = project_dir or PROGRAM_DIR
    project = core_config.PROJECT
    values = _config_values(stack, config, project_dir)
    placeholders = secrets is None
    if secrets is None:
        secrets = {key: PLACEHOLDER_SECRET for key in core_config.SECRET_KEYS if key not in values}
    all_config = {f"{project}:{k}": _to_config_string(v) for k, v in values.items()}
    all_config.update({f"{project}:{k}": v for k, v in secrets.items()})
    secret_keys = [f"{project}:{k}" for k in secrets]

    offline = live_source.without_live_view() if placeholders else contextlib.nullcontext()
    with _RUN_LOCK, _environment(environ), offline, _recording() as recorder:
        program_mocks = mocks or ProgramMocks()
        preview = program_mocks.preview
        monitor = RecordingMonitor(program_mocks)
        settings.ROOT.set(None)
        settings.SETTINGS.outputs.clear()
        pulumi.runtime.set_all_config(all_config, secret_keys)
        pulumi.runtime.set_mocks(
            program_mocks,
            project=project,
            stack=stack,
            preview=preview,
            monitor=monitor,
            logger=_LOG,
        )
        _ensure_event_loop().set_exception_handler(_quiet_unretrieved)  # type: ignore[no-untyped-call]
        error: BaseException | None = None
        try:
            _sync_await(run_pulumi_func(_run_main))
        except Exception as exc:  # the program's refusal or failure is the result, not a crash
            error = exc
        outputs: dict[str, Any] = {}
        root = settings.get_root_resource()
        raw_outputs: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
        try:
            outputs = _sync_await(_resolve(raw_outputs))
        except Exception as exc:
            error = error or exc
        pulumi.runtime.set_all_config({}, [])
        return ProgramRun(
            stack=stack,
            preview=preview,
            resources=list(monitor.recorded),
            outputs=outputs,
            error=error,
            logs=list(recorder.records),
        )


# --------------------------------------------------------------------------- --resources view


def _jsonable(value: Any) -> Any:
    if value is UNKNOWN:
        return "<unknown>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _has_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def _plan_steps(outputs: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """component name → step id → step document, from the exported plan documents."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    plans = outputs.get("plans")
    if isinstance(plans, dict):
        for service, doc in plans.items():
            if isinstance(doc, dict):
                out[service] = {s["id"]: s for s in doc.get("steps", []) if isinstance(s, dict)}
    host = outputs.get("registryHost")
    if isinstance(host, dict):
        from .program import REGISTRY_COMPONENT

        out[REGISTRY_COMPONENT] = {s["id"]: s for s in host.get("steps", []) if isinstance(s, dict)}
    return out


def _step_for(
    r: RegisteredResource, steps: Mapping[str, Mapping[str, dict[str, Any]]]
) -> dict[str, Any] | None:
    if r.parent is None or not r.name.startswith(r.parent + "-"):
        return None
    return steps.get(r.parent, {}).get(r.name[len(r.parent) + 1 :])


def describe_resource(
    r: RegisteredResource, steps: Mapping[str, Mapping[str, dict[str, Any]]]
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": r.type,
        "name": r.name,
        "parent": r.parent,
        "protect": r.options["protect"],
        "retainOnDelete": r.options["retainOnDelete"],
        "dependsOn": r.options["dependsOn"],
        "additionalSecretOutputs": r.options["additionalSecretOutputs"],
    }
    if r.options.get("provider"):
        # a provider reference is "<provider urn>::<id>"; show the provider's name
        parts = str(r.options["provider"]).split("::")
        doc["provider"] = parts[3] if len(parts) >= 5 else r.options["provider"]
    inputs = r.redacted_inputs
    step = _step_for(r, steps)
    if r.type == COMMAND_TYPE:
        conn = inputs.get("connection")
        plain_conn = r.inputs.get("connection") or {}
        create = r.inputs.get("create")
        resolved = isinstance(create, str)
        if not resolved and step is not None:
            create = scripts.command_line(step.get("args", []))
        stdin = r.inputs.get("stdin")
        doc["command"] = {
            "host": plain_conn.get("host"),
            "port": plain_conn.get("port"),
            "user": plain_conn.get("user"),
            "connection": "[secret]" if conn == "[secret]" else "private key: [secret]",
            "create": create if resolved or step is not None else UNKNOWN,
            "createResolved": resolved,
            "stdinSha256": hashlib.sha256(stdin.encode("utf-8")).hexdigest()
            if isinstance(stdin, str)
            else None,
            "script": step.get("script") if step else script_of(stdin) if isinstance(stdin, str) else None,
            "triggers": inputs.get("triggers"),
            "logging": inputs.get("logging"),
            "delete": inputs.get("delete"),
        }
        if step is not None:
            doc["command"]["step"] = step["id"]
    elif r.type.startswith("kubernetes:") and r.type.endswith("Patch"):
        body = {k: v for k, v in inputs.items() if k not in ("apiVersion", "kind")}
        unresolved = _has_unknown(r.inputs)
        if step is not None and isinstance(step.get("patch"), dict) and unresolved:
            doc["patch"] = step["patch"]  # the plan's template: live placeholders instead of unknowns
        else:
            doc["patch"] = body
        doc["patchResolved"] = not unresolved
        doc["apiVersion"], doc["kind"] = inputs.get("apiVersion"), inputs.get("kind")
    else:
        doc["inputs"] = inputs
    return _jsonable(doc)  # type: ignore[no-any-return]


def resources_document(run: ProgramRun) -> dict[str, Any]:
    """The stable JSON of ``python -m artifact_cd plan --stack S --resources`` (see docs/contracts.md)."""
    steps = _plan_steps(run.outputs)
    resources = [describe_resource(r, steps) for r in run.program_resources]
    resources.sort(key=lambda d: (d["parent"] or "", d["type"], d["name"]))
    return {
        "stack": run.stack,
        "preview": run.preview,
        "secrets": "placeholders: the offline view never reads or prints a secret",
        "plans": _jsonable(run.outputs.get("plans")),
        "registryHost": _jsonable(run.outputs.get("registryHost")),
        "resources": resources,
        "counts": {
            "resources": len(resources),
            "commands": sum(1 for d in resources if d["type"] == COMMAND_TYPE),
            "patches": sum(1 for d in resources if "patch" in d),
        },
    }
