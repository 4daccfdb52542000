"""Upright, square face crops with a margin (the seed's "extended image" factor ``k``), and their quality.

:func:`crop_face` cuts a ``size``×``size`` RGB crop centred on the face box, ``margin`` times the box
side, rotated so that the face is upright:

- with landmarks (RetinaFace, MTCNN, dlib), the eyes are made level by one similarity transform
  (``cv2.getRotationMatrix2D`` about the box centre, then ``cv2.warpAffine``);
- without landmarks, a face the Haar rotation sweep found at ``Face.angle`` is rotated by that angle;
- otherwise the crop is not rotated.

Pixels the crop needs from outside the photo are filled by replicating the border (default) or with
black (:class:`Pad`). :func:`crop_quality` scores a crop for sorting and filtering.
"""

from __future__ import annotations

import math
from enum import StrEnum

import cv2
import numpy as np

from facelab.types import Face

# Crop side = DEFAULT_MARGIN × face box side. 1.3 is where the seed started; the build stage measures
# recognition accuracy against k (bench) and may move it. Smaller keeps only the face (less
# background for a classifier to learn from), larger keeps hair and chin that help some backbones.
DEFAULT_MARGIN = 1.3
DEFAULT_SIZE = 256

# Quality tuning (see crop_quality). Sharpness is the variance of the Laplacian of the crop's gray
# centre shrunk to SHARPNESS_SIDE² pixels, so it does not depend on the crop size. Measured on the
# best RetinaFace face of each shared photo: median 570-610 (celeb5, sports5), 160 (LFW's soft
# 250 px photos), 10th percentile 80-190; the same crops blurred (Gaussian, sigma 4 px at 256)
# give a median of 17-24. SHARPNESS_GOOD is where the sharpness term reaches 1.
SHARPNESS_SIDE = 64
SHARPNESS_GOOD = 150.0
# Faces of FACE_PX_GOOD px and more carry all the detail a 112-160 px recognizer input can use;
# FACE_PX_MIN and smaller are upscaled mush.
FACE_PX_GOOD = 112.0
FACE_PX_MIN = 20.0
# Relative weights of the three terms in the weighted geometric mean.
QUALITY_WEIGHTS = {"sharpness": 1.0, "size": 1.0, "score": 0.5}
# Eye-line angles that disagree with the eyes-above-mouth axis by more than this are not trusted
# (in profile the two eyes nearly overlap and the line between them points anywhere).
_MAX_AXIS_DISAGREEMENT = 45.0


class Pad(StrEnum):
    """How to fill the part of a crop that lies outside the photo."""

    REPLICATE = "replicate"  # repeat the edge pixels: no hard black edge for a network to learn
    BLACK = "black"


_BORDER = {Pad.REPLICATE: cv2.BORDER_REPLICATE, Pad.BLACK: cv2.BORDER_CONSTANT}


def upright_angle(face: Face) -> float:
    """Degrees to rotate the photo counter-clockwise (``cv2.getRotationMatrix2D``) to make ``face`` upright.

    With landmarks, this is the tilt of the eye line (so the eyes end up level), unless it disagrees
    with the eyes-above-mouth axis by more than 45° (profile faces, where the eyes nearly overlap),
    in which case the axis is used. Without landmarks, the rotation-sweep angle ``face.angle``.
    """
    if not face.landmarks or len(face.landmarks) < 5:
        return face.angle
    eye_line = face.eye_angle or 0.0
    (lx, ly), (rx, ry), _nose, (mlx, mly), (mrx, mry) = face.landmarks[:5]
    # The "up" vector from the mouth's centre to the eyes' centre, turned 90° clockwise, points
    # along the eye line of an upright face: its angle is the tilt, however the face is turned.
    up_x, up_y = (lx + rx - mlx - mrx) / 2, (ly + ry - mly - mry) / 2
    axis = math.degrees(math.atan2(up_x, -up_y))
    if abs(_wrap(eye_line - axis)) > _MAX_AXIS_DISAGREEMENT:
        return axis
    return eye_line


