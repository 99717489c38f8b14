"""README's "Failure codes" table lists every error code, with what the operator does next (issue 12).

The codes are read from the sources, not from a hand list:

- the step scripts (``artifact_cd/scripts/*.sh`` and ``include/*.sh``): every ``fail``/``refuse``
  with a literal code, the wrappers that take a code as their first argument (``live_fails``,
  ``after_change_fail``, ``switch_failed``, ``blob_failed``, ``LIVE_ERROR=``) and read-auth.sh's
  pass-through of its helper's codes (the ``case`` arm above the ``fail``). A ``fail`` whose code is
  a variable anywhere else fails this test until the extraction learns where its codes come from;
- the Python side that prints an ``error`` of its own: ``publish`` (every ``PublishFailure``), the
  SSH channel's reasons (``SshFailure`` and ``remote._SSH_FAILURES``: the ``reason`` of a host that
  did not answer ``status``/``health``/``history``/``hostkeys``), and ``health --integrity``'s
  ``registry-blob-corrupt``.

Each must be a row of the table (first column, in backticks), with its exit code, whether it is
retryable and what to do next; a row for a code that no longer exists fails too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "artifact_cd" / "scripts"
CODE = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"  # kebab-case, one word too (unhealthy, timeout)

LITERAL_FAIL = re.compile(rf'\b(?:fail|refuse)\s+"\$[A-Za-z_]+"\s+({CODE})\b')
WRAPPED = re.compile(rf"\b(?:live_fails|after_change_fail|switch_failed|blob_failed)\s+({CODE})\b")
ASSIGNED = re.compile(rf"\bLIVE_ERROR=({CODE})\b")
PRINTED = re.compile(rf"""\berror '"({CODE})"'""")  # lib.sh's exit handler prints its own line
VARIABLE_FAIL = re.compile(r'\b(?:fail|refuse)\s+"\$[A-Za-z_]+"\s+"\$([a-z_]+)"')
# where a variable code comes from (script, variable): the wrappers above, or the case arm above
KNOWN_VARIABLE_CODES = {
    ("compose-deploy.sh", "error"),  # after_change_fail / switch_failed ERROR
    ("move-image.sh", "code"),  # blob_failed CODE
    ("read-auth.sh", "code"),  # the case arm: auth.py's codes
}


def _script_files() -> list[Path]:
    return sorted([*SCRIPTS.glob("*.sh"), *(SCRIPTS / "include").glob("*.sh")])


def script_codes() -> dict[str, set[str]]:
    """code -> the scripts that emit it."""
    found: dict[str, set[str]] = {}
    for path in _script_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.lstrip().startswith("#"):
                continue
            codes = [*LITERAL_FAIL.findall(line), *WRAPPED.findall(line), *ASSIGNED.findall(line)]
            codes += PRINTED.findall(line)
            for variable in VARIABLE_FAIL.findall(line):
                assert (path.name, variable) in KNOWN_VARIABLE_CODES, (
                    f"{path.name}:{number + 1} fails with the code in ${variable}: teach "
                    "tests/unit/test_failure_table.py where its codes come from"
                )
                if path.name == "read-auth.sh":
                    arm = lines[number - 1].strip()
                    assert arm.endswith(")"), arm
                    codes += [c.strip() for c in arm[:-1].split("|")]
            for code in codes:
                found.setdefault(code, set()).add(path.name)
    return found


def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "artifact_cd" / name).read_text(encoding="utf-8"))


def _constants(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _codes_in(node: ast.AST, constants: dict[str, str]) -> set[str]:
    """The code-like string literals (or module constants) in an argument expression, but not the
    keys it reads (``doc.get("error") or "blob-drop-failed"``: the script's code, else the literal)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(CODE, node.value):
        return {node.value}
    if isinstance(node, ast.Name) and re.fullmatch(CODE, constants.get(node.id, "")):
        return {constants[node.id]}
    out: set[str] = set()
    for child in ast.iter_child_nodes(node):
        out |= _codes_in(child, constants)
    return out


def _call_codes(module: str, func: str, index: int) -> set[str]:
    tree = _module(module)
    constants = _constants(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == func
            and len(node.args) > index
        ):
            out |= _codes_in(node.args[index], constants)
    return out


def python_codes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def add(codes: set[str], where: str) -> None:
        for code in codes:
            found.setdefault(code, set()).add(where)

    add(_call_codes("publish.py", "PublishFailure", 1), "publish")
    publish = _module("publish.py")
    for node in ast.walk(publish):  # `code = <the manifest check's error> or "<its own>"`, then raised
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "code" for t in node.targets
        ):
            add(_codes_in(node.value, {}), "publish")
    for module in ("remote.py", "hostkeys.py"):
        add(_call_codes(module, "SshFailure", 0), "ssh")
    remote = _module("remote.py")
    for node in remote.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "_SSH_FAILURES"
            and isinstance(node.value, ast.Tuple)
        ):
            for row in node.value.elts:
                assert isinstance(row, ast.Tuple)
                add(_codes_in(row.elts[1], {}), "ssh")
    add({_constants(_module("health.py"))["BLOB_CORRUPT"]}, "health")
    return found


TABLE = re.compile(r"^## Failure codes\n(.*?)(?=^## )", re.S | re.M)
ROW = re.compile(r"^\| ((?:`[a-z0-9-]+`(?: / )?)+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", re.M)


def readme_rows() -> dict[str, tuple[str, str, str]]:
    """code -> (exit, retryable, what next) of README's Failure codes table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = TABLE.search(text)
    assert section, "README has a '## Failure codes' section"
    rows: dict[str, tuple[str, str, str]] = {}
    for match in ROW.finditer(section.group(1)):
        for code in re.findall(r"`([a-z0-9-]+)`", match.group(1)):
            assert code not in rows, f"{code} has two rows"
            rows[code] = (match.group(2).strip(), match.group(3).strip(), match.group(4).strip())
    return rows


def test_the_extraction_finds_the_known_codes() -> None:
    """The regexes still see the codes of each kind of site (a rewrite that hid them fails here)."""
    scripts, python = script_codes(), python_codes()
    assert {"lock-busy", "deployment-missing", "compose-file-missing", "invalid-argument"} <= set(scripts)
    assert {"auth-not-configured", "recreate-failed", "registry-blob-missing", "auth-missing"} <= set(scripts)
    assert {"tag-immutable", "blob-drop-failed", "ssh-unreachable", "host-key-mismatch"} <= set(python)
    assert {"auth-failed", "connection-refused", "registry-blob-corrupt"} <= set(python)


def test_every_error_code_has_a_row_in_readme() -> None:
    rows = readme_rows()
    codes = {**script_codes()}
    for code, where in python_codes().items():
        codes.setdefault(code, set()).update(where)
    missing = sorted(
        f"{code} ({', '.join(sorted(where))})" for code, where in codes.items() if code not in rows
    )
    assert not missing, f"README 'Failure codes' lacks rows for: {missing}"
    stale = sorted(set(rows) - set(codes))
    assert not stale, f"README 'Failure codes' has rows for codes nothing emits: {stale}"


def test_every_row_says_exit_retryable_and_what_next() -> None:
    for code, (exit_code, retryable, what) in readme_rows().items():
        assert re.fullmatch(r"[0-9](?:(?:, | or )[0-9])*|any", exit_code), (code, exit_code)
        assert retryable in ("yes", "no", "yes or no"), (code, retryable)
        assert len(what) > 20, (code, what)
