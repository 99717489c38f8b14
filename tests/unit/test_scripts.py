"""The deploy scripts as sent to a host (lib.sh + script on stdin, argv from the plan).

No daemon runs here: these tests prove the conventions (docs/contracts.md), the argument
validation of every plan step (R11: nothing acts on a placeholder or a hostile value), the
read-auth output, the atomic env-file rewrite of compose-deploy (R14), its lock (one deploy of a
service at a time) and its secret preflight (R15) with a fake ``docker`` that records every call.
The real daemons are exercised in tests/integration/test_deploy_*.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import textwrap
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import plan
from artifact_cd.config import load_stack
from artifact_cd.contract import ARGS_MODELS, last_json_object
from artifact_cd.scripts import PY_DIR, SCRIPT_DIR, command_line, script_text

ROOT = Path(__file__).resolve().parents[2]
# the consumers' scripts (manifest-check, move-image, compose-deploy, k3s-import, k3s-verify, read-auth);
# the read-only probes (registry-probe, live-probe): test_registry_scripts.py, test_live_probe.py
DEPLOY_SCRIPTS = tuple(
    dict.fromkeys(m.script for m in ARGS_MODELS if not m.script.startswith(("registry-", "live-", "history-")))
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
IMAGE_ID = "sha256:" + "cd" * 32
BASH = shutil.which("bash") or "/bin/bash"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        doc = last_json_object(self.stdout)
        assert doc is not None, f"no JSON result line; stdout: {self.stdout[-500:]!r}; stderr: {self.stderr[-2000:]}"
        return doc


def run_script(name: str, args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """Exactly what a remote Command runs: ``bash -s -- <quoted args>`` with the script on stdin."""
    proc = subprocess.run(
        [BASH, "-c", command_line(args)],
        input=script_text(name),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("name", DEPLOY_SCRIPTS)
def test_script_is_shellcheck_clean_as_sent(name: str) -> None:
    """shellcheck of the exact stdin a host receives (lib.sh + script)."""
    assert shutil.which("shellcheck"), "shellcheck is one of ./run's rig packages"
    proc = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=script_text(name), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", DEPLOY_SCRIPTS)
def test_script_follows_the_stdin_conventions(name: str) -> None:
    body = (SCRIPT_DIR / name).read_text(encoding="utf-8")
    lines = [line for line in body.splitlines() if line.strip()]
    assert "set -euo pipefail" in lines
    assert lines[-1] == 'main "$@"'
    main = body.index("\nmain() {\n")
    first = body[main:].splitlines()[2].strip()
    assert first == "exec </dev/null", f"{name}: main must start with exec </dev/null"
    code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\beval\b", code)


def _plan_steps() -> list[tuple[str, plan.Step]]:
    out = []
    for stack, service in (
        ("prod", "baidu-netdisk"),
        ("prod", "todo-note"),
        ("prod", "findjob"),
        ("dev", "frontend"),
        ("dev", "code-queue"),
        ("prod", "decision-center"),
    ):
        cfg = load_stack(ROOT, stack)
        for step in plan.plan_service(cfg, service).steps:
            if step.script in DEPLOY_SCRIPTS:
                out.append((f"{stack}-{service}-{step.id}", step))
    return out


PLAN_STEPS = _plan_steps()
LIVE_STEPS = [(label, step) for label, step in PLAN_STEPS if step.needs_manifest]


def test_every_deploy_script_appears_in_some_plan() -> None:
    used = {step.script for _, step in PLAN_STEPS}
    assert used == set(DEPLOY_SCRIPTS)


@pytest.mark.parametrize(("label", "step"), LIVE_STEPS, ids=[label for label, _ in LIVE_STEPS])
def test_plan_step_with_unresolved_placeholders_acts_on_nothing(label: str, step: plan.Step) -> None:
    """Each plan step's argv is accepted by its script up to the live placeholders, which are refused
    (exit 2) before any tool runs: a PATH of bash and tr only proves no docker/ssh/curl was needed."""
    run = run_script(step.script or "", list(step.args), env={"PATH": str(tmp_bin_with("bash", "tr"))})
    assert run.returncode == 2, (label, run.stdout, run.stderr)
    assert run.json["error"] == "invalid-argument"
    assert run.json["argument"] in ("--digest", "--image-id")


@pytest.mark.parametrize(("label", "step"), PLAN_STEPS, ids=[label for label, _ in PLAN_STEPS])
def test_plan_step_resolved_args_pass_validation(label: str, step: plan.Step) -> None:
    """With live values in place every argument validates; the scripts then stop at the first missing
    tool (exit 5 infra-blocked, naming it) instead of guessing. PATH holds only bash's own dir."""
    bash_dir = tmp_bin_with("bash", "mktemp", "rm", "hostname", "head", "tr")
    run = run_script(
        step.script or "", step.resolved_args(DIGEST, IMAGE_ID), env={"PATH": str(bash_dir)}
    )
    assert run.returncode == 5, (label, run.stdout, run.stderr)
    assert run.json["error"] == "infra-blocked" and run.json["channel"]


