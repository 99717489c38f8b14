"""The test engine: ``__main__.py`` run as ``pulumi preview`` / ``pulumi up`` would, under mocks.

It extends the product's preview run (``components/preview.py``) through its seam,
:class:`components.preview.ProgramMocks`. Two ways to use it:

**One run from an empty state** (:func:`run_program`):

- ``preview=True``: exactly the product's preview (outputs of Commands are unknown).
- ``preview=False`` with an ``executor``: every ``command:remote:Command`` is handed to
  ``executor(CommandCall(...))`` when the engine would create it — after everything it depends
  on — and the executor's ``stdout``/``stderr`` become its outputs. A non-zero ``returncode``
  (or ``exitCode``) fails the Command like the real provider does (:class:`CommandFailed`; its
  stdout/stderr redacted when the Command's stdout is a secret output). Registrations arrive on
  the SDK's worker threads: independent Commands may run concurrently; dependent ones never do.

**Consecutive runs against one stack's state** (:class:`Stack`): ``Stack.preview`` and
``Stack.up`` carry a per-URN state between runs, like a file backend, and decide each
registration's operation (create / update / replace / same, then delete) the way the real engine
and providers do. The rules are those of ``docs/engine-semantics.md``, section "Rules a
state-carrying test engine must follow"; the docstrings below cite them as ``[rule n]`` and the
underlying sections as C<n> (pulumi-command), E<n> (engine), K<n> (pulumi-kubernetes patches) and
M<n> (the SDK's mocks). Not modelled: ``--target`` and ``refresh`` (rules 11, 13), the readiness
wait and partial failures of patches (rule 14), ``protect``, provider-driven replacement of a
resource whose provider changed.

Executors: ``tests/program/program_support.py`` ``FakeHosts`` (each script's contract result, no
SSH) and ``tests.rig`` ``Rig.execute`` (real SSH to the rig's hosts). An executor should run
``call.command`` (the ``update`` command of an update when the Command has one, else ``create``;
this program sets no ``update``, so it always equals ``call.create``).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from pulumi.runtime import rpc

from components.preview import (
    COMMAND_TYPE,
    STACK_TYPE,
    UNKNOWN,
    ProgramMocks,
    ProgramRun,
    RegisteredResource,
    script_of,
)
from components.preview import run_program as run_preview

__all__ = [
    "COMMAND_TYPE",
    "UNKNOWN",
    "CommandCall",
    "CommandFailed",
    "Executor",
    "ExecutorMocks",
    "Op",
    "PatchCall",
    "PatchFailed",
    "Patcher",
    "ProgramInputs",
    "ProgramRun",
    "RunReport",
    "Stack",
    "StoredResource",
    "decide",
    "diff_paths",
    "ignore_changes",
    "parse_property_path",
    "run_program",
]

Op = Literal["create", "update", "replace", "delete", "same"]
ProviderOp = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class CommandCall:
    """What the real provider would run: ``command`` over SSH to ``user@host:port``, ``stdin`` fed in.

    ``op`` is the provider operation: ``create`` (also the new resource's create of a replace
    [rule 6]), ``update`` or ``delete``. ``command`` is the command line that operation runs:
    ``create``; for an update the new ``update`` when set, else the new ``create`` [rule 5, C5];
    for a delete the stored ``delete`` [rule 8, C6]. ``environment`` is what the provider sets
    over SSH: the Command's ``environment`` input, plus on an update the previous
    ``PULUMI_COMMAND_STDOUT``/``PULUMI_COMMAND_STDERR`` unless ``addPreviousOutputInEnv`` is
    false [rule 5, C8].
    """

    name: str
    host: str
    port: int
    user: str
    create: str
    stdin: str
    script: str | None = None  # the step script the stdin carries (lib.sh + script), when recognised
    op: ProviderOp = "create"
    command: str = ""  # what runs; "" means ``create``
    update: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.command:
            object.__setattr__(self, "command", self.create)

    @classmethod
    def of(
        cls,
        command: RegisteredResource,
        *,
        op: ProviderOp = "create",
        previous_outputs: Mapping[str, Any] | None = None,
    ) -> CommandCall:
        return cls._from(command.name, command.inputs, op=op, previous_outputs=previous_outputs)

    @classmethod
    def _from(
        cls,
        name: str,
        inputs: Mapping[str, Any],
        *,
        op: ProviderOp = "create",
        previous_outputs: Mapping[str, Any] | None = None,
    ) -> CommandCall:
        conn = inputs.get("connection") or {}
        stdin = str(inputs.get("stdin") or "")
        create = str(inputs.get("create", ""))
        update = inputs.get("update")
        update = str(update) if isinstance(update, str) and update else None
        run = create
        if op == "update" and update:
            run = update
        elif op == "delete":
            run = str(inputs.get("delete") or "")
        env = {str(k): str(v) for k, v in (inputs.get("environment") or {}).items()}
        if op == "update" and previous_outputs and inputs.get("addPreviousOutputInEnv") is not False:
            env.setdefault("PULUMI_COMMAND_STDOUT", str(previous_outputs.get("stdout", "")))
            env.setdefault("PULUMI_COMMAND_STDERR", str(previous_outputs.get("stderr", "")))
        return cls(
            name=name,
            host=str(conn.get("host", "")),
            port=int(conn.get("port", 22)),
            user=str(conn.get("user", "root")),
            create=create,
            stdin=stdin,
            script=script_of(stdin),
            op=op,
            command=run,
            update=update,
            environment=env,
        )


Executor = Callable[[CommandCall], Mapping[str, Any]]


class CommandFailed(RuntimeError):
    """A Command's executor reported a non-zero exit: the run fails like the real provider's."""

    def __init__(self, call: CommandCall, returncode: int, stdout: str, stderr: str, *, secret: bool) -> None:
        self.call = call
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        result = "[secret]" if secret else (stdout.strip().splitlines() or [""])[-1]
        tail = "[secret]" if secret else "\n".join(stderr.strip().splitlines()[-5:])
        super().__init__(
            f"Command {call.name} on {call.user}@{call.host}:{call.port} exited with status {returncode}: "
            f"result {result} stderr {tail}"
        )


def _execute(
    executor: Executor, call: CommandCall, secret_stdout: bool, *, trim: bool = False
) -> dict[str, str]:
    """Run ``call``; its stdout/stderr, or :class:`CommandFailed` for a non-zero exit.
    ``trim``: one trailing newline off each, as the provider stores them [rule 5, C7]."""
    result = executor(call)
    stdout, stderr = str(result.get("stdout", "")), str(result.get("stderr", ""))
    code = int(result.get("returncode", result.get("exitCode", 0)) or 0)
    if code != 0:
        if secret_stdout:
            raise CommandFailed(call, code, "", "", secret=True)
        raise CommandFailed(call, code, stdout, stderr, secret=False)
    if trim:
        stdout, stderr = stdout.removesuffix("\n"), stderr.removesuffix("\n")
    return {"stdout": stdout, "stderr": stderr}


class ExecutorMocks(ProgramMocks):
    """``pulumi up`` from an empty state: each Command's outputs are what ``executor`` returns."""

    preview = False

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def created_outputs(self, resource: RegisteredResource) -> dict[str, Any]:
        if resource.type != COMMAND_TYPE:
            return {}
        secret = "stdout" in resource.options["additionalSecretOutputs"]
        return _execute(self.executor, CommandCall.of(resource), secret)


