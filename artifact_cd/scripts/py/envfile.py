"""envfile.py: the deploy env file of a Compose project, read and rewritten by compose-deploy.sh.

    python3 -c "$ENVFILE_PY" secrets FILE KEY...
        -> line 1: {"KEY": {"present": bool, "length": n}, ...}   (never a value)
           line 2: the missing or empty KEYs, space-separated
    python3 -c "$ENVFILE_PY" set FILE LOCK_DIR KEY=VALUE...
        -> {"changed": bool, "created": bool}; exit 7 when the env file lock stays busy
    python3 -c "$ENVFILE_PY" stage FILE [--tag=TAG] KEY=VALUE...
        -> {"changed": bool, "created": bool, "real": path, "tmp": path|null, "backup": path|null,
            "sha256": hex of the new content}
           the new content in a temp file beside the real file (mode and owner kept) and a backup
           of the current file (a hard link, else a copy), both named .<name>.unidesk-[TAG.]*
           (TAG: the deploy's project.service, whose lock the caller holds, so the caller's next
           run knows which leftovers are its own); nothing is renamed: compose-deploy.sh renames
           tmp over the file at its live switch. Failures print {"error": ...} and write nothing:
           exit 3 env-dir-missing (the directory does not exist), exit 28 disk-full (with path,
           bytesNeeded, bytesFree), exit 1 env-write-failed (any other OSError, its strerror)
    python3 -c "$ENVFILE_PY" restore FILE LOCK_DIR BACKUP|- CREATED SHA256 KEY...
        -> {"restored": "rename"|"remove"|"keys"|"none"}; exit 7 when the lock stays busy
           undo a switch's rename under the env file lock: when the file still holds exactly what
           the switch wrote (SHA256), the backup is renamed back (byte-exact; CREATED=true: the file
           is removed); when another deploy rewrote it since (it released the lock after its own
           rename), only KEYs go back to the backup's lines (or go, when the backup lacked them or
           there was no file) and every other byte stays. The backup is removed in every case.

``set`` holds a per-env-file lock (``LOCK_DIR/unidesk-envfile.<hash>.lock``, up to 60 s), replaces
the lines of the given keys (``KEY=``, ``export KEY =``) in place, appends the missing ones, and
keeps every other byte; it writes a temp file in the same directory and renames it (atomic; mode and
owner kept; a new file is created 0600 with the directory's owner). Values are never printed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def _env_lock(real: str, lock_dir: str, seconds: float) -> Iterator[None]:
    """The env file's lock (compose-deploy.sh's env_lock takes the same file); raises LockBusy."""
    name = "unidesk-envfile." + hashlib.sha256(real.encode()).hexdigest()[:16] + ".lock"
    with open(os.path.join(lock_dir, name), "a") as lock:
        _lock(lock, seconds)
        yield


def set_keys(
    path: str, lock_dir: str, pairs: Sequence[tuple[str, str]], lock_seconds: float = LOCK_SECONDS
) -> dict[str, bool]:
    """Set ``pairs`` in the env file at ``path`` (symlinks followed) under its lock; raises LockBusy."""
    real = os.path.realpath(path)
    with _env_lock(real, lock_dir, lock_seconds):
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


STAGE_PREFIX = ".unidesk-"  # .<name>.unidesk-new.XXXX / .<name>.unidesk-backup.XXXX
DISK_FULL_EXIT = 28  # ENOSPC
DIR_MISSING_EXIT = 3


class StageError(Exception):
    """Staging failed; ``doc`` is the structured error, ``code`` the helper's exit status."""

    def __init__(self, code: int, doc: dict[str, object]) -> None:
        super().__init__(doc.get("error"))
        self.code = code
        self.doc = doc


def free_bytes(directory: str) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _stage_error(error: OSError, directory: str, needed: int) -> StageError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        doc: dict[str, object] = {
            "error": "disk-full",
            "path": directory,
            "bytesNeeded": needed,
            "bytesFree": free_bytes(directory),
        }
        return StageError(DISK_FULL_EXIT, doc)
    return StageError(
        1, {"error": "env-write-failed", "path": directory, "detail": error.strerror or str(error)}
    )