def tmp_bin_with(*tools: str) -> Path:
    base = Path(os.environ.get("PYTEST_TMP_BIN", "/tmp")) / f"unidesk-cd-bin-{os.getpid()}-{'-'.join(tools)}"
    base.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        link = base / tool
        if not link.exists():
            link.symlink_to(found)
    return base


@pytest.fixture(scope="module", autouse=True)
def _clean_tmp_bins() -> Iterator[None]:
    yield
    for path in Path("/tmp").glob(f"unidesk-cd-bin-{os.getpid()}-*"):
        shutil.rmtree(path, ignore_errors=True)


HOSTILE = (
    "abc;touch /tmp/pwned",
    "$(id)",
    "`id`",
    "a b",
    "--registry",
    "../../etc/passwd",
    "x\ny",
    "",
)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("name", "args", "slot"),
    [
        ("manifest-check.sh", ["--registry", "127.0.0.1:5000", "--repository", "unidesk/x", "--tag", COMMIT], 5),
        ("manifest-check.sh", ["--registry", "127.0.0.1:5000", "--repository", "unidesk/x", "--tag", COMMIT], 1),
        (
            "move-image.sh",
            ["--mode", "tunnel", "--registry", "127.0.0.1:5000", "--repository", "unidesk/x", "--tag", COMMIT,
             "--digest", DIGEST, "--image-id", IMAGE_ID, "--d601", "root@d601", "--d601-port", "22"],
            13,
        ),
        ("read-auth.sh", ["--config", "/srv/config.json"], 1),
        (
            "k3s-verify.sh",
            ["--namespace", "unidesk", "--deployment", "x", "--service", "x", "--port", "8080",
             "--health-path", "/health", "--commit", COMMIT, "--timeout", "60"],
            7,
        ),
    ],
)
def test_hostile_values_are_refused_before_use(name: str, args: list[str], slot: int, value: str, tmp_path: Path) -> None:
    bad = list(args)
    bad[slot] = value
    run = run_script(name, bad, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.json["ok"] is False and run.json["error"] == "invalid-argument"
    assert not Path("/tmp/pwned").exists()


def test_unknown_and_valueless_arguments_are_structured_refusals() -> None:
    run = run_script("read-auth.sh", ["--config"])
    assert run.returncode == 2 and run.json["argument"] == "--config"
    run = run_script("read-auth.sh", ["--bogus", "x"])
    assert run.returncode == 2 and run.json["argument"] == "--bogus"
    run = run_script("move-image.sh", ["--mode", "ftp"])
    assert run.returncode == 2 and run.json["argument"] == "--mode"


# --------------------------------------------------------------------------- read-auth


def test_read_auth_prints_only_the_auth_section(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    auth = {"admin": {"password": "p\"w d"}, "tokens": ["t1"]}
    config.write_text(json.dumps({"auth": auth, "database": {"password": "db-secret"}}), encoding="utf-8")
    run = run_script("read-auth.sh", ["--config", str(config)])
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert run.json["ok"] is True and run.json["auth"] == auth
    assert run.json["authSha256"].startswith("sha256:")
    assert "db-secret" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "config-missing"),
        ('{"auth": {"k": "secret-value"', "config-invalid"),
        ('["secret-value"]', "config-invalid"),
        ('{"other": "secret-value"}', "auth-missing"),
        ('{"auth": "secret-value"}', "auth-missing"),
    ],
)
def test_read_auth_failures_are_structured_and_quote_nothing(tmp_path: Path, content: str | None, error: str) -> None:
    config = tmp_path / "config.json"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    run = run_script("read-auth.sh", ["--config", str(config)])
    assert run.returncode == 3
    assert run.json == {**run.json, "ok": False, "error": error, "retryable": False}
    assert "secret-value" not in run.stdout + run.stderr


