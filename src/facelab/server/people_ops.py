"""Rename, merge and delete people from the web app — :mod:`facelab.people` plus what only the app has.

:mod:`facelab.people` changes the database and the name map every later build applies. The app
adds what belongs to it alone: people created in the app who have no photo yet (just an empty
``WS/uploads/<name>/`` folder), the copies of photos uploaded through it (deleted with their
person: they are the app's, not the user's originals), a preview of what a delete removes, and
fresh reports. Callers hold the write lock (``ServerState.exclusive``); :mod:`facelab.people`
takes it again, re-entrantly.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from facelab.server.security import inside_workspace
from facelab.server.workspace_ops import (
    Conflict,
    _is_upload,
    check_new_name,
    claim_name,
    previews_dir,
    require_person,
    uploads_dir,
)
from facelab.store import Workspace


def _count(ws: Workspace, sql: str, *args: object) -> int:
    return int(ws.conn.execute(sql, args).fetchone()[0])


def _has_album_faces(ws: Workspace) -> bool:
    return bool(ws.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'album_faces'"))


def delete_preview(ws: Workspace, name: str) -> dict[str, int]:
    """What :func:`delete_person` would remove, counted from the database before anything changes.

    ``photos``: the person's photos (rows only: originals are never touched); ``face_crops``: faces
    filed under them; ``other_faces``: faces of other people in their photos, which go with the
    photos; ``enrolled``: vectors added with ``facelab enroll``; ``album_faces``: faces of the album
    index named after them (they become unknown); ``uploaded``: copies uploaded through the app,
    deleted from ``WS/uploads``.
    """
    uploaded = sum(
        _is_upload(ws, Path(r["path"])) for r in ws.query("SELECT path FROM photos WHERE person = ?", (name,))
    )
    return {
        "photos": _count(ws, "SELECT COUNT(*) FROM photos WHERE person = ?", name),
        "face_crops": _count(ws, "SELECT COUNT(*) FROM crops WHERE person = ?", name),
        "other_faces": _count(
            ws,
            "SELECT COUNT(*) FROM crops c JOIN faces f ON f.id = c.face_id JOIN photos p ON p.id = f.photo_id "
            "WHERE p.person = ? AND c.person != ?",
            name,
            name,
        ),
        "enrolled": _count(ws, "SELECT COUNT(*) FROM gallery WHERE person = ?", name),
        "album_faces": _count(ws, "SELECT COUNT(*) FROM album_faces WHERE name = ?", name)
        if _has_album_faces(ws)
        else 0,
        "uploaded": uploaded,
    }


def _change_json(change: Any, message: str | None = None) -> dict[str, Any]:
    """A :class:`facelab.people.PeopleChange` as the API's answer, with its sentence (``message``:
    instead of the change's own)."""
    out = dataclasses.asdict(change)
    out["message"] = message or change.words()
    return out


def _photoless(ws: Workspace, name: str) -> bool:
    """True for a person with no photo of their own (created in the app, nothing uploaded yet).

    Faces moved to such a person in Review (from others' photos) are refused: :mod:`facelab.people`
    works on a person's photos, and moving those faces back is one click in Review.
    """
    from facelab.people import people

    if name in people(ws):
        return False
    faces = _count(ws, "SELECT COUNT(*) FROM crops WHERE person = ?", name)
    enrolled = _count(ws, "SELECT COUNT(*) FROM gallery WHERE person = ?", name)
    if faces or enrolled:
        raise Conflict(
            f"{name} has no photos of their own, only {faces} face(s) moved to them in Review and {enrolled} "
            "enrolled vector(s); move those faces to someone else in Review first (or upload a photo of them)"
        )
    return True


def _upload_folder(ws: Workspace, name: str) -> Path | None:
    """``WS/uploads/<name>`` if it is a real folder of the app (not a link), else None."""
    folder = uploads_dir(ws) / name
    if folder.is_dir() and not folder.is_symlink() and folder.parent == uploads_dir(ws):
        return folder
    return None


def _refresh(ws: Workspace) -> None:
    """Reports name people: rewrite them after a change (cheap: they are read from the database)."""
    from facelab.reports import write_reports

    write_reports(ws)


