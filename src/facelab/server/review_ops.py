"""The review page's queue: every face crop across all people, the most doubtful first, by filter and page.

What a crop's state means for training is decided by :func:`facelab.items.load_items`: a rejected
crop is never used; an accepted one always is; a pending one is used when identity resolution took
it as the person's face (role ``person``) and left out otherwise (a bystander, a suspicious or an
ambiguous face). The page says this in one line (:data:`STATES_EXPLAINED`), and every card says
whether its face trains now (``trains``).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from facelab.server.workspace_ops import Conflict, NotFound, crop_json, crop_photo_ids
from facelab.store import Workspace
from facelab.types import CropStatus, Role

# Cards per page: a page is what "accept the rest of this page" acts on, so it must stay small
# enough to look at every face before accepting them all.
PAGE_SIZE = 60
# A crop of lower quality than this is worth a look (the same cut facelab.review.list_crops uses).
LOW_QUALITY = 0.35

STATES_EXPLAINED = (
    "Pending: not decided by you — it trains only if identity resolution took it as the person's face "
    "(a bystander, suspicious or ambiguous face does not). Accepted: it is the person and always trains. "
    "Rejected: left out of every data set."
)


class Show(StrEnum):
    """Which crops the review queue lists."""

    DOUBTFUL = "doubtful"  # pending and suspicious, ambiguous or low quality
    PENDING = "pending"
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    ALL = "all"


# Why a face is doubtful, in words the page shows (worst first: the order of the queue).
DOUBT_WORDS = {
    Role.SUSPICIOUS.value: "suspicious: the only face of its photo, but unlike the person's other faces",
    Role.AMBIGUOUS.value: "ambiguous: a group photo where no face is clearly the person",
    "low_quality": "low quality: blurred, tiny or faint",
}


def doubt_of(crop: dict[str, Any]) -> str | None:
    """``suspicious``, ``ambiguous`` or ``low_quality`` for a pending crop worth a look; else None."""
    if crop["status"] != CropStatus.PENDING.value:
        return None
    if crop["role"] in (Role.SUSPICIOUS.value, Role.AMBIGUOUS.value):
        return crop["role"]
    if crop["quality"] is not None and crop["quality"] < LOW_QUALITY:
        return "low_quality"
    return None


def trains(crop: dict[str, Any]) -> bool:
    """Whether the face counts as its person for training now (the rule of facelab.items.load_items)."""
    if crop["status"] == CropStatus.REJECTED.value:
        return False
    return crop["status"] == CropStatus.ACCEPTED.value or crop["role"] == Role.PERSON.value


def _sort_key(crop: dict[str, Any]) -> tuple:
    """Doubtful first (suspicious, ambiguous, low quality), then the other pending faces, then the
    rejected and the accepted ones; within each, the face least like its person first (for low
    quality: the worst crop first). The person's name plays no part: doubt decides."""
    doubt = crop["doubt"]
    if doubt is not None:
        group = {"suspicious": 0, "ambiguous": 1, "low_quality": 2}[doubt]
    else:
        group = {"pending": 3, "rejected": 4, "accepted": 5}.get(crop["status"], 6)
    distance = crop["distance"] if crop["distance"] is not None else -math.inf
    if doubt == "low_quality":
        return (group, crop["quality"], crop["id"])
    return (group, -distance, crop["id"])


def _matches(crop: dict[str, Any], show: Show) -> bool:
    if show is Show.ALL:
        return True
    if show is Show.DOUBTFUL:
        return crop["doubt"] is not None
    return crop["status"] == show.value


def queue(ws: Workspace, show: Show = Show.ALL, person: str | None = None, page: int = 1) -> dict[str, Any]:
    """One page of the review queue: ``items`` (crops with ``doubt``, ``doubt_words``, ``trains``),
    the ``total`` under this filter, ``page`` / ``pages``, and ``counts`` of every filter (for the tabs).

    A page past the last is answered with the last page (a page emptied by decisions moves back).
    """
    from facelab.review import list_crops

    photo_of = crop_photo_ids(ws)
    crops = []
    for view in list_crops(ws, person=person):
        crop = crop_json(view)
        crop["photo_id"] = photo_of.get(view.id)
        crop["doubt"] = doubt_of(crop)
        crop["doubt_words"] = DOUBT_WORDS.get(crop["doubt"] or "")
        crop["flagged"] = crop["doubt"] is not None
        crop["trains"] = trains(crop)
        crops.append(crop)
    crops.sort(key=_sort_key)
    counts = {s.value: sum(_matches(c, s) for c in crops) for s in Show}
    shown = [c for c in crops if _matches(c, show)]
    pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
    page = min(max(1, page), pages)
    return {
        "show": show.value,
        "person": person,
        "page": page,
        "pages": pages,
        "page_size": PAGE_SIZE,
        "total": len(shown),
        "counts": counts,
        "items": shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
    }


def accept_many(ws: Workspace, ids: list[int], confirm_bystanders: bool) -> list[int]:
    """Accept the crops ``ids`` (each is then its person's face and trains) in one transaction.

    Nothing changes when one of them does not exist (404), or when one is a bystander — another
    person in the photo, by identity resolution — and ``confirm_bystanders`` is false (409): the
    page asks first. Returns the ids, each once, in the order given.
    """
    from facelab.review import set_status

    wanted = list(dict.fromkeys(ids))
    marks = ",".join("?" * len(wanted))
    rows = ws.query(
        f"SELECT c.id, f.role FROM crops c JOIN faces f ON f.id = c.face_id WHERE c.id IN ({marks})", tuple(wanted)
    )
    found = {r["id"]: r["role"] for r in rows}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise NotFound(f"no crop with id {', '.join(map(str, missing[:10]))}; reload the review page")
    bystanders = [i for i in wanted if found[i] == Role.BYSTANDER.value]
    if bystanders and not confirm_bystanders:
        raise Conflict(
            f"crop(s) {', '.join(map(str, bystanders[:10]))} are bystanders (someone else in the person's photo, "
            "by identity resolution); to accept them as the person anyway, send confirm_bystanders: true"
        )
    set_status(ws, wanted, CropStatus.ACCEPTED)
    return wanted
