"""Following faces from frame to frame, and naming each followed face by a vote.

A video shows the same person for hundreds of frames. Classifying every face in every frame is
slow and noisy (a blink, motion blur or a turned head gives one bad answer), so faces are
*tracked*: detections of consecutive detection rounds are linked by box overlap (IoU) with an
optimal one-to-one assignment (the Hungarian method, :func:`scipy.optimize.linear_sum_assignment`),
and each track's name is decided by a vote over the answers it collected, weighted by face size.

This is the IoU matching of SORT (Bewley et al., 2016) without its Kalman filter: at video rates
(detections at least every few frames) a face moves a fraction of its size between rounds, so
plain overlap links it reliably, and twenty lines replace a dependency.

Overlap says nothing about *who* is in the box, so two guards keep a track from carrying one
person's name onto somebody else who appears where the last face was:

* **Shot cuts** (:class:`ShotCutDetector`): the caller ends every track
  (:meth:`IoUTracker.end_all`) when the picture changes like a cut, judged against the clip's own
  recent frame-to-frame changes (an adaptive threshold), not one fixed number.
* **Identity drift** (:meth:`Track.identity_distance`, :meth:`IoUTracker.split`): whenever a
  track's face is embedded, the vector is compared with the track's own running identity; a face
  that moved away from it starts a new track. A cheap per-face appearance test
  (:func:`face_signature`, :func:`structure_distance`) tells the caller when to embed early, so a
  swap that the frame test misses (same background, only the face changes) is caught at once.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from facelab.types import Box, Face

UNKNOWN = "unknown"


@dataclass
class Track:
    """One face followed over frames.

    ``votes`` maps a name (``"unknown"`` included) to the summed weight of the answers that gave
    it; ``scores`` to the weighted sum of the model's scores for it, so :attr:`score` is the
    weight-averaged confidence of the winning name.
    """

    id: int
    face: Face
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    hits: int = 1
    missed: int = 0
    classified: int = 0
    classified_frame: int = -1
    classified_box: Box | None = None
    votes: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    scores: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    largest: float = 0.0
    announced: bool = False
    # Identity: the running mean of the face vectors the track collected, and the latest one.
    prototype: np.ndarray | None = field(default=None, repr=False)
    last_vector: np.ndarray | None = field(default=None, repr=False)
    vectors: int = 0
    # Appearance since the last identity check: the face's signature at the latest round, and
    # every round since the check as (frame, time, appearance jump from the round before).
    signature: np.ndarray | None = field(default=None, repr=False)
    unchecked: list[tuple[int, float, float]] = field(default_factory=list, repr=False)
    suspect: bool = False
    # Naming in a worker (facelab.recognize_video): a naming of this track's face is on its way
    # (the track is not queued again meanwhile), and whether it is the check of a face that changed
    # suddenly (``suspect`` when it was sent): until it is back the track shows no name.
    in_flight: bool = False
    doubted: bool = False

    @property
    def box(self) -> Box:
        return self.face.box

    def identity_distance(self, vector: np.ndarray) -> float:
        """How far a new face vector is from this track's identity (0.0 before any vector).

        The smaller of the euclidean distances to the track's mean vector and to its latest
        vector: the mean is steady against one odd frame, the latest follows a head that turns
        slowly, so only a face far from both (somebody else) counts as drift.
        """
        if self.prototype is None or self.last_vector is None:
            return 0.0
        v = np.asarray(vector, dtype=np.float64)
        return float(min(np.linalg.norm(v - self.prototype), np.linalg.norm(v - self.last_vector)))

    def remember(self, vector: np.ndarray) -> None:
        """Fold a vector of this track's face into its identity (call after the drift check)."""
        v = np.asarray(vector, dtype=np.float64)
        self.vectors += 1
        self.prototype = v.copy() if self.prototype is None else self.prototype + (v - self.prototype) / self.vectors
        self.last_vector = v

    def vote(self, name: str | None, score: float, weight: float) -> None:
        """Add one answer. ``weight`` is the face's size (see :func:`face_weight`).

        The winning name can only change to the name just voted, so a track is re-named only by
        the face in front of the camera now; callers check that face against the track's identity
        first (:meth:`identity_distance`) and split the track instead of voting when it drifted.
        """
        key = name if name is not None else UNKNOWN
        weight = max(float(weight), 1e-6)
        self.votes[key] += weight
        self.scores[key] += weight * float(score)
        self.classified += 1

    @property
    def name(self) -> str | None:
        """The name with the largest total weight; ``"unknown"`` for strangers, None before any vote.

        Because every earlier answer keeps its weight, one bad frame cannot flip a name that
        several frames agreed on: it would need more weight than all of them together.

        Also None while the track is :attr:`doubted`: its face changed suddenly and the check of
        who it is now is still being computed (naming in a worker), so the name of the person the
        track followed so far is not shown on a face that may be somebody else's. The votes stay;
        the name is back as soon as the check confirms the person.
        """
        if not self.votes or self.doubted:
            return None
        # On an exact tie, unknown wins: naming a stranger is the worse mistake.
        return max(self.votes.items(), key=lambda kv: (kv[1], kv[0] == UNKNOWN))[0]

    @property
    def score(self) -> float:
        """Weight-averaged model score of the winning name (NaN before any vote)."""
        name = self.name
        if name is None:
            return float("nan")
        return self.scores[name] / self.votes[name]

    @property
    def agreement(self) -> float:
        """Share of the vote's total weight that went to the winning name (1.0: unanimous)."""
        name = self.name
        if name is None:
            return float("nan")
        return self.votes[name] / sum(self.votes.values())

    @property
    def label(self) -> str:
        return self.name or "?"


