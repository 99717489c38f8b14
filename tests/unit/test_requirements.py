"""docs/requirements.md is where every ``R<n>`` in the tree points (R1-R26)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "requirements.md"
CITED = re.compile(r"\bR([0-9]{1,3})\b")
DEFINED = re.compile(r"^- \*\*R([0-9]{1,3})\*\* ", re.M)
SOURCE_SUFFIXES = {".py", ".sh", ".md", ".yaml", ".toml"}


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / line for line in out.splitlines() if Path(line).suffix in SOURCE_SUFFIXES]


def _defined() -> list[int]:
    return [int(n) for n in DEFINED.findall(DOC.read_text())]


def test_requirements_are_numbered_once_and_in_order() -> None:
    assert _defined() == list(range(1, 27))


def test_every_cited_requirement_is_defined() -> None:
    defined = set(_defined())
    undefined: dict[str, set[int]] = {}
    for path in _tracked_files():
        if path == DOC or not path.exists():
            continue
        cited = {int(n) for n in CITED.findall(path.read_text(errors="replace"))}
        if cited - defined:
            undefined[str(path.relative_to(ROOT))] = cited - defined
    assert not undefined, f"R<n> cited but not defined in docs/requirements.md: {undefined}"


def test_every_requirement_is_cited_by_a_test() -> None:
    cited: set[int] = set()
    for path in _tracked_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tests" and path.suffix == ".py" and path != Path(__file__).resolve():
            cited |= {int(n) for n in CITED.findall(path.read_text(errors="replace"))}
    assert set(_defined()) - cited == set(), "requirements no test cites"
