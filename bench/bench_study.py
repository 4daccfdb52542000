"""The seeds' data study on the ten shared people: `facelab study` (facelab.study) run on a workspace of
celeb5 + sports5 together, written as a table with the machine named to docs/benchmarks_study.md.

    .venv/bin/python bench/bench_study.py [--workspace WS] [--methods prototype mobilenet_v2]
        [--shots 1 3 5 10] [--offline-aug 0 3] [--draws 2]

WS: a built and split workspace of the ten people (bench_unknown.py builds one under
$FACELAB_BENCH_DIR/all10 if missing). The study runs in throw-away copies; WS is not changed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from facelab.store import Workspace
from facelab.study import StudyMethod, mean_rows, run_study
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=WORK / "all10")
    parser.add_argument("--methods", nargs="+", default=["prototype", "mobilenet_v2"])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 3, 5, 10])
    parser.add_argument("--offline-aug", nargs="+", type=int, default=[0])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_study.md")
    args = parser.parse_args()
    if not (args.workspace / "dataset" / "manifest.csv").is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_unknown import ensure_workspace

        ensure_workspace(args.workspace)
    started = time.perf_counter()
    with Workspace(args.workspace, create=False) as ws:
        rows = run_study(
            ws,
            [StudyMethod.parse(m) for m in args.methods],
            [*args.shots, None],
            args.offline_aug,
            args.draws,
            progress=lambda done, total, item: print(f"{done}/{total} {item}", flush=True),
        )
    lines = [
        "## Data size against quality: `facelab study`",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/bench_study.py` on {machine_line()}; "
        f"{time.perf_counter() - started:.0f} s. The ten shared people (celeb5 + sports5 folders together), split "
        "60/20/20 by photo; for each count, that many of each person's training photos (random, "
        f"{args.draws} draws; 'all' once), validation and test unchanged. Accuracy: test faces named "
        "right (closed set); FNIR: test faces not given their own name at the run's calibrated unknown "
        "threshold (no strangers folder: facelab's reference strangers, the people left out in turn, "
        "bystanders); train s: training and calibration. Mean over draws.",
        "",
        "| method | photos per person | offline ×N | test accuracy | FNIR | train s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in mean_rows(rows):
        lines.append(
            f"| {row['method']} | {row['photos_per_person']} | {row['offline_aug']} | {pct(row['accuracy'])} "
            f"| {pct(row['fnir'])} | {row['train_seconds']:.1f} |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
