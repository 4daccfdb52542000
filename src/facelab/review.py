"""Manual verification of crops (the seed's review step), shared by the CLI and the web app.

A review decision is final: identity resolution never overwrites it, and re-builds keep it as long
as the photo itself is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facelab.store import Workspace
from facelab.types import CropStatus, Role

# Roles that need a human look, most doubtful first.
_DOUBT_ORDER = {Role.SUSPICIOUS.value: 0, Role.AMBIGUOUS.value: 1}


@dataclass(frozen=True)
class CropView:
    id: int
    person: str
    status: str
    role: str | None
    role_source: str | None
    quality: float | None
    distance: float | None
    path: Path
    photo: Path

    @property
    def doubt(self) -> tuple[int, float]:
        """Sort key: doubtful roles first, then far from the person, then low quality."""
        rank = _DOUBT_ORDER.get(self.role or "", 2)
        return (rank, -(self.distance or 0.0) if self.distance is not None else (self.quality or 0.0))


def list_crops(ws: Workspace, person: str | None = None, suspicious: bool = False) -> list[CropView]:
    """Crops with their review state. ``suspicious`` keeps only crops worth a look, most doubtful first."""
    sql = (
        "SELECT c.id, c.person, c.status, c.quality, c.path, f.role, f.role_source, f.distance, p.path AS photo "
        "FROM crops c JOIN faces f ON f.id = c.face_id JOIN photos p ON p.id = f.photo_id"
    )
    params: tuple = ()
    if person:
        sql += " WHERE c.person = ?"
        params = (person,)
    sql += " ORDER BY c.person, p.path, f.idx"
    views = [
        CropView(
            id=r["id"],
            person=r["person"],
            status=r["status"],
            role=r["role"],
            role_source=r["role_source"],
            quality=r["quality"],
            distance=r["distance"],
            path=ws.root / r["path"],
            photo=Path(r["photo"]),
        )
        for r in ws.query(sql, params)
    ]
    if suspicious:
        views = [
            v
            for v in views
            if v.status == CropStatus.PENDING.value
            and (v.role in _DOUBT_ORDER or (v.quality is not None and v.quality < 0.35))
        ]
        views.sort(key=lambda v: v.doubt)
    return views


def _face_of_crop(ws: Workspace, crop_id: int) -> int:
    row = ws.conn.execute("SELECT face_id FROM crops WHERE id = ?", (crop_id,)).fetchone()
    if row is None:
        raise KeyError(f"no crop with id {crop_id} (list them with: facelab review WS --list)")
    return row["face_id"]


def set_status(ws: Workspace, crop_ids: list[int], status: CropStatus) -> None:
    """Accept (this face is the folder's person) or reject (leave it out of every data set)."""
    with ws.transaction() as conn:
        for crop_id in crop_ids:
            face_id = _face_of_crop(ws, crop_id)
            conn.execute("UPDATE crops SET status = ? WHERE id = ?", (status.value, crop_id))
            if status is CropStatus.ACCEPTED:
                ws.set_role(face_id, Role.PERSON.value, source="review")


def move_crop(ws: Workspace, crop_id: int, person: str) -> Path:
    """File a crop under another person (a face of someone else in a person's folder)."""
    if not person or os.sep in person or person.startswith("."):
        raise ValueError(f"{person!r} is not a usable person name (no slashes, not hidden)")
    row = ws.conn.execute("SELECT face_id, path FROM crops WHERE id = ?", (crop_id,)).fetchone()
    if row is None:
        raise KeyError(f"no crop with id {crop_id} (list them with: facelab review WS --list)")
    old = ws.root / row["path"]
    new = ws.crops_dir / person / old.name
    new.parent.mkdir(parents=True, exist_ok=True)
    if old.exists():
        os.replace(old, new)
    with ws.transaction() as conn:
        conn.execute(
            "UPDATE crops SET person = ?, path = ?, status = 'accepted' WHERE id = ?",
            (person, str(new.relative_to(ws.root)), crop_id),
        )
        ws.set_role(row["face_id"], Role.PERSON.value, source="review")
    return new
