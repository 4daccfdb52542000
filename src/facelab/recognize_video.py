"""Recognizing people through a video, a webcam or a stream: tracks of faces, a name per track.

Faces are detected on a shrunken copy of every k-th frame, linked into tracks
(:mod:`facelab.tracking`), and a track is classified only when it is new, every N frames, when its
box changed much, or when the face in its box changed; its name is a vote over those answers
weighted by face size. A shot cut ends every track, and a face whose embedding moved away from its
track's identity starts a new track, so no track (and no summary line) carries one person's name
onto another. See :class:`VideoOptions` for tuning.

The photo core (:mod:`facelab.recognize`) imports this module, so it is imported here only where
it is used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.recognize_capture import LatestFrameReader, open_capture
from facelab.recognize_inputs import LIVE_KINDS, Source
from facelab.tracking import (
    IoUTracker,
    ShotCutDetector,
    Track,
    face_signature,
    face_weight,
    structure_distance,
)
from facelab.types import Face, Recognition

if TYPE_CHECKING:
    from facelab.recognize import Recognizer

TRACK_COLUMNS = ("file", "track", "name", "score", "agreement", "start_s", "end_s", "frames")


@dataclass(frozen=True)
class VideoOptions:
    """How video is processed; the defaults aim at real time for 640×480 on 2 CPU cores.

    * ``detect_every`` (2): detect faces on every k-th frame; boxes stay put in between. Raise it
      for speed (3–5 is fine for people talking or walking slowly), lower to 1 for fast motion.
    * ``detect_size`` (320): longest side of the copy the detector sees. RetinaFace then finds
      faces from about 16 px *in that copy*, i.e. 32 px in a 640-px frame, 96 px in 1920-px
      video: raise it for small or distant faces (time grows with the pixel count).
    * ``min_face`` (40): ignore faces whose shorter side (in frame pixels) is smaller; small faces
      are named poorly and cost as much as big ones.
    * ``reclassify_every`` (25): frames between two classifications of a track (about once a
      second at 25 fps). Lower it for more votes (slower), raise it for speed.
    * ``reclassify_iou`` (0.5): a track is also re-classified when its box overlaps its box at the
      last classification by less than this (the face moved or turned much).
    * ``warmup`` (2): a new track is classified on each of its first ``warmup`` detection rounds,
      so its name rests on more than one frame before it is announced. Raise it when arrivals
      are announced with the wrong name; each extra vote costs one embedding per new face.
    * ``max_classify`` (2): faces classified per detection round at most (new tracks first,
      then the longest unclassified). A classification costs ~0.1 s of one core (dlib), so this
      bounds the stall when several people walk in at once; the rest wait for the next round.
    * ``min_iou`` / ``max_missed``: the tracker's (see :class:`facelab.tracking.IoUTracker`).
    * ``cuts`` (True): test every detection round for a shot cut, which ends all tracks;
      ``cut_floor`` (0.06), ``cut_k`` (6) and ``cut_window`` (30 rounds) tune the adaptive test
      (see :class:`facelab.tracking.ShotCutDetector`, which also gives what was measured). It costs
      ~0.4 ms a round (640×480, one core).
    * ``drift_distance`` (None: the embedder's same-person distance, 0.58 for dlib): a track's face
      whose embedding lies farther than this from the track's identity (its mean vector and its
      latest one, :meth:`facelab.tracking.Track.identity_distance`) is somebody else: the track
      ends and a new one starts. Lower it to split more eagerly (a blurred or turned face may then
      split one person's track in two, both named alike); ``math.inf`` disables the check. The
      check runs whenever a face is embedded anyway (``warmup``, ``reclassify_every``,
      ``reclassify_iou`` and the appearance test below), so it costs nothing extra with the
      embedding track; with a CNN model each of those namings also embeds the face with dlib
      (~0.1 s of one core), doubling the cost of naming.
    * ``appearance_jump`` (0.35): the cheap test that makes a swap visible between embeddings: the
      face's pixels in its box (24×24 grayscale) are compared with the previous round's by
      :func:`facelab.tracking.structure_distance`; a larger change classifies (and so
      identity-checks) the face in this round, ahead of everything else (~0.15 ms a face a round;
      measured: 0.01–0.18 within a shot, 0.58–0.93 where one person's face replaced another's at
      the same place, ``tests/test_video_identity.py``). Lower it to check more
      often (each check is one embedding), raise it if turning heads trigger needless checks.
      When a drift is found later than the swap, the track is cut at the largest appearance jump
      since its last check, or, without a clear one, at that last check (frames in between are
      given to nobody rather than to the wrong person).
    * ``min_hits`` (2): tracks seen in fewer detection rounds are dropped from the summary as
      noise (a false detection rarely survives two rounds).
    """

    detect_every: int = 2
    detect_size: int = 320
    min_face: int = 40
    reclassify_every: int = 25
    reclassify_iou: float = 0.5
    warmup: int = 2
    max_classify: int = 2
    min_iou: float = 0.3
    max_missed: int = 5
    cuts: bool = True
    cut_floor: float = 0.06
    cut_k: float = 6.0
    cut_window: int = 30
    drift_distance: float | None = None
    appearance_jump: float = 0.35
    min_hits: int = 2

    def __post_init__(self) -> None:
        if min(self.detect_every, self.reclassify_every, self.warmup, self.max_classify) < 1:
            raise ValueError("detect_every, reclassify_every, warmup and max_classify must be at least 1")
        if self.detect_size < 32:
            raise ValueError(f"detect_size {self.detect_size} is too small (use 160 or more)")
        if self.drift_distance is not None and not self.drift_distance > 0:
            raise ValueError(f"drift_distance {self.drift_distance} must be positive (math.inf disables it)")

    def cut_detector(self) -> ShotCutDetector | None:
        """A fresh shot-cut test with these settings (None when ``cuts`` is off)."""
        if not self.cuts:
            return None
        return ShotCutDetector(floor=self.cut_floor, k=self.cut_k, window=self.cut_window)


@dataclass(frozen=True)
class Event:
    """A new person in view, sent to ``--webhook`` and spoken by ``--announce``.

    Raised once per track, when it has been named ``warmup`` times (so a face seen in a single
    frame, often a false detection, raises none); ``name`` is ``"unknown"`` for strangers.
    """

    source: str
    track: int
    name: str
    score: float
    time_s: float
    frame: int
    box: tuple[int, int, int, int]
    event: str = "arrival"

    def to_json(self) -> dict[str, object]:
        return {
            "event": self.event,
            "source": self.source,
            "track": self.track,
            "name": self.name,
            "score": round(self.score, 4),
            "time_s": round(self.time_s, 3),
            "frame": self.frame,
            "box": list(self.box),
        }


@dataclass(frozen=True)
class TrackSummary:
    """One person's appearance: who, how sure, from when to when (seconds from the start)."""

    source: str
    track: int
    name: str
    score: float
    agreement: float
    start_s: float
    end_s: float
    frames: int
    box: tuple[int, int, int, int]

    def row(self) -> dict[str, object]:
        return {
            "file": self.source,
            "track": self.track,
            "name": self.name,
            "score": f"{self.score:.4f}",
            "agreement": f"{self.agreement:.3f}",
            "start_s": f"{self.start_s:.2f}",
            "end_s": f"{self.end_s:.2f}",
            "frames": self.frames,
        }

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.source,
            "track": self.track,
            "name": self.name,
            "score": round(self.score, 4),
            "agreement": round(self.agreement, 4),
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "frames": self.frames,
            "box": list(self.box),
        }


