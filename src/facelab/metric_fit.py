"""The metric stage (``facelab train WS --strategy metric``): a face embedding of the user's own.

A CNN classifier names every face it sees; the transfer track borrows dlib's embedding to say
"unknown" (:mod:`facelab.gate`). This stage instead trains the CNN itself to be a face embedding,
so its own similarities can be thresholded:

1. **warm-up** (``head_epochs``, at ``lr``): the backbone is frozen, its features are computed once
   (plus ``aug_passes`` augmented copies), and a projection to ``embed_dim`` plus one centre per
   person learn to classify them — normalised softmax, no margin yet. It gives the margin stage a
   sensible start instead of random centres sending large gradients into the pretrained layers.
2. **margin** (``epochs``, at ``lr × unfreeze_lr_factor``, early stop after ``patience``): every
   layer trains with the CosFace loss (:mod:`facelab.metric_loss`) on balanced P people × K faces
   batches (:mod:`facelab.metric_sampler`), plus bystanders — faces in the user's photos who are
   none of the people — pushed below the margin from *every* person's centre.
3. **head**: the kept epoch's embedding of every training face; a face's score for a person is
   its cosine to that person's mean embedding (``prototype``) or to their nearest faces
   (``knn``), as in the embedding track.

The epoch kept is the best on validation by ``monitor`` (accuracy of the nearest centre; loss is
the margin-free cross-entropy, comparable across both stages). The unknown threshold is calibrated
afterwards (:mod:`facelab.metric_calibrate`).

Run folder ``WS/runs/<name>/``: ``config.yaml``, ``metric.json`` (:class:`MetricParams`),
``classes.json``, ``preprocessing.json``, ``best.safetensors`` (backbone + projection),
``head.npz`` (classes, the training faces' embeddings ``x`` and labels ``y``, the learned
``centres``, the training bystanders' embeddings ``x_bystanders``), ``history.csv``, ``curves.png``,
``summary.json`` (track ``metric``; ``threshold`` once calibrated) and ``openset.json``. A metric
run cannot be resumed: train it again.
"""

from __future__ import annotations

import io
import json
import platform
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab import backbones as bb
from facelab.config import Strategy, TrainConfig
from facelab.imageio import write_bytes_atomic, write_text_atomic
from facelab.items import OTHERS, class_names_of
from facelab.metric_loss import NOBODY
from facelab.metric_net import HEAD_PARAMS, MetricParams
from facelab.metric_stage import MetricStage
from facelab.transfer_data import _check_files
from facelab.transfer_report import NullReporter, Reporter

if TYPE_CHECKING:
    from facelab.store import Workspace
    from facelab.transfer_fit import RunResult

TRACK = "metric"
HEAD_FILE = "head.npz"
# What loading a metric run needs besides its head and calibration (a deployed refit copies them).
RUN_FILES = (
    "summary.json",
    "config.yaml",
    "metric.json",
    "classes.json",
    "preprocessing.json",
    "best.safetensors",
    "history.csv",
)


# -- the run ------------------------------------------------------------------------------------


