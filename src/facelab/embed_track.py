"""The embedding track: a small head over a pretrained face embedding, trained in seconds.

The pretrained embedder (``facelab.embedders``, default dlib's 128-d ResNet) already maps photos
of one person close together; all that is learned here is where each of *our* people lies. Three
heads (a registry; add your own with :func:`register_head`):

* ``prototype`` — one mean vector per person; a face's score for a person is its similarity to
  that mean. Robust with few photos per person, and adding a person is adding a mean.
* ``knn`` — keeps every training vector; a person's score is the mean similarity of the ``k``
  most similar of that person's vectors. Follows people whose photos vary (ages, make-up,
  glasses) better than a single mean.
* ``linear`` — multinomial logistic regression (or a linear SVM with calibrated probabilities)
  on the vectors. Scores are probabilities over *our* people only, which makes strangers harder
  to reject: compare the open-set figures in docs/benchmarks_embedding.md.

Similarity scores (``score_kind="similarity"``): ``1 − euclidean distance`` with
``metric="euclidean"`` (so dlib's customary 0.6 same-person distance is a score of 0.4), or the
cosine similarity with ``metric="cosine"``. Higher is more alike; 1 is identical.

A run folder ``WS/runs/<name>/`` holds ``summary.json``, ``config.yaml``, ``history.csv`` (one
row), ``head.npz`` (the training vectors, labels and the fitted head's arrays — no pickle, nothing
executable) and ``openset.json`` (the unknown threshold). Loading refits the head from
``head.npz`` plus the vectors of people enrolled in the workspace's ``gallery`` since, so
``facelab enroll`` adds people and photos without retraining; heads fit in well under a second.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from facelab import impostors, openset, runs
from facelab.embedders import DEFAULT_EMBEDDER, Progress
from facelab.items import OTHERS, FaceSelection, SplitItem, class_names, class_names_of, load_items, people
from facelab.store import Workspace, blob_to_vector, vector_to_blob
from facelab.types import Face, Recognition

TRACK = "embedding"


# -- similarities -------------------------------------------------------------------------------


class Metric:
    """Names of the similarity metrics heads accept."""

    EUCLIDEAN = "euclidean"
    COSINE = "cosine"
    ALL = (EUCLIDEAN, COSINE)


def similarity(a: np.ndarray, b: np.ndarray, metric: str = Metric.EUCLIDEAN) -> np.ndarray:
    """Pairwise similarity ``(len(a), len(b))``: ``1 − euclidean distance`` or cosine similarity.

    Plain numpy, as scikit-learn computes them (float64, ‖a‖² − 2a·b + ‖b‖² clipped at 0; rows of
    zero length stay zero for cosine): importing scikit-learn costs ~2 s, which every worker process
    of an album index and every ``facelab recognize`` would pay before its first face.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if metric == Metric.EUCLIDEAN:
        squared = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
        return 1.0 - np.sqrt(np.maximum(squared, 0.0))
    if metric == Metric.COSINE:

        def unit(m: np.ndarray) -> np.ndarray:
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            return m / np.where(norms == 0.0, 1.0, norms)

        return unit(a) @ unit(b).T
    raise ValueError(f"metric must be one of {', '.join(Metric.ALL)}, not {metric!r}")


def _check_metric(metric: str) -> str:
    if metric not in Metric.ALL:
        raise ValueError(f"metric must be one of {', '.join(Metric.ALL)}, not {metric!r}")
    return metric


# -- heads --------------------------------------------------------------------------------------


class Head(Protocol):
    """A classifier over embedding vectors; ``y`` holds class indices ``0..n_classes-1``."""

    name: str
    score_kind: str

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> None: ...

    def scores(self, x: np.ndarray) -> np.ndarray:
        """``(len(x), n_classes)``, higher is more likely."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted parameters, saved in ``head.npz`` for inspection."""
        ...

    def n_params(self) -> int: ...


class PrototypeHead:
    """Nearest class mean.

    ``metric``: ``"euclidean"`` (default; the distance dlib's network was trained for) or
    ``"cosine"`` (means of unit vectors; try it when photo quality varies a lot between people).
    """

    name = "prototype"
    score_kind = "similarity"

    def __init__(self, metric: str = Metric.EUCLIDEAN) -> None:
        self.metric = _check_metric(metric)
        self.centers = np.zeros((0, 0))

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self.metric == Metric.COSINE:
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.centers = np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])

    def scores(self, x: np.ndarray) -> np.ndarray:
        return similarity(x, self.centers, self.metric)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centers": self.centers.astype(np.float32)}

    def n_params(self) -> int:
        return int(self.centers.size)


