"""What a transfer run folder keeps while training, for ``--resume`` and for reading back.

Weights are written atomically (``best.safetensors``, ``last.pt``: readers never see half a file);
:class:`_State` is everything besides weights that ``--resume`` restores; ``history.csv`` holds one
row per epoch.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.imageio import write_text_atomic
from facelab.runs import HISTORY_FIELDS

if TYPE_CHECKING:
    import torch
    from torch import nn


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors (channels-last ones are not contiguous).
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _atomic_path(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)`` beside ``path``, then rename: readers never see half a file.

    Checkpoints go straight to disk rather than through memory: VGG-16's last.pt with Adam's
    state is 1.5 GB.
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_safetensors(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    _atomic_path(path, lambda tmp: save_file(_state_dict_cpu(model), tmp, metadata=metadata))


def _torch_save_atomic(obj: Any, path: Path) -> None:
    import torch

    _atomic_path(path, lambda tmp: torch.save(obj, tmp))


@dataclass
class _State:
    """Everything besides weights that --resume restores."""

    epoch: int = 0  # epochs finished, all phases together
    phase_index: int = 0
    phase_epoch: int = 0  # epochs finished in the current phase
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = float("inf")
    seconds_to_best: float = 0.0
    stop_loss: float = float("inf")  # early stopping: lowest val loss of the phase
    stop_accuracy: float = -1.0  # early stopping under monitor val_accuracy: highest of the phase
    bad_epochs: int = 0
    elapsed: float = 0.0  # training seconds, all sessions together
    cpu_seconds: float = 0.0  # process CPU time of training (less sensitive to other jobs than wall time)
    feature_seconds: float = 0.0
    stopped_early: list[int] = field(default_factory=list)  # phases that stopped early
    history: list[dict[str, Any]] = field(default_factory=list)
    weights_label: str = "none"
    weights_id: str | None = None


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(out.getvalue(), path)


def read_history(path: Path) -> list[dict[str, Any]]:
    """``history.csv`` back as dicts with numbers as numbers."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key == "phase":
                parsed[key] = value
            elif key == "epoch":
                parsed[key] = int(value)
            else:
                parsed[key] = float(value) if value not in ("", None) else float("nan")
        out.append(parsed)
    return out
