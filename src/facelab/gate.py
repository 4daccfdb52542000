"""A CNN's name stands only if the face embedding agrees.

A transfer (CNN) model scores faces with a softmax over the user's people, so a stranger gets a
confident name as easily as anyone: every score measured from ImageNet features (softmax,
max-logit, cosine to a class mean) left 65–96% of known faces missed at 1% of strangers named
(docs/benchmarks_cnn_openset.md). The gate is a prototype head over the face embedding (dlib by
default) of the same people's training faces, calibrated like the embedding track
(:func:`facelab.embed_track.calibrate_vectors`: reference strangers, the people left out in turn,
bystanders, a strangers folder). A CNN's answer keeps its name only where the face lies within the
gate's threshold of *that* person's prototype; elsewhere it is unknown. So strangers are named at
most as often as by the gate alone, while the CNN still decides between the people.

Saved as ``gate.npz`` in the run folder (arrays only, no pickle) and applied by
:class:`facelab.transfer.TransferModel` whenever it is there.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab import openset
from facelab.items import OTHERS, FaceSelection, SplitItem, load_items
from facelab.store import Workspace
from facelab.types import Face

GATE_FILE = "gate.npz"


@dataclass(frozen=True)
class EmbeddingGate:
    """Per person a prototype (mean embedding); a name is confirmed when the face's similarity to
    that person's prototype (1 − euclidean distance) is at least ``threshold``."""

    embedder: str
    classes: list[str]
    centers: np.ndarray
    threshold: float

    def agrees(self, vectors: np.ndarray, names: list[str | None]) -> np.ndarray:
        """Per face, whether its embedding confirms ``names[i]`` (None or a person the gate does not
        know: False)."""
        index = {name: i for i, name in enumerate(self.classes)}
        out = np.zeros(len(names), dtype=bool)
        for i, name in enumerate(names):
            if name in index:
                distance = float(np.linalg.norm(np.asarray(vectors[i], np.float64) - self.centers[index[name]]))
                out[i] = 1.0 - distance >= self.threshold
        return out

    def apply(self, scores: np.ndarray, vectors: np.ndarray, classes: list[str]) -> np.ndarray:
        """``scores`` with every row whose best person the embedding does not confirm set to −1 (below
        any probability, so unknown at any threshold of 0 or more)."""
        scores = np.array(scores, dtype=np.float64, copy=True)
        if not len(scores):
            return scores
        index, _, _ = openset.top_two(scores, classes)
        names = [classes[i] if i >= 0 else None for i in index]
        refused = ~self.agrees(vectors, names) & (index >= 0)
        scores[refused] = -1.0
        return scores

    def apply_to_faces(
        self, scores: np.ndarray, rgb: np.ndarray, faces: Sequence[Face], classes: list[str]
    ) -> np.ndarray:
        """:meth:`apply` with the faces of a photo embedded here by the gate's embedder."""
        if not len(faces):
            return np.asarray(scores)
        from facelab.embedders import get_embedder

        return self.apply(scores, get_embedder(self.embedder).embed(rgb, list(faces)), classes)

    def apply_to_items(
        self, scores: np.ndarray, workspace: Path, items: Sequence[SplitItem], classes: list[str]
    ) -> np.ndarray:
        """:meth:`apply` with workspace faces, by their stored (or computed once) embeddings."""
        if not len(items):
            return np.asarray(scores)
        from facelab.embed_track import item_vectors

        return self.apply(scores, item_vectors(workspace, list(items), self.embedder), classes)

    def save(self, run_dir: Path, calibration: openset.Calibration) -> None:
        from facelab.imageio import write_bytes_atomic, write_text_atomic

        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            classes=np.array(self.classes),
            centers=self.centers.astype(np.float32),
            threshold=np.array(self.threshold),
            embedder=np.array(self.embedder),
        )
        write_bytes_atomic(buffer.getvalue(), run_dir / GATE_FILE)
        write_text_atomic(json.dumps(calibration.to_json(), indent=2) + "\n", run_dir / "gate.json")

    @classmethod
    def load(cls, run_dir: Path) -> EmbeddingGate | None:
        path = Path(run_dir) / GATE_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(
                embedder=str(data["embedder"]),
                classes=[str(c) for c in data["classes"]],
                centers=data["centers"].astype(np.float64),
                threshold=float(data["threshold"]),
            )


def fit_gate(
    ws: Workspace,
    classes: list[str],
    *,
    faces: FaceSelection | str = FaceSelection.RESOLVED,
    strangers: Path | None = None,
    target_fpir: float = openset.DEFAULT_TARGET_FPIR,
    embedder: str | None = None,
) -> tuple[EmbeddingGate, openset.Calibration]:
    """The gate of a CNN run that names ``classes``: prototypes of the train split's faces of those
    people, threshold calibrated on the val split and impostor evidence. Raises
    :class:`facelab.embedders.EmbedderUnavailable` when no embedder is installed (the run then stays
    closed-set, and recognition says so)."""
    from facelab.embed_track import PrototypeHead, bystander_vectors, calibrate_vectors, stranger_vectors
    from facelab.embedders import DEFAULT_EMBEDDER, embed_workspace, get_embedder

    embedder = embedder or DEFAULT_EMBEDDER
    get_embedder(embedder)  # fails early and clearly when it is not installed
    embed_workspace(ws, embedder)
    vectors = ws.embeddings(embedder)
    people = [c for c in classes if c != OTHERS]
    index = {name: i for i, name in enumerate(people)}

    def xy(items: list[SplitItem]) -> tuple[np.ndarray, np.ndarray]:
        usable = [i for i in items if i.person in index and i.face_id in vectors]
        if not usable:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        return np.stack([vectors[i.face_id] for i in usable]), np.array([index[i.person] for i in usable])

    x_train, y_train = xy(load_items(ws, "train", faces))
    x_val, y_val = xy(load_items(ws, "val", faces))
    present = sorted(set(y_train.tolist()))
    if len(present) != len(people):
        missing = [p for i, p in enumerate(people) if i not in present]
        raise ValueError(f"no embedded training face of {', '.join(missing)}: cannot confirm their names")
    head = PrototypeHead()
    head.fit(x_train, y_train, len(people))
    if len(x_val):
        best, top, margin = openset.top_two(head.scores(x_val), people)
        correct = best == y_val
    else:
        top = margin = np.zeros(0)
        correct = np.zeros(0, dtype=bool)
    cache = ws.root / ".facelab" / "cache"
    calibration = calibrate_vectors(
        "prototype",
        {},
        head,
        np.vstack([x_train, x_val]) if len(x_val) else x_train,
        np.concatenate([y_train, y_val]),
        people,
        (top, correct, margin),
        embedder=embedder,
        bystanders=bystander_vectors(ws, embedder),
        strangers=stranger_vectors(Path(strangers), "calibration", embedder, cache) if strangers else None,
        target_fpir=target_fpir,
    )
    assert calibration.threshold is not None  # the prototype head always has a measured default
    return EmbeddingGate(embedder, people, head.centers, float(calibration.threshold)), calibration