def rename_person(ws: Workspace, old: str, new: str) -> dict[str, Any]:
    """Rename ``old`` to ``new`` everywhere (:func:`facelab.people.rename`); 404, 409 or 422 when it cannot be."""
    from facelab.people import PeopleChange, rename

    old = require_person(ws, old)
    new = check_new_name(ws, new, exclude=old)
    if new == old:
        raise Conflict(f"{old} is already called {new}")
    claim_name(ws, new)
    if _photoless(ws, old):
        folder = _upload_folder(ws, old)
        if folder is not None:
            target = uploads_dir(ws) / new
            if target.exists() and target != folder and not os.path.samefile(target, folder):
                raise Conflict(f"a folder {target} is in the way; remove it or choose another name")
            folder.rename(target)
        change = PeopleChange("rename", old, new, 0, 0, 0, 0)
    else:
        change = _people_call(rename, ws, old, new)
    _refresh(ws)
    return _change_json(change)


def merge_person(ws: Workspace, source: str, into: str) -> dict[str, Any]:
    """Make ``source`` part of ``into`` (:func:`facelab.people.merge`): photos, faces, decisions."""
    from facelab.people import PeopleChange, merge, rename

    source = require_person(ws, source)
    into = require_person(ws, into)
    if source == into:
        raise Conflict(f"{source} and {into} are the same person; choose someone else to merge into")
    if _photoless(ws, source):
        folder = _upload_folder(ws, source)
        if folder is not None:
            shutil.rmtree(folder)  # empty, or uploads never built: the app's own files
        change = PeopleChange("merge", source, into, 0, 0, 0, 0)
    elif _photoless(ws, into):
        # ``into`` exists only as an empty upload folder: taking their name is the whole merge.
        change = dataclasses.replace(_people_call(rename, ws, source, into), action="merge")
    else:
        change = _people_call(merge, ws, source, into)
    _refresh(ws)
    return _change_json(change)


def delete_person(ws: Workspace, name: str) -> dict[str, Any]:
    """Forget ``name`` (:func:`facelab.people.delete`) and delete the copies uploaded through the app.

    Originals elsewhere are never touched: later builds skip the person's folder until
    ``facelab people restore``.
    """
    from facelab.people import PeopleChange, delete

    name = require_person(ws, name)
    uploaded: list[tuple[int, Path]] = []
    if _photoless(ws, name):
        folder = _upload_folder(ws, name)
        if folder is not None:
            shutil.rmtree(folder)  # empty, or uploads never built: the app's own files
        change = PeopleChange("delete", name, None, 0, 0, 0, 0)
    else:
        uploaded = [
            (r["id"], Path(r["path"]))
            for r in ws.query("SELECT id, path FROM photos WHERE person = ?", (name,))
            if _is_upload(ws, Path(r["path"]))
        ]
        change = _people_call(delete, ws, name)
    # Files after the rows are gone (a crash in between leaves stray files, never rows without files).
    for photo_id, path in uploaded:
        real = inside_workspace(ws.root, path)
        if real is not None:
            real.unlink(missing_ok=True)
        for preview in previews_dir(ws).glob(f"{photo_id}-*.jpg"):
            preview.unlink(missing_ok=True)
    _drop_empty_upload_folders(ws)
    _refresh(ws)
    message = None
    if uploaded:
        # The change's own sentence says the photos are untouched: true of originals, not of the
        # copies this app made, which went with their person.
        album = f", {change.album_faces} album face(s)" if change.album_faces else ""
        message = (
            f"deleted {name}: {change.photos} photo(s), {change.faces} face crop(s), {change.enrolled} enrolled "
            f"vector(s){album} forgotten; {len(uploaded)} copy(ies) uploaded through the app deleted, original "
            "photo files untouched"
        )
    return _change_json(change, message)


def _drop_empty_upload_folders(ws: Workspace) -> None:
    """Remove the empty upload folders of deleted people (mapped to nobody), so the name can be
    given to someone new (:func:`facelab.server.workspace_ops.claim_name`)."""
    from facelab.people import folder_person

    base = uploads_dir(ws)
    if not base.is_dir():
        return
    for entry in base.iterdir():
        deleted = entry.is_dir() and not entry.is_symlink() and folder_person(ws, entry.name) is None
        if deleted and not any(p.is_file() for p in entry.rglob("*")):
            shutil.rmtree(entry, ignore_errors=True)


def _people_call(function: Any, ws: Workspace, *args: str) -> Any:
    """Call a :mod:`facelab.people` change; its refusals become 409 with its one-line message."""
    from facelab.people import PeopleError
    from facelab.server.workspace_ops import busy
    from facelab.writelock import WorkspaceBusy

    try:
        return function(ws, *args)
    except PeopleError as exc:
        raise Conflict(str(exc)) from exc
    except WorkspaceBusy as exc:
        raise busy(exc) from exc
