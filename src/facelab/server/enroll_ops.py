""" "This is …" on the Recognize page: a recognized face enrolled as a person, without retraining.

The face's embedding — the very vector its answer was computed from, kept by
:class:`facelab.server.recognition.FaceMemory` — is stored in the workspace gallery as
``facelab enroll`` stores a photo's (:func:`facelab.embed_track.store_gallery_vector`), under the
source ``web:<sha256 of the image's bytes>#<face index>``. Every embedding run loads the gallery
with its own faces (:class:`facelab.embed_track.EmbeddingModel`), and the server's model cache
reloads when the gallery changes, so the current model names that face from then on.

The image itself is not kept: a photo uploaded to a person's page becomes their *training*
photo, with every face in it found and resolved by a build — not what a one-face correction means
(a group photo, a webcam frame). Enrolled vectors are listed and removed like those of
``facelab enroll`` (``facelab forget``, and a person's delete in the app).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facelab.server import workspace_ops as ops
from facelab.server.recognition import FaceMemory
from facelab.store import Workspace
from facelab.types import Box, Face


def source_of(image: str, face: int) -> str:
    """The gallery source of face ``face`` of the image whose bytes hash to ``image``."""
    return f"web:{image}#{face}"


def face_vector(memory: FaceMemory, image: str, face: int) -> tuple[str, np.ndarray, list[int]]:
    """``(embedder, vector, box)`` of a face the server recognized lately; 404 / 409 with the fix."""
    seen = memory.get(image)
    if seen is None:
        raise ops.NotFound("the server no longer holds this image's faces (it keeps the last 64); recognize it again")
    if not 0 <= face < len(seen.boxes):
        raise ops.NotFound(f"the image has {len(seen.boxes)} face(s); there is no face {face}")
    if seen.embedder is None or seen.vectors is None:
        raise ops.Conflict(
            "the current model is a CNN: it learns a face only by training — add the photo on the person's page "
            "and retrain, or make a face-embedding run the current model"
        )
    return seen.embedder, np.asarray(seen.vectors[face]), seen.boxes[face]


def person_for(ws: Workspace, name: str, new: bool, known: list[str]) -> str:
    """The person to enroll as: a new one (created as in the People page: 422 bad name, 409 taken),
    or an existing one — a person of the workspace or anyone the current model names (404 else)."""
    if new:
        return ops.create_person(ws, name)
    for person in known:
        if person == name:
            return person
    return ops.require_person(ws, name)


def enroll_face(ws: Workspace, person: str, embedder: str, source: str, vector: np.ndarray) -> int:
    """Store ``vector`` as ``person``'s in the gallery; the same face stored earlier under another
    name is replaced (a correction of a correction). Callers hold the write lock. Returns how many
    faces the gallery holds for ``person`` now."""
    from facelab.embed_track import store_gallery_vector

    with ws.transaction() as conn:
        conn.execute("DELETE FROM gallery WHERE model = ? AND source = ? AND person != ?", (embedder, source, person))
        store_gallery_vector(conn, person, embedder, source, vector)
    return int(ws.query("SELECT COUNT(*) AS n FROM gallery WHERE person = ?", (person,))[0]["n"])


def answer_now(recognizer: Any, vector: np.ndarray, box: list[int]) -> str:
    """The name the (reloaded) current model gives the enrolled face now, or ``unknown``."""
    scores = np.asarray(recognizer.model.predict_vectors(vector[None, :]))
    face = Face(Box(*(float(v) for v in box)), 1.0)
    return recognizer.name_scores([face], scores)[0].label


def message(person: str, named: str, created: bool) -> str:
    """One line for the page: what happened, and what to do when the face is not named yet."""
    who = f"{person} (new)" if created else person
    if named == person:
        return f"Saved: this face is {who} from now on — no retraining needed."
    return (
        f"Saved as {who}, but the model still answers {named}: one face moves {person}'s average only a "
        f"little — add photos of {person} on their page and retrain."
    )
