"""Helpers shared by the command modules: opening workspaces, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facelab.store import Workspace
from facelab.writelock import BUSY_EXIT_CODE, WorkspaceBusy, write_lock

# Progress and messages go to stderr so that stdout stays parseable (CSV lines, JSON).
stderr = Console(stderr=True)

WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="If another facelab command is changing the workspace, wait for it to finish instead of stopping.",
    ),
]


def _waiting(busy: WorkspaceBusy) -> None:
    who = busy.holder.describe() if busy.holder else "another facelab process"
    stderr.print(f"waiting for {who} to finish with {busy.root} …", highlight=False, soft_wrap=True)


@contextmanager
def open_workspace(path: Path, create: bool = False, *, write: bool = False, wait: bool = False) -> Iterator[Workspace]:
    """Open a workspace for a command; ``write``: hold its write lock until the command ends.

    A command that changes the workspace passes ``write=True``: a second such command stops at
    once with one line naming the holder (exit status 75), or waits with ``wait``. Readers pass
    nothing and never wait.
    """
    with ExitStack() as stack:
        try:
            if write:
                if not create and not (Path(path) / ".facelab" / "facelab.db").exists():
                    Workspace(path, create=False)  # raises "not a workspace" before the lock creates a folder
                stack.enter_context(write_lock(path, wait=wait, on_wait=_waiting))
            ws = Workspace(path, create=create)
        except WorkspaceBusy as exc:
            stderr.print(f"[red]busy:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(BUSY_EXIT_CODE) from exc
        except FileNotFoundError as exc:
            stderr.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        except OSError as exc:  # a file where the folder should be, no permission to create it
            stderr.print(
                f"[red]{path} cannot be used as a workspace[/] ({exc.strerror or exc}): give a folder you may write to",
                highlight=False,
                soft_wrap=True,
            )
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


def print_unknown_expectation(run_dir: Path) -> None:
    """What to expect of "unknown" for a run, in plain words, from its calibration (``openset.json``;
    for a CNN run, its embedding gate's ``gate.json``), and the calibration's warning if any."""
    import json

    calibration: dict = {}
    for name in ("gate.json", "openset.json"):
        path = run_dir / name
        if path.is_file():
            calibration = json.loads(path.read_text(encoding="utf-8"))
            break
    if calibration.get("threshold") is None:
        stderr.print(f"[yellow]{run_dir.name} cannot answer 'unknown': every stranger will be given a name[/]")
        return
    gate = " (a name stands only if the face embedding agrees)" if (run_dir / "gate.json").is_file() else ""
    expected = calibration.get("expected") or ""
    stderr.print(f"unknown{gate}: {expected}" if expected else f"unknown threshold {calibration['threshold']:.2f}")
    if calibration.get("warning"):
        stderr.print(f"[yellow]{calibration['warning']}[/]", highlight=False)
