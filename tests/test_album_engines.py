"""The album indexer's engines: worker processes give the same index as one process, and a worker
that dies costs no photo."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab import album_engines
from facelab.album_engines import get_engine
from facelab.album_index import index_library
from facelab.imageio import load_rgb
from facelab.recognize import Recognizer
from facelab.store import Workspace, blob_to_vector
from tiny_model import TinyModel, copy_workspace

CRASH_WIDTH = 333  # a photo this wide kills the worker process that reads it (see CrashingRecognizer)


class CrashingRecognizer(Recognizer):
    """Dies like a decoder crash (no exception, the process is gone) on one photo, in a worker only."""

    def detect(self, rgb: np.ndarray, max_side: int | None = None):
        if rgb.shape[1] == CRASH_WIDTH and multiprocessing.parent_process() is not None:
            os._exit(3)
        return super().detect(rgb, max_side)


@pytest.fixture(scope="module")
def library(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten photos: two of each of the four people, one without a face, one broken."""
    root = tmp_path_factory.mktemp("engines") / "library"
    (root / "nested").mkdir(parents=True)
    for person, photos in tiny_model.held_out.items():
        for i, photo in enumerate(photos[:2]):
            Image.fromarray(load_rgb(photo)).save(root / ("nested" if i else "") / f"{person}-{i}.jpg", quality=90)
    Image.new("RGB", (320, 240), (200, 210, 220)).save(root / "sky.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def rows(ws_dir: Path) -> dict[str, dict]:
    """The index by photo path: the photo's row and its faces' rows (ids left out: they follow write order)."""
    conn = sqlite3.connect(ws_dir / ".facelab" / "facelab.db")
    conn.row_factory = sqlite3.Row
    out: dict[str, dict] = {}
    for photo in conn.execute("SELECT * FROM album_photos"):
        faces = conn.execute("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo["id"],)).fetchall()
        out[photo["path"]] = {"photo": dict(photo), "faces": [dict(f) for f in faces]}
    conn.close()
    return out


def index(ws_dir: Path, library: Path, recognizer: Recognizer, **options) -> dict[str, dict]:
    with Workspace(ws_dir) as ws:
        result = index_library(ws, library, recognizer, **options)
    assert result.scanned == 10 and result.indexed == 9, result
    assert [p.name for p, _ in result.errors] == ["broken.jpg"]
    return rows(ws_dir)


def assert_same_index(one: dict[str, dict], other: dict[str, dict]) -> None:
    assert sorted(one) == sorted(other)
    for path, a in one.items():
        b = other[path]
        for column in ("status", "error", "taken", "taken_source", "width", "height", "model", "detector", "size"):
            assert a["photo"][column] == b["photo"][column], (path, column)
        assert len(a["faces"]) == len(b["faces"]), path
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert fa["name"] == fb["name"], path
            for column in ("x1", "y1", "x2", "y2"):
                assert abs(fa[column] - fb[column]) <= 0.5, (path, column)
            assert abs(fa["score"] - fb["score"]) <= 1e-4, path
            assert np.abs(blob_to_vector(fa["vector"]) - blob_to_vector(fb["vector"])).max() <= 1e-4, path


@pytest.fixture(autouse=True)
def _workers_for_a_few_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine keeps a small library in one process (workers cost a second to start); these tests
    # are about the workers, with a library small enough to be quick.
    monkeypatch.setattr(album_engines, "MIN_PHOTOS_PER_WORKER", 2)


def test_worker_processes_give_the_same_index_as_one_process(
    tiny_model: TinyModel, library: Path, tmp_path: Path
) -> None:
    recognizer = Recognizer.from_path(tiny_model.workspace, min_face=40)
    alone = index(copy_workspace(tiny_model.workspace, tmp_path / "one"), library, recognizer, workers=1)
    pooled = index(copy_workspace(tiny_model.workspace, tmp_path / "two"), library, recognizer, workers=2)
    assert_same_index(alone, pooled)
    named = [f["name"] for entry in alone.values() for f in entry["faces"]]
    assert set(named) >= set(tiny_model.held_out)  # every person was found and named, not just "the same"


def test_a_worker_that_dies_costs_no_photo(
    tiny_model: TinyModel, library: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    Image.new("RGB", (CRASH_WIDTH, 200), (90, 90, 90)).save(library.parent / "crash.png")
    plain = Recognizer.from_path(tiny_model.workspace, min_face=40)
    recognizer = CrashingRecognizer(plain.model, min_face=40)
    ws_dir = copy_workspace(tiny_model.workspace, tmp_path / "ws")
    (library / "crash.png").symlink_to(library.parent / "crash.png")
    try:
        with Workspace(ws_dir) as ws:
            result = index_library(ws, library, recognizer, workers=2)
    finally:
        (library / "crash.png").unlink()
    assert result.scanned == 11 and result.indexed == 10
    assert "a worker process stopped" in capfd.readouterr().err
    statuses = {Path(p).name: entry["photo"]["status"] for p, entry in rows(ws_dir).items()}
    assert statuses["crash.png"] == "no_face" and statuses["broken.jpg"] == "error"
    assert sum(status == "ok" for status in statuses.values()) == 8


def test_engines_are_chosen_by_name_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="choose one of local, ray"):
        get_engine("spark")
    with pytest.raises(ValueError, match="--workers must be 1 or more"):
        get_engine("local", workers=0)
    with pytest.raises(ValueError, match="--address is for --engine ray"):
        get_engine("local", address="ray://head:10001")
