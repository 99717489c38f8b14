"""The scripts and the typed contract (artifact_cd/contract.py) spell each shared fact once.

- the sent text: ``# shellcheck shell=bash``, ``set -euo pipefail``, the generated constants, the
  Python helpers lib.sh or the script references (verbatim, as heredocs), lib.sh, the script;
- the script sources spell no shared fact by hand (label names, media types, patterns, exit codes,
  verify kinds, secret keys) and hold no Python inside a bash string;
- drift: each args model's ``flags()`` equals the ``case`` arms of its script's argument parser,
  and docs/contracts.md's argv table is ``contract.argv_table()``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Annotated, ClassVar

import pytest

from artifact_cd import contract, scripts
from artifact_cd.contract import ARGS_MODELS, Flag, ScriptArgs
from artifact_cd.scripts import LIB, PY_DIR, SCRIPT_DIR, helper_variable, script_text
from tests.unit.script_support import SHARED_FACTS, code_of

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in SCRIPT_DIR.glob("*.sh") if p.name != LIB)
SOURCES = sorted(SCRIPT_DIR.glob("*.sh"))


def source(name: str) -> str:
    return (SCRIPT_DIR / name).read_text(encoding="utf-8")


def bash(text: str) -> str:
    return subprocess.run(["bash", "-c", text], capture_output=True, text=True, check=True, timeout=30).stdout


def without_main(name: str) -> str:
    """The sent text up to (not running) ``main "$@"``: every definition, nothing done."""
    text = script_text(name)
    assert text.rstrip().endswith('main "$@"')
    return text.rstrip()[: -len('main "$@"')]


# --------------------------------------------------------------------------- the sent text


def test_every_script_has_an_args_model() -> None:
    assert {m.script for m in ARGS_MODELS} == set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_sent_text_layout(name: str) -> None:
    text = script_text(name)
    lines = text.splitlines()
    assert lines[0] == "# shellcheck shell=bash", "the directive first: shellcheck-as-sent reads the text as bash"
    # bash -s reads a pipe one byte per read(): the second line reads the rest in one go
    assert lines[1].startswith('eval "$(cat)" #'), "the reader right after the directive"
    assert "set -euo pipefail" in lines[:4], "a command before the constants' shellcheck directive"
    constants = text.index(contract.shell_constants())
    lib = text.index(source(LIB).partition("\n")[2])
    body = text.index(source(name).removeprefix("# shellcheck shell=bash\n"))
    assert constants < lib < body and text.endswith(source(name).removeprefix("# shellcheck shell=bash\n"))
    assert text.count("# shellcheck shell=bash") == 1
    helpers = re.findall(r"^([A-Z0-9_]+_PY)='", text, re.M)
    assert all(constants < text.index(h) < lib for h in helpers)


EXPECTED_HELPERS = {
    # lib.sh runs MANIFEST_PY (manifest_parse) and HEALTH_PY (health_fields): every text has them
    "compose-deploy.sh": {"ENVFILE_PY"},  # containers: docker container inspect -f (no parser)
    "move-image.sh": {"FREE_PORT_PY", "PULLED_PY"},
    "read-auth.sh": {"AUTH_PY"},
    "live-probe.sh": {"LIVEFACTS_PY", "ENVFILE_PY", "CONTAINER_PY", "AUTH_PY"},
    "history-probe.sh": {"HISTORYFACTS_PY", "CONTAINER_PY"},
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_sent_text_has_exactly_the_referenced_helpers(name: str) -> None:
    helpers = set(re.findall(r"^([A-Z0-9_]+_PY)='", script_text(name), re.M))
    assert helpers == {"MANIFEST_PY", "HEALTH_PY"} | EXPECTED_HELPERS.get(name, set())


def test_every_helper_file_is_run_by_some_script() -> None:
    sent = {h for name in SCRIPTS for h in re.findall(r"^([A-Z0-9_]+_PY)='", script_text(name), re.M)}
    assert sent == {helper_variable(p) for p in PY_DIR.glob("*.py") if p.name != "__init__.py"}


@pytest.mark.parametrize(
    ("script", "helper"),
    [("compose-deploy.sh", h) for h in ("MANIFEST_PY", "HEALTH_PY", "ENVFILE_PY")] + [("live-probe.sh", "CONTAINER_PY")],
)
def test_a_helper_reaches_bash_byte_for_byte(script: str, helper: str) -> None:
    value = bash(without_main(script) + f'\nprintf "%s" "${helper}"')
    assert value == (PY_DIR / f"{helper.removesuffix('_PY').lower()}.py").read_text(encoding="utf-8")


def test_a_reference_without_a_helper_file_or_a_nul_inside_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NO_SUCH_PY"):
        scripts.helper_paths('python3 -c "$NO_SUCH_PY"')
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\0\n")
    with pytest.raises(ValueError, match="NUL"):
        scripts.helper_block(bad)


def test_any_text_survives_the_quoting(tmp_path: Path) -> None:
    """The single-quoted assignment carries quotes, a line that once ended the heredoc, `$(...)`,
    backslashes and no final newline byte for byte, and runs nothing."""
    text = "a = 'x' + \"'\" + '\\'\nPY\n$(touch pwned) `id` ${HOME} '\\'' \"\n\tlast"
    helper = tmp_path / "odd_text.py"
    helper.write_text(text)
    block = scripts.helper_block(helper)
    proc = subprocess.run(["bash", "-c", block + 'printf "%s" "$ODD_TEXT_PY"'], capture_output=True, text=True,
                          check=True, cwd=tmp_path)  # fmt: skip
    assert proc.stdout == text and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_constants_bash_sees_are_the_contracts(name: str) -> None:
    shown = bash(
        without_main(name)
        + '\nfor v in REVISION_LABEL SOURCE_LABEL SERVICE_LABEL SPEC_LABEL COMMIT_PATTERN DIGEST_PATTERN; do'
        + ' printf "%s=%s\\n" "$v" "${!v}"; done'
        + '\nprintf "VERIFY_KINDS=%s\\n" "${VERIFY_KINDS[*]}"; printf "MANIFEST_ACCEPT=%s\\n" "${MANIFEST_ACCEPT[*]}"'
        + '\nfor c in OK INVALID PRECONDITION RETRYABLE INFRA_BLOCKED VERIFY_FAILED BUSY; do v=EXIT_$c; printf "%s=%s\\n" "$v" "${!v}"; done'
    )
    seen = dict(line.split("=", 1) for line in shown.splitlines())
    assert seen == {
        "REVISION_LABEL": contract.REVISION_LABEL,
        "SOURCE_LABEL": contract.SOURCE_LABEL,
        "SERVICE_LABEL": contract.SERVICE_LABEL,
        "SPEC_LABEL": contract.SPEC_LABEL,
        "COMMIT_PATTERN": f"^{contract.COMMIT_PATTERN}$",
        "DIGEST_PATTERN": f"^{contract.DIGEST_PATTERN}$",
        "VERIFY_KINDS": " ".join(contract.VerifyKind),
        "MANIFEST_ACCEPT": " ".join(f"-H Accept: {m}" for m in contract.MANIFEST_MEDIA_TYPES),
        **{f"EXIT_{c.name}": str(int(c)) for c in contract.ExitCode},
    }


# --------------------------------------------------------------------------- nothing spelled by hand


SCRIPT_FACTS = (
    *SHARED_FACTS,
    "UNIDESK_BAIDU_NETDISK",  # the catalog's required secret keys arrive as --required-secret
)


@pytest.mark.parametrize("path", [*SOURCES, *sorted(PY_DIR.glob("*.py"))], ids=lambda p: p.name)
def test_sources_spell_no_shared_fact(path: Path) -> None:
    code = code_of(path.read_text(encoding="utf-8")) if path.suffix == ".sh" else path.read_text(encoding="utf-8")
    assert [fact for fact in SCRIPT_FACTS if fact in code] == []
    if path.suffix == ".sh":
        assert not re.search(r"\bfail [0-9]", code), "exit codes are the contract's EXIT_* constants"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_python_inside_a_bash_string(path: Path) -> None:
    code = code_of(path.read_text(encoding="utf-8"))
    assert not re.search(r"^\s*[A-Za-z_]*_PY=", code, re.M), "a helper is a file in py/, inlined by script_text"
    for call in re.findall(r"python3 -c (\S+)", code):
        assert re.fullmatch(r'"\$[A-Z][A-Z0-9_]*_PY"', call), call
    assert not re.search(r"\bimport (json|sys|re|os|socket)\b", code)


def test_the_verify_kinds_compose_deploy_tests_for_are_the_contracts() -> None:
    code = code_of(source("compose-deploy.sh"))
    named = set(re.findall(r"\$VERIFY == ([a-z-]+)", code))
    assert named and named <= {k.value for k in contract.VerifyKind}
    assert 'need_one_of --verify "$VERIFY" "${VERIFY_KINDS[@]}"' in code


# --------------------------------------------------------------------------- drift: models vs parsers


def _function(text: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\(\) \{{\n(.*?)^\}}$", text, re.S | re.M)
    assert match, f"no function {name}"
    return match.group(1)


def parser_of(model: type[ScriptArgs], text: str) -> str:
    """The function that parses ``model``'s flags: ``do_<subcommand>``, ``parse_args`` or ``main``."""
    if model.subcommand:
        return _function(text, f"do_{model.subcommand}")
    return _function(text, "parse_args" if re.search(r"^parse_args\(\) \{", text, re.M) else "main")


