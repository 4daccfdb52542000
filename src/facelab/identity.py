"""Identity resolution: which face in each photo of a person's folder is that person.

A person's folder is never clean: group photos, a partner beside them, a poster behind them, a
photo of somebody else. For each folder this module finds the person's identity by consensus
over face embeddings, then gives every face a role:

* ``person``     — the folder's person (used for training);
* ``bystander``  — somebody else in the photo (a free negative for the "unknown" threshold);
* ``ambiguous``  — a multi-face photo where no face is clearly the person (left to review);
* ``suspicious`` — the only face of a photo, but far from the person (poster, look-alike, wrong photo).

The consensus: start from the faces of single-face photos (most of them are the person), take
their medoid, then iterate — pick each photo's closest face, average those within
``match_distance`` — until the prototype settles. Review decisions are never overwritten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facelab.store import Workspace
from facelab.types import Role


class IdentityUnavailable(RuntimeError):
    """No face-embedding model is installed; roles fall back to the largest-face rule."""


@dataclass(frozen=True)
class ResolutionParams:
    """Distances are dlib embedding (euclidean) distances to the person's prototype.

    ``match_distance``: a face this close to the prototype can be the person. dlib's customary
    same-person threshold between two faces is 0.6; distances to a *mean* are smaller, so 0.55
    leaves room. Lower it if bystanders get taken for the person, raise it for folders with large
    changes of age or make-up.
    ``min_margin``: in a multi-face photo, the chosen face must be this much closer than the next
    face, else the photo is ambiguous. Raise it to send more group photos to review.
    ``suspicious_distance``: the only face of a photo further than this is flagged suspicious.
    ``iterations``: refinement rounds of the prototype (it settles in 2–3).
    """

    match_distance: float = 0.55
    min_margin: float = 0.08
    suspicious_distance: float = 0.6
    iterations: int = 4


@dataclass
class ResolutionSummary:
    roles: Counter = field(default_factory=Counter)
    people: int = 0
    model: str = ""
    fallback: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = ", ".join(f"{self.roles.get(r.value, 0)} {r.value}" for r in Role)
        text = f"Identity resolution ({self.model}) over {self.people} people: {parts}."
        if self.fallback:
            text += f" Too few faces to find the identity of: {', '.join(self.fallback)} (largest-face rule used)."
        return text


def robust_prototype(vectors: np.ndarray) -> np.ndarray:
    """The medoid: the vector with the smallest median distance to the others (outlier-proof)."""
    if len(vectors) == 1:
        return vectors[0]
    distances = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=-1)
    return vectors[int(np.argmin(np.median(distances, axis=1)))]


def _photo_faces(ws: Workspace, person: str) -> dict[int, list[int]]:
    rows = ws.query(
        "SELECT f.id, f.photo_id FROM faces f JOIN photos p ON p.id = f.photo_id "
        "WHERE p.person = ? AND p.status = 'ok' ORDER BY p.id, f.idx",
        (person,),
    )
    photos: dict[int, list[int]] = {}
    for row in rows:
        photos.setdefault(row["photo_id"], []).append(row["id"])
    return photos


def resolve_person(
    photos: dict[int, list[int]], vectors: dict[int, np.ndarray], params: ResolutionParams
) -> tuple[np.ndarray | None, dict[int, tuple[Role, float, float]]]:
    """Roles for one person's faces: face id → (role, distance to prototype, margin)."""
    photos = {pid: [f for f in faces if f in vectors] for pid, faces in photos.items()}
    photos = {pid: faces for pid, faces in photos.items() if faces}
    singles = [faces[0] for faces in photos.values() if len(faces) == 1]
    seed_ids = singles if len(singles) >= 3 else [f for faces in photos.values() for f in faces]
    if not seed_ids:
        return None, {}
    prototype = robust_prototype(np.stack([vectors[f] for f in seed_ids]))
    for _ in range(params.iterations):
        chosen = []
        for faces in photos.values():
            distances = [float(np.linalg.norm(vectors[f] - prototype)) for f in faces]
            best = int(np.argmin(distances))
            if distances[best] <= params.match_distance:
                chosen.append(vectors[faces[best]])
        if not chosen:
            break
        prototype = np.mean(chosen, axis=0)
    roles: dict[int, tuple[Role, float, float]] = {}
    for faces in photos.values():
        distances = np.array([np.linalg.norm(vectors[f] - prototype) for f in faces])
        order = np.argsort(distances)
        best = order[0]
        margin = float(distances[order[1]] - distances[best]) if len(faces) > 1 else float("nan")
        for i, face_id in enumerate(faces):
            d = float(distances[i])
            if i != best:
                roles[face_id] = (Role.BYSTANDER, d, float("nan"))
                continue
            if len(faces) == 1:
                role = Role.PERSON if d <= params.suspicious_distance else Role.SUSPICIOUS
            elif d <= params.match_distance and margin >= params.min_margin:
                role = Role.PERSON
            else:
                role = Role.AMBIGUOUS
            roles[face_id] = (role, d, margin)
    return prototype, roles