class ProgramInputs(TypedDict, total=False):
    """What one run of the program reads: ``components.preview.run_program``'s arguments (see
    there) but the mocks."""

    config: Mapping[str, Any] | None
    secrets: Mapping[str, str] | None
    environ: Mapping[str, str] | None
    project_dir: Path | None


def run_program(
    stack: str, *, preview: bool = True, executor: Executor | None = None, **inputs: Unpack[ProgramInputs]
) -> ProgramRun:
    """``components.preview.run_program``, or with ``preview=False`` a ``pulumi up`` whose
    Commands run through ``executor`` (required then, ignored in a preview)."""
    mocks: ProgramMocks | None = None
    if not preview:
        if executor is None:
            raise TypeError("run_program(preview=False) needs an executor (tests/program: FakeHosts)")
        mocks = ExecutorMocks(executor)
    return run_preview(stack, mocks=mocks, **inputs)


# =========================================================================== property paths

Segment = str | int  # "*" is the wildcard
Path_ = tuple[Segment, ...]
_MISSING: Any = object()


def parse_property_path(text: str) -> Path_:
    """A Pulumi property path as its segments: ``a.b``, ``a[0]``, ``a[*]``, ``a["k.e.y"]``, ``*``
    (the syntax of ``ignoreChanges`` / ``replaceOnChanges`` and of detailed-diff keys)."""
    segments: list[Segment] = []
    i, n = 0, len(text)
    name = ""
    while i < n:
        ch = text[i]
        if ch == ".":
            if name:
                segments.append(name)
            name = ""
            i += 1
        elif ch == "[":
            if name:
                segments.append(name)
            name = ""
            end = text.find("]", i)
            if end < 0:
                raise ValueError(f"unterminated [ in property path {text!r}")
            inner = text[i + 1 : end]
            if inner.startswith('"'):
                # a quoted key may contain ] and escaped quotes: scan to the closing quote
                j, key = i + 2, ""
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    key += text[j]
                    j += 1
                if j + 1 >= n or text[j + 1] != "]":
                    raise ValueError(f"bad quoted key in property path {text!r}")
                segments.append(key)
                i = j + 2
                continue
            if inner == "*":
                segments.append("*")
            elif inner.isdigit():
                segments.append(int(inner))
            else:
                raise ValueError(f"bad index [{inner}] in property path {text!r}")
            i = end + 1
        else:
            name += ch
            i += 1
    if name:
        segments.append(name)
    if not segments:
        raise ValueError("empty property path")
    return tuple(segments)