def face_weight(box: Box) -> float:
    """A face's vote weight: its shorter side in pixels.

    Bigger faces carry more detail, so their answers count more; the side (not the area) keeps a
    close-up from outvoting a whole sequence of medium faces by the square of the size ratio.
    """
    return max(1.0, min(box.width, box.height))


def iou_matrix(a: list[Box], b: list[Box]) -> np.ndarray:
    """Pairwise IoU ``(len(a), len(b))`` of two box lists, vectorised."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    aa = np.array([(x.x1, x.y1, x.x2, x.y2) for x in a], dtype=np.float64)[:, None, :]
    bb = np.array([(x.x1, x.y1, x.x2, x.y2) for x in b], dtype=np.float64)[None, :, :]
    ix = np.clip(np.minimum(aa[..., 2], bb[..., 2]) - np.maximum(aa[..., 0], bb[..., 0]), 0, None)
    iy = np.clip(np.minimum(aa[..., 3], bb[..., 3]) - np.maximum(aa[..., 1], bb[..., 1]), 0, None)
    inter = ix * iy
    area_a = (aa[..., 2] - aa[..., 0]) * (aa[..., 3] - aa[..., 1])
    area_b = (bb[..., 2] - bb[..., 0]) * (bb[..., 3] - bb[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(tracks: list[Box], detections: list[Box], min_iou: float) -> list[tuple[int, int]]:
    """Optimal one-to-one pairs ``(track index, detection index)`` with IoU ≥ ``min_iou``."""
    from scipy.optimize import linear_sum_assignment

    iou = iou_matrix(tracks, detections)
    if not iou.size:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


class IoUTracker:
    """Links detections of successive detection rounds into :class:`Track` objects.

    Tuning:

    * ``min_iou`` (0.3): overlap needed to continue a track. Lower it when faces move fast
      relative to the detection interval (sports, detecting every many frames); raise it when
      people cross each other often.
    * ``max_missed`` (5): detection rounds a track survives without a matching face (a blink, a
      hand in front, a missed detection) before it ends. Raise it for flaky detectors; lower it
      when people leave and others step into the same place.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5) -> None:
        self.min_iou = float(min_iou)
        self.max_missed = int(max_missed)
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], frame: int, time_s: float) -> tuple[list[Track], list[Track]]:
        """Feed one detection round; returns ``(tracks seen this round, tracks that just ended)``.

        The first list holds one track per face, in the order of ``faces``; new faces start new
        tracks (``hits == 1``).
        """
        pairs = match([t.box for t in self.active], [f.box for f in faces], self.min_iou)
        seen: list[Track | None] = [None] * len(faces)
        matched_tracks = set()
        for ti, fi in pairs:
            track = self.active[ti]
            track.face, track.last_frame, track.last_time = faces[fi], frame, time_s
            track.hits += 1
            track.missed = 0
            seen[fi] = track
            matched_tracks.add(ti)
        ended = []
        still = []
        for ti, track in enumerate(self.active):
            if ti in matched_tracks:
                still.append(track)
                continue
            track.missed += 1
            (ended if track.missed > self.max_missed else still).append(track)
        for fi, face in enumerate(faces):
            if seen[fi] is None:
                track = Track(
                    id=self._next_id,
                    face=face,
                    first_frame=frame,
                    last_frame=frame,
                    first_time=time_s,
                    last_time=time_s,
                )
                self._next_id += 1
                still.append(track)
                seen[fi] = track
        for track in seen:
            assert track is not None
            track.largest = max(track.largest, face_weight(track.box))
        self.active = still
        self.finished.extend(ended)
        return [t for t in seen if t is not None], ended

    def split(self, track: Track, face: Face, end: tuple[int, float], start: tuple[int, float], hits: int) -> Track:
        """End ``track`` at ``end`` (frame, time) and continue its place with a new track from ``start``.

        For a face that turned out to be somebody else (identity drift): the old track keeps only
        the rounds before the change, the new one (holding ``face``, seen in ``hits`` rounds since
        ``start``) takes over its position in :attr:`active`, so matching goes on from it. A track
        that has already ended (a naming computed in a worker can come back after a cut) is split
        all the same, and both parts stay finished.
        """
        new = Track(
            id=self._next_id,
            face=face,
            first_frame=start[0],
            last_frame=track.last_frame,
            first_time=start[1],
            last_time=track.last_time,
            hits=max(1, hits),
            largest=face_weight(face.box),
            signature=track.signature,
        )
        self._next_id += 1
        track.last_frame, track.last_time = end
        track.hits = max(1, track.hits - new.hits)
        if any(t is track for t in self.active):
            self.active = [new if t is track else t for t in self.active]
            self.finished.append(track)
        else:
            new.missed = track.missed
            self.finished.append(new)
        return new

    def end_all(self) -> list[Track]:
        """End every active track (a scene cut, the end of the video); returns them."""
        ended, self.active = self.active, []
        self.finished.extend(ended)
        return ended

    def all_tracks(self) -> list[Track]:
        """Finished and active tracks, in the order they started."""
        return sorted(self.finished + self.active, key=lambda t: t.id)


