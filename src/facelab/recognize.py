"""Recognizing people in new photos, folders, videos, webcams and streams.

>>> rec = Recognizer.from_path("WS")            # a workspace (its current model) or a run folder
>>> for result in rec.recognize_paths(expand_photos([Path("holiday/")])):
...     print(result.path, [r.label for r in result.recognitions])

Every face gets an open-set answer (:func:`facelab.openset.decide` with the model's calibrated
threshold): a person's name, or ``unknown`` when the best score is below the threshold.

Video (files, ``camera:N``, RTSP/HTTP streams) goes through :class:`VideoRecognizer`: faces are
detected on a shrunken copy of every k-th frame, linked into tracks (:mod:`facelab.tracking`),
and a track is classified only when it is new, every N frames, when its box changed much, or when
the face in its box changed; its name is a vote over those answers weighted by face size. A shot cut
ends every track, and a face whose embedding moved away from its track's identity starts a new
track, so no track (and no summary line) carries one person's name onto another. See
:class:`VideoOptions` for tuning.

Nothing heavy is imported at module import: OpenCV and the model load on first use.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from facelab import openset
from facelab.items import people
from facelab.tracking import (
    UNKNOWN,
    IoUTracker,
    ShotCutDetector,
    Track,
    face_signature,
    face_weight,
    structure_distance,
)
from facelab.types import Box, Face, Recognition

if TYPE_CHECKING:
    from facelab.runs import Model

NO_FACE = "no_face"
ERROR = "error"
PHOTO_COLUMNS = ("file", "x1", "y1", "x2", "y2", "name", "score")
TRACK_COLUMNS = ("file", "track", "name", "score", "agreement", "start_s", "end_s", "frames")

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
)
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"})


# -- models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A kind of path that names a model: ``matches(path)`` says if it is one, ``load`` loads it."""

    name: str
    matches: Callable[[Path], bool]
    load: Callable[[Path], Model]


def _is_run(path: Path) -> bool:
    return (path / "summary.json").is_file()


def _is_workspace(path: Path) -> bool:
    return (path / ".facelab" / "facelab.db").is_file()


def _load_run(path: Path) -> Model:
    from facelab.runs import load_model

    return load_model(path)


def _load_current(path: Path) -> Model:
    from facelab.auto import current_model
    from facelab.store import Workspace

    with Workspace(path, create=False) as ws:
        return current_model(ws)


MODEL_SOURCES: tuple[ModelSource, ...] = (
    ModelSource("run folder", _is_run, _load_run),
    ModelSource("workspace", _is_workspace, _load_current),
)


def load_recognition_model(path: Path | str) -> Model:
    """The model a path names: a run folder (``WS/runs/NAME``) or a workspace (its current model)."""
    path = Path(path)
    for source in MODEL_SOURCES:
        if source.matches(path):
            return source.load(path)
    raise FileNotFoundError(
        f"{path} is neither a run folder (with summary.json) nor a facelab workspace "
        "(with .facelab/facelab.db): give WS/runs/NAME or a workspace that has a current model"
    )


@runtime_checkable
class VectorModel(Protocol):
    """A model that scores embedding vectors (the embedding track): albums store the vectors."""

    embedder: str

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray: ...


def score_faces(model: Model, rgb: np.ndarray, faces: list[Face]) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores ``(n, classes)`` of ``faces``, and their embedding vectors when the model works on them.

    Embedding models are asked through their vectors so that callers (albums) can keep the vectors
    and re-score them later without detecting or embedding again; it costs the same.
    """
    if not faces:
        return np.zeros((0, len(model.classes))), None
    if isinstance(model, VectorModel):
        from facelab.embedders import get_embedder

        vectors = get_embedder(model.embedder).embed(rgb, faces)
        return np.asarray(model.predict_vectors(vectors)), vectors
    return np.asarray(model.predict_faces(rgb, faces)), None


def model_key(model: Model, threshold: float | None = None) -> str:
    """Changes whenever the answers may change: run, classes, threshold (the model's, or the one
    used instead), enrolled faces. Albums re-name faces when it does."""
    import hashlib

    used = model.threshold if threshold is None else threshold
    payload = json.dumps([str(model.run_dir.name), list(model.classes), used, getattr(model, "enrolled", 0)])
    return f"{model.run_dir.name}@{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


# -- photos -------------------------------------------------------------------------------------


@dataclass
class PhotoResult:
    """What one photo gave: its faces' answers, or ``error`` (the reason and the fix)."""

    path: Path
    recognitions: list[Recognition] = field(default_factory=list)
    error: str | None = None
    rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        if self.error is not None:
            return ERROR
        return "ok" if self.recognitions else NO_FACE