def format_property_path(path: Path_) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg == "*":
            out += "[*]"
        elif seg.replace("_", "a").replace("-", "a").isalnum() and not seg[:1].isdigit():
            out += ("." if out else "") + seg
        else:
            out += '["' + seg.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


def diff_paths(old: Any, new: Any, path: Path_ = ()) -> list[Path_]:
    """The detailed diff of two property values, as the engine computes it: objects by key,
    arrays element by element by index (a longer or shorter array differs at the extra indices),
    an unknown never equal to anything [C3, E10]."""
    if new is UNKNOWN or old is UNKNOWN:
        return [path]
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Path_] = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                out.append((*path, key))
            else:
                out += diff_paths(old[key], new[key], (*path, key))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            if i >= len(old) or i >= len(new):
                out.append((*path, i))
            else:
                out += diff_paths(old[i], new[i], (*path, i))
        return out
    if type(old) is not type(new) and not (
        isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool)
    ):
        return [path]
    return [] if old == new else [path]


def _matches(pattern: Path_, path: Path_) -> bool:
    """``pattern`` (with ``*`` wildcards) names ``path`` or one of its ancestors."""
    return len(pattern) <= len(path) and all(p in ("*", s) for p, s in zip(pattern, path, strict=False))


def _child(value: Any, seg: Segment) -> Any:
    if isinstance(value, dict) and isinstance(seg, str) and seg in value:
        return value[seg]
    if isinstance(value, list) and isinstance(seg, int) and 0 <= seg < len(value):
        return value[seg]
    return _MISSING


def _keys(value: Any) -> list[Segment]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return list(range(len(value)))
    return []


def _expand(pattern: Path_, roots: Sequence[Any], prefix: Path_ = ()) -> list[Path_]:
    if not pattern:
        return [prefix]
    head, rest = pattern[0], pattern[1:]
    keys: list[Segment] = [head]
    if head == "*":
        keys = []
        for root in roots:
            keys += [k for k in _keys(root) if k not in keys]
    out: list[Path_] = []
    for key in keys:
        out += _expand(rest, [_child(r, key) for r in roots], (*prefix, key))
    return out


def _get(value: Any, path: Path_) -> Any:
    for seg in path:
        value = _child(value, seg)
        if value is _MISSING:
            break
    return value


