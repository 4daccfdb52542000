"""The "unknown" threshold as a slider: what each value would do, and the value the user chose.

A run's ``openset.json`` keeps the calibrated threshold, the evidence it came from (counts and the
rate at that one threshold) and the expected rates there — not the scores behind them, so the rates
at another threshold are computed here, the way :func:`facelab.embed_track.calibrate_vectors`
computes them at the calibrated one:

* **strangers given a name** (FPIR): the impostor evidence scored against the run's gallery — the
  reference strangers shipped with facelab, the user's own people each left out in turn, the
  bystanders who match nobody, and the remembered strangers folder — mixed as
  :func:`facelab.impostors.choose_threshold` mixes them (a big enough strangers folder decides alone,
  else every source with enough samples, equal weight), each corrected to a stranger meeting all
  the people;
* **your people missed** (FNIR): the validation faces, rejected (below the threshold) or misnamed.

That takes a few seconds (embeddings are stored or cached; the heads are refit per person left
out), so the answer is cached per run and workspace state. The chosen value is saved per workspace
in the setting :data:`SETTING` (``{run: threshold}``) and used by the web app's recognition while
that run is the current model; another run has its own scale and its own calibrated threshold.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from facelab.server.workspace_ops import Conflict, OpError
from facelab.store import Workspace

SETTING = "unknown_thresholds"
# Slider positions: enough for a smooth slider, few enough to send and to compute quickly.
STEPS = 120


def saved_thresholds(ws: Workspace) -> dict[str, float]:
    """Every run's chosen threshold (run name → value): :func:`facelab.workflow.chosen_thresholds`."""
    from facelab.workflow import chosen_thresholds

    return chosen_thresholds(ws)


def saved_threshold(ws: Workspace, run: str) -> float | None:
    """The threshold the user chose for ``run``, or None (the run's calibrated one applies)."""
    from facelab.workflow import chosen_threshold

    return chosen_threshold(ws, run)


def save_threshold(ws: Workspace, run: str, value: float | None) -> None:
    """Choose ``value`` for ``run`` (None: back to the calibrated threshold), for every front end."""
    from facelab.workflow import choose_threshold

    choose_threshold(ws, run, value)


class CurveCache:
    """Computed curves by run and workspace state (see :func:`state_key`); a few runs at most."""

    def __init__(self, size: int = 8) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._curves: dict[tuple, dict[str, Any]] = {}

    def get(self, key: tuple) -> dict[str, Any] | None:
        with self._lock:
            return self._curves.get(key)

    def put(self, key: tuple, curve: dict[str, Any]) -> None:
        with self._lock:
            if len(self._curves) >= self._size:
                self._curves.pop(next(iter(self._curves)))
            self._curves[key] = curve


def state_key(ws: Workspace, run_dir: Path) -> tuple:
    """Changes whenever the curve may: the run's files, enrolments, faces, the split, the strangers folder."""
    stamps = tuple(
        (run_dir / f).stat().st_mtime_ns if (run_dir / f).exists() else 0
        for f in ("summary.json", "openset.json", "head.npz")
    )
    row = ws.query(
        "SELECT (SELECT COUNT(*) FROM gallery) AS g, (SELECT COALESCE(MAX(id), 0) FROM gallery) AS gl, "
        "(SELECT COUNT(*) FROM crops) AS c, (SELECT COUNT(*) FROM crops WHERE status = 'rejected') AS r, "
        "(SELECT COUNT(*) FROM faces WHERE role = 'person') AS p, "
        "(SELECT COUNT(*) FROM photos WHERE split = 'val') AS v"
    )[0]
    from facelab.auto import STRANGERS_SETTING

    return (run_dir.name, stamps, tuple(row), ws.setting(STRANGERS_SETTING))