def scale_face(face: Face, factor: float) -> Face:
    """``face`` with box and landmarks multiplied by ``factor`` (a shrunken frame back to full size)."""
    if factor == 1.0:
        return face
    points = tuple((x * factor, y * factor) for x, y in face.landmarks) if face.landmarks else None
    return replace(face, box=face.box.scaled(factor), landmarks=points)


class Recognizer:
    """A model, a detector and the open-set rule: faces in, names (or unknown) out.

    * ``detector``: a name from ``facelab detectors`` (default: facelab's default detector).
    * ``threshold``: below it a face is unknown; default the model's calibrated threshold (None if
      the run was never calibrated: then nobody is unknown). Raise it to name fewer strangers
      (and miss more of your people); similarity scores of the embedding track run 0–1.
    * ``min_margin``: a named face whose lead over the second-best person is smaller is flagged
      ``lookalike`` in JSON output; default the model's calibrated margin.
    * ``min_face``: faces whose shorter side is below this many pixels are ignored (too small to
      name reliably; raise it to skip background people).
    """

    def __init__(
        self,
        model: Model,
        *,
        detector: str | None = None,
        threshold: float | None = None,
        min_margin: float | None = None,
        min_face: float = 0,
    ) -> None:
        from facelab.detect import DEFAULT_DETECTOR

        self.model = model
        self.detector_name = detector or DEFAULT_DETECTOR
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.min_margin = getattr(model, "min_margin", None) if min_margin is None else float(min_margin)
        self.min_face = float(min_face)
        self._detector: Any = None

    @classmethod
    def from_path(cls, path: Path | str, **options: Any) -> Recognizer:
        """Load the model a run folder or workspace names (see :func:`load_recognition_model`)."""
        return cls(load_recognition_model(path), **options)

    @property
    def classes(self) -> list[str]:
        """The people the model can name (a bystander class 'others' is nobody's name)."""
        return people(self.model.classes)

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from facelab.detect import get_detector

            self._detector = get_detector(self.detector_name)
        return self._detector

    @property
    def closed_set(self) -> bool:
        """True when this model cannot answer unknown (no calibrated threshold, no embedding gate):
        every stranger gets one of the people's names."""
        return self.threshold is None

    def closed_set_warning(self) -> str | None:
        """One line for the user when :attr:`closed_set`, naming the run and the fix; else None."""
        if not self.closed_set:
            return None
        run = getattr(self.model, "run_dir", None)
        return (
            f"warning: {run.name if run else 'this model'} has no 'unknown' answer — every stranger will be "
            "given one of your people's names; calibrate it (facelab auto) or use an embedding run"
        )

    def warm_up(self) -> None:
        """Load the detector and the model's networks now, so the first frame does not pay for it
        (a second or more: timings and a live picture would stall on it)."""
        blank = np.zeros((64, 64, 3), np.uint8)
        self.detector.detect(blank)
        score_faces(self.model, blank, [Face(Box(8, 8, 56, 56), 1.0)])

    def detect(self, rgb: np.ndarray, max_side: int | None = None) -> list[Face]:
        """Faces of ``rgb`` (best first, its pixels), searched on a ``max_side``-pixel copy if given.

        Detecting on a shrunken copy is the main speed lever for video: detector time grows with
        the pixel count, while the faces are then embedded from the full-size frame.
        """
        small, factor = rgb, 1.0
        if max_side is not None:
            from facelab.detect import fit_longest_side

            small, factor = fit_longest_side(rgb, max_side)
        faces = [scale_face(f, 1.0 / factor) for f in self.detector.detect(small)]
        return [f for f in faces if min(f.box.width, f.box.height) >= self.min_face]

    def name_faces(self, rgb: np.ndarray, faces: list[Face], top: int = 3) -> list[Recognition]:
        """Open-set answers for ``faces`` of ``rgb``, in order."""
        return self.name_scores(faces, score_faces(self.model, rgb, faces)[0], top)

    def name_scores(self, faces: Sequence[Face], scores: np.ndarray, top: int = 3) -> list[Recognition]:
        """Open-set answers from scores already computed (albums re-score stored vectors)."""
        return openset.recognitions(faces, scores, self.model.classes, self.threshold, self.min_margin, top)

    def is_lookalike(self, recognition: Recognition) -> bool:
        return recognition.name is not None and self.min_margin is not None and recognition.margin < self.min_margin

    def recognize(self, rgb: np.ndarray) -> list[Recognition]:
        """Detect and name every face of an upright RGB photo."""
        return self.name_faces(rgb, self.detect(rgb))

    def recognize_photo(self, path: Path, keep_pixels: bool = False) -> PhotoResult:
        """One photo; an unreadable file gives a result with ``error`` instead of raising."""
        from facelab.imageio import ImageError, load_rgb

        try:
            rgb = load_rgb(path)
        except ImageError as exc:
            return PhotoResult(path, error=f"{exc.reason} — {exc.fix}")
        try:
            recognitions = self.recognize(rgb)
        except ValueError as exc:  # e.g. a degenerate box the embedder refuses
            return PhotoResult(path, error=f"could not recognize faces ({exc})")
        return PhotoResult(path, recognitions, rgb=rgb if keep_pixels else None)

    def recognize_paths(self, paths: Iterable[Path], keep_pixels: bool = False) -> Iterator[PhotoResult]:
        for path in paths:
            yield self.recognize_photo(path, keep_pixels)


