"""Frozen value types shared by every stage. Importing this module imports no heavy library."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in original-image pixels (after EXIF transpose), corners (x1, y1)-(x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> Point:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clip(self, width: int, height: int) -> Box:
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def scaled(self, factor: float) -> Box:
        """The box with every coordinate multiplied (maps boxes found on a resized image back)."""
        return Box(self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor)

    def as_ints(self) -> tuple[int, int, int, int]:
        return (round(self.x1), round(self.y1), round(self.x2), round(self.y2))


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face.

    ``landmarks`` are five points in anatomical order: the subject's right eye (on the image's left
    when the face is upright), left eye, nose tip, right mouth corner, left mouth corner; ``None``
    when the detector gives none. Anatomical order keeps ``eye_angle`` right for tilted faces.
    ``angle`` is the in-plane rotation (degrees, counter-clockwise) at which
    a rotation-sweeping detector found the face; 0 for detectors that do not sweep.
    """

    box: Box
    score: float
    landmarks: tuple[Point, ...] | None = None
    angle: float = 0.0
    detector: str = ""

    @property
    def eye_angle(self) -> float | None:
        """Tilt of the line between the eyes in degrees (positive: right eye lower), if known."""
        if not self.landmarks:
            return None
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ry - ly, rx - lx))


class Role(StrEnum):
    """Who a face in a person's folder is, decided by identity resolution (or by review)."""

    PERSON = "person"
    BYSTANDER = "bystander"
    AMBIGUOUS = "ambiguous"
    SUSPICIOUS = "suspicious"


class CropStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class Recognition:
    """The answer for one face: ``name is None`` means unknown.

    ``score`` is the model's confidence in ``name`` (higher is surer); ``margin`` is the gap to the
    second-best person, small for look-alikes.
    """

    face: Face
    name: str | None
    score: float
    margin: float = float("nan")
    candidates: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else "unknown"
