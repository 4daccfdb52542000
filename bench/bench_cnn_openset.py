"""Can a CNN classifier say "unknown" better with another score than its softmax probability?

Takes the mobilenet_v2 feature-extraction run (rotation, resolved faces) that bench_accuracy.py
trained on each set's workspace, and scores the test faces and the strangers four ways from the
same forward pass: softmax probability (what the transfer track uses), max logit, cosine
similarity of the penultimate features to each person's mean training feature, and cosine
similarity to the nearest training face. For each: the threshold for FPIR 1% on the calibration
half of ``strangers/``, then FNIR and FPIR on the test split and the evaluation half, plus the
best FNIR any threshold reaches at FPIR ≤ 1% on the evaluation half (an oracle figure) and the
equal error rate. Writes docs/benchmarks_cnn_openset.md.

    .venv/bin/python bench/bench_cnn_openset.py [--sets celeb5 sports5]

Run bench_accuracy.py first (it builds the workspaces and trains the runs); ~2 minutes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from facelab import openset
from facelab.items import load_items
from facelab.runs import load_model
from facelab.store import Workspace
from facelab.transforms import read_image
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))
RUN = "bench-transfer-mobilenet_v2-feature-extract-rotation-resolved"

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (logits, features) -> scores per class


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scorers(train_features: np.ndarray, train_labels: np.ndarray, n_classes: int) -> dict[str, Scorer]:
    train_unit = _unit(train_features)
    means = _unit(np.stack([train_unit[train_labels == k].mean(axis=0) for k in range(n_classes)]))

    def softmax(logits: np.ndarray, _features: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def nearest(_logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        similarity = _unit(features) @ train_unit.T
        return np.stack([similarity[:, train_labels == k].max(axis=1) for k in range(n_classes)], axis=1)

    return {
        "softmax probability (the transfer track's score)": softmax,
        "max logit": lambda logits, _features: logits,
        "cosine to the person's mean feature": lambda _logits, features: _unit(features) @ means.T,
        "cosine to the nearest training face": nearest,
    }


def forward(model, images: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features of one pass over ``images``."""
    logits, features = [], []
    for batch_logits, batch_features in model._batches(images):
        logits.append(batch_logits.cpu().numpy())
        features.append(batch_features.cpu().numpy())
    return np.concatenate(logits), np.concatenate(features)


def stranger_crops(model, part: str) -> list:
    crops = []
    for rgb, face in openset.stranger_largest_faces(DATA / "strangers", part):
        crops += model._face_crops(rgb, [face])
    return crops


def measure(name: str) -> list[str]:
    ws_dir = WORK / name
    model = load_model(ws_dir / "runs" / RUN)
    with Workspace(ws_dir, create=False) as ws:
        train, test = load_items(ws, "train"), load_items(ws, "test")
    _, train_features = forward(model, (read_image(i.crop_path) for i in train))
    test_logits, test_features = forward(model, (read_image(i.crop_path) for i in test))
    calibration = forward(model, stranger_crops(model, "calibration"))
    evaluation = forward(model, stranger_crops(model, "evaluation"))
    classes = model.classes
    train_labels = np.array([classes.index(i.person) for i in train])
    test_labels = np.array([classes.index(i.person) for i in test])
    rows = []
    for label, score in scorers(train_features, train_labels, len(classes)).items():
        genuine = score(test_logits, test_features)
        correct = genuine.argmax(axis=1) == test_labels
        best = genuine.max(axis=1)
        threshold = openset.calibrate(score(*calibration).max(axis=1), best, correct, 0.01).threshold
        result = openset.evaluate_open_set(best, correct, score(*evaluation).max(axis=1), threshold)
        rows.append(
            f"| {label} | {correct.mean():.1%} | {result['fnir']:.1%} | {result['fpir']:.1%} "
            f"| {result['fnir_at_fpir']['0.01']:.1%} | {result['eer']:.1%} |"
        )
        print(name, rows[-1], flush=True)
    return [
        f"### {name} ({len(test)} test faces, {len(evaluation[0])} evaluation strangers)",
        "",
        "| score | closed-set accuracy | FNIR | FPIR | best FNIR at FPIR ≤ 1% | EER |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["celeb5", "sports5"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_cnn_openset.md")
    args = parser.parse_args()
    lines = [
        '## Can the CNN say "unknown" with another score?',
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_line()} by `bench/bench_cnn_openset.py`: the "
        "mobilenet_v2 feature-extraction run of the accuracy section, its test faces and the strangers "
        "scored four ways from one forward pass; threshold for FPIR 1% on the strangers' calibration half, "
        "FNIR/FPIR on the test split and the evaluation half. *Best FNIR at FPIR ≤ 1%* picks the threshold "
        "on the evaluation strangers themselves (an oracle: what the score could do at best).",
        "",
    ]
    for name in args.sets:
        lines += measure(name)
    args.out.write_text("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
