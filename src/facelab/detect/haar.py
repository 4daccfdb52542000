"""The seed's detector: OpenCV's frontal-face Haar cascade with a rotation sweep for tilted faces.

Algorithm (the seed's, with its parameters as defaults):

1. Upright pass on the grayscale photo: ``haarcascade_frontalface_default.xml``, scaleFactor 1.4,
   minNeighbors 1, minSize 60×60.
2. Rotation sweep: the photo is rotated in ``sweep_step`` (15°) steps, and each rotated copy is
   searched with scaleFactor 1.3, minNeighbors 6 (stricter, because every extra angle is another
   chance for a false positive).

What we do unlike the seed: a face found on a rotated copy is mapped back to the original photo
(its centre through the inverse rotation; the box keeps the face's size, not the size of the
rotated square's bounding box, so the box side measures the face), the same face found at several
angles is merged with OpenCV's NMS (``cv2.dnn.NMSBoxes``), and ``Face.angle`` records the angle, so
:func:`facelab.align.crop_face` can make the crop upright. ``Face.score`` is ``n / (n + 6)`` for a
face backed by ``n`` neighbouring raw detections: monotone in the seed's evidence, and in 0..1
like the other detectors' probabilities (6 neighbours, the sweep's bar, scores 0.5).

Measured choices (celeb5 / sports5 / strangers, photos with a face; bench/bench_detectors.py):

- The sweep rescues photos the upright pass misses: 103 → 105 / 307 → 325 / 299 → 299.
- Sweep range ±45°: faces tilted more than that are rare (people stand up). The full circle found
  a face on 8 more photos of 786, but on the contact sheet most of its new boxes (about 8 of 11)
  were not faces (a jersey, a racket, a sleeve, legs), and it doubles the sweep's time.
- The sweep runs only when the upright pass finds nothing (``SweepMode.IF_NONE``). Running it
  always found a face on no additional photo, added 0.02–0.10 faces per photo, which on the
  contact sheets were mostly false positives and the same face again at another angle and size,
  and made haar about 4× slower.
- Photos are shrunk to ``max_side`` 1024 first (the seed ran on full size): 325 instead of 329
  sports5 photos with a face, 1.43 instead of 1.65 boxes per photo (boxes under 60 px × photo
  side / 1024, which the shrunk pass cannot see), 30 % less CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.detect import fit_longest_side
from facelab.detect.base import DetectorInfo, DetectorUnavailable
from facelab.types import Box, Face

NAME = "haar"
PACKAGE = "opencv-python-headless"
CASCADE = "haarcascade_frontalface_default.xml"
# Neighbour count that maps to score 0.5 (see the module docstring).
NEIGHBOURS_HALF_SCORE = 6


class SweepMode(StrEnum):
    """When the rotation sweep runs."""

    NEVER = "never"
    IF_NONE = "if_none"  # only when the upright pass found no face
    ALWAYS = "always"


@dataclass(frozen=True)
class _Candidate:
    centre: tuple[float, float]
    side: float
    neighbours: int
    angle: float


@dataclass
class HaarDetector:
    """Seed Haar cascade with rotation sweep. Build with :func:`build`; call :meth:`detect`.

    Tuning: ``upright_neighbours`` is the seed's 1, which finds nearly every frontal face but also
    patterns in foliage and fabric; 3–5 cuts most false positives for a few percent of recall.
    ``min_size`` is in pixels of the shrunk photo (``max_side``); lower it to find smaller faces.
    ``sweep_range``/``sweep_step`` set the sweep angles (±range in steps; 180 = the full circle);
    ``nms_iou`` is the overlap above which two detections are the same face.
    """

    max_side: int | None = 1024
    min_size: int = 60
    upright_scale: float = 1.4
    upright_neighbours: int = 1
    sweep: SweepMode = SweepMode.IF_NONE
    sweep_range: int = 45
    sweep_step: int = 15
    sweep_scale: float = 1.3
    sweep_neighbours: int = 6
    nms_iou: float = 0.3
    name: str = NAME
    _cascade: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.sweep = SweepMode(self.sweep)  # accept "always" etc. from configs and the CLI
        if not 0 < self.sweep_step <= 180 or not 0 <= self.sweep_range <= 180:
            raise ValueError(
                f"sweep step must be 1–180° and the sweep's reach 0–180° (180: the full circle), got "
                f"step {self.sweep_step}, reach {self.sweep_range}"
            )

    def sweep_angles(self) -> list[float]:
        """Sweep angles in degrees, nearest to upright first, without 0 (the upright pass)."""
        steps = self.sweep_range // self.sweep_step
        angles = [float(s * self.sweep_step * sign) for s in range(1, steps + 1) for sign in (1, -1)]
        # ±180 is one angle; keep it once.
        return [a for i, a in enumerate(angles) if not (a == -180.0 and 180.0 in angles[:i])]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        gray, factor = fit_longest_side(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), self.max_side)
        candidates = self._pass(gray, 0.0, self.upright_scale, self.upright_neighbours, factor)
        if self.sweep is SweepMode.ALWAYS or (self.sweep is SweepMode.IF_NONE and not candidates):
            for angle in self.sweep_angles():
                candidates += self._pass(gray, angle, self.sweep_scale, self.sweep_neighbours, factor)
        return self._merge(candidates, width, height)

    def _pass(self, gray: np.ndarray, angle: float, scale: float, neighbours: int, factor: float) -> list[_Candidate]:
        """Run the cascade on ``gray`` rotated by ``angle``; centres come back in original pixels."""
        if angle:
            rotated, back = _rotate_expanded(gray, angle)
        else:
            rotated, back = gray, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        rects, counts = self._cascade.detectMultiScale2(
            rotated, scaleFactor=scale, minNeighbors=neighbours, minSize=(self.min_size, self.min_size)
        )
        found = []
        for (x, y, w, h), n in zip(rects, counts, strict=True):
            cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
            found.append(
                _Candidate(
                    centre=(float(cx) / factor, float(cy) / factor),
                    side=float(max(w, h)) / factor,
                    neighbours=int(n),
                    angle=angle,
                )
            )
        return found

    def _merge(self, candidates: list[_Candidate], width: int, height: int) -> list[Face]:
        """One face per cluster of overlapping candidates (NMS keeps the best-supported one)."""
        if not candidates:
            return []
        rects = [[c.centre[0] - c.side / 2, c.centre[1] - c.side / 2, c.side, c.side] for c in candidates]
        scores = [float(c.neighbours) for c in candidates]
        keep = cv2.dnn.NMSBoxes(rects, scores, 0.0, self.nms_iou)
        faces = []
        for index in np.asarray(keep, dtype=int).reshape(-1):
            c = candidates[index]
            half = c.side / 2
            box = Box(c.centre[0] - half, c.centre[1] - half, c.centre[0] + half, c.centre[1] + half)
            faces.append(
                Face(
                    box=box.clip(width, height),
                    score=c.neighbours / (c.neighbours + NEIGHBOURS_HALF_SCORE),
                    angle=c.angle,
                    detector=NAME,
                )
            )
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces


def _rotate_expanded(gray: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``gray`` rotated counter-clockwise by ``angle`` on a canvas big enough to keep every pixel.

    Returns the rotated image and the 2×3 affine that maps its pixels back to ``gray``'s. The
    expanded canvas matters: cropping to the original size would cut off faces near the corners.
    """
    height, width = gray.shape[:2]
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    new_w = math.ceil(width * cos + height * sin)
    new_h = math.ceil(width * sin + height * cos)
    forward = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    forward[0, 2] += new_w / 2 - width / 2
    forward[1, 2] += new_h / 2 - height / 2
    rotated = cv2.warpAffine(gray, forward, (new_w, new_h), flags=cv2.INTER_LINEAR)
    return rotated, cv2.invertAffineTransform(forward)


def cascade_path() -> Path:
    """OpenCV's bundled frontal-face cascade (OpenCV 5 dropped the cascades: keep opencv < 5)."""
    data = getattr(cv2, "data", None)
    path = Path(data.haarcascades) / CASCADE if data is not None else None
    if path is None or not path.is_file():
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs {CASCADE}, which OpenCV 4 wheels bundle: pip install '{PACKAGE}<5'"
        )
    return path


def build(**params: Any) -> HaarDetector:
    """Load the cascade and return a detector; ``params`` override :class:`HaarDetector`'s fields."""
    path = cascade_path()
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DetectorUnavailable(f"OpenCV could not load {path}: reinstall {PACKAGE}")
    return HaarDetector(_cascade=cascade, **params)


INFO = DetectorInfo(
    name=NAME,
    build=build,
    landmarks=False,
    notes="the seed's cascade + ±45° sweep: 729/786 photos, ~1 box in 4-5 not a face; ~0.05 s/photo",
    package=PACKAGE,
)
