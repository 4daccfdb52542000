"""One transfer training run: :func:`fit` turns ``(crop path, person)`` lists into a run folder.

It checks the crops, settles the device and weights, trains (:mod:`facelab.transfer_loop`,
resuming from ``last.pt`` when asked) and writes ``summary.json``, ``history.csv`` and
``curves.png``; it returns a :class:`RunResult` with the trained model.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from facelab import backbones as bb
from facelab.config import Strategy, TrainConfig
from facelab.imageio import write_text_atomic
from facelab.items import class_names_of
from facelab.transfer_checkpoints import _State, _write_history
from facelab.transfer_data import _check_files, _labelled, _offline_augment
from facelab.transfer_loop import STRATEGIES, _Trainer
from facelab.transfer_model import TRACK, TransferModel
from facelab.transfer_network import _count, _head
from facelab.transfer_report import NullReporter, Reporter
from facelab.transforms import AUGMENTS


@dataclass
class RunResult:
    """What :func:`fit` returns: the folder, its summary, and the trained model (best weights)."""

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    model: Any  # TransferModel; MetricModel for the metric strategy


def default_run_name(cfg: TrainConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.backbone}-{cfg.strategy.value}-{cfg.augment.value}-{stamp}"


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def fit(
    config: TrainConfig,
    train: Sequence[tuple[Path | str, str]],
    val: Sequence[tuple[Path | str, str]],
    run_dir: Path | str,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    extra_summary: dict[str, Any] | None = None,
) -> RunResult:
    """Train on ``train`` (crop path, person) pairs, pick the epoch by ``val``, write ``run_dir``.

    Classes are the sorted people of ``train``; validation faces of anybody else are left out.
    ``resume`` continues the run in ``run_dir`` from its ``last.pt`` (its own config.yaml is
    used; pass it in as ``config``, with ``epochs`` raised to train longer).
    Raises :class:`facelab.weights.WeightsUnavailable` when pretrained weights cannot be had.
    The ``metric`` strategy is :func:`facelab.metric_fit.fit_metric` (no bystanders, no resume).
    """
    import torch

    if config.strategy is Strategy.METRIC:
        if resume:
            raise ValueError("metric runs cannot be resumed: train again")
        from facelab.metric_fit import fit_metric

        return fit_metric(config, train, val, run_dir, reporter=reporter, extra_summary=extra_summary)
    reporter = reporter or NullReporter()
    run_dir = Path(run_dir)
    cfg = config.resolved()
    spec = bb.get(cfg.backbone)  # unknown names fail before any work
    train = _check_files(train, reporter)
    val = _check_files(val, reporter)
    classes = class_names_of(label for _, label in train)
    if len(classes) < 2:
        raise ValueError(f"training needs faces of at least 2 people in the train split, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    dropped = sorted({label for _, label in val if label not in index})
    if dropped:
        reporter.message(f"[yellow]validation faces of {', '.join(dropped)} left out: nobody in train[/]")
    val_l = _labelled(val, index)
    if not val_l:
        raise ValueError("no validation faces of the trained people; run facelab split to make a val split")

    checkpoint = None
    if resume:
        last = run_dir / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no last.pt)")
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        if json.loads((run_dir / "classes.json").read_text()) != classes:
            raise ValueError(f"{run_dir}: the split's people changed since this run started; start a new run")
    elif (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume or choose another --name")

    # The device and the weights are settled before anything is written: a run that cannot
    # start leaves no folder behind.
    trainer = _Trainer(cfg, _labelled(train, index), val_l, classes, run_dir, reporter)
    reporter.message(
        f"Training {cfg.backbone} ({cfg.strategy.value}, augment {cfg.augment.value}) on {trainer.device_text}"
    )
    if checkpoint is not None:
        trainer.state = _State(**checkpoint["state"])
        weights = bb.NO_WEIGHTS  # the checkpoint holds every weight
        trainer.build(weights, checkpoint)
        if checkpoint.get("scaler"):
            trainer.scaler.load_state_dict(checkpoint["scaler"])
        optimizer_state = checkpoint.get("optimizer")
        trainer.state.history = trainer.state.history[: trainer.state.epoch]
        reporter.message(f"Resuming {run_dir.name} after epoch {trainer.state.epoch}")
    else:
        weights = bb.resolve_weights(spec, cfg.weights)
        trainer.state.weights_label, trainer.state.weights_id = weights.label, weights.id
        trainer.build(weights, None)
        optimizer_state = None
        source = weights.label if weights.pretrained else "none (random initialisation)"
        reporter.message(f"Weights: {source}{f' [{weights.id}]' if weights.id else ''}")
        run_dir.mkdir(parents=True, exist_ok=True)
    assert trainer.pre is not None
    if cfg.offline_aug > 0:
        if not AUGMENTS[cfg.augment].is_random:
            reporter.message(
                f"[yellow]--offline-aug with augment {cfg.augment.value}: copies would be identical; skipped[/]"
            )
        else:
            copies = _offline_augment(list(train), cfg, run_dir / "offline_aug", reporter)
            trainer.train += _labelled(copies, index)
    # Written before training so a run folder always says what it is, even if interrupted.
    cfg.save(run_dir / "config.yaml")
    write_text_atomic(json.dumps(classes, indent=2) + "\n", run_dir / "classes.json")
    write_text_atomic(trainer.pre.to_json(), run_dir / "preprocessing.json")

    session_start = time.perf_counter()
    status = "finished"
    try:
        trainer.run(optimizer_state, session_start)
    except KeyboardInterrupt:
        status = "interrupted"  # last.pt holds the last finished epoch: --resume goes on from there
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        reporter.done()
        summary = _summary(trainer, cfg, status, len(trainer.train), len(val_l), extra_summary)
        if trainer.state.history:
            _write_history(trainer.state.history, run_dir / "history.csv")
            from facelab import plots

            plots.training_curves(
                trainer.state.history,
                run_dir / "curves.png",
                title=(f"{cfg.backbone} · {cfg.strategy.value} · {cfg.augment.value} · weights {summary['weights']}"),
                best_epoch=trainer.state.best_epoch,
            )
        if (run_dir / "best.safetensors").exists():
            summary["size_bytes"] = (run_dir / "best.safetensors").stat().st_size
        write_text_atomic(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
    model = TransferModel(run_dir)
    if summary["val_accuracy"] is not None:
        reporter.message(
            f"Best validation accuracy {summary['val_accuracy']:.3f} at epoch {summary['best_epoch']} "
            f"of {summary['epochs_run']} (train accuracy {summary['train_accuracy']:.3f}); "
            f"{summary['train_seconds']:.1f} s on {summary['device']}; run folder {run_dir}"
        )
    return RunResult(run_dir, summary, trainer.state.history, model)


def _summary(
    trainer: _Trainer, cfg: TrainConfig, status: str, n_train: int, n_val: int, extra: dict[str, Any] | None
) -> dict[str, Any]:
    import torch

    state, model = trainer.state, trainer.model
    best = next((row for row in state.history if row["epoch"] == state.best_epoch), None)
    phases = STRATEGIES[cfg.strategy](cfg)
    last_phase = phases[min(state.phase_index, len(phases) - 1)] if phases else None
    trainable = 0
    if model is not None:
        head = _head(model, trainer.spec)
        trainable = (
            _count(model.parameters()) if last_phase and last_phase.train_backbone else _count(head.parameters())
        )
    summary: dict[str, Any] = {
        "track": TRACK,
        "status": status,
        "backbone": cfg.backbone,
        "strategy": cfg.strategy.value,
        "augment": cfg.augment.value,
        "offline_aug": cfg.offline_aug,
        "preset": cfg.preset.value,
        "weights": state.weights_label,
        "weights_id": state.weights_id,
        "params_total": _count(model.parameters()) if model is not None else 0,
        "depth": _depth(model) if model is not None else None,
        "params_trainable": trainable,
        "size_bytes": 0,
        "train_seconds": round(state.elapsed, 3),
        "cpu_seconds": round(state.cpu_seconds, 3),
        "feature_seconds": round(state.feature_seconds, 3),
        "seconds_to_best": round(state.seconds_to_best, 3),
        "device": trainer.device.type,
        "device_name": trainer.device_text,
        "threads": torch.get_num_threads(),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": bool(state.stopped_early),
        "train_accuracy": best["train_accuracy"] if best else None,
        "train_loss": best["train_loss"] if best else None,
        "val_accuracy": best["val_accuracy"] if best else None,
        "val_loss": best["val_loss"] if best else None,
        "faces": cfg.faces,
        "include_others": cfg.include_others,
        "crop_margin": cfg.crop_margin,
        "image_size": cfg.image_size,
        "classes": trainer.classes,
        "n_train": n_train,
        "n_val": n_val,
        "score_kind": "probability",
        "peak_rss_mb": _peak_rss_mb(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if trainer.device.type == "cuda":
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    summary.update(extra or {})
    return summary


def _depth(model: Any) -> int:
    """Layers with weights (convolutions and fully connected): the depth a comparison table shows."""
    import torch.nn as nn

    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