def photo_rows(result: PhotoResult) -> list[dict[str, object]]:
    """CSV rows (:data:`PHOTO_COLUMNS`) of a photo: one per face; ``no_face`` / ``error`` rows have
    an empty box and score, so every input photo has at least one line."""
    if not result.recognitions:
        return [{"file": str(result.path), "name": result.status, **dict.fromkeys(PHOTO_COLUMNS[1:5], "")}]
    rows = []
    for rec in result.recognitions:
        x1, y1, x2, y2 = rec.face.box.as_ints()
        rows.append(
            {
                "file": str(result.path),
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "name": rec.label,
                "score": f"{rec.score:.4f}",
            }
        )
    return rows


def photo_json(result: PhotoResult, recognizer: Recognizer | None = None) -> dict[str, object]:
    """A photo as one JSON object: file, status, error, faces (box, name, score, margin, candidates)."""
    faces = []
    for rec in result.recognitions:
        faces.append(
            {
                "box": list(rec.face.box.as_ints()),
                "name": rec.label,
                "score": round(rec.score, 4),
                "margin": round(rec.margin, 4) if np.isfinite(rec.margin) else None,
                "lookalike": bool(recognizer and recognizer.is_lookalike(rec)),
                "candidates": [[name, round(score, 4)] for name, score in rec.candidates],
            }
        )
    return {"file": str(result.path), "status": result.status, "error": result.error, "faces": faces}


# -- inputs -------------------------------------------------------------------------------------


class InputKind(StrEnum):
    PHOTO = "photo"
    FOLDER = "folder"
    VIDEO = "video"
    CAMERA = "camera"
    STREAM = "stream"


# Kinds whose output is a per-track summary rather than per-face lines.
MOVING_KINDS = frozenset({InputKind.VIDEO, InputKind.CAMERA, InputKind.STREAM})
# Kinds whose frames arrive in real time: their clock is the wall clock, not the frame count.
LIVE_KINDS = frozenset({InputKind.CAMERA, InputKind.STREAM})


@dataclass(frozen=True)
class Source:
    """One command-line input: its kind and what opens it (a path, a URL, a camera index)."""

    kind: InputKind
    spec: str

    @property
    def path(self) -> Path:
        return Path(self.spec)

    @property
    def label(self) -> str:
        return f"camera:{self.spec}" if self.kind is InputKind.CAMERA else self.spec


def _is_stream(text: str) -> bool:
    scheme = urlparse(text).scheme.lower()
    return scheme in STREAM_SCHEMES and "://" in text


def _is_camera(text: str) -> bool:
    return text.startswith("camera:") and text[len("camera:") :].isdigit()


def _camera_index(text: str) -> str:
    return text[len("camera:") :]


# Checked in order; the first that matches decides. PHOTO last: anything else is handed to the
# image reader, which names the file and the reason when it is not a photo.
INPUT_KINDS: tuple[tuple[InputKind, Callable[[str], bool], Callable[[str], str]], ...] = (
    (InputKind.STREAM, _is_stream, str),
    (InputKind.CAMERA, _is_camera, _camera_index),
    (InputKind.FOLDER, lambda t: Path(t).is_dir(), str),
    (InputKind.VIDEO, lambda t: Path(t).suffix.lower() in VIDEO_SUFFIXES, str),
    (InputKind.PHOTO, lambda t: True, str),
)


