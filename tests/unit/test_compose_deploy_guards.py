"""compose-deploy.sh's guards that need no daemon (issue 12 items 1-3, 5; issue 13 item 1).

The script text and argv exactly as sent (``bash -s -- <argv>``), with a fake ``docker`` that
records every call and answers ``version``, ``image inspect``, ``container inspect -f`` (a line the
test chooses) and a fake ``docker-compose`` that answers ``config`` (one service, ``svc``). Each refusal is
proven to change nothing (no ``tag``/``up``/``rm`` call, env file untouched). The rig proofs are
tests/integration/test_deploy_safety.py; the env file staging (envfile.py ``stage``) is tested here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import contract
from artifact_cd.scripts import command_line, script_text
from artifact_cd.scripts.py import envfile

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
UNVERIFIED = "fedcba9876543210fedcba9876543210fedcba98"
DIGEST = "sha256:" + "ab" * 32
IMAGE_ID = "sha256:" + "cd" * 32
US = "\x1f"

FAKE_DOCKER = textwrap.dedent(
    """\
    #!/bin/bash
    printf '%s\\n' "$*" >> "$FAKE_LOG"
    case "$1 $2" in
      "version "*) echo 20.10.24; exit 0 ;;
      "compose version") exit 1 ;;
      "image inspect")
        case "$*" in *revision*) echo "$FAKE_COMMIT" ;; *) echo "$FAKE_IMAGE_ID" ;; esac
        exit 0 ;;
      "container inspect")
        [[ -n ${FAKE_CONTAINER:-} ]] || exit 1
        printf '%s\\n' "$FAKE_CONTAINER"; exit 0 ;;
      "ps -a") printf '%s\\n' "${FAKE_PS:-}"; exit 0 ;;
    esac
    exit 1
    """
)
FAKE_COMPOSE = textwrap.dedent(
    """\
    #!/bin/bash
    printf 'compose %s\\n' "$*" >> "$FAKE_LOG"
    case "$*" in *" config") printf 'services:\\n  svc:\\n    image: x\\nversion: "3.8"\\n'; exit 0 ;; esac
    exit 1
    """
)


def container_line(
    project: str, service: str, revision: str, status: str = "running", netmode: str = "bridge"
) -> str:
    """What the script's `docker container inspect -f` template prints for a container: no network
    address (the preflight's health-port probe has nothing to ask) unless on the host network."""
    fields = ["c" * 64, "sha256:" + "ee" * 32, status, "0", revision, netmode, "", project, service, ""]
    return US.join(fields)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("docker-compose", FAKE_COMPOSE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    name = f"guard-{os.getpid()}-{tmp_path.name}".lower()[:50]
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "FAKE_LOG": str(log),
        "FAKE_COMMIT": COMMIT,
        "FAKE_IMAGE_ID": IMAGE_ID,
        "TMPDIR": str(tmp_path),
    }
    (tmp_path / "lock").mkdir()  # --lock-dir: no lock or state file outside the test's tmp dir
    yield {"env": env, "project": project, "log": log, "name": name, "tmp": tmp_path}


def args(h: dict[str, Any], *extra: str, env_file: str | None = None, port: int = 8080) -> list[str]:
    name = h["name"]
    return [
        "--service-id", "findjob", "--compose-service", "svc", "--container", f"{name}-backend",
        "--commit", COMMIT, "--digest", DIGEST, "--image-id", IMAGE_ID,
        "--image", f"127.0.0.1:5000/unidesk/findjob:{COMMIT}", "--retag", f"unidesk/{name}",
        "--project-dir", str(h["project"]), "--project-name", name,
        "--env-file", env_file or str(h["project"] / ".env.deploy"),
        "--env-prefix", "UNIDESK_FINDJOB_DEPLOY_", "--verify", "standard",
        "--health-path", "/health", "--health-port", str(port), "--lock-wait", "1",
        *extra, "--lock-dir", str(lock_dir(h)),
    ]  # fmt: skip


def run(h: dict[str, Any], argv: list[str], **env: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        ["bash", "-c", command_line(argv)],
        input=script_text("compose-deploy.sh"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**h["env"], **env},
        check=False,
    )
    doc = contract.last_json_object(proc.stdout)
    assert doc is not None, (proc.stdout, proc.stderr)
    return proc.returncode, doc, proc.stderr


def mutations(h: dict[str, Any]) -> list[str]:
    calls = Path(h["log"]).read_text().splitlines()
    return [
        c for c in calls if c.split(" ")[0] in ("tag", "rmi", "rm", "stop") or " up " in c or "image rm" in c
    ]


def lock_dir(h: dict[str, Any]) -> Path:
    return Path(h["project"]).parent / "lock"


def test_a_missing_env_directory_is_a_structured_refusal(host: dict[str, Any]) -> None:
    """Issue 12 item 3: not a Python traceback; nothing is tagged, written or started."""
    missing = host["tmp"] / "no-such-dir" / ".env.deploy"
    rc, doc, err = run(host, args(host, env_file=str(missing)))
    assert rc == 3 and doc["error"] == "env-dir-missing" and doc["retryable"] is False
    assert doc["path"] == str(missing.parent) and doc["changed"] == [] and doc["restored"] == []
    assert "Traceback" not in err
    assert mutations(host) == [] and not missing.parent.exists()


def test_a_container_of_another_project_is_refused_before_any_change(host: dict[str, Any]) -> None:
    """Two targets never share a container: one of that name owned by another Compose project
    (the other env's) is neither read as this target's previous commit nor replaced."""
    line = container_line("unidesk-other", "svc", OTHER)
    rc, doc, _ = run(host, args(host), FAKE_CONTAINER=line)
    assert rc == 3 and doc["error"] == "container-conflict", doc
    assert "project 'unidesk-other'" in doc["detail"] and doc["changed"] == []
    assert mutations(host) == []


def test_the_service_running_under_another_container_name_is_refused(host: dict[str, Any]) -> None:
    """Issue 11 item 3: a wrong containerName is found before the recreate (the project's service
    runs as another container); Compose v1's renamed leftover (<id>_<name>) is no such proof."""
    rc, doc, _ = run(host, args(host), FAKE_PS=f"abc123_{host['name']}-backend")
    assert doc.get("error") != "container-name-mismatch", doc
    Path(host["log"]).write_text("")  # that run went on (the fake docker's tag then failed)
    rc, doc, _ = run(host, args(host), FAKE_PS="findjob-real")
    assert rc == 3 and doc["error"] == "container-name-mismatch" and doc["found"] == "findjob-real"
    assert "names.containerName" in doc["detail"] and doc["changed"] == []
    assert mutations(host) == []


def test_a_running_container_refusing_the_health_port_is_refused(host: dict[str, Any]) -> None:
    """Issue 11 item 3: the running container refuses connections on --health-port (a wrong
    healthPort): refused before the recreate, the old container untouched."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]  # closed again: connections to it are refused
    line = container_line(host["name"], "svc", OTHER, netmode="host")
    rc, doc, _ = run(host, args(host, port=free), FAKE_CONTAINER=line)
    assert rc == 3 and doc["error"] == "health-port-refused" and doc["healthPort"] == free
    assert "names.healthPort" in doc["detail"] and mutations(host) == []


@pytest.mark.parametrize("what", ["container", "retag"])
def test_a_deploy_waits_on_the_lock_of_what_it_mutates(host: dict[str, Any], what: str) -> None:
    """Locks keyed by the container name and the retag (another project's deploy holding either
    one, e.g. the other env on this host): lock-busy after --lock-wait, nothing changed."""
    name = host["name"]
    lock = lock_dir(host) / (
        f"unidesk-deploy.container.{name}-backend.lock"
        if what == "container"
        else f"unidesk-deploy.retag.unidesk_{name}.lock"
    )
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        rc, doc, err = run(host, args(host))
    assert rc == 7 and doc["error"] == "lock-busy" and doc["retryable"] is True
    assert doc["lock"] == str(lock) and "waiting up to 1s" in err
    assert mutations(host) == []


def test_an_unusable_lock_or_state_file_is_infra_blocked(host: dict[str, Any]) -> None:
    """A lock or state file this user cannot open or replace (here: a directory in its place, as a
    file of another user would be): a structured infra-blocked naming it, not a shell error; the
    staged env files are removed again and nothing is tagged or started."""
    lock = lock_dir(host) / f"unidesk-deploy.container.{host['name']}-backend.lock"
    lock.mkdir()
    try:
        rc, doc, _ = run(host, args(host))
    finally:
        lock.rmdir()
    assert (
        rc == 5 and doc["error"] == "infra-blocked" and doc["channel"] == "lock" and doc["path"] == str(lock)
    )
    state = lock_dir(host) / f"unidesk-deploy.{host['name']}.svc.state"
    state.mkdir()
    (state / "keep").touch()  # a rename over a non-empty directory fails
    try:
        rc, doc, _ = run(host, args(host))
    finally:
        shutil.rmtree(state)
    assert rc == 5 and doc["error"] == "infra-blocked" and doc.get("channel") == "state-file", doc
    assert [p.name for p in Path(host["project"]).iterdir() if ".unidesk-" in p.name] == []
    assert mutations(host) == []


def _audit(host: dict[str, Any]) -> list[dict[str, Any]]:
    log = host["tmp"] / "audit" / "deploy.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _hold_project_and_deploy(host: dict[str, Any], **env: str) -> tuple[int, dict[str, Any]]:
    audit = [
        "--audit-log",
        str(host["tmp"] / "audit" / "deploy.jsonl"),
        "--stack",
        "prod",
        "--target",
        "d601-compose",
    ]
    with open(lock_dir(host) / f"unidesk-compose.{host['name']}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        rc, doc, _ = run(host, args(host, *audit), **env)
    return rc, doc


@pytest.mark.parametrize(
    ("revision", "state", "expected"),
    [
        (OTHER, "", OTHER),  # no state: this target's container
        (OTHER, f"commit={UNVERIFIED}\nunverified=\n", OTHER),  # the container is newer than the state
        (UNVERIFIED, f"commit={OTHER}\nunverified={UNVERIFIED}\n", OTHER),  # runs the unverified commit
        (None, f"commit={OTHER}\nunverified={UNVERIFIED}\n", OTHER),  # no container (interrupted)
    ],
    ids=["container", "container-newer", "unverified-running", "no-container"],
)
def test_the_previous_commit_is_this_targets_or_the_state_files(
    host: dict[str, Any], revision: str | None, state: str, expected: str
) -> None:
    """previousCommit (the audit line's fromCommit) is recorded before the first change from this
    target's own container, or from <lock>.state when the container is gone or runs a commit whose
    switch was never verified. A refusal after the preflight leaves one `failed` line, no secret."""
    (host["project"] / ".env.deploy").write_text("SECRET_TOKEN=not-for-the-log-7\n")
    if state:
        (lock_dir(host) / f"unidesk-deploy.{host['name']}.svc.state").write_text(state)
    env = {"FAKE_CONTAINER": container_line(host["name"], "svc", revision)} if revision else {}
    rc, doc = _hold_project_and_deploy(host, **env)
    assert rc == 7 and doc["error"] == "lock-busy" and "nothing was changed" in doc["detail"]
    [line] = _audit(host)
    assert line["event"] == "failed" and line["error"] == "lock-busy" and line["fromCommit"] == expected
    assert line["toCommit"] == COMMIT and line["stack"] == "prod" and line["target"] == "d601-compose"
    assert "not-for-the-log" not in json.dumps(line)
    assert mutations(host) == []


def test_verify_mode_takes_no_lock_and_writes_no_audit_line(host: dict[str, Any]) -> None:
    audit = [
        "--audit-log",
        str(host["tmp"] / "audit" / "deploy.jsonl"),
        "--stack",
        "prod",
        "--target",
        "d601-compose",
    ]
    with open(lock_dir(host) / f"unidesk-deploy.{host['name']}.svc.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        rc, doc, _ = run(host, args(host, "--mode", "verify", *audit))
    assert rc == 6 and doc["mode"] == "verify" and doc["error"] == "unhealthy"
    assert _audit(host) == [] and not (host["tmp"] / "audit").exists()
    assert mutations(host) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--auto-restore", "maybe"), ("--target", "k3s"), ("--audit-log", "relative/log"), ("--stack", "a b")],
)
def test_the_new_arguments_are_validated(host: dict[str, Any], flag: str, value: str) -> None:
    extra = {"--audit-log": "/var/log/x.jsonl", "--stack": "prod", "--target": "d601-compose"}
    extra[flag] = value
    argv = (
        args(host, *[w for k, v in extra.items() for w in (k, v)])
        if flag != "--auto-restore"
        else args(host, flag, value)
    )
    rc, doc, _ = run(host, argv)
    assert rc == 2 and doc["error"] == "invalid-argument" and doc["argument"] == flag
    assert mutations(host) == []


# --------------------------------------------------------------------------- --compose-file


def _compose_calls(host: dict[str, Any]) -> list[str]:
    """The fake docker-compose's calls (not the fake docker's `compose version` probe)."""
    return [c for c in Path(host["log"]).read_text().splitlines() if c.startswith("compose -")]


def test_compose_files_are_passed_as_f_in_order_to_compose(host: dict[str, Any]) -> None:
    """services.<id>.names.composeFiles: each --compose-file is a `-f` of the Compose call, in order,
    after the project directory and name; without one, no `-f` (Compose's own discovery)."""
    project = Path(host["project"])
    (project / "compose.base.yml").write_text("services: {}\n")
    extra = host["tmp"] / "extra.yml"
    extra.write_text("services: {}\n")
    run(host, args(host, "--compose-file", "compose.base.yml", "--compose-file", str(extra)))
    config = [c for c in _compose_calls(host) if c.endswith(" config")]
    assert config == [f"compose --project-directory {project} -p {host['name']} -f compose.base.yml -f {extra} config"]
    Path(host["log"]).write_text("")
    run(host, args(host))
    calls = _compose_calls(host)
    assert calls and all(" -f " not in c for c in calls)


def test_a_missing_compose_file_is_refused_before_any_change(host: dict[str, Any]) -> None:
    (Path(host["project"]) / "compose.yml").write_text("services: {}\n")
    rc, doc, _ = run(host, args(host, "--compose-file", "compose.yml", "--compose-file", "compose.prod.yml"))
    assert rc == 3 and doc["error"] == "compose-file-missing" and doc["retryable"] is False, doc
    assert doc["file"] == "compose.prod.yml" and doc["path"] == f"{host['project']}/compose.prod.yml"
    assert "services.findjob.names.composeFiles" in doc["detail"] and doc["changed"] == []
    assert _compose_calls(host) == [] and mutations(host) == []
    assert not (Path(host["project"]) / ".env.deploy").exists()


@pytest.mark.parametrize(
    "value",
    ["../compose.yml", "a/../compose.yml", "./compose.yml", "-f.yml", ".hidden.yml", "dir/", "a b.yml", "/x/../y.yml", ""],
)
def test_a_bad_compose_file_argument_is_refused(host: dict[str, Any], value: str) -> None:
    rc, doc, _ = run(host, args(host, "--compose-file", value))
    assert rc == 2 and doc["error"] == "invalid-argument" and doc["argument"] == "--compose-file", doc
    assert Path(host["log"]).read_text() == "", "refused before any tool ran"


def test_a_relative_lock_dir_is_refused(host: dict[str, Any]) -> None:
    rc, doc, _ = run(host, [*args(host), "--lock-dir", "lock"])
    assert rc == 2 and doc["error"] == "invalid-argument" and doc["argument"] == "--lock-dir", doc


# --------------------------------------------------------------------------- envfile.py stage


def test_stage_writes_the_new_file_beside_it_and_a_hard_link_backup(tmp_path: Path) -> None:
    path = tmp_path / ".env.deploy"
    path.write_bytes(b"A=1\r\nK=old\n")
    path.chmod(0o640)
    out = envfile.stage(str(path), [("K", "new")])
    assert out["changed"] is True and out["created"] is False and out["real"] == str(path)
    tmp, backup = Path(str(out["tmp"])), Path(str(out["backup"]))
    assert tmp.parent == backup.parent == tmp_path and tmp.name.startswith("..env.deploy.unidesk-new.")
    assert tmp.read_bytes() == b"A=1\r\nK=new\n" and (tmp.stat().st_mode & 0o777) == 0o640
    assert backup.stat().st_ino == path.stat().st_ino, "the backup is the current inode (no bytes written)"
    assert path.read_bytes() == b"A=1\r\nK=old\n", "nothing renamed yet"


def test_stage_without_a_change_or_file(tmp_path: Path) -> None:
    path = tmp_path / ".env.deploy"
    path.write_text("K=v\n")
    assert envfile.stage(str(path), [("K", "v")]) == {
        "changed": False, "created": False, "real": str(path), "tmp": None, "backup": None,
        "sha256": hashlib.sha256(b"K=v\n").hexdigest(),
    }  # fmt: skip
    new = envfile.stage(str(tmp_path / "new.env"), [("K", "v")], tag="proj.svc")
    assert new["created"] is True and new["backup"] is None and Path(str(new["tmp"])).read_text() == "K=v\n"
    assert Path(str(new["tmp"])).name.startswith(".new.env.unidesk-proj.svc.new.")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".env.deploy", Path(str(new["tmp"])).name])


