"""Open-set decisions: is this face one of our people, and which — or somebody we don't know?

A closed-set model always names somebody. Every facelab model instead gives, per face:

* a **score** — the best person's score (higher is surer). It may be a probability (transfer
  track, softmax; linear heads) or a similarity (embedding track); nothing here depends on which,
  only on "higher means more likely the same person";
* a **threshold** — below it the answer is *unknown*. It is calibrated on photos of strangers
  (people not in the data set) so that at most ``target_fpir`` of them get a name;
* a **margin** — best minus second-best person's score. A small margin means two of our
  people look alike for this face: the name is flagged as a *look-alike* to confirm.

Two error rates, as in NIST's open-set identification tests:

* **FPIR** (false positive identification rate): share of strangers that get a name;
* **FNIR** (false negative identification rate): share of known people's faces that do *not* get
  their own name — rejected as unknown **or** given somebody else's name.

Lowering the threshold trades FNIR for FPIR; the DET curve (FNIR against FPIR over all
thresholds) shows the whole trade-off.

Stranger folders are split in two halves by each file's content hash: training calibrates on the
``calibration`` half, ``evaluate`` measures on the ``evaluation`` half, so the FPIR it reports
comes from strangers the threshold never saw.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from facelab.runs import Model
    from facelab.types import Face, Recognition

PARTS = ("all", "calibration", "evaluation")
DEFAULT_TARGET_FPIR = 0.01

# Faces whose shorter side is below this many pixels are found but not named. Measured with the
# default model (bench/bench_small_faces.py, docs/benchmarks_small_faces.md): down to 32 px no
# person got another's name and strangers were named no more often than at full size; at 28 px
# and below strangers get names 2-3 times as often, and at 24 px people get each other's. Raise it
# to leave small background faces unnamed; lower it only with a model measured on small faces.
MIN_FACE = 32
REPORTED_FPIRS = (0.001, 0.01, 0.05, 0.1)


# -- decisions ----------------------------------------------------------------------------------


def top_two(scores: np.ndarray, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``scores`` (n × classes): best person's index, their score, margin to the next person.

    The margin is ``inf`` with a single person (nobody to confuse the face with). When ``classes``
    holds the bystander class (:data:`facelab.items.OTHERS`, trained with ``--include-others``), that
    column is nobody: where it wins, the index is −1 (unknown whatever the threshold), and the score
    and margin are the best person's among the other columns.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-d (faces × classes), got shape {scores.shape}")
    person = _person_columns(classes, scores.shape[1])
    if person is None:
        return _top_two(scores)
    columns = np.flatnonzero(person)
    best, top, margin = _top_two(scores[:, columns])
    index = columns[best]
    index[~person[scores.argmax(axis=1)]] = -1
    return index, top, margin


def _person_columns(classes: list[str] | None, k: int) -> np.ndarray | None:
    """Mask of the columns that name a person, or None when every column does."""
    from facelab.items import OTHERS

    if classes is None or OTHERS not in classes:
        return None
    if len(classes) != k:
        raise ValueError(f"{k} score columns but {len(classes)} classes")
    mask = np.array([name != OTHERS for name in classes])
    return mask if mask.any() else None


def _top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, k = scores.shape
    if k == 0:
        raise ValueError("scores have no classes")
    best = scores.argmax(axis=1)
    top = scores[np.arange(n), best]
    if k == 1:
        return best, top, np.full(n, np.inf)
    second = np.partition(scores, k - 2, axis=1)[:, k - 2]
    return best, top, top - second


def named_right(index: np.ndarray, classes: list[str], truth: Sequence[str]) -> np.ndarray:
    """Per face, whether its best index (−1: nobody, see :func:`top_two`) names its true person."""
    return np.array([i >= 0 and classes[i] == t for i, t in zip(index, truth, strict=True)], dtype=bool)


def open_scores(scores: np.ndarray, classes: list[str] | None = None) -> np.ndarray:
    """The score each face's name is judged by: the best person's score, −inf where the bystander
    class wins (such a face is named at no threshold). What strangers are calibrated on."""
    index, top, _ = top_two(scores, classes)
    return np.where(index >= 0, top, -np.inf)


@dataclass(frozen=True)
class Decisions:
    """Open-set answers for n faces: ``index`` is −1 for unknown; ``lookalike`` flags small margins."""

    index: np.ndarray
    score: np.ndarray
    margin: np.ndarray
    lookalike: np.ndarray

    def names(self, classes: list[str], unknown: str = "unknown") -> list[str]:
        return [classes[i] if i >= 0 else unknown for i in self.index]


def decide(
    scores: np.ndarray, threshold: float | None, min_margin: float | None = None, classes: list[str] | None = None
) -> Decisions:
    """Best class per face, −1 (unknown) where its score is below ``threshold``.

    ``threshold=None`` never answers unknown (closed set) — except where the bystander class wins
    (``classes`` holding :data:`facelab.items.OTHERS`). A named face whose margin is below
    ``min_margin`` is flagged ``lookalike``.
    """
    best, top, margin = top_two(scores, classes)
    index = best.copy()
    if threshold is not None:
        index[top < threshold] = -1
    lookalike = np.zeros(len(index), dtype=bool)
    if min_margin is not None:
        lookalike = (index >= 0) & (margin < min_margin)
    return Decisions(index=index, score=top, margin=margin, lookalike=lookalike)


def recognitions(
    faces: Sequence[Face],
    scores: np.ndarray,
    classes: list[str],
    threshold: float | None,
    min_margin: float | None = None,
    top: int = 3,
) -> list[Recognition]:
    """Open-set answers for ``faces`` from their ``scores`` (faces × classes): name or unknown (None),
    score, margin, and the ``top`` people by score as candidates (the bystander class is nobody's
    name, so never a candidate)."""
    from facelab.items import OTHERS
    from facelab.types import Recognition

    if not len(faces):
        return []
    decisions = decide(scores, threshold, min_margin, classes)
    people = [j for j, name in enumerate(classes) if name != OTHERS]
    out = []
    for i, face in enumerate(faces):
        index = int(decisions.index[i])
        order = sorted(people, key=lambda j: -scores[i, j])[:top]
        out.append(
            Recognition(
                face=face,
                name=classes[index] if index >= 0 else None,
                score=float(decisions.score[i]),
                margin=float(decisions.margin[i]),
                candidates=tuple((classes[j], float(scores[i, j])) for j in order),
            )
        )
    return out


# -- rates and curves ---------------------------------------------------------------------------


def _as_arrays(
    genuine_scores: np.ndarray, genuine_correct: np.ndarray, stranger_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    genuine = np.asarray(genuine_scores, dtype=np.float64).ravel()
    correct = np.asarray(genuine_correct, dtype=bool).ravel()
    strangers = np.asarray(stranger_scores, dtype=np.float64).ravel()
    if genuine.shape != correct.shape:
        raise ValueError(f"{len(genuine)} genuine scores but {len(correct)} correctness flags")
    return genuine, correct, strangers


def rates_at(
    threshold: float | None,
    genuine_scores: np.ndarray,
    genuine_correct: np.ndarray,
    stranger_scores: np.ndarray,
) -> tuple[float, float]:
    """``(fpir, fnir)`` when faces scoring ``>= threshold`` get the best name (None: everybody does).

    FNIR counts a known face as a miss when it is rejected or when its best name is wrong. A rate
    with nothing to count (no strangers, no genuine faces) is NaN.
    """
    genuine, correct, strangers = _as_arrays(genuine_scores, genuine_correct, stranger_scores)
    fpir = float(np.mean(_named(strangers, threshold))) if len(strangers) else math.nan
    fnir = float(1.0 - np.mean(correct & _named(genuine, threshold))) if len(genuine) else math.nan
    return fpir, fnir


def _named(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which faces get a name: score at least the threshold; a −inf score (bystander class won) never."""
    return (scores > -np.inf) & (scores >= (-np.inf if threshold is None else threshold))