# --------------------------------------------------------------------------- compose-deploy: env file


ENVFILE_PY = (PY_DIR / "envfile.py").read_text(encoding="utf-8")  # the text compose-deploy.sh runs


def envfile(*args: str) -> subprocess.CompletedProcess[str]:
    """The env-file helper exactly as compose-deploy.sh runs it: ``python3 -c "$ENVFILE_PY" ...``."""
    return subprocess.run(["python3", "-c", ENVFILE_PY, *args], capture_output=True, text=True, check=False)


def test_env_file_rewrite_keeps_every_other_byte_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / ".env.deploy"
    original = (
        b"OTHER=keep me\r\n# comment with UNIDESK_X_DEPLOY_COMMIT=not-a-key\n"
        b"  export UNIDESK_X_DEPLOY_COMMIT = old\n"
        b"SECRET='s3cr3t value'\n\nweird line without equals\nLAST=no newline"
    )
    path.write_bytes(original)
    os.chmod(path, 0o640)
    os.chown(path, 1234, 2345)
    inode = path.stat().st_ino
    proc = envfile("set", str(path), str(tmp_path), f"UNIDESK_X_DEPLOY_COMMIT={COMMIT}",
                   "UNIDESK_X_DEPLOY_IMAGE=127.0.0.1:5000/unidesk/x:" + COMMIT, f"UNIDESK_X_DEPLOY_DIGEST={DIGEST}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"changed": True, "created": False}
    assert path.read_bytes() == (
        b"OTHER=keep me\r\n# comment with UNIDESK_X_DEPLOY_COMMIT=not-a-key\n"
        + f"UNIDESK_X_DEPLOY_COMMIT={COMMIT}\n".encode()
        + b"SECRET='s3cr3t value'\n\nweird line without equals\nLAST=no newline\n"
        + f"UNIDESK_X_DEPLOY_IMAGE=127.0.0.1:5000/unidesk/x:{COMMIT}\n".encode()
        + f"UNIDESK_X_DEPLOY_DIGEST={DIGEST}\n".encode()
    )
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (1234, 2345)
    assert st.st_ino != inode, "written through a temp file + rename (atomic), not in place"
    assert "s3cr3t" not in proc.stdout + proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".env.deploy.")] == []

    again = envfile("set", str(path), str(tmp_path), f"UNIDESK_X_DEPLOY_COMMIT={COMMIT}")
    assert json.loads(again.stdout) == {"changed": False, "created": False}
    assert path.stat().st_ino == st.st_ino


