"""The real local rig proves the production topology it promises (issues 4 and 5 build on it).

R1/R2/R5: the registry runs from the project's own rendered unit/compose/config on D601's loopback.
R14: the master server reaches D601 only by SSH; the registry port is not reachable from it.
R13: a containerd on /run/k3s/containerd/containerd.sock plays k3s's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import catalog, scripts
from artifact_cd.config import parse_stack_config
from artifact_cd.contract import Live, ManifestFacts, is_live
from artifact_cd.render import render_all
from tests.engine import CommandCall
from tests.rig import Host, Rig, RigError, install_registry, teardown
from tests.rig.images import STALE_COMMIT, VARIANTS, entry_script, fetch_manifest, handler_script
from tests.rig.rig import OPERATOR

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT_A = "a1" * 20
COMMIT_B = "b2" * 20


def _commit(tag: str) -> str:
    return (tag.encode().hex() * 40)[:40]


# --------------------------------------------------------------------------- hosts


@pytest.mark.parametrize("name", ["d601", "master"])
def test_host_is_a_real_systemd_host_with_docker_and_ssh(rig: Rig, name: str) -> None:
    h = rig.hosts[name]
    assert h.sh("cat /proc/1/comm").stdout.strip() == "systemd"
    state = h.sh("systemctl is-system-running || true").stdout.strip()
    assert state in ("running", "degraded"), state
    units = ["docker.service", "ssh.service"]
    if name == "d601":
        units += ["unidesk-artifact-registry.service", "rig-k3s-containerd.service"]
    for unit in units:
        assert h.systemctl_state(unit) == "active", unit
    assert h.sh("systemctl is-enabled unidesk-artifact-registry.service || true").stdout.strip() == (
        "enabled" if name == "d601" else ""
    )
    # its own network namespace: only lo (+ the private link), never the machine's interfaces
    own = os.stat(f"/proc/{h.pid}/ns/net").st_ino
    assert own != os.stat("/proc/self/ns/net").st_ino
    assert h.sh("hostname").stdout.strip() == name


@pytest.mark.parametrize("name", ["d601", "master"])
def test_ssh_into_host_key_only(rig: Rig, name: str) -> None:
    h = rig.hosts[name]
    # the product's login is the unprivileged operator; root logs in only when asked for
    assert h.user == OPERATOR
    proc = h.ssh("hostname; id -un; id -u; systemctl is-active docker")
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert (words[0], words[1], words[3]) == (name, OPERATOR, "active") and words[2] != "0"
    assert h.ssh("id -u", user="root").stdout.split() == ["0"]
    # stdin reaches the remote command (the path script_text takes)
    assert h.ssh("cat", input="über\n").stdout == "über\n"
    # the host key is the one the rig pinned, and password logins are refused
    assert h.host_key.startswith("ssh-ed25519 ")
    pub = h.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    assert " ".join(pub) == h.host_key
    refused = subprocess.run(
        [*h.ssh_argv()[:3], "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", h.address, "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


@dataclass(frozen=True)
class _SelfTest:
    """A script outside the contract with its argv as given (the rig's self-test script)."""

    argv: tuple[str, ...]
    script: str = "rig-selftest.sh"

    @property
    def needs_manifest(self) -> bool:
        return any(is_live(a) for a in self.argv)

    def to_argv(self) -> tuple[str, ...]:
        return self.argv

    def resolve(self, facts: ManifestFacts) -> _SelfTest:
        return _SelfTest(tuple(facts.value_of(Live(a)) if is_live(a) else a for a in self.argv), self.script)


def test_run_step_runs_script_text_with_quoted_args(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_step sends command_line(argv) + script_text(script) exactly; live values replace the placeholders."""
    from artifact_cd import plan

    shutil.copy(scripts.SCRIPT_DIR / scripts.LIB, tmp_path / scripts.LIB)
    (tmp_path / "rig-selftest.sh").write_text(
        "set -euo pipefail\n"
        "main() {\n"
        "  exec </dev/null\n"
        '  local args=() a\n  for a in "$@"; do args+=("$(json_str "$a")"); done\n'
        '  local IFS=,\n  json_obj ok true host "$(json_str "$(hostname)")" args "[${args[*]}]"\n'
        "}\n"
        'main "$@"\n'
    )
    monkeypatch.setattr(scripts, "SCRIPT_DIR", tmp_path)
    scripts.script_text.cache_clear()
    try:
        call = _SelfTest(("--digest", plan.DIGEST, "--image-id", plan.IMAGE_ID, "it's $(not) run", ""))
        result = rig.d601.run_call(call, digest="sha256:" + "1" * 64, image_id="sha256:" + "2" * 64)
    finally:
        scripts.script_text.cache_clear()
    assert result.returncode == 0, result.stderr
    assert result.json == {
        "ok": True,
        "host": "d601",
        "args": ["--digest", "sha256:" + "1" * 64, "--image-id", "sha256:" + "2" * 64, "it's $(not) run", ""],
    }


def test_execute_replays_a_command_over_ssh_on_the_host_it_names(rig: Rig) -> None:
    cfg = parse_stack_config(rig.stack_config("prod"), "prod")
    assert cfg.hosts.master.user == OPERATOR
    call = CommandCall("c", cfg.hosts.master.host, cfg.hosts.master.port, cfg.hosts.master.user, "bash -s -- x", "echo $(hostname) $(id -un) $1")
    assert rig.execute(call) == {"stdout": "master ubuntu x\n", "stderr": "", "returncode": 0}
    failing = CommandCall("c", cfg.hosts.d601.host, 22, OPERATOR, "exit 3", "")
    assert rig.execute(failing)["returncode"] == 3
    as_root = CommandCall("c", cfg.hosts.d601.host, 22, "root", "id -u", "")  # a stack config saying user: root
    assert rig.execute(as_root)["stdout"] == "0\n"
    with pytest.raises(RigError):
        rig.execute(CommandCall("c", cfg.hosts.d601.host, 22, "deploy", "true", ""))


# --------------------------------------------------------------------------- registry and topology


def test_registry_runs_from_the_projects_rendered_files(rig: Rig) -> None:
    d601 = rig.d601
    code = d601.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/").stdout
    assert code == "200"
    for rendered in render_all(rig.registry_config()):
        remote = d601.sh('sha256sum -- "$1"', rendered.path).stdout.split()[0]
        assert remote == rendered.sha256, rendered.path
    ports = d601.sh("docker port unidesk-artifact-registry").stdout
    assert ports.strip().splitlines() == ["5000/tcp -> 127.0.0.1:5000"]
    listeners = d601.sh("ss -Hltn 'sport = :5000' | awk '{print $4}'").stdout.split()
    assert listeners == ["127.0.0.1:5000"]


def _addresses(h: Host) -> list[str]:
    data = json.loads(h.sh("ip -j -4 addr show").stdout)
    return [a["local"] for link in data for a in link.get("addr_info", [])]


def _tcp_from(h: Host, addr: str, port: int) -> tuple[bool, str]:
    proc = h.sh(
        'timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>&1', addr, str(port), check=False
    )
    return proc.returncode == 0, proc.stdout


def test_registry_is_not_reachable_from_master_except_over_ssh(rig: Rig) -> None:
    d601_addrs = _addresses(rig.d601)
    assert rig.d601_link_addr in d601_addrs and "127.0.0.1" in d601_addrs
    # the link itself works: master reaches D601's sshd ...
    ok, out = _tcp_from(rig.master, rig.d601_link_addr, 22)
    assert ok, out
    # ... but no D601 address answers on 5000, nor does the master's own loopback
    for addr in [*d601_addrs, "127.0.0.1"]:
        ok, out = _tcp_from(rig.master, addr, 5000)
        assert not ok, f"{addr}:5000 reachable from master"
        assert re.search(r"Connection refused|Network is unreachable|No route to host", out), out
    code = rig.master.sh(
        "curl -s -o /dev/null -w '%{http_code}' --max-time 3 http://127.0.0.1:5000/v2/ || true"
    ).stdout
    assert code == "000"
    # over SSH it is reachable: a stream (ssh d601 curl) and a tunnel (-L), as the transfer modes use
    target = rig.d601_from_master
    streamed = rig.master.ssh(
        f"ssh -o BatchMode=yes {target} curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:5000/v2/"
    )
    assert streamed.stdout == "200", streamed.stderr
    tunnel = rig.master.ssh(
        "ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -N -L 127.0.0.1:15000:127.0.0.1:5000 "
        f"{target} </dev/null & p=$!; code=000; "
        "for _ in $(seq 100); do "
        "code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:15000/v2/) && break; "
        "sleep 0.05; done; kill $p; wait $p; echo $code"
    )
    assert tunnel.stdout.strip() == "200", tunnel.stderr


def test_master_reaches_d601_over_ssh(rig: Rig) -> None:
    """The hop the transfer takes: the master's operator, with its own key, to the operator on D601;
    the master's root has no key for D601, nor does the operator's key open D601's root."""
    assert rig.d601_from_master == f"{OPERATOR}@d601.rig"
    proc = rig.master.ssh(f"ssh -o BatchMode=yes {rig.d601_from_master} 'hostname; id -un'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["d601", OPERATOR]
    assert rig.master.ssh("ssh -o BatchMode=yes root@d601.rig true").returncode == 255
    assert rig.master.ssh(f"ssh -o BatchMode=yes {rig.d601_from_master} true", user="root").returncode == 255
    # and D601 cannot ssh back into the master (only the master holds a key)
    back = rig.d601.sh(
        f"ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=5 root@{rig.master_link_addr} true",
        check=False,
    )
    assert back.returncode == 255


# --------------------------------------------------------------------------- test images


def _health(h: Host, image: str, env: dict[str, str], path: str, port: int = 8080) -> tuple[int, Any]:
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    name = "rig-health-probe"
    h.sh('docker rm -f "$1" >/dev/null 2>&1 || true', name)
    h.sh('n=$1; i=$2; shift 2; docker run -d --init --network host --name "$n" "$@" "$i"', name, image, *env_args)
    try:
        for _ in range(50):
            proc = h.sh(
                'curl -s -w "\\n%{http_code}" --max-time 2 "http://127.0.0.1:$1$2"', str(port), path, check=False
            )
            if proc.returncode == 0:
                body, code = proc.stdout.rsplit("\n", 1)
                return int(code), json.loads(body)
            time.sleep(0.1)
        raise AssertionError(f"{image} never answered on {port}{path}")
    finally:
        started = time.monotonic()
        h.sh('docker rm -f "$1" >/dev/null', name)
        assert time.monotonic() - started < 8


def test_published_image_has_labels_digest_and_answers_health(rig: Rig) -> None:
    sid = "findjob"
    entry = catalog.get(sid)
    assert entry is not None
    published = rig.publish_test_image(sid, COMMIT_A)
    assert published["ref"] == f"127.0.0.1:5000/unidesk/{sid}:{COMMIT_A}"
    inspect = json.loads(
        rig.d601.sh('skopeo inspect --tls-verify=false "docker://$1"', published["ref"]).stdout
    )
    assert inspect["Labels"][catalog.REVISION_LABEL] == COMMIT_A
    assert inspect["Labels"][catalog.SOURCE_LABEL] == entry.source_repo
    assert inspect["Labels"][catalog.SERVICE_LABEL] == sid
    assert inspect["Digest"] == published["digest"]
    head = rig.d601.sh(
        'curl -sI -H "Accept: application/vnd.docker.distribution.manifest.v2+json" '
        '-H "Accept: application/vnd.oci.image.manifest.v1+json" "http://127.0.0.1:5000/v2/$1/manifests/$2"',
        entry.repository,
        COMMIT_A,
    ).stdout
    assert f"docker-content-digest: {published['digest']}" in head.lower()
    # not left tagged locally: a consumer's pull on D601 is a real pull
    assert rig.d601.sh('docker image inspect "$1"', published["ref"], check=False).returncode != 0

    code, body = _health(rig.d601, published["ref"], {f"{entry.compose_env_prefix}COMMIT": COMMIT_B}, "/health")
    assert code == 200
    assert body["deploy"] == {"commit": COMMIT_A, "requestedCommit": COMMIT_B}
    image_id = rig.d601.sh('docker image inspect -f "{{.Id}}" "$1"', published["ref"]).stdout.strip()
    assert image_id == published["imageId"]
    # k3s style: UNIDESK_DEPLOY_COMMIT wins; nothing set -> null
    code, body = _health(rig.d601, published["ref"], {"UNIDESK_DEPLOY_COMMIT": COMMIT_A}, "/health")
    assert body["deploy"]["requestedCommit"] == COMMIT_A
    code, body = _health(rig.d601, published["ref"], {}, "/health")
    assert body["deploy"] == {"commit": COMMIT_A, "requestedCommit": None}


@pytest.mark.parametrize("variant", VARIANTS)
def test_generated_image_scripts_are_shellcheck_clean(tmp_path: Path, variant: str) -> None:
    sid = {"todo-note": "todo-note", "baidu": "baidu-netdisk"}.get(variant, "findjob")
    (tmp_path / "handler.sh").write_text(handler_script(sid, variant))
    (tmp_path / "entry.sh").write_text(entry_script(8080))
    proc = subprocess.run(
        ["shellcheck", "-s", "sh", "handler.sh", "entry.sh"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_image_variants(rig: Rig) -> None:
    c = _commit("variants")
    todo = rig.publish_test_image("todo-note", c, variant="todo-note")
    code, body = _health(rig.d601, todo["ref"], {"UNIDESK_TODO_NOTE_DEPLOY_COMMIT": c}, "/api/health")
    assert (code, body) == (200, {"status": "ok"})

    baidu = rig.publish_test_image("baidu-netdisk", c, variant="baidu")
    secrets = {
        "UNIDESK_BAIDU_NETDISK_CLIENT_ID": "id-value",
        "UNIDESK_BAIDU_NETDISK_CLIENT_SECRET": "secret-value",
        "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": "token-value",
    }
    code, body = _health(rig.d601, baidu["ref"], secrets, "/health")
    assert code == 200
    assert body["auth"] == {
        "configured": True,
        "clientIdConfigured": True,
        "clientSecretConfigured": True,
        "tokenKeyConfigured": True,
        "loggedIn": True,
    }
    assert "secret-value" not in json.dumps(body)
    code, body = _health(rig.d601, baidu["ref"], {**secrets, "UNIDESK_BAIDU_NETDISK_TOKEN_KEY": ""}, "/health")
    assert body["auth"]["tokenKeyConfigured"] is False
    assert body["auth"]["configured"] is False
    assert body["auth"]["clientIdConfigured"] is True

    unhealthy = rig.publish_test_image("pipeline", c, variant="unhealthy")
    code, _ = _health(rig.d601, unhealthy["ref"], {}, "/health")
    assert code == 500

    stale = rig.publish_test_image("frontend", c, variant="stale")
    code, body = _health(rig.d601, stale["ref"], {"UNIDESK_FRONTEND_DEPLOY_COMMIT": c}, "/health")
    assert code == 200
    assert body["deploy"] == {"commit": STALE_COMMIT, "requestedCommit": c}
    labels = json.loads(rig.d601.sh('skopeo inspect --tls-verify=false "docker://$1"', stale["ref"]).stdout)["Labels"]
    assert labels[catalog.REVISION_LABEL] == c


def test_padded_commits_differ_only_in_a_small_top_layer(rig: Rig) -> None:
    entry = catalog.get("oa-event-flow")
    assert entry is not None
    a = rig.publish_test_image(entry.id, _commit("pad-a"), pad_bytes=3_000_000)
    b = rig.publish_test_image(entry.id, _commit("pad-b"), pad_bytes=3_000_000)
    assert a["digest"] != b["digest"]
    layers_a = json.loads(fetch_manifest(rig.d601, rig.registry, entry.repository, _commit("pad-a")))["layers"]
    layers_b = json.loads(fetch_manifest(rig.d601, rig.registry, entry.repository, _commit("pad-b")))["layers"]
    assert layers_a[:-1] == layers_b[:-1]
    assert layers_a[-1]["digest"] != layers_b[-1]["digest"]
    assert max(layer["size"] for layer in layers_a) >= 3_000_000  # the pad is a real, shared layer
    assert layers_b[-1]["size"] < 4096


# --------------------------------------------------------------------------- k3s containerd, config


def test_ctr_talks_to_the_k3s_containerd_socket(rig: Rig) -> None:
    published = rig.publish_test_image("decision-center", COMMIT_A)
    sock = "/run/k3s/containerd/containerd.sock"
    assert rig.d601.sh('test -S "$1"', sock, check=False).returncode == 0
    proc = rig.d601.sh(
        'ctr --address "$1" -n k8s.io images pull --plain-http "$2" >/dev/null && '
        'ctr --address "$1" -n k8s.io images ls | awk -v r="$2" \'$1 == r {print $3}\'',
        sock,
        published["ref"],
    )
    assert proc.stdout.strip() == published["digest"]
    # it is not docker's containerd
    assert rig.d601.sh("ctr -n k8s.io images ls -q", check=False).stdout.strip() == ""


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_stack_config_is_accepted_and_points_at_the_rig(rig: Rig, env: str) -> None:
    services = {"findjob": COMMIT_A, "baidu-netdisk": COMMIT_B}
    cfg = parse_stack_config(rig.stack_config(env, services), env)
    assert cfg.hosts.d601.host == rig.d601.address
    assert cfg.hosts.master.host == rig.master.address
    for hc in (cfg.hosts.d601, cfg.hosts.master):
        assert (hc.user, hc.elevate) == (OPERATOR, "sudo")
    assert cfg.hosts.d601.host_key == rig.d601.host_key
    assert cfg.transfer.d601_ssh_target == rig.d601_from_master
    assert cfg.registry.compose_command == "/usr/bin/docker-compose"
    assert cfg.commit_of("findjob") == COMMIT_A
    assert cfg.compose.master is not None and cfg.compose.d601 is not None
    assert rig.host(cfg.hosts.master.host) is rig.master
    for h, project in ((rig.master, cfg.compose.master), (rig.d601, cfg.compose.d601)):
        assert h.sh('stat -c "%U %a" -- "$1"', project.project_dir).stdout.split() == [OPERATOR, "755"]


def test_write_file_onto_a_host(rig: Rig) -> None:
    rig.master.write_file("/srv/rig-test/a b.env", "K=v\n", mode="0600")
    assert rig.master.sh("stat -c %a '/srv/rig-test/a b.env' && cat '/srv/rig-test/a b.env'").stdout == "600\nK=v\n"
    assert rig.d601.sh("test -e '/srv/rig-test/a b.env'", check=False).returncode == 1
    # as the operator keeps it: the file (and any parent it creates) is the operator's
    rig.master.sh("install -d -o ubuntu -g ubuntu /srv/rig-test")
    rig.master.write_file("/srv/rig-test/sub/b.env", "K=w\n", mode="0600", owner=OPERATOR)
    owners = rig.master.sh("stat -c '%U %a' /srv/rig-test/sub /srv/rig-test/sub/b.env").stdout.split()
    assert owners == [OPERATOR, "755", OPERATOR, "600"]
    rig.master.sh("rm -rf /srv/rig-test")


def test_install_registry_is_idempotent_and_ensure_ready_repairs_faults(rig: Rig) -> None:
    d601 = rig.d601
    container = 'docker inspect -f "{{.Id}} {{.State.StartedAt}}" unidesk-artifact-registry'
    before = d601.sh(container).stdout
    result = install_registry(d601, rig.registry_config(), user=OPERATOR)  # as ensure_ready runs it
    assert set(result.values()) == {"unchanged"}
    assert d601.sh(container).stdout == before  # nothing restarted
    # faults other tests may leave: drifted config, sshd stopped, registry container stopped
    config_path = rig.registry_config().config_path
    d601.sh('echo "# hand edit" >>"$1"', config_path)
    d601.sh("systemctl stop ssh.service && docker stop unidesk-artifact-registry >/dev/null")
    assert d601.ssh("true", timeout=30).returncode == 255
    rig.ensure_ready()
    assert d601.ssh("hostname").stdout.strip() == "d601"
    assert d601.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/").stdout == "200"
    rendered = {f.path: f.sha256 for f in render_all(rig.registry_config())}
    assert d601.sh('sha256sum -- "$1"', config_path).stdout.split()[0] == rendered[config_path]
    assert d601.systemctl_state("unidesk-artifact-registry.service") == "active"


# --------------------------------------------------------------------------- fresh hosts and teardown


def _running(pid: int, start: str) -> bool:
    """``pid`` is the same process (same start time) and not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] != "Z"


def _footprint(rigdir: Path) -> dict[str, Any]:
    """Everything a rig owns on the machine, recorded while it runs."""
    state = json.loads((rigdir / "rig.json").read_text())
    pids, netns, mntns, cgroups = [], [], [], []
    for hostdir in rigdir.glob("*/cgroups.list"):
        cgroups += hostdir.read_text().split()
        pid = int((hostdir.parent / "pid").read_text())
        pids.append((pid, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]))
        netns.append(os.stat(f"/proc/{pid}/ns/net").st_ino)
        mntns.append(os.stat(f"/proc/{pid}/ns/mnt").st_ino)
    return {"state": state, "pids": pids, "netns": netns, "mntns": mntns, "cgroups": cgroups, "dir": rigdir}


def _assert_nothing_left(fp: dict[str, Any]) -> None:
    rigdir: Path = fp["dir"]
    assert not rigdir.exists()
    for cg in fp["cgroups"]:
        assert not Path(cg).exists(), cg
    for pid, start in fp["pids"]:
        assert not _running(pid, start), pid
    live_ns: set[int] = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for kind in ("net", "mnt"):
                try:
                    live_ns.add(os.stat(proc / "ns" / kind).st_ino)
                except OSError:
                    continue
    assert not live_ns & set(fp["netns"] + fp["mntns"])
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(rigdir) not in mountinfo
    for ino in fp["netns"]:
        assert f"net:[{ino}]" not in mountinfo
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"r{fp['state']['id'][:6]}" not in links
    reaper = fp["state"].get("reaper")
    if reaper:
        deadline = time.monotonic() + 10  # it may still be on its way out after removing the dir
        while _running(reaper["pid"], reaper["start"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(reaper["pid"], reaper["start"])


def test_fresh_host_has_docker_ssh_and_the_registry_image_only(rig: Rig) -> None:
    with rig.fresh_host("fresh1") as h:
        assert h.address == "fresh1.rig"
        assert h.ssh("hostname; id -un").stdout.split() == ["fresh1", OPERATOR]
        for unit in ("docker.service", "ssh.service"):
            assert h.systemctl_state(unit) == "active"
        assert h.sh("docker images --format '{{.Repository}}:{{.Tag}}'").stdout.split() == ["registry:2.8.3"]
        assert h.systemctl_state("unidesk-artifact-registry.service") != "active"
        assert h.sh("test -e /home/ubuntu/.unidesk", check=False).returncode == 1
        # a private netns: nothing but its own loopback, D601's registry is not there
        links = {link["ifname"] for link in json.loads(h.sh("ip -j link show").stdout)}
        assert links <= {"lo", "docker0"}, links
        assert rig.d601_link_addr not in _addresses(h)
        assert not _tcp_from(h, "127.0.0.1", 5000)[0]
        cgroups = (h.hostdir / "cgroups.list").read_text().split()
        pid, start = h.pid, Path(f"/proc/{h.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert not any(Path(cg).exists() for cg in cgroups)
    assert not _running(pid, start)
    assert not h.hostdir.exists()
    assert "fresh1" not in rig.hosts


def test_teardown_leaves_nothing_and_is_idempotent(tmp_path: Path) -> None:
    rigdir = tmp_path / "rig"
    extra = Rig.up(rigdir, reaper=False)
    try:
        assert extra.d601.ssh("hostname").stdout.strip() == "d601"
        fp = _footprint(rigdir)
    finally:
        # the human command, twice: the second run finds nothing to do
        for _ in range(2):
            down = subprocess.run(
                [sys.executable, "-m", "tests.rig", "down", "--dir", str(rigdir)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert down.returncode == 0, down.stderr
    _assert_nothing_left(fp)
    assert teardown(rigdir) == []


def test_killed_run_is_reaped(tmp_path: Path) -> None:
    """`python -m tests.rig up` killed with SIGKILL: its reaper tears the rig down."""
    rigdir = tmp_path / "killed"
    up = subprocess.Popen(
        [sys.executable, "-m", "tests.rig", "up", "--dir", str(rigdir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        first = up.stdout.readline()
        assert first.startswith("rig "), first + (up.stderr.read() if up.poll() is not None and up.stderr else "")
        fp = _footprint(rigdir)
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
        deadline = time.monotonic() + 60
        while rigdir.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        reaped = not rigdir.exists()
    finally:
        if up.poll() is None:
            up.kill()
        safety_net = teardown(rigdir)  # only matters when the reaper failed (asserted below)
    assert reaped, f"the reaper did not tear down {rigdir}; teardown afterwards: {safety_net}"
    _assert_nothing_left(fp)


def test_remove_containers_takes_exact_and_compose_renamed_names_only(rig: Rig) -> None:
    """Test modules share catalog container names on one dockerd; the cleanup must take the name and
    Compose v1's ``<id>_<name>`` leftover, and nothing that merely looks alike."""
    d = rig.d601
    names = ["rigtest-backend", "0123abcd_rigtest-backend", "rigtest-backend-2", "x-rigtest-backend"]
    for name in names:
        d.sh('docker create --name "$1" registry:2.8.3 >/dev/null', name)
    try:
        removed = d.remove_containers("rigtest-backend")
        assert sorted(removed) == ["0123abcd_rigtest-backend", "rigtest-backend"]
        left = d.sh('docker ps -a --format "{{.Names}}"').stdout.split()
        assert {"rigtest-backend-2", "x-rigtest-backend"} <= set(left)
        assert "rigtest-backend" not in left
    finally:
        d.sh('docker rm -f "$@" >/dev/null 2>&1 || true', *names, check=False)
