"""Face detectors: a registry of named detectors, built lazily.

>>> from facelab.detect import get_detector, DEFAULT_DETECTOR
>>> faces = get_detector(DEFAULT_DETECTOR).detect(rgb)   # best first, boxes in rgb's pixels

Importing this package loads no model and imports no deep-learning library; each detector loads its
weights the first time :func:`get_detector` builds it. ``registered()`` lists every built-in
detector with measured speed and quality notes (see docs/benchmarks.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.detect.base import Detector, DetectorInfo, DetectorUnavailable, get_detector, registered

# Chosen by bench/bench_detectors.py (docs/benchmarks.md): RetinaFace found a face on 784 of the 786
# shared photos with no false positive in any by-eye sample, gives landmarks for alignment, and
# takes ~0.06 s a photo on 2 CPU cores. Haar (the seed) misses 1 photo in 9 and ~1 box in 4-5 is
# not a face.
DEFAULT_DETECTOR = "retinaface"

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "DetectorInfo",
    "DetectorUnavailable",
    "fit_longest_side",
    "get_detector",
    "registered",
]


def fit_longest_side(rgb: np.ndarray, max_side: int | None, min_side: int | None = None) -> tuple[np.ndarray, float]:
    """Resize ``rgb`` so its longest side is at most ``max_side`` (and at least ``min_side``).

    Returns the resized image and the factor applied; detectors run on the resized image and divide
    coordinates by the factor to map boxes back to the original pixels. ``None`` means no limit.
    Shrinking uses ``INTER_AREA`` because it averages instead of skipping pixels, so small faces keep
    their shape; enlarging (for detectors whose smallest anchor is bigger than the faces in small
    web images) uses ``INTER_LINEAR``.
    """
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if max_side is not None and longest > max_side:
        factor, interpolation = max_side / longest, cv2.INTER_AREA
    elif min_side is not None and longest < min_side:
        factor, interpolation = min_side / longest, cv2.INTER_LINEAR
    else:
        return rgb, 1.0
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=interpolation), factor
