"""Evaluate a run on a split: closed-set, photo-level and open-set figures, pictures and a report.

Three views of "how good is it", because each answers a different question:

* crop level (``accuracy``): of the faces that are the person, how many get the right name —
  the seed's test accuracy;
* photo level (``photo_accuracy``, ``any_face_recall``): of the test photos of a person, on how
  many is the person named on the face chosen as theirs / on any face. A photo whose face was
  never found counts as a miss, as it does for a person looking at the result;
* open set (``threshold``, ``fpir``, ``fnir``): how often a stranger gets a name, and how often a
  known person is rejected or misnamed, at the run's threshold.

The test split is used only here, never for choosing anything.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.imageio import write_text_atomic
from facelab.items import OTHERS, FaceSelection, SplitItem, load_items, people
from facelab.runs import Model, load_model, read_summary
from facelab.store import Workspace

UNKNOWN = "unknown"


def closed_set_metrics(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict:
    """Accuracy, per-person precision/recall/F1 and the confusion matrix (rows true, columns predicted).

    ``classes`` fixes the matrix order; predictions outside it (e.g. ``unknown``) count as errors
    and get their own column.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(classes)
    extra = sorted({p for p in y_pred if p not in labels})
    labels_all = labels + extra
    if not y_true:
        return {
            "accuracy": float("nan"),
            "per_class": {},
            "confusion_matrix": [],
            "classes": labels_all,
            "n_images": 0,
        }
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    with warnings.catch_warnings():
        # A one-person model ("me / not me") with every test face named: a 1×1 matrix is right.
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        matrix = confusion_matrix(y_true, y_pred, labels=labels_all)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": labels_all,
        "n_images": len(y_true),
    }


def decide(scores: np.ndarray, classes: list[str], threshold: float | None) -> list[str]:
    """Names for rows of scores: the best person, or ``unknown`` under the threshold or where the
    bystander class (``--include-others``) wins."""
    from facelab.openset import decide as open_decide

    return open_decide(scores, threshold, classes=classes).names(classes, UNKNOWN)


@dataclass
class PhotoOutcome:
    photo: Path
    person: str
    n_faces: int
    chosen_name: str | None
    named_on_any: bool
    largest_name: str | None = None
    named_on_any_open: bool = False


def photo_level(
    ws: Workspace, model: Model, split: str, threshold: float | None = None, use_roles: bool = True
) -> tuple[dict, list[PhotoOutcome]]:
    """Judge whole photos: is the photo's person named on their face / on any face of it?

    The face "chosen as theirs" is the one identity resolution marked ``person`` (``use_roles``),
    else the largest face — the usual rule of tools without identity resolution.
    """
    photos = ws.query(
        "SELECT id, path, person, status FROM photos WHERE split = ? AND status IN ('ok', 'no_face')",
        (split,),
    )
    items = load_items(ws, split, FaceSelection.ALL)
    by_photo: dict[int, list[SplitItem]] = defaultdict(list)
    for item in items:
        by_photo[item.photo_id].append(item)
    names: list[str] = []
    open_names: list[str] = []
    if items:
        scores = model.predict_items(items)
        names = decide(scores, model.classes, threshold)
        open_names = decide(scores, model.classes, model.threshold) if model.threshold is not None else []
    name_of = {item.face_id: name for item, name in zip(items, names, strict=True)}
    open_name_of = {item.face_id: name for item, name in zip(items, open_names, strict=False)}
    outcomes: list[PhotoOutcome] = []
    for photo in photos:
        faces = by_photo.get(photo["id"], [])
        person = photo["person"]
        by_role = [f for f in faces if f.role == "person"] if use_roles else []
        chosen = by_role or sorted(faces, key=lambda f: f.face.box.area, reverse=True)[:1]
        largest = max(faces, key=lambda f: f.face.box.area) if faces else None
        outcomes.append(
            PhotoOutcome(
                photo=Path(photo["path"]),
                person=person,
                n_faces=len(faces),
                chosen_name=name_of[chosen[0].face_id] if chosen else None,
                named_on_any=any(name_of[f.face_id] == person for f in faces),
                largest_name=name_of[largest.face_id] if largest else None,
                named_on_any_open=any(open_name_of.get(f.face_id) == person for f in faces),
            )
        )

    def share(selected: list[PhotoOutcome], hit) -> float:
        return float(np.mean([hit(o) for o in selected])) if selected else float("nan")

    single = [o for o in outcomes if o.n_faces == 1]
    multi = [o for o in outcomes if o.n_faces > 1]
    right = lambda o: o.chosen_name == o.person  # noqa: E731
    metrics = {
        "photo_accuracy": share(outcomes, right),
        "any_face_recall": share(outcomes, lambda o: o.named_on_any),
        # The peer's rule, which needs no folder label to pick the face: the largest face's name.
        "photo_accuracy_largest_face": share(outcomes, lambda o: o.largest_name == o.person),
        "n_photos": len(outcomes),
        "photos_single_face": len(single),
        "photos_multi_face": len(multi),
        "photos_no_face": sum(o.n_faces == 0 for o in outcomes),
        "photo_accuracy_single_face": share(single, right),
        "photo_accuracy_multi_face": share(multi, right),
    }
    if model.threshold is not None:
        # With "unknown" in play: the person is named on some face at the run's threshold.
        metrics["any_face_recall_open"] = share(outcomes, lambda o: o.named_on_any_open)
    return metrics, outcomes


