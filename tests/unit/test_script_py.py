"""The Python helpers of the step scripts (artifact_cd/scripts/py/), called as functions.

The scripts run these very files as ``python3 -c "$<NAME>_PY" ...`` (``script_text`` inlines them);
here each function is exercised directly, and the rules that let a file run on any target are
checked: standard library only, nothing from this project, python3.8 syntax and APIs.
The scripts' end-to-end behaviour is in test_scripts*.py and the rig tests.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import contract
from artifact_cd.scripts import PY_DIR
from artifact_cd.scripts.py import (
    auth,
    container,
    envfile,
    free_port,
    health,
    historyfacts,
    livefacts,
    manifest,
    pulled,
)
from tests.unit.script_support import PY38, needs_python38

HELPERS = sorted(p for p in PY_DIR.glob("*.py") if p.name != "__init__.py")
US = "\x1f"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = (contract.REVISION_LABEL, contract.SOURCE_LABEL, contract.SERVICE_LABEL)


# --------------------------------------------------------------------------- the rules of a helper


def test_every_helper_module_is_tested_here() -> None:
    modules = (auth, container, envfile, free_port, health, historyfacts, livefacts, manifest, pulled)
    # livefacts: tests/unit/test_live_probe.py; historyfacts: tests/unit/test_history.py
    tested = {m.__name__.rsplit(".", 1)[-1] for m in modules}
    assert {p.stem for p in HELPERS} == tested


@pytest.mark.parametrize("path", HELPERS, ids=[p.name for p in HELPERS])
def test_a_helper_needs_only_the_standard_library_of_python_3_8(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, feature_version=(3, 8))  # no match, no parenthesized context managers, ...
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative import: the file runs alone as python3 -c"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert "artifact_cd" not in text
    assert "from __future__ import annotations" in text, "annotations stay strings on python3.8"
    assert 'if __name__ == "__main__":\n    sys.exit(main(sys.argv[1:]))' in text
    # 3.9+ APIs a python3.8 target does not have
    assert not re.search(r"\.removeprefix\(|\.removesuffix\(|functools\.cache\b|import cache\b|zoneinfo", text)


@needs_python38
def test_the_helpers_run_on_python_3_8(tmp_path: Path) -> None:
    """Each helper's main path, exactly as a script runs it, on the oldest python3 a target may have."""
    assert PY38 is not None

    def run(name: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        text = (PY_DIR / f"{name}.py").read_text(encoding="utf-8")
        return subprocess.run([PY38, "-c", text, *args], input=stdin, capture_output=True, text=True, check=False)

    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(_image_manifest()))
    assert run("manifest", "manifest", str(doc), "amd64").stdout.startswith("manifest" + US)
    doc.write_text(json.dumps({"deploy": {"commit": COMMIT}}))
    assert run("health", str(doc)).stdout.split(US)[1] == COMMIT
    doc.write_text(json.dumps({"auth": {"a": 1}}))
    assert run("auth", str(doc)).returncode == 0
    env = tmp_path / ".env"
    proc = run("envfile", "set", str(env), str(tmp_path), f"K_COMMIT={COMMIT}")
    assert proc.returncode == 0, proc.stderr
    assert run("envfile", "secrets", str(env), "K_COMMIT").stdout.startswith('{"K_COMMIT":{"present":true')
    inspect = json.dumps([{"Id": "c1", "Config": {"Env": [f"K_COMMIT={COMMIT}"], "Labels": {}}}])
    assert run("container", "K_COMMIT", contract.REVISION_LABEL, stdin=inspect).stdout.split(US)[-1].strip() == COMMIT
    log = tmp_path / "pull.log"
    log.write_text("")
    doc.write_text(json.dumps(_image_manifest()))
    assert run("pulled", str(doc), str(log)).stdout.split() == ["0", "0", "0"]
    assert run("free_port").stdout.strip().isdigit()


# --------------------------------------------------------------------------- manifest.py


def _image_manifest(*more_layers: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": "sha256:" + "c" * 64, "size": 1234},
        "layers": [{"digest": "sha256:" + "1" * 64, "size": 10}, {"digest": "sha256:" + "2" * 64, "size": 32}, *more_layers],
    }