def _backup(real: str, directory: str, prefix: str) -> str:
    """A backup of ``real`` beside it: a hard link to the current inode (no bytes written; the
    switch renames a new inode over ``real``), else a byte copy (mode kept)."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=prefix + "backup.")
    os.close(fd)
    os.unlink(path)
    try:
        os.link(real, path)
        return path
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
    with open(real, "rb") as src:
        data = src.read()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, os.stat(real).st_mode & 0o7777)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def stage(path: str, pairs: Sequence[tuple[str, str]], tag: str = "") -> dict[str, object]:
    """Stage ``pairs`` for the env file at ``path`` (symlinks followed); raises StageError, leaving
    nothing behind. The caller holds the env file lock."""
    real = os.path.realpath(path)
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise StageError(DIR_MISSING_EXIT, {"error": "env-dir-missing", "path": directory})
    try:
        with open(real, "rb") as fh:
            data = fh.read()
        st = os.stat(real)
        mode_bits, uid, gid, created = st.st_mode & 0o7777, st.st_uid, st.st_gid, False
    except FileNotFoundError:
        data = b""
        dst = os.stat(directory)
        mode_bits, uid, gid, created = 0o600, dst.st_uid, dst.st_gid, True
    new = rewrite(data, pairs)
    out: dict[str, object] = {
        "changed": False,
        "created": False,
        "real": real,
        "tmp": None,
        "backup": None,
        "sha256": hashlib.sha256(new).hexdigest(),
    }
    if new == data and not created:
        return out
    prefix = "." + os.path.basename(real) + STAGE_PREFIX + (tag + "." if tag else "")
    made: list[str] = []
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix + "new.")
        made.append(tmp)
        try:
            view = memoryview(new)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode_bits)
            with contextlib.suppress(PermissionError):  # not root: the owner stays this user
                os.fchown(fd, uid, gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not created:
            made.append(_backup(real, directory, prefix))
    except OSError as error:
        for leftover in made:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise _stage_error(error, directory, len(new) + (0 if created else len(data))) from None
    out.update(changed=True, created=created, tmp=made[0], backup=made[1] if len(made) > 1 else None)
    return out


def _key_lines(data: bytes, key: str) -> list[bytes]:
    pattern = key_pattern(key)
    return [line for line in split_lines(data) if pattern.match(line)]


def restore_keys(current: bytes, before: bytes, keys: Sequence[str]) -> bytes:
    """``current`` with each of ``keys`` as in ``before``: its line back in place (the line ending
    of ``current`` kept), appended when ``current`` lacks it, removed when ``before`` lacks it."""
    out: list[bytes] = []
    done: set[str] = set()
    for line in split_lines(current):
        key = next((k for k in keys if key_pattern(k).match(line)), None)
        if key is None:
            out.append(line)
            continue
        old = _key_lines(before, key)
        if key in done or not old:
            continue  # a duplicate line of the key, or a key the file did not have: gone
        done.add(key)
        end = b"\r\n" if line.endswith(b"\r\n") else (b"\n" if line.endswith(b"\n") else b"")
        out.append(old[0].rstrip(b"\r\n") + end)
    extra = [_key_lines(before, k)[0] for k in keys if k not in done and _key_lines(before, k)]
    extra = [line if line.endswith(b"\n") else line + b"\n" for line in extra]
    if extra and out and not out[-1].endswith(b"\n"):
        out[-1] += b"\n"
    return b"".join(out + extra)


def restore(
    path: str,
    lock_dir: str,
    backup: str | None,
    *,
    created: bool,
    staged_sha: str,
    keys: Sequence[str],
    lock_seconds: float | None = None,
) -> dict[str, str]:
    """Undo a switch's rename of the env file (see ``restore`` in the module doc); raises LockBusy."""
    real = os.path.realpath(path)
    with _env_lock(real, lock_dir, LOCK_SECONDS if lock_seconds is None else lock_seconds):
        try:
            with open(real, "rb") as fh:
                current: bytes | None = fh.read()
        except FileNotFoundError:
            current = None
        try:
            if current is None:
                return {"restored": "none"}  # nothing to undo (someone removed the file)
            if hashlib.sha256(current).hexdigest() == staged_sha:
                if backup is not None:
                    os.replace(backup, real)
                    backup = None
                    return {"restored": "rename"}
                if created:
                    os.unlink(real)
                    return {"restored": "remove"}
            before = b""
            if backup is not None:
                with open(backup, "rb") as fh:
                    before = fh.read()
            new = restore_keys(current, before, keys)
            if new != current:
                st = os.stat(real)
                _write_atomically(real, new, st.st_mode & 0o7777, st.st_uid, st.st_gid)
            return {"restored": "keys"}
        finally:
            if backup is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)


_TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


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
    if mode == "restore":
        backup = None if argv[3] == "-" else argv[3]
        try:
            created, sha, keys = argv[4] == "true", argv[5], argv[6:]
            done = restore(path, argv[2], backup, created=created, staged_sha=sha, keys=keys)
        except LockBusy:
            print(json.dumps({"error": f"env file lock busy for {LOCK_SECONDS} s"}))
            return LOCK_BUSY_EXIT
        print(json.dumps(done, separators=COMPACT))
        return 0
    if mode == "stage":
        rest, tag = argv[2:], ""
        if rest and rest[0].startswith("--tag="):
            tag, rest = rest[0][len("--tag=") :], rest[1:]
            if not _TAG_RE.fullmatch(tag):
                print(json.dumps({"error": "invalid-argument", "detail": "bad --tag"}))
                return 2
        try:
            staged = stage(path, [split_pair(p) for p in rest], tag)
        except StageError as error:
            print(json.dumps(error.doc, separators=COMPACT))
            return error.code
        print(json.dumps(staged, separators=COMPACT))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
