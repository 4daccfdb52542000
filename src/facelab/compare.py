"""The seed's comparison tables, generalised: one row per run, both tracks alike."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from facelab.imageio import write_text_atomic
from facelab.runs import read_summary

COLUMNS = (
    "run",
    "track",
    "backbone",
    "strategy",
    "augment",
    "weights",
    "faces",
    "params_total",
    "params_trainable",
    "depth",
    "size_mb",
    "train_seconds",
    "ms_per_face",
    "epochs",
    "train_accuracy",
    "val_accuracy",
    "val_fnir",
    "test_accuracy",
    "photo_accuracy",
    "fpir",
    "fnir",
)


def finished_runs(candidates: list[Path]) -> tuple[list[Path], list[str]]:
    """The candidates that are run folders with a readable ``summary.json``, and a note per other one.

    A training killed before its first checkpoint leaves a folder without a summary; a shell
    pattern like ``WS/runs/*`` also matches the comparison tables ``auto`` writes there. Neither
    should stop a comparison of the runs that did finish.
    """
    usable: list[Path] = []
    notes: list[str] = []
    for path in map(Path, candidates):
        if not path.is_dir():
            notes.append(f"{path}: not a run folder")
        elif not (path / "summary.json").is_file():
            notes.append(f"{path}: unfinished run (no summary.json: stopped before its first checkpoint)")
        else:
            try:
                read_summary(path)
            except (OSError, ValueError) as exc:
                notes.append(f"{path}: unreadable summary.json ({exc})")
                continue
            usable.append(path)
    return usable, notes


def run_row(run_dir: Path) -> dict:
    """One table row from a run's ``summary.json`` and, if evaluated, ``metrics.json``."""
    summary = read_summary(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    openset_path = run_dir / "openset.json"
    openset = json.loads(openset_path.read_text()) if openset_path.exists() else {}
    size = summary.get("size_bytes")
    return {
        "run": run_dir.name,
        "track": summary.get("track", "transfer"),
        "backbone": summary.get("backbone"),
        "strategy": summary.get("strategy"),
        "augment": summary.get("augment"),
        "weights": summary.get("weights"),
        "faces": f"{summary.get('faces')} + others" if summary.get("include_others") else summary.get("faces"),
        "params_total": summary.get("params_total"),
        "params_trainable": summary.get("params_trainable"),
        # Layers with weights (convolutions and fully connected), the network's depth.
        "depth": summary.get("depth"),
        "size_mb": None if size is None else round(size / 1e6, 2),
        # Naming one face found in a photo (crop/embed + model; no detection), from evaluate.
        "ms_per_face": metrics.get("ms_per_face"),
        "train_seconds": summary.get("train_seconds"),
        "epochs": summary.get("epochs_run", summary.get("best_epoch")),
        "train_accuracy": summary.get("train_accuracy"),
        "val_accuracy": summary.get("val_accuracy"),
        # Known validation faces not given their own name at the run's unknown threshold.
        "val_fnir": openset.get("fnir"),
        "test_accuracy": metrics.get("accuracy") if metrics.get("split") == "test" else None,
        "photo_accuracy": metrics.get("photo_accuracy") if metrics.get("split") == "test" else None,
        "fpir": metrics.get("fpir"),
        "fnir": metrics.get("fnir"),
    }


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def compare_runs(run_dirs: list[Path], out: Path, *, sort: bool = True) -> list[dict]:
    """Write ``out`` (.md), the same table as .csv beside it, and a bar chart (.png); return the rows.

    Rows are sorted by validation accuracy, best first (``sort=False`` keeps the given order, e.g.
    ``auto``'s ranking): the test column is for reading, never for choosing.
    """
    from facelab import plots

    rows = [run_row(Path(d)) for d in run_dirs]
    if sort:
        rows.sort(key=lambda r: (-(r["val_accuracy"] or 0), r["params_total"] or 0))
    out = Path(out)
    write_text_atomic(to_markdown(rows), out.with_suffix(".md"))
    write_text_atomic(to_csv(rows), out.with_suffix(".csv"))
    plots.comparison_chart(rows, out.with_suffix(".png"))
    return rows
