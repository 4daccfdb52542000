""" "Me / not me": one-person models, and the default unknown threshold when there are no strangers.

A model of one person has nobody to tell them apart from, so its only decision is "unknown": with
no strangers folder (and no bystanders) the embedding track falls back to a measured default
distance per head (``facelab.embedders.EmbedderInfo.unknown_distance``). This measures it: for each
person of celeb5 and sports5, a prototype and a kNN model of that person alone (their identity-
resolved train faces, bench_accuracy.py's workspaces), scored against all 300 LFW strangers and the
person's own test faces. Per person: FPIR and FNIR at the default distances and at a few others,
and the distance at which 1% of the strangers get the name. Writes docs/benchmarks_one_person.md.

    .venv/bin/python bench/bench_one_person.py [--sets celeb5 sports5]

Run bench_accuracy.py first (it builds the workspaces); under a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from facelab import openset
from facelab.embed_track import build_head, stranger_vectors
from facelab.embedders import DEFAULT_EMBEDDER, embedder_info
from facelab.items import load_items
from facelab.store import Workspace
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))
HEADS = ("prototype", "knn")
DISTANCES = (0.50, 0.55, 0.57, 0.60)


def measure(name: str) -> tuple[list[str], dict[str, list[float]]]:
    ws_dir = WORK / name
    with Workspace(ws_dir, create=False) as ws:
        train, test = load_items(ws, "train"), load_items(ws, "test")
        vectors = ws.embeddings(DEFAULT_EMBEDDER)
    strangers = stranger_vectors(DATA / "strangers", "all", DEFAULT_EMBEDDER, ws_dir / ".facelab" / "cache")
    defaults = embedder_info(DEFAULT_EMBEDDER).unknown_distance
    rows, at_one_percent = [], {head: [] for head in HEADS}
    for person in sorted({item.person for item in train}):
        own_train = np.stack([vectors[i.face_id] for i in train if i.person == person and i.face_id in vectors])
        own_test = np.stack([vectors[i.face_id] for i in test if i.person == person and i.face_id in vectors])
        for head_name in HEADS:
            head = build_head(head_name, {})
            head.fit(own_train, np.zeros(len(own_train), dtype=np.int64), 1)
            genuine, others = head.scores(own_test)[:, 0], head.scores(strangers)[:, 0]
            cells = []
            for distance in DISTANCES:
                threshold = 1.0 - distance
                mark = "**" if distance == defaults.get(head_name) else ""
                cells.append(f"{mark}{np.mean(others >= threshold):.1%} / {np.mean(genuine < threshold):.0%}{mark}")
            one_percent = 1.0 - openset.threshold_for_fpir(others, 0.01)
            at_one_percent[head_name].append(one_percent)
            rows.append(
                f"| {person} | {head_name} | {len(own_train)} | {len(own_test)} | "
                + " | ".join(cells)
                + f" | {one_percent:.3f} |"
            )
    return rows, at_one_percent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["celeb5", "sports5"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_one_person.md")
    args = parser.parse_args()
    defaults = embedder_info(DEFAULT_EMBEDDER).unknown_distance
    rows: list[str] = []
    pooled: dict[str, list[float]] = {head: [] for head in HEADS}
    for name in args.sets:
        set_rows, at_one = measure(name)
        rows += set_rows
        for head in HEADS:
            pooled[head] += at_one[head]
    summary = "; ".join(
        f"{head}: {min(v):.2f}–{max(v):.2f}, median {statistics.median(v):.3f} (default {defaults.get(head)})"
        for head, v in pooled.items()
    )
    lines = [
        '## "Me / not me": one-person models and the default unknown threshold',
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_line()} by `bench/bench_one_person.py`: a model of "
        "one person alone (their identity-resolved train faces), against all 300 LFW strangers and the "
        "person's own test faces. Cells: FPIR (strangers given the name) / FNIR (own test faces "
        "rejected) at each distance; **bold**: the head's default, used when there is nobody to "
        "calibrate on. Last column: the distance at which 1% of the strangers get the name. The defaults "
        "were read off this table, from these very strangers: on other strangers expect somewhat more than "
        "1% named — a strangers folder of your own (`--strangers`) calibrates for your photos.",
        "",
        f"Distance for FPIR 1% over the {len(pooled[HEADS[0]])} people — {summary}.",
        "",
        "| person | head | train faces | test faces | "
        + " | ".join(f"d = {d:.2f}" for d in DISTANCES)
        + " | d at FPIR 1% |",
        "|---|---|---:|---:|" + "---:|" * len(DISTANCES) + "---:|",
        *rows,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
