"""envfile.py: the deploy env file of a Compose project, read and rewritten by compose-deploy.sh.

    python3 -c "$ENVFILE_PY" secrets FILE KEY...
        -> line 1: {"KEY": {"present": bool, "length": n}, ...}   (never a value)
           line 2: the missing or empty KEYs, space-separated
    python3 -c "$ENVFILE_PY" set FILE LOCK_DIR KEY=VALUE...
        -> {"changed": bool, "created": bool}; exit 7 when the env file lock stays busy

``set`` holds a per-env-file lock (``LOCK_DIR/unidesk-envfile.<hash>.lock``, up to 60 s), replaces
the lines of the given keys (``KEY=``, ``export KEY =``) in place, appends the missing ones, and
keeps every other byte; it writes a temp file in the same directory and renames it (atomic; mode and
owner kept; a new file is created 0600 with the directory's owner). Values are never printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO

LOCK_BUSY_EXIT = 7  # compose-deploy.sh maps it to lock-busy (the contract's ExitCode.BUSY)
LOCK_SECONDS = 60
COMPACT = (",", ":")


class LockBusy(Exception):
    """Another writer held the env file lock for the whole wait."""


def parse_value(raw: str) -> str:
    """A dotenv value: quotes removed, or an unquoted value without its `` #`` comment."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return re.split(r"\s+#", value, maxsplit=1)[0].strip()


def key_pattern(key: str) -> re.Pattern[bytes]:
    """The line that sets ``key`` (optionally ``export``ed, spaces around ``=``)."""
    name = re.escape(key.encode())
    return re.compile(rb"^[ \t]*(?:export[ \t]+)?" + name + rb"[ \t]*=(.*?)(\r?\n)?$", re.S)


def split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data``, each with its own line ending."""
    return re.split(rb"(?<=\n)", data)


def secrets_report(path: str, keys: Sequence[str]) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Presence and length of each key's last value (a missing file has none); the missing keys."""
    try:
        with open(path, "rb") as fh:
            lines = split_lines(fh.read())
    except FileNotFoundError:
        lines = []
    report: dict[str, dict[str, object]] = {}
    missing: list[str] = []
    for key in keys:
        value = None
        pattern = key_pattern(key)
        for line in lines:
            match = pattern.match(line)
            if match:
                value = parse_value(match.group(1).decode("utf-8", "replace"))
        present = bool(value)
        report[key] = {"present": present, "length": len(value) if value else 0}
        if not present:
            missing.append(key)
    return report, missing


def _lock(lock: IO[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockBusy from None
            time.sleep(0.1)


def _replace_line(line: bytes, wanted: Sequence[tuple[str, str, re.Pattern[bytes]]], seen: set[str]) -> bytes:
    for key, value, pattern in wanted:
        if pattern.match(line):
            end = b"\r\n" if line.endswith(b"\r\n") else (b"\n" if line.endswith(b"\n") else b"")
            seen.add(key)
            return key.encode() + b"=" + value.encode() + end
    return line


def rewrite(data: bytes, pairs: Sequence[tuple[str, str]]) -> bytes:
    """``data`` with each key's line replaced (its line ending kept) and the missing keys appended."""
    wanted = [(key, value, key_pattern(key)) for key, value in pairs]
    seen: set[str] = set()
    out = [_replace_line(line, wanted, seen) for line in split_lines(data) if line]
    extra = [key.encode() + b"=" + value.encode() + b"\n" for key, value, _ in wanted if key not in seen]
    if extra and out and not out[-1].endswith(b"\n"):
        out[-1] += b"\n"
    return b"".join(out + extra)


def _write_atomically(real: str, new: bytes, mode_bits: int, uid: int, gid: int) -> None:
    """Write ``new`` to a temp file beside ``real``, then rename it over ``real`` (and fsync the dir)."""
    directory = os.path.dirname(real)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(real) + ".")
    try:
        os.write(fd, new)
        os.fchmod(fd, mode_bits)
        with contextlib.suppress(PermissionError):  # not root: the owner stays this user
            os.fchown(fd, uid, gid)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def set_keys(
    path: str, lock_dir: str, pairs: Sequence[tuple[str, str]], lock_seconds: float = LOCK_SECONDS
) -> dict[str, bool]:
    """Set ``pairs`` in the env file at ``path`` (symlinks followed) under its lock; raises LockBusy."""
    real = os.path.realpath(path)
    name = "unidesk-envfile." + hashlib.sha256(real.encode()).hexdigest()[:16] + ".lock"
    with open(os.path.join(lock_dir, name), "a") as lock:
        _lock(lock, lock_seconds)
        try:
            with open(real, "rb") as fh:
                data = fh.read()
            st = os.stat(real)
            mode_bits, uid, gid, created = st.st_mode & 0o7777, st.st_uid, st.st_gid, False
        except FileNotFoundError:
            data = b""
            dst = os.stat(os.path.dirname(real))
            mode_bits, uid, gid, created = 0o600, dst.st_uid, dst.st_gid, True
        new = rewrite(data, pairs)
        if new == data and not created:
            return {"changed": False, "created": False}
        _write_atomically(real, new, mode_bits, uid, gid)
        return {"changed": True, "created": created}


def split_pair(pair: str) -> tuple[str, str]:
    key, value = pair.split("=", 1)
    return key, value


def main(argv: Sequence[str]) -> int:
    mode, path = argv[0], argv[1]
    if mode == "secrets":
        report, missing = secrets_report(path, argv[2:])
        print(json.dumps(report, separators=COMPACT))
        print(" ".join(missing))
        return 0
    if mode == "set":
        try:
            result = set_keys(path, argv[2], [split_pair(p) for p in argv[3:]])
        except LockBusy:
            print(json.dumps({"error": f"env file lock busy for {LOCK_SECONDS} s"}))
            return LOCK_BUSY_EXIT
        print(json.dumps(result, separators=COMPACT))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