def ignore_changes(new: Mapping[str, Any], old: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """``new`` with each ``ignoreChanges`` path reset to the stored value: the old value where the
    old inputs have one, else the property is dropped from the new inputs — the engine's
    ``processIgnoreChanges`` (pulumi ``pkg/resource/deploy/step_generator.go``; the option is
    documented at https://www.pulumi.com/docs/iac/concepts/resources/options/ignorechanges/).
    Only applied when there is old state (a create uses the new inputs) [rule 3]."""
    result: dict[str, Any] = copy.deepcopy(dict(new))
    for text in paths:
        for path in _expand(parse_property_path(text), [old, result]):
            parent = _get(result, path[:-1])
            if parent is _MISSING:
                continue
            old_value = _get(old, path)
            last = path[-1]
            settable = (isinstance(parent, dict) and isinstance(last, str)) or (
                isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            )
            if old_value is not _MISSING and settable:
                parent[last] = copy.deepcopy(old_value)
            elif old_value is _MISSING and isinstance(parent, dict) and isinstance(last, str):
                parent.pop(last, None)
    return result


# =========================================================================== state


@dataclass
class StoredResource:
    """One URN in the stack's state [rule 1]: type, inputs as registered (secrets unwrapped, the
    secret-marked paths in ``secret_paths``), the outputs the provider computed beyond its inputs
    (a Command's ``stdout``/``stderr``; the state repeats every input, C1) and the options of the
    registration (from the ``RegisterResourceRequest``, M2)."""

    urn: str
    type: str
    name: str
    custom: bool
    parent_urn: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    options: dict[str, Any]
    secret_paths: frozenset[str] = frozenset()
    order: int = 0  # registration order of the last run that touched it (deletes go in reverse)


def is_patch(type_: str) -> bool:
    return type_.startswith("kubernetes:") and type_.endswith("Patch")


def decide(
    old: StoredResource | None,
    resource: RegisteredResource,
    inputs: Mapping[str, Any],
    *,
    force_replace: bool,
) -> tuple[Op, list[str]]:
    """The operation the engine takes for one registration, and the differing property paths.

    - no stored state → ``create`` [rule 2; E1, E8];
    - a component (not custom) with state → ``same``: no provider diffs it;
    - ``force_replace`` (``pulumi up --replace <urn>``) → ``replace`` [rule 11, E6];
    - no difference between the stored inputs and ``inputs`` (already through ``ignoreChanges``)
      → ``same`` [rule 3; C4, E2, K6];
    - a Command whose ``triggers`` differ anywhere (element-wise, length, set/unset) → ``replace``
      [rule 4; C2, C3];
    - a Kubernetes ``*Patch`` whose ``metadata.name`` or ``metadata.namespace`` differs →
      ``replace`` [rule 12, K5];
    - a difference under one of the registration's ``replaceOnChanges`` paths → ``replace`` [E3];
    - any other difference → ``update`` [rule 4; C2, K5]. An unknown input never equals the
      stored value, so a dependent of an unknown output is an update or a replace [rule 9, E10].
      A provider resource (``pulumi:providers:*``) with changed config is reported as an update
      (whether its provider would ask for a replace is not modelled).
    """
    if old is None:
        return "create", []
    if not resource.custom:
        return "same", []
    if force_replace:
        return "replace", ["id"]
    paths = diff_paths(old.inputs, dict(inputs))
    if not paths:
        return "same", []
    names = [format_property_path(p) for p in paths]
    replace_on: list[Path_] = [parse_property_path(p) for p in resource.options.get("replaceOnChanges", [])]
    if resource.type == COMMAND_TYPE:
        replace_on.append(("triggers",))
    if is_patch(resource.type):
        replace_on += [("metadata", "name"), ("metadata", "namespace")]
    if any(_matches(pattern, path) for pattern in replace_on for path in paths):
        return "replace", names
    return "update", names


@dataclass(frozen=True)
class PatchCall:
    """A Kubernetes ``*Patch`` the engine would apply (create/update: a forced server-side apply
    under the stored field manager; delete: relinquish its fields) [rule 12; K2, K4, K8]."""

    name: str
    urn: str
    type: str
    op: ProviderOp
    inputs: Mapping[str, Any] = field(hash=False)


Patcher = Callable[[PatchCall], None]


class PatchFailed(RuntimeError):
    """A patcher hook refused a patch (raise this, or anything, from the hook)."""


@dataclass
class RunReport:
    """One run against a :class:`Stack`: the program run, each URN's operation [rule 10], what the
    executor ran, in order, and the property paths that made each change."""

    run: ProgramRun
    preview: bool
    ops: dict[str, Op]
    executed: list[CommandCall]
    patched: list[PatchCall]
    diffs: dict[str, list[str]]  # urn -> differing property paths (update / replace)
    failed: list[str]  # URNs whose step failed (nothing of them was stored, rule 7)
    output_changes: dict[str, Op]  # stack outputs that differ from the stored ones (E9 "Outputs:")
    delete_error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        return self.run.error or self.delete_error

    @property
    def changes(self) -> dict[str, Op]:
        """Every URN whose operation is not ``same``."""
        return {urn: op for urn, op in self.ops.items() if op != "same"}

    @property
    def by_name(self) -> dict[str, Op]:
        """Operations by resource name (the last URN segment); names are unique in this program."""
        return {_name(urn): op for urn, op in self.ops.items()}

    def urn(self, name: str) -> str:
        found = [u for u in self.ops if _name(u) == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r} in this run's operations")
        return found[0]

    def op(self, name: str) -> Op:
        """The operation of the resource called ``name`` (KeyError when not exactly one)."""
        return self.ops[self.urn(name)]

    def changed_names(self) -> dict[str, Op]:
        return {_name(urn): op for urn, op in self.changes.items()}


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _secret(value: Any) -> dict[str, Any]:
    """A value marked secret on the wire (as the engine marks ``additionalSecretOutputs``)."""
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}


