"""Every registered detector on real photos: faces where there are faces, none where there are none.

Photos come from ../shared/data (the ``shared_data`` fixture skips when it is absent). Each detector
is built once per session; the whole file takes a few seconds per detector.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facelab.detect import DEFAULT_DETECTOR, Detector, DetectorUnavailable, get_detector, registered
from facelab.detect.haar import HaarDetector, SweepMode
from facelab.detect.haar import build as build_haar
from facelab.imageio import load_rgb
from facelab.types import Face

DETECTORS = sorted(registered())
# A clear, frontal, single-face LFW photo: 250×250 with the face centred.
PORTRAIT = "strangers/Aaron_Eckhart_0001.jpg"
# A press-conference photo whose upper-left is a backdrop of logos and text, no people.
BACKDROP = "sports5/roger_federer/1163381732-850x560.jpg"
BACKDROP_REGION = (slice(0, 200), slice(0, 260))  # rows, columns
# An LFW photo on which the Haar cascade's upright pass misses the face once it is tilted by 30°.
TILTED_SOURCE = "strangers/Aaron_Eckhart_0001.jpg"


@pytest.fixture(scope="session", params=DETECTORS)
def detector(request: pytest.FixtureRequest) -> Detector:
    try:
        return get_detector(request.param)
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def portrait(shared_data: Path) -> np.ndarray:
    return load_rgb(shared_data / PORTRAIT)


def _assert_in_bounds(faces: list[Face], shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    for face in faces:
        box = face.box
        assert 0 <= box.x1 < box.x2 <= width and 0 <= box.y1 < box.y2 <= height, box
        assert np.isfinite(face.score)


def _contains(face: Face, point: tuple[float, float]) -> bool:
    box = face.box
    return box.x1 <= point[0] <= box.x2 and box.y1 <= point[1] <= box.y2


def test_registry_lists_every_builtin() -> None:
    assert {"haar", "retinaface", "ssd", "mtcnn"} <= set(DETECTORS)
    assert DEFAULT_DETECTOR in DETECTORS
    for name, info in registered().items():
        assert info.name == name and info.notes and info.package


def test_import_loads_no_model() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from facelab.detect import registered; registered(); "
        "heavy = [m for m in ('torch', 'retinaface', 'dlib', 'facenet_pytorch', 'onnxruntime') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unknown_detector_names_the_choices() -> None:
    with pytest.raises(KeyError, match="retinaface"):
        get_detector("no-such-detector")


def test_finds_the_face_in_a_portrait(detector: Detector, portrait: np.ndarray) -> None:
    faces = detector.detect(portrait)
    assert faces, f"{detector.name} found no face in {PORTRAIT}"
    _assert_in_bounds(faces, portrait.shape)
    best = faces[0]
    assert _contains(best, (125, 125)), best.box  # LFW photos are centred on the face
    assert 60 <= best.box.width <= 200, best.box
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert best.detector == detector.name
    if best.landmarks is not None:
        (lx, _), (rx, _) = best.landmarks[:2]
        assert lx < rx, "first landmark must be the eye on the image's left"
        assert abs(best.eye_angle or 0.0) < 10


def test_no_face_on_a_smooth_gradient(detector: Detector) -> None:
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    gradient = np.stack(
        [np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 128.0)], axis=-1
    ).astype(np.uint8)
    assert detector.detect(gradient) == []


def test_no_face_on_a_photo_background(detector: Detector, shared_data: Path) -> None:
    region = load_rgb(shared_data / BACKDROP)[BACKDROP_REGION]
    assert detector.detect(np.ascontiguousarray(region)) == []


def test_boxes_within_bounds_on_a_big_group_photo(detector: Detector, shared_data: Path) -> None:
    """A large photo (shrunk internally) with faces near the edges: boxes map back inside the photo."""
    rgb = load_rgb(shared_data / BACKDROP)
    big = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)  # 2208×1455
    faces = detector.detect(big)
    _assert_in_bounds(faces, big.shape)
    small = detector.detect(rgb)
    if faces and small:
        # Same face, in the big photo's pixels.
        cx, cy = faces[0].box.center
        sx, sy = small[0].box.center
        assert abs(cx - 3 * sx) < 0.1 * big.shape[1] and abs(cy - 3 * sy) < 0.1 * big.shape[0]


def test_exif_rotated_photo_is_found_upright(detector: Detector, portrait: np.ndarray, tmp_path: Path) -> None:
    """A camera that stores the pixels sideways and an EXIF tag (Orientation 6) gives the same face."""
    sideways = np.rot90(portrait)  # counter-clockwise, as a phone held on its side stores it
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(np.ascontiguousarray(sideways)).save(path, quality=95, exif=exif)
    upright = load_rgb(path)
    assert upright.shape == portrait.shape
    faces = detector.detect(upright)
    assert faces and _contains(faces[0], (125, 125))

    # The untagged sideways array is searched as it is: whatever is found lies inside it, and a face
    # found is the real one (a detector is not required to find faces lying on their side).
    found = detector.detect(np.ascontiguousarray(sideways))
    _assert_in_bounds(found, sideways.shape)
    for face in found[:1]:
        assert _contains(face, (125, 125))


def test_haar_sweep_finds_a_tilted_face(shared_data: Path) -> None:
    rgb = load_rgb(shared_data / TILTED_SOURCE)
    height, width = rgb.shape[:2]
    centre = (width / 2, height / 2)
    tilted = cv2.warpAffine(
        rgb, cv2.getRotationMatrix2D(centre, 30, 1.0), (width, height), borderMode=cv2.BORDER_REPLICATE
    )
    upright_only = build_haar(sweep=SweepMode.NEVER)
    assert not any(_contains(f, centre) for f in upright_only.detect(tilted)), "choose a harder photo"

    haar = build_haar()
    assert isinstance(haar, HaarDetector)
    faces = haar.detect(tilted)
    hits = [f for f in faces if _contains(f, centre)]
    assert hits, [f.box for f in faces]
    face = hits[0]
    # The photo was turned 30° counter-clockwise; turning it back is -30°, within one sweep step.
    assert abs(face.angle - -30) <= 15, face.angle
    # The box maps back onto the face: its centre is near the photo's centre (where LFW puts faces).
    assert abs(face.box.center[0] - centre[0]) < 25 and abs(face.box.center[1] - centre[1]) < 25
    assert 60 <= face.box.width <= 200


def test_haar_merges_one_face_found_at_several_angles(portrait: np.ndarray) -> None:
    haar = build_haar(sweep=SweepMode.ALWAYS)
    faces = [f for f in haar.detect(portrait) if _contains(f, (125, 125))]
    assert len(faces) == 1, [(f.box, f.angle, f.score) for f in faces]


def test_haar_sweep_angles() -> None:
    assert HaarDetector().sweep_angles() == [15.0, -15.0, 30.0, -30.0, 45.0, -45.0]
    full = HaarDetector(sweep_range=180).sweep_angles()
    assert len(full) == len(set(full)) == 23 and 0.0 not in full
