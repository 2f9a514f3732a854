"""Following a job in the terminal: live bars on a terminal, plain lines otherwise.

:func:`display_for` picks the form: a `rich` live display with map and reduce
bars (counts, input rate, elapsed time, failures as they happen) when the
stream is a terminal, and plain periodic lines when it is a pipe or a file.
The final summary is :func:`mapreduce.summary.render_summary`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from mapreduce.rpc._generated import mapreduce_pb2 as pb

if TYPE_CHECKING:
    from rich.progress import TaskID

#: A plain progress line is printed when something changed, or after this long.
PLAIN_EVERY = 5.0


def _rate(status: pb.JobStatus) -> str:
    if status.elapsed_seconds <= 0:
        return ""
    mb = status.input_bytes_done / 1e6
    return f"{mb / status.elapsed_seconds:.1f} MB/s"


def status_line(status: pb.JobStatus) -> str:
    """One line: state, map and reduce counts, failures, input rate, elapsed time."""
    parts = [
        f"[{status.job_id}] {status.state}",
        f"map {status.maps_done}/{status.maps_total}",
        f"reduce {status.reduces_done}/{status.reduces_total}",
    ]
    if status.failed_attempts:
        parts.append(f"{status.failed_attempts} failed attempts")
    rate = _rate(status)
    if rate:
        parts.append(rate)
    parts.append(f"{status.elapsed_seconds:.1f}s")
    return ", ".join(parts)


class PlainProgress:
    """Prints a line when the counts change (or every :data:`PLAIN_EVERY` seconds)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.last_key: tuple[Any, ...] = ()
        self.last_time = -PLAIN_EVERY
        self.failures_seen = 0

    def __call__(self, status: pb.JobStatus) -> None:
        for failure in status.failures[self.failures_seen :]:
            print(f"attempt failed: {failure}", file=self.stream, flush=True)
        self.failures_seen = max(self.failures_seen, len(status.failures))
        key = (status.state, status.maps_done, status.reduces_done, status.failed_attempts)
        now = self.clock()
        if key != self.last_key or now - self.last_time >= PLAIN_EVERY:
            print(status_line(status), file=self.stream, flush=True)
            self.last_key, self.last_time = key, now

    def close(self) -> None:
        pass


class LiveProgress:
    """Map and reduce bars on a terminal, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        # rich is imported here, on a terminal only: a pipe or -q never pays for it
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(file=stream, force_terminal=True)
        self.progress = Progress(
            TextColumn("{task.description:>6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.bars: dict[str, TaskID] = {}
        self.failures_seen = 0
        self.progress.start()

    def __call__(self, status: pb.JobStatus) -> None:
        for failure in status.failures[self.failures_seen :]:
            self.progress.console.print(f"[red]attempt failed:[/red] {failure}", markup=True)
        self.failures_seen = max(self.failures_seen, len(status.failures))
        info = f"{_rate(status)}  {status.elapsed_seconds:.1f}s  {status.state}"
        for name, done, total in (
            ("map", status.maps_done, status.maps_total),
            ("reduce", status.reduces_done, status.reduces_total),
        ):
            if name not in self.bars:
                self.bars[name] = self.progress.add_task(name, total=max(total, 1), info="")
            self.progress.update(self.bars[name], completed=done, total=max(total, 1), info=info)

    def close(self) -> None:
        self.progress.stop()


def display_for(stream: TextIO) -> PlainProgress | LiveProgress:
    """A live display when ``stream`` is a terminal, plain lines otherwise."""
    return LiveProgress(stream) if stream.isatty() else PlainProgress(stream)