def classify_input(text: str) -> Source:
    """What a command-line input is: ``rtsp://…`` a stream, ``camera:0`` a webcam, a folder, a video
    (by suffix), else a photo."""
    for kind, matches, spec in INPUT_KINDS:
        if matches(text):
            return Source(kind, spec(text))
    raise AssertionError("unreachable: PHOTO matches everything")


def expand_photos(sources: Iterable[Source]) -> list[tuple[Path, Source]]:
    """Every photo of the photo and folder inputs (folders recursively), with the input it came from."""
    from facelab.imageio import iter_image_files

    out = []
    for source in sources:
        if source.kind is InputKind.FOLDER:
            out.extend((path, source) for path in iter_image_files(source.path))
        elif source.kind is InputKind.PHOTO:
            out.append((source.path, source))
    return out


# -- output files -------------------------------------------------------------------------------


class UnsafeOutput(ValueError):
    """``--out`` would write over or among the inputs."""


def _contains(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out_dir: Path, sources: Sequence[Source]) -> None:
    """Refuse an output folder that could overwrite an input: the inputs' folder, one inside it, or
    one that holds an input (annotated copies keep the inputs' names)."""
    out = Path(os.path.abspath(out_dir)).resolve()
    for source in sources:
        if source.kind not in (InputKind.PHOTO, InputKind.FOLDER, InputKind.VIDEO):
            continue
        where = source.path.resolve()
        if _contains(out, where):
            raise UnsafeOutput(
                f"--out {out_dir} holds the input {source.spec}: annotated copies could overwrite it; "
                "choose a folder outside your photos"
            )
        if source.kind is InputKind.FOLDER and _contains(where, out):
            raise UnsafeOutput(
                f"--out {out_dir} is inside the input folder {source.spec}: never write among the "
                "originals (a later run would also read the annotated copies); choose another folder"
            )


class OutputPlanner:
    """Where annotated copies go: ``OUT/<folder name>/<path below it>.jpg`` for folder inputs,
    ``OUT/<name>.jpg`` for single photos, ``OUT/<name>.mp4`` for videos; names are made unique, and
    a target that is an input file is refused."""

    def __init__(self, out_dir: Path, sources: Sequence[Source]) -> None:
        check_out_dir(out_dir, sources)
        self.out_dir = Path(out_dir)
        self._inputs = {s.path.resolve() for s in sources if s.kind in (InputKind.PHOTO, InputKind.VIDEO)}
        self._used: set[Path] = set()

    def _unique(self, target: Path) -> Path:
        candidate, n = target, 2
        while candidate in self._used:
            candidate, n = target.with_name(f"{target.stem}-{n}{target.suffix}"), n + 1
        self._used.add(candidate)
        if candidate.resolve() in self._inputs:
            raise UnsafeOutput(f"{candidate} is an input: refusing to overwrite it")
        return candidate

    def photo(self, path: Path, source: Source) -> Path:
        if source.kind is InputKind.FOLDER:
            relative = path.relative_to(source.path)
            target = self.out_dir / source.path.resolve().name / relative.with_suffix(".jpg")
        else:
            target = self.out_dir / f"{path.stem}.jpg"
        return self._unique(target)

    def video(self, source: Source) -> Path:
        if source.kind is InputKind.VIDEO:
            name = source.path.stem
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"camera{source.spec}-{stamp}" if source.kind is InputKind.CAMERA else f"stream-{stamp}"
        return self._unique(self.out_dir / f"{name}.mp4")


# -- drawing ------------------------------------------------------------------------------------

_KNOWN = (40, 200, 40)  # BGR
_UNKNOWN = (40, 40, 230)
_PENDING = (200, 200, 200)


def draw_box(bgr: np.ndarray, box: Box, text: str, color: tuple[int, int, int]) -> None:
    """A box and a filled caption above it (below it at the top edge), in place, scaled to the image."""
    import cv2

    x1, y1, x2, y2 = box.as_ints()
    thickness = max(1, round(max(bgr.shape[:2]) / 400))
    cv2.rectangle(bgr, (x1, y1), (x2, y2), color, thickness)
    scale = max(0.4, max(bgr.shape[:2]) / 1200)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = y1 - th - base - 4 if y1 - th - base - 4 >= 0 else y2
    cv2.rectangle(bgr, (x1, top), (x1 + tw + 4, top + th + base + 4), color, cv2.FILLED)
    white = (255, 255, 255)
    origin = (x1 + 2, top + th + 2)
    cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, white, thickness, cv2.LINE_AA)


