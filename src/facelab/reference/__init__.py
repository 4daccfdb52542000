"""Reference evidence about strangers that ships with facelab: face embeddings, never photos.

``strangers-<embedder>.npz`` holds the embedding of every face found in 999 photos of 999 different
people from Labeled Faces in the Wild (LFW, University of Massachusetts Amherst: news photos
collected for research), none of them in the shared test photo sets; see ``NOTICE.md`` beside this
file and ``scripts/make_reference_strangers.py``, which wrote it. Calibration scores these faces
against the user's own gallery: each is a stranger meeting *all* of the user's people, which is
exactly the event a threshold must make rare (see :mod:`facelab.impostors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent


def reference_path(embedder: str) -> Path:
    """Where the reference stranger embeddings of ``embedder`` live (whether or not they exist)."""
    return FOLDER / f"strangers-{embedder}.npz"


@dataclass(frozen=True)
class ReferenceFaces:
    """Stranger faces of the reference set: ``vectors`` (n × dim), the ``photo`` each face came from,
    its ``short_side`` in pixels and whether it was its photo's ``largest`` face."""

    vectors: np.ndarray
    photo: np.ndarray
    short_side: np.ndarray
    largest: np.ndarray

    @property
    def n_photos(self) -> int:
        return len(np.unique(self.photo))

    def usable(self, min_face: float = 0.0) -> ReferenceFaces:
        """The faces a recognizer ignoring faces under ``min_face`` pixels (shorter side) would name."""
        keep = self.short_side >= min_face
        return ReferenceFaces(self.vectors[keep], self.photo[keep], self.short_side[keep], self.largest[keep])


@cache
def reference_faces(embedder: str) -> ReferenceFaces | None:
    """The reference stranger faces of ``embedder``, or None when facelab ships none for it."""
    path = reference_path(embedder)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return ReferenceFaces(
            vectors=data["vectors"].astype(np.float32),
            photo=data["photo"].astype(np.int64),
            short_side=data["short_side"].astype(np.float32),
            largest=data["largest"].astype(bool),
        )
