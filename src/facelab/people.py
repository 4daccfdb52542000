"""People as a photo manager keeps them: rename, merge, delete — and the change survives a re-build.

A person starts as a photo folder's name (``PHOTOS/alice/``). The folder is the user's and is never
touched, so a rename, merge or delete is recorded in the workspace as a *name map* (setting
``person_names``: folder name → person, or None for a deleted person) that every later build
applies: photos of ``alice/`` keep arriving as "Alice" after ``rename alice Alice``, and a deleted
person's folder is skipped (counted in ``reports/errors.csv``) until ``restore``.

Each change rewrites the person's rows in one transaction — photos, crops, enrolled vectors
(gallery) and album faces — and keeps every review decision. Trained runs keep the names they
were trained with; recognition shows them through the same map (:func:`display_name`), so a
renamed person is named by the new name at once, a merged one by the person merged into, and a
deleted one answers "unknown" — until the next training, which uses the new names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facelab.items import OTHERS
from facelab.store import Workspace
from facelab.writelock import write_lock

NAMES_SETTING = "person_names"  # folder name → person (None: deleted)
SHOWN_SETTING = "person_shown"  # a name a trained run may hold → the name to show (None: unknown)


class PeopleError(ValueError):
    """A people change that cannot be made, with the fix in the message."""


@dataclass(frozen=True)
class PeopleChange:
    """What a rename, merge or delete changed (counts of rows)."""

    action: str
    person: str
    into: str | None
    photos: int
    faces: int
    enrolled: int
    album_faces: int

    def words(self) -> str:
        what = f"{self.photos} photo(s), {self.faces} face crop(s), {self.enrolled} enrolled vector(s)"
        if self.album_faces:
            what += f", {self.album_faces} album face(s)"
        if self.action == "rename":
            return f"renamed {self.person} to {self.into}: {what}"
        if self.action == "merge":
            return f"merged {self.person} into {self.into}: {what}"
        return f"deleted {self.person}: {what} forgotten (the photos themselves are untouched)"


def _load(ws: Workspace, key: str) -> dict[str, str | None]:
    text = ws.setting(key)
    return json.loads(text) if text else {}


def _save(ws: Workspace, key: str, mapping: dict[str, str | None]) -> None:
    ws.set_setting(key, json.dumps(mapping, ensure_ascii=False, sort_keys=True))


def folder_person(ws: Workspace, folder: str) -> str | None:
    """The person a photo folder's photos are filed under (None: the person was deleted)."""
    names = _load(ws, NAMES_SETTING)
    return names.get(folder, folder)  # a deleted person maps to None


def display_name(shown: dict[str, str | None], name: str) -> str:
    """How a name a trained run holds is shown now: renamed or merged people by their new name,
    deleted people as the bystander class (which answers unknown)."""
    seen = set()
    while name in shown and name not in seen:  # follow chains (a → b → c); stop on a cycle
        seen.add(name)
        target = shown[name]
        if target is None:
            return OTHERS
        name = target
    return name


def shown_names(ws: Workspace) -> dict[str, str | None]:
    return _load(ws, SHOWN_SETTING)


def shown_names_of_run(run_dir: Path) -> dict[str, str | None]:
    """The name map of the workspace a run folder belongs to (``WS/runs/RUN[/deployed]``)."""
    for workspace in (Path(run_dir).parent.parent, Path(run_dir).parent.parent.parent):
        if (workspace / ".facelab" / "facelab.db").is_file():
            with Workspace(workspace, create=False) as ws:
                return shown_names(ws)
    return {}


def people(ws: Workspace) -> list[str]:
    """Everyone in the workspace — with photos, with faces moved to them in review, or enrolled — sorted."""
    rows = ws.query(
        "SELECT person FROM photos UNION SELECT person FROM crops UNION SELECT person FROM gallery ORDER BY person"
    )
    return [r["person"] for r in rows]


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or name == OTHERS or name == "unknown":
        raise PeopleError(f"{name!r} cannot be a person's name (empty, a path, or a word facelab reserves)")
    return name


def _require(ws: Workspace, name: str) -> None:
    if name not in people(ws):
        known = ", ".join(people(ws)) or "nobody yet"
        raise PeopleError(f"no person called {name!r} in {ws.root} (people: {known})")