def annotate_photo(rgb: np.ndarray, recognitions: Sequence[Recognition]) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, name and score drawn."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for rec in recognitions:
        draw_box(bgr, rec.face.box, f"{rec.label} {rec.score:.2f}", _KNOWN if rec.name else _UNKNOWN)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def draw_tracks(bgr: np.ndarray, tracks: Iterable[Track]) -> None:
    for track in tracks:
        name = track.name
        color = _PENDING if name is None else (_UNKNOWN if name == UNKNOWN else _KNOWN)
        text = f"{track.label} {track.score:.2f}" if name is not None else f"#{track.id} ..."
        draw_box(bgr, track.box, text, color)


# -- video --------------------------------------------------------------------------------------


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


class VideoUnavailable(RuntimeError):
    """A video, camera or stream that cannot be opened; the message says what to check."""


def _open_file(source: Source) -> Any:
    import cv2

    if not source.path.is_file():
        raise VideoUnavailable(f"{source.spec}: video file not found — check the path")
    return cv2.VideoCapture(str(source.path))


def _open_camera(source: Source) -> Any:
    import cv2

    capture = cv2.VideoCapture(int(source.spec))
    # Keep only the newest frame: when processing is slower than the camera, old frames must be
    # dropped, not queued (a queue makes the picture lag further and further behind).
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture


def _open_stream(source: Source) -> Any:
    import cv2

    capture = cv2.VideoCapture(source.spec, cv2.CAP_FFMPEG)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture


OPENERS: dict[InputKind, Callable[[Source], Any]] = {
    InputKind.VIDEO: _open_file,
    InputKind.CAMERA: _open_camera,
    InputKind.STREAM: _open_stream,
}
_OPEN_HINTS = {
    InputKind.VIDEO: "is it a video OpenCV's FFmpeg can decode (mp4, avi, mkv, mov, webm)?",
    InputKind.CAMERA: "check the camera index (0 is the first camera) and that nothing else uses it "
    "(on Linux: ls /dev/video*; permission to read it)",
    InputKind.STREAM: "check the URL, credentials and that the stream is reachable from here",
}


class LatestFrameReader:
    """Reads a live capture on its own thread and hands out only the newest frame.

    A camera or stream delivers frames at its own pace; when recognition is slower, reading
    frame after frame would fall further and further behind (the picture lags by seconds, then
    minutes). Decoding releases Python's GIL, so this thread costs little; frames the consumer
    never saw are counted in ``dropped``.
    """

    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.dropped = 0
        self._frame: np.ndarray | None = None
        self._ended = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            ok, frame = self.capture.read()
            with self._cond:
                if not ok or frame is None:
                    self._ended = True
                    self._cond.notify_all()
                    return
                if self._frame is not None:
                    self.dropped += 1
                self._frame = frame
                self._cond.notify_all()

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The newest frame not yet handed out (waits for one); ``(False, None)`` at the end."""
        with self._cond:
            while self._frame is None and not self._ended:
                self._cond.wait()
            frame, self._frame = self._frame, None
        return (frame is not None), frame

    def get(self, prop: int) -> float:
        return self.capture.get(prop)

    def release(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self.capture.release()


def open_capture(source: Source) -> Any:
    """An opened ``cv2.VideoCapture`` for a video, camera or stream source (or :class:`VideoUnavailable`)."""
    capture = OPENERS[source.kind](source)
    if not capture.isOpened():
        capture.release()
        raise VideoUnavailable(f"{source.label}: cannot open it — {_OPEN_HINTS[source.kind]}")
    return capture


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


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    """An MP4 (``mp4v``) ``cv2.VideoWriter``; raises :class:`VideoUnavailable` if it cannot write."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise VideoUnavailable(f"{path}: cannot write an MP4 video there — check the folder and free space")
    return writer


# -- live window --------------------------------------------------------------------------------


class GuiUnavailable(RuntimeError):
    """OpenCV was built without a GUI (opencv-python-headless): no window can open."""


def gui_backend() -> str | None:
    """OpenCV's GUI backend (GTK, QT, WIN32UI, COCOA…), or None for a headless build."""
    import re

    import cv2

    found = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    backend = found.group(1) if found else None
    return None if backend in (None, "NONE") else backend


