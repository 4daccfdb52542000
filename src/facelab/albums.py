"""Photo albums: index a photo library once, then ask which photos show whom.

The index lives in the workspace's database (schema here); :mod:`facelab.album_index` fills it:
``index_library`` finds every face of every photo below a folder, names it with a model (a
workspace's current model) and stores boxes, names and — for embedding-track models — the face
vectors in the workspace's database (tables ``album_photos`` and ``album_faces``, created here).
Indexing is incremental and resumable: a photo whose path, size and modification time are already
indexed is skipped, and every photo is committed on its own, so an interrupted run (Ctrl-C, a
crash) starts again where it stopped. When the model changes (retrained, a person enrolled),
faces with stored vectors are re-named from the vectors without reading the photo again.

``find_photos`` answers "photos with Alice and Bob" (all of them), ``any_=True`` "Alice or Bob",
``exclude`` "but not Carol", newest first (EXIF DateTimeOriginal, else the file's modification
time). SQLite answers it from an index of (name, photo), and only the photos in the answer are
read: at a million faces a search costs what its answer costs (bench/bench_album_scale.py).
``export_album`` puts the answer in a folder as links (or copies) with an HTML contact sheet.
The user's photos are only ever read.
"""

from __future__ import annotations

import gc
import html
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from facelab.store import Workspace
from facelab.types import Box

if TYPE_CHECKING:
    pass

Progress = Callable[[int, int, object], None]

