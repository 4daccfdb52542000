"""Re-name album faces from their stored vectors when the model changed (retrained, enrolled, forgot).

No photo is read: each face's embedding was stored by the indexer, so a new model only has to
score the vectors again. :func:`rematch_photos` is what ``album index`` calls for photos that are
unchanged on disk but were named by another model.

It works in chunks of many photos — one query to read a chunk's vectors, a few calls of the model's
``predict_vectors`` (:data:`SCORE_BATCH` faces each) to score them, one transaction to write the
answers — so a million faces take seconds, not the hour a photo-at-a-time loop takes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from facelab.albums import gc_paused
from facelab.openset import decide
from facelab.store import Workspace

if TYPE_CHECKING:
    from facelab.recognize import Recognizer

# Faces read and written per chunk (one query, one transaction): ~30 MB of vectors at 50k. Above
# ~20k the speed hardly changes (the per-query and per-transaction costs are spread thin); lower
# it on a machine short of memory.
DEFAULT_CHUNK = 50_000
# Faces per predict_vectors call within a chunk. A kNN head makes a faces × gallery-vectors
# float64 matrix and several temporaries of that size: at 50k × 1,000 each is 400 MB of fresh
# memory (page faults, zeroing) and scoring took twice as long as in 8k batches (measured, 2 cores).
# Raise it only for a prototype head on a fast machine; lower it for a gallery of many thousands.
SCORE_BATCH = 8192


def name_scores_fast(recognizer: Recognizer, scores: np.ndarray) -> tuple[list[str | None], list[float], list[float]]:
    """``recognizer.name_scores``' name, score and margin for every row of ``scores``, at once.

    The same open-set rule (:func:`facelab.openset.decide` on the recognizer's display classes,
    threshold and margin) without building a Recognition and its sorted candidates per face —
    the part of ``name_scores`` that dominates at a million faces.
    """
    names, tops, margins = _decide(recognizer, scores)
    return names.tolist(), tops.tolist(), margins.tolist()


def _rematch_chunk(
    ws: Workspace, recognizer: Recognizer, key: str, embedder: str, photo_ids: list[int]
) -> tuple[set[int], int, int]:
    """Re-name the faces of ``photo_ids`` in one read, a few scoring calls and one transaction.

    Returns the photos that could not be re-named (some face without a vector of ``embedder``),
    how many faces were read and how many were rewritten.
    """
    cursor = ws.conn.cursor()
    cursor.row_factory = None  # plain tuples: several times cheaper than sqlite3.Row per face
    # The ids travel as one JSON array: a single statement however many there are.
    rows = cursor.execute(
        "SELECT photo_id, id, vector IS NULL OR embedder IS NOT ?, vector, name, score, margin FROM album_faces "
        "WHERE photo_id IN (SELECT value FROM json_each(?))",
        (embedder, json.dumps(photo_ids)),
    ).fetchall()
    unusable = {r[0] for r in rows if r[2]}
    usable = [r for r in rows if r[0] not in unusable] if unusable else rows
    updates: list[tuple[str | None, float, float | None, int]] = []
    if usable:
        _, face_ids, _, blobs, old_names, old_scores, old_margins = zip(*usable, strict=True)
        sizes = set(map(len, blobs))
        if len(sizes) != 1:
            raise ValueError(
                f"album faces hold {embedder} vectors of different lengths; index the library again "
                "from scratch (delete its album_photos rows) to store them anew"
            )
        vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), sizes.pop() // 4)
        predict = recognizer.model.predict_vectors
        scores = np.vstack(
            [np.asarray(predict(vectors[i : i + SCORE_BATCH])) for i in range(0, len(vectors), SCORE_BATCH)]
        )
        names, tops, margins = _decide(recognizer, scores)
        # Stored margins are NULL where there is none (a model of one person: inf); NaN stands
        # for NULL in the arrays (None becomes NaN in a float array).
        margins = np.where(np.isfinite(margins), margins, np.nan)
        # Unchanged faces are not written: after an enrolment most answers stay as they were,
        # and every written row costs its page in the WAL and index updates.
        changed = np.flatnonzero(
            (names != np.array(old_names, dtype=object))
            | ~_same(tops, np.array(old_scores, dtype=float))
            | ~_same(margins, np.array(old_margins, dtype=float))
        )
        stored_margins = [None if math.isnan(m) else m for m in margins[changed].tolist()]
        updates = list(
            zip(
                names[changed].tolist(),
                tops[changed].tolist(),
                stored_margins,
                np.asarray(face_ids)[changed].tolist(),
                strict=True,
            )
        )
    renamed = [(key, photo_id) for photo_id in photo_ids if photo_id not in unusable]
    # Faces and the photo's model change together: a run stopped between chunks leaves every
    # photo either fully re-named (model = key, skipped next time) or untouched.
    with ws.transaction() as conn:
        conn.executemany("UPDATE album_faces SET name = ?, score = ?, margin = ? WHERE id = ?", updates)
        conn.executemany("UPDATE album_photos SET model = ? WHERE id = ?", renamed)
    return unusable, len(rows), len(updates)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equal, NaN (NULL) equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _decide(recognizer: Recognizer, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`name_scores_fast` as arrays: names (object, None for unknown), scores, margins."""
    decisions = decide(scores, recognizer.threshold, recognizer.min_margin, recognizer.display_classes)
    # Index −1 (unknown) picks the trailing None.
    choices = np.array([*recognizer.display_classes, None], dtype=object)
    return choices[decisions.index], decisions.score.astype(float), decisions.margin.astype(float)


def rematch_photos(
    ws: Workspace,
    recognizer: Recognizer,
    key: str,
    photo_ids: Sequence[int],
    *,
    chunk: int = DEFAULT_CHUNK,
) -> list[int]:
    """Re-name the faces of ``photo_ids`` with ``recognizer`` from their stored vectors and mark the
    photos as named by ``key``. Returns the ids that could not be re-named (a face without a vector
    of the model's embedder, or a model that does not work on vectors), in the order given: the
    caller indexes those again.

    ``chunk``: about how many faces are read, scored and written at once (whole photos; see
    :data:`DEFAULT_CHUNK` for the memory it takes). Each chunk commits on its own, so an
    interrupted re-match keeps what it finished.
    """
    from facelab.recognize import VectorModel

    model = recognizer.model
    if not isinstance(model, VectorModel):
        return list(photo_ids)
    pending = sorted({int(i) for i in photo_ids})  # in id order: the faces' (photo_id, idx) index is read in order
    unusable: set[int] = set()
    faces_per_photo = 4.0  # a first guess, then measured: a chunk is cut in photos, sized in faces
    photos_seen = faces_seen = 0
    start = 0
    while start < len(pending):
        take = max(1, int(chunk / faces_per_photo))
        batch = pending[start : start + take]
        start += take
        with gc_paused():  # a chunk is ~10 objects a face, none in a cycle
            bad, faces, _ = _rematch_chunk(ws, recognizer, key, model.embedder, batch)
        unusable |= bad
        photos_seen += len(batch)
        faces_seen += faces
        faces_per_photo = max(1.0, faces_seen / photos_seen)
    return [photo_id for photo_id in photo_ids if photo_id in unusable]
