"""Detector protocol and registry.

A detector takes an upright RGB ``uint8`` array and returns faces in that array's pixel
coordinates. Detectors are registered by name with :func:`register` and built lazily by
:func:`get_detector`, so importing facelab loads no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facelab.types import Face


class DetectorUnavailable(RuntimeError):
    """The detector's package or weights are not installed; the message says how to get them."""


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (H×W×3 uint8), best first, boxes in ``rgb``'s pixels."""
        ...


@dataclass(frozen=True)
class DetectorInfo:
    """What ``facelab detectors`` shows; ``notes`` carries measured speed/quality (docs/benchmarks.md)."""

    name: str
    build: Callable[[], Detector]
    landmarks: bool
    notes: str
    package: str


_REGISTRY: dict[str, DetectorInfo] = {}


def register(info: DetectorInfo) -> None:
    _REGISTRY[info.name] = info


def registered() -> dict[str, DetectorInfo]:
    from facelab.detect import _builtin  # noqa: F401  (registers the built-in detectors)

    return dict(_REGISTRY)


_CACHE: dict[str, Detector] = {}


def get_detector(name: str) -> Detector:
    """The detector called ``name``, built once per process."""
    infos = registered()
    if name not in infos:
        raise KeyError(f"unknown detector {name!r}; choose one of: {', '.join(sorted(infos))}")
    if name not in _CACHE:
        _CACHE[name] = infos[name].build()
    return _CACHE[name]
