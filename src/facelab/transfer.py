"""Transfer-learning track: train a classifier on an ImageNet backbone, and load the run back.

:func:`fit` trains on plain lists of ``(crop path, person)`` and writes a self-describing run
folder; :func:`train_workspace` feeds it a workspace's train/val split. :class:`TransferModel`
(registered as the ``transfer`` track's loader) turns the folder back into a
:class:`facelab.runs.Model`.

Run folder ``WS/runs/<name>/``::

    config.yaml          the TrainConfig, every default filled in
    classes.json         class order of the outputs
    preprocessing.json   image size, interpolation, normalisation (from the weights)
    best.safetensors     weights of the epoch with the best validation accuracy
    last.pt              everything --resume needs (model, optimizer, counters, history)
    history.csv          per epoch: phase, train/val loss and accuracy, lr, seconds
    curves.png           accuracy and loss against epoch
    summary.json         what the run is and how it did (read by evaluate, compare, recognize)

Strategies are phases (:data:`STRATEGIES`): a phase either trains the head alone on cached
features (the backbone is frozen, so each image goes through it once per augmentation pass, not
once per epoch) or trains every layer on images.

Each part has a module of its own, and every name stays importable from here:
:mod:`facelab.transfer_report` (progress reporters), :mod:`facelab.transfer_device` (device and
threads), :mod:`facelab.transfer_data` (crops and loaders), :mod:`facelab.transfer_network` (the
network's head and features), :mod:`facelab.transfer_checkpoints` (weights, resume state,
history), :mod:`facelab.transfer_loop` (phases and epochs), :mod:`facelab.transfer_fit`
(:func:`fit`) and :mod:`facelab.transfer_model` (:class:`TransferModel`). This module trains from a
workspace (:func:`train_workspace`) and gives a run its embedding gate (:func:`write_gate`).

The ``metric`` strategy trains the CNN as a face embedding instead of a classifier: its modules are
:mod:`facelab.metric_fit` (the stage and its run folder), :mod:`facelab.metric_loss`,
:mod:`facelab.metric_sampler`, :mod:`facelab.metric_net`, :mod:`facelab.metric_calibrate` and
:mod:`facelab.metric_model` (:class:`MetricModel`, the ``metric`` track's loader, registered by
importing this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.config import Augment, Device, Strategy, TrainConfig
from facelab.gate import EmbeddingGate, fit_gate
from facelab.imageio import write_text_atomic
from facelab.items import OTHERS, class_names_of
from facelab.metric_model import MetricModel
from facelab.metric_net import MetricParams
from facelab.runs import HISTORY_FIELDS, read_summary, register_loader
from facelab.transfer_checkpoints import read_history
from facelab.transfer_device import available_cpus, resolve_device
from facelab.transfer_fit import RunResult, default_run_name, fit
from facelab.transfer_loop import CACHED_CHECKPOINT_EVERY_S, STRATEGIES, Phase
from facelab.transfer_model import TRACK, TransferModel
from facelab.transfer_network import build_from_state, pooled
from facelab.transfer_report import NullReporter, PrintReporter, Reporter, RichReporter
from facelab.transforms import AUGMENTS, Preprocessing

if TYPE_CHECKING:
    from facelab.store import Workspace

# Every name importable from this module before its parts moved out (facelab.transfer_*), kept
# importable: its own, the moved ones, and the facelab names it used to import.
__all__ = [
    "AUGMENTS",
    "CACHED_CHECKPOINT_EVERY_S",
    "HISTORY_FIELDS",
    "OTHERS",
    "STRATEGIES",
    "TRACK",
    "Augment",
    "Device",
    "EmbeddingGate",
    "MetricModel",
    "MetricParams",
    "NullReporter",
    "Phase",
    "Preprocessing",
    "PrintReporter",
    "Reporter",
    "RichReporter",
    "RunResult",
    "Strategy",
    "TrainConfig",
    "TransferModel",
    "available_cpus",
    "build_from_state",
    "class_names_of",
    "default_run_name",
    "fit",
    "fit_gate",
    "latest_run",
    "pooled",
    "read_history",
    "read_summary",
    "register_loader",
    "resolve_device",
    "train_workspace",
    "write_gate",
    "write_text_atomic",
]

# -- workspaces -----------------------------------------------------------------------------------


def latest_run(runs_dir: Path) -> Path | None:
    """The most recently written transfer run that can be resumed."""
    candidates = [p.parent for p in Path(runs_dir).glob("*/last.pt")]
    return max(candidates, key=lambda p: (p / "last.pt").stat().st_mtime) if candidates else None


def train_workspace(
    ws: Workspace,
    config: TrainConfig,
    *,
    name: str | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
    strangers: Path | None = None,
    target_fpir: float = 0.01,
    metric: MetricParams | None = None,
) -> RunResult:
    """Train on a workspace's train split, validate on its val split; the run goes to ``WS/runs/<name>``.

    The crop margin the workspace's crops were made with (``crop_margin`` setting) is recorded so
    that recognition crops new photos the same way. ``resume`` continues run ``name`` (the latest
    resumable run when ``name`` is None) with its own config plus ``overrides`` (e.g. ``epochs``).

    A classifier run gets its embedding gate (:func:`write_gate`). The ``metric`` strategy trains a
    face embedding instead (:mod:`facelab.metric_fit`, settings ``metric``) and is calibrated here
    with ``strangers`` (default: the folder the workspace remembers) at ``target_fpir``; it cannot
    be resumed.
    """
    import dataclasses

    from facelab.items import load_items

    if config.strategy is Strategy.METRIC:
        if resume:
            raise ValueError("metric runs cannot be resumed: train again (with another --name)")
        from facelab.metric_fit import train_metric_workspace

        margin = ws.setting("crop_margin")
        config = dataclasses.replace(config, crop_margin=float(margin) if margin else config.crop_margin)
        config = dataclasses.replace(config, name=name or config.name or default_run_name(config))
        assert config.name is not None
        return train_metric_workspace(
            ws,
            config,
            ws.runs_dir / config.name,
            params=metric,
            strangers=strangers if strangers is not None else _remembered_strangers(ws),
            target_fpir=target_fpir,
            reporter=reporter,
        )
    if resume:
        run_dir = ws.runs_dir / name if name else latest_run(ws.runs_dir)
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"no run to resume in {ws.runs_dir}" + (f" named {name}" if name else ""))
        config = dataclasses.replace(TrainConfig.load(run_dir / "config.yaml"), **(overrides or {}))
    else:
        margin = ws.setting("crop_margin")
        config = dataclasses.replace(config, crop_margin=float(margin) if margin else config.crop_margin)
        run_name = name or config.name or default_run_name(config)
        config = dataclasses.replace(config, name=run_name)
        run_dir = ws.runs_dir / run_name
    train_items = load_items(ws, "train", config.faces, config.include_others)
    val_items = load_items(ws, "val", config.faces, config.include_others)
    if not train_items:
        raise ValueError(f"{ws.root}: no {config.faces} faces in the train split; run facelab split {ws.root} first")
    result = fit(
        config,
        [(i.crop_path, i.person) for i in train_items],
        [(i.crop_path, i.person) for i in val_items],
        run_dir,
        reporter=reporter,
        resume=resume,
        extra_summary={
            "workspace": str(ws.root),
            "n_others_train": sum(item.person == OTHERS for item in train_items),
        },
    )
    write_gate(ws, run_dir, reporter=reporter)
    return result


def write_gate(ws: Workspace, run_dir: Path, strangers: Path | None = None, reporter: Reporter | None = None) -> bool:
    """Give a finished CNN run its embedding gate (:mod:`facelab.gate`), so it answers unknown for
    strangers; ``strangers`` defaults to the folder the workspace remembers. False (and a message)
    when no face embedder is installed: the run then names every face, and recognition warns."""
    from facelab.embedders import EmbedderUnavailable

    if strangers is None:
        strangers = _remembered_strangers(ws)
    summary = read_summary(run_dir)
    try:
        gate, calibration = fit_gate(
            ws,
            json.loads((run_dir / "classes.json").read_text(encoding="utf-8")),
            faces=summary.get("faces", "resolved"),
            strangers=strangers,
        )
    except (EmbedderUnavailable, ImportError, ValueError) as exc:
        if reporter is not None:
            reporter.message(f"{run_dir.name}: no embedding gate ({exc}); this model names every face, strangers too")
        return False
    gate.save(run_dir, calibration)
    if reporter is not None and calibration.expected:
        reporter.message(f"{run_dir.name}: a name stands only if the face embedding agrees — {calibration.expected}")
    return True


def _remembered_strangers(ws: Workspace) -> Path | None:
    remembered = ws.setting("strangers")
    return Path(remembered) if remembered and Path(remembered).is_dir() else None
