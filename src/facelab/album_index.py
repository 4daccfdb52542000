"""Index a photo library into a workspace: find, embed and name every face of every photo.

The tables are :mod:`facelab.albums`' (``ensure_album_tables``); this module fills them. See
:func:`index_library`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facelab.albums import Progress, _remember_library, ensure_album_tables
from facelab.store import Workspace, vector_to_blob
from facelab.types import Face, Recognition

if TYPE_CHECKING:
    from facelab.recognize import Recognizer

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867


# -- dates --------------------------------------------------------------------------------------


def photo_taken(path: Path, mtime: float | None = None) -> tuple[float, str]:
    """When a photo was taken: ``(epoch seconds, "exif")`` from EXIF DateTimeOriginal (read as
    local time, as cameras write it), else ``(mtime, "mtime")``."""
    from PIL import Image

    from facelab.imageio import _register_heif

    _register_heif()
    try:
        with Image.open(path) as image:
            value = image.getexif().get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore")
        if value:
            # "YYYY:MM:DD HH:MM:SS", sometimes padded with NULs or spaces by cameras.
            stamp = datetime.strptime(str(value).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
            return stamp.timestamp(), "exif"
    except (OSError, ValueError, SyntaxError, KeyError, AttributeError):
        pass  # no or broken EXIF: the file's time is the best we have
    if mtime is None:
        mtime = path.stat().st_mtime
    return float(mtime), "mtime"


# -- indexing -----------------------------------------------------------------------------------


@dataclass
class IndexResult:
    """What :func:`index_library` did."""

    scanned: int = 0
    indexed: int = 0
    renamed: int = 0
    unchanged: int = 0
    removed: int = 0
    faces: int = 0
    no_face: int = 0
    errors: list[tuple[Path, str]] = field(default_factory=list)


def _face_json(face: Face) -> str | None:
    return json.dumps([list(p) for p in face.landmarks]) if face.landmarks else None


def _write_photo(
    ws: Workspace,
    path: str,
    stat: os.stat_result,
    key: str,
    detector: str,
    *,
    taken: tuple[float, str] | None = None,
    shape: tuple[int, ...] | None = None,
    recognitions: Sequence[Recognition] = (),
    vectors: np.ndarray | None = None,
    embedder: str | None = None,
    error: str | None = None,
) -> None:
    status = "error" if error is not None else ("ok" if recognitions else "no_face")
    taken_at, taken_source = taken if taken is not None else (stat.st_mtime, "mtime")
    height, width = (shape[0], shape[1]) if shape is not None else (None, None)
    with ws.transaction() as conn:
        conn.execute(
            "INSERT INTO album_photos(path, size, mtime, taken, taken_source, width, height, status, "
            "error, model, detector, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP) "
            "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, "
            "taken = excluded.taken, taken_source = excluded.taken_source, width = excluded.width, "
            "height = excluded.height, status = excluded.status, error = excluded.error, "
            "model = excluded.model, detector = excluded.detector, indexed_at = CURRENT_TIMESTAMP",
            (path, stat.st_size, stat.st_mtime, taken_at, taken_source, width, height, status, error, key, detector),
        )
        photo_id = conn.execute("SELECT id FROM album_photos WHERE path = ?", (path,)).fetchone()["id"]
        conn.execute("DELETE FROM album_faces WHERE photo_id = ?", (photo_id,))
        for idx, rec in enumerate(recognitions):
            box = rec.face.box
            vector = vector_to_blob(vectors[idx]) if vectors is not None else None
            conn.execute(
                "INSERT INTO album_faces(photo_id, idx, x1, y1, x2, y2, det_score, landmarks, name, score, "
                "margin, embedder, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    photo_id,
                    idx,
                    box.x1,
                    box.y1,
                    box.x2,
                    box.y2,
                    rec.face.score,
                    _face_json(rec.face),
                    rec.name,
                    rec.score,
                    rec.margin if np.isfinite(rec.margin) else None,
                    embedder if vector is not None else None,
                    vector,
                ),
            )


@dataclass
class PhotoAnalysis:
    """What one photo gave, computed anywhere (this process, a worker process, a Ray actor) and
    written into the workspace by :func:`write_analysis`: small (no pixels), picklable."""

    path: str
    taken: tuple[float, str] | None = None
    shape: tuple[int, int] | None = None
    recognitions: list[Recognition] = field(default_factory=list)
    vectors: np.ndarray | None = None
    embedder: str | None = None
    error: str | None = None


def analyse_photo(recognizer: Recognizer, path: str, mtime: float | None = None) -> PhotoAnalysis:
    """Decode, detect, embed and name the faces of one photo; never raises for a bad photo (the
    reason and its fix are in ``error``). The one per-photo function every engine runs."""
    from facelab.imageio import ImageError, load_rgb
    from facelab.recognize import score_faces

    try:
        rgb = load_rgb(path)
        faces = recognizer.detect(rgb)
        scores, vectors = score_faces(recognizer.model, rgb, faces)
        recognitions = recognizer.name_scores(faces, scores)
    except ImageError as exc:
        return PhotoAnalysis(path, error=f"{exc.reason} — {exc.fix}")
    except ValueError as exc:  # e.g. a degenerate box the embedder refuses
        return PhotoAnalysis(path, error=f"could not recognize faces ({exc})")
    return PhotoAnalysis(
        path,
        taken=photo_taken(Path(path), mtime),
        shape=(int(rgb.shape[0]), int(rgb.shape[1])),
        recognitions=list(recognitions),
        vectors=vectors,
        embedder=getattr(recognizer.model, "embedder", None),
    )


def write_analysis(
    ws: Workspace, analysis: PhotoAnalysis, stat: os.stat_result, key: str, detector: str, result: IndexResult
) -> None:
    """Store one photo's analysis (or the reason it failed) in its own transaction, and count it."""
    if analysis.error is not None:
        _write_photo(ws, analysis.path, stat, key, detector, error=analysis.error)
        result.errors.append((Path(analysis.path), analysis.error))
        return
    _write_photo(
        ws,
        analysis.path,
        stat,
        key,
        detector,
        taken=analysis.taken,
        shape=analysis.shape,
        recognitions=analysis.recognitions,
        vectors=analysis.vectors,
        embedder=analysis.embedder,
    )
    result.indexed += 1
    result.faces += len(analysis.recognitions)
    result.no_face += not analysis.recognitions