def test_env_file_is_created_private_when_missing_and_symlinks_are_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.env"
    link = tmp_path / ".env.deploy"
    link.symlink_to(target)
    proc = envfile("set", str(link), str(tmp_path), f"UNIDESK_X_DEPLOY_COMMIT={COMMIT}")
    assert json.loads(proc.stdout) == {"changed": True, "created": True}
    assert link.is_symlink() and target.read_text() == f"UNIDESK_X_DEPLOY_COMMIT={COMMIT}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_concurrent_env_file_writers_lose_no_update(tmp_path: Path) -> None:
    """Two services of one project write the shared env file at the same moment: both keys land."""
    path = tmp_path / ".env.deploy"
    path.write_text("BASE=1\n")
    keys = [f"UNIDESK_S{i}_DEPLOY_COMMIT" for i in range(8)]
    threads = [
        threading.Thread(target=envfile, args=("set", str(path), str(tmp_path), f"{k}={COMMIT}")) for k in keys
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert lines[0] == "BASE=1"
    assert sorted(lines[1:]) == sorted(f"{k}={COMMIT}" for k in keys)


def test_secret_report_is_presence_and_length_only(tmp_path: Path) -> None:
    path = tmp_path / ".env.deploy"
    path.write_text(
        'A_ID="quoted value"\nexport A_SECRET=plain-secret # a comment\nA_TOKEN=\nA_TOKEN2= \n'
    )
    proc = envfile("secrets", str(path), "A_ID", "A_SECRET", "A_TOKEN", "A_TOKEN2", "A_MISSING")
    assert proc.returncode == 0
    report, missing = proc.stdout.splitlines()
    assert json.loads(report) == {
        "A_ID": {"present": True, "length": len("quoted value")},
        "A_SECRET": {"present": True, "length": len("plain-secret")},
        "A_TOKEN": {"present": False, "length": 0},
        "A_TOKEN2": {"present": False, "length": 0},
        "A_MISSING": {"present": False, "length": 0},
    }
    assert missing.split() == ["A_TOKEN", "A_TOKEN2", "A_MISSING"]
    assert "quoted value" not in proc.stdout and "plain-secret" not in proc.stdout


# --------------------------------------------------------------------------- compose-deploy: lock, preflight

FAKE_DOCKER = textwrap.dedent(
    """\
    #!/bin/bash
    # fake docker for unit tests: records every call; answers version / image inspect only
    printf '%s\\n' "$*" >> "$FAKE_LOG"
    case "$1 $2" in
      "version "*) echo 20.10.24; exit 0 ;;
      "compose version") exit 1 ;;
      "image inspect")
        [[ -n ${FAKE_IMAGE_ID:-} ]] || exit 1
        case "$*" in *revision*) echo "$FAKE_COMMIT" ;; *) echo "$FAKE_IMAGE_ID" ;; esac
        exit 0 ;;
      "network ls") [[ -n ${FAKE_NETWORKS:-} ]] || exit 1; printf '%s\\n' $FAKE_NETWORKS; exit 0 ;;
      "tag "*) [[ -n ${FAKE_TAG_OK:-} ]] || exit 1; exit 0 ;;
    esac
    exit 1
    """
)
FAKE_COMPOSE = textwrap.dedent(
    """\
    #!/bin/bash
    printf 'compose %s\\n' "$*" >> "$FAKE_LOG"
    case "$*" in *" config") printf 'networks:\\n  back: {}\\nservices:\\n  baidu-netdisk:\\n    image: x\\n'; exit 0 ;; esac
    case "$*" in *" up "*)
      # another service's deploy renames its own env file over ours while this `up` runs, then up fails
      if [[ -n ${FAKE_UP_OTHER:-} ]]; then
        cp -p "$FAKE_UP_OTHER" "$FAKE_UP_OTHER.other" && printf 'OTHER_COMMIT=o-new\\n' >>"$FAKE_UP_OTHER.other"
        mv -f "$FAKE_UP_OTHER.other" "$FAKE_UP_OTHER"
      fi
      echo "up failed" >&2; exit 1 ;;
    esac
    exit 1
    """
)


@pytest.fixture
def fake_host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker-compose").write_text(FAKE_COMPOSE)
    for tool in ("docker", "docker-compose"):
        (bin_dir / tool).chmod(0o755)
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "lock").mkdir()  # --lock-dir: no lock or state file outside the test's tmp dir
    log = tmp_path / "calls.log"
    log.touch()
    name = f"unit-{os.getpid()}-{tmp_path.name}".lower()[:60]
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "FAKE_LOG": str(log),
        "FAKE_COMMIT": COMMIT,
        "TMPDIR": str(tmp_path),
    }
    yield {"env": env, "project": project, "log": log, "name": name}


