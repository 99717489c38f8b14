"""Benchmark: moving a commit image to the master server, and one deploy end to end (prints figures).

    .venv/bin/python benchmarks/transfer.py [--pad-mb 50] [--rounds 2]

Starts its own rig (tests/rig: D601 + master server as real systemd hosts, D601's registry reachable
from the master only over SSH), publishes test images whose commits share a ~pad-mb random base
layer and differ only in a tiny top layer, then measures with the project's own plan steps:

1. redeploy A -> B (A already on the master): the `transfer` step in tunnel mode (docker pull of
   the missing layers through `ssh -L`) vs stream mode (`docker save | docker load` over ssh);
   bytes as each mode reports them (tunnel: bytes the SSH client received; stream: tar bytes),
   seconds as wall time of the step (ssh round trip included).
2. one D601-direct deploy end to end (manifest-check + pull + deploy: lock, retag, env file,
   recreate, verification) vs the hand-typed `docker pull && docker tag && docker-compose up &&
   curl` for a fresh commit of the same service.
No timing is asserted anywhere; this only prints.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from artifact_cd.config import parse_stack_config  # noqa: E402
from artifact_cd.plan import Step, plan_service  # noqa: E402
from tests.rig import Host, Rig  # noqa: E402
from tests.rig.rig import operator_dir  # noqa: E402

BASE = "/srv/unidesk-bench"
PROJECT = {"projectDir": BASE, "projectName": "unidesk-bench", "envFile": f"{BASE}/.env.deploy"}
MOVED = "oa-event-flow"  # master-server Compose service
DIRECT = "findjob"  # D601-direct Compose service


def sha(label: str) -> str:
    return hashlib.sha1(f"bench:{label}".encode()).hexdigest()  # noqa: S324 - a test id


def cfg_for(rig: Rig, service: str, commit: str, mode: str = "tunnel") -> Any:
    raw = rig.stack_config("prod", {service: commit})
    raw["compose"] = {"master": dict(PROJECT), "d601": dict(PROJECT)}
    raw["transfer"]["mode"] = mode
    return parse_stack_config(raw, "prod")


def timed(host: Host, step: Step, facts: dict[str, str]) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    result = host.run_step(step, digest=facts["digest"], image_id=facts["imageId"])
    seconds = time.monotonic() - start
    if result.returncode != 0 or result.json is None:
        raise SystemExit(f"{step.id} failed: {result.stdout[-800:]} {result.stderr[-1500:]}")
    return seconds, result.json


def compose_project(h: Host, service: str, retag: str, container: str) -> None:
    """The bench's Compose project, kept by the login user (the unprivileged operator) as on a real host."""
    operator_dir(h, BASE)
    h.write_file(
        f"{BASE}/docker-compose.yml",
        f'version: "2.4"\nservices:\n  {service}:\n    image: {retag}\n    container_name: {container}\n'
        f"    env_file: {PROJECT['envFile']}\n    init: true\n",
        owner=h.user,
    )
    h.write_file(PROJECT["envFile"], "# bench\n", mode="0600", owner=h.user)


def drop_image(h: Host, ref: str) -> None:
    h.sh('docker image rm -f "$1" >/dev/null 2>&1 || true', ref, check=False)


def mb(n: float) -> str:
    return f"{n / 1e6:8.2f} MB"


