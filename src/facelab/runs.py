"""Run folders and the one interface every trained model offers, whatever its track.

A run folder ``WS/runs/<name>/`` describes itself: ``summary.json`` names its ``track``, and
the loader registered for that track turns the folder back into a :class:`Model`. ``evaluate``,
``compare``, ``recognize`` and the web app only ever talk to :class:`Model`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from facelab.items import SplitItem
from facelab.types import Face


class Model(Protocol):
    """A trained recognizer.

    ``scores`` are per class, higher is more likely; ``score_kind`` says whether they are
    probabilities (transfer track, softmax) or similarities (embedding track, e.g. 1 − distance).
    The open-set ``threshold`` (None until calibrated) applies to the best class's score: below it
    the answer is *unknown*.
    """

    run_dir: Path
    classes: list[str]
    score_kind: str
    threshold: float | None

    def predict_items(self, items: list[SplitItem]) -> np.ndarray:
        """Scores ``(len(items), len(classes))`` for workspace faces (crops, stored embeddings)."""
        ...

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Scores ``(len(faces), len(classes))`` for faces found in a new upright RGB photo."""
        ...


# Columns of every run's history.csv, whatever its track, so plots and compare read both alike.
HISTORY_FIELDS = (
    "epoch",
    "phase",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "elapsed",
)

Loader = Callable[[Path], Model]
_LOADERS: dict[str, Loader] = {}


def register_loader(track: str, loader: Loader) -> None:
    _LOADERS[track] = loader


def run_name(run_dir: Path) -> str:
    """A run's name as people see it: ``RUN`` for ``RUN`` and for its deployed refit ``RUN/deployed``."""
    run_dir = Path(run_dir)
    return run_dir.parent.name if run_dir.name == "deployed" else run_dir.name


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a facelab run folder (no summary.json)")
    return json.loads(path.read_text())


def load_model(run_dir: Path | str) -> Model:
    """Load any run folder by its track."""
    from facelab import tracks  # noqa: F401  (registers the built-in loaders)

    run_dir = Path(run_dir)
    track = read_summary(run_dir).get("track", "transfer")
    if track not in _LOADERS:
        raise ValueError(f"{run_dir}: unknown track {track!r}; known: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[track](run_dir)