def structure_distance(previous: np.ndarray, current: np.ndarray, shift: int) -> float:
    """1 − the best normalised correlation of two same-size grayscale signatures, over shifts of up
    to ``shift`` pixels either way (0: the same picture, however much brighter or darker; towards 1:
    unrelated pictures).

    Correlation ignores brightness and contrast (a dark stage and the same stage lit score alike),
    and trying small shifts forgives camera motion, so what is left is a change of *content*. Two
    flat signatures (black frames) are the same; a flat one against a textured one is a change.
    """
    import cv2

    prev = np.asarray(previous, dtype=np.float32)
    cur = np.asarray(current, dtype=np.float32)
    flat_prev, flat_cur = float(prev.std()) < _FLAT, float(cur.std()) < _FLAT
    if flat_prev or flat_cur:
        return 0.0 if flat_prev and flat_cur else 1.0
    template = cur[shift : cur.shape[0] - shift, shift : cur.shape[1] - shift] if shift else cur
    if float(template.std()) < _FLAT:
        return 1.0
    best = float(cv2.matchTemplate(prev, template, cv2.TM_CCOEFF_NORMED).max())
    return float(min(1.0, max(0.0, 1.0 - best)))


# Grey levels of standard deviation below which a signature has no structure to correlate.
_FLAT = 2.0


def frame_signature(gray: np.ndarray, size: tuple[int, int] = (64, 48), blur: float = 1.0) -> np.ndarray:
    """A tiny float copy of a grayscale frame (``size`` = width, height) for :class:`ShotCutDetector`.

    ``blur`` (Gaussian σ in signature pixels) removes detail finer than the signature can align:
    whole-pixel shifts cannot follow a half-pixel pan of a fine pattern (a leopard print, small
    print), which then decorrelates like a cut; measured, σ 1 cut the largest within-shot
    distance by 5× and the smallest cut's by 1.5×.
    """
    import cv2

    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(small, (0, 0), blur) if blur > 0 else small