def index_library(
    ws: Workspace,
    library: Path,
    recognizer: Recognizer,
    *,
    progress: Progress | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> IndexResult:
    """Find and name every face of every photo below ``library``; store them in ``ws``.

    Skips photos indexed before with the same path, size and modification time by the same model
    and detector; re-names (from stored vectors, no detection) those a different model named;
    forgets photos that left the library. Unreadable files are recorded (``errors``) and retried
    next time. ``progress(done, total, path)`` is called after each photo.

    The photos to read are analysed by ``engine`` (see :mod:`facelab.album_engines`): ``"local"``
    with ``workers`` processes (default: one per core; 1 = in this process), or ``"ray"`` on a Ray
    cluster at ``address`` (none: a local Ray). Every photo is committed as soon as its answer
    arrives, so an interrupted run resumes where it stopped, whatever the engine.
    """
    from facelab.album_engines import get_engine
    from facelab.album_rematch import rematch_photos
    from facelab.imageio import iter_image_files
    from facelab.recognize import model_key

    ensure_album_tables(ws)
    root = os.path.abspath(library)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{library}: not a folder — give the folder that holds your photos")
    runner = get_engine(engine, workers=workers, address=address)  # a bad engine fails before any work
    _remember_library(ws, root)
    key = model_key(recognizer.model, recognizer.threshold)
    prefix = root.rstrip(os.sep) + os.sep
    known = {
        r["path"]: r
        for r in ws.query(
            "SELECT id, path, size, mtime, status, model, detector FROM album_photos WHERE path LIKE ? ESCAPE '\\'",
            (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
        )
    }
    files = list(iter_image_files(Path(root)))
    total = len(files)
    result = IndexResult(scanned=total)
    seen: set[str] = set()
    done = 0

    def advance(file: Path | str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, file)

    to_read: dict[str, os.stat_result] = {}
    to_rename: dict[int, tuple[str, os.stat_result]] = {}
    for file in files:
        path = os.path.abspath(file)
        seen.add(path)
        try:
            stat = os.stat(path)
        except OSError as exc:
            result.errors.append((file, f"cannot read ({exc.strerror}) — fix or remove the file or link"))
            advance(file)
            continue
        row = known.get(path)
        same_file = (
            row is not None
            and row["size"] == stat.st_size
            and row["mtime"] == stat.st_mtime
            and row["status"] != "error"  # unreadable files are retried: the cause may be fixed
            and row["detector"] == recognizer.detector_name  # other boxes: start again
        )
        if same_file and row["model"] == key:
            result.unchanged += 1
            advance(file)
        elif same_file:
            to_rename[row["id"]] = (path, stat)
        else:
            to_read[path] = stat
    if to_rename:
        failed = set(rematch_photos(ws, recognizer, key, list(to_rename)))
        for photo_id, (path, stat) in to_rename.items():
            if photo_id in failed:
                to_read[path] = stat
            else:
                result.renamed += 1
                advance(path)
    if to_read:
        jobs = [(path, stat.st_mtime) for path, stat in to_read.items()]
        for analysis in runner.analyse(recognizer, jobs):
            write_analysis(ws, analysis, to_read[analysis.path], key, recognizer.detector_name, result)
            advance(analysis.path)
    gone = [r["id"] for p, r in known.items() if p not in seen]
    if gone:
        with ws.transaction() as conn:
            conn.executemany("DELETE FROM album_photos WHERE id = ?", [(i,) for i in gone])
    result.removed = len(gone)
    return result