# --------------------------------------------------------------------------- envfile.py restore (issue 14)


def _switched(tmp_path: Path, before: bytes | None) -> tuple[Path, dict[str, object]]:
    """An env file as a deploy's switch left it: staged (tag ``p.s``) and renamed over the file."""
    path = tmp_path / ".env.deploy"
    if before is not None:
        path.write_bytes(before)
    staged = envfile.stage(str(path), [("A_COMMIT", "new"), ("A_IMAGE", "img:new")], tag="p.s")
    os.replace(str(staged["tmp"]), path)
    return path, staged


def _restore(tmp_path: Path, path: Path, staged: dict[str, object]) -> dict[str, str]:
    backup = staged["backup"]
    return envfile.restore(
        str(path), str(tmp_path), None if backup is None else str(backup), created=bool(staged["created"]),
        staged_sha=str(staged["sha256"]), keys=["A_COMMIT", "A_IMAGE", "A_DIGEST"],
    )  # fmt: skip


def test_restore_renames_the_backup_back_while_the_file_is_what_the_switch_wrote(tmp_path: Path) -> None:
    before = b"X=1\r\nA_COMMIT=old # c\nexport A_DIGEST = d\n"
    path, staged = _switched(tmp_path, before)
    assert _restore(tmp_path, path, staged) == {"restored": "rename"}
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env.deploy", f"unidesk-envfile.{_lock_hash(path)}.lock"]
    path.unlink()
    path, staged = _switched(tmp_path, None)  # the switch created the file
    assert _restore(tmp_path, path, staged) == {"restored": "remove"} and not path.exists()


