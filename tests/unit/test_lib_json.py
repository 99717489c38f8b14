"""lib.sh json_str: every string becomes a valid JSON literal; control characters other than
\\n \\r \\t are dropped (the `tr` fork runs only when one is left)."""

from __future__ import annotations

import json
import subprocess

import pytest

from artifact_cd import scripts

CASES = [
    ("plain", "plain"),
    ('quote " and \\ backslash', 'quote " and \\ backslash'),
    ("lines\nand\ttabs\r", "lines\nand\ttabs\r"),
    ("bell\x07 and unit\x1f sep\x01", "bell and unit sep"),
    ("ünïcødé ✓", "ünïcødé ✓"),
    ("", ""),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_json_str_is_valid_json_without_control_characters(value: str, expected: str) -> None:
    lib = (scripts.SCRIPT_DIR / scripts.LIB).read_text()
    proc = subprocess.run(
        ["bash", "-c", lib + '\njson_str "$1"', "json_str", value],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )
    assert json.loads(proc.stdout) == expected