class KnnHead:
    """Per person, the mean similarity of the ``k`` most similar of that person's training vectors.

    ``k``: 1 is plain nearest neighbour (face_recognition's way; most forgiving, and most easily
    fooled by one odd photo); 3 (default) averages out a stray photo. Keep ``k`` below the number
    of photos of your least-photographed person — a person with fewer uses all they have.
    ``metric`` as for :class:`PrototypeHead`.
    """

    name = "knn"
    score_kind = "similarity"

    def __init__(self, k: int = 3, metric: str = Metric.EUCLIDEAN) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)
        self.metric = _check_metric(metric)
        self.x = np.zeros((0, 0))
        self.y = np.zeros(0, dtype=np.int64)
        self.n_classes = 0

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.int64)
        self.n_classes = n_classes

    def scores(self, x: np.ndarray) -> np.ndarray:
        sims = similarity(x, self.x, self.metric)
        out = np.empty((sims.shape[0], self.n_classes))
        for c in range(self.n_classes):
            own = sims[:, self.y == c]
            k = min(self.k, own.shape[1])
            # The k largest per row without a full sort.
            out[:, c] = np.partition(own, own.shape[1] - k, axis=1)[:, -k:].mean(axis=1)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {}  # the training vectors themselves, already in head.npz

    def n_params(self) -> int:
        return int(self.x.size)


class LinearHead:
    """A linear classifier on unit-length vectors, with probabilities.

    ``kind``: ``"logreg"`` (default; multinomial logistic regression, probabilities from the
    model itself) or ``"svm"`` (``LinearSVC`` with sigmoid calibration by cross-validation; needs
    at least two photos per person, and falls back to calibrating on the training vectors when a
    person has one). ``C``: inverse regularisation strength; larger fits the training faces more
    closely (sharper probabilities), smaller generalises more. 10 suits unit-length 128-d vectors
    with tens of photos per person; lower it for a handful of photos per person.
    """

    name = "linear"
    score_kind = "probability"

    def __init__(self, kind: str = "logreg", C: float = 10.0) -> None:
        if kind not in ("logreg", "svm"):
            raise ValueError(f"kind must be 'logreg' or 'svm', not {kind!r}")
        self.kind = kind
        self.C = float(C)
        self.estimator = None
        self.n_classes = 0

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        if n_classes < 2:
            raise ValueError("the linear head needs at least two people; use the prototype or knn head")
        self.n_classes = n_classes
        x = self._unit(x)
        if self.kind == "logreg":
            self.estimator = LogisticRegression(C=self.C, max_iter=2000)
        else:
            svm = LinearSVC(C=self.C, random_state=0)
            fewest = int(np.bincount(y, minlength=n_classes).min())
            if fewest >= 2:
                self.estimator = CalibratedClassifierCV(svm, method="sigmoid", cv=min(3, fewest))
            else:
                from sklearn.frozen import FrozenEstimator

                # One photo of somebody: no held-out data to calibrate on, so calibrate on the
                # training vectors (over-confident, but it keeps enrolment working).
                self.estimator = CalibratedClassifierCV(FrozenEstimator(svm.fit(x, y)), method="sigmoid")
        self.estimator.fit(x, y)

    def scores(self, x: np.ndarray) -> np.ndarray:
        assert self.estimator is not None, "fit first"
        proba = self.estimator.predict_proba(self._unit(x))
        out = np.zeros((proba.shape[0], self.n_classes))
        out[:, self.estimator.classes_] = proba
        return out

    def _linear(self) -> tuple[np.ndarray, np.ndarray]:
        est = self.estimator
        if self.kind == "logreg":
            return est.coef_, est.intercept_
        inner = est.calibrated_classifiers_[0].estimator
        inner = getattr(inner, "estimator", inner)  # FrozenEstimator wraps the SVM
        return inner.coef_, inner.intercept_

    def arrays(self) -> dict[str, np.ndarray]:
        coef, intercept = self._linear()
        return {"coef": coef.astype(np.float32), "intercept": intercept.astype(np.float32)}

    def n_params(self) -> int:
        coef, intercept = self._linear()
        return int(coef.size + intercept.size)


