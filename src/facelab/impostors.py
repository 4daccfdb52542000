"""Evidence about strangers when the user gave no strangers folder, and the threshold it supports.

A stranger who walks past a door camera is compared with *every* known person; they are named if
any one of them is close enough. So the share of strangers named (FPIR) grows with the gallery: with
a per-person false-match rate ``p``, a stranger meeting ``N`` people is named with probability about
``1 − (1 − p)^N`` (for positively related matches — look-alikes of one person tend to look like
others too — this is an upper bound, so a threshold chosen with it errs on the safe side). A
distance read off one-person models therefore names far more strangers in a 60-person workspace.

Impostor evidence here is always scored against the user's *own* gallery (the fitted head), so
each impostor meets the people a real stranger would meet:

* ``reference`` — face embeddings of 999 people who are nobody's people, shipped with facelab
  (:mod:`facelab.reference`; no photos). Each meets all ``N`` people. Enough for any gallery size,
  but they are news photos of mostly Western adults: a family's real strangers (neighbours,
  couriers) come from the family's own population and look more alike.
* ``people`` — leave-one-person-out: each of the user's people in turn is left out of the gallery
  and all their faces play strangers to the others (``N − 1`` people met; corrected to ``N``). This
  is evidence from the user's own population, plentiful in large galleries, thin in small ones, and
  strict where the people are related (siblings are each other's best impostors).
* ``bystanders`` — faces in the user's photos that match none of the people (``N`` met).
* ``strangers`` — a strangers folder, when the user gives one (its calibration half).

:func:`choose_threshold` takes the threshold at which the *mixture* of these sources (equal weight
per source that has enough samples to speak about the target; see :data:`MIN_SOURCE_SAMPLES`)
names at most ``target_fpir`` of strangers meeting all ``N`` people, then never goes below what the
reference set alone requires. Measured galleries of 1–10 people from the shared sets are in
docs/benchmarks.md ("Unknown without a strangers folder").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from facelab import openset

# A source needs this many impostors before it may move a threshold: 1/target − 1 = 99 for 1%
# (see facelab.openset.strangers_needed); fewer cannot tell 1% from 0%.
MIN_SOURCE_SAMPLES = 99

# Faces smaller than this (shorter side, pixels) are not named by facelab recognize (its --min-face
# default), so reference faces below it are not evidence about what recognition will do.
DEFAULT_MIN_FACE = openset.MIN_FACE

# What the ``floor`` of :func:`choose_threshold` is when the caller does not say.
DEFAULT_FLOOR_REASON = "measured default distance"

SOURCE_WORDS = {
    "strangers": "your strangers folder",
    "reference": "reference strangers shipped with facelab (LFW embeddings)",
    "people": "your own people, each left out in turn",
    "bystanders": "bystanders in your photos who match none of your people",
}


@dataclass(frozen=True)
class Evidence:
    """Impostors of one source: their best ``scores`` against the people each ``faced``."""

    source: str
    scores: np.ndarray
    faced: int

    @property
    def n(self) -> int:
        return len(self.scores)

    def fpir(self, threshold: float, n_people: int) -> float:
        """Estimated share of strangers meeting ``n_people`` people named at ``threshold``."""
        if not self.n:
            return math.nan
        met = float(np.mean(self.scores >= threshold))
        return corrected_rate(met, self.faced, n_people)


def corrected_rate(rate: float, faced: int, n_people: int) -> float:
    """A false-match rate seen by impostors who each ``faced`` people, for impostors meeting
    ``n_people``: ``1 − (1 − rate)^(n_people / faced)`` (independent matches; see the module)."""
    if faced <= 0 or faced == n_people or rate >= 1.0:
        return rate
    return 1.0 - (1.0 - rate) ** (n_people / faced)


@dataclass(frozen=True)
class EvidenceUse:
    """How one source bore on the chosen threshold (written to ``openset.json``)."""

    source: str
    words: str
    n: int
    faced: int
    fpir_at_threshold: float | None
    used: bool


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float | None
    expected_fpir: float | None
    evidence: tuple[EvidenceUse, ...]
    decided_by: str

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "expected_fpir": self.expected_fpir,
            "decided_by": self.decided_by,
            "evidence": [
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(e).items()}
                for e in self.evidence
            ],
        }


def _mixture_fpir(sources: Sequence[Evidence], threshold: float, n_people: int) -> float:
    return float(np.mean([s.fpir(threshold, n_people) for s in sources]))


def _lowest_threshold(fpir_at: Callable[[float], float], candidates: np.ndarray, target: float) -> float:
    """The lowest candidate threshold whose estimated FPIR is at most ``target`` (FPIR falls as the
    threshold rises, so a binary search over the sorted candidates)."""
    lo, hi = 0, len(candidates) - 1
    if fpir_at(candidates[lo]) <= target:
        return float(candidates[lo])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fpir_at(candidates[mid]) <= target:
            hi = mid
        else:
            lo = mid
    return float(candidates[hi])


def choose_threshold(
    sources: Sequence[Evidence],
    n_people: int,
    target_fpir: float,
    floor: float | None = None,
    floor_reason: str = DEFAULT_FLOOR_REASON,
) -> ThresholdChoice:
    """The unknown threshold for a gallery of ``n_people`` from impostor ``sources``.

    A ``strangers`` source (the user's strangers folder) with enough samples decides alone: the
    user's own strangers are the best evidence there is. Otherwise the equal-weight mixture of the
    sources with at least :data:`MIN_SOURCE_SAMPLES` impostors must name at most ``target_fpir`` of
    strangers meeting all ``n_people``, the ``reference`` source alone must too (so thin
    own-population evidence never loosens it), and a smaller strangers folder must see none of its
    strangers named. With no usable source, ``floor`` (a measured default; ``floor_reason`` says
    what it is, in words) is used. Raise
    ``target_fpir`` to miss fewer of your people, lower it to name fewer strangers.
    """
    usable = [s for s in sources if s.n >= MIN_SOURCE_SAMPLES]
    folder = [s for s in usable if s.source == "strangers"]
    deciding = folder or usable
    small_folder = [s for s in sources if s.source == "strangers" and 0 < s.n < MIN_SOURCE_SAMPLES]
    everything = [*deciding, *small_folder]
    threshold: float | None
    if not everything:
        threshold, decided = floor, f"{floor_reason} (no impostor evidence)"
    else:
        finite = np.concatenate([s.scores[np.isfinite(s.scores)] for s in everything])
        top = float(finite.max()) if len(finite) else 0.0
        candidates = np.unique(np.r_[finite, np.nextafter(top, np.inf)])
        bounds: list[tuple[float, str]] = []
        if deciding:
            bounds.append(
                (
                    _lowest_threshold(lambda t: _mixture_fpir(deciding, t, n_people), candidates, target_fpir),
                    " + ".join(s.source for s in deciding),
                )
            )
        for s in deciding:
            if s.source == "reference" and len(deciding) > 1:
                bounds.append(
                    (_lowest_threshold(lambda t, s=s: s.fpir(t, n_people), candidates, target_fpir), s.source)
                )
        for s in small_folder:
            bounds.append(
                (_lowest_threshold(lambda t, s=s: s.fpir(t, s.faced), candidates, 0.0), "strangers (none named)")
            )
        threshold, decided = max(bounds, key=lambda bound: bound[0])
        if not deciding and floor is not None and floor > threshold:
            threshold, decided = floor, floor_reason
    uses = tuple(
        EvidenceUse(
            source=s.source,
            words=SOURCE_WORDS.get(s.source, s.source),
            n=s.n,
            faced=s.faced,
            fpir_at_threshold=s.fpir(threshold, n_people) if threshold is not None else None,
            used=s in everything,
        )
        for s in sources
    )
    expected = _mixture_fpir(deciding, threshold, n_people) if deciding and threshold is not None else None
    return ThresholdChoice(threshold=threshold, expected_fpir=expected, evidence=uses, decided_by=decided)


# -- gathering evidence -------------------------------------------------------------------------

Scorer = Callable[[np.ndarray], np.ndarray]
"""Open scores (best person, −inf where the bystander class wins) of vectors against a gallery."""


def reference_evidence(
    score: Scorer, embedder: str, min_face: float = DEFAULT_MIN_FACE, n_people: int = 1
) -> Evidence | None:
    """Each shipped reference photo's best score on any usable face (a photo is named if any face is)."""
    from facelab.reference import reference_faces

    faces = reference_faces(embedder)
    if faces is None:
        return None
    faces = faces.usable(min_face)
    if not len(faces.vectors):
        return None
    per_face = score(faces.vectors)
    photos, inverse = np.unique(faces.photo, return_inverse=True)
    best = np.full(len(photos), -np.inf)
    np.maximum.at(best, inverse, per_face)
    return Evidence("reference", best, n_people)


def people_evidence(
    fit_and_score: Callable[[np.ndarray, np.ndarray, list[str]], Scorer],
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    person_classes: Sequence[int],
) -> Evidence | None:
    """Leave-one-person-out: for each person of ``person_classes`` (indices into ``classes``), fit on
    everybody else and score all that person's faces. ``fit_and_score(x, y, kept_class_names)`` fits a head
    and returns its scorer; the bystander class, if any, stays in every fit. A fit the head refuses
    (e.g. a linear head left with one person) is skipped."""
    people = list(person_classes)
    if len(people) < 2:
        return None
    out = []
    for person in people:
        keep = y != person
        kept = np.unique(y[keep])
        if not np.any(y == person) or not any(c in people for c in kept):
            continue
        relabel = np.full(len(classes), -1, dtype=np.int64)
        relabel[kept] = np.arange(len(kept))
        try:
            scorer = fit_and_score(x[keep], relabel[y[keep]], [classes[c] for c in kept])
        except ValueError:
            continue
        out.append(scorer(x[y == person]))
    if not out:
        return None
    return Evidence("people", np.concatenate(out), len(people) - 1)


def expected_words(expected_fpir: float | None, fnir: float | None) -> str:
    """The expected rates in plain words, e.g. "about 1 in 100 strangers may be given a name; about 3
    in 100 photos of your people may be missed"."""
    parts = []
    if expected_fpir is not None and math.isfinite(expected_fpir):
        parts.append(
            f"{_per_100(expected_fpir)} in 100 strangers may be given a name"
            if expected_fpir > 0
            else "strangers should not be given a name"
        )
    if fnir is not None and math.isfinite(fnir):
        parts.append(
            f"{_per_100(fnir)} in 100 faces of your people may be missed or misnamed"
            if fnir > 0
            else "none of your people's validation faces was missed or misnamed"
        )
    return "; ".join(parts)


def _per_100(rate: float) -> str:
    value = 100 * rate
    if value == 0:
        return "none"
    if value < 0.5:
        return "fewer than 1"
    return f"about {value:.0f}"


def calibrate_gallery(
    sources: Sequence[Evidence],
    n_people: int,
    genuine_scores: np.ndarray,
    genuine_correct: np.ndarray,
    target_fpir: float = 0.01,
    *,
    score_kind: str = "similarity",
    margins: np.ndarray | None = None,
    floor: float | None = None,
    floor_reason: str = DEFAULT_FLOOR_REASON,
) -> openset.Calibration:
    """The unknown threshold of a model of ``n_people`` from impostor ``sources`` (see
    :func:`choose_threshold`), with its expected rates: FPIR from the evidence, FNIR from the
    genuine (validation) faces at that threshold, both also in plain words; a warning when the
    evidence is thin. ``floor`` is used when no source has enough impostors (``floor_reason``: what
    it is, in words, for ``openset.json`` and the warning)."""
    genuine = np.asarray(genuine_scores, dtype=np.float64).ravel()
    correct = np.asarray(genuine_correct, dtype=bool).ravel()
    choice = choose_threshold(sources, n_people, target_fpir, floor, floor_reason)
    _, fnir = openset.rates_at(choice.threshold, genuine, correct, np.zeros(0))
    min_margin, share = openset.lookalike_margin(margins, correct)
    used = [e for e in choice.evidence if e.used]
    warning = _thin_evidence_warning(choice, n_people, len(genuine), floor_reason)
    deciding = [s for s in sources if s.source in {e.source for e in used}]
    return openset.Calibration(
        threshold=choice.threshold,
        target_fpir=float(target_fpir),
        fpir=math.nan if choice.expected_fpir is None else choice.expected_fpir,
        fnir=fnir,
        n_strangers=sum(s.n for s in deciding),
        n_genuine=len(genuine),
        score_kind=score_kind,
        stranger_source="; ".join(f"{e.words} ({e.n})" for e in used) or choice.decided_by,
        min_margin=min_margin,
        lookalike_share_of_errors=share,
        warning=warning,
        expected_fpir=choice.expected_fpir,
        evidence=choice.to_json()["evidence"],
        expected=expected_words(choice.expected_fpir, fnir if len(genuine) else None),
    )


def _thin_evidence_warning(
    choice: ThresholdChoice, n_people: int, n_genuine: int, floor_reason: str = DEFAULT_FLOOR_REASON
) -> str | None:
    used = {e.source for e in choice.evidence if e.used}
    notes = []
    if not used:
        notes.append(f"no impostor evidence enough for the target: using the {floor_reason}")
    elif "strangers" not in used and "people" not in used and "bystanders" not in used:
        notes.append(
            "only the reference strangers shipped with facelab set the threshold: strangers who look like "
            "your people (same family or population) may be named more often"
        )
    if n_genuine < 20:
        notes.append(f"only {n_genuine} validation faces: the expected miss rate is rough")
    if not notes:
        return None
    return (
        "; ".join(notes)
        + "; give --strangers DIR (photos of ~100+ people who are none of yours, from your camera) "
        + "to calibrate for your photos"
    )
