"""registry-install.sh and registry-probe.sh, run for real on this machine where that is safe.

- shellcheck of the text exactly as sent (lib.sh + script);
- hostile arguments are refused (exit 2, structured JSON) before anything is touched;
- ``write`` and ``dirs`` semantics on temporary directories (the same text the hosts receive);
- the read-only probe's facts on this machine, its /proc/net/tcp{,6} parser, and its listener
  facts inside a private network namespace of the test's own;
- the rendered unit passes ``systemd-analyze verify`` (R5, R7).
``activate`` needs a systemd host: tests/integration/test_registry_host.py runs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import health, render
from artifact_cd.config import RegistryConfig, parse_stack_config
from artifact_cd.contract import StepResult, last_json_object
from artifact_cd.plan import plan_registry_host, registry_probe_args
from artifact_cd.scripts import command_line, script_text

SCRIPTS = ("registry-install.sh", "registry-probe.sh")
SHA = "a" * 64
WILDCARD_V4 = "0.0.0.0"  # noqa: S104 - only ever bound inside the test's own network namespace


def run_script(
    name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    """Exactly what a host runs: ``bash -s -- <quoted args>`` with the script text on stdin."""
    proc = subprocess.run(
        ["bash", "-c", command_line(args)], input=script_text(name), capture_output=True, text=True,
        timeout=120, env=env, cwd=cwd, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) <= 1, f"more than one stdout line: {proc.stdout!r}"
    return proc.returncode, last_json_object(proc.stdout), proc.stderr


def cfg_raw() -> dict[str, Any]:
    return {
        "env": "prod",
        "hosts": {"d601": {"host": "d601", "user": "root"}, "master": {"host": "master"}},
        "registry": {"composeCommand": "/usr/bin/docker-compose"},
    }


# --------------------------------------------------------------------------- shellcheck


@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck_as_sent(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (./run tests installs it)")
    proc = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=script_text(name), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_conventions(name: str) -> None:
    body = (Path(__file__).resolve().parents[2] / "artifact_cd" / "scripts" / name).read_text()
    assert "set -euo pipefail" in body and "eval" not in body
    assert body.rstrip().splitlines()[-1] == 'main "$@"'
    assert "main() {\n  exec </dev/null" in body


# --------------------------------------------------------------------------- hostile arguments


def _probe_args(**override: str) -> list[str]:
    args = list(registry_probe_args(parse_stack_config(cfg_raw(), "prod")))
    for flag, value in override.items():
        args[args.index("--" + flag.replace("_", "-")) + 1] = value
    return args


HOSTILE_PROBE = [
    _probe_args(unit="x.service; rm -rf /"),
    _probe_args(unit="$(touch CANARY).service"),
    _probe_args(unit_path="relative/unit.service"),
    _probe_args(storage="/home/ubuntu/../../etc"),
    _probe_args(storage="/home/ubuntu/$(touch CANARY)"),
    _probe_args(storage="/srv/a\nb"),
    _probe_args(storage="/"),
    _probe_args(config_path="/etc/x;id"),
    _probe_args(endpoint="0.0.0.0:5000"),
    _probe_args(endpoint="10.0.0.1:5000"),
    _probe_args(endpoint="127.0.0.1:99999"),
    _probe_args(image="registry:2.8.3 --privileged"),
    _probe_args(image="registry:2.8.3`id`"),
    _probe_args(container="-rm"),
    _probe_args(project="a b"),
    _probe_args(config_sha256="ZZ" * 32),
    _probe_args(compose_sha256="abc"),
    _probe_args(spec_sha256=SHA + "0"),
    [*_probe_args(), "--unit", "other.service"],  # given twice
    [*_probe_args(), "--extra", "x"],
    [*_probe_args(), "--storage"],  # no value
    _probe_args()[2:],  # --unit missing
    [*_probe_args(), ""],
]

HOSTILE_INSTALL = [
    [],
    ["rm"],
    ["dirs"],
    ["dirs", "--dir", "relative", "--storage", "/srv/s"],
    ["dirs", "--dir", "/", "--storage", "/srv/s"],
    ["dirs", "--dir", "/srv/a/../../etc", "--storage", "/srv/s"],
    ["dirs", "--dir", "/srv/$(touch CANARY)", "--storage", "/srv/s"],
    ["dirs", "--dir", "/srv/a", "--storage", "/srv/s", "--storage", "/srv/t"],
    ["dirs", "--dir", "/srv/a"],
    ["write", "--path", "/srv/x", "--mode", "644", "--sha256", SHA, "--content-b64", ""],
    ["write", "--path", "/srv/x", "--mode", "0999", "--sha256", SHA, "--content-b64", ""],
    ["write", "--path", "/srv/x", "--mode", "0644", "--sha256", "XYZ", "--content-b64", ""],
    ["write", "--path", "/srv/x", "--mode", "0644", "--sha256", SHA, "--content-b64", "a;b="],
    ["write", "--path", "/srv/x", "--mode", "0644", "--sha256", SHA, "--content-b64", "aGk="],  # hash mismatch
    ["write", "--path", "srv/x", "--mode", "0644", "--sha256", SHA, "--content-b64", ""],
    ["write", "--path", "/srv/x/", "--mode", "0644", "--sha256", SHA, "--content-b64", ""],
    ["write", "--path", "/srv/x", "--mode", "0644", "--sha256", SHA],
    ["activate", "--unit", "registry", "--container", "c", "--spec-sha256", SHA],
    ["activate", "--unit", "../x.service", "--container", "c", "--spec-sha256", SHA],
    ["activate", "--unit", "x.service", "--container", "-rm", "--spec-sha256", SHA],
    ["activate", "--unit", "x.service", "--container", "c", "--spec-sha256", "0"],
    ["activate", "--unit", "x.service", "--container", "c"],
    ["activate", "--unit", "x.service", "--container", "c", "--spec-sha256", SHA, "--now"],
]


@pytest.mark.parametrize(
    ("name", "args"),
    [("registry-probe.sh", a) for a in HOSTILE_PROBE] + [("registry-install.sh", a) for a in HOSTILE_INSTALL],
)
def test_hostile_arguments_refused(name: str, args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.environ["PATH"]}
    code, doc, stderr = run_script(name, *args, env=env, cwd=tmp_path)
    assert code == 2, (doc, stderr)
    assert doc is not None
    assert doc["ok"] is False and doc["error"] == "invalid-argument" and doc["retryable"] is False
    assert not (tmp_path / "CANARY").exists()
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_placeholder_values_fail_validation() -> None:
    """plan.DIGEST-style placeholders can never slip through as a value."""
    code, doc, _ = run_script("registry-probe.sh", *_probe_args(unit_sha256="<digest:manifest-check>"))
    assert code == 2 and doc is not None and doc["error"] == "invalid-argument"


# --------------------------------------------------------------------------- write / dirs


def _write_args(path: Path, content: str, mode: str = "0644") -> list[str]:
    data = content.encode()
    return [
        "write",
        "--path",
        str(path),
        "--mode",
        mode,
        "--sha256",
        hashlib.sha256(data).hexdigest(),
        "--content-b64",
        base64.b64encode(data).decode(),
    ]


def test_write_only_when_the_hash_differs(tmp_path: Path) -> None:
    target = tmp_path / "config.yml"
    first = "version: 0.1\n# ünïcode and 'quotes' \"here\" $(not run)\n"
    code, doc, _ = run_script("registry-install.sh", *_write_args(target, first))
    assert code == 0 and doc is not None
    assert doc["result"] == "written" and doc["previousSha256"] is None
    assert target.read_text() == first and oct(target.stat().st_mode & 0o777) == "0o644"
    inode = target.stat().st_ino

    code, doc, _ = run_script("registry-install.sh", *_write_args(target, first))
    assert code == 0 and doc is not None and doc["result"] == "unchanged" and doc["modeFixed"] is False
    assert target.stat().st_ino == inode  # not rewritten

    target.chmod(0o600)
    code, doc, _ = run_script("registry-install.sh", *_write_args(target, first))
    assert doc is not None and doc["result"] == "unchanged" and doc["modeFixed"] is True
    assert oct(target.stat().st_mode & 0o777) == "0o644" and target.stat().st_ino == inode

    target.write_text(first + "# hand edit\n")
    code, doc, _ = run_script("registry-install.sh", *_write_args(target, first, mode="0640"))
    assert code == 0 and doc is not None and doc["result"] == "written"
    assert doc["previousSha256"] == hashlib.sha256((first + "# hand edit\n").encode()).hexdigest()
    assert target.read_text() == first and oct(target.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yml"]  # no temp file left behind


def test_write_refuses_what_it_must_not_touch(tmp_path: Path) -> None:
    code, doc, _ = run_script("registry-install.sh", *_write_args(tmp_path / "missing-dir" / "f", "x"))
    assert code == 3 and doc is not None and doc["error"] == "precondition-failed"
    real = tmp_path / "real"
    real.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(real)
    code, doc, _ = run_script("registry-install.sh", *_write_args(link, "x"))
    assert code == 3 and doc is not None and "symlink" in doc["detail"]
    (tmp_path / "adir").mkdir()
    code, doc, _ = run_script("registry-install.sh", *_write_args(tmp_path / "adir", "x"))
    assert code == 3 and doc is not None
    assert real.read_text() == "keep"


def test_dirs_creates_missing_and_never_touches_storage(tmp_path: Path) -> None:
    storage = tmp_path / "registry-storage"
    blob = storage / "docker" / "registry" / "v2" / "blobs" / "data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"layer")
    before = (blob.stat().st_mtime_ns, storage.stat().st_mode, storage.stat().st_mtime_ns)
    conf = tmp_path / "a" / "artifact-registry"
    code, doc, _ = run_script(
        "registry-install.sh", "dirs", "--dir", str(conf), "--dir", str(conf), "--storage", str(storage)
    )
    assert code == 0 and doc is not None
    assert doc["created"] == [str(conf)] and doc["storage"] == {"path": str(storage), "existed": True}
    assert conf.is_dir() and blob.read_bytes() == b"layer"
    assert (blob.stat().st_mtime_ns, storage.stat().st_mode, storage.stat().st_mtime_ns) == before

    fresh = tmp_path / "fresh-storage"
    code, doc, _ = run_script("registry-install.sh", "dirs", "--dir", str(conf), "--storage", str(fresh))
    assert doc is not None and doc["created"] == [str(fresh)] and doc["storage"]["existed"] is False

    (tmp_path / "file").write_text("x")
    code, doc, _ = run_script("registry-install.sh", "dirs", "--dir", str(tmp_path / "file"), "--storage", str(fresh))
    assert code == 3 and doc is not None and doc["error"] == "precondition-failed"


# --------------------------------------------------------------------------- the probe


def _sourced(function_call: str) -> str:
    """Run one function of the probe (the script without its final ``main "$@"``)."""
    text = script_text("registry-probe.sh")
    assert text.rstrip().endswith('main "$@"')
    body = text.rstrip()[: -len('main "$@"')]
    proc = subprocess.run(["bash", "-c", body + "\n" + function_call], capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.mark.parametrize(
    ("hexaddr", "text"),
    [
        ("0100007F", "127.0.0.1"),
        ("00000000", WILDCARD_V4),
        ("0501A8C0", "192.168.1.5"),
        ("00000000000000000000000000000000", "::"),
        ("00000000000000000000000001000000", "::1"),
        ("0000000000000000FFFF00000100007F", "::ffff:127.0.0.1"),
        ("B80D0120000000000000000001000000", "2001:db8:0:0:0:0:0:1"),
    ],
)
def test_proc_net_address_parser(hexaddr: str, text: str) -> None:
    assert _sourced(f"hex_addr {hexaddr}") == text


def test_probe_on_this_machine_is_read_only_facts(tmp_path: Path) -> None:
    """The real probe with the plan's args on this machine (no systemd PID 1 here; Docker pointed
    at a socket that does not exist): facts, exit 0, and the decision names the missing channel."""
    cfg = parse_stack_config(cfg_raw(), "prod")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    code, doc, stderr = run_script("registry-probe.sh", *registry_probe_args(cfg), env=env)
    assert code == 0, stderr
    assert doc is not None and doc["ok"] is True and doc["probe"] == "registry-probe"
    files = {f.name: f for f in render.render_all(cfg.registry)}
    for name in ("config", "compose", "unit"):
        assert doc["files"][name]["path"] == files[name].path
        assert doc["files"][name]["expectedSha256"] == files[name].sha256
    assert doc["expected"]["specSha256"] == render.spec_sha256(cfg.registry)
    assert doc["listeners"]["port"] == 5000 and doc["listeners"]["queried"] is True
    if doc["docker"]["installed"]:
        assert doc["docker"]["reachable"] is False and doc["container"] == {"queried": False, "exists": None}
    answer = health.decide(doc, mode="status")
    if not Path("/run/systemd/system").is_dir():
        assert answer["decision"] == "infra-blocked" and answer["channel"] == "systemd"
    assert list(tmp_path.iterdir()) == []


def test_probe_sees_listeners_in_a_private_netns(tmp_path: Path) -> None:
    """Listeners on 0.0.0.0 and ::1, made inside a network namespace of this test's own."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip not installed")
    cfg = parse_stack_config(cfg_raw(), "prod")
    args = command_line(registry_probe_args(cfg))
    listen = (
        "import socket, sys, time\n"
        "a = socket.socket(); a.bind(('0.0.0.0', 5000)); a.listen()\n"  # inside `unshare --net` only
        "b = socket.socket(socket.AF_INET6); b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        "b.bind(('::1', 5000)); b.listen()\n"
        "print('up', flush=True)\n"
        "import select\n"
        "while True:\n"
        "    for s in select.select([a, b], [], [])[0]:\n"
        "        c, _ = s.accept(); c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n'); c.close()\n"
    )
    inner = (
        'ip link set lo up; coproc L { exec timeout 50 python3 -c "$1"; }; read -r _ <&"${L[0]}"; '
        f'{args} < "$2"; kill "$L_PID"; wait "$L_PID" || true'
    )
    script = tmp_path / "probe.sh"
    script.write_text(script_text("registry-probe.sh"))
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    proc = subprocess.run(
        ["unshare", "--net", "bash", "-c", inner, "inner", listen, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
        pytest.skip("no permission for a private network namespace")
    doc = StepResult.parse(proc.stdout, "registry-probe.sh").data
    assert sorted(doc["listeners"]["addresses"]) == [WILDCARD_V4, "::1"]
    assert doc["http"]["code"] == 200
    answer = health.decide(doc, mode="health")
    assert answer["exposures"] == ["0.0.0.0:5000"]
    assert answer["checks"]["loopbackOnly"]["ok"] is False


# --------------------------------------------------------------------------- the rendered unit


@pytest.mark.parametrize("compose_command", ["/usr/bin/docker compose", "/usr/bin/docker-compose"])
def test_rendered_unit_passes_systemd_analyze_verify(compose_command: str, tmp_path: Path) -> None:
    binary = compose_command.split(maxsplit=1)[0]
    missing = [
        what
        for what, ok in (
            ("systemd-analyze", shutil.which("systemd-analyze") is not None),
            ("docker.service", any(Path(d, "docker.service").exists() for d in ("/lib/systemd/system", "/etc/systemd/system"))),
            (binary, os.access(binary, os.X_OK)),
        )
        if not ok
    ]
    if missing:
        pytest.skip(f"systemd-analyze verify needs {', '.join(missing)} on this machine")
    reg = RegistryConfig(compose_command=compose_command)
    unit = tmp_path / reg.unit_name
    unit.write_text(render.render_unit(reg))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert reg.unit_name not in proc.stderr  # no warning about our unit either

    broken = tmp_path / "broken.service"
    broken.write_text(render.render_unit(reg).replace(binary, "/nonexistent/compose"))
    proc = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0  # the check can fail


def test_plan_steps_use_these_scripts_with_valid_args(tmp_path: Path) -> None:
    """Each registry step's args pass its script's validation (dirs/write for real, in tmp)."""
    plan = plan_registry_host(parse_stack_config(cfg_raw(), "prod"))
    write = [s for s in plan.steps if s.args and s.args[0] == "write"]
    assert [s.id for s in write] == ["registry-config", "registry-compose", "registry-unit"]
    for step in write:
        args = list(step.args)
        args[args.index("--path") + 1] = str(tmp_path / Path(args[args.index("--path") + 1]).name)
        args[args.index("--audit-log") + 1] = str(tmp_path / "audit.jsonl")  # never the machine's own log
        code, doc, stderr = run_script(step.script or "", *args)
        assert code == 0 and doc is not None and doc["result"] == "written", stderr
        content = base64.b64decode(args[args.index("--content-b64") + 1]).decode()
        assert (tmp_path / Path(args[args.index("--path") + 1]).name).read_text() == content
