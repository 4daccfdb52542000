"""Photo albums: index a photo library once, then ask which photos show whom.

``index_library`` finds every face of every photo below a folder, names it with a model (a
workspace's current model) and stores boxes, names and — for embedding-track models — the face
vectors in the workspace's database (tables ``album_photos`` and ``album_faces``, created here).
Indexing is incremental and resumable: a photo whose path, size and modification time are already
indexed is skipped, and every photo is committed on its own, so an interrupted run (Ctrl-C, a
crash) starts again where it stopped. When the model changes (retrained, a person enrolled),
faces with stored vectors are re-named from the vectors without reading the photo again.

``find_photos`` answers "photos with Alice and Bob" (all of them), ``any_=True`` "Alice or Bob",
``exclude`` "but not Carol", newest first (EXIF DateTimeOriginal, else the file's modification
time). ``export_album`` puts the answer in a folder as links (or copies) with an HTML contact
sheet. The user's photos are only ever read.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from facelab.store import Workspace, blob_to_vector, vector_to_blob
from facelab.types import Box, Face, Recognition

if TYPE_CHECKING:
    from facelab.recognize import Recognizer

Progress = Callable[[int, int, object], None]

UNKNOWN = "unknown"
LIBRARIES_SETTING = "album_libraries"
EXPORT_MARKER = ".facelab-export.json"
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867

ALBUM_SCHEMA = """
CREATE TABLE IF NOT EXISTS album_photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,           -- absolute, as found below the library (links not resolved)
    size INTEGER,
    mtime REAL,
    taken REAL,                          -- seconds since the epoch: EXIF DateTimeOriginal, else mtime
    taken_source TEXT,                   -- exif | mtime
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,                -- ok | no_face | error
    error TEXT,
    model TEXT,                          -- recognize.model_key of the model that named the faces
    detector TEXT,                       -- the detector that found them
    indexed_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS album_photos_taken ON album_photos(taken);
