"""Reading the labelled faces of a workspace, split by split: what training and evaluation consume."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from facelab.store import Workspace, _face_from_row
from facelab.types import Face


class FaceSelection(StrEnum):
    """Which faces of a person's photos count as that person.

    ``resolved`` (default): faces that identity resolution (or review) marked ``person``; the
    right choice for folders that hold group photos. ``all``: every face not rejected in review
    (the seed's behaviour, kept for comparison).
    """

    RESOLVED = "resolved"
    ALL = "all"


@dataclass(frozen=True)
class SplitItem:
    """One labelled face: its crop file, its source photo and box, its person and split."""

    face_id: int
    crop_path: Path
    photo_path: Path
    photo_id: int
    face: Face
    person: str
    split: str
    role: str | None


# The class name bystanders get with ``include_others``: a model answers "unknown" when it wins.
OTHERS = "others"


def load_items(
    ws: Workspace,
    split: str | None = None,
    faces: FaceSelection | str = FaceSelection.RESOLVED,
    include_others: bool = False,
) -> list[SplitItem]:
    """Labelled faces of ``split`` (all splits when ``None``), ordered by person, photo, face.

    A crop's person is the crop's (review may move a crop to another person); rejected crops are
    never returned. With ``resolved``, a face counts when its role is ``person``, or when review
    accepted it.

    ``include_others`` adds the bystanders of the user's photos who are none of the user's people
    (see :func:`facelab.identity.stranger_bystanders`) under the class name :data:`OTHERS`, placed
    after the people's faces. A model trained with them learns what "somebody else" looks like.
    """
    faces = FaceSelection(faces)
    items = _load(ws, split, faces)
    if not include_others:
        return items
    if any(item.person == OTHERS for item in items):
        raise ValueError(
            f"{ws.root}: a person is named {OTHERS!r}, the class name --include-others gives bystanders; "
            "rename that person (facelab review or the photo folder) or train without --include-others"
        )
    from facelab.identity import stranger_bystanders

    bystanders = stranger_bystanders(ws)
    others = [
        dataclasses.replace(item, person=OTHERS)
        for item in _load(ws, split, FaceSelection.ALL)
        if item.face_id in bystanders
    ]
    return items + others


def _load(ws: Workspace, split: str | None, faces: FaceSelection) -> list[SplitItem]:
    sql = (
        "SELECT f.*, c.path AS crop_path, c.person AS crop_person, c.status AS crop_status, "
        "p.path AS photo_path, p.split AS split FROM crops c "
        "JOIN faces f ON f.id = c.face_id JOIN photos p ON p.id = f.photo_id "
        "WHERE c.status != 'rejected'"
    )
    params: list[object] = []
    if split is not None:
        sql += " AND p.split = ?"
        params.append(str(split))
    if faces is FaceSelection.RESOLVED:
        sql += " AND (f.role = 'person' OR c.status = 'accepted')"
    sql += " ORDER BY c.person, p.path, f.idx"
    return [
        SplitItem(
            face_id=row["id"],
            crop_path=ws.root / row["crop_path"],
            photo_path=Path(row["photo_path"]),
            photo_id=row["photo_id"],
            face=_face_from_row(row),
            person=row["crop_person"],
            split=row["split"],
            role=row["role"],
        )
        for row in ws.query(sql, tuple(params))
    ]


def class_names(items: list[SplitItem]) -> list[str]:
    """Sorted person names: the class order of every model trained on these items (:data:`OTHERS` last)."""
    return class_names_of(item.person for item in items)


def class_names_of(labels: Iterable[str]) -> list[str]:
    """Sorted distinct labels, with :data:`OTHERS` (if present) last."""
    found = set(labels)
    return sorted(found - {OTHERS}) + ([OTHERS] if OTHERS in found else [])


def people(classes: list[str]) -> list[str]:
    """The classes that name a person: all but :data:`OTHERS`."""
    return [name for name in classes if name != OTHERS]
