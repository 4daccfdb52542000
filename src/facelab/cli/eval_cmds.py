"""Commands that judge and choose models: evaluate, compare, auto, and the whole-pipeline run."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from facelab.cli.app import app
from facelab.cli.common import (
    SweepMaxOpt,
    SweepStepOpt,
    WaitOpt,
    WorkspaceFlag,
    detector_or_exit,
    open_workspace,
    print_unknown_expectation,
    progress_bar,
    workspace_from,
)
from facelab.workflow import DEFAULTS

console = Console()


class SplitName(StrEnum):
    TEST = "test"
    VAL = "val"
    TRAIN = "train"


err = Console(stderr=True)


def _round(value: float | None) -> str:
    """A threshold as people read it (0.5, not 0.5048296127958938)."""
    return "none" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"


def print_metrics(metrics: dict, run_dir: Path) -> None:
    console.print(
        f"[bold]{metrics['run']}[/] on {metrics['split']}: face accuracy [bold]{_pct(metrics['accuracy'])}[/] "
        f"({metrics['n_images']} faces); photo accuracy [bold]{_pct(metrics.get('photo_accuracy'))}[/] "
        f"({metrics.get('n_photos', 0)} photos, {metrics.get('photos_no_face', 0)} with no face found); "
        f"person named on some face: {_pct(metrics.get('any_face_recall'))}"
    )
    if "fpir" in metrics:
        fpir = metrics.get("fpir")
        strangers = "not measured (evaluate --strangers DIR)" if fpir is None or fpir != fpir else _pct(fpir)
        console.print(
            f"unknown threshold {_round(metrics.get('threshold'))}: strangers given a name (FPIR) {strangers}; "
            f"your people's test faces missed or misnamed (FNIR) {_pct(metrics.get('fnir'))}",
            highlight=False,
        )
    if metrics.get("n_bystanders"):
        named = metrics.get("bystanders_named", metrics.get("bystanders_named_closed_set"))
        console.print(
            f"other people in the photos (bystanders) given one of your names: {_pct(named)} "
            f"of {metrics['n_bystanders']}" + ("" if "bystanders_named" in metrics else " (no unknown threshold)")
        )
    per_class = metrics.get("per_class") or {}
    if per_class:
        weakest = min(per_class.items(), key=lambda kv: kv[1]["f1"])
        console.print(f"weakest person: {weakest[0]} (F1 {weakest[1]['f1']:.2f})")
    console.print(f"report: {run_dir / 'report.md'}  pictures: confusion_matrix.png, errors.png, samples.png")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (WS/runs/NAME).")],
    split: Annotated[SplitName, typer.Option(help="Split to evaluate: test (default), val or train.")] = (
        SplitName.TEST
    ),
    strangers: Annotated[
        Path | None,
        typer.Option(help="Folder of photos of people NOT in the data set: measures how often they get a name."),
    ] = None,
) -> None:
    """Accuracy (face and photo level), per-person scores, confusion matrix, error gallery, open-set rates.

    Writes metrics.json, confusion_matrix.png, errors.png and report.md into the run folder.
    """
    from facelab.evaluate import evaluate_run

    if not (run / "summary.json").exists():
        err.print(f"[red]{run} is not a run folder[/] (no summary.json); runs live in WS/runs/")
        raise typer.Exit(2)
    metrics = evaluate_run(run, split=split.value, strangers=strangers)
    print_metrics(metrics, run)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to compare.")],
    out: Annotated[Path, typer.Option(help="Table file (.md; .csv and .png are written beside it).")] = Path(
        "comparison.md"
    ),
) -> None:
    """One row per run (both tracks): backbone, strategy, augment, weights, size, time, accuracies.

    Folders that are not finished runs (a training stopped before its first checkpoint, a stray
    file matched by WS/runs/*) are skipped with a note; only no run at all is an error.
    """
    from facelab.compare import compare_runs, finished_runs, to_markdown

    usable, notes = finished_runs(runs)
    for note in notes:
        err.print(f"[yellow]skipped[/] {note}", highlight=False)
    if not usable:
        err.print("[red]no finished run folder to compare[/] (runs live in WS/runs/<name>/ with a summary.json)")
        raise typer.Exit(2)
    rows = compare_runs(usable, out)
    console.print(to_markdown(rows))
    console.print(f"written: {out.with_suffix('.md')}, {out.with_suffix('.csv')}, {out.with_suffix('.png')}")


@app.command()
def auto(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder (after build and split).")] = None,
    budget: Annotated[float, typer.Option(help="Minutes to spend training candidates.")] = 10.0,
    strangers: Annotated[
        Path | None, typer.Option(help="Photos of people not in the data set, to calibrate 'unknown'.")
    ] = None,
    target_fpir: Annotated[
        float, typer.Option(help="Share of strangers allowed a name when calibrating 'unknown' (0.01: 1 in 100).")
    ] = DEFAULTS.target_fpir,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Train candidates cheapest first, pick the best on validation, evaluate only the winner on test.

    The winner becomes the current model only if it is no worse than the current one on the same
    validation faces (`facelab use WS RUN` chooses by hand)."""
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab import workflow

    with open_workspace(workspace, write=True, wait=wait) as ws:
        if not load_items_any(ws):
            err.print(
                f"[red]{ws.root} has no training faces yet[/]: build it (facelab build PHOTOS -w {workspace}), "
                f"then run facelab split {workspace}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        strangers = _announce_strangers(strangers, workflow.strangers_folder(ws, strangers))
        outcome, deployment = _auto_with_progress(ws, budget, strangers, target_fpir)
        _print_auto(outcome, deployment, ws.root)


def _auto_with_progress(ws, budget: float, strangers: Path | None, target_fpir: float):
    """:func:`facelab.workflow.auto` with a line per candidate and per phase."""
    from facelab import workflow

    with progress_bar("Candidates") as advance:
        return workflow.auto(
            ws,
            budget_minutes=budget,
            strangers=strangers,
            target_fpir=target_fpir,
            progress=advance,
            on_phase=lambda text: err.print(f"{text}…", highlight=False),
        )


def load_items_any(ws) -> bool:
    """Whether the workspace has training faces (built and split)."""
    from facelab.items import FaceSelection, load_items

    return bool(load_items(ws, "train", FaceSelection.RESOLVED))


@app.command()
def use(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder.")] = None,
    run: Annotated[str | None, typer.Argument(help="A finished run: its name (see WS/runs) or its folder.")] = None,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Make a finished run the current model, the one `facelab recognize WS` and the web app use.

    The run is deployed refit on every labelled face (train + val + test; a CNN is trained again), in RUN/deployed;
    its test figures stay those of RUN. A run that cannot answer unknown is accepted with a warning.
    """
    workspace, given = workspace_from(workspace, workspace_flag, [run] if run else [])
    if len(given) != 1:
        err.print("[red]which run?[/] facelab use WS RUN (a name under WS/runs or a run folder)")
        raise typer.Exit(2)
    run = str(given[0])
    from facelab import workflow

    with open_workspace(workspace, write=True, wait=wait) as ws:
        target = Path(run)
        if not target.is_dir():
            target = ws.runs_dir / run
        try:
            deployment = workflow.deploy(
                ws, target, force=True, on_phase=lambda text: err.print(f"{text}…", highlight=False)
            )
        except (FileNotFoundError, ValueError) as exc:
            names = ", ".join(sorted(p.name for p in ws.runs_dir.glob("*") if (p / "summary.json").is_file()))
            err.print(f"[red]{exc}[/]" + (f" — finished runs: {names}" if names else ""), highlight=False)
            raise typer.Exit(2) from exc
        for line in workflow.describe(deployment):
            err.print(line, highlight=False, soft_wrap=True)
        if deployment.candidate is not None and not deployment.candidate.open_set:
            err.print(
                "[yellow]warning: this model cannot answer unknown — every stranger will be given a name[/]",
                highlight=False,
            )
        err.print(f"next: facelab recognize {workspace} PHOTO_OR_FOLDER", highlight=False, soft_wrap=True)
    console.print(deployment.current or "", highlight=False, soft_wrap=True)


def _announce_strangers(given: Path | None, used: Path | None) -> Path | None:
    if given is None and used is not None:
        err.print(f"calibrating 'unknown' with {used} (the strangers folder this workspace remembers)")
    return used


def _print_auto(outcome, deployment, workspace: Path, hint: bool = True) -> None:
    prefix = outcome.comparison.name.removesuffix("comparison.md")  # auto-<stamp>-, shared by the runs
    table = Table(title=f"Candidates {prefix}*, best first by {outcome.ranked_by}")
    for column in ("run", "val accuracy", "val FNIR", "seconds", "params"):
        table.add_column(column, overflow="fold")
    for row in outcome.rows:
        table.add_row(
            row["run"].removeprefix(prefix),
            _pct(row.get("val_accuracy")),
            _pct(row.get("val_fnir")),
            f"{row.get('train_seconds') or 0:.0f}",
            f"{row.get('params_total') or 0:,}",
        )
    console.print(table)
    for note in outcome.skipped:
        err.print(f"[yellow]skipped[/] {note}")
    from facelab.workflow import describe

    console.print(f"winner: [bold]{outcome.winner.name}[/]")
    for line in describe(deployment):
        console.print(line, highlight=False, soft_wrap=True)
    print_unknown_expectation(outcome.winner)
    print_metrics(outcome.metrics, outcome.winner)
    console.print(f"comparison: {outcome.comparison}")
    if hint:
        _next_after_auto(outcome, deployment, workspace)


def _next_after_auto(outcome, deployment, workspace: Path) -> None:
    if deployment.current is not None:
        console.print(f"next: facelab recognize {workspace} PHOTO_OR_FOLDER", highlight=False, soft_wrap=True)
    else:
        console.print(f"next: facelab use {workspace} {outcome.winner.name}", highlight=False, soft_wrap=True)


@app.command(name="run")
def run_pipeline(
    photos: Annotated[Path, typer.Argument(help="Folder with one sub-folder of photos per person.")],
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Workspace folder.")] = Path("workspace"),
    budget: Annotated[float, typer.Option(help="Minutes for training candidates.")] = 10.0,
    strangers: Annotated[
        Path | None,
        typer.Option(
            help="Photos of people NOT in the data set, to calibrate 'unknown'. Without it facelab calibrates "
            "on strangers it ships with, on your people left out in turn, and on the bystanders in your photos."
        ),
    ] = None,
    detector: Annotated[str | None, typer.Option(help="Face detector (see `facelab detectors`).")] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    target_fpir: Annotated[
        float, typer.Option(help="Share of strangers allowed a name when calibrating 'unknown' (0.01: 1 in 100).")
    ] = DEFAULTS.target_fpir,
    sweep_step: SweepStepOpt = None,
    sweep_max: SweepMaxOpt = None,
    wait: WaitOpt = False,
) -> None:
    """The whole pipeline with good defaults: build → split → auto → evaluate, then a summary."""
    from facelab import workflow
    from facelab.cli.data_cmds import ingest_or_exit, print_build_summary, print_split_summary, scan_or_exit

    detector = detector_or_exit(detector, sweep_step, sweep_max)
    scan = scan_or_exit(photos, workspace)
    with open_workspace(workspace, create=True, write=True, wait=wait) as ws:
        console.rule("1/4 build: find and crop faces")
        built = ingest_or_exit(ws, photos, detector=detector, scan=None if wait else scan).build
        if built.readable == 0:
            err.print(f"[red]No readable photos under {photos}[/] (expected {photos}/<person>/<photo>.jpg)")
            raise typer.Exit(1)
        print_build_summary(built, ws, photos)
        console.rule("2/4 split: train / val / test by photo")
        print_split_summary(workflow.split(ws, seed=seed))
        console.rule("3/4 auto: train candidates, pick the best on validation")
        strangers = _announce_strangers(strangers, workflow.strangers_folder(ws, strangers))
        outcome, deployment = _auto_with_progress(ws, budget, strangers, target_fpir)
        console.rule("4/4 result")
        _print_auto(outcome, deployment, ws.root, hint=False)
        console.print(
            f"{len(built.no_face)} photo(s) with no face found: {ws.reports_dir / 'no_face.csv'}; "
            f"faces and their roles: {ws.reports_dir / 'faces.csv'}"
        )
        _next_after_auto(outcome, deployment, ws.root)


@app.command()
def study(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder (after build and split).")] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="A method to study (repeat for more): an embedding head (prototype, knn, linear) or a CNN "
            "backbone trained by feature extraction (e.g. mobilenet_v2). Default: prototype and mobilenet_v2."
        ),
    ] = None,
    shots: Annotated[
        list[int] | None, typer.Option(help="Training photos per person to try (repeat); 'all' is always added.")
    ] = None,
    offline_aug: Annotated[
        list[int] | None,
        typer.Option("--offline-aug", help="CNN methods: offline augmented copies ×N to try (repeat; default 0)."),
    ] = None,
    draws: Annotated[int, typer.Option(help="Random draws of the training photos per count (steadier means).")] = 1,
    strangers: Annotated[
        Path | None, typer.Option(help="Photos of people not in the data set: adds how many get a name (FPIR).")
    ] = None,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """The seeds' data study: accuracy, FNIR and training time against photos per person (and
    offline ×N), each count trained in a throw-away copy. Writes WS/reports/study.csv and study.png."""
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.study import DEFAULT_METHODS, DEFAULT_SHOTS, StudyMethod, mean_rows, run_study

    try:
        methods = [StudyMethod.parse(name) for name in (method or DEFAULT_METHODS)]
    except ValueError as exc:
        err.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    if draws < 1 or any(n < 1 for n in shots or []) or any(n < 0 for n in offline_aug or []):
        err.print("[red]--draws and --shots must be at least 1, --offline-aug at least 0[/]")
        raise typer.Exit(2)
    counts: list[int | None] = [*sorted(set(shots or DEFAULT_SHOTS)), None]
    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            with progress_bar("Study runs") as advance:
                rows = run_study(ws, methods, counts, sorted(set(offline_aug or [0])), draws, strangers, advance)
        except ValueError as exc:
            err.print(f"[red]{exc}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
        reports = ws.reports_dir
    table = Table(title="Study (mean over draws)")
    for column in ("method", "photos/person", "offline ×N", "test accuracy", "FNIR", "train s"):
        table.add_column(column)
    for row in mean_rows(rows):
        table.add_row(
            row["method"],
            str(row["photos_per_person"]),
            str(row["offline_aug"]),
            _pct(row["accuracy"]),
            _pct(row["fnir"]),
            f"{row['train_seconds']:.1f}",
        )
    console.print(table)
    console.print(f"written: {reports / 'study.csv'}, {reports / 'study.png'}", highlight=False, soft_wrap=True)