def _wrap(angle: float) -> float:
    """``angle`` in degrees brought into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def crop_face(
    rgb: np.ndarray,
    face: Face,
    margin: float = DEFAULT_MARGIN,
    size: int = DEFAULT_SIZE,
    pad: Pad | str = Pad.REPLICATE,
) -> np.ndarray:
    """An upright ``size``×``size`` RGB crop of ``face`` from ``rgb`` (the photo it was detected on).

    ``margin`` is the seed's "extended image" factor k: the crop's side is ``margin`` times the face
    box's longer side, centred on the box; 1.0 is the box itself, 1.3 adds 15 % on each side. Tune it
    with the build stage's benchmark (recognition accuracy against k), not by eye. ``pad`` fills
    what falls outside the photo. Faces larger than the crop are shrunk with area averaging (no
    aliasing); smaller ones are enlarged bilinearly.
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive (got {margin}); 1.0 is the face box itself")
    border = _BORDER[Pad(pad)]
    cx, cy = face.box.center
    side = margin * max(face.box.width, face.box.height, 1.0)
    angle = upright_angle(face)
    image = rgb
    # warpAffine samples bilinearly, which aliases when shrinking more than 2×: shrink the region
    # around the face with INTER_AREA first, so the warp never shrinks by more than 2×.
    if side > 2 * size:
        shrink = 2 * size / side
        reach = side * 0.75  # half the crop's diagonal (side/√2) plus a little for interpolation
        x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
        x1, y1 = min(rgb.shape[1], math.ceil(cx + reach)), min(rgb.shape[0], math.ceil(cy + reach))
        region = rgb[y0:y1, x0:x1]
        new_w, new_h = max(1, round(region.shape[1] * shrink)), max(1, round(region.shape[0] * shrink))
        image = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
        sx, sy = new_w / region.shape[1], new_h / region.shape[0]
        cx, cy = (cx - x0) * sx, (cy - y0) * sy
        side *= (sx + sy) / 2
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
    matrix[0, 2] += size / 2 - cx
    matrix[1, 2] += size / 2 - cy
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=(0, 0, 0))


def crop_quality(crop: np.ndarray, face: Face, image_shape: tuple[int, ...]) -> dict[str, float]:
    """How usable a crop is for training: ``sharpness``, ``face_px``, ``score`` and ``quality``.

    - ``sharpness``: variance of the Laplacian of the crop's gray centre (the middle half of each
      side, mostly face for margins up to 2) shrunk to 64×64, so values compare across crop sizes.
      Small faces enlarged to the crop size score low here too: they carry less detail.
    - ``face_px``: the face box's longer side in original pixels.
    - ``score``: the detector's score (0..1).
    - ``quality`` in 0..1, a weighted geometric mean (weights ``QUALITY_WEIGHTS``) of
      ``min(1, sharpness / SHARPNESS_GOOD)``, ``clip(log(face_px / FACE_PX_MIN) /
      log(FACE_PX_GOOD / FACE_PX_MIN), 0, 1)`` and ``score``: a crop that fails one
      term badly (blurred, tiny, doubtful) scores low whatever the others say.

    Tuning: to reject crops, threshold ``quality``. 0.5 drops the blurred, the dark and the tiny
    (checked by eye on a sample): 3 % of the RetinaFace crops of celeb5, 13 % of sports5 (crowds),
    5 % of strangers; crops between 0.5 and 0.75 looked usable.
    change ``SHARPNESS_GOOD`` if your camera's crisp photos score below 1 on sharpness, and
    ``FACE_PX_GOOD`` to the recognizer's input size. ``image_shape`` (the photo's shape) is part of
    the signature for terms relative to the photo; the current formula does not need it.
    """
    del image_shape  # part of the contract for terms relative to the photo; none uses it yet
    face_px = float(max(face.box.width, face.box.height))
    score = float(min(max(face.score, 0.0), 1.0))
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    h, w = gray.shape[:2]
    centre = gray[h // 4 : h - h // 4, w // 4 : w - w // 4]
    sharpness = 0.0
    if centre.size:
        centre = cv2.resize(centre, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    size_term = math.log(max(face_px, 1e-6) / FACE_PX_MIN) / math.log(FACE_PX_GOOD / FACE_PX_MIN)
    terms = {
        "sharpness": min(1.0, sharpness / SHARPNESS_GOOD),
        "size": min(1.0, max(0.0, size_term)),
        "score": score,
    }
    quality = 0.0
    if min(terms.values()) > 0.0:
        weighted = sum(QUALITY_WEIGHTS[k] * math.log(v) for k, v in terms.items())
        quality = math.exp(weighted / sum(QUALITY_WEIGHTS.values()))
    return {"sharpness": sharpness, "face_px": face_px, "score": score, "quality": quality}