def deploy_args(project: Path, name: str, *extra: str) -> list[str]:
    return [
        "--service-id", "baidu-netdisk", "--compose-service", "baidu-netdisk", "--container", "baidu-netdisk-backend",
        "--commit", COMMIT, "--digest", DIGEST, "--image-id", IMAGE_ID,
        "--image", f"127.0.0.1:5000/unidesk/baidu-netdisk:{COMMIT}", "--retag", "baidu-netdisk",
        "--project-dir", str(project), "--project-name", name, "--env-file", str(project / ".env.deploy"),
        "--env-prefix", "UNIDESK_BAIDU_NETDISK_DEPLOY_", "--verify", "baidu-auth-gate",
        "--health-path", "/health", "--health-port", "8080",
        "--required-secret", "UNIDESK_BAIDU_NETDISK_CLIENT_ID",
        "--required-secret", "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET",
        "--required-secret", "UNIDESK_BAIDU_NETDISK_TOKEN_KEY",
        *extra,
        "--lock-dir", str(_lock_dir(project)),
    ]


def mutations(log: Path) -> list[str]:
    calls = log.read_text().splitlines()
    return [c for c in calls if c.split(" ")[0] in ("tag", "rmi", "run", "rm", "stop") or " up " in c]


def _lock_dir(project: Path) -> Path:
    return project.parent / "lock"


def test_second_deploy_of_a_service_waits_then_reports_lock_busy(fake_host: dict[str, Any]) -> None:
    project, name = fake_host["project"], fake_host["name"]
    lock_file = _lock_dir(project) / f"unidesk-deploy.{name}.baidu-netdisk.lock"
    with open(lock_file, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"commit={'f' * 40} pid=1 since=now\n")
        held.flush()
        run = run_script("compose-deploy.sh", deploy_args(project, name, "--lock-wait", "1"), env=fake_host["env"])
    assert run.returncode == 7, (run.stdout, run.stderr)
    assert run.json["error"] == "lock-busy" and run.json["retryable"] is True
    assert "f" * 40 in run.json["holder"], "the refusal names the deploy holding the lock"
    assert "waiting up to 1s" in run.stderr
    assert mutations(fake_host["log"]) == []