class _Deployment(ProgramMocks):
    """The provider side of one run against a stack's state (thread-safe: registrations arrive on
    the SDK's worker threads). Decides each registration's operation against ``old`` and, in an
    ``up``, executes it and writes the result into ``new`` as the step completes (the engine
    persists each finished step, so a failed run keeps what it finished) [rules 2-9]."""

    def __init__(
        self,
        old: Mapping[str, StoredResource],
        *,
        preview: bool,
        executor: Executor | None,
        patcher: Patcher | None,
        replace: frozenset[str],
    ) -> None:
        self.preview = preview
        self.old = old
        self.new: dict[str, StoredResource] = copy.deepcopy(dict(old))
        self.executor = executor
        self.patcher = patcher
        self.replace = replace
        self.lock = threading.Lock()
        self.ops: dict[str, Op] = {}
        self.diffs: dict[str, list[str]] = {}
        self.executed: list[CommandCall] = []
        self.patched: list[PatchCall] = []
        self.failed: list[str] = []
        self._order = 0

    # ----------------------------------------------------------------- registration

    def created_outputs(self, resource: RegisteredResource) -> Mapping[str, Any]:
        with self.lock:
            old = copy.deepcopy(self.old.get(resource.urn))
            self._order += 1
            order = self._order
        inputs: dict[str, Any] = resource.inputs
        if old is not None and resource.options.get("ignoreChanges"):
            inputs = ignore_changes(resource.inputs, old.inputs, resource.options["ignoreChanges"])
        force = resource.urn in self.replace or resource.name in self.replace
        op, paths = decide(old, resource, inputs, force_replace=force)
        with self.lock:
            self.ops[resource.urn] = op
            if paths:
                self.diffs[resource.urn] = paths
        if self.preview:  # executes nothing [rule 9; C12, M3]
            return self._returned(resource, old.outputs) if op == "same" and old is not None else {}
        if op == "same":  # nothing runs; the stored outputs, the new inputs [rule 3, E2]
            assert old is not None
            self._store(resource, inputs, old.outputs, order)
            return self._returned(resource, old.outputs)
        try:
            outputs = self._apply(op, resource, inputs, old)
        except BaseException:
            with self.lock:
                self.failed.append(resource.urn)
            raise  # a failed create stores nothing, a failed update keeps the old state [rule 7]
        self._store(resource, inputs, outputs, order)
        return self._returned(resource, outputs)

    def _returned(self, resource: RegisteredResource, outputs: Mapping[str, Any]) -> dict[str, Any]:
        secret = set(resource.options.get("additionalSecretOutputs", []))
        return {k: _secret(v) if k in secret else v for k, v in outputs.items()}

    def _store(
        self, resource: RegisteredResource, inputs: Mapping[str, Any], outputs: Mapping[str, Any], order: int
    ) -> None:
        stored = StoredResource(
            urn=resource.urn,
            type=resource.type,
            name=resource.name,
            custom=resource.custom,
            parent_urn=resource.parent_urn,
            inputs=copy.deepcopy(dict(inputs)),
            outputs=dict(outputs),
            options=copy.deepcopy(resource.options),
            secret_paths=resource.secret_paths,
            order=order,
        )
        with self.lock:
            self.new[resource.urn] = stored

    def _apply(
        self, op: Op, resource: RegisteredResource, inputs: Mapping[str, Any], old: StoredResource | None
    ) -> dict[str, Any]:
        """Run the provider for create / replace / update in an ``up``; the computed outputs."""
        provider_op: ProviderOp = "update" if op == "update" else "create"
        if resource.type == COMMAND_TYPE:
            if self.executor is None:
                raise TypeError("Stack.up needs an executor for its Commands")
            # create, and the replacement's create [rules 2, 6]; update: update or create [rule 5]
            previous = old.outputs if op == "update" and old is not None else None
            call = CommandCall._from(resource.name, inputs, op=provider_op, previous_outputs=previous)
            with self.lock:
                self.executed.append(call)
            secret = "stdout" in resource.options.get("additionalSecretOutputs", [])
            return _execute(self.executor, call, secret, trim=True)
        if is_patch(resource.type):
            patch = PatchCall(resource.name, resource.urn, resource.type, provider_op, copy.deepcopy(inputs))
            with self.lock:
                self.patched.append(patch)
            if self.patcher is not None:
                self.patcher(patch)
        return {}

    # ----------------------------------------------------------------- deletions

    def deletions(self, registered: set[str]) -> list[StoredResource]:
        """Stored URNs this (successful) run did not register, dependents first [rule 8, E1]."""
        gone = [r for urn, r in self.old.items() if urn not in registered]
        return sorted(gone, key=lambda r: r.order, reverse=True)

    def delete(self, stored: StoredResource) -> None:
        """Delete ``stored`` in an ``up``: nothing runs with ``retainOnDelete`` [E5]; a Command runs
        its stored ``delete`` when it has one [C6]; a Patch relinquishes its fields [K8]. Then the
        URN leaves the state."""
        with self.lock:
            self.ops[stored.urn] = "delete"
        if self.preview:
            return
        if not stored.options.get("retainOnDelete"):
            if stored.type == COMMAND_TYPE and stored.inputs.get("delete"):
                if self.executor is None:
                    raise TypeError("Stack.up needs an executor for its Commands")
                call = CommandCall._from(stored.name, stored.inputs, op="delete")
                with self.lock:
                    self.executed.append(call)
                secret = "stdout" in stored.options.get("additionalSecretOutputs", [])
                _execute(self.executor, call, secret, trim=True)
            elif is_patch(stored.type):
                patch = PatchCall(
                    stored.name, stored.urn, stored.type, "delete", copy.deepcopy(stored.inputs)
                )
                with self.lock:
                    self.patched.append(patch)
                if self.patcher is not None:
                    self.patcher(patch)
        with self.lock:
            self.new.pop(stored.urn, None)