def _album_tables(ws: Workspace) -> bool:
    return bool(ws.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'album_faces'"))


def _move_rows(ws: Workspace, old: str, new: str | None) -> tuple[int, int, int, int]:
    """Point every row of ``old`` at ``new`` (None: delete them); returns the counts."""
    conn = ws.conn
    photos = conn.execute("SELECT COUNT(*) FROM photos WHERE person = ?", (old,)).fetchone()[0]
    faces = conn.execute("SELECT COUNT(*) FROM crops WHERE person = ?", (old,)).fetchone()[0]
    enrolled = conn.execute("SELECT COUNT(*) FROM gallery WHERE person = ?", (old,)).fetchone()[0]
    album = _album_tables(ws)
    album_faces = conn.execute("SELECT COUNT(*) FROM album_faces WHERE name = ?", (old,)).fetchone()[0] if album else 0
    if new is None:
        conn.execute("DELETE FROM gallery WHERE person = ?", (old,))
        conn.execute("DELETE FROM photos WHERE person = ?", (old,))  # faces, crops, embeddings cascade
        conn.execute("DELETE FROM crops WHERE person = ?", (old,))  # a face of another's photo filed under old
        if album:
            conn.execute("UPDATE album_faces SET name = NULL WHERE name = ?", (old,))
    else:
        conn.execute("UPDATE photos SET person = ? WHERE person = ?", (new, old))
        conn.execute("UPDATE crops SET person = ? WHERE person = ?", (new, old))
        conn.execute("UPDATE gallery SET person = ? WHERE person = ?", (new, old))
        if album:
            conn.execute("UPDATE album_faces SET name = ? WHERE name = ?", (new, old))
    return photos, faces, enrolled, album_faces


def _remap(ws: Workspace, old: str, new: str | None) -> None:
    """Record the change for later builds (folders) and for runs trained before it (shown names)."""
    names = _load(ws, NAMES_SETTING)
    # Every folder whose photos are filed under old: folders mapped to old before, and old's own
    # (a person without a mapping is a folder's name; an extra entry for a folder that is not
    # there does no harm).
    for folder, person in list(names.items()):
        if person == old:
            names[folder] = new
    names.setdefault(old, new)
    _save(ws, NAMES_SETTING, names)
    shown = _load(ws, SHOWN_SETTING)
    shown[old] = new
    if new is not None:
        shown.pop(new, None)  # new is a live name again (e.g. renamed back)
    _save(ws, SHOWN_SETTING, shown)


def _crop_files(ws: Workspace, person: str) -> list[Path]:
    return [ws.root / r["path"] for r in ws.query("SELECT path FROM crops WHERE person = ?", (person,))]


def rename(ws: Workspace, old: str, new: str) -> PeopleChange:
    """Rename a person everywhere in the workspace (and for every later build)."""
    new = _check_name(new)
    with write_lock(ws.root):
        _require(ws, old)
        if new == old:
            raise PeopleError(f"{old} is already called {new}")
        if new in people(ws):
            raise PeopleError(
                f"{new!r} is someone else already; to make them one: facelab people merge {ws.root} {old} {new}"
            )
        with ws.transaction():
            counts = _move_rows(ws, old, new)
            _remap(ws, old, new)
    return PeopleChange("rename", old, new, *counts)


def merge(ws: Workspace, source: str, into: str) -> PeopleChange:
    """Make two people one: every photo, face and review decision of ``source`` becomes ``into``'s."""
    with write_lock(ws.root):
        _require(ws, source)
        _require(ws, into)
        if source == into:
            raise PeopleError(f"{source} and {into} are the same person")
        with ws.transaction():
            counts = _move_rows(ws, source, into)
            _remap(ws, source, into)
    return PeopleChange("merge", source, into, *counts)


def delete(ws: Workspace, name: str) -> PeopleChange:
    """Forget a person: their photos' rows, faces, crops, review decisions and enrolled vectors. The
    photo files are never touched; later builds skip their folder until :func:`restore`."""
    with write_lock(ws.root):
        _require(ws, name)
        files = _crop_files(ws, name)
        with ws.transaction():
            counts = _move_rows(ws, name, None)
            _remap(ws, name, None)
        for path in files:  # ours (inside the workspace), after the rows are gone
            if path.is_relative_to(ws.root):
                path.unlink(missing_ok=True)
    return PeopleChange("delete", name, None, *counts)


def deleted_folders(ws: Workspace) -> list[str]:
    return sorted(folder for folder, person in _load(ws, NAMES_SETTING).items() if person is None)


def restore(ws: Workspace, folder: str) -> None:
    """Let builds read a deleted person's folder again (the next build brings the photos back)."""
    with write_lock(ws.root):
        names = _load(ws, NAMES_SETTING)
        if names.get(folder, "") is not None:
            raise PeopleError(
                f"no deleted person folder {folder!r} (deleted: {', '.join(deleted_folders(ws)) or 'none'})"
            )
        del names[folder]
        _save(ws, NAMES_SETTING, names)
        shown = _load(ws, SHOWN_SETTING)
        shown.pop(folder, None)
        _save(ws, SHOWN_SETTING, shown)
