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


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, int | float | str]]:
    """``"haar:sweep_step=10,sweep_range=180"`` → ``("haar", {"sweep_step": 10, "sweep_range": 180})``.

    A detector with settings is named by such a spec wherever a detector name goes (``--detector``,
    the workspace's remembered detector), so a build, recognition and the web use the same one."""
    name, _, rest = spec.partition(":")
    params: dict[str, int | float | str] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"detector setting {part!r} in {spec!r}: write NAME:key=value,key=value")
        params[key.strip()] = _value(value.strip())
    return name, params


def detector_spec(name: str, **params: int | float | str | None) -> str:
    """The spec string of ``name`` with the settings that are given (None: the detector's default)."""
    given = {k: v for k, v in params.items() if v is not None}
    return name + (":" + ",".join(f"{k}={v}" for k, v in sorted(given.items())) if given else "")


def get_detector(name: str) -> Detector:
    """The detector called ``name`` (a registered name, or a spec with settings, see
    :func:`parse_spec`), built once per process."""
    infos = registered()
    base, params = parse_spec(name)
    if base not in infos:
        raise KeyError(f"unknown detector {base!r}; choose one of: {', '.join(sorted(infos))}")
    if name not in _CACHE:
        try:
            _CACHE[name] = infos[base].build(**params)
        except TypeError as exc:  # a setting the detector does not have
            raise KeyError(f"detector {base!r} has no setting in {name!r} ({exc})") from exc
    return _CACHE[name]