def bystander_metrics(ws: Workspace, model: Model, split: str) -> dict:
    """How often the other people in the split's photos get one of our names: an FPIR measured on the
    user's own photos (same cameras, same light), closed set and at the run's threshold.

    The faces are the bystanders who are none of the user's people
    (:func:`facelab.identity.stranger_bystanders`); ``n_bystanders`` is 0 when there are none.
    """
    others = [item for item in load_items(ws, split, include_others=True) if item.person == OTHERS]
    if not others:
        return {"n_bystanders": 0}
    scores = model.predict_items(others)
    names = decide(scores, model.classes, None)
    out = {
        "n_bystanders": len(others),
        "bystanders_named_closed_set": float(np.mean([n != UNKNOWN for n in names])),
    }
    if model.threshold is not None:
        open_names = decide(scores, model.classes, model.threshold)
        out["bystanders_named"] = float(np.mean([n != UNKNOWN for n in open_names]))
    return out


def evaluate_run(
    run_dir: Path | str,
    split: str = "test",
    strangers: Path | None = None,
    workspace: Path | None = None,
) -> dict:
    """Evaluate a run folder on ``split``; writes ``metrics.json``, plots and ``report.md`` into it.

    Returns the metrics as ``metrics.json`` holds them: a figure with nothing to measure (e.g. FPIR
    without strangers) is None.
    """
    from facelab import plots

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    ws_root = Path(workspace or summary.get("workspace") or run_dir.parent.parent)
    started = time.perf_counter()
    model = load_model(run_dir)
    with Workspace(ws_root, create=False) as ws:
        faces = summary.get("faces", FaceSelection.RESOLVED.value)
        items = load_items(ws, split, faces)
        scores = model.predict_items(items) if items else np.zeros((0, len(model.classes)))
        y_true = [item.person for item in items]
        y_pred = decide(scores, model.classes, None) if items else []
        metrics = {"run": run_dir.name, "split": split, **closed_set_metrics(y_true, y_pred, people(model.classes))}
        photo_metrics, outcomes = photo_level(ws, model, split, use_roles=faces != FaceSelection.ALL.value)
        metrics.update(photo_metrics)
        metrics.update(bystander_metrics(ws, model, split))
        if model.threshold is not None or strangers is not None:
            metrics.update(_open_set(model, scores, y_true, strangers, run_dir, plots))
        metrics["ms_per_face"] = inference_ms_per_face(model, items)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["weights"] = summary.get("weights")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(_jsonable(metrics), indent=2) + "\n", run_dir / "metrics.json")
    if metrics["n_images"]:
        plots.confusion_matrix_plot(
            np.array(metrics["confusion_matrix"]), metrics["classes"], run_dir / "confusion_matrix.png"
        )
        errors = [
            (item.crop_path, item.person, pred, float(row.max()))
            for item, pred, row in zip(items, y_pred, scores, strict=True)
            if pred != item.person
        ]
        plots.error_gallery(errors, run_dir / "errors.png")
        # The answers recognition gives: below the run's threshold a face is unknown.
        threshold = model.threshold
        samples = [
            (
                item.crop_path,
                item.person,
                "unknown" if threshold is not None and float(row.max()) < threshold else pred,
                float(row.max()),
            )
            for item, pred, row in zip(items, y_pred, scores, strict=True)
        ]
        plots.sample_gallery(samples, run_dir / "samples.png")
    write_text_atomic(report_markdown(summary, metrics, outcomes), run_dir / "report.md")
    return _jsonable(metrics)  # what metrics.json holds: NaN (nothing to measure) as None


