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


Advance = Callable[[int, int, object], None]

SweepStepOpt = Annotated[
    int | None,
    typer.Option(
        "--sweep-step",
        help="haar detector: degrees between the rotated copies the sweep searches (default 15).",
    ),
]
SweepMaxOpt = Annotated[
    int | None,
    typer.Option(
        "--sweep-max",
        help="haar detector: how far the sweep turns each way, up to 180 (the full circle; default 45: "
        "the full circle found 8 more faces in 786 photos, most of its new boxes were not faces, at twice the time).",
    ),
]


def detector_or_exit(detector: str | None, sweep_step: int | None = None, sweep_max: int | None = None) -> str | None:
    """The detector spec a command uses (None: the default), checked before anything is created:
    an unknown name or a bad setting is one line and exit 2. ``--sweep-step``/``--sweep-max`` are
    the haar detector's rotation sweep (``haar:sweep_step=…,sweep_range=…``)."""
    from facelab.detect import get_detector
    from facelab.detect.base import DetectorUnavailable, detector_spec, parse_spec

    if sweep_step is not None or sweep_max is not None:
        base = parse_spec(detector)[0] if detector else None
        if base not in (None, "haar"):
            stderr.print(f"[red]--sweep-step/--sweep-max set the haar detector's sweep[/], not {base}'s")
            raise typer.Exit(2)
        detector = detector_spec("haar", sweep_step=sweep_step, sweep_range=sweep_max)
    if detector is None:
        return None
    try:
        get_detector(detector)
    except (KeyError, ValueError) as exc:
        stderr.print(f"[red]{exc.args[0] if isinstance(exc, KeyError) else exc}[/] (see facelab detectors)")
        raise typer.Exit(2) from exc
    except DetectorUnavailable as exc:
        stderr.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    return detector


# Every command takes the workspace the same way: first on the line (as it always could) or as
# -w/--workspace (as build, run and album index always did).
WorkspaceFlag = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace folder (or give it first on the line)."),
]


def workspace_from(positional: Path | str | None, flag: Path | None, rest: list | None = None) -> tuple[Path, list]:
    """The workspace a command was given, and its other positional arguments.

    With ``-w WS`` the first positional word is not the workspace but the first of ``rest`` (the
    photos of ``recognize -w WS a.jpg``). Neither given, or two different workspaces: one line, exit 2.
    """
    more = rest is not None
    rest = list(rest or [])
    if flag is None:
        if positional is None:
            stderr.print("[red]which workspace?[/] give it first (facelab COMMAND WS …) or as -w WS")
            raise typer.Exit(2)
        return Path(positional), rest
    if positional is not None:
        if not more and Path(positional) != Path(flag):
            stderr.print(f"[red]two workspaces given[/] ({positional} and -w {flag}): give one", highlight=False)
            raise typer.Exit(2)
        if more:
            rest.insert(0, positional)
    return Path(flag), rest


@contextmanager
def progress_bar(label: str, quiet: bool = False) -> Iterator[Advance]:
    """Yields ``advance(done, total, item)``; shows a Rich bar with ETA unless ``quiet``."""
    with progress_bars(label, quiet=quiet) as (advance,):
        yield advance


@contextmanager
def progress_bars(*labels: str, quiet: bool = False) -> Iterator[tuple[Advance, ...]]:
    """One ``advance(done, total, item)`` per label, shown as bars of one display (a terminal allows
    only one live display at a time). When stderr is not a terminal (piped, a log file, CI), a
    plain line per step instead — at most one every :data:`PIPED_EVERY_SECONDS`, plus the last —
    with elapsed and remaining time, so a long run never looks stuck."""
    if quiet:
        yield tuple((lambda done, total, item=None: None) for _ in labels)
        return
    if not stderr.is_terminal:
        yield tuple(_piped_progress(label) for label in labels)
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

        def bar(label: str) -> Advance:
            task = None

            def advance(done: int, total: int, item: object = None) -> None:
                nonlocal task
                if task is None:  # a bar appears when its step starts, not before
                    task = progress.add_task(label, total=None, item="")
                name = Path(str(item)).name if item is not None else ""
                progress.update(task, completed=done, total=total, item=name[:40])

            return advance

        yield tuple(bar(label) for label in labels)


PIPED_EVERY_SECONDS = 10.0


def _piped_progress(label: str) -> Advance:
    import time

    started = time.monotonic()
    last = -PIPED_EVERY_SECONDS

    def advance(done: int, total: int, item: object = None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PIPED_EVERY_SECONDS and done < total:
            return
        last = now
        elapsed = now - started
        left = f", ~{_clock(elapsed * (total - done) / done)} left" if 0 < done < total else ""
        what = f" ({Path(str(item)).name[:40]})" if item is not None else ""
        stderr.print(f"{label}: {done}/{total}{what}, {_clock(elapsed)} elapsed{left}", highlight=False)

    return advance


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


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