def det_curve(
    genuine_scores: np.ndarray, genuine_correct: np.ndarray, stranger_scores: np.ndarray
) -> dict[str, list[float]]:
    """FPIR and FNIR at every threshold where either changes (thresholds descending).

    Built on :func:`sklearn.metrics.roc_curve` with the correctly named known faces as positives
    and the strangers as negatives: FPIR is its false-positive rate, and FNIR = 1 − TPR × (share
    of known faces whose best name is right), because a misnamed face is a miss at every threshold.
    """
    from sklearn.metrics import roc_curve

    genuine, correct, strangers = _as_arrays(genuine_scores, genuine_correct, stranger_scores)
    if not len(genuine) or not len(strangers):
        return {"threshold": [], "fpir": [], "fnir": []}
    # A −inf score is named at no threshold; roc_curve wants finite scores, so put such faces
    # below every threshold the curve will list (its last point still names every finite one).
    finite = np.r_[genuine[np.isfinite(genuine)], strangers[np.isfinite(strangers)]]
    floor = (finite.min() if len(finite) else 0.0) - 1.0
    genuine = np.where(np.isfinite(genuine), genuine, floor)
    strangers = np.where(np.isfinite(strangers), strangers, floor)
    right = genuine[correct]
    if not len(right):
        # Nothing is ever named right: FNIR is 1 at every threshold; FPIR still varies.
        thresholds = np.unique(strangers[strangers > floor])[::-1]
        fpir = [float(np.mean(strangers >= t)) for t in thresholds]
        return {"threshold": thresholds.tolist(), "fpir": fpir, "fnir": [1.0] * len(fpir)}
    labels = np.r_[np.ones(len(right)), np.zeros(len(strangers))]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[right, strangers], drop_intermediate=False)
    fnir = 1.0 - tpr * (len(right) / len(genuine))
    # roc_curve's first point (threshold +inf) names nobody; points at the floor are unreachable.
    keep = np.isfinite(thresholds) & (thresholds > floor)
    return {
        "threshold": thresholds[keep].tolist(),
        "fpir": fpr[keep].tolist(),
        "fnir": fnir[keep].tolist(),
    }