def inference_ms_per_face(model: Model, items: list, n: int = 12) -> float | None:
    """Median milliseconds to name one face found in a photo (crop or embed it, run the model; not
    the detector), over up to ``n`` faces: what recognition pays per face. The first face warms
    the model up and is not counted. None when no photo can be read."""
    from facelab.imageio import ImageError, load_rgb

    times = []
    for item in items[: n + 1]:
        try:
            rgb = load_rgb(item.photo_path)
        except (ImageError, OSError):
            continue
        started = time.perf_counter()
        model.predict_faces(rgb, [item.face])
        times.append(time.perf_counter() - started)
    times = times[1:] if len(times) > 1 else times
    return round(1000 * float(np.median(times)), 2) if times else None


def _open_set(
    model: Model, scores: np.ndarray, y_true: list[str], strangers: Path | None, run_dir: Path, plots
) -> dict:
    from facelab.openset import evaluate_open_set, named_right, open_scores, stranger_scores, top_two

    index, _, _ = top_two(scores, model.classes) if len(scores) else (np.zeros(0, int),) * 3
    correct = named_right(index, model.classes, y_true)
    genuine = open_scores(scores, model.classes) if len(scores) else np.zeros(0)
    impostor = stranger_scores(model, strangers, part="evaluation") if strangers else np.zeros(0)
    threshold = model.threshold
    result = evaluate_open_set(genuine, correct, impostor, threshold)
    if len(impostor):
        plots.det_plot(result, run_dir / "det.png")
    return {key: result[key] for key in ("threshold", "fpir", "fnir", "n_strangers", "score_kind") if key in result}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.1%}"


def report_markdown(summary: dict, metrics: dict, outcomes: list[PhotoOutcome]) -> str:
    """A short report a person can read: headline figures, weakest people, pictures, misses."""
    lines = [
        f"# {metrics['run']} — {metrics['split']} split",
        "",
        f"- model: {summary.get('track', 'transfer')} / {summary.get('backbone')} / {summary.get('strategy')} "
        f"/ {summary.get('augment')} (weights: {summary.get('weights')})",
        f"- face accuracy: **{_pct(metrics['accuracy'])}** on {metrics['n_images']} faces",
        f"- photo accuracy: **{_pct(metrics.get('photo_accuracy'))}** on {metrics.get('n_photos', 0)} photos "
        f"(single-face {_pct(metrics.get('photo_accuracy_single_face'))}, "
        f"multi-face {_pct(metrics.get('photo_accuracy_multi_face'))}, "
        f"{metrics.get('photos_no_face', 0)} without a detected face)",
        f"- person named on some face of the photo: {_pct(metrics.get('any_face_recall'))}",
    ]
    if "fpir" in metrics:
        lines.append(
            f"- unknown threshold {metrics.get('threshold')}: strangers given a name (FPIR) "
            f"{_pct(metrics.get('fpir'))}, known people rejected or misnamed (FNIR) {_pct(metrics.get('fnir'))}"
        )
    if metrics.get("n_bystanders"):
        named = metrics.get("bystanders_named", metrics.get("bystanders_named_closed_set"))
        lines.append(
            f"- other people in the photos (bystanders, {metrics['n_bystanders']} faces) given one of our names: "
            f"{_pct(named)}" + ("" if "bystanders_named" in metrics else " (no unknown threshold)")
        )
    per_class = metrics.get("per_class", {})
    if per_class:
        lines += ["", "| person | precision | recall | F1 | faces |", "|---|---:|---:|---:|---:|"]
        for name, row in sorted(per_class.items(), key=lambda kv: kv[1]["f1"]):
            lines.append(
                f"| {name} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} | {row['support']} |"
            )
    lines += [
        "",
        "Pictures: `confusion_matrix.png`, `errors.png` (misnamed faces), `samples.png` (random test faces "
        "with their answers)",
    ]
    missed = [o for o in outcomes if o.chosen_name != o.person]
    if missed:
        lines += ["", "## Photos not named right", ""]
        for o in missed[:50]:
            said = o.chosen_name or "no face found"
            lines.append(f"- `{o.photo}` ({o.person}, {o.n_faces} faces): {said}")
    return "\n".join(lines) + "\n"
