"""The deploy audit log of a target host, read back (issue 13).

``artifact_cd/scripts/include/audit.sh`` appends one JSON object per line; this module is its
reader. Pure: it parses text (the caller fetched it, e.g. over one SSH round trip) and pairs the
``started`` line of a run with its ``finished``/``failed`` line. A run with ``started`` only was
interrupted (SIGKILL, power loss, a session that took the script with it): its verdict is
``interrupted``. Lines that are not audit records (a torn tail after a full disk) are counted and
skipped, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from .contract import AUDIT_FORMAT_VERSION

AuditEventKind = Literal["started", "finished", "failed"]


class AuditRecord(BaseModel):
    """One line of the log (the fields audit.sh writes; unknown keys are kept, never required)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    v: int
    time: str
    event: AuditEventKind
    run_id: str
    stack: str
    env: str
    service: str
    target: str
    step: str
    host: str
    user: str
    pid: int
    from_commit: str | None = None
    to_commit: str | None = None
    digest: str | None = None
    image_id: str | None = None
    verdict: str | None = None
    error: str | None = None
    seconds: float | None = None
    exit_code: int | None = None


class AuditRun(BaseModel):
    """One step run on one host: its ``started`` line and its end (``None``: interrupted)."""

    model_config = ConfigDict(frozen=True)

    started: AuditRecord | None
    ended: AuditRecord | None

    @property
    def record(self) -> AuditRecord:
        rec = self.ended or self.started
        assert rec is not None
        return rec

    @property
    def verdict(self) -> str:
        if self.ended is None:
            return "interrupted"
        return self.ended.verdict or ("failed" if self.ended.event == "failed" else "ok")

    @property
    def time(self) -> str:
        return (self.started or self.record).time


class ParsedLog(BaseModel):
    model_config = ConfigDict(frozen=True)

    records: tuple[AuditRecord, ...]
    skipped_lines: int


def parse_log(text: str) -> ParsedLog:
    """Every well-formed record of ``text`` (the log, or ``<log>.1`` followed by the log), in order."""
    records: list[AuditRecord] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict) or raw.get("v") != AUDIT_FORMAT_VERSION:
                raise ValueError("not an audit record of this format")
            records.append(AuditRecord.model_validate(raw))
        except (ValueError, ValidationError):
            skipped += 1
    return ParsedLog(records=tuple(records), skipped_lines=skipped)


def pair_runs(records: Iterable[AuditRecord]) -> list[AuditRun]:
    """The runs, in the order they started (a lone end line, its start rotated away, is a run too)."""
    runs: dict[str, dict[str, AuditRecord]] = {}
    order: list[str] = []
    for rec in records:
        slot = runs.get(rec.run_id)
        if slot is None:
            slot = runs[rec.run_id] = {}
            order.append(rec.run_id)
        slot["started" if rec.event == "started" else "ended"] = rec
    return [AuditRun(started=runs[r].get("started"), ended=runs[r].get("ended")) for r in order]
