"""What ``publish`` shows a person while it works (issue 13, item 5), and its summary.

stdout is reserved for the result: JSON when piped or with ``--json`` (byte for byte what it always
was), a short summary on a terminal. Progress goes to stderr: :class:`Progress` (the default) writes
the plain ``publish: ...`` log lines as before; :class:`RichProgress`, used when stderr is a
terminal, draws the phases (source, build, manifest check, push, verify) with the build's step
count and the push's bytes and layers, and prints the log lines above them. Docker's own build and
push output is kept in memory then and written out only when the step fails.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any

PHASES = ("source", "build", "manifest check", "push", "verify")


class Progress:
    """Plain progress: the log lines on stderr, nothing drawn (a pipe, a CI log)."""

    live = False  # whether Docker's output is consumed here (True) or streamed to stderr as it is

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def message(self, text: str) -> None:
        out = self.stream or sys.stderr
        out.write(f"publish: {text}\n")
        out.flush()

    def phase(self, name: str) -> None:
        """A new phase starts (one of :data:`PHASES`, or a repair phase)."""

    def build_step(self, step: int, total: int) -> None:
        """The build reached step ``step`` of ``total``."""

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        """A pushed layer's state: Preparing / Waiting / Pushing (bytes) / Pushed / Layer already exists."""

    def close(self) -> None:
        """The run is over (success or failure): stop drawing."""


class RichProgress(Progress):
    """A terminal: one line per phase with a bar (build steps; push bytes and layers)."""

    live = True

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bars

        self.console = Console(file=stream or sys.stderr, force_terminal=True, highlight=False)
        self.bars = Bars(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[figure]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.current = ""
        self.layers: dict[str, tuple[str, int, int]] = {}  # id -> (status, current, total)
        self.bars.start()

    def message(self, text: str) -> None:
        self.bars.console.print(f"[dim]publish:[/] {text}", markup=True, highlight=False, soft_wrap=True)

    def _finish_current(self) -> None:
        task = self.tasks.get(self.current)
        if task is not None:
            total = self.bars.tasks[task].total or 1
            self.bars.update(task, total=total, completed=total)

    def phase(self, name: str) -> None:
        self._finish_current()
        self.current = name
        self.tasks[name] = self.bars.add_task(name, total=None, figure="")

    def build_step(self, step: int, total: int) -> None:
        task = self.tasks.get("build")
        if task is not None:
            self.bars.update(task, total=total, completed=max(0, step - 1), figure=f"step {step}/{total}")

    def layer(self, layer_id: str, status: str, current: int | None = None, total: int | None = None) -> None:
        task = self.tasks.get("push")
        if task is None:
            return
        before = self.layers.get(layer_id, ("", 0, 0))
        cur = current if current is not None else before[1]
        tot = total if total is not None else before[2]
        if status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
            cur = tot
        self.layers[layer_id] = (status, cur, tot)
        done = sum(
            1
            for s, _, _ in self.layers.values()
            if s in ("Pushed", "Layer already exists") or s.startswith("Mounted")
        )
        sent = sum(c for s, c, _ in self.layers.values() if s in ("Pushing", "Pushed"))
        size = sum(t for s, _, t in self.layers.values() if s in ("Pushing", "Pushed"))
        self.bars.update(
            task,
            total=max(size, 1),
            completed=min(sent, max(size, 1)),
            figure=(f"{_bytes(sent)}/{_bytes(size)} · " if size else "")
            + f"layers {done}/{len(self.layers)}",
        )

    def close(self) -> None:
        if self.bars.live.is_started:
            self._finish_current()
            self.bars.stop()


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def for_stream(stream: IO[str]) -> Progress:
    """RichProgress on a terminal, plain log lines otherwise."""
    return RichProgress(stream) if stream.isatty() else Progress(stream)


def summary_text(code: int, doc: Mapping[str, Any]) -> str:
    """The person's view of a publish result (a terminal; piped output stays the JSON)."""
    if doc.get("ok") is not True:
        lines = [
            f"publish {doc.get('decision', 'failed')}: {doc.get('error')} (exit {code})",
            f"  {doc.get('reason')}",
        ]
        if doc.get("fix"):
            lines.append(f"  fix: {doc.get('fix')}")
        for action in doc.get("actionsTaken") or []:
            lines.append(f"  done before it stopped: {action}")
        return "\n".join(lines) + "\n"
    lines = [
        f"published {doc.get('imageRef')}",
        f"  service   {doc.get('serviceId')}   commit {doc.get('sourceCommit')}",
        f"  digest    {doc.get('digest')}",
        f"  image ID  {doc.get('imageId')}",
        f"  pull by   {doc.get('digestRef')}",
    ]
    repair = doc.get("repair")
    if isinstance(repair, Mapping):
        bad = len(repair.get("missing") or []) + len(repair.get("corrupt") or [])
        lines.append(
            f"  repair    {repair.get('checkedBlobs')} blobs checked, {bad} missing or corrupt, "
            f"{len(repair.get('dropped') or [])} dropped, {len(repair.get('uploaded') or [])} uploaded "
            f"(manifest digest unchanged)"
        )
    return "\n".join(lines) + "\n"