def fnir_at_fpir(det: dict[str, list[float]], target_fpir: float) -> float:
    """The lowest FNIR of any threshold whose FPIR is at most ``target_fpir`` (1.0 if none is)."""
    fpir = np.asarray(det["fpir"])
    fnir = np.asarray(det["fnir"])
    ok = fpir <= target_fpir + 1e-12
    if not len(fpir):
        return math.nan
    return float(fnir[ok].min()) if ok.any() else 1.0


def equal_error_rate(det: dict[str, list[float]]) -> float:
    """Where FPIR and FNIR cross (the mean of the two at the closest point)."""
    if not det["fpir"]:
        return math.nan
    fpir = np.asarray(det["fpir"])
    fnir = np.asarray(det["fnir"])
    i = int(np.argmin(np.abs(fpir - fnir)))
    return float((fpir[i] + fnir[i]) / 2)


def evaluate_open_set(
    genuine_scores: np.ndarray,
    genuine_correct: np.ndarray,
    stranger_scores: np.ndarray,
    threshold: float | None,
    *,
    score_kind: str | None = None,
) -> dict:
    """Open-set figures of known faces and strangers at ``threshold``.

    ``genuine_scores``: best score of each known person's face; ``genuine_correct``: whether that
    best name is the right one; ``stranger_scores``: best score of each stranger's face.
    ``threshold=None`` means no unknown answer (every stranger gets a name).

    Returns fractions: ``fpir``, ``fnir`` (= ``rejected`` + ``misnamed``), ``fnir_at_fpir`` (the
    best FNIR any threshold reaches at FPIR 0.1%, 1%, 5%, 10% — from these very strangers, so it
    describes the model, not the calibration), ``eer``, and ``det`` (curve data: ``threshold``,
    ``fpir``, ``fnir`` lists, thresholds descending).
    """
    genuine, correct, strangers = _as_arrays(genuine_scores, genuine_correct, stranger_scores)
    fpir, fnir = rates_at(threshold, genuine, correct, strangers)
    accepted = _named(genuine, threshold)
    det = det_curve(genuine, correct, strangers)
    result = {
        "threshold": None if threshold is None else float(threshold),
        "fpir": fpir,
        "fnir": fnir,
        "rejected": float(np.mean(~accepted)) if len(genuine) else math.nan,
        "misnamed": float(np.mean(accepted & ~correct)) if len(genuine) else math.nan,
        "closed_set_accuracy": float(np.mean(correct)) if len(genuine) else math.nan,
        "n_genuine": len(genuine),
        "n_strangers": len(strangers),
        "fnir_at_fpir": {str(f): fnir_at_fpir(det, f) for f in REPORTED_FPIRS} if det["fpir"] else {},
        "eer": equal_error_rate(det),
        "det": det,
    }
    if score_kind is not None:
        result["score_kind"] = score_kind
    return result