def case_arms(function: str) -> list[dict[str, str]]:
    """Each ``case $1 in`` of a parser: {flag: the arm's commands}; ``--a | --b)`` arms and
    backslash-continued lines included, ``*)`` left out."""
    blocks = re.findall(r"case \$1 in\n(.*?)^\s*esac", function, re.S | re.M)
    assert blocks, "no `case $1 in` in the parser"
    out = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        arms: dict[str, str] = {}
        for match in re.finditer(r"^\s*(--[a-z0-9-]+(?:\s*\|\s*--[a-z0-9-]+)*)\)(.*?);;", joined, re.S | re.M):
            for flag in re.split(r"\s*\|\s*", match.group(1)):
                arms[flag] = match.group(2)
        out.append(arms)
    return out


def drift(model: type[ScriptArgs], text: str) -> list[str]:
    """Every way the script's parser and the model disagree (empty: none)."""
    problems = []
    for arms in case_arms(parser_of(model, text)):
        if set(arms) != model.flags():
            problems.append(
                f"{model.__name__}: only in the script {sorted(set(arms) - model.flags())}, "
                f"only in the model {sorted(model.flags() - set(arms))}"
            )
        for flag, commands in arms.items():
            repeated = "+=(" in commands
            if commands.strip() and repeated != (flag in model.repeated_flags()):
                problems.append(f"{model.__name__}: {flag} repeated in the script: {repeated}")
    return problems