CREATE TABLE IF NOT EXISTS album_faces (
    id INTEGER PRIMARY KEY,
    photo_id INTEGER NOT NULL REFERENCES album_photos(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    det_score REAL,
    landmarks TEXT,                      -- JSON [[x, y] * 5] or NULL
    name TEXT,                           -- NULL: unknown
    score REAL,
    margin REAL,
    embedder TEXT,                       -- model of the vector, NULL when none is stored
    vector BLOB,                         -- float32 little-endian
    UNIQUE (photo_id, idx)
);
CREATE INDEX IF NOT EXISTS album_faces_name ON album_faces(name);
"""


def ensure_album_tables(ws: Workspace) -> None:
    """Create the album tables if this workspace has none yet (idempotent)."""
    ws.conn.executescript(ALBUM_SCHEMA)


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


def _rename_from_vectors(ws: Workspace, photo_id: int, recognizer: Recognizer, key: str) -> bool:
    """Re-name a photo's faces from their stored vectors; False when some face has no usable vector."""
    from facelab.recognize import VectorModel

    model = recognizer.model
    if not isinstance(model, VectorModel):
        return False
    rows = ws.query("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo_id,))
    if any(r["vector"] is None or r["embedder"] != model.embedder for r in rows):
        return False
    faces = [Face(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["det_score"] or 0.0) for r in rows]
    recognitions: list[Recognition] = []
    if rows:
        scores = model.predict_vectors(np.stack([blob_to_vector(r["vector"]) for r in rows]))
        recognitions = recognizer.name_scores(faces, np.asarray(scores))
    with ws.transaction() as conn:
        for row, rec in zip(rows, recognitions, strict=True):
            conn.execute(
                "UPDATE album_faces SET name = ?, score = ?, margin = ? WHERE id = ?",
                (rec.name, rec.score, rec.margin if np.isfinite(rec.margin) else None, row["id"]),
            )
        conn.execute("UPDATE album_photos SET model = ? WHERE id = ?", (key, photo_id))
    return True


def _remember_library(ws: Workspace, root: str) -> None:
    roots = set(json.loads(ws.setting(LIBRARIES_SETTING) or "[]"))
    roots.add(root)
    ws.set_setting(LIBRARIES_SETTING, json.dumps(sorted(roots)))


def library_roots(ws: Workspace) -> list[Path]:
    """Every library folder indexed into this workspace."""
    return [Path(p) for p in json.loads(ws.setting(LIBRARIES_SETTING) or "[]")]


def _index_photo(
    ws: Workspace, path: str, stat: os.stat_result, key: str, recognizer: Recognizer, result: IndexResult
) -> None:
    """Detect, embed and name the faces of one photo and store them (or the reason it failed)."""
    from facelab.imageio import ImageError, load_rgb
    from facelab.recognize import score_faces

    try:
        rgb = load_rgb(path)
        faces = recognizer.detect(rgb)
        scores, vectors = score_faces(recognizer.model, rgb, faces)
        recognitions = recognizer.name_scores(faces, scores)
    except ImageError as exc:
        reason = f"{exc.reason} — {exc.fix}"
    except ValueError as exc:  # e.g. a degenerate box the embedder refuses
        reason = f"could not recognize faces ({exc})"
    else:
        _write_photo(
            ws,
            path,
            stat,
            key,
            recognizer.detector_name,
            taken=photo_taken(Path(path), stat.st_mtime),
            shape=rgb.shape,
            recognitions=recognitions,
            vectors=vectors,
            embedder=getattr(recognizer.model, "embedder", None),
        )
        result.indexed += 1
        result.faces += len(recognitions)
        result.no_face += not recognitions
        return
    _write_photo(ws, path, stat, key, recognizer.detector_name, error=reason)
    result.errors.append((Path(path), reason))


def index_library(
    ws: Workspace,
    library: Path,
    recognizer: Recognizer,
    *,
    progress: Progress | None = None,
) -> IndexResult:
    """Find and name every face of every photo below ``library``; store them in ``ws``.

    Skips photos indexed before with the same path, size and modification time by the same model
    and detector; re-names (from stored vectors, no detection) those a different model named; forgets photos
    that left the library. Unreadable files are recorded (``errors``) and retried next time.
    ``progress(done, total, path)`` is called after each photo.
    """
    from facelab.imageio import iter_image_files
    from facelab.recognize import model_key

    ensure_album_tables(ws)
    root = os.path.abspath(library)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{library}: not a folder — give the folder that holds your photos")
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
    result = IndexResult(scanned=len(files))
    seen: set[str] = set()
    for done, file in enumerate(files, start=1):
        path = os.path.abspath(file)
        seen.add(path)
        try:
            stat = os.stat(path)
        except OSError as exc:
            reason = f"cannot read ({exc.strerror}) — fix or remove the file or link"
            result.errors.append((file, reason))
            if progress:
                progress(done, len(files), file)
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
        elif same_file and _rename_from_vectors(ws, row["id"], recognizer, key):
            result.renamed += 1
        else:
            _index_photo(ws, path, stat, key, recognizer, result)
        if progress:
            progress(done, len(files), file)
    gone = [r["id"] for p, r in known.items() if p not in seen]
    if gone:
        with ws.transaction() as conn:
            conn.executemany("DELETE FROM album_photos WHERE id = ?", [(i,) for i in gone])
    result.removed = len(gone)
    return result


# -- finding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlbumFace:
    box: Box
    name: str | None
    score: float | None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else UNKNOWN


@dataclass(frozen=True)
class AlbumPhoto:
    """An indexed photo: where it is, when it was taken, its faces."""

    path: Path
    taken: float
    taken_source: str
    faces: tuple[AlbumFace, ...]

    @property
    def people(self) -> list[str]:
        """Names in the photo, known people first (sorted), ``unknown`` last if present."""
        names = {f.label for f in self.faces}
        return sorted(names - {UNKNOWN}) + ([UNKNOWN] if UNKNOWN in names else [])

    @property
    def taken_iso(self) -> str:
        return datetime.fromtimestamp(self.taken).isoformat(timespec="seconds")


def album_photos(ws: Workspace) -> list[AlbumPhoto]:
    """Every indexed photo that has faces, with its faces."""
    ensure_album_tables(ws)
    photos: dict[int, tuple[dict, list[AlbumFace]]] = {}
    rows = ws.query(
        "SELECT p.id, p.path, p.taken, p.taken_source, f.x1, f.y1, f.x2, f.y2, f.name, f.score "
        "FROM album_photos p JOIN album_faces f ON f.photo_id = p.id WHERE p.status = 'ok' "
        "ORDER BY p.id, f.idx"
    )
    for r in rows:
        entry = photos.setdefault(r["id"], (dict(r), []))
        entry[1].append(AlbumFace(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["name"], r["score"]))
    return [
        AlbumPhoto(Path(info["path"]), info["taken"], info["taken_source"], tuple(faces))
        for info, faces in photos.values()
    ]


def known_names(ws: Workspace) -> list[str]:
    """Every name the index holds (``unknown`` included when some face is unknown)."""
    ensure_album_tables(ws)
    names = [r["name"] for r in ws.query("SELECT DISTINCT name FROM album_faces")]
    return sorted(n for n in names if n is not None) + ([UNKNOWN] if None in names else [])


def find_photos(
    ws: Workspace,
    names: Sequence[str],
    *,
    any_: bool = False,
    exclude: Iterable[str] = (),
) -> list[AlbumPhoto]:
    """Indexed photos showing all of ``names`` (any of them with ``any_``) and none of ``exclude``.

    Names compare case-insensitively; ``unknown`` stands for faces nobody was recognised in.
    Newest first (EXIF date, else modification time), then by path.
    """
    wanted = {n.strip().casefold() for n in names if n.strip()}
    if not wanted:
        raise ValueError("give at least one name to look for")
    unwanted = {n.strip().casefold() for n in exclude if n.strip()}
    out = []
    for photo in album_photos(ws):
        present = {f.label.casefold() for f in photo.faces}
        hit = bool(wanted & present) if any_ else wanted <= present
        if hit and not (unwanted & present):
            out.append(photo)
    out.sort(key=lambda p: (-p.taken, str(p.path)))
    return out


# -- exporting ----------------------------------------------------------------------------------


class UnsafeExport(ValueError):
    """The export folder would mix with the user's photos."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_export_dir(dest: Path, photos: Sequence[AlbumPhoto], libraries: Sequence[Path] = ()) -> None:
    """Refuse an export folder inside an indexed library (the next index would read the exported
    links as more photos), one that holds a photo to export, or a non-empty folder that is not a
    facelab export (its files could be overwritten)."""
    target = Path(os.path.abspath(dest)).resolve()
    for root in libraries:
        if _inside(target, Path(root).resolve()):
            raise UnsafeExport(f"--export {dest} is inside the indexed library {root}; choose a folder outside it")
    for photo in photos:
        if _inside(photo.path.resolve(), target) or _inside(Path(os.path.abspath(photo.path)), target):
            raise UnsafeExport(f"--export {dest} holds the photo {photo.path}; choose another folder")
    if target.is_dir() and any(target.iterdir()) and not (target / EXPORT_MARKER).is_file():
        raise UnsafeExport(
            f"--export {dest} is not empty and is not a facelab export folder; choose a new or empty folder"
        )


def _clear_previous_export(dest: Path) -> None:
    """Remove what an earlier export into ``dest`` created (listed in its marker), nothing else."""
    marker = dest / EXPORT_MARKER
    if not marker.is_file():
        return
    try:
        made = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError):
        made = []
    for name in made:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            continue  # a tampered marker must not make us delete anything outside the folder
        entry = dest / relative
        if entry.is_symlink() or entry.is_file():
            entry.unlink()


def _thumbnail(photo: AlbumPhoto, size: int) -> np.ndarray | None:
    import cv2

    from facelab.detect import fit_longest_side
    from facelab.imageio import ImageError, load_rgb
    from facelab.recognize import draw_box

    try:
        rgb = load_rgb(photo.path)
    except ImageError:
        return None
    small, factor = fit_longest_side(rgb, size)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    for face in photo.faces:
        color = (40, 200, 40) if face.name is not None else (40, 40, 230)
        draw_box(bgr, face.box.scaled(factor), face.label, color)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
img {{ width: 100%; height: 220px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .85rem; margin-top: .3rem; overflow-wrap: anywhere; }}
.date {{ color: #666; }}
</style></head><body>
<h1>{title}</h1>
<p>{count} photo(s), newest first. Made by facelab on {made}.</p>
<div class="grid">
{cards}
</div></body></html>
"""


def export_album(
    photos: Sequence[AlbumPhoto],
    dest: Path,
    *,
    copy: bool = False,
    title: str = "facelab album",
    thumb_size: int = 320,
    libraries: Sequence[Path] = (),
) -> Path:
    """Put ``photos`` in ``dest`` as ``0001-<name>`` links (``copy``: copies) in their order, with
    ``thumbs/`` (boxes and names drawn) and ``index.html``, a contact sheet. Returns the page.

    Links point at the originals (absolute paths), so the folder costs no space but breaks if the
    library moves; use ``copy`` for a folder to send or archive. Exporting again into the same
    folder replaces what the earlier export made and nothing else.
    """
    from facelab.imageio import save_jpeg_atomic, write_text_atomic

    check_export_dir(dest, photos, libraries)
    dest.mkdir(parents=True, exist_ok=True)
    _clear_previous_export(dest)
    made: list[str] = []
    cards = []
    width = max(4, len(str(len(photos))))
    for rank, photo in enumerate(photos, start=1):
        name = f"{rank:0{width}d}-{photo.path.name}"
        target = dest / name
        source = Path(os.path.abspath(photo.path))
        if copy:
            shutil.copy2(source, target)
        else:
            try:
                target.symlink_to(source)
            except OSError:  # no symlinks here (some Windows setups, FAT drives): copy instead
                shutil.copy2(source, target)
        made.append(name)
        thumb = _thumbnail(photo, thumb_size)
        thumb_name = f"thumbs/{rank:0{width}d}.jpg"
        if thumb is not None:
            save_jpeg_atomic(thumb, dest / thumb_name, quality=85)
            made.append(thumb_name)
        people = ", ".join(html.escape(p) for p in photo.people)
        cards.append(
            f'<figure><a href="{quote(name)}"><img src="{quote(thumb_name)}" loading="lazy" '
            f'alt="{html.escape(photo.path.name)}"></a><figcaption><b>{people}</b><br>'
            f'<span class="date">{html.escape(photo.taken_iso.replace("T", " "))} '
            f"({html.escape(photo.taken_source)})</span><br>{html.escape(photo.path.name)}</figcaption></figure>"
        )
    page = _PAGE.format(
        title=html.escape(title),
        count=len(photos),
        made=time.strftime("%Y-%m-%d %H:%M"),
        cards="\n".join(cards),
    )
    write_text_atomic(page, dest / "index.html")
    made.append("index.html")
    write_text_atomic(json.dumps({"files": made}, indent=1) + "\n", dest / EXPORT_MARKER)
    return dest / "index.html"