@dataclass(frozen=True)
class HeadInfo:
    name: str
    build: Callable[..., Head]
    score_kind: str
    summary: str


_HEADS: dict[str, HeadInfo] = {}


def register_head(info: HeadInfo) -> None:
    _HEADS[info.name] = info


def registered_heads() -> dict[str, HeadInfo]:
    return dict(_HEADS)


def build_head(name: str, params: dict | None = None) -> Head:
    """A new, unfitted head; ``params`` are the head class's keyword arguments (see its docstring)."""
    if name not in _HEADS:
        raise KeyError(f"unknown head {name!r}; choose one of: {', '.join(sorted(_HEADS))}")
    try:
        return _HEADS[name].build(**(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for the {name} head: {exc}") from exc


register_head(HeadInfo("prototype", PrototypeHead, "similarity", "nearest person mean (default)"))
register_head(HeadInfo("knn", KnnHead, "similarity", "mean of the k most similar photos per person"))
register_head(HeadInfo("linear", LinearHead, "probability", "logistic regression / calibrated linear SVM"))


# -- gallery: enrolment without retraining ------------------------------------------------------


def gallery_vectors(ws: Workspace, model: str = DEFAULT_EMBEDDER) -> list[tuple[str, np.ndarray]]:
    """``(person, vector)`` of every face enrolled for ``model``, oldest first."""
    rows = ws.query("SELECT person, vector FROM gallery WHERE model = ? ORDER BY id", (model,))
    return [(r["person"], blob_to_vector(r["vector"])) for r in rows]


@dataclass
class EnrollOutcome:
    """One photo of an enrolment: ``ok`` False carries the reason (and the fix) in ``message``."""

    photo: Path
    ok: bool
    message: str
    faces: int = 0


def store_gallery_vector(conn: sqlite3.Connection, person: str, model: str, source: str, vector: np.ndarray) -> None:
    """One enrolled vector of ``person`` from ``source`` (a photo): replaces the one stored before, so
    enrolling a photo again never counts it twice. Callers hold a transaction."""
    conn.execute("DELETE FROM gallery WHERE person = ? AND model = ? AND source = ?", (person, model, source))
    conn.execute(
        "INSERT INTO gallery(person, model, source, vector) VALUES (?, ?, ?, ?)",
        (person, model, source, vector_to_blob(vector)),
    )


def enroll(
    ws: Workspace,
    person: str,
    photos: Sequence[Path],
    *,
    model: str = DEFAULT_EMBEDDER,
    detector: str | None = None,
) -> list[EnrollOutcome]:
    """Add ``person`` (or more photos of them) to the workspace gallery: embedding runs know them at once.

    Each photo contributes its largest face (the subject of a portrait). A photo that cannot be
    read or shows no face is reported and skipped. Enrolling the same photo again replaces its
    vector instead of counting it twice.
    """
    from facelab.embedders import embed_largest_face
    from facelab.imageio import ImageError, load_rgb

    person = person.strip()
    if not person:
        raise ValueError("the person's name is empty")
    if person == OTHERS:
        raise ValueError(f"{OTHERS!r} is the class name of bystanders (--include-others); choose another name")
    outcomes = []
    for photo in photos:
        photo = Path(photo)
        try:
            rgb = load_rgb(photo)
        except ImageError as exc:
            outcomes.append(EnrollOutcome(photo, False, f"{exc.reason} — {exc.fix}"))
            continue
        _, vector, n_faces = embed_largest_face(rgb, model, detector)
        if vector is None:
            outcomes.append(
                EnrollOutcome(photo, False, "no face found — use a photo where the face is larger and frontal")
            )
            continue
        source = str(photo.resolve())
        with ws.transaction() as conn:
            store_gallery_vector(conn, person, model, source, vector)
        note = f"largest of {n_faces} faces" if n_faces > 1 else "1 face"
        outcomes.append(EnrollOutcome(photo, True, note, n_faces))
    return outcomes


@dataclass
class ForgetResult:
    """What :func:`forget` removed, and which trained runs still know the person."""

    removed: int = 0
    sources: list[str] = field(default_factory=list)
    runs_trained_on_person: list[Path] = field(default_factory=list)


def forget(ws: Workspace, person: str, model: str | None = None) -> ForgetResult:
    """Delete ``person``'s enrolled vectors (for ``model``, or all models) from the gallery.

    Runs *trained* on photos of the person (their folder was in the data set) still know them;
    they are listed so the caller can say so — removing the person there means removing the
    folder and training again.
    """
    sql, params = "FROM gallery WHERE person = ?", [person]
    if model is not None:
        sql += " AND model = ?"
        params.append(model)
    result = ForgetResult()
    with ws.transaction():
        rows = ws.query("SELECT source " + sql, tuple(params))
        ws.conn.execute("DELETE " + sql, tuple(params))
    result.removed = len(rows)
    result.sources = [r["source"] or "" for r in rows]
    for summary_path in sorted(ws.runs_dir.glob("*/summary.json")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        trained = summary.get("trained_classes") or summary.get("classes") or []
        if person in trained:
            result.runs_trained_on_person.append(summary_path.parent)
    return result


# -- the model a run folder loads as ------------------------------------------------------------


def _workspace_of_run(run_dir: Path, summary: dict) -> Path | None:
    """The workspace a run belongs to: the one it lies in (WS/runs/NAME, or WS/runs/NAME/deployed),
    else as recorded — so a copied or moved workspace reads its own gallery, not the original's."""
    here = run_dir.resolve()
    for candidate in (here.parent.parent, here.parent.parent.parent, summary.get("workspace")):
        if candidate and (Path(candidate) / ".facelab" / "facelab.db").is_file():
            return Path(candidate)
    return None


class EmbeddingModel:
    """A loaded embedding-track run: satisfies :class:`facelab.runs.Model`.

    ``classes`` are the trained people plus anybody enrolled in the workspace gallery since;
    :meth:`refresh` picks up enrolments made after loading. ``threshold`` applies to the best
    score (unknown below it); ``min_margin`` flags look-alikes.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.summary = runs.read_summary(self.run_dir)
        self.embedder: str = self.summary.get("embedder", DEFAULT_EMBEDDER)
        self.head_name: str = self.summary["strategy"]
        self.head_params: dict = self.summary.get("head_params") or {}
        self.score_kind: str = _HEADS[self.head_name].score_kind if self.head_name in _HEADS else "similarity"
        openset_path = self.run_dir / "openset.json"
        calibration = json.loads(openset_path.read_text()) if openset_path.exists() else {}
        self.threshold: float | None = calibration.get("threshold")
        self.min_margin: float | None = calibration.get("min_margin")
        # The floor for calibrations with too few strangers (facelab.auto.calibrate_run).
        self.default_threshold = default_threshold(self.embedder, self.head_name, self.head_params)
        with np.load(self.run_dir / "head.npz", allow_pickle=False) as data:
            self.trained_classes = [str(c) for c in data["classes"]]
            self._x = data["x"].astype(np.float32)
            self._y = data["y"].astype(np.int64)
        self.workspace = _workspace_of_run(self.run_dir, self.summary)
        self.enrolled = 0
        self.refresh()

    def refresh(self) -> None:
        """Refit the head on the run's training vectors plus the workspace gallery as it is now."""
        gallery: list[tuple[str, np.ndarray]] = []
        if self.workspace is not None:
            with Workspace(self.workspace, create=False) as ws:
                gallery = gallery_vectors(ws, self.embedder)
        self.classes = class_names_of([*self.trained_classes, *(person for person, _ in gallery)])
        index = {name: i for i, name in enumerate(self.classes)}
        remap = np.array([index[c] for c in self.trained_classes], dtype=np.int64)
        x, y = self._x, remap[self._y] if len(self._y) else self._y
        if gallery:
            x = np.vstack([x, np.stack([v for _, v in gallery])])
            y = np.concatenate([y, [index[p] for p, _ in gallery]])
        self.enrolled = len(gallery)
        self.head = build_head(self.head_name, self.head_params)
        self.head.fit(x, y, len(self.classes))
        self._fit_x, self._fit_y = x, y

    def calibrate(
        self,
        val: list[SplitItem],
        *,
        bystanders: np.ndarray | None = None,
        strangers: Path | None = None,
        target_fpir: float = openset.DEFAULT_TARGET_FPIR,
    ) -> openset.Calibration:
        """Set the unknown threshold anew for the gallery as it is now (trained + enrolled people) from
        the validation faces ``val`` and impostor evidence (see :func:`calibrate_vectors`)."""
        index = {name: i for i, name in enumerate(self.classes)}
        val = [item for item in val if item.person in index]
        x_val = self._item_vectors(val)
        y_val = np.array([index[item.person] for item in val], dtype=np.int64)
        scores = self.predict_vectors(x_val) if len(x_val) else np.zeros((0, len(self.classes)))
        best, top, margin = openset.top_two(scores, self.classes) if len(x_val) else (np.zeros(0, int),) * 3
        correct = openset.named_right(best, self.classes, [item.person for item in val])
        x_strangers = (
            stranger_vectors(Path(strangers), "calibration", self.embedder, self._cache_dir()) if strangers else None
        )
        return calibrate_vectors(
            self.head_name,
            self.head_params,
            self.head,
            np.vstack([self._fit_x, x_val]) if len(x_val) else self._fit_x,
            np.concatenate([self._fit_y, y_val]),
            self.classes,
            (top, correct, margin),
            embedder=self.embedder,
            bystanders=bystanders,
            strangers=x_strangers,
            target_fpir=target_fpir,
        )

    # -- scoring ----------------------------------------------------------------------------
    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(vectors):
            return np.zeros((0, len(self.classes)))
        return self.head.scores(vectors)

    def predict_items(self, items: list[SplitItem]) -> np.ndarray:
        """Scores for workspace faces, from the vectors stored in the workspace when it has them."""
        return self.predict_vectors(self._item_vectors(items))

    def _item_vectors(self, items: list[SplitItem]) -> np.ndarray:
        return item_vectors(self.workspace, items, self.embedder, self._x.shape[1])

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        from facelab.embedders import get_embedder

        return self.predict_vectors(get_embedder(self.embedder).embed(rgb, faces))

    def recognize(self, rgb: np.ndarray, faces: list[Face], top: int = 3) -> list[Recognition]:
        """Open-set answers for faces of a photo: name or unknown, score, margin, best candidates."""
        scores = self.predict_faces(rgb, faces)
        return openset.recognitions(faces, scores, self.classes, self.threshold, self.min_margin, top)

    def stranger_scores(self, folder: Path, part: str = "all") -> np.ndarray:
        """Best score of each stranger photo's largest face; embeddings cached by file hash."""
        vectors = stranger_vectors(folder, part, self.embedder, self._cache_dir())
        return openset.open_scores(self.predict_vectors(vectors), self.classes) if len(vectors) else np.zeros(0)

    def _cache_dir(self) -> Path | None:
        return self.workspace / ".facelab" / "cache" if self.workspace is not None else None


def item_vectors(workspace: Path | None, items: list[SplitItem], embedder: str, dim: int | None = None) -> np.ndarray:
    """Embeddings of workspace faces: stored in ``workspace`` when it has them, else computed from the photo."""
    from facelab.embedders import embedder_info, get_embedder
    from facelab.imageio import load_rgb

    stored: dict[int, np.ndarray] = {}
    if workspace is not None and items and (workspace / ".facelab" / "facelab.db").is_file():
        with Workspace(workspace, create=False) as ws:
            # Trust a stored vector only if its face belongs to the same photo: items may come
            # from another workspace, whose face ids mean other faces.
            photo_of = {
                r["id"]: r["path"]
                for r in ws.query("SELECT f.id, p.path FROM faces f JOIN photos p ON p.id = f.photo_id")
            }
            vectors = ws.embeddings(embedder)
        for item in items:
            if item.face_id in vectors and photo_of.get(item.face_id) == str(item.photo_path):
                stored[item.face_id] = vectors[item.face_id]
    missing: dict[Path, list[SplitItem]] = defaultdict(list)
    for item in items:
        if item.face_id not in stored:
            missing[item.photo_path].append(item)
    if missing:
        model = get_embedder(embedder)
        for photo, photo_items in missing.items():
            rgb = load_rgb(photo)
            for item, vector in zip(photo_items, model.embed(rgb, [i.face for i in photo_items]), strict=True):
                stored[item.face_id] = vector
    if not items:
        return np.zeros((0, dim or embedder_info(embedder).dim), np.float32)
    return np.stack([stored[item.face_id] for item in items])


def stranger_vectors(
    folder: Path, part: str = "all", model: str = DEFAULT_EMBEDDER, cache_dir: Path | None = None
) -> np.ndarray:
    """Vectors of the largest face of each photo in a stranger folder's ``part`` (faceless photos skipped)."""
    from facelab.embedders import embed_photos_largest_face, embedder_info

    files = openset.stranger_files(folder, part)
    found = embed_photos_largest_face(files, model, cache_dir=cache_dir)
    vectors = [found[sha] for _, sha in files if found[sha] is not None]
    return np.stack(vectors) if vectors else np.zeros((0, embedder_info(model).dim), np.float32)


runs.register_loader(TRACK, EmbeddingModel)


# -- training -----------------------------------------------------------------------------------


def _unique_run_dir(runs_dir: Path, name: str) -> Path:
    candidate, n = runs_dir / name, 2
    while candidate.exists():
        candidate, n = runs_dir / f"{name}-{n}", n + 1
    return candidate


def _accuracy(head: Head, x: np.ndarray, y: np.ndarray, classes: list[str]) -> float:
    """Share of faces given their own name (a face the bystander class wins is not named)."""
    return float(np.mean(openset.top_two(head.scores(x), classes)[0] == y)) if len(y) else float("nan")


def calibrate_vectors(
    head_name: str,
    params: dict,
    fitted: Head,
    x_gallery: np.ndarray,
    y_gallery: np.ndarray,
    classes: list[str],
    genuine: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    embedder: str = DEFAULT_EMBEDDER,
    bystanders: np.ndarray | None = None,
    strangers: np.ndarray | None = None,
    target_fpir: float = openset.DEFAULT_TARGET_FPIR,
) -> openset.Calibration:
    """The unknown threshold of a head fitted on a gallery of the user's people (see :mod:`facelab.impostors`).

    Impostor evidence, each scored against this very gallery: the reference strangers shipped with
    facelab, the user's own people left out in turn (refitting ``head_name`` on ``x_gallery`` /
    ``y_gallery`` — train and validation vectors — without each), the ``bystanders`` vectors (faces
    in the user's photos that match nobody) and the ``strangers`` vectors (a strangers folder's
    calibration half). ``genuine`` is ``(best score, named right, margin)`` of the validation faces,
    for the expected miss rate and the look-alike margin.
    """
    n_people = len(people(classes))

    def score(vectors: np.ndarray) -> np.ndarray:
        return openset.open_scores(fitted.scores(vectors), classes) if len(vectors) else np.zeros(0)

    def fit_and_score(x: np.ndarray, y: np.ndarray, kept: list[str]) -> impostors.Scorer:
        head = build_head(head_name, params)
        head.fit(x, y, len(kept))
        return lambda vectors: openset.open_scores(head.scores(vectors), kept)

    sources = []
    reference = impostors.reference_evidence(score, embedder, n_people=n_people)
    if reference is not None:
        sources.append(reference)
    person_classes = [i for i, name in enumerate(classes) if name != OTHERS]
    own = impostors.people_evidence(fit_and_score, x_gallery, y_gallery, classes, person_classes)
    if own is not None:
        sources.append(own)
    for source, vectors in (("bystanders", bystanders), ("strangers", strangers)):
        if vectors is not None and len(vectors):
            sources.append(impostors.Evidence(source, score(vectors), n_people))
    top, correct, margin = genuine
    return impostors.calibrate_gallery(
        sources,
        n_people,
        top,
        correct,
        target_fpir,
        score_kind=fitted.score_kind,
        margins=margin,
        floor=default_threshold(embedder, head_name, params),
    )


def bystander_vectors(ws: Workspace, model: str = DEFAULT_EMBEDDER) -> np.ndarray | None:
    """Vectors of the bystanders in the train and val photos who match none of the user's people
    (:func:`facelab.identity.stranger_bystanders`): free impostor evidence from the user's own camera."""
    from facelab.identity import stranger_bystanders

    usable = stranger_bystanders(ws, model)
    vectors = ws.embeddings(model)
    chosen = [
        vectors[item.face_id]
        for item in load_items(ws, None, FaceSelection.ALL)
        if item.face_id in usable and item.split in ("train", "val") and item.face_id in vectors
    ]
    return np.stack(chosen) if chosen else None


def default_threshold(embedder: str, head: str, head_params: dict) -> float | None:
    """The measured "unknown" threshold of ``head`` on ``embedder``'s vectors, for when there are too
    few strangers to calibrate on (see :attr:`facelab.embedders.EmbedderInfo.unknown_distance`);
    None for heads without one (linear, cosine metric)."""
    from facelab.embedders import embedder_info

    distance = embedder_info(embedder).unknown_distance.get(head)
    if distance is None or head_params.get("metric", Metric.EUCLIDEAN) != Metric.EUCLIDEAN:
        return None
    return 1.0 - distance


def train_embedding_run(
    ws: Workspace | Path | str,
    head: str = "prototype",
    name: str | None = None,
    faces: FaceSelection | str = FaceSelection.RESOLVED,
    strangers: Path | None = None,
    target_fpir: float = openset.DEFAULT_TARGET_FPIR,
    model: str = DEFAULT_EMBEDDER,
    head_params: dict | None = None,
    progress: Progress | None = None,
    include_others: bool = False,
) -> Path:
    """Fit ``head`` on the train split's embeddings, calibrate the unknown threshold, write the run folder.

    ``faces``: which faces of the split count (``resolved``: identity resolution's person faces).
    ``strangers``: a folder of photos of people not in the data set; its calibration half sets
    the threshold. Without one, the reference strangers shipped with facelab, each of the user's
    people left out in turn, and the bystanders who match nobody do (:func:`calibrate_vectors`).
    ``target_fpir``: share of strangers allowed a name (see :func:`facelab.openset.calibrate`).
    ``head_params``: keyword arguments of the head (see :class:`PrototypeHead`, :class:`KnnHead`,
    :class:`LinearHead`). Faces without a stored embedding are embedded first (``progress``).
    ``include_others``: add the bystanders of the user's photos who are none of the user's people
    as a class :data:`OTHERS` that answers "unknown" when it wins (``knn`` and ``linear`` heads;
    a prototype is one centre per person, and bystanders are many people).
    Returns the run folder ``WS/runs/<name>/`` (``emb-<model>-<head>``, numbered if taken).
    """
    from facelab.embedders import embed_workspace, embedder_info
    from facelab.imageio import write_bytes_atomic, write_text_atomic

    own = not isinstance(ws, Workspace)
    workspace = Workspace(ws, create=False) if own else ws
    try:
        head_params = dict(head_params or {})
        build_head(head, head_params)  # fail on a bad name or parameter before any work
        if include_others and head == "prototype":
            raise ValueError(
                "--include-others needs the knn or linear head: a prototype is one centre per person, and "
                "bystanders are many people (it uses them as negatives for its unknown threshold instead, "
                "when no strangers folder is given to facelab auto / run)"
            )
        info = embedder_info(model)
        faces = FaceSelection(faces)
        items = {split: load_items(workspace, split, faces, include_others) for split in ("train", "val")}
        if not items["train"]:
            raise ValueError(f"{workspace.root}: no {faces.value} faces in the train split; run facelab split first")
        started = time.perf_counter()
        embed_workspace(workspace, model, progress=progress)
        embed_seconds = time.perf_counter() - started
        vectors = workspace.embeddings(model)
        # People with at least one embedded training face (a photo may have become unreadable).
        classes = class_names([i for i in items["train"] if i.face_id in vectors])
        index = {c: i for i, c in enumerate(classes)}

        def xy(split_items: list[SplitItem]) -> tuple[np.ndarray, np.ndarray]:
            usable = [i for i in split_items if i.face_id in vectors and i.person in index]
            x = np.stack([vectors[i.face_id] for i in usable]) if usable else np.zeros((0, info.dim), np.float32)
            return x, np.array([index[i.person] for i in usable], dtype=np.int64)

        x_train, y_train = xy(items["train"])
        x_val, y_val = xy(items["val"])
        started = time.perf_counter()
        fitted = build_head(head, head_params)
        fitted.fit(x_train, y_train, len(classes))
        train_seconds = time.perf_counter() - started
        # Accuracy and calibration are about the people's faces; bystanders are only training data.
        person_train = np.array([classes[c] != OTHERS for c in y_train], dtype=bool)
        person_val = np.array([classes[c] != OTHERS for c in y_val], dtype=bool)
        train_acc = _accuracy(fitted, x_train[person_train], y_train[person_train], classes)

        # Open set: genuine scores of validation faces against strangers the model never saw.
        x_genuine, y_genuine = x_val[person_val], y_val[person_val]
        val_scores = fitted.scores(x_genuine) if len(x_genuine) else np.zeros((0, len(classes)))
        best, top, margin = openset.top_two(val_scores, classes) if len(x_genuine) else (np.zeros(0, int),) * 3
        correct = best == y_genuine
        val_acc = float(np.mean(correct)) if len(correct) else float("nan")  # as _accuracy, scored once
        cache_dir = workspace.root / ".facelab" / "cache"
        x_strangers = stranger_vectors(Path(strangers), "calibration", model, cache_dir) if strangers else None
        calibration = calibrate_vectors(
            head,
            head_params,
            fitted,
            np.vstack([x_train, x_val]),
            np.concatenate([y_train, y_val]),
            classes,
            (top, correct, margin),
            embedder=model,
            bystanders=bystander_vectors(workspace, model),
            strangers=x_strangers,
            target_fpir=target_fpir,
        )

        run_dir = _unique_run_dir(workspace.runs_dir, name or f"emb-{model}-{head}")
        run_dir.mkdir(parents=True)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            classes=np.array(classes),
            x=x_train.astype(np.float32),
            y=y_train,
            **fitted.arrays(),
        )
        write_bytes_atomic(buffer.getvalue(), run_dir / "head.npz")
        write_text_atomic(json.dumps(calibration.to_json(), indent=2) + "\n", run_dir / "openset.json")
        config = {
            "track": TRACK,
            "embedder": model,
            "head": head,
            "head_params": head_params,
            "faces": faces.value,
            "include_others": include_others,
            "strangers": str(Path(strangers).resolve()) if strangers else None,
            "target_fpir": target_fpir,
            "workspace": str(workspace.root),
        }
        write_text_atomic(_yaml(config), run_dir / "config.yaml")
        history = io.StringIO()
        writer = csv.writer(history, lineterminator="\n")
        # The transfer track's columns, so both tracks' histories read alike; a head has no
        # epochs and similarity heads no loss.
        writer.writerow(runs.HISTORY_FIELDS)
        writer.writerow(
            [
                0,
                "head",
                "",
                f"{train_acc:.6g}",
                "",
                f"{val_acc:.6g}",
                "",
                f"{train_seconds:.4g}",
                f"{train_seconds:.4g}",
            ]
        )
        write_text_atomic(history.getvalue(), run_dir / "history.csv")
        head_params_count = fitted.n_params()
        summary = {
            "track": TRACK,
            "status": "finished",
            "backbone": model,
            "strategy": head,
            "augment": "none",
            "weights": info.weights,
            "params_total": info.params + head_params_count,
            # The embedder's layers, plus one for a linear head (prototype and kNN learn no layer).
            "depth": (info.layers + (head == "linear")) if info.layers is not None else None,
            "params_trainable": head_params_count,
            "size_bytes": (run_dir / "head.npz").stat().st_size,
            "train_seconds": round(train_seconds, 4),
            "embed_seconds": round(embed_seconds, 2),
            "device": "cpu",
            "best_epoch": 0,
            "epochs_run": 0,
            "train_accuracy": train_acc,
            "val_accuracy": val_acc,
            "classes": classes,
            "trained_classes": classes,
            "faces": faces.value,
            "include_others": include_others,
            "n_train": len(y_train),
            "n_val": len(y_val),
            "n_others_train": int((~person_train).sum()),
            "embedder": model,
            "head_params": head_params,
            "score_kind": fitted.score_kind,
            "threshold": calibration.threshold,
            "target_fpir": target_fpir,
            "workspace": str(workspace.root),
            "created": datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(),
        }
        write_text_atomic(json.dumps(_finite(summary), indent=2) + "\n", run_dir / "summary.json")
        return run_dir
    finally:
        if own:
            workspace.close()


def _finite(value: object) -> object:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