UNKNOWN = "unknown"
LIBRARIES_SETTING = "album_libraries"
EXPORT_MARKER = ".facelab-export.json"


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
    UNIQUE (photo_id, idx)               -- also the index that finds a photo's faces
);
-- Who is in which photo, answered from the index alone (covering: no table row is read), so a
-- search touches only the faces of the people asked for. Replaces album_faces_name(name).
CREATE INDEX IF NOT EXISTS album_faces_person ON album_faces(name, photo_id);
-- A photo's faces as an answer shows them, from the index alone: album_faces rows carry the
-- 512-byte vector, so reading the rows themselves costs a page or more per face. ~60 bytes a face.
CREATE INDEX IF NOT EXISTS album_faces_photo ON album_faces(photo_id, idx, name, x1, y1, x2, y2, score);
DROP INDEX IF EXISTS album_faces_name;
"""

# What ensure_album_tables makes, and what it removes: checked first, so that opening an index
# that is up to date writes nothing (page views must not write).
_ALBUM_OBJECTS = frozenset(
    {"album_photos", "album_photos_taken", "album_faces", "album_faces_person", "album_faces_photo"}
)
_RETIRED_OBJECTS = frozenset({"album_faces_name"})


def ensure_album_tables(ws: Workspace) -> None:
    """Create the album tables and indexes that are missing (idempotent; an index made by an
    older facelab gets the new indexes here, once — a few seconds at a million faces)."""
    present = {r[0] for r in ws.conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    if present >= _ALBUM_OBJECTS and not (_RETIRED_OBJECTS & present):
        return
    ws.conn.executescript(ALBUM_SCHEMA)


# -- libraries -------------------------------------------------------------------------------


def _remember_library(ws: Workspace, root: str) -> None:
    roots = set(json.loads(ws.setting(LIBRARIES_SETTING) or "[]"))
    roots.add(root)
    ws.set_setting(LIBRARIES_SETTING, json.dumps(sorted(roots)))


def library_roots(ws: Workspace) -> list[Path]:
    """Every library folder indexed into this workspace."""
    return [Path(p) for p in json.loads(ws.setting(LIBRARIES_SETTING) or "[]")]


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
    # The photo's album_photos id (what the web app addresses it by); None when made elsewhere.
    # Not compared: two answers are the same photos whether or not they carry it.
    id: int | None = field(default=None, compare=False)

    @property
    def people(self) -> list[str]:
        """Names in the photo, known people first (sorted), ``unknown`` last if present."""
        names = {f.label for f in self.faces}
        return sorted(names - {UNKNOWN}) + ([UNKNOWN] if UNKNOWN in names else [])

    @property
    def taken_iso(self) -> str:
        return datetime.fromtimestamp(self.taken).isoformat(timespec="seconds")


# Face columns an AlbumPhoto is made of, in the order _assemble reads them.
_FACE_COLUMNS = "f.photo_id, f.x1, f.y1, f.x2, f.y2, f.name, f.score"


def _assemble(photo_rows: Iterable[tuple], face_rows: Iterable[tuple]) -> list[AlbumPhoto]:
    """AlbumPhotos from ``(id, path, taken, taken_source)`` rows (in the answer's order) and their
    faces' ``_FACE_COLUMNS`` rows (grouped by photo, in ``idx`` order)."""
    faces: dict[int, list[AlbumFace]] = {}
    for photo_id, x1, y1, x2, y2, name, score in face_rows:
        entry = faces.get(photo_id)
        if entry is None:
            entry = faces[photo_id] = []
        entry.append(AlbumFace(Box(x1, y1, x2, y2), name, score))
    return [
        AlbumPhoto(Path(path), taken, source, tuple(faces[photo_id]), photo_id)
        for photo_id, path, taken, source in photo_rows
        if photo_id in faces
    ]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large answer is built.

    Every few hundred new objects trigger a collection, and its full passes walk every object made
    so far: building 300k faces took twice as long with it. These objects (tuples, dataclasses,
    paths) hold no reference cycles, so nothing is left for the collector to find.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _tuples(ws: Workspace, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    """Rows as plain tuples: several times cheaper than sqlite3.Row when there are a million."""
    cursor = ws.conn.cursor()
    cursor.row_factory = None
    return cursor.execute(sql, tuple(params)).fetchall()


def album_photos(ws: Workspace) -> list[AlbumPhoto]:
    """Every indexed photo that has faces, with its faces (in the order they were indexed).

    Builds one object per photo and face: seconds at a million faces. To ask for some people,
    use :func:`find_photos`, which reads only their photos.
    """
    ensure_album_tables(ws)
    with gc_paused():
        photos = _tuples(ws, "SELECT id, path, taken, taken_source FROM album_photos WHERE status = 'ok' ORDER BY id")
        faces = _tuples(ws, f"SELECT {_FACE_COLUMNS} FROM album_faces f ORDER BY f.photo_id, f.idx")
        return _assemble(photos, faces)


def _stored_names(ws: Workspace) -> list[str | None]:
    """The distinct names of the faces (None: some face is unknown), in SQLite's (code point) order.

    Hops from name to name through the ``album_faces_person`` index — one lookup per person —
    instead of reading every face as ``SELECT DISTINCT`` does: milliseconds at a million faces.
    """
    rows = _tuples(
        ws,
        "WITH RECURSIVE hop(name) AS ("
        " SELECT MIN(name) FROM album_faces"
        " UNION ALL"
        " SELECT (SELECT MIN(name) FROM album_faces WHERE name > hop.name) FROM hop WHERE hop.name IS NOT NULL"
        ") SELECT name FROM hop WHERE name IS NOT NULL",
    )
    names: list[str | None] = [r[0] for r in rows]
    if _tuples(ws, "SELECT 1 FROM album_faces WHERE name IS NULL LIMIT 1"):
        names.append(None)
    return names


def known_names(ws: Workspace) -> list[str]:
    """Every name the index holds (``unknown`` included when some face is unknown)."""
    ensure_album_tables(ws)
    names = _stored_names(ws)
    return sorted(n for n in names if n is not None) + ([UNKNOWN] if None in names else [])


def _wanted(names: Iterable[str]) -> list[str]:
    """The names asked for, trimmed and case-folded, blanks dropped, first occurrence kept."""
    return list(dict.fromkeys(n.strip().casefold() for n in names if n.strip()))


def _faces_named(label: str, stored: Sequence[str | None]) -> tuple[str, list[object]] | None:
    """SQL for the ids of photos with a face whose label case-folds to ``label`` (``unknown``:
    also the unnamed faces), with its parameters; None when no face is called so.

    Case-folding happens here, in Python, on the few distinct stored names — SQLite's NOCASE and
    lower() know only ASCII — so the search itself is exact-match lookups in the index.
    """
    exact = [n for n in stored if n is not None and n.casefold() == label]
    parts = []
    if exact:
        parts.append(f"SELECT photo_id FROM album_faces WHERE name IN ({', '.join('?' * len(exact))})")
    if label == UNKNOWN and None in stored:
        parts.append("SELECT photo_id FROM album_faces WHERE name IS NULL")
    return (" UNION ".join(parts), list(exact)) if parts else None


def _matching_ids_sql(
    ws: Workspace, names: Sequence[str], any_: bool, exclude: Iterable[str]
) -> tuple[str, list[object]] | None:
    """A compound SELECT of the ids of photos with all (``any_``: any) of ``names`` and none of
    ``exclude`` — possibly including photos that are not ``ok`` — or None when none can match."""
    wanted = _wanted(names)
    if not wanted:
        raise ValueError("give at least one name to look for")
    stored = _stored_names(ws)
    found = [_faces_named(label, stored) for label in wanted]
    if any_:
        found = [f for f in found if f is not None]
        if not found:
            return None
    elif any(f is None for f in found):
        return None  # somebody nobody is called: no photo shows all of them
    unwanted = [f for f in (_faces_named(label, stored) for label in _wanted(exclude)) if f is not None]
    joiner = " UNION " if any_ else " INTERSECT "
    # Each operand in its own sub-select: compound operators bind left to right, so a bare
    # "A INTERSECT B UNION C" or "X EXCEPT C UNION D" would mean something else.
    sql = joiner.join(f"SELECT photo_id FROM ({part})" for part, _ in found)
    params = [p for _, part_params in found for p in part_params]
    if unwanted:
        excluded = " UNION ".join(part for part, _ in unwanted)
        sql = f"SELECT photo_id FROM ({sql}) EXCEPT SELECT photo_id FROM ({excluded})"
        params += [p for _, part_params in unwanted for p in part_params]
    return sql, params


def find_photos(
    ws: Workspace,
    names: Sequence[str],
    *,
    any_: bool = False,
    exclude: Iterable[str] = (),
    limit: int | None = None,
) -> list[AlbumPhoto]:
    """Indexed photos showing all of ``names`` (any of them with ``any_``) and none of ``exclude``.

    Names compare case-insensitively; ``unknown`` stands for faces nobody was recognised in.
    Newest first (EXIF date, else modification time), then by path. ``limit``: only the first
    that many photos (a page of results; :func:`count_photos` says how many there are in all).

    Answered by the database from the ``album_faces_person`` index, the answer's faces from the
    ``album_faces_photo`` index; only the faces of the photos in the answer are read. Time grows
    with the size of the answer, not of the index, and is mostly making one Python object per photo
    and face: ~20 µs a photo on a 2-core machine at a million faces (0.2 s for 7,600 photos, 2 s for
    90,000). A page of ``limit`` photos costs only its own; to list a large answer, use
    :func:`album_listing`, which makes no face objects.
    """
    ensure_album_tables(ws)
    matching = _matching_ids_sql(ws, names, any_, exclude)
    if matching is None:
        return []
    sql, params = matching
    page = ""
    if limit is not None:
        page = " LIMIT ?"
        params = [*params, max(0, int(limit))]
    with gc_paused():
        photos = _tuples(
            ws,
            f"SELECT id, path, taken, taken_source FROM album_photos WHERE status = 'ok' AND id IN ({sql}) "
            f"ORDER BY taken DESC, path{page}",
            params,
        )
        if not photos:
            return []
        # The answer's ids travel as one JSON array: one statement whatever their number (SQLite
        # caps the ``?`` of a statement at 32766).
        faces = _tuples(
            ws,
            f"SELECT {_FACE_COLUMNS} FROM album_faces f "
            "WHERE f.photo_id IN (SELECT value FROM json_each(?)) ORDER BY f.photo_id, f.idx",
            (json.dumps([p[0] for p in photos]),),
        )
        return _assemble(photos, faces)


# A photo's time as datetime.fromtimestamp(taken).isoformat(timespec="seconds") writes it: local
# time (the process's time zone, as Python's), seconds truncated.
_LOCAL_ISO_SQL = "strftime('%Y-%m-%dT%H:%M:%S', p.taken, 'unixepoch', 'localtime')"


def album_listing(
    ws: Workspace, names: Sequence[str], *, any_: bool = False, exclude: Iterable[str] = ()
) -> list[tuple[str, str, str]]:
    """What ``facelab album find`` prints, ready to write: ``(path, taken, people)`` with ``taken``
    in local time, ISO 8601 to the second (as ``datetime.fromtimestamp(t).isoformat("seconds")``)
    and ``people`` as :attr:`AlbumPhoto.people` (sorted, ``unknown`` last) joined by ``;``; the photos
    and order of :func:`find_photos`.

    Listed and formatted by the database from the ``album_faces_photo`` index, so nothing is made
    per photo but the row: 90,000 photos at a million faces in about half a second.
    """
    ensure_album_tables(ws)
    matching = _matching_ids_sql(ws, names, any_, exclude)
    if matching is None:
        return []
    sql, params = matching
    # The names are joined in the order the inner query sorts them: SQLite does not flatten an
    # ordered sub-query into an aggregate, so group_concat sees its rows in that order (the tests
    # check it).
    with gc_paused():  # 90k rows: see gc_paused
        return _tuples(
            ws,
            f"SELECT p.path, {_LOCAL_ISO_SQL}, n.people FROM album_photos p JOIN ("
            " SELECT photo_id, group_concat(label, ';') AS people FROM ("
            "  SELECT DISTINCT photo_id, coalesce(name, ?1) AS label FROM album_faces"
            f"  WHERE photo_id IN ({sql}) ORDER BY photo_id, label = ?1, label"
            " ) GROUP BY photo_id"
            ") n ON n.photo_id = p.id WHERE p.status = 'ok' ORDER BY p.taken DESC, p.path",
            [UNKNOWN, *params],
        )


def count_photos(ws: Workspace, names: Sequence[str], *, any_: bool = False, exclude: Iterable[str] = ()) -> int:
    """How many photos :func:`find_photos` would give, without making them (milliseconds)."""
    ensure_album_tables(ws)
    matching = _matching_ids_sql(ws, names, any_, exclude)
    if matching is None:
        return 0
    sql, params = matching
    return _tuples(ws, f"SELECT COUNT(*) FROM album_photos WHERE status = 'ok' AND id IN ({sql})", params)[0][0]


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