def fit_metric(
    config: TrainConfig,
    train: Sequence[tuple[Path | str, str]],
    val: Sequence[tuple[Path | str, str]],
    run_dir: Path | str,
    *,
    bystanders: Sequence[Path | str] = (),
    params: MetricParams | None = None,
    reporter: Reporter | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> RunResult:
    """Train the metric stage on ``train`` (crop path, person) pairs plus ``bystanders`` (crop paths
    of faces who are none of the people; pairs labelled :data:`facelab.items.OTHERS` in ``train``
    count as bystanders too), keep the epoch ``val`` chooses, write ``run_dir``.

    The run is not calibrated here (:func:`facelab.metric_calibrate.calibrate_metric_run` is).
    Raises :class:`facelab.weights.WeightsUnavailable` when pretrained weights cannot be had.
    """
    from facelab.metric_model import MetricModel
    from facelab.transfer_data import _labelled
    from facelab.transfer_fit import RunResult

    reporter = reporter or NullReporter()
    params = params or MetricParams()
    run_dir = Path(run_dir)
    cfg = config.resolved()
    if cfg.strategy is not Strategy.METRIC:
        raise ValueError(f"fit_metric trains the metric strategy, not {cfg.strategy.value}")
    spec = bb.get(cfg.backbone)
    train = _check_files(train, reporter)
    val = _check_files(val, reporter)
    others = [(p, OTHERS) for p in bystanders] + [(p, label) for p, label in train if label == OTHERS]
    others = _check_files(others, reporter)
    people = [(p, label) for p, label in train if label != OTHERS]
    classes = class_names_of(label for _, label in people)
    if len(classes) < 2:
        raise ValueError(f"the metric stage needs faces of at least 2 people in the train split, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    val_l = _labelled(val, index)
    if not val_l:
        raise ValueError("no validation faces of the trained people; run facelab split to make a val split")
    if (run_dir / "summary.json").exists() or (run_dir / "best.safetensors").exists():
        raise FileExistsError(f"{run_dir} already holds a run; choose another --name (metric runs cannot resume)")
    samples = _labelled(people, index) + [(Path(p), NOBODY) for p, _ in others]

    stage = MetricStage(cfg, params, samples, val_l, classes, run_dir, reporter)
    weights = bb.resolve_weights(spec, cfg.weights)
    stage.build(weights)
    source = weights.label if weights.pretrained else "none (random initialisation)"
    reporter.message(
        f"Training {cfg.backbone} (metric: CosFace m={params.margin}, {len(others)} bystanders as negatives) "
        f"on {stage.device_text}; weights: {source}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    params.save(run_dir)
    write_text_atomic(json.dumps(classes, indent=2) + "\n", run_dir / "classes.json")
    write_text_atomic(stage.pre.to_json(), run_dir / "preprocessing.json")
    try:
        stage.warm_up()
        stage.margin_stage()
    finally:
        reporter.done()
    # The head: every training face's embedding by the kept network (the bystanders' too, as
    # impostor evidence for calibration).
    x_all = stage.keep_best()
    train_seconds = stage.elapsed()
    cpu_seconds = time.process_time() - stage.cpu_started
    known = np.array([y != NOBODY for _, y in samples], dtype=bool)
    x_train, x_bystanders = x_all[known], x_all[~known]
    y_train = np.array([y for _, y in samples if y != NOBODY], dtype=np.int64)
    x_val = stage.embed([p for p, _ in val_l])
    y_val = np.array([y for _, y in val_l], dtype=np.int64)
    write_head(run_dir, classes, x_train, y_train, stage.best_centres, x_bystanders)
    train_acc, val_acc = _head_accuracy(params, x_train, y_train, x_val, y_val, len(classes))

    if stage.history:
        from facelab import plots

        plots.training_curves(
            stage.history,
            run_dir / "curves.png",
            title=f"{cfg.backbone} · metric (CosFace m={params.margin}) · {cfg.augment.value} · weights {source}",
            best_epoch=stage.best["epoch"],
        )
    summary = _summary(stage, weights, train_seconds, cpu_seconds, train_acc, val_acc, len(others), extra_summary)
    write_text_atomic(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
    reporter.message(
        f"Validation accuracy {val_acc:.3f} (nearest person mean; best epoch {summary['best_epoch']} of "
        f"{summary['epochs_run']}); {train_seconds:.1f} s on {summary['device']}; run folder {run_dir}"
    )
    return RunResult(run_dir, summary, stage.history, MetricModel(run_dir))


def write_head(
    run_dir: Path,
    classes: list[str],
    x: np.ndarray,
    y: np.ndarray,
    centres: np.ndarray | None = None,
    bystanders: np.ndarray | None = None,
) -> None:
    """``head.npz``: class names, the faces' unit embeddings and labels (what the head is fit on), the
    learned centres and the training bystanders' embeddings (calibration evidence) when given."""
    buffer = io.BytesIO()
    arrays = {"classes": np.array(classes), "x": x.astype(np.float32), "y": y.astype(np.int64)}
    if centres is not None:
        arrays["centres"] = centres.astype(np.float32)
    if bystanders is not None:
        arrays["x_bystanders"] = bystanders.astype(np.float32)
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(buffer.getvalue(), Path(run_dir) / HEAD_FILE)


def _head_accuracy(
    params: MetricParams, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n: int
) -> tuple[float, float]:
    from facelab.embed_track import build_head

    head = build_head(params.head, HEAD_PARAMS)
    head.fit(x_train, y_train, n)

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(head.scores(x).argmax(1) == y)) if len(y) else float("nan")

    return accuracy(x_train, y_train), accuracy(x_val, y_val)


def _summary(
    stage: MetricStage,
    weights: bb.ResolvedWeights,
    train_seconds: float,
    cpu_seconds: float,
    train_acc: float,
    val_acc: float,
    n_bystanders: int,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    import torch

    from facelab.transfer_fit import _depth, _peak_rss_mb
    from facelab.transfer_network import _count

    cfg, params, best = stage.cfg, stage.params, stage.best
    row = next((r for r in stage.history if r["epoch"] == best["epoch"]), None)
    size = (stage.run_dir / "best.safetensors").stat().st_size + (stage.run_dir / HEAD_FILE).stat().st_size
    summary: dict[str, Any] = {
        "track": TRACK,
        "status": "finished",
        "backbone": cfg.backbone,
        "strategy": Strategy.METRIC.value,
        "augment": cfg.augment.value,
        "offline_aug": 0,
        "preset": cfg.preset.value,
        "weights": weights.label,
        "weights_id": weights.id,
        "params_total": _count(stage.net.parameters()),
        "depth": _depth(stage.net),
        "params_trainable": _count(stage.net.parameters()) + _count(stage.centres.parameters()),
        "size_bytes": size,
        "train_seconds": round(train_seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "feature_seconds": round(stage.feature_seconds, 3),
        "seconds_to_best": round(best["elapsed"], 3),
        "device": stage.device.type,
        "device_name": stage.device_text,
        "threads": torch.get_num_threads(),
        "best_epoch": best["epoch"],
        "best_phase": row["phase"] if row else None,
        "epochs_run": len(stage.history),
        "stopped_early": stage.stopped_early,
        # The head's figures (nearest person mean over the kept embedding): what the run answers.
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
        "val_loss": row["val_loss"] if row else None,
        "train_loss": row["train_loss"] if row else None,
        "faces": cfg.faces,
        "include_others": cfg.include_others,
        "crop_margin": cfg.crop_margin,
        "image_size": cfg.image_size,
        "classes": stage.classes,
        "trained_classes": stage.classes,
        "n_train": sum(y != NOBODY for _, y in stage.samples),
        "n_val": len(stage.val),
        "n_bystanders_train": n_bystanders,
        "n_others_train": n_bystanders,
        "head": params.head,
        "embed_dim": params.embed_dim,
        "margin": params.margin,
        "score_kind": "similarity",
        "threshold": None,  # set by calibration (openset.json)
        "peak_rss_mb": _peak_rss_mb(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    summary.update(extra or {})
    return summary


# -- from a workspace ---------------------------------------------------------------------------


def train_metric_workspace(
    ws: Workspace,
    config: TrainConfig,
    run_dir: Path,
    *,
    params: MetricParams | None = None,
    strangers: Path | None = None,
    target_fpir: float = 0.01,
    reporter: Reporter | None = None,
) -> RunResult:
    """The metric stage on a workspace's train split (its bystanders as negatives), validated on its
    val split, then calibrated (:func:`facelab.metric_calibrate.calibrate_metric_run`)."""
    from facelab.items import load_items
    from facelab.metric_calibrate import calibrate_metric_run

    reporter = reporter or NullReporter()
    train_items = load_items(ws, "train", config.faces, include_others=True)
    val_items = load_items(ws, "val", config.faces)
    people = [i for i in train_items if i.person != OTHERS]
    if not people:
        raise ValueError(f"{ws.root}: no {config.faces} faces in the train split; run facelab split {ws.root} first")
    result = fit_metric(
        config,
        [(i.crop_path, i.person) for i in people],
        [(i.crop_path, i.person) for i in val_items],
        run_dir,
        bystanders=[i.crop_path for i in train_items if i.person == OTHERS],
        params=params,
        reporter=reporter,
        extra_summary={"workspace": str(ws.root)},
    )
    reporter.message(f"{run_dir.name}: calibrating the unknown threshold")
    # As facelab.auto.calibrate_run: the bystanders are evidence when there is no strangers folder.
    calibration = calibrate_metric_run(
        ws, run_dir, strangers=strangers, target_fpir=target_fpir, bystanders=strangers is None
    )
    if calibration.get("expected"):
        reporter.message(f"{run_dir.name}: {calibration['expected']}")
    result.summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    result.model = result.model.__class__(run_dir)
    return result