def transfer_bench(rig: Rig, pad: int, rounds: int) -> None:
    a = sha("moved-a")
    published = {a: rig.publish_test_image(MOVED, a, pad_bytes=pad)}
    commits = [sha(f"moved-b{i}") for i in range(rounds)]
    for c in commits:
        published[c] = rig.publish_test_image(MOVED, c, pad_bytes=pad)
    facts = published[a]
    plan = plan_service(cfg_for(rig, MOVED, a), MOVED)
    cold_s, cold = timed(rig.master, plan.step_by_id["transfer"], facts)
    print(f"cold transfer of A (tunnel, nothing on the master): {mb(cold['bytesMoved'])} in {cold_s:6.2f} s")
    rows: dict[str, list[tuple[float, int]]] = {"tunnel": [], "stream": []}
    for c in commits:
        for mode in ("tunnel", "stream"):
            ref = f"{rig.registry}/unidesk/{MOVED}:{c}"
            drop_image(rig.master, ref)
            step = plan_service(cfg_for(rig, MOVED, c, mode), MOVED).step_by_id["transfer"]
            seconds, doc = timed(rig.master, step, published[c])
            assert doc["alreadyPresent"] is False
            rows[mode].append((seconds, int(doc["bytesMoved"])))
    image_bytes = cold.get("layerBytes") or 0
    print(f"redeploy A -> B (only the top layer differs; shared pad {pad >> 20} MiB; {rounds} rounds):")
    for mode, method in (("tunnel", "ssh client received bytes"), ("stream", "docker save tar bytes")):
        secs = [s for s, _ in rows[mode]]
        byts = [b for _, b in rows[mode]]
        print(f"  {mode:6}: {int(statistics.median(byts)):>11,} bytes moved ({method}), "
              f"{statistics.median(secs):6.2f} s median (min {min(secs):.2f}, max {max(secs):.2f})")
    if image_bytes:
        print(f"  (compressed image size from the registry: {mb(image_bytes)})")


HAND = r"""
set -euo pipefail
ref=127.0.0.1:5000/unidesk/$1:$2
docker pull -q "$ref" >/dev/null
docker tag "$ref" "$1" && docker tag "$ref" "$1:$2"
cd "$3" && docker-compose -p "$4" up -d --no-build --no-deps --force-recreate "$1" >/dev/null 2>&1
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1-backend")
for i in $(seq 100); do curl -sf "http://$ip:8080/health" >/dev/null && exit 0; sleep 0.1; done
exit 1
"""


def deploy_bench(rig: Rig, rounds: int) -> None:
    compose_project(rig.d601, DIRECT, DIRECT, f"{DIRECT}-backend")
    first = sha("direct-0")
    ours = [sha(f"direct-ours-{i}") for i in range(rounds)]
    hand = [sha(f"direct-hand-{i}") for i in range(rounds)]
    published = {c: rig.publish_test_image(DIRECT, c) for c in (first, *ours, *hand)}

    def project_deploy(commit: str) -> float:
        plan = plan_service(cfg_for(rig, DIRECT, commit), DIRECT)
        start = time.monotonic()
        check = rig.d601.run_step(plan.steps[0])
        assert check.returncode == 0 and check.json is not None, check.stderr
        for step in plan.steps[1:]:
            timed(rig.d601, step, check.json)
        return time.monotonic() - start

    project_deploy(first)
    ours_s, hand_s = [], []
    for mine, typed in zip(ours, hand, strict=True):
        ours_s.append(project_deploy(mine))
        start = time.monotonic()
        rig.d601.ssh(
            "bash -s -- " + " ".join([DIRECT, typed, BASE, PROJECT["projectName"]]), input=HAND, check=True
        )
        hand_s.append(time.monotonic() - start)
    del published
    print(f"one D601-direct deploy of a new commit, end to end ({rounds} rounds, over ssh from the machine):")
    ours_m, hand_m = statistics.median(ours_s), statistics.median(hand_s)
    print(f"  project steps (manifest-check + pull + deploy, verified): {ours_m:6.2f} s median "
          f"(min {min(ours_s):.2f}, max {max(ours_s):.2f}); 3 ssh round trips")
    print(f"  hand-typed pull && tag && docker-compose up && curl:      {hand_m:6.2f} s median "
          f"(min {min(hand_s):.2f}, max {max(hand_s):.2f}); 1 ssh round trip, no digest/label/secret checks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pad-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    start = time.monotonic()
    rig = Rig.up()
    print(f"rig up in {rig.boot_seconds:.1f} s")
    try:
        compose_project(rig.master, MOVED, MOVED, f"{MOVED}-backend")
        transfer_bench(rig, args.pad_mb * 1024 * 1024, args.rounds)
        deploy_bench(rig, args.rounds)
    finally:
        problems = rig.down()
        if problems:
            print(f"rig teardown left: {problems}", file=sys.stderr)
    print(f"benchmark total {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
