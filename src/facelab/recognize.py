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

The photo core lives here: which model a path names (:func:`load_recognition_model`), how it scores
faces (:func:`score_faces`), and :class:`Recognizer` with its CSV and JSON answers. The rest has a
module of its own, and every name stays importable from here:

* :mod:`facelab.recognize_inputs`: what an input is (:func:`classify_input`, :func:`expand_photos`);
* :mod:`facelab.recognize_output`: where ``--out`` copies go (:class:`OutputPlanner`);
* :mod:`facelab.recognize_draw`: boxes and names drawn on photos and frames;
* :mod:`facelab.recognize_capture`: opening videos, cameras and streams, writing MP4;
* :mod:`facelab.recognize_video`: :class:`VideoRecognizer`, tracks and their names;
* :mod:`facelab.recognize_window`: the ``--show`` window;
* :mod:`facelab.recognize_announce`: ``--announce`` (speech) and ``--webhook``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from facelab import openset
from facelab.items import people
from facelab.recognize_announce import SPEECH_PROGRAMS, Speaker, Webhook
from facelab.recognize_capture import OPENERS, LatestFrameReader, VideoUnavailable, open_capture, open_writer
from facelab.recognize_draw import annotate_photo, draw_box, draw_tracks
from facelab.recognize_inputs import (
    INPUT_KINDS,
    LIVE_KINDS,
    MOVING_KINDS,
    STREAM_SCHEMES,
    VIDEO_SUFFIXES,
    InputKind,
    Source,
    classify_input,
    expand_photos,
)
from facelab.recognize_output import OutputPlanner, UnsafeOutput, check_out_dir
from facelab.recognize_video import (
    TRACK_COLUMNS,
    Event,
    FrameResult,
    TrackSummary,
    VideoOptions,
    VideoRecognizer,
    VideoStats,
)
from facelab.recognize_window import GuiUnavailable, LiveWindow, gui_backend
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

# Every name importable from this module before its parts moved out (facelab.recognize_*), kept
# importable: its own, the moved ones, and the tracking and type names it used to import.
__all__ = [
    "ERROR",
    "INPUT_KINDS",
    "LIVE_KINDS",
    "MODEL_SOURCES",
    "MOVING_KINDS",
    "NO_FACE",
    "OPENERS",
    "PHOTO_COLUMNS",
    "SPEECH_PROGRAMS",
    "STREAM_SCHEMES",
    "TRACK_COLUMNS",
    "UNKNOWN",
    "VIDEO_SUFFIXES",
    "Box",
    "Event",
    "Face",
    "FrameResult",
    "GuiUnavailable",
    "InputKind",
    "IoUTracker",
    "LatestFrameReader",
    "LiveWindow",
    "ModelSource",
    "OutputPlanner",
    "PhotoResult",
    "Recognition",
    "Recognizer",
    "ShotCutDetector",
    "Source",
    "Speaker",
    "Track",
    "TrackSummary",
    "UnsafeOutput",
    "VectorModel",
    "VideoOptions",
    "VideoRecognizer",
    "VideoStats",
    "VideoUnavailable",
    "Webhook",
    "annotate_photo",
    "check_out_dir",
    "classify_input",
    "draw_box",
    "draw_tracks",
    "expand_photos",
    "face_signature",
    "face_weight",
    "gui_backend",
    "load_recognition_model",
    "model_key",
    "open_capture",
    "open_writer",
    "openset",
    "people",
    "photo_json",
    "photo_rows",
    "scale_face",
    "score_faces",
    "structure_distance",
]

NO_FACE = "no_face"
ERROR = "error"
PHOTO_COLUMNS = ("file", "x1", "y1", "x2", "y2", "name", "score")

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
    from facelab.runs import run_name

    name = run_name(model.run_dir)
    refit = "deployed" if model.run_dir.name == "deployed" else ""  # a refit names differently
    payload = json.dumps([name, refit, list(model.classes), used, getattr(model, "enrolled", 0)])
    return f"{name}@{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


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
        self.skipped_small = 0  # faces found but smaller than min_face, since this recognizer was made
        self._detector: Any = None
        # People renamed, merged or deleted since the run was trained (facelab.people) are shown
        # by their name now (a deleted one: unknown), until the next training uses the new names.
        run_dir = getattr(model, "run_dir", None)
        self.shown_names: dict[str, str | None] = {}
        if run_dir is not None:
            from facelab.people import shown_names_of_run

            self.shown_names = shown_names_of_run(run_dir)

    def __getstate__(self) -> dict[str, Any]:
        # A loaded detector holds a native session: another process (an album index worker, a Ray
        # actor) builds its own, with that process's thread budget (facelab.threads).
        state = dict(self.__dict__)
        state["_detector"] = None
        return state

    @classmethod
    def from_path(cls, path: Path | str, **options: Any) -> Recognizer:
        """Load the model a run folder or workspace names (see :func:`load_recognition_model`)."""
        return cls(load_recognition_model(path), **options)

    @property
    def classes(self) -> list[str]:
        """The people the model can name (a bystander class 'others' is nobody's name)."""
        return list(dict.fromkeys(people(self.display_classes)))

    @property
    def display_classes(self) -> list[str]:
        """The model's classes by the names people have now (see :mod:`facelab.people`)."""
        if not self.shown_names:
            return list(self.model.classes)
        from facelab.people import display_name

        return [display_name(self.shown_names, name) for name in self.model.classes]

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
        from facelab.runs import run_name

        run = getattr(self.model, "run_dir", None)
        return (
            f"warning: {run_name(run) if run else 'this model'} has no 'unknown' answer — every stranger will be "
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
        kept = [f for f in faces if min(f.box.width, f.box.height) >= self.min_face]
        # Counted, so a front end can say how many faces were too small to name (not "no face").
        self.skipped_small += len(faces) - len(kept)
        return kept

    def name_faces(self, rgb: np.ndarray, faces: list[Face], top: int = 3) -> list[Recognition]:
        """Open-set answers for ``faces`` of ``rgb``, in order."""
        return self.name_scores(faces, score_faces(self.model, rgb, faces)[0], top)

    def name_scores(self, faces: Sequence[Face], scores: np.ndarray, top: int = 3) -> list[Recognition]:
        """Open-set answers from scores already computed (albums re-score stored vectors)."""
        return openset.recognitions(faces, scores, self.display_classes, self.threshold, self.min_margin, top)

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
