"""The Python helpers of the step scripts, kept as real modules.

Each ``<name>.py`` here is one self-contained program that a script runs on its target as
``python3 -c "$<NAME>_PY" ...``: ``artifact_cd.scripts.script_text`` inlines the file's text into
the sent script (a quoted heredoc read into ``<NAME>_PY``) when lib.sh or the script references
that variable. So ruff, mypy and the unit tests reach the very text a target runs.

Rules for a helper (a test holds them): the Python standard library only, nothing imported from
this project (a label name or any other shared fact arrives as an argument from the script, which
reads it from the contract's generated constants); runnable on python3.8
(``from __future__ import annotations``, no 3.9+ syntax or APIs); typed functions plus
``main(argv) -> int`` and ``if __name__ == "__main__": sys.exit(main(sys.argv[1:]))``.
"""
