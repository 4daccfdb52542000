"""How many photos per person does each method need? Accuracy and "unknown" against training photos.

For each shared set (celeb5, sports5) the workspace of bench_accuracy.py is reused (built with
the default detector, identities resolved, split 60/20/20 by photo, seed 0; it is built here if
missing). For N photos per person, N of each person's *train* photos that hold the person's face
(as identity resolution decided) are drawn at random (seed s);
the rest of the train split is set aside, val and test stay as they are. Each method trains on
the identity-resolved faces of those photos, gets its unknown threshold from the calibration half
of ``strangers/`` (target FPIR 1%), and is tested on the whole test split and the evaluation half
of the strangers. Several draws per N; the table gives the mean and the range over draws.

Every draw runs in a copy of the workspace database (the crops and caches are linked, not copied),
so the bench workspace itself is never changed. Writes docs/benchmarks_fewshot.md.

    .venv/bin/python bench/bench_fewshot.py [--sets celeb5 sports5] [--shots 1 2 3 5 10] [--draws 3]
        [--quick]   (embedding track only)

About 15 minutes on 2 CPU cores with the defaults (the CNN runs dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from facelab.auto import calibrate_run
from facelab.evaluate import evaluate_run
from facelab.store import Workspace
from facelab.study import draw_workspace
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))


@dataclass(frozen=True)
class Method:
    label: str
    track: str
    option: str  # head (embedding) or backbone (transfer, feature extraction with rotation)


METHODS = (
    Method("dlib embedding + prototype", "embedding", "prototype"),
    Method("dlib embedding + kNN", "embedding", "knn"),
    Method("mobilenet_v2 feature-extract, rotation", "transfer", "mobilenet_v2"),
)


def bench_workspace(name: str) -> Path:
    """bench_accuracy.py's workspace for ``name`` (built here the same way if it is missing)."""
    ws_dir = WORK / name
    if not (ws_dir / ".facelab" / "facelab.db").exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_accuracy import workspace_for

        workspace_for(name)
    return ws_dir


def train_and_test(ws_dir: Path, method: Method, strangers: Path) -> dict:
    started = time.perf_counter()
    with Workspace(ws_dir, create=False) as ws:
        if method.track == "embedding":
            from facelab.embed_track import train_embedding_run

            run = Path(train_embedding_run(ws, head=method.option, name="fewshot", strangers=strangers))
        else:
            from facelab.config import TrainConfig
            from facelab.transfer import NullReporter, train_workspace

            config = TrainConfig(backbone=method.option, strategy="feature-extract", augment="rotation")
            run = train_workspace(ws, config, name="fewshot", reporter=NullReporter()).run_dir
            calibrate_run(ws, run, strangers, 0.01, bystanders=False)
    seconds = time.perf_counter() - started
    metrics = evaluate_run(run, "test", strangers=strangers, workspace=ws_dir)
    return {
        "photo": metrics.get("photo_accuracy"),
        "largest": metrics.get("photo_accuracy_largest_face"),
        "faces": metrics.get("accuracy"),
        "fnir": metrics.get("fnir"),
        "fpir": metrics.get("fpir"),
        "n_photos": metrics.get("n_photos"),
        "seconds": seconds,
    }


def summarize(values: list[float | None]) -> str:
    """Mean and range over draws, in percent."""
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    mean = statistics.fmean(found)
    if len(found) == 1 or max(found) - min(found) < 0.0005:
        return f"{mean:.1%}"
    return f"{mean:.1%} ({min(found):.0%}–{max(found):.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["celeb5", "sports5"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 3, 5, 10])
    parser.add_argument("--draws", type=int, default=3, help="random draws of the training photos per N")
    parser.add_argument("--quick", action="store_true", help="embedding track only")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_fewshot.md")
    args = parser.parse_args()
    strangers = DATA / "strangers"
    methods = [m for m in METHODS if not args.quick or m.track == "embedding"]
    sections = []
    for name in args.sets:
        source = bench_workspace(name)
        with Workspace(source, create=False) as ws:
            full = {
                r["person"]: r["n"]
                for r in ws.query(
                    "SELECT p.person, COUNT(DISTINCT p.id) AS n FROM photos p JOIN faces f ON f.photo_id = p.id "
                    "WHERE p.split = 'train' AND p.status = 'ok' AND f.role = 'person' GROUP BY p.person"
                )
            }
        shots = [n for n in args.shots if n < max(full.values())] + ["all"]
        all_label = f"all ({min(full.values())}–{max(full.values())})"
        rows = []
        n_photos = 0
        for method in methods:
            for n in shots:
                results = []
                draws = 1 if n == "all" else args.draws
                for seed in range(draws):
                    with tempfile.TemporaryDirectory(prefix="facelab-fewshot-") as tmp:
                        ws_dir = Path(tmp) / "ws"
                        draw_workspace(source, ws_dir, None if n == "all" else n, seed)
                        result = train_and_test(ws_dir, method, strangers)
                    n_photos = result["n_photos"] or n_photos
                    results.append(result)
                    print(name, method.label, n, seed, json.dumps(result), flush=True)
                rows.append(
                    f"| {method.label} | {n if n != 'all' else all_label} "
                    f"| **{summarize([r['photo'] for r in results])}** | {summarize([r['largest'] for r in results])} "
                    f"| {summarize([r['fnir'] for r in results])} | {summarize([r['fpir'] for r in results])} "
                    f"| {statistics.fmean(r['seconds'] for r in results):.0f} |"
                )
        sections.append(
            f"### {name} ({n_photos} test photos)\n\n"
            "| method | train photos per person | test photos named | by largest face | FNIR | FPIR | train s |\n"
            "|---|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
        )
    text = (
        "## How many photos per person?\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_line()} by `bench/bench_fewshot.py` "
        f"({args.draws} random draws of the training photos per row; mean, and the range over draws in "
        "brackets). Same split as the accuracy section: only the number of *training* photos per person "
        "changes; validation, test and the strangers stay the same. *test photos named*: the photo's "
        "person is named on the face identity resolution chose (closed set); *by largest face*: the "
        "largest face's name (no label needed); FNIR/FPIR at the threshold calibrated for FPIR 1% on "
        "the strangers' calibration half, measured on their evaluation half. Identity resolution ran once "
        "on each whole folder (as in a user's library, where all the photos are there from the start), so "
        "with one training photo its face is the one the whole folder agrees on.\n\n" + "\n".join(sections)
    )
    args.out.write_text(text)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