def test_restore_after_another_deploy_renamed_keeps_its_keys(tmp_path: Path) -> None:
    """Another service's deploy staged from the switched file and renamed its own over it (it may:
    the env lock is released after each rename). The restore puts back only this service's keys --
    the line as it was, in place; a key the file did not have goes -- and keeps every other byte."""
    path, staged = _switched(tmp_path, b"X=1\r\nA_COMMIT=old\r\nB_COMMIT=b-old\n")
    other = envfile.stage(str(path), [("B_COMMIT", "b-new"), ("C", "3")], tag="p.t")
    os.replace(str(other["tmp"]), path)
    os.unlink(str(other["backup"]))
    assert _restore(tmp_path, path, staged) == {"restored": "keys"}
    assert path.read_bytes() == b"X=1\r\nA_COMMIT=old\r\nB_COMMIT=b-new\nC=3\n"
    assert not Path(str(staged["backup"])).exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    path, staged = _switched(fresh, None)
    envfile.set_keys(str(path), str(tmp_path), [("B", "x")])  # lock dir: tmp_path, as _restore's
    assert _restore(tmp_path, path, staged) == {"restored": "keys"}
    assert path.read_bytes() == b"B=x\n"  # created by the switch: its keys go, the other's stay


def test_restore_main_maps_a_busy_lock_to_exit_7(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, staged = _switched(tmp_path, b"A_COMMIT=old\n")
    lock = tmp_path / f"unidesk-envfile.{_lock_hash(path)}.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        argv = ["restore", str(path), str(tmp_path), str(staged["backup"]), "false", str(staged["sha256"]), "A_COMMIT"]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(envfile, "LOCK_SECONDS", 0.2)
            assert envfile.main(argv) == envfile.LOCK_BUSY_EXIT
    assert "busy" in capsys.readouterr().out and path.read_bytes() != b"A_COMMIT=old\n"
    assert envfile.main(argv) == 0 and path.read_bytes() == b"A_COMMIT=old\n"


def _lock_hash(path: Path) -> str:
    return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:16]


