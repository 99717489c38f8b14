"""The CI-side artifact catalog: root ``CI.json`` (R25, R26; seed: "The CI-side artifact catalog").

``CI.json`` describes producer inputs and naming only: for every service of
:mod:`artifact_cd.catalog` its producer (``ci publish-backend-core`` / ``ci publish-user-service``),
source repository, Dockerfile, build context and image name ``unidesk/<id>``; and ``upstream-image``
entries (an upstream image pinned by digest, with the name of its future D601 mirror) that are
catalog coverage only. Consumers still verify labels, manifest digest and live runtime themselves.

The two catalogs must agree: :func:`consistency_problems` lists every deployable service without a
producer and every name that differs; :func:`load_checked` refuses a CI.json with any problem.
An ``upstream-image`` entry is never deployable here: no mirror producer exists and no consumer in
the service catalog supports it (:func:`upstream_plan_refusal` is what ``plan --service`` prints).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import catalog
from .catalog import PRODUCER_BACKEND_CORE, PRODUCER_USER_SERVICE, ServiceEntry
from .config import MUTABLE_TAGS, LoopbackEndpoint
from .contract import DIGEST_RE, REPOSITORY_PATTERN, TAG_PATTERN, matching

CI_PATH = Path(__file__).resolve().parent.parent / "CI.json"

KIND_SERVICE = "service-image"
KIND_UPSTREAM = "upstream-image"
IMAGE_NAMESPACE = "unidesk"
MIRROR_NAMESPACE = "unidesk/upstream"

_ID_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_REL_PATH_RE = re.compile(r"[A-Za-z0-9._+@-]+(/[A-Za-z0-9._+@-]+)*")
_URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)*")
_REPOSITORY_RE = re.compile(REPOSITORY_PATTERN)
_TAG_RE = re.compile(TAG_PATTERN)
# name[:port][/path...]:tag
_UPSTREAM_RE = re.compile(
    rf"(?P<name>{REPOSITORY_PATTERN}(?::[0-9]{{1,5}})?(?:/{REPOSITORY_PATTERN})*):(?P<tag>{TAG_PATTERN})"
)

PRODUCERS = (PRODUCER_BACKEND_CORE, PRODUCER_USER_SERVICE)


def _relative_path(value: str) -> str:
    if value == ".":
        return value
    if not _REL_PATH_RE.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise PydanticCustomError(
            "path",
            f"{value!r} is not a plain path relative to the repository root (no leading '/', no '.' or '..')",
        )
    return value


def _upstream_image(value: str) -> str:
    match = _UPSTREAM_RE.fullmatch(value)
    if match is None:
        raise PydanticCustomError("image", f"{value!r} is not an image reference with a tag (name:tag)")
    if match["tag"].lower() in MUTABLE_TAGS:
        raise PydanticCustomError("image", f"{value!r} uses a mutable tag; pin a version")
    return value


ArtifactId = Annotated[str, matching(_ID_RE, "a lowercase service id (a-z 0-9 -)")]
RelPath = Annotated[str, AfterValidator(_relative_path)]
RepoUrl = Annotated[str, matching(_URL_RE, "an https repository URL")]
Repository = Annotated[str, matching(_REPOSITORY_RE, "a registry repository name")]
Tag = Annotated[str, matching(_TAG_RE, "an image tag")]
Digest = Annotated[str, matching(DIGEST_RE, "a sha256:<64 hex> digest")]
UpstreamImage = Annotated[str, AfterValidator(_upstream_image)]
Note = Annotated[str, Field(min_length=1, max_length=400)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class ServiceArtifact(_Model):
    """A commit-pinned image CI builds from pushed Git and pushes to ``<registry>/unidesk/<id>:<sha>``."""

    kind: Literal["service-image"]
    id: ArtifactId
    producer: Literal["ci publish-backend-core", "ci publish-user-service"]
    source_repo: RepoUrl
    dockerfile: RelPath
    build_context: RelPath = "."
    image: Repository

    @model_validator(mode="after")
    def _image_name(self) -> ServiceArtifact:
        expected = f"{IMAGE_NAMESPACE}/{self.id}"
        if self.image != expected:
            raise PydanticCustomError("naming", f"image {self.image!r} must be {expected!r}")
        if self.dockerfile == ".":
            raise PydanticCustomError("path", "dockerfile must name a file, not '.'")
        return self


class UpstreamArtifact(_Model):
    """An upstream image UniDesk runs: catalog coverage only until a mirror producer exists."""

    kind: Literal["upstream-image"]
    id: ArtifactId
    upstream_image: UpstreamImage
    upstream_digest: Digest
    mirror_image: Repository
    mirror_tag: Tag
    mirror_producer: None = None  # no mirror producer exists yet (seed)
    used_by: Note
    assumptions: tuple[Note, ...] = ()

    @model_validator(mode="after")
    def _mirror_name(self) -> UpstreamArtifact:
        if not self.mirror_image.startswith(MIRROR_NAMESPACE + "/"):
            raise PydanticCustomError(
                "naming",
                f"mirrorImage {self.mirror_image!r} must live under {MIRROR_NAMESPACE + '/'!r} "
                "(apart from service images)",
            )
        if self.mirror_tag.lower() in MUTABLE_TAGS:
            raise PydanticCustomError("naming", f"mirrorTag {self.mirror_tag!r} is mutable")
        return self

    def mirror_ref(self, registry: str) -> str:
        return f"{registry}/{self.mirror_image}:{self.mirror_tag}"


Artifact = Annotated[ServiceArtifact | UpstreamArtifact, Field(discriminator="kind")]


class CICatalog(_Model):
    schema_version: Literal[1]
    description: str = ""
    registry: LoopbackEndpoint = "127.0.0.1:5000"
    artifacts: tuple[Artifact, ...]

    @model_validator(mode="after")
    def _unique(self) -> CICatalog:
        seen: set[str] = set()
        images: set[str] = set()
        for artifact in self.artifacts:
            if artifact.id in seen:
                raise PydanticCustomError("duplicate", f"artifact id {artifact.id!r} appears twice")
            seen.add(artifact.id)
            image = artifact.image if isinstance(artifact, ServiceArtifact) else artifact.mirror_image
            if image in images:
                raise PydanticCustomError("duplicate", f"image name {image!r} appears twice")
            images.add(image)
        return self

    @property
    def services(self) -> dict[str, ServiceArtifact]:
        return {a.id: a for a in self.artifacts if isinstance(a, ServiceArtifact)}

    @property
    def upstream(self) -> dict[str, UpstreamArtifact]:
        return {a.id: a for a in self.artifacts if isinstance(a, UpstreamArtifact)}


class CIError(ValueError):
    """CI.json is unreadable, invalid, or disagrees with the service catalog."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": False,
            "decision": "invalid-ci-catalog",
            "retryable": False,
            "path": str(self.path),
            "problems": self.problems,
            "fix": "edit CI.json so it validates and agrees with artifact_cd/catalog.py",
        }


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def parse_ci(data: Any, path: Path = CI_PATH) -> CICatalog:
    try:
        return CICatalog.model_validate(data)
    except ValidationError as error:
        raise CIError(path, [f"{_loc(e['loc'])}: {e['msg']}" for e in error.errors()]) from None


