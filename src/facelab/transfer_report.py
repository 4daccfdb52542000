"""How the transfer track reports training progress: the :class:`Reporter` protocol and its makers.

:class:`NullReporter` says nothing (tests), :class:`PrintReporter` prints messages to stderr
(benchmarks, scripts), :class:`RichReporter` draws a progress bar on stderr (the CLI).
"""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Reporter(Protocol):
    """Where training reports progress: a Rich bar on the CLI, nothing in tests."""

    def message(self, text: str) -> None: ...

    def task(self, description: str, total: int) -> None: ...

    def advance(self, n: int = 1, **fields: str) -> None: ...

    def done(self) -> None: ...


class NullReporter:
    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, **fields: str) -> None:
        pass

    def done(self) -> None:
        pass


class PrintReporter(NullReporter):
    """Messages only, to stderr (benchmarks and scripts)."""

    def message(self, text: str) -> None:
        from rich.text import Text

        print(Text.from_markup(text).plain, file=sys.stderr, flush=True)


class RichReporter:
    """A Rich progress bar on stderr (stdout stays parseable): loss, accuracy, ETA per phase."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def task(self, description: str, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        elif self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        self._task = self._progress.add_task(description, total=total, status="")

    def advance(self, n: int = 1, **fields: str) -> None:
        if self._progress is None or self._task is None:
            return
        if fields:
            status = "  ".join(f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, status=status)
        else:
            self._progress.advance(self._task, n)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