# -- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """An open-set threshold and how it was chosen; saved as a run's ``openset.json``.

    ``fpir`` is measured on the calibration strangers, ``fnir`` on the genuine (validation)
    faces; ``min_margin`` is the look-alike margin (None when not calibrated).
    """

    threshold: float | None
    target_fpir: float
    fpir: float
    fnir: float
    n_strangers: int
    n_genuine: int
    score_kind: str
    stranger_source: str = ""
    min_margin: float | None = None
    lookalike_share_of_errors: float | None = None
    warning: str | None = None
    # Without a strangers folder (facelab.impostors): the share of strangers the evidence expects to
    # be named, the evidence itself (source, samples, people met), and both rates in plain words.
    expected_fpir: float | None = None
    evidence: list[dict] | None = None
    expected: str | None = None

    def to_json(self) -> dict:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def lookalike_margin(
    margins: np.ndarray | None, correct: np.ndarray, lookalike_share: float = 0.05
) -> tuple[float | None, float | None]:
    """The look-alike margin: below it ``lookalike_share`` of correctly named faces fall (5%: one right
    answer in twenty asks for confirmation); and the share of misnamed faces it catches. Raise
    ``lookalike_share`` to catch more misnamed faces. ``(None, None)`` without margins."""
    correct = np.asarray(correct, dtype=bool).ravel()
    if margins is None or not correct.any():
        return None, None
    m = np.asarray(margins, dtype=np.float64).ravel()
    finite = np.isfinite(m) & correct
    if not finite.any():
        return None, None
    min_margin = float(np.quantile(m[finite], lookalike_share))
    wrong = ~correct
    return min_margin, (float(np.mean(m[wrong] < min_margin)) if wrong.any() else None)


def strangers_needed(target_fpir: float) -> float:
    """How many strangers a threshold for ``target_fpir`` needs to hold on new people: 1/target − 1
    (99 for 1%; see :func:`threshold_for_fpir`); infinite for a target of 0."""
    return math.ceil(1 / target_fpir) - 1 if target_fpir > 0 else math.inf


def threshold_for_fpir(stranger_scores: np.ndarray, target_fpir: float) -> float:
    """The lowest threshold at which at most ``target_fpir`` of these strangers score ``>=`` it.

    With the strangers' scores sorted high to low and ``j = floor(target_fpir · n)``, it is the
    j-th highest score (just above the highest when j = 0), moved up past ties. For a new
    stranger drawn like these, the chance of being named is then j / (n + 1) < ``target_fpir``
    (the order-statistics argument of conformal prediction), so the target holds on new people
    too, not only on these — provided n ≥ 1/target_fpir − 1 strangers (99 for 1%).
    """
    scores = np.sort(np.asarray(stranger_scores, dtype=np.float64).ravel())[::-1]
    if not len(scores):
        raise ValueError("no stranger scores to calibrate on")
    if not 0.0 <= target_fpir < 1.0:
        raise ValueError(f"target_fpir must be in [0, 1), got {target_fpir}")
    j = math.floor(target_fpir * len(scores) + 1e-9)
    if j == 0:
        return float(np.nextafter(scores[0], np.inf))
    t = scores[j - 1]
    # Ties: every stranger scoring exactly t would be named, so move past them if too many.
    if np.sum(scores >= t) > j:
        t = np.nextafter(t, np.inf)
    return float(t)


def calibrate(
    stranger_scores: np.ndarray,
    genuine_scores: np.ndarray,
    genuine_correct: np.ndarray,
    target_fpir: float = DEFAULT_TARGET_FPIR,
    *,
    score_kind: str = "similarity",
    stranger_source: str = "",
    margins: np.ndarray | None = None,
    lookalike_share: float = 0.05,
) -> Calibration:
    """Choose the unknown threshold (and the look-alike margin) for a model.

    ``target_fpir``: the share of strangers allowed a name. 0.01 suits a photo library (one
    stranger in a hundred gets a wrong name); lower it for anything that grants access, raise it
    when missing a known person costs more than naming a stranger. Lower targets need more
    strangers (at least 1/target − 1) and cost FNIR — the DET curve shows how much.

    ``margins`` (best − second best of the genuine faces) enable the look-alike flag: the margin
    below which ``lookalike_share`` of correctly named faces fall (5%: one right answer in twenty
    asks for confirmation). Raise ``lookalike_share`` to catch more of the misnamed faces.
    """
    genuine, correct, strangers = _as_arrays(genuine_scores, genuine_correct, stranger_scores)
    warning = None
    needed = strangers_needed(target_fpir)
    if 0 < len(strangers) < needed:
        warning = (
            f"only {len(strangers)} strangers: FPIR {target_fpir:.2%} cannot be guaranteed on new people "
            f"(needs {needed}); the threshold names none of them"
        )
    threshold = threshold_for_fpir(strangers, target_fpir) if len(strangers) else None
    if threshold is None:
        warning = "no strangers to calibrate on: the model never answers unknown"
    fpir, fnir = rates_at(threshold, genuine, correct, strangers)
    min_margin, share = lookalike_margin(margins, correct, lookalike_share)
    return Calibration(
        threshold=threshold,
        target_fpir=float(target_fpir),
        fpir=fpir,
        fnir=fnir,
        n_strangers=len(strangers),
        n_genuine=len(genuine),
        score_kind=score_kind,
        stranger_source=stranger_source,
        min_margin=min_margin,
        lookalike_share_of_errors=share,
        warning=warning,
    )


# -- stranger folders ---------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stranger_files(folder: Path | str, part: str = "all") -> list[tuple[Path, str]]:
    """``(photo, sha256)`` of a stranger folder's photos, optionally one half of them.

    The halves are fixed by each file's content hash (even / odd first 32 bits), so they do not
    change when files are renamed or added, and copies of one photo always fall in one half.
    """
    from facelab.imageio import iter_image_files

    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"strangers folder {folder} does not exist: give a folder of photos of people "
            "who are not in the data set (one face each)"
        )
    out = []
    for path in iter_image_files(folder):
        try:
            sha = _sha256(path)
        except OSError:
            continue
        half = "calibration" if int(sha[:8], 16) % 2 == 0 else "evaluation"
        if part in ("all", half):
            out.append((path, sha))
    return out


@runtime_checkable
class StrangerScorer(Protocol):
    """A model that scores stranger folders itself (e.g. from cached embeddings)."""

    def stranger_scores(self, folder: Path, part: str = "all") -> np.ndarray: ...


def stranger_largest_faces(
    folder: Path | str, part: str = "all", detector: str | None = None
) -> Iterator[tuple[np.ndarray, Face]]:
    """``(rgb, face)``: each readable photo of a strangers folder's ``part`` with its largest face
    (photos that cannot be read or show no face are skipped) — the stranger every score is about."""
    from facelab.embedders import find_faces, largest_face
    from facelab.imageio import ImageError, load_rgb

    for path, _ in stranger_files(folder, part):
        try:
            rgb = load_rgb(path)
        except ImageError:
            continue
        face = largest_face(find_faces(rgb, detector))
        if face is not None:
            yield rgb, face


def stranger_scores(model: Model, folder: Path | str, part: str = "all", detector: str | None = None) -> np.ndarray:
    """Open score (:func:`open_scores`) of ``model`` for the largest face of each stranger photo
    (photos without a face skipped).

    Models that implement :class:`StrangerScorer` answer themselves (the embedding track caches
    stranger embeddings by file hash); any other model gets each photo's largest face.
    """
    if isinstance(model, StrangerScorer):
        return np.asarray(model.stranger_scores(Path(folder), part), dtype=np.float64)
    best = [
        float(open_scores(model.predict_faces(rgb, [face]), model.classes)[0])
        for rgb, face in stranger_largest_faces(folder, part, detector)
    ]
    return np.asarray(best, dtype=np.float64)
