"""Automatic model choice: train candidates cheapest first, keep the best on validation.

The seed's future work, "automatically build and select the best model". Candidates come from a
registry ordered by cost (embedding heads take seconds, cached feature extraction tens of seconds,
fine-tuning minutes). Each runs only if the time left in the budget covers its estimate. Every
candidate's unknown threshold is calibrated; the winner has the lowest validation FNIR at it (known
faces rejected or misnamed) when there were enough strangers or bystanders to calibrate on, else the
best validation accuracy (see :func:`_rank_key`). Only the winner is evaluated on the test split, so the
test figure stays an honest estimate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.imageio import write_text_atomic
from facelab.items import FaceSelection, load_items
from facelab.openset import Calibration, strangers_needed
from facelab.runs import Model, load_model, read_summary
from facelab.store import Workspace

Progress = Callable[[int, int, object], None]


@dataclass(frozen=True)
class Candidate:
    """One model recipe. ``seconds_per_face`` estimates its cost from the number of training faces."""

    name: str
    seconds_per_face: float
    fixed_seconds: float
    train: Callable[[Workspace, str], Path]
    needs: str = ""  # what must be installed, for the skip message

    def estimate(self, n_faces: int) -> float:
        return self.fixed_seconds + self.seconds_per_face * n_faces


def _embedding(head: str) -> Callable[[Workspace, str], Path]:
    def train(ws: Workspace, name: str) -> Path:
        from facelab.embed_track import train_embedding_run

        return train_embedding_run(ws, head=head, name=name)

    return train


def _transfer(backbone: str, strategy: str, augment: str) -> Callable[[Workspace, str], Path]:
    def train(ws: Workspace, name: str) -> Path:
        from facelab.config import TrainConfig
        from facelab.transfer import NullReporter, train_workspace

        config = TrainConfig(backbone=backbone, strategy=strategy, augment=augment)
        return train_workspace(ws, config, name=name, reporter=NullReporter()).run_dir

    return train


# Cheapest first. Estimates were measured on 2 CPU cores (docs/benchmarks.md) and are generous.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("emb-dlib-prototype", 0.0, 3, _embedding("prototype"), "dlib-bin"),
    Candidate("emb-dlib-knn", 0.0, 3, _embedding("knn"), "dlib-bin"),
    Candidate("emb-dlib-linear", 0.002, 5, _embedding("linear"), "dlib-bin"),
    Candidate(
        "mobilenet_v2-feature-extract-rotation",
        0.12,
        15,
        _transfer("mobilenet_v2", "feature-extract", "rotation"),
    ),
    Candidate(
        "efficientnet_lite0-feature-extract-rotation",
        0.15,
        15,
        _transfer("efficientnet_lite0", "feature-extract", "rotation"),
    ),
    Candidate("mobilenet_v2-two-stage-rotation", 1.6, 30, _transfer("mobilenet_v2", "two-stage", "rotation")),
    # The metric stage: warm-up on cached features, then every layer for up to 12 epochs on P×K
    # batches (bystanders included), then its own calibration. Measured 1.8 s per face for 8 epochs
    # on a busy 2-core machine (docs/benchmarks_metric.md), where it left far more known faces
    # unnamed at FPIR 1% than dlib: it comes last, and wins only where validation says so.
    Candidate("mobilenet_v2-metric-rotation", 2.5, 40, _transfer("mobilenet_v2", "metric", "rotation")),
)


@dataclass
class AutoOutcome:
    winner: Path
    rows: list[dict]
    metrics: dict
    comparison: Path
    skipped: list[str] = field(default_factory=list)
    ranked_by: str = ""  # what decided the order, in words


def calibrate_run(
    ws: Workspace,
    run_dir: Path,
    strangers: Path | None = None,
    target_fpir: float = 0.01,
    bystanders: bool | None = None,
) -> dict:
    """Set a run's unknown threshold from validation faces and impostor evidence; writes ``openset.json``.

    Embedding runs: the threshold for the gallery as it is now (trained + enrolled people) from the
    calibration half of ``strangers`` when given, else from the reference strangers shipped with
    facelab, the user's people left out in turn and — when ``bystanders`` (default: only without a
    strangers folder) — the bystanders of the user's photos who match none of the people
    (:func:`facelab.embed_track.calibrate_vectors`). CNN runs: the softmax threshold from strangers
    and bystanders as far as there are any, and the embedding gate anew (:mod:`facelab.gate`).
    Metric runs: the embedding track's evidence scored by the run's own network
    (:mod:`facelab.metric_calibrate`).
    """
    if bystanders is None:
        bystanders = strangers is None
    track = read_summary(run_dir).get("track", "transfer")
    return _CALIBRATORS.get(track, _calibrate_cnn)(ws, Path(run_dir), strangers, target_fpir, bystanders)


def _validation_items(ws: Workspace, run_dir: Path) -> list:
    faces = read_summary(run_dir).get("faces", FaceSelection.RESOLVED)
    return load_items(ws, "val", faces) or load_items(ws, "train", FaceSelection.RESOLVED)


def _write_openset(run_dir: Path, calibration: Calibration) -> dict:
    payload = calibration.to_json()
    write_text_atomic(json.dumps(payload, indent=2) + "\n", run_dir / "openset.json")
    return payload


def _calibrate_embedding(
    ws: Workspace, run_dir: Path, strangers: Path | None, target_fpir: float, bystanders: bool
) -> dict:
    from facelab.embed_track import EmbeddingModel, bystander_vectors

    model = load_model(run_dir)
    assert isinstance(model, EmbeddingModel)
    calibration = model.calibrate(
        _validation_items(ws, run_dir),
        bystanders=bystander_vectors(ws, model.embedder) if bystanders else None,
        strangers=strangers,
        target_fpir=target_fpir,
    )
    return _write_openset(run_dir, calibration)


def _calibrate_cnn(ws: Workspace, run_dir: Path, strangers: Path | None, target_fpir: float, bystanders: bool) -> dict:
    from facelab.transfer import write_gate

    model = load_model(run_dir)
    calibration = _calibrate_scores(ws, model, _validation_items(ws, run_dir), strangers, target_fpir, bystanders)
    write_gate(ws, run_dir, strangers)
    return _write_openset(run_dir, calibration)


def _calibrate_metric(
    ws: Workspace, run_dir: Path, strangers: Path | None, target_fpir: float, bystanders: bool
) -> dict:
    from facelab.metric_calibrate import calibrate_metric_run

    return calibrate_metric_run(ws, run_dir, strangers=strangers, target_fpir=target_fpir, bystanders=bystanders)


# How each track's unknown threshold is calibrated; tracks not named here are CNN classifiers.
_CALIBRATORS: dict[str, Callable[[Workspace, Path, Path | None, float, bool], dict]] = {
    "embedding": _calibrate_embedding,
    "metric": _calibrate_metric,
}


def _calibrate_scores(
    ws: Workspace, model: Model, val: list, strangers: Path | None, target_fpir: float, bystanders: bool
) -> Calibration:
    """A threshold on the model's own scores (a CNN's softmax) from the strangers folder and bystanders."""
    from facelab.openset import calibrate, named_right, open_scores, stranger_scores, top_two

    scores = model.predict_items(val)
    index, best, margin = top_two(scores, model.classes)
    correct = named_right(index, model.classes, [item.person for item in val])
    negatives, sources = [], []
    if strangers is not None:
        negatives.append(stranger_scores(model, strangers, part="calibration"))
        sources.append(f"{strangers} (calibration half)")
    if bystanders:
        from facelab.identity import stranger_bystanders

        usable = stranger_bystanders(ws)
        others = [
            item
            for item in load_items(ws, None, FaceSelection.ALL)
            if item.face_id in usable and item.split in ("train", "val")
        ]
        if others:
            negatives.append(open_scores(model.predict_items(others), model.classes))
            sources.append(f"{len(others)} bystander faces of the user's photos")
    impostor = np.concatenate(negatives) if negatives else np.zeros(0)
    return calibrate(
        impostor,
        best,
        correct,
        target_fpir,
        score_kind=model.score_kind,
        stranger_source="; ".join(sources),
        margins=margin,
    )


STRANGERS_SETTING = "strangers"
# Seconds kept in auto's budget for calibrating a candidate (until one has been measured) and for
# testing the winner at the end.
CALIBRATION_RESERVE_S = 10.0
TEST_RESERVE_S = 15.0


def strangers_folder(ws: Workspace, given: Path | None = None) -> Path | None:
    """The strangers folder to calibrate "unknown" with: ``given`` (then remembered in the workspace,
    so later runs and the web app's training use it too), else the one remembered
    earlier if it still exists, else None."""
    if given is not None:
        ws.set_setting(STRANGERS_SETTING, str(Path(given).resolve()))
        return Path(given)
    remembered = ws.setting(STRANGERS_SETTING)
    return Path(remembered) if remembered and Path(remembered).is_dir() else None


def _rank_key(row: dict) -> tuple:
    """Best first.

    With enough strangers (or bystanders) to calibrate on (99 for FPIR 1%: ``trusted``), the first
    criterion is the validation FNIR at the calibrated threshold — the share of known faces *not*
    given their own name, rejected or misnamed — which judges naming and "unknown" together, then
    the validation accuracy. With fewer, thresholds rest on a handful of faces and their FNIRs are
    not comparable (a head whose threshold sits just above three bystanders looks perfect): the
    validation accuracy decides alone. Ties go to the earlier candidate in the registry
    (``order``): the cheaper, and the prototype head first, the one measured best at "unknown"
    on the shared photo sets.
    """
    accuracy = row.get("val_accuracy")
    error = round(1.0 - accuracy if accuracy is not None else 1.0, 9)
    fnir = row.get("val_fnir")
    fnir = round(1.0 if fnir is None else fnir, 9)
    order = row.get("order", 0)
    return (fnir, error, order) if row.get("trusted") else (error, order)


def auto_select(
    ws: Workspace,
    *,
    budget_minutes: float = 10.0,
    strangers: Path | None = None,
    target_fpir: float = 0.01,
    candidates: tuple[Candidate, ...] = CANDIDATES,
    progress: Progress | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> AutoOutcome:
    """Train what fits in the budget, calibrate every candidate, pick the winner and test it.

    It does not deploy the winner: :func:`facelab.workflow.auto` does, when it is no worse than
    the current model."""
    from facelab.compare import compare_runs, run_row
    from facelab.evaluate import evaluate_run

    n_train = len(load_items(ws, "train", FaceSelection.RESOLVED))
    if n_train == 0:
        raise ValueError(f"{ws.root}: no training faces; run `facelab build` and `facelab split` first")
    # The budget is a real bound on the whole step: a candidate starts only if its training, its
    # calibration (the slowest seen so far, at least CALIBRATION_RESERVE_S) and testing the winner
    # (TEST_RESERVE_S) fit in what is left. Each candidate is calibrated right after training, so
    # the clock sees what it really cost.
    deadline = time.monotonic() + budget_minutes * 60
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: list[Path] = []
    skipped: list[str] = []
    opensets: dict[str, dict] = {}
    calibration_reserve = CALIBRATION_RESERVE_S
    for number, candidate in enumerate(candidates, start=1):
        left = deadline - time.monotonic()
        estimate = candidate.estimate(n_train) + calibration_reserve + TEST_RESERVE_S
        if runs and estimate > left:
            skipped.append(
                f"{candidate.name}: needs ~{estimate:.0f} s with calibration and testing, "
                f"{max(left, 0):.0f} s of budget left"
            )
            continue
        try:
            run = candidate.train(ws, f"auto-{stamp}-{candidate.name}")
        except ImportError as exc:
            skipped.append(f"{candidate.name}: not installed ({exc}); pip install {candidate.needs}")
        except (RuntimeError, ValueError) as exc:  # weights or a model missing; too few people for it
            skipped.append(f"{candidate.name}: {exc}")
        else:
            # Its unknown threshold (validation faces + impostor evidence; the test split stays
            # untouched), so the choice can weigh "unknown" too.
            if on_phase is not None:
                on_phase(f"calibrating 'unknown' for {candidate.name}")
            started = time.monotonic()
            opensets[run.name] = calibrate_run(ws, run, strangers, target_fpir)
            calibration_reserve = max(calibration_reserve, time.monotonic() - started)
            runs.append(run)
        if progress:
            progress(number, len(candidates), candidate.name)
    if not runs:
        raise RuntimeError("no candidate could be trained: " + "; ".join(skipped))
    # Enough strangers for the target FPIR (99 for 1%) for every candidate, or FNIR does not rank.
    needed = strangers_needed(target_fpir)
    trusted = all(
        (payload.get("n_strangers") or 0) >= needed and payload.get("threshold") is not None
        for payload in opensets.values()
    )
    ranked = sorted(
        (run_row(run) | {"order": order, "trusted": trusted} for order, run in enumerate(runs)),
        key=_rank_key,
    )
    winner = ws.runs_dir / ranked[0]["run"]
    if on_phase is not None:
        on_phase(f"testing the winner, {winner.name}")
    metrics = evaluate_run(winner, split="test", strangers=strangers)
    # Deploying the winner is facelab.workflow.deploy's decision (no worse than the current model).
    comparison = ws.runs_dir / f"auto-{stamp}-comparison.md"
    rows = compare_runs([ws.runs_dir / row["run"] for row in ranked], comparison, sort=False)
    ranked_by = (
        "validation FNIR at each one's unknown threshold (known faces rejected or misnamed)"
        if trusted
        else f"validation accuracy (fewer than {needed} strangers to calibrate on: FNIR would not be comparable)"
    )
    return AutoOutcome(
        winner=winner, rows=rows, metrics=metrics, comparison=comparison, skipped=skipped, ranked_by=ranked_by
    )


def current_model(ws: Workspace) -> Model:
    """The workspace's current model (see :func:`facelab.workflow.deploy`), loaded."""
    from facelab.workflow import current_run, deployed_model_dir

    run_dir = current_run(ws)
    if run_dir is None:
        raise FileNotFoundError(
            f"{ws.root} has no current model yet: train one (facelab auto {ws.root}) "
            f"or choose a finished run (facelab use {ws.root} RUN)"
        )
    model = load_model(deployed_model_dir(run_dir))
    # A threshold the user chose for this run (the web app's slider) holds for every front end.
    from facelab.workflow import chosen_threshold

    chosen = chosen_threshold(ws, run_dir.name)
    if chosen is not None:
        model.calibrated_threshold = model.threshold  # type: ignore[attr-defined]
        model.threshold = chosen
    return model
