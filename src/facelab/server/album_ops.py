"""The album index in the web app: search it by people, show its photos, hand the answer out.

The index is :mod:`facelab.albums`' (``facelab album index LIBRARY -w WS`` makes it); this module
only reads it. Photos are addressed by their ``album_photos`` id and shown as re-encoded previews,
only when they lie inside an indexed library (:func:`facelab.server.roots.album_servable`).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facelab.server.roots import album_servable
from facelab.server.workspace_ops import NotFound, OpError, previews_dir, tmp_dir
from facelab.store import Workspace

# Longest side of an album preview, by size name (as for the workspace's own photos).
ALBUM_SIDES = {"thumb": 360, "large": 1600}


def index_ready(ws: Workspace) -> bool:
    """True when the workspace holds an album index with at least one photo.

    Looked up in ``sqlite_master`` first: :func:`facelab.albums.ensure_album_tables` would create
    the tables, and a page view should not write to the workspace.
    """
    tables = {r["name"] for r in ws.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"album_photos", "album_faces"} <= tables:
        return False
    return bool(ws.query("SELECT 1 FROM album_photos LIMIT 1"))


def names(ws: Workspace) -> list[str]:
    """Every name in the index (``unknown`` last); empty without an index."""
    from facelab.albums import known_names

    return known_names(ws) if index_ready(ws) else []


def search(
    ws: Workspace, wanted: Sequence[str], *, any_: bool = False, exclude: Sequence[str] = (), limit: int = 500
) -> tuple[list[dict[str, Any]], int]:
    """Photos showing all (``any_``: any) of ``wanted`` and none of ``exclude``, newest first, as
    JSON with their ids; and how many matched before ``limit``. 422 when no name is given."""
    from facelab.albums import count_photos, find_photos

    if not index_ready(ws):
        return [], 0
    try:
        # One page of photos is made, however many match (a million-face index answers in a blink).
        photos = find_photos(ws, wanted, any_=any_, exclude=exclude, limit=limit)
        total = count_photos(ws, wanted, any_=any_, exclude=exclude)
    except ValueError as exc:
        raise OpError(str(exc), 422) from exc
    out = []
    for photo in photos:
        out.append(
            {
                "id": photo.id,
                "path": str(photo.path),
                "name": photo.path.name,
                "taken": photo.taken_iso,
                "taken_source": photo.taken_source,
                "people": photo.people,
                "faces": [
                    {"box": list(face.box.as_ints()), "name": face.label, "score": face.score} for face in photo.faces
                ],
            }
        )
    return out, total


def photo_file(ws: Workspace, album_id: int) -> Path:
    """The original of an indexed photo if it may be shown (inside an indexed library), else 404."""
    row = (
        ws.conn.execute("SELECT path FROM album_photos WHERE id = ?", (album_id,)).fetchone()
        if index_ready(ws)
        else None
    )
    if row is None:
        raise NotFound(f"no photo with id {album_id} in the album index")
    path = album_servable(ws).file(row["path"])
    if path is None:
        raise NotFound(
            f"album photo {album_id} is gone from its library (moved, deleted or not mounted) or lies outside "
            "every indexed library; run facelab album index again"
        )
    return path


def preview(ws: Workspace, album_id: int, size: str) -> Path:
    """An upright JPEG preview of an indexed photo, cached beside the workspace's own previews."""
    from facelab.server.api import render_preview

    source = photo_file(ws, album_id)
    stat = source.stat()
    side = ALBUM_SIDES[size]
    # Size and modification time stand in for a hash: a changed file gets a new preview.
    target = previews_dir(ws) / f"album-{album_id}-{stat.st_size}-{stat.st_mtime_ns}-{side}.jpg"
    return render_preview(source, target, side)


def export_csv(photos: list[dict[str, Any]], files: Sequence[str] | None = None) -> str:
    """The search answer, one line per photo: where it is, when it was taken, who is in it;
    ``files``: a first column with each photo's name in a ZIP (empty: left out)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((["file"] if files is not None else []) + ["path", "taken", "people"])
    for i, photo in enumerate(photos):
        first = [files[i]] if files is not None else []
        writer.writerow([*first, photo["path"], photo["taken"], ";".join(photo["people"])])
    return buffer.getvalue()


def export_zip(ws: Workspace, photos: list[dict[str, Any]]) -> Path:
    """The originals of the answer in a ZIP (``0001-name.jpg``… in the answer's order, plus
    ``album.csv``), written to a temporary file in the workspace that the caller deletes.

    Stored, not compressed: photos are compressed already, and storing keeps it fast on a small
    machine. Photos that cannot be shown (gone, outside the libraries) are left out: their line in
    ``album.csv`` has an empty ``file``.
    """
    servable = album_servable(ws)
    folder = tmp_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".album-", suffix=".zip")
    os.close(fd)
    target = Path(name)
    width = max(4, len(str(len(photos))))
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            files = []
            for rank, photo in enumerate(photos, start=1):
                source = servable.file(photo["path"])
                entry = f"{rank:0{width}d}-{Path(photo['path']).name}" if source is not None else ""
                if source is not None:
                    archive.write(source, entry)
                files.append(entry)
            archive.writestr("album.csv", export_csv(photos, files))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