def _index(*platforms: tuple[str, str, str | None]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"digest": "sha256:" + "9" * 64}]  # no platform: never chosen
    for i, (os_name, arch, variant) in enumerate(platforms):
        platform = {"os": os_name, "architecture": arch, **({"variant": variant} if variant else {})}
        entries.append({"digest": f"sha256:{i:064d}", "platform": platform})
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}


def test_manifest_fields_of_an_image_manifest() -> None:
    assert manifest.manifest_fields(_image_manifest("not a layer")) == (
        "manifest",
        "sha256:" + "c" * 64,
        "application/vnd.oci.image.manifest.v1+json",
        1234,
        2,
        42,
    )


def test_an_index_resolves_to_the_host_arch_else_amd64() -> None:
    index = _index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("windows", "arm", None))
    assert manifest.manifest_fields(index, "arm64") == ("index", f"sha256:{1:064d}", index["mediaType"], "linux/arm64/v8")
    assert manifest.manifest_fields(index, "arm")[1] == f"sha256:{0:064d}", "windows/arm is no linux/arm: amd64"
    assert manifest.manifest_fields(_index(("linux", "s390x", None)), "arm64") == (
        "error",
        "the index has no linux/arm64 or linux/amd64 entry",
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"schemaVersion": 1}, "schemaVersion is not 2"),
        ({"schemaVersion": 2, "config": "x"}, "neither an image manifest nor an index"),
    ],
)
def test_manifest_fields_refuse_what_is_no_image(doc: dict[str, Any], reason: str) -> None:
    assert manifest.manifest_fields(doc) == ("error", reason)


def test_config_fields_read_the_labels_the_script_names() -> None:
    doc = {"os": "linux", "architecture": "amd64", "config": {"Labels": {LABELS[0]: COMMIT, LABELS[2]: 7}}}
    assert manifest.config_fields(doc, LABELS) == ("config", "linux", "amd64", COMMIT, "", "")
    assert manifest.config_fields({"config": None}, ("a",)) == ("config", "", "", "")


