"""Shared function files (artifact_cd/scripts/include/): put into a script's text after lib.sh.

A script names one with a ``# include: <name>.sh`` line; ``script_text`` inserts the file once,
after lib.sh and before the script. ``include/registry-facts.sh`` is the registry host's fact
collection: ``registry-probe.sh`` (status, health, the install's acceptance) and ``live-probe.sh``
(the live view's D601 probe) both run exactly that code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from artifact_cd import scripts
from artifact_cd.scripts import INCLUDE_DIR, LIB, SCRIPT_DIR, include_paths, script_text
from tests.unit.script_support import SHARED_FACTS, code_of

INCLUDES = sorted(INCLUDE_DIR.glob("*.sh"))


def test_registry_probe_and_live_probe_share_the_registry_facts() -> None:
    facts = (INCLUDE_DIR / "registry-facts.sh").read_text(encoding="utf-8").partition("\n")[2]
    for name in ("registry-probe.sh", "live-probe.sh"):
        text = script_text(name)
        assert text.count(facts) == 1, f"{name} carries include/registry-facts.sh exactly once"
        lib = text.index((SCRIPT_DIR / LIB).read_text(encoding="utf-8").partition("\n")[2])
        body = (SCRIPT_DIR / name).read_text(encoding="utf-8").removeprefix("# shellcheck shell=bash\n")
        assert lib < text.index(facts) < text.index(body) and text.endswith(body)
    probe = (SCRIPT_DIR / "registry-probe.sh").read_text(encoding="utf-8")
    assert "registry_facts " in code_of(probe) and "unit_facts()" not in probe, "the collection is not copied"


def test_an_include_is_named_by_a_whole_comment_line_and_must_exist() -> None:
    assert include_paths("x\n# include: registry-facts.sh\n# include: registry-facts.sh\n") == (
        INCLUDE_DIR / "registry-facts.sh",
    )
    assert include_paths("echo '# include: registry-facts.sh'\n") == ()
    with pytest.raises(ValueError, match=r"no-such\.sh"):
        scripts.include_paths("# include: no-such.sh\n")


@pytest.mark.parametrize("path", INCLUDES, ids=lambda p: p.name)
def test_an_include_is_functions_only_and_spells_no_shared_fact(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# shellcheck shell=bash\n")
    code = code_of(text)
    assert [fact for fact in SHARED_FACTS if fact in code] == []
    assert not re.search(r"\beval\b", code) and "main()" not in code and 'main "$@"' not in code
    assert not re.search(r"\bfail [0-9]", code), "exit codes are the contract's EXIT_* constants"