def test_a_recreate_waits_for_another_service_of_the_same_project(fake_host: dict[str, Any]) -> None:
    """Two services of one Compose project are not recreated at once while a network of the project
    is missing (concurrent `compose up` would duplicate it; here Docker lists none). The project lock
    is taken after the preflight, before any change: while another deploy of the project holds it,
    nothing is tagged, written or started (the shared case: the test after this one)."""
    project, name = fake_host["project"], fake_host["name"]
    env_file = project / ".env.deploy"
    content = "".join(f"UNIDESK_BAIDU_NETDISK_{k}=v-{k.lower()}\n" for k in ("CLIENT_ID", "CLIENT_SECRET", "TOKEN_KEY"))
    env_file.write_text(content)
    env = {**fake_host["env"], "FAKE_IMAGE_ID": IMAGE_ID}
    lock_file = _lock_dir(project) / f"unidesk-compose.{name}.lock"
    with open(lock_file, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = run_script("compose-deploy.sh", deploy_args(project, name, "--lock-wait", "1"), env=env)
    assert run.returncode == 7, (run.stdout, run.stderr)
    assert run.json["error"] == "lock-busy" and run.json["retryable"] is True
    assert f"Compose project {name}" in run.json["detail"] and "nothing was changed" in run.json["detail"]
    assert "is recreating; waiting up to 1s" in run.stderr
    assert mutations(fake_host["log"]) == []
    assert env_file.read_text() == content


@pytest.mark.parametrize(
    ("networks", "holder", "waits"),
    [
        ("default back", fcntl.LOCK_SH, False),  # every network exists: deploys share the project
        ("default", fcntl.LOCK_SH, True),  # `back` would be created by `up`: exclusive
        ("back", fcntl.LOCK_SH, True),  # `default` too
        ("", fcntl.LOCK_SH, True),  # Docker could not list them: exclusive
        ("default back", fcntl.LOCK_EX, True),  # a deploy creating a network holds it exclusively
    ],
)
def test_the_project_lock_is_shared_only_once_every_network_exists(
    fake_host: dict[str, Any], networks: str, holder: int, waits: bool
) -> None:
    """Issue 14: deploys of other services of one project recreate at the same time once no `compose
    up` can create a network (the project's config names `back`; `default` always counts). While one
    is missing, or another deploy holds the lock exclusively, the deploy waits (lock-busy after
    --lock-wait), nothing changed. Past the lock here, the fake docker refuses the first `tag`: the
    switch restores and the env file is byte-identical."""
    project, name = fake_host["project"], fake_host["name"]
    env_file = project / ".env.deploy"
    content = "".join(f"UNIDESK_BAIDU_NETDISK_{k}=v-{k.lower()}\n" for k in ("CLIENT_ID", "CLIENT_SECRET", "TOKEN_KEY"))
    env_file.write_text(content)
    env = {**fake_host["env"], "FAKE_IMAGE_ID": IMAGE_ID, "FAKE_NETWORKS": networks}
    lock_file = _lock_dir(project) / f"unidesk-compose.{name}.lock"
    with open(lock_file, "a+") as held:
        fcntl.flock(held, holder)
        run = run_script("compose-deploy.sh", deploy_args(project, name, "--lock-wait", "1"), env=env)
    calls = fake_host["log"].read_text().splitlines()
    assert any(c.startswith("network ls --filter label=com.docker.compose.project=" + name) for c in calls)
    if waits:
        assert run.returncode == 7 and run.json["error"] == "lock-busy", (run.stdout, run.stderr)
        assert "is recreating; waiting up to 1s" in run.stderr
        assert mutations(fake_host["log"]) == []
    else:
        assert "is recreating" not in run.stderr, run.stderr
        assert run.json["error"] == "infra-blocked" and "could not tag" in run.json["detail"], run.stdout
        assert mutations(fake_host["log"])[:1] == [f"tag 127.0.0.1:5000/unidesk/baidu-netdisk:{COMMIT} baidu-netdisk:{COMMIT}"]
    assert env_file.read_text() == content
    assert [p.name for p in project.iterdir()] == [".env.deploy"]  # no staged file or backup left


@pytest.mark.parametrize("other_deploy", [False, True])
def test_a_failed_up_restores_only_this_services_keys_once_another_deploy_renamed(
    fake_host: dict[str, Any], other_deploy: bool
) -> None:
    """Issue 14: the env file lock is released at the switch's rename, so another service's deploy
    may rename its own file (built from ours) before our `up` fails. The restore then puts back only
    this service's three keys and keeps the other's; alone, the backup is renamed back (byte-exact)."""
    project, name = fake_host["project"], fake_host["name"]
    env_file = project / ".env.deploy"
    content = "".join(f"UNIDESK_BAIDU_NETDISK_{k}=v-{k.lower()}\n" for k in ("CLIENT_ID", "CLIENT_SECRET", "TOKEN_KEY"))
    content += "UNIDESK_BAIDU_NETDISK_DEPLOY_COMMIT=" + "1" * 40 + "\r\n"
    env_file.write_text(content, newline="")
    env = {**fake_host["env"], "FAKE_IMAGE_ID": IMAGE_ID, "FAKE_TAG_OK": "1"}
    if other_deploy:
        env["FAKE_UP_OTHER"] = str(env_file)
    run = run_script("compose-deploy.sh", deploy_args(project, name), env=env)
    assert run.returncode == 6 and run.json["error"] == "recreate-failed", (run.stdout, run.stderr)
    assert "env-file" in run.json["restored"] and "env-file" in run.json["changed"]
    expected = content + ("OTHER_COMMIT=o-new\n" if other_deploy else "")
    assert env_file.read_bytes() == expected.encode()
    assert [p.name for p in project.iterdir()] == [".env.deploy"]  # no staged file or backup left


def test_leftover_staged_files_of_this_service_and_older_versions_go_and_others_stay(fake_host: dict[str, Any]) -> None:
    """Staged env files carry their deploy's project.service (whose lock that deploy holds): a deploy
    removes its own service's leftovers (a killed run) and untagged ones of older versions, never
    another service's -- which may be between its rename and its `up` -- even when that tag
    starts like an untagged name (a project called `new`)."""
    project, name = fake_host["project"], fake_host["name"]
    env_file = project / ".env.deploy"
    content = "".join(f"UNIDESK_BAIDU_NETDISK_{k}=v-{k.lower()}\n" for k in ("CLIENT_ID", "CLIENT_SECRET", "TOKEN_KEY"))
    env_file.write_text(content)
    # envfile.py names them "." + the env file's name + ".unidesk-" (here ..env.deploy.unidesk-...)
    gone = [f"..env.deploy.unidesk-{name}.baidu-netdisk.new.k1ll3d00", f"..env.deploy.unidesk-{name}.baidu-netdisk.backup.k1ll3d01",
            "..env.deploy.unidesk-new.0ld0ld00", "..env.deploy.unidesk-backup.0ld0ld01"]  # fmt: skip
    kept = [f"..env.deploy.unidesk-{name}.other.new.runn1ng0", "..env.deploy.unidesk-new.svc.backup.runn1ng1",
            "..env.deploy.unidesk-backup.svc.new.runn1ng2"]  # fmt: skip
    for leftover in gone + kept:
        (project / leftover).write_text("x\n")
    env = {**fake_host["env"], "FAKE_IMAGE_ID": IMAGE_ID, "FAKE_NETWORKS": "default back"}
    run = run_script("compose-deploy.sh", deploy_args(project, name), env=env)
    assert run.json["error"] == "infra-blocked" and "could not tag" in run.json["detail"], run.stdout  # staged, then stopped
    assert sorted(p.name for p in project.iterdir()) == sorted([".env.deploy", *kept])
    assert env_file.read_text() == content


def test_missing_image_is_refused_before_anything_changes(fake_host: dict[str, Any]) -> None:
    project, name = fake_host["project"], fake_host["name"]
    run = run_script("compose-deploy.sh", deploy_args(project, name), env=fake_host["env"])
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert run.json["error"] == "image-missing"
    assert mutations(fake_host["log"]) == []
    assert not (project / ".env.deploy").exists()


def test_missing_secret_is_refused_with_presence_only(fake_host: dict[str, Any]) -> None:
    project, name = fake_host["project"], fake_host["name"]
    env_file = project / ".env.deploy"
    content = "UNIDESK_BAIDU_NETDISK_CLIENT_ID=id-value-123\nUNIDESK_BAIDU_NETDISK_TOKEN_KEY=\nOTHER=x\n"
    env_file.write_text(content)
    env = {**fake_host["env"], "FAKE_IMAGE_ID": IMAGE_ID}
    run = run_script("compose-deploy.sh", deploy_args(project, name), env=env)
    assert run.returncode == 3, (run.stdout, run.stderr)
    doc = run.json
    assert doc["error"] == "secret-missing" and doc["requiredSecretsPresent"] is False
    assert doc["missingSecretKeys"] == ["UNIDESK_BAIDU_NETDISK_CLIENT_SECRET", "UNIDESK_BAIDU_NETDISK_TOKEN_KEY"]
    assert doc["secrets"]["UNIDESK_BAIDU_NETDISK_CLIENT_ID"] == {"present": True, "length": 12}
    assert "restore the missing keys" in doc["recommendedAction"]
    assert "id-value-123" not in run.stdout + run.stderr
    assert env_file.read_text() == content
    assert mutations(fake_host["log"]) == []


def test_a_command_failing_before_any_result_still_answers_one_json_line(tmp_path: Path) -> None:
    """lib.sh's exit handler: `set -e` stops a script mid-way; the caller still gets a structured line,
    the exit status is kept and the private temp dir is removed."""
    snippet = 'main() {\n  exec </dev/null\n  make_tmp\n  printf "%s" "$TMP" >&2\n  false\n}\nmain "$@"\n'
    text = (SCRIPT_DIR / "lib.sh").read_text(encoding="utf-8") + snippet
    proc = subprocess.run([BASH, "-s", "--"], input=text, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert Run(proc.returncode, proc.stdout, proc.stderr).json == {
        "ok": False,
        "error": "unexpected-failure",
        "detail": "a command failed (exit 1) before a result; see stderr",
        "retryable": False,
    }
    assert proc.stderr.startswith(str(tmp_path)) and not Path(proc.stderr.split()[0]).exists()