def _outputs_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Op]:
    out: dict[str, Op] = {}
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out[key] = "create"
        elif key not in new:
            out[key] = "delete"
        elif diff_paths(old[key], new[key]):
            out[key] = "update"
    return out


class Stack:
    """One Pulumi stack's state, carried across runs of the program (like a file backend).

    ``resources``: URN → :class:`StoredResource`; ``outputs``: the stack outputs of the last
    successful ``up``. :meth:`preview` changes neither; :meth:`up` applies each step and writes it
    into the state as it completes (also when the run fails later), then deletes what the program
    no longer registers — only when the run succeeded [rules 7, 8; E1].
    """

    def __init__(self, name: str, resources: Mapping[str, StoredResource] | None = None) -> None:
        self.name = name
        self.resources: dict[str, StoredResource] = copy.deepcopy(dict(resources or {}))
        self.outputs: dict[str, Any] = {}
        self.history: list[RunReport] = []

    # ----------------------------------------------------------------- runs

    def preview(
        self,
        *,
        executor: Executor | None = None,
        replace: Iterable[str] = (),
        **inputs: Unpack[ProgramInputs],
    ) -> RunReport:
        """``pulumi preview``: the operations an ``up`` would take; executes nothing (``executor`` is
        accepted so a test can pass the same one and see it untouched) [rule 9]."""
        del executor  # a preview never executes
        return self._run(inputs, preview=True, executor=None, patcher=None, replace=replace)

    def up(
        self,
        *,
        executor: Executor,
        patcher: Patcher | None = None,
        replace: Iterable[str] = (),
        **inputs: Unpack[ProgramInputs],
    ) -> RunReport:
        """``pulumi up`` (``replace``: URNs or names, as ``--replace``): Commands run through
        ``executor``; Kubernetes patches are recorded in ``RunReport.patched`` and handed to
        ``patcher`` when given (raising there fails the patch)."""
        return self._run(inputs, preview=False, executor=executor, patcher=patcher, replace=replace)

    def _run(
        self,
        inputs: ProgramInputs,
        *,
        preview: bool,
        executor: Executor | None,
        patcher: Patcher | None,
        replace: Iterable[str],
    ) -> RunReport:
        deployment = _Deployment(
            self.resources, preview=preview, executor=executor, patcher=patcher, replace=frozenset(replace)
        )
        run = run_preview(self.name, mocks=deployment, **inputs)
        # the root stack: no provider; created once, then the same (its outputs are shown apart)
        for r in run.resources:
            if r.type == STACK_TYPE:
                deployment.ops[r.urn] = "same" if r.urn in self.resources else "create"
                if not preview:
                    deployment.new[r.urn] = StoredResource(
                        urn=r.urn,
                        type=r.type,
                        name=r.name,
                        custom=False,
                        parent_urn=None,
                        inputs={},
                        outputs={},
                        options=dict(r.options),
                    )
        delete_error: BaseException | None = None
        if run.error is None:  # deletions only after a successful run [rule 7, rule 8, E1]
            for stored in deployment.deletions({r.urn for r in run.resources}):
                try:
                    deployment.delete(stored)
                except Exception as error:  # a failed delete stops the deletions, keeps the URN
                    deployment.failed.append(stored.urn)
                    delete_error = error
                    break
        report = RunReport(
            run=run,
            preview=preview,
            ops=dict(deployment.ops),
            executed=list(deployment.executed),
            patched=list(deployment.patched),
            diffs=dict(deployment.diffs),
            failed=list(deployment.failed),
            output_changes=_outputs_diff(self.outputs, run.outputs) if run.error is None else {},
            delete_error=delete_error,
        )
        if not preview:
            self.resources = deployment.new
            if report.error is None:
                self.outputs = copy.deepcopy(run.outputs)
        self.history.append(report)
        return report

    # ----------------------------------------------------------------- state files

    def copy(self) -> Stack:
        """An independent copy of this stack (state and outputs; not the history)."""
        twin = Stack(self.name, self.resources)
        twin.outputs = copy.deepcopy(self.outputs)
        return twin

    def export(self) -> dict[str, StoredResource]:
        """A copy of the state (``pulumi stack export``)."""
        return copy.deepcopy(self.resources)

    def import_(
        self, resources: Mapping[str, StoredResource], outputs: Mapping[str, Any] | None = None
    ) -> None:
        """Replace the state with ``resources`` (``pulumi stack import``; an empty mapping is a lost
        state) [E8]."""
        self.resources = copy.deepcopy(dict(resources))
        self.outputs = copy.deepcopy(dict(outputs or {}))

    def named(self, name: str) -> StoredResource:
        found = [r for r in self.resources.values() if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} stored resources named {name!r}")
        return found[0]
