"""Registers the built-in detectors. Imported by ``registered()``; each module loads nothing until built."""

from __future__ import annotations

from facelab.detect import dlib_hog, haar, mtcnn, retinaface, ssd
from facelab.detect.base import register

# Order is the order ``facelab detectors`` lists them in: the default first, the seed's last.
for _module in (retinaface, mtcnn, ssd, dlib_hog, haar):
    register(_module.INFO)