def compute_curve(ws: Workspace, run_dir: Path) -> dict[str, Any]:
    """FPIR and FNIR of ``run_dir`` at :data:`STEPS` thresholds (ascending) spanning its scores, and
    the calibrated threshold among them. :class:`Conflict` for a run the slider cannot tune."""
    from facelab import impostors, openset
    from facelab.embed_track import EmbeddingModel, build_head, gallery_vectors, item_vectors
    from facelab.items import load_items, people
    from facelab.runs import load_model

    model = load_model(run_dir)
    if not isinstance(model, EmbeddingModel):
        raise Conflict(
            "the threshold slider works for face-embedding runs; this run is a CNN whose unknown answer "
            "comes with its calibration — train a face-embedding run (Train page) to tune it"
        )
    if model.threshold is None:
        raise Conflict("this run has no unknown answer to tune (no calibrated threshold); train it again")
    classes = list(model.classes)
    index = {name: i for i, name in enumerate(classes)}
    n_people = len(people(classes))

    def score(vectors: np.ndarray) -> np.ndarray:
        return openset.open_scores(model.predict_vectors(vectors), classes) if len(vectors) else np.zeros(0)

    # Your people: the validation faces of the people the run knows.
    val = [item for item in load_items(ws, "val") if item.person in index]
    x_val = item_vectors(ws.root, val, model.embedder)
    y_val = np.array([index[item.person] for item in val], dtype=np.int64)
    if len(val):
        best, top, _ = openset.top_two(model.predict_vectors(x_val), classes)
        correct = openset.named_right(best, classes, [item.person for item in val])
    else:
        top, correct = np.zeros(0), np.zeros(0, bool)

    # Strangers: the evidence calibrate_vectors uses, scored against this run's gallery.
    sources: list[impostors.Evidence] = []
    reference = impostors.reference_evidence(score, model.embedder, n_people=n_people)
    if reference is not None:
        sources.append(reference)
    x_fit, y_fit = _gallery_of(run_dir, ws, model.embedder, index, gallery_vectors)
    x_all = np.vstack([x_fit, x_val]) if len(val) else x_fit
    y_all = np.concatenate([y_fit, y_val])

    def fit_and_score(x: np.ndarray, y: np.ndarray, kept: list[str]) -> impostors.Scorer:
        head = build_head(model.head_name, model.head_params)
        head.fit(x, y, len(kept))
        return lambda vectors: openset.open_scores(head.scores(vectors), kept)

    person_classes = [i for i, name in enumerate(classes) if name in people(classes)]
    own = impostors.people_evidence(fit_and_score, x_all, y_all, classes, person_classes)
    if own is not None:
        sources.append(own)
    for source, vectors in _extra_impostors(ws, model):
        if vectors is not None and len(vectors):
            sources.append(impostors.Evidence(source, score(vectors), n_people))
    if not sources:
        raise Conflict("no impostor evidence to measure strangers with (the reference strangers are missing)")
    deciding = _deciding(sources)

    finite = np.concatenate([top[np.isfinite(top)], *(s.scores[np.isfinite(s.scores)] for s in deciding)])
    calibrated = float(model.threshold)
    low = min(float(np.quantile(finite, 0.01)) if len(finite) else calibrated, calibrated)
    high = max(float(np.quantile(finite, 0.999)) if len(finite) else calibrated, calibrated)
    if high - low < 1e-6:
        low, high = calibrated - 0.1, calibrated + 0.1
    thresholds = np.unique(np.r_[np.linspace(low, high, STEPS), calibrated])
    fpir = [float(np.mean([s.fpir(float(t), n_people) for s in deciding])) for t in thresholds]
    fnir = [openset.rates_at(float(t), top, correct, np.zeros(0))[1] if len(top) else None for t in thresholds]
    return {
        "run": run_dir.name,
        "calibrated": calibrated,
        "thresholds": [round(float(t), 5) for t in thresholds],
        "strangers_named": [round(f, 5) for f in fpir],
        "people_missed": [None if f is None else round(f, 5) for f in fnir],
        "n_validation_faces": len(val),
        "n_people": n_people,
        "evidence": [
            {"source": s.source, "words": impostors.SOURCE_WORDS.get(s.source, s.source), "n": s.n} for s in deciding
        ],
    }


def _gallery_of(
    run_dir: Path, ws: Workspace, embedder: str, index: dict[str, int], gallery_vectors: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors the run's head is fitted on (its ``head.npz``, the documented run file) plus the
    workspace gallery, labelled by ``index`` — as :meth:`EmbeddingModel.refresh` fits them."""
    with np.load(run_dir / "head.npz", allow_pickle=False) as data:
        trained = [str(c) for c in data["classes"]]
        x = data["x"].astype(np.float32)
        y = np.array([index[trained[k]] for k in data["y"]], dtype=np.int64)
    enrolled = gallery_vectors(ws, embedder)
    if enrolled:
        x = np.vstack([x, np.stack([v for _, v in enrolled])])
        y = np.concatenate([y, [index[p] for p, _ in enrolled]])
    return x, y


def _extra_impostors(ws: Workspace, model: Any) -> list[tuple[str, np.ndarray | None]]:
    """Bystanders who match nobody, and the remembered strangers folder's calibration half (cached)."""
    from facelab.auto import strangers_folder
    from facelab.embed_track import bystander_vectors, stranger_vectors

    out: list[tuple[str, np.ndarray | None]] = [("bystanders", bystander_vectors(ws, model.embedder))]
    folder = strangers_folder(ws)
    if folder is not None:
        cache = ws.root / ".facelab" / "cache"  # where training cached the folder's embeddings
        out.append(("strangers", stranger_vectors(folder, "calibration", model.embedder, cache)))
    return out


def _deciding(sources: list[Any]) -> list[Any]:
    """The sources that speak, as :func:`facelab.impostors.choose_threshold` takes them: a strangers
    folder with enough samples alone, else every source with enough samples, else all of them."""
    from facelab.impostors import MIN_SOURCE_SAMPLES

    usable = [s for s in sources if s.n >= MIN_SOURCE_SAMPLES]
    folder = [s for s in usable if s.source == "strangers"]
    return folder or usable or [s for s in sources if s.n]


def check_value(curve: dict[str, Any], value: float) -> float:
    """``value`` if it lies within the slider's range, else a 422 naming the range."""
    low, high = curve["thresholds"][0], curve["thresholds"][-1]
    if not low - 1e-9 <= value <= high + 1e-9:
        raise OpError(f"threshold {value:g} is outside this run's range {low:.3f}–{high:.3f}; choose one in it", 422)
    return value
