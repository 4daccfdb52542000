"""Helpers shared by the command modules: opening workspaces, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facelab.store import Workspace

# Progress and messages go to stderr so that stdout stays parseable (CSV lines, JSON).
stderr = Console(stderr=True)


@contextmanager
def open_workspace(path: Path, create: bool = False) -> Iterator[Workspace]:
    try:
        ws = Workspace(path, create=create)
    except FileNotFoundError as exc:
        stderr.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    try:
        yield ws
    finally:
        ws.close()


@contextmanager
def progress_bar(label: str, quiet: bool = False) -> Iterator[Callable[[int, int, object], None]]:
    """Yields ``advance(done, total, item)``; shows a Rich bar with ETA unless ``quiet``."""
    if quiet:
        yield lambda done, total, item=None: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[item]}", style="dim"),
        console=stderr,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=None, item="")

        def advance(done: int, total: int, item: object = None) -> None:
            name = Path(str(item)).name if item is not None else ""
            progress.update(task, completed=done, total=total, item=name[:40])

        yield advance
