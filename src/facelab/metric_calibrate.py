"""The unknown threshold of a metric run: the embedding track's evidence, scored by the run's own network.

As for embedding runs (:mod:`facelab.impostors`), each impostor is scored against the run's gallery
of people, and the threshold names at most ``target_fpir`` of strangers:

* ``people`` — each person left out of the gallery in turn, all their faces playing strangers to
  the others. The network was *trained* to tell exactly these people apart, so they sit further
  from each other than a new stranger will from them: this evidence is optimistic for a metric
  run (its words in ``openset.json`` say so), and a strangers folder is the honest evidence.
* ``bystanders`` — faces in the user's photos who match none of the people: those the run was
  trained with (pushed away from every person in training: optimistic too, and said so) and those
  of the validation photos (never trained on).
* ``strangers`` — the calibration half of a strangers folder when given: the largest face of each
  photo, cropped and embedded by the run's network.
* ``reference`` — the reference strangers shipped with facelab are dlib embeddings, not photos:
  a CNN embedding cannot score them, so they are left out, and ``openset.json``'s evidence says so.

With too few impostors for the target (99 for FPIR 1%), the threshold sits just above the
highest-scoring impostor seen (none of them named), and the calibration's warning says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facelab import impostors, openset
from facelab.imageio import write_text_atomic
from facelab.items import FaceSelection, load_items
from facelab.metric_net import HEAD_PARAMS

if TYPE_CHECKING:
    from facelab.metric_model import MetricModel
    from facelab.store import Workspace

REFERENCE_NOTE = (
    "reference strangers shipped with facelab: not used — they are dlib embeddings (no photos), "
    "and this run's CNN embedding cannot score them"
)
PEOPLE_NOTE = (
    " — this network was trained to tell these very people apart, so they are further from each other "
    "than new strangers will be from them: optimistic evidence"
)
BYSTANDERS_NOTE = " — {} of them from the training photos, pushed away from your people in training: optimistic"
FLOOR_REASON = "lowest similarity above every impostor seen (none of them named)"


def stranger_embeddings(model: MetricModel, folder: Path, part: str = "calibration") -> np.ndarray:
    """Embeddings of the largest face of each photo of a strangers folder's ``part`` (photos that
    cannot be read or show no face are skipped)."""
    vectors = [model.embed_faces(rgb, [face])[0] for rgb, face in openset.stranger_largest_faces(folder, part)]
    return np.stack(vectors) if vectors else np.zeros((0, model.params.embed_dim), np.float32)


def validation_bystanders(ws: Workspace) -> list:
    """The bystanders of the validation photos who match none of the people (the training photos'
    are in the run's ``head.npz``, embedded when it was trained)."""
    from facelab.identity import stranger_bystanders

    usable = stranger_bystanders(ws)
    return [i for i in load_items(ws, "val", FaceSelection.ALL) if i.face_id in usable]


def calibrate_metric_run(
    ws: Workspace,
    run_dir: Path,
    *,
    strangers: Path | None = None,
    target_fpir: float = openset.DEFAULT_TARGET_FPIR,
    bystanders: bool = True,
) -> dict:
    """Calibrate ``run_dir``'s unknown threshold (see the module docstring); writes ``openset.json`` and
    the threshold into ``summary.json``. Returns the calibration as ``openset.json`` holds it.
    ``bystanders``: use the workspace's bystanders as evidence (``facelab.auto.calibrate_run`` turns
    them off when a strangers folder is given, as for embedding runs)."""
    from facelab.embed_track import build_head
    from facelab.metric_model import MetricModel
    from facelab.runs import read_summary

    run_dir = Path(run_dir)
    model = MetricModel(run_dir)
    summary = read_summary(run_dir)
    classes = model.classes
    index = {name: i for i, name in enumerate(classes)}
    val = [i for i in load_items(ws, "val", summary.get("faces", FaceSelection.RESOLVED)) if i.person in index]
    x_val = model.embed_items(val)
    y_val = np.array([index[i.person] for i in val], dtype=np.int64)
    if len(val):
        best, top, margin = openset.top_two(model.scores(x_val), classes)
        correct = openset.named_right(best, classes, [i.person for i in val])
    else:
        top = margin = np.zeros(0)
        correct = np.zeros(0, dtype=bool)

    def fit_and_score(x: np.ndarray, y: np.ndarray, kept: list[str]) -> impostors.Scorer:
        head = build_head(model.params.head, HEAD_PARAMS)
        head.fit(x, y, len(kept))
        return lambda vectors: openset.open_scores(head.scores(vectors), kept)

    def score(vectors: np.ndarray) -> np.ndarray:
        return openset.open_scores(model.scores(vectors), classes) if len(vectors) else np.zeros(0)

    n_people = len(classes)
    sources = []
    x_all = np.vstack([model.x, x_val]) if len(x_val) else model.x
    own = impostors.people_evidence(
        fit_and_score, x_all, np.concatenate([model.y, y_val]), classes, list(range(n_people))
    )
    if own is not None:
        sources.append(own)
    if bystanders:
        seen_by = np.vstack([model.x_bystanders, model.embed_items(validation_bystanders(ws))])
        if len(seen_by):
            sources.append(impostors.Evidence("bystanders", score(seen_by), n_people))
    if strangers is not None:
        sources.append(impostors.Evidence("strangers", score(stranger_embeddings(model, Path(strangers))), n_people))
    seen = np.concatenate([s.scores[np.isfinite(s.scores)] for s in sources]) if sources else np.zeros(0)
    floor = float(np.nextafter(seen.max(), np.inf)) if len(seen) else None
    calibration = impostors.calibrate_gallery(
        sources,
        n_people,
        top,
        correct,
        target_fpir,
        score_kind=model.score_kind,
        margins=margin,
        floor=floor,
        floor_reason=FLOOR_REASON,
    )
    payload = calibration.to_json()
    notes = {"people": PEOPLE_NOTE, "bystanders": BYSTANDERS_NOTE.format(len(model.x_bystanders))}
    for entry in payload.get("evidence") or []:
        entry["words"] += notes.get(entry["source"], "")
    payload["evidence"] = [
        *(payload.get("evidence") or []),
        {
            "source": "reference",
            "words": REFERENCE_NOTE,
            "n": 0,
            "faced": n_people,
            "fpir_at_threshold": None,
            "used": False,
        },
    ]
    write_text_atomic(json.dumps(payload, indent=2) + "\n", run_dir / "openset.json")
    summary.update({"threshold": payload["threshold"], "target_fpir": float(target_fpir)})
    write_text_atomic(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
    # The run's own threshold let 17-26% of unseen strangers through without a strangers folder
    # (docs/benchmarks_metric.md): people left out of a network trained to tell exactly them apart
    # are poor stand-ins for strangers. So a metric run's name also needs the face embedding's
    # agreement, as a CNN classifier's does (facelab.gate), calibrated on the shipped reference strangers.
    from facelab.transfer import write_gate

    write_gate(ws, run_dir, strangers)
    return payload