def resolve_identities(
    ws: Workspace,
    *,
    model: str = "dlib",
    params: ResolutionParams | None = None,
    progress: Callable[[int, int, object], None] | None = None,
) -> ResolutionSummary:
    """Embed every face that lacks an embedding, then set each face's role, folder by folder."""
    params = params or ResolutionParams()
    try:
        from facelab.embedders import EmbedderUnavailable, embed_workspace
    except ImportError as exc:  # pragma: no cover - module ships with facelab
        raise IdentityUnavailable(str(exc)) from exc
    try:
        embed_workspace(ws, model=model, progress=progress)
    except EmbedderUnavailable as exc:
        raise IdentityUnavailable(str(exc)) from exc
    vectors = ws.embeddings(model)
    summary = ResolutionSummary(model=model)
    for person in ws.people():
        photos = _photo_faces(ws, person)
        if not photos:
            continue
        summary.people += 1
        prototype, roles = resolve_person(photos, vectors, params)
        if prototype is None:
            summary.fallback.append(person)
            continue
        with ws.transaction():
            for face_id, (role, distance, margin) in roles.items():
                ws.set_role(
                    face_id,
                    role.value,
                    distance=distance,
                    margin=None if np.isnan(margin) else margin,
                )
    for row in ws.query("SELECT role, COUNT(*) AS n FROM faces GROUP BY role"):
        summary.roles[row["role"] or "none"] = row["n"]
    ws.set_setting("identity_model", model)
    return summary


def stranger_bystanders(ws: Workspace, model: str = "dlib", params: ResolutionParams | None = None) -> set[int]:
    """Bystander faces that are nobody in the data set: usable as "stranger" negatives.

    A bystander can be another of the user's people (Federer in a photo in Serena's folder).
    Counting such a face as a stranger would push the unknown threshold above the known people's own
    scores, so a bystander within ``match_distance`` of any person's identity (the mean of their
    ``person`` faces) is left out.
    """
    params = params or ResolutionParams()
    vectors = ws.embeddings(model)
    rows = ws.query(
        "SELECT f.id, f.role, c.person FROM faces f JOIN crops c ON c.face_id = f.id "
        "WHERE f.role IN ('person', 'bystander') AND c.status != 'rejected'"
    )
    by_person: dict[str, list[np.ndarray]] = {}
    for row in rows:
        if row["role"] == "person" and row["id"] in vectors:
            by_person.setdefault(row["person"], []).append(vectors[row["id"]])
    if not by_person:
        return set()
    prototypes = np.stack([np.mean(v, axis=0) for v in by_person.values()])
    strangers = set()
    for row in rows:
        if row["role"] != "bystander" or row["id"] not in vectors:
            continue
        nearest = float(np.min(np.linalg.norm(prototypes - vectors[row["id"]], axis=1)))
        if nearest > params.match_distance:
            strangers.add(row["id"])
    return strangers
