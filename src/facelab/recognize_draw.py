"""Drawing recognition answers onto pictures: boxes with a name and score, for photos and video frames.

OpenCV is imported on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from facelab.tracking import UNKNOWN, Track
from facelab.types import Box, Recognition

# -- drawing ------------------------------------------------------------------------------------

_KNOWN = (40, 200, 40)  # BGR
_UNKNOWN = (40, 40, 230)
_PENDING = (200, 200, 200)


def draw_box(bgr: np.ndarray, box: Box, text: str, color: tuple[int, int, int]) -> None:
    """A box and a filled caption above it (below it at the top edge), in place, scaled to the image."""
    import cv2

    x1, y1, x2, y2 = box.as_ints()
    thickness = max(1, round(max(bgr.shape[:2]) / 400))
    cv2.rectangle(bgr, (x1, y1), (x2, y2), color, thickness)
    scale = max(0.4, max(bgr.shape[:2]) / 1200)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = y1 - th - base - 4 if y1 - th - base - 4 >= 0 else y2
    cv2.rectangle(bgr, (x1, top), (x1 + tw + 4, top + th + base + 4), color, cv2.FILLED)
    white = (255, 255, 255)
    origin = (x1 + 2, top + th + 2)
    cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, white, thickness, cv2.LINE_AA)


def annotate_photo(rgb: np.ndarray, recognitions: Sequence[Recognition]) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, name and score drawn."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for rec in recognitions:
        draw_box(bgr, rec.face.box, f"{rec.label} {rec.score:.2f}", _KNOWN if rec.name else _UNKNOWN)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def draw_tracks(bgr: np.ndarray, tracks: Iterable[Track]) -> None:
    for track in tracks:
        name = track.name
        color = _PENDING if name is None else (_UNKNOWN if name == UNKNOWN else _KNOWN)
        text = f"{track.label} {track.score:.2f}" if name is not None else f"#{track.id} ..."
        draw_box(bgr, track.box, text, color)
