"""Following faces from frame to frame, and naming each followed face by a vote.

A video shows the same person for hundreds of frames. Classifying every face in every frame is
slow and noisy (a blink, motion blur or a turned head gives one bad answer), so faces are
*tracked*: detections of consecutive detection rounds are linked by box overlap (IoU) with an
optimal one-to-one assignment (the Hungarian method, :func:`scipy.optimize.linear_sum_assignment`),
and each track's name is decided by a vote over the answers it collected, weighted by face size.

This is the IoU matching of SORT (Bewley et al., 2016) without its Kalman filter: at video rates
(detections at least every few frames) a face moves a fraction of its size between rounds, so
plain overlap links it reliably, and twenty lines replace a dependency. Scene cuts (a face of
somebody else appearing where the last face was) are handled by the caller ending every track
(:meth:`IoUTracker.end_all`), see :func:`is_scene_cut`.
"""

from __future__ import annotations

from collections import defaultdict
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

    @property
    def box(self) -> Box:
        return self.face.box

    def vote(self, name: str | None, score: float, weight: float) -> None:
        """Add one answer. ``weight`` is the face's size (see :func:`face_weight`)."""
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
        """
        if not self.votes:
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

    def end_all(self) -> list[Track]:
        """End every active track (a scene cut, the end of the video); returns them."""
        ended, self.active = self.active, []
        self.finished.extend(ended)
        return ended

    def all_tracks(self) -> list[Track]:
        """Finished and active tracks, in the order they started."""
        return sorted(self.finished + self.active, key=lambda t: t.id)


def thumbnail(gray: np.ndarray, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """A tiny float copy of a grayscale frame for :func:`is_scene_cut`."""
    import cv2

    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def is_scene_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float = 30.0) -> bool:
    """Whether two frame thumbnails differ like a cut rather than like motion.

    Mean absolute difference of 32×24 grayscale thumbnails, in 0..255 levels: a camera pan or a
    person moving changes a few levels on average, a cut to another shot tens. ``threshold``
    30 separates the two on our test videos; lower it if cuts between similar shots keep one
    track (a cut that goes unnoticed can hand one person's track to the next person), raise it if
    flashes or fast pans end tracks.
    """
    if previous is None:
        return False
    return float(np.mean(np.abs(current - previous))) > threshold
