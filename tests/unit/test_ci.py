"""CI.json: the artifact catalog model, its consistency with the service catalog (R26), and the
plan's structured refusal of ``upstream-image`` entries (R26: catalog only)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifact_cd import catalog, ci
from artifact_cd.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "CI.json").read_text(encoding="utf-8"))
    return data


def _service(data: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(a for a in data["artifacts"] if a["id"] == sid)


def test_repo_ci_json_is_valid_and_agrees_with_the_catalog() -> None:
    """R26: every deployable service has a producer and every name matches the catalog."""
    loaded = ci.load_checked()
    assert ci.consistency_problems(loaded) == []
    deployable = {e.id for e in catalog.CATALOG if ci.is_deployable(e)}
    assert deployable == set(catalog.service_ids())  # every catalog row has some consumer
    assert set(loaded.services) == deployable
    for sid, artifact in loaded.services.items():
        entry = catalog.get(sid)
        assert entry is not None
        assert artifact.image == f"unidesk/{sid}" == entry.repository
        assert artifact.producer == entry.producer
        assert artifact.source_repo == entry.source_repo
        assert artifact.dockerfile == entry.dockerfile


def test_producers_follow_the_seed() -> None:
    services = ci.load_checked().services
    assert services["backend-core"].producer == "ci publish-backend-core"
    assert {a.producer for sid, a in services.items() if sid != "backend-core"} == {"ci publish-user-service"}
    assert services["todo-note"].source_repo == "https://gitee.com/Lyon1998/todo_note"
    assert services["todo-note"].dockerfile == "Dockerfile"
    assert services["project-manager"].dockerfile == "src/components/microservices/project-manager/Dockerfile"


def test_upstream_entries_are_catalog_only_and_pinned() -> None:
    upstream = ci.load_checked().upstream
    assert "artifact-registry" in upstream
    registry = upstream["artifact-registry"]
    assert registry.upstream_image.endswith("registry:2.8.3")  # R1
    for entry in upstream.values():
        assert entry.mirror_producer is None
        assert entry.mirror_image.startswith("unidesk/upstream/")
        assert entry.upstream_digest.startswith("sha256:") and len(entry.upstream_digest) == 71
        assert catalog.get(entry.id) is None  # never a deployable catalog service


def test_missing_producer_is_a_problem(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["artifacts"] = [a for a in data["artifacts"] if a["id"] != "frontend"]
    problems = ci.consistency_problems(ci.parse_ci(data))
    assert problems == ["deployable service 'frontend' has no producer (no service-image entry)"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("producer", "ci publish-backend-core"),
        ("sourceRepo", "https://github.com/someone/fork"),
        ("dockerfile", "src/components/microservices/findjob/Dockerfile.dev"),
        ("buildContext", "src"),
    ],
)
def test_any_differing_name_is_a_problem(raw: dict[str, Any], key: str, value: str) -> None:
    data = copy.deepcopy(raw)
    _service(data, "findjob")[key] = value
    problems = ci.consistency_problems(ci.parse_ci(data))
    assert len(problems) == 1
    assert problems[0].startswith(f"findjob: CI.json {key} ")


def test_extra_service_and_shadowing_upstream_are_problems(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    extra = dict(_service(data, "findjob"), id="ghost", image="unidesk/ghost")
    shadow = {
        "kind": "upstream-image",
        "id": "pipeline",
        "upstreamImage": "docker.io/library/busybox:1.36",
        "upstreamDigest": "sha256:" + "a" * 64,
        "mirrorImage": "unidesk/upstream/busybox",
        "mirrorTag": "1.36",
        "usedBy": "nothing",
    }
    data["artifacts"] = [*data["artifacts"], extra]
    problems = ci.consistency_problems(ci.parse_ci(data))
    assert problems == ["CI.json service-image 'ghost' is not a service in the catalog"]
    data["artifacts"] = [a for a in data["artifacts"] if a["id"] not in ("pipeline", "ghost")] + [shadow]
    problems = ci.consistency_problems(ci.parse_ci(data))
    assert any("upstream-image 'pipeline' has the id of a catalog service" in p for p in problems)


def test_load_checked_refuses_an_inconsistent_file(raw: dict[str, Any], tmp_path: Path) -> None:
    data = copy.deepcopy(raw)
    _service(data, "mdtodo")["sourceRepo"] = "https://example.org/other"
    path = tmp_path / "CI.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert ci.load_ci(path).services["mdtodo"].source_repo == "https://example.org/other"
    with pytest.raises(ci.CIError) as caught:
        ci.load_checked(path)
    doc = caught.value.as_json()
    assert doc["decision"] == "invalid-ci-catalog" and doc["ok"] is False
    assert any("mdtodo: CI.json sourceRepo" in p for p in doc["problems"])


Mutation = Callable[[dict[str, Any]], object]
SERVICE, UPSTREAM = "findjob", "artifact-registry"  # a service-image entry, an upstream-image entry
# (entry, one change that makes it invalid, a fragment of the model's refusal)
BAD_ENTRIES: list[tuple[str, Mutation, str]] = [
    (SERVICE, lambda a: a.update(image="unidesk/other"), "must be 'unidesk/findjob'"),
    (SERVICE, lambda a: a.update(dockerfile="/abs/Dockerfile"), "not a plain path"),
    (SERVICE, lambda a: a.update(dockerfile="../Dockerfile"), "not a plain path"),
    (SERVICE, lambda a: a.update(buildContext="a/../b"), "not a plain path"),
    (SERVICE, lambda a: a.update(sourceRepo="git@github.com:x/y"), "https repository URL"),
    (SERVICE, lambda a: a.update(producer="make"), "producer"),
    (SERVICE, lambda a: a.update(id="Bad_Id"), "lowercase service id"),
    (SERVICE, lambda a: a.update(kind="binary"), "kind"),
    (SERVICE, lambda a: a.update(extra="x"), "extra"),
    (UPSTREAM, lambda a: a.update(upstreamImage="docker.io/library/registry:latest"), "mutable tag"),
    (UPSTREAM, lambda a: a.update(upstreamImage="docker.io/library/registry"), "with a tag"),
    (UPSTREAM, lambda a: a.update(upstreamDigest="sha256:abc"), "sha256:<64 hex>"),
    (UPSTREAM, lambda a: a.update(mirrorImage="unidesk/registry"), "must live under 'unidesk/upstream/'"),
    (UPSTREAM, lambda a: a.update(mirrorTag="latest"), "is mutable"),
    (UPSTREAM, lambda a: a.update(mirrorProducer="ci mirror"), "mirrorProducer"),
    (UPSTREAM, lambda a: a.pop("upstreamDigest"), "upstreamDigest"),
]


def _bad_entries(sid: str) -> list[tuple[Mutation, str]]:
    return [(mutate, fragment) for entry, mutate, fragment in BAD_ENTRIES if entry == sid]


def _assert_refused(raw: dict[str, Any], sid: str, mutate: Mutation, fragment: str) -> None:
    data = copy.deepcopy(raw)
    mutate(_service(data, sid))
    with pytest.raises(ci.CIError) as caught:
        ci.parse_ci(data)
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(("mutate", "fragment"), _bad_entries(SERVICE))
def test_model_refuses_bad_service_entries(raw: dict[str, Any], mutate: Any, fragment: str) -> None:
    _assert_refused(raw, SERVICE, mutate, fragment)


@pytest.mark.parametrize(("mutate", "fragment"), _bad_entries(UPSTREAM))
def test_model_refuses_bad_upstream_entries(raw: dict[str, Any], mutate: Any, fragment: str) -> None:
    _assert_refused(raw, UPSTREAM, mutate, fragment)


def test_duplicate_ids_and_images_are_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["artifacts"].append(copy.deepcopy(_service(data, "claudeqq")))
    with pytest.raises(ci.CIError, match="'claudeqq' appears twice"):
        ci.parse_ci(data)


def test_unreadable_files_are_ci_errors(tmp_path: Path) -> None:
    with pytest.raises(ci.CIError, match="does not exist"):
        ci.load_ci(tmp_path / "missing.json")
    bad = tmp_path / "CI.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ci.CIError, match="not readable JSON"):
        ci.load_ci(bad)
    bad.write_text(json.dumps({"schemaVersion": 2, "artifacts": []}), encoding="utf-8")
    with pytest.raises(ci.CIError, match="schemaVersion"):
        ci.load_ci(bad)


@pytest.mark.parametrize("stack", catalog.ENVS)
def test_plan_of_an_upstream_entry_is_a_structured_unsupported(
    capsys: pytest.CaptureFixture[str], stack: str
) -> None:
    """R26: CD never deploys an upstream-image entry; the plan says why, with no steps."""
    upstream = ci.load_checked().upstream
    for uid, entry in upstream.items():
        code = main(["plan", "--stack", stack, "--service", uid])
        doc = json.loads(capsys.readouterr().out)
        assert code == 3
        assert doc["decision"] == "unsupported" and doc["ok"] is False
        assert doc["kind"] == "upstream-image" and doc["service"] == uid and doc["env"] == stack
        assert doc["steps"] == [] and doc["actionsTaken"] == []
        assert doc["conditions"]["consumerSupported"] is False
        assert (
            doc["conditions"]["registryManifest"] == f"127.0.0.1:5000/{entry.mirror_image}:{entry.mirror_tag}"
        )
        assert "registry manifest" in doc["reason"] and "consumer" in doc["reason"]
        assert doc["upstream"]["digest"] == entry.upstream_digest


def test_plan_of_an_unknown_service_is_still_the_catalog_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--stack", "dev", "--service", "no-such-service"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3 and doc["decision"] == "unsupported"
    assert "kind" not in doc and "not a service in the catalog" in doc["reason"]
