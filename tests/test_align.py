"""Crops: size, margin geometry, padding, upright rotation (checked by re-detecting), quality."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.align import DEFAULT_MARGIN, Pad, crop_face, crop_quality, upright_angle
from facelab.detect import Detector, DetectorUnavailable, get_detector
from facelab.imageio import load_rgb
from facelab.types import Box, Face

PORTRAIT = "strangers/Aaron_Eckhart_0001.jpg"


@pytest.fixture(scope="module")
def retinaface() -> Detector:
    try:
        return get_detector("retinaface")
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def portrait(shared_data: Path) -> np.ndarray:
    return load_rgb(shared_data / PORTRAIT)


def _rotate(rgb: np.ndarray, angle: float) -> np.ndarray:
    """``rgb`` turned ``angle`` degrees counter-clockwise about its centre, on a canvas 1.5× larger."""
    height, width = rgb.shape[:2]
    canvas = cv2.copyMakeBorder(rgb, height // 4, height // 4, width // 4, width // 4, cv2.BORDER_REPLICATE)
    ch, cw = canvas.shape[:2]
    matrix = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, 1.0)
    return cv2.warpAffine(canvas, matrix, (cw, ch), borderMode=cv2.BORDER_REPLICATE)


def _square_photo() -> tuple[np.ndarray, Face]:
    """A gray photo with a white 100×100 'face' at (200..300, 100..200) and no landmarks."""
    rgb = np.full((400, 600, 3), 60, dtype=np.uint8)
    rgb[100:200, 200:300] = 255
    return rgb, Face(box=Box(200, 100, 300, 200), score=0.9)


def test_crop_is_square_rgb_of_the_requested_size(portrait: np.ndarray, retinaface: Detector) -> None:
    face = retinaface.detect(portrait)[0]
    crop = crop_face(portrait, face)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert crop_face(portrait, face, margin=2.0, size=112).shape == (112, 112, 3)
    assert pytest.approx(1.3) == DEFAULT_MARGIN


@pytest.mark.parametrize("margin", [1.0, 1.3, 2.0])
def test_margin_is_the_crop_side_over_the_box_side(margin: float) -> None:
    rgb, face = _square_photo()
    crop = crop_face(rgb, face, margin=margin, size=200)
    white = (crop[..., 0] > 160).astype(np.uint8)
    ys, xs = np.nonzero(white)
    side = xs.max() - xs.min() + 1
    assert side == pytest.approx(200 / margin, abs=3)
    # Centred: the white square sits in the middle of the crop.
    assert (xs.min() + xs.max()) / 2 == pytest.approx(99.5, abs=2)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(99.5, abs=2)


def test_outside_the_photo_is_replicated_or_black() -> None:
    rgb = np.full((300, 300, 3), 200, dtype=np.uint8)
    corner = Face(box=Box(0, 0, 100, 100), score=1.0)  # crop window reaches past the top-left corner
    replicated = crop_face(rgb, corner, margin=2.0, size=100)
    black = crop_face(rgb, corner, margin=2.0, size=100, pad=Pad.BLACK)
    assert replicated[2, 2].tolist() == [200, 200, 200]
    assert black[2, 2].tolist() == [0, 0, 0]
    assert black[60, 60].tolist() == [200, 200, 200]


def test_big_faces_are_shrunk_without_losing_the_geometry() -> None:
    """A 2000 px face goes through the area-averaging path and still fills the crop as asked."""
    rgb = np.full((3000, 3000, 3), 60, dtype=np.uint8)
    rgb[500:2500, 500:2500] = 255
    crop = crop_face(rgb, Face(box=Box(500, 500, 2500, 2500), score=1.0), margin=2.0, size=100)
    ys, xs = np.nonzero(crop[..., 0] > 160)
    assert xs.max() - xs.min() + 1 == pytest.approx(50, abs=2)
    assert ys.max() - ys.min() + 1 == pytest.approx(50, abs=2)


@pytest.mark.parametrize("tilt", [25.0, -20.0])
def test_eyes_are_level_after_alignment(portrait: np.ndarray, retinaface: Detector, tilt: float) -> None:
    tilted = _rotate(portrait, tilt)
    faces = retinaface.detect(tilted)
    assert faces
    face = faces[0]
    # Turning the photo counter-clockwise raises the eye on the image's right: eye_angle ≈ -tilt.
    assert face.eye_angle == pytest.approx(-tilt, abs=6)
    crop = crop_face(tilted, face, margin=1.6)
    again = retinaface.detect(crop)
    assert again, "no face found on the aligned crop"
    assert abs(again[0].eye_angle or 0.0) < 3.0, again[0].eye_angle


def test_haar_angle_is_undone_without_landmarks(portrait: np.ndarray, retinaface: Detector) -> None:
    """A face the Haar sweep found at angle -30 (photo turned +30°) comes out upright."""
    tilted = _rotate(portrait, 30)
    reference = retinaface.detect(tilted)[0]
    haar_like = Face(box=reference.box, score=0.8, angle=-30.0, detector="haar")
    assert upright_angle(haar_like) == -30.0
    again = retinaface.detect(crop_face(tilted, haar_like, margin=1.6))
    assert again and abs(again[0].eye_angle or 0.0) < 5.0


def test_profile_landmarks_fall_back_to_the_eyes_above_mouth_axis() -> None:
    # A profile as RetinaFace reports it: both eyes nearly on top of each other, mouth below.
    face = Face(
        box=Box(758, 151, 849, 315),
        score=0.99,
        landmarks=((782, 212), (778, 214), (755, 240), (778, 270), (776, 270)),
    )
    assert abs(face.eye_angle or 0.0) > 90  # the raw eye line says "upside down"
    assert abs(upright_angle(face)) < 10  # the axis says "upright"


def test_quality_orders_sharp_big_faces_above_blurred_small_ones(portrait: np.ndarray, retinaface: Detector) -> None:
    face = retinaface.detect(portrait)[0]
    sharp = crop_face(portrait, face)
    q_sharp = crop_quality(sharp, face, portrait.shape)
    assert set(q_sharp) == {"sharpness", "face_px", "score", "quality"}
    assert 0.0 < q_sharp["quality"] <= 1.0
    assert q_sharp["face_px"] == pytest.approx(max(face.box.width, face.box.height))

    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    q_blurred = crop_quality(blurred, face, portrait.shape)
    assert q_blurred["sharpness"] < q_sharp["sharpness"] / 4
    assert q_blurred["quality"] < q_sharp["quality"]

    tiny = Face(box=Box(0, 0, 18, 18), score=face.score)
    assert crop_quality(sharp, tiny, portrait.shape)["quality"] == 0.0


def test_crop_face_rejects_a_non_positive_margin(portrait: np.ndarray) -> None:
    with pytest.raises(ValueError, match="margin"):
        crop_face(portrait, Face(box=Box(10, 10, 50, 50), score=1.0), margin=0)