@pytest.mark.parametrize("model", ARGS_MODELS, ids=lambda m: m.__name__)
def test_each_model_has_the_flags_its_script_parses(model: type[ScriptArgs]) -> None:
    assert drift(model, source(model.script)) == []


def test_the_drift_check_sees_a_flag_added_to_one_side_only() -> None:
    """The check above is not vacuous: one flag more in a script, or in a model, is reported."""
    text = source("k3s-verify.sh")
    added = text.replace("      --commit) arg_value", '      --extra) arg_value $# "$1"; EXTRA=$2 ;;\n      --commit) arg_value', 1)
    assert added != text
    assert drift(contract.K3sVerifyArgs, added) == [
        "K3sVerifyArgs: only in the script ['--extra'], only in the model []"
    ]

    class Wider(contract.K3sVerifyArgs):
        script: ClassVar[str] = "k3s-verify.sh"
        extras: Annotated[tuple[str, ...], Flag("--extra")] = ()

    assert drift(Wider, text) == ["Wider: only in the script [], only in the model ['--extra']"]
    probe = source("registry-probe.sh")
    assert len(case_arms(parser_of(contract.RegistryProbeArgs, probe))) == 2, "both of the probe's cases are compared"
    dropped = probe.replace("--config-sha256 | ", "", 1)
    assert drift(contract.RegistryProbeArgs, dropped) == [
        "RegistryProbeArgs: only in the script [], only in the model ['--config-sha256']"
    ]


# --------------------------------------------------------------------------- the generated argv table


ARGV_TABLE = re.compile(
    r"<!-- argv table: generated by artifact_cd\.contract\.argv_table\(\); a test fails when stale -->\n"
    r"(.*?)<!-- end argv table -->",
    re.S,
)


def test_the_argv_table_in_the_docs_is_generated_from_the_models() -> None:
    doc = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    tables = ARGV_TABLE.findall(doc)
    assert len(tables) == 1, "one generated argv table between its markers"
    assert tables[0] == contract.argv_table(), (
        "docs/contracts.md is stale: paste artifact_cd.contract.argv_table() between the argv table markers"
    )