@dataclass
class FrameResult:
    """One processed frame: the BGR pixels (draw on them), the tracks in view, new arrivals."""

    index: int
    time_s: float
    bgr: np.ndarray = field(repr=False)
    tracks: list[Track]
    events: list[Event]
    detected: bool


@dataclass
class VideoStats:
    """Where the time went (seconds, wall clock)."""

    frames: int = 0
    detections: int = 0
    classified_faces: int = 0
    cuts: int = 0  # shot cuts found (every track ended)
    drift_splits: int = 0  # tracks split because their face became somebody else
    read_s: float = 0.0
    detect_s: float = 0.0
    classify_s: float = 0.0
    total_s: float = 0.0
    dropped: int = 0  # live sources: frames skipped to stay current

    @property
    def fps(self) -> float:
        return self.frames / self.total_s if self.total_s > 0 else float("nan")


class VideoRecognizer:
    """Detect, track and name faces through a video; iterate :meth:`frames`, then read :meth:`summary`.

    >>> video = VideoRecognizer(recognizer, VideoOptions(detect_every=3))
    >>> for frame in video.frames(classify_input("clip.mp4")):
    ...     pass                       # draw with draw_tracks(frame.bgr, frame.tracks), show, write
    >>> video.summary()                # who appeared, from when to when
    """

    def __init__(self, recognizer: Recognizer, options: VideoOptions | None = None) -> None:
        self.recognizer = recognizer
        self.options = options or VideoOptions()
        self.tracker = IoUTracker(self.options.min_iou, self.options.max_missed)
        self.cut_test = self.options.cut_detector()
        self.stats = VideoStats()
        self.source_label = ""
        self.fps = 25.0
        self.frame_count = 0
        self.size = (0, 0)
        self._drift: tuple[Any, float] | None = None  # (embedder or None, distance), on first use

    def frames(self, source: Source, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Process ``source`` frame by frame; stopping the iteration early releases the capture."""
        import cv2

        capture = open_capture(source)
        try:
            self.recognizer.warm_up()
        except BaseException:
            capture.release()
            raise
        live = source.kind in LIVE_KINDS
        if live:
            capture = LatestFrameReader(capture)
        self.source_label = source.label
        self.tracker = IoUTracker(self.options.min_iou, self.options.max_missed)
        self.cut_test = self.options.cut_detector()
        self.stats = VideoStats()
        fps = capture.get(cv2.CAP_PROP_FPS)
        # Files carry their frame rate; some containers and most cameras report 0 or nonsense.
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else 25.0
        self.frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        started = time.perf_counter()
        index = -1
        try:
            while max_frames is None or index + 1 < max_frames:
                t0 = time.perf_counter()
                ok, bgr = capture.read()
                self.stats.read_s += time.perf_counter() - t0
                if not ok or bgr is None:
                    break
                index += 1
                time_s = (time.perf_counter() - started) if live else index / self.fps
                detected = index % self.options.detect_every == 0
                events: list[Event] = []
                if detected:
                    events = self.process(bgr, index, time_s)
                visible = [t for t in self.tracker.active if t.missed == 0]
                self.stats.frames += 1
                self.stats.total_s = time.perf_counter() - started
                yield FrameResult(index, time_s, bgr, visible, events, detected)
        finally:
            capture.release()
            if isinstance(capture, LatestFrameReader):
                self.stats.dropped = capture.dropped
            self.tracker.end_all()
            self.stats.total_s = time.perf_counter() - started

    def process(self, bgr: np.ndarray, index: int, time_s: float) -> list[Event]:
        """One detection round on frame ``index`` (BGR): cut test, detection, tracking, naming with
        identity checks; returns the arrivals it raised. :meth:`frames` calls it on every
        ``detect_every``-th frame; call it directly to feed frames from elsewhere."""
        import cv2

        opts = self.options
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if self.cut_test is not None and self.cut_test.update(gray):
            # Another shot: whoever is now where a face was is not that face's person.
            self.tracker.end_all()
            self.stats.cuts += 1
        faces = [
            f for f in self.recognizer.detect(rgb, opts.detect_size) if min(f.box.width, f.box.height) >= opts.min_face
        ]
        seen, _ = self.tracker.update(faces, index, time_s)
        for track in seen:
            self._watch_appearance(track, gray, index, time_s)
        self.stats.detections += 1
        t1 = time.perf_counter()
        self.stats.detect_s += t1 - t0
        todo = [t for t in seen if t.suspect or self._needs_classification(t, index)]
        # Faces that may have become somebody else first, then faces nobody has named yet, then
        # the ones waiting longest.
        todo = sorted(todo, key=lambda t: (not t.suspect, t.classified > 0, t.classified_frame))[: opts.max_classify]
        if todo:
            answers, vectors = self._name(rgb, [t.face for t in todo])
            for i, (track, answer) in enumerate(zip(todo, answers, strict=True)):
                if vectors is not None:
                    checked = self._check_identity(track, vectors[i], index, time_s)
                    seen = [checked if t is track else t for t in seen]
                    track = checked
                track.vote(answer.name, answer.score, face_weight(track.box))
                track.classified_frame, track.classified_box = index, track.box
                track.unchecked = [(index, time_s, 0.0)]
                track.suspect = False
            self.stats.classified_faces += len(todo)
        self.stats.classify_s += time.perf_counter() - t1
        events = []
        for track in seen:
            if not track.announced and track.classified >= opts.warmup and track.name is not None:
                track.announced = True
                events.append(
                    Event(
                        self.source_label,
                        track.id,
                        track.name,
                        track.score,
                        time_s,
                        index,
                        track.box.as_ints(),
                    )
                )
        return events

    def _watch_appearance(self, track: Track, gray: np.ndarray, index: int, time_s: float) -> None:
        """Compare the face in ``track``'s box with the previous round's; a large change marks the
        track ``suspect`` (it is embedded this round). Costs microseconds per face."""
        signature = face_signature(gray, track.box)
        jump = 0.0
        if signature is not None and track.signature is not None and track.hits > 1:
            jump = structure_distance(track.signature, signature, shift=2)
        track.signature = signature
        if track.hits > 1:
            track.unchecked.append((index, time_s, jump))
        if jump > self.options.appearance_jump and track.classified > 0:
            track.suspect = True

    def _name(self, rgb: np.ndarray, faces: list[Face]) -> tuple[list[Recognition], np.ndarray | None]:
        """Open-set answers for ``faces`` and their embedding vectors for the identity check (None
        when the check is off)."""
        from facelab.recognize import VectorModel, score_faces

        model = self.recognizer.model
        if isinstance(model, VectorModel):
            # The same answers as Recognizer.name_faces, keeping the vectors it computes anyway.
            scores, vectors = score_faces(model, rgb, faces)
            answers = self.recognizer.name_scores(faces, scores)
        else:
            answers, vectors = self.recognizer.name_faces(rgb, faces), None
        embedder, distance = self._drift_setup()
        if not np.isfinite(distance):
            return answers, None
        if vectors is None and embedder is not None:
            vectors = embedder.embed(rgb, faces)
        return answers, vectors

    def _drift_setup(self) -> tuple[Any, float]:
        """The embedder for identity checks of a model that has none (CNN runs: dlib) and the
        drift distance, resolved once."""
        if self._drift is None:
            from facelab.embedders import DEFAULT_EMBEDDER, embedder_info, get_embedder
            from facelab.recognize import VectorModel

            model = self.recognizer.model
            name = model.embedder if isinstance(model, VectorModel) else DEFAULT_EMBEDDER
            distance = self.options.drift_distance
            if distance is None:
                distance = embedder_info(name).verify_distance
            embedder = None
            if not isinstance(model, VectorModel) and np.isfinite(distance):
                embedder = get_embedder(name)
            self._drift = (embedder, float(distance))
        return self._drift

    def _check_identity(self, track: Track, vector: np.ndarray, index: int, time_s: float) -> Track:
        """``track`` if ``vector`` (its face now) is still its person, else the new track that takes
        over from where the face changed; the vector joins the identity of the track returned."""
        distance = self._drift_setup()[1]
        if track.identity_distance(vector) <= distance:
            track.remember(vector)
            return track
        rounds = track.unchecked or [(index, time_s, 0.0)]
        # Where did the face change? At the largest appearance jump since the last check, if there
        # was a clear one; otherwise somewhere unknown after that check, so the old track ends at
        # the check and the frames in between belong to nobody.
        j = max(range(len(rounds)), key=lambda i: rounds[i][2])
        if rounds[j][2] > self.options.appearance_jump and j > 0:
            end, start, hits = rounds[j - 1][:2], rounds[j][:2], len(rounds) - j
        else:
            end, start, hits = rounds[0][:2], (index, time_s), 1
        new = self.tracker.split(track, track.face, end, start, hits)
        new.remember(vector)
        self.stats.drift_splits += 1
        return new

    def _needs_classification(self, track: Track, index: int) -> bool:
        opts = self.options
        if track.classified < opts.warmup:
            return True
        if index - track.classified_frame >= opts.reclassify_every:
            return True
        return track.classified_box is not None and track.box.iou(track.classified_box) < opts.reclassify_iou

    def summary(self) -> list[TrackSummary]:
        """Every track seen in at least ``min_hits`` detection rounds and named at least once."""
        out = []
        for track in self.tracker.all_tracks():
            if track.hits < self.options.min_hits or track.name is None:
                continue
            out.append(
                TrackSummary(
                    source=self.source_label,
                    track=track.id,
                    name=track.name,
                    score=track.score,
                    agreement=track.agreement,
                    start_s=track.first_time,
                    end_s=track.last_time,
                    frames=track.last_frame - track.first_frame + 1,
                    box=track.box.as_ints(),
                )
            )
        return out