def face_signature(gray: np.ndarray, box: Box, side: int = 24) -> np.ndarray | None:
    """The face's pixels as a ``side``×``side`` grayscale signature (None for a box off the frame).

    Compared round to round with :func:`structure_distance` it tells, for a few microseconds, that
    the face in a track's box changed (somebody else stepped in) between two embeddings.
    """
    import cv2

    height, width = gray.shape[:2]
    x1, y1, x2, y2 = box.clip(width, height).as_ints()
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return cv2.resize(gray[y1:y2, x1:x2], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


class ShotCutDetector:
    """Tells shot cuts from motion, frame by frame, with a threshold that adapts to the clip.

    Each frame is shrunk to a ``size`` grayscale signature and compared with the previous one by
    :func:`structure_distance` (brightness-proof, motion-tolerant). A frame is a cut when its
    distance exceeds both the absolute ``floor`` and ``median + k × σ`` of the last ``window``
    non-cut distances (σ = 1.4826 × median absolute deviation, a spread that one earlier cut or
    flash does not inflate). The floor keeps a static clip (distances near 0) from calling a small
    change a cut; the adaptive part keeps a shaky or busy clip (many large distances) from calling
    every frame one.

    Measured on 54 clips made of the shared photos (10–12 held shots each, cuts at random, tested
    every 2nd frame; within shots: drift, pans up to 16 px/frame, shake, ±1–3% zoom, exposure
    flicker, dim shots, noise, JPEG; ``tests/test_video_identity.py`` rebuilds a part of them):
    within-shot distances had a median of 0.001–0.006 and reached at most 0.031; cuts between
    different photos scored ≥ 0.22, cuts between two framings of one photo (a second camera on the
    same scene, the hardest case) ≥ 0.10. With the defaults all 582 cuts were found and none of
    the 7,322 within-shot tests was called a cut (floors 0.05–0.08 all did as well). The old fixed test
    (mean grey-level difference > 30) misses cuts between dim shots, as on the stage show where
    three cuts scored 26.5–29.6; correlation does not depend on the light. HSV colour histograms
    (H×S, Bhattacharyya) were tried and dropped: on the same clips within-shot distances reached
    0.53 (hue is noise in dim, grey pixels) while re-framing cuts scored from 0.09.

    Tuning:

    * ``floor`` (0.06): lower it if cuts between similar shots go unnoticed (each one then relies
      on the identity check to split tracks), raise it if fast camera moves end tracks.
    * ``k`` (6): how far above the clip's usual change a cut must be; raise it for handheld or
      action video, lower it for tripod footage.
    * ``window`` (30 tests) / ``min_samples`` (8): how much recent history sets the adaptive part,
      and how much is needed before it applies (until then only the floor does).
    * ``shift`` (5 px of the 64-px signature, ~8% of the frame width): camera motion forgiven
      between two tests; raise it with ``detect_every`` (more motion between tests).
    * ``blur`` (1.0): see :func:`frame_signature`.
    """

    def __init__(
        self,
        floor: float = 0.06,
        k: float = 6.0,
        window: int = 30,
        min_samples: int = 8,
        size: tuple[int, int] = (64, 48),
        shift: int = 5,
        blur: float = 1.0,
    ) -> None:
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"cut floor {floor} must lie between 0 and 1 (a structure distance)")
        if 2 * shift >= min(size):
            raise ValueError(f"shift {shift} is too large for a {size[0]}×{size[1]} signature")
        self.floor = float(floor)
        self.k = float(k)
        self.min_samples = int(min_samples)
        self.size = size
        self.shift = int(shift)
        self.blur = float(blur)
        self._recent: deque[float] = deque(maxlen=max(1, int(window)))
        self._previous: np.ndarray | None = None
        self.distance = math.nan
        self.cuts = 0

    @property
    def threshold(self) -> float:
        """The distance a frame must exceed now to count as a cut."""
        if len(self._recent) < self.min_samples:
            return self.floor
        recent = np.fromiter(self._recent, dtype=np.float64)
        median = float(np.median(recent))
        sigma = 1.4826 * float(np.median(np.abs(recent - median)))
        return max(self.floor, median + self.k * sigma)

    def update(self, gray: np.ndarray) -> bool:
        """Feed the next tested frame (grayscale, any size); True when it starts a new shot."""
        signature = frame_signature(gray, self.size, self.blur)
        previous, self._previous = self._previous, signature
        if previous is None:
            return False
        self.distance = structure_distance(previous, signature, self.shift)
        # The threshold is never below the floor: most frames are settled without the median.
        if self.distance > self.floor and self.distance > self.threshold:
            self.cuts += 1
            return True
        # Only within-shot changes describe the clip's motion; a cut would raise the bar for the next.
        self._recent.append(self.distance)
        return False