def test_stage_refusals_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(envfile.StageError) as missing:
        envfile.stage(str(tmp_path / "nope" / ".env"), [("K", "v")])
    assert missing.value.code == envfile.DIR_MISSING_EXIT and missing.value.doc["error"] == "env-dir-missing"
    path = tmp_path / ".env.deploy"
    path.write_text("K=old\n")

    def no_space(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(envfile.StageError) as full:
        envfile.stage(str(path), [("K", "new")])
    assert full.value.code == envfile.DISK_FULL_EXIT == 28
    assert full.value.doc["error"] == "disk-full" and full.value.doc["path"] == str(tmp_path)
    assert full.value.doc["bytesNeeded"] == len("K=new\n") + len("K=old\n")
    assert isinstance(full.value.doc["bytesFree"], int)
    assert [p.name for p in tmp_path.iterdir()] == [".env.deploy"] and path.read_text() == "K=old\n"


def test_stage_main_prints_one_line_and_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert envfile.main(["stage", str(tmp_path / "x" / ".env"), "K=v"]) == 3
    assert json.loads(capsys.readouterr().out) == {"error": "env-dir-missing", "path": str(tmp_path / "x")}
    assert envfile.main(["stage", str(tmp_path / ".env"), "K=v=w"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert Path(doc["tmp"]).read_text() == "K=v=w\n"


def test_a_refusal_while_the_background_compose_config_runs_waits_for_it(host: dict[str, Any]) -> None:
    """Issue 14: `compose config` (with the new deploy values) starts in the background when the
    preflight begins and overlaps the image checks. A refusal before its result is collected (here:
    image-missing) still changes nothing and leaves no process behind: the script waits for the
    Compose run before it exits and removes its temp dir after it."""
    done = Path(f"{host['log']}.config-done")
    slow = FAKE_COMPOSE.replace('*" config") printf', f'*" config") sleep 1; : >"{done}"; printf')
    assert slow != FAKE_COMPOSE
    (host["tmp"] / "bin" / "docker-compose").write_text(slow)
    rc, doc, _ = run(host, args(host), FAKE_IMAGE_ID="sha256:" + "00" * 32)
    assert rc == 3 and doc["error"] == "image-missing" and doc["changed"] == [], doc
    assert any(c.endswith(" config") for c in Path(host["log"]).read_text().splitlines()), "config was started"
    assert done.exists(), "the script exited while its background compose config still ran"
    assert mutations(host) == [] and not (Path(host["project"]) / ".env.deploy").exists()
    assert list(Path(host["tmp"]).glob("unidesk-cd.*")) == []