def test_parse_file_answers_every_document(tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_text("{not json")
    assert manifest.parse_file("manifest", str(path)) == ("error", "not a JSON document (JSONDecodeError)")
    assert manifest.parse_file("manifest", str(tmp_path / "missing")) == ("error", "not a JSON document (FileNotFoundError)")
    path.write_text("[]")
    assert manifest.parse_file("config", str(path)) == ("error", "not a JSON object")
    path.write_text(json.dumps(_image_manifest()))
    assert manifest.parse_file("other", str(path)) == ("error", "unknown mode")
    assert manifest.parse_file("manifest", str(path))[0] == "manifest"
    path.write_text(json.dumps({"os": "linux", "config": {"Labels": {"x": "y"}}}))
    assert manifest.parse_file("config", str(path), ["x"]) == ("config", "linux", "", "y")


def test_fields_line_keeps_one_line_and_empty_fields(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert manifest.fields_line(["a", "", f"b{US}c\nd", 3]) == f"a{US}{US}b c d{US}3"
    path = tmp_path / "doc"
    path.write_text(json.dumps({"config": {"Labels": {"x": "1"}}}))
    assert manifest.main(["config", str(path), "x", "y"]) == 0
    assert capsys.readouterr().out == US.join(["config", "", "", "1", ""]) + "\n"


# --------------------------------------------------------------------------- health.py


def test_health_fields_are_the_deploy_commits_status_and_auth_booleans() -> None:
    doc = {
        "status": "ok",
        "deploy": {"commit": COMMIT, "requestedCommit": "v1.2:3-x_y"},
        "auth": {"configured": True, "clientIdConfigured": False, "loggedIn": "yes"},
    }
    assert health.health_fields(doc) == ["json", COMMIT, "v1.2:3-x_y", "ok", "true", "false", "null", "null", "null"]


def test_health_fields_never_pass_an_unsafe_value() -> None:
    doc = {"ok": True, "deploy": {"commit": "$(id)", "requestedCommit": "a" * 101}, "auth": ["configured"]}
    assert health.health_fields(doc) == ["json", "<other>", "<other>", "ok", *["null"] * 5]
    assert health.health_fields({"deploy": "x", "status": None})[:4] == ["json", "", "", ""]
    assert health.safe_text(3) == "<other>" and health.safe_text(None) == ""


def test_an_unreadable_health_body_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "health"
    for text in ("<html>", "[1]", '"ok"'):
        body.write_text(text)
        assert health.read_fields(str(body)) == ["invalid"]
    assert health.read_fields(str(tmp_path / "missing")) == ["invalid"]
    body.write_text(json.dumps({"deploy": {"commit": COMMIT}}))
    assert health.main([str(body)]) == 0
    assert capsys.readouterr().out.split(US)[:2] == ["json", COMMIT]


# --------------------------------------------------------------------------- envfile.py


@pytest.mark.parametrize(
    ("raw", "value"),
    [(' "quoted # not a comment" ', "quoted # not a comment"), ("'x'", "x"), ("plain # comment", "plain"),
     ("a#b", "a#b"), ("", ""), ('"', '"')],
)
def test_parse_value(raw: str, value: str) -> None:
    assert envfile.parse_value(raw) == value


def test_key_pattern_matches_the_key_only() -> None:
    pattern = envfile.key_pattern("A.B")
    assert pattern.match(b"  export A.B = v\r\n") and pattern.match(b"A.B=")
    assert not pattern.match(b"AxB=v") and not pattern.match(b"# A.B=v") and not pattern.match(b"A.BC=v")


def test_secrets_report_reads_presence_and_length(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\nA=secret-two\nB=\nexport C='c c'\n")
    assert envfile.secrets_report(str(path), ["A", "B", "C", "D"]) == (
        {
            "A": {"present": True, "length": len("secret-two")},
            "B": {"present": False, "length": 0},
            "C": {"present": True, "length": 3},
            "D": {"present": False, "length": 0},
        },
        ["B", "D"],
    )
    assert envfile.secrets_report(str(tmp_path / "missing"), ["A"]) == ({"A": {"present": False, "length": 0}}, ["A"])


def test_rewrite_replaces_in_place_keeps_endings_and_appends() -> None:
    data = b"X=1\r\nK = old\nOTHER=k\nK=second\nLAST"
    assert envfile.rewrite(data, [("K", "new"), ("N", "n")]) == b"X=1\r\nK=new\nOTHER=k\nK=new\nLAST\nN=n\n"
    assert envfile.rewrite(b"", [("K", "v")]) == b"K=v\n"
    assert envfile.rewrite(b"K=v\n", [("K", "v")]) == b"K=v\n"


def test_set_keys_gives_up_on_a_lock_held_too_long(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    real = os.path.realpath(path)
    lock_path = tmp_path / f"unidesk-envfile.{hashlib.sha256(real.encode()).hexdigest()[:16]}.lock"
    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(envfile.LockBusy):
            envfile.set_keys(str(path), str(tmp_path), [("A", "2")], lock_seconds=0.2)
    assert path.read_text() == "A=1\n"
    assert envfile.set_keys(str(path), str(tmp_path), [("A", "2")]) == {"changed": True, "created": False}
    assert path.read_text() == "A=2\n"


def test_envfile_lock_busy_exit_is_the_contracts_busy_code() -> None:
    """compose-deploy.sh turns the helper's exit into lock-busy with `[[ $rc == "$EXIT_BUSY" ]]`."""
    assert envfile.LOCK_BUSY_EXIT == contract.ExitCode.BUSY


def test_envfile_main_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / ".env"
    assert envfile.main(["set", str(path), str(tmp_path), "A=1=2"]) == 0
    assert path.read_text() == "A=1=2\n"
    assert json.loads(capsys.readouterr().out) == {"changed": True, "created": True}
    assert envfile.main(["secrets", str(path), "A", "B"]) == 0
    assert capsys.readouterr().out.splitlines() == ['{"A":{"present":true,"length":3},"B":{"present":false,"length":0}}', "B"]
    assert envfile.main(["other", str(path)]) == 2


# --------------------------------------------------------------------------- container.py


def _inspect() -> dict[str, Any]:
    return {
        "Id": "c" * 64,
        "Image": "sha256:" + "d" * 64,
        "State": {"Status": "running", "ExitCode": 0},
        "Config": {
            "Env": ["SECRET=hunter2", f"X_DEPLOY_COMMIT={'f' * 40}", f"X_DEPLOY_COMMIT={COMMIT}", "X_DEPLOY_COMMITTED=no"],
            "Labels": {contract.REVISION_LABEL: COMMIT, "other": "x"},
        },
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {"a": {"IPAddress": ""}, "b": {"IPAddress": "172.18.0.5"}, "c": None}},
    }


def test_container_fields_read_one_env_key_and_the_named_label() -> None:
    fields = container.container_fields(_inspect(), "X_DEPLOY_COMMIT", contract.REVISION_LABEL)
    assert fields == ["found", "c" * 64, "sha256:" + "d" * 64, "running", "0", COMMIT, "bridge", "172.18.0.5", COMMIT]
    assert "hunter2" not in "".join(fields)
    assert container.container_fields({}, "K", "label") == ["found", "", "", "", "", "", "", "", ""]


def test_no_such_container_is_missing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for stdin in ("[]", "", "not json"):
        assert container.read_fields(io.StringIO(stdin), "K", "l") == ["missing"] + [""] * 8
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps([_inspect()])))
    assert container.main(["X_DEPLOY_COMMIT", "other"]) == 0
    assert capsys.readouterr().out.split(US)[5] == "x"


# --------------------------------------------------------------------------- pulled.py


def test_layer_counts_from_a_pull_log() -> None:
    doc = _image_manifest()
    log = f"{'1' * 12}: Pull complete\n{'2' * 12}: Already exists\n{'3' * 12}: Download complete\nStatus: done\n"
    assert pulled.layer_counts(doc, log) == (10, 2, 1)
    assert pulled.layer_counts(doc, log + "Status: Downloaded newer image for x\n") == (10 + 1234, 2, 1)
    assert pulled.layer_counts({}, "") == (0, 0, 0)


def test_pulled_main_prints_three_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.json").write_text(json.dumps(_image_manifest()))
    (tmp_path / "pull.log").write_bytes(f"{'2' * 12}: Pull complete\n\xff\n".encode("latin-1"))
    assert pulled.main([str(tmp_path / "m.json"), str(tmp_path / "pull.log")]) == 0
    assert capsys.readouterr().out == "32 1 0\n"


# --------------------------------------------------------------------------- auth.py


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


def test_read_auth_answers_the_auth_section_and_its_hash(config: Path) -> None:
    auth_section = {"b": "ü", "a": [1]}
    config.write_text(json.dumps({"auth": auth_section, "db": {"password": "x"}}), encoding="utf-8")
    code, line = auth.read_auth(str(config))
    canonical = json.dumps(auth_section, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert code == 0
    assert json.loads(line) == {
        "ok": True,
        "auth": auth_section,
        "authSha256": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
    }
    assert "ü" in line and "password" not in line


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (None, "config-missing"),
        ("{\n\n", "config-invalid not JSON (line 3)"),
        ("[]", "config-invalid the top level is not an object"),
        ("{}", "auth-missing no auth key"),
        ('{"auth": "token"}', "auth-missing auth is not an object"),
    ],
)
def test_read_auth_failures_name_a_code_and_quote_nothing(config: Path, content: str | None, line: str) -> None:
    if content is not None:
        config.write_text(content)
    assert auth.read_auth(str(config)) == (3, line)


def test_an_unreadable_config_is_its_own_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert auth.read_auth(str(tmp_path)) == (3, "config-unreadable IsADirectoryError")
    assert auth.main([str(tmp_path)]) == 3
    assert capsys.readouterr().out == "config-unreadable IsADirectoryError\n"


# --------------------------------------------------------------------------- free_port.py


def test_free_port_is_bindable_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port.free_port()
    assert 1 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert free_port.main([]) == 0
    assert capsys.readouterr().out.strip().isdigit()