class LiveWindow:
    """A window showing annotated frames with the processing rate; ESC or closing it stops."""

    def __init__(self, title: str = "facelab") -> None:
        if gui_backend() is None:
            raise GuiUnavailable(
                "--show needs a window, but this OpenCV is the headless build (opencv-python-headless, "
                "no GUI). Write an annotated video with --out DIR instead, or replace it with the GUI "
                "build: pip uninstall opencv-python-headless && pip install 'opencv-python<5'"
            )
        self.title = title
        self._times: list[float] = []

    def show(self, bgr: np.ndarray) -> bool:
        """Draw the frame (and fps); False once the user pressed ESC or closed the window."""
        import cv2

        now = time.perf_counter()
        self._times = [*self._times[-29:], now]
        if len(self._times) > 1:
            fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
            cv2.putText(bgr, f"{fps:.1f} fps", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return key != 27 and not closed

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)


# -- announcing arrivals ------------------------------------------------------------------------


class _Worker:
    """One background thread running jobs in order, so slow speech or a slow server never stalls
    the video loop; :meth:`close` waits for queued jobs (at most ``timeout`` seconds)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # a failing job must not kill the worker
                print(f"facelab: {self._thread.name}: {exc}", file=sys.stderr)

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def close(self, timeout: float = 10.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)


SPEECH_PROGRAMS = ("espeak-ng", "espeak")


def _run_quietly(command: list[str]) -> None:
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)


class Speaker:
    """Says names aloud with the offline ``espeak-ng`` (or ``espeak``) program.

    ``cooldown_s`` (60): a name is not repeated within this many seconds of video time (a person
    whose track breaks and restarts is not greeted twice). ``unknown``: whether strangers are
    announced ("unknown person"). ``runner`` executes the command (tests record it instead).
    """

    def __init__(
        self,
        *,
        program: str | None = None,
        cooldown_s: float = 60.0,
        unknown: bool = False,
        runner: Callable[[list[str]], None] | None = None,
        voice_args: Sequence[str] = ("-s", "160"),
    ) -> None:
        found = program or next((p for p in SPEECH_PROGRAMS if shutil.which(p)), None)
        self.program = shutil.which(found) if found else None
        self.cooldown_s = cooldown_s
        self.unknown = unknown
        self.voice_args = tuple(voice_args)
        self._runner = runner or _run_quietly
        self._last: dict[str, float] = {}
        self._worker: _Worker | None = None

    @property
    def available(self) -> bool:
        return self.program is not None or self._runner is not _run_quietly

    @staticmethod
    def unavailable_message() -> str:
        return (
            "--announce: no espeak-ng on PATH, so names cannot be spoken (they are printed instead). "
            "Install it: sudo apt install espeak-ng (Debian/Ubuntu), brew install espeak-ng (macOS)"
        )

    def command_for(self, text: str) -> list[str]:
        return [self.program or SPEECH_PROGRAMS[0], *self.voice_args, text]

    @staticmethod
    def text_for(name: str) -> str:
        # Folder names use underscores and dashes; read as words.
        return "unknown person" if name == UNKNOWN else name.replace("_", " ").replace("-", " ")

    def announce(self, event: Event) -> list[str] | None:
        """Speak ``event``'s name unless it was spoken recently; returns the command (None if skipped)."""
        if event.name == UNKNOWN and not self.unknown:
            return None
        last = self._last.get(event.name)
        if last is not None and event.time_s - last < self.cooldown_s:
            return None
        self._last[event.name] = event.time_s
        command = self.command_for(self.text_for(event.name))
        if self.available:
            if self._worker is None:
                self._worker = _Worker("speech")
            self._worker.submit(lambda: self._runner(command))
        return command

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


class Webhook:
    """POSTs each :class:`Event` as JSON to ``url`` from a background thread.

    ``timeout`` (5 s) bounds each request; failures are reported on stderr (the first three, then a
    count) and never stop the video.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"--webhook {url}: give an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._worker = _Worker("webhook")

    def post(self, event: Event) -> None:
        self._worker.submit(lambda: self._send(event.to_json()))

    def _send(self, payload: dict[str, object]) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "facelab"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.failed += 1
            if self.failed <= 3:
                print(f"facelab: --webhook {self.url}: {exc}", file=sys.stderr)

    def close(self, timeout: float = 10.0) -> None:
        self._worker.close(timeout)
        if self.failed > 3:
            print(f"facelab: --webhook: {self.failed} events could not be delivered", file=sys.stderr)
