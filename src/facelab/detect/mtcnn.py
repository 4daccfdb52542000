"""MTCNN (P-, R-, O-net cascade) from ``facenet-pytorch``: boxes + 5 landmarks, on the CPU.

The P/R/O-net weights ship inside the facenet-pytorch wheel, so nothing downloads. Tuning:

- ``max_side``: MTCNN builds an image pyramid down from ``min_face_size``; on a 24-megapixel photo
  that is dozens of P-net passes, so photos are shrunk to ``max_side`` first. 640 found as many
  sports5 photos with a face as 1024 (365 vs 364 of 368) with 2.5× fewer pixels to scan.
- ``min_face_size``: smallest face searched for, in pixels of the shrunk image (20 is the library's
  default); raising it is the cheapest way to go faster on portraits.
- ``thresholds``: the three stages' acceptance scores (library default 0.6, 0.7, 0.7); raise the
  last one to cut false positives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.detect import fit_longest_side
from facelab.detect.base import DetectorInfo, DetectorUnavailable
from facelab.types import Box, Face

NAME = "mtcnn"
PACKAGE = "facenet-pytorch"


@dataclass
class MTCNNDetector:
    """Call :meth:`detect` with an RGB array; build with :func:`build` (loads the three nets)."""

    max_side: int = 640
    name: str = NAME
    _mtcnn: Any = field(default=None, repr=False)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import torch

        small, factor = fit_longest_side(rgb, self.max_side)
        with torch.inference_mode():
            boxes, probs, points = self._mtcnn.detect(np.ascontiguousarray(small), landmarks=True)
        if boxes is None:
            return []
        height, width = rgb.shape[:2]
        faces = []
        for box, prob, pts in zip(boxes, probs, points, strict=True):
            x1, y1, x2, y2 = (float(v) / factor for v in box)
            # facenet-pytorch gives the eye on the image's left first (the subject's right eye),
            # then the other eye, the nose and the mouth corners: already our order.
            landmarks = tuple((float(x) / factor, float(y) / factor) for x, y in pts)
            faces.append(
                Face(
                    box=Box(x1, y1, x2, y2).clip(width, height),
                    score=float(prob),
                    landmarks=landmarks,
                    detector=NAME,
                )
            )
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces


def build(
    max_side: int = 640, min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
) -> MTCNNDetector:
    """Load the three nets (weights from the wheel) on the CPU and return a detector."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        # facenet-pytorch's __init__ also imports its InceptionResnetV1 module, which needs
        # requests and tqdm (to download weights we never use): name whichever is missing.
        missing = exc.name or PACKAGE
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs the {PACKAGE!r} package (weights included) and its "
            f"import-time dependencies requests and tqdm; {missing!r} is missing: "
            f"pip install requests tqdm && pip install --no-deps {PACKAGE}"
        ) from exc
    # keep_all: every face, not only the largest; select_largest=False sorts by probability.
    mtcnn = MTCNN(
        keep_all=True,
        select_largest=False,
        min_face_size=min_face_size,
        thresholds=list(thresholds),
        device="cpu",
    )
    mtcnn.eval()
    return MTCNNDetector(max_side=max_side, _mtcnn=mtcnn)


INFO = DetectorInfo(
    name=NAME,
    build=build,
    landmarks=True,
    notes="783/786 photos with a face but ~10% of boxes not faces (by eye); ~0.13 s/photo, 2 cores",
    package=PACKAGE,
)