def load_ci(path: Path = CI_PATH) -> CICatalog:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CIError(path, ["the file does not exist"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CIError(path, [f"not readable JSON: {error}"]) from None
    return parse_ci(data, path)


def is_deployable(entry: ServiceEntry) -> bool:
    """A service with at least one consumer target (any env) needs a CI producer."""
    return any(t.kind != catalog.TargetKind.NONE for t in entry.targets.values())


def consistency_problems(ci: CICatalog, services: Iterable[ServiceEntry] = catalog.CATALOG) -> list[str]:
    """Every disagreement between CI.json and the service catalog (empty when they agree)."""
    problems: list[str] = []
    by_id = {entry.id: entry for entry in services}
    produced = ci.services
    for sid, entry in by_id.items():
        artifact = produced.get(sid)
        if artifact is None:
            if is_deployable(entry):
                problems.append(f"deployable service {sid!r} has no producer (no service-image entry)")
            continue
        expected = {
            "producer": entry.producer,
            "sourceRepo": entry.source_repo,
            "dockerfile": entry.dockerfile,
            "buildContext": entry.build_context,
            "image": entry.repository,
        }
        actual = {
            "producer": artifact.producer,
            "sourceRepo": artifact.source_repo,
            "dockerfile": artifact.dockerfile,
            "buildContext": artifact.build_context,
            "image": artifact.image,
        }
        for key, want in expected.items():
            if actual[key] != want:
                problems.append(f"{sid}: CI.json {key} {actual[key]!r} differs from the catalog's {want!r}")
    for sid in produced:
        if sid not in by_id:
            problems.append(f"CI.json service-image {sid!r} is not a service in the catalog")
    for uid in ci.upstream:
        if uid in by_id:
            problems.append(
                f"upstream-image {uid!r} has the id of a catalog service; upstream entries are catalog-only "
                "and must not shadow a deployable service"
            )
    return problems


def load_checked(path: Path = CI_PATH) -> CICatalog:
    """CI.json, validated and consistent with the service catalog, or :class:`CIError`."""
    ci = load_ci(path)
    problems = consistency_problems(ci)
    if problems:
        raise CIError(path, problems)
    return ci


def upstream_plan_refusal(artifact: UpstreamArtifact, env: str, registry: str) -> dict[str, Any]:
    """What ``plan --service <upstream id>`` answers: a structured ``unsupported`` (R26)."""
    mirror = artifact.mirror_ref(registry)
    return {
        "ok": False,
        "decision": "unsupported",
        "retryable": False,
        "service": artifact.id,
        "env": env,
        "kind": KIND_UPSTREAM,
        "reason": (
            f"{artifact.id} is an upstream-image entry of CI.json: catalog coverage only. CD deploys "
            f"it only when the D601 registry manifest {mirror} exists and a reviewed consumer supports "
            "the service; no mirror producer exists and no consumer in the service catalog supports it"
        ),
        "conditions": {
            "consumerSupported": False,
            "mirrorProducer": artifact.mirror_producer,
            "registryManifest": mirror,
            "registryManifestChecked": False,
            "registryManifestNote": (
                "not probed: without a reviewed consumer the manifest alone never makes it deployable"
            ),
        },
        "upstream": {
            "image": artifact.upstream_image,
            "digest": artifact.upstream_digest,
            "mirrorImage": artifact.mirror_image,
            "mirrorTag": artifact.mirror_tag,
            "usedBy": artifact.used_by,
        },
        "fix": (
            "add a mirror producer that pushes the pinned upstream digest to the D601 registry and a "
            "reviewed consumer entry in artifact_cd/catalog.py; until then manage it outside artifact CD"
        ),
        "steps": [],
        "actionsTaken": [],
        "assumptions": list(artifact.assumptions),
    }
