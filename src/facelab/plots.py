"""Every figure facelab draws. The only module that imports matplotlib (Agg backend, files only).

Figures are written atomically (temporary file + rename), so a web page never shows half a PNG.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"


def _pyplot() -> Any:
    import matplotlib

    # Agg draws into files without a display: servers, CI and SSH sessions have none.
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Save ``fig`` to ``path`` atomically and close it (pyplot keeps figures alive otherwise)."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a figure is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def training_curves(
    history: Sequence[dict[str, Any]], path: Path, title: str = "", best_epoch: int | None = None
) -> None:
    """Accuracy (left) and loss (right) against epoch, train and validation.

    ``history`` rows need ``epoch``, ``train_accuracy``, ``val_accuracy``, ``train_loss``,
    ``val_loss`` and optionally ``phase``: where the phase changes (two-stage) a dotted line and
    the phase names mark it. ``best_epoch`` gets a marker on the validation accuracy.
    """
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    marker = "o" if len(epochs) <= 30 else None
    for ax, key, label in ((ax_acc, "accuracy", "accuracy"), (ax_loss, "loss", "loss (cross-entropy)")):
        ax.plot(
            epochs,
            [r[f"train_{key}"] for r in history],
            color=TRAIN_COLOR,
            marker=marker,
            markersize=3,
            label=f"train {key}",
        )
        ax.plot(
            epochs,
            [r[f"val_{key}"] for r in history],
            color=VAL_COLOR,
            marker=marker,
            markersize=3,
            label=f"validation {key}",
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if len(epochs) == 1:
            ax.set_xlim(0.5, 1.5)
        else:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        # Two-stage runs: shade the head-only stage, where the curves behave differently.
        changes = [row["epoch"] for prev, row in itertools.pairwise(history) if row.get("phase") != prev.get("phase")]
        if changes and history[0].get("phase") == "head":
            ax.axvspan(min(epochs) - 0.5, changes[0] - 0.5, color="grey", alpha=0.12, label="head-only stage")
        ax.legend(loc="lower right" if key == "accuracy" else "upper right")
    ax_acc.set_ylim(0, 1.02)
    if best_epoch:
        best = next((r for r in history if int(r["epoch"]) == best_epoch), None)
        if best is not None:
            ax_acc.plot(
                [best_epoch],
                [best["val_accuracy"]],
                marker="*",
                markersize=14,
                color=VAL_COLOR,
                linestyle="none",
                label=f"best (epoch {best_epoch}: {best['val_accuracy']:.3f})",
            )
            ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def confusion_matrix_plot(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    """Confusion matrix with person names on both axes (rows: true person, columns: predicted)."""
    plt = _pyplot()
    n = len(classes)
    size = max(4.5, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _face_grid(faces: list[tuple[Path, str, str]], path: Path, suptitle: str, empty: str, columns: int = 6) -> Path:
    """A grid of face crops, each ``(crop, title, title colour)``; ``empty`` is shown when there are none."""
    from PIL import Image

    plt = _pyplot()
    rows = max(1, -(-len(faces) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.0, rows * 2.35), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (crop, title, colour) in zip(axes.flat, faces, strict=False):
        with Image.open(crop) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(title, fontsize=8, color=colour)
    if not faces:
        axes.flat[0].text(0.5, 0.5, empty, ha="center", va="center", fontsize=14)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def error_gallery(errors: list[tuple[Path, str, str, float]], path: Path, limit: int = 40) -> Path:
    """Misnamed faces: each crop with its true and predicted name (the seed's "show predictions")."""
    shown = errors[:limit]
    suffix = f" (first {limit} of {len(errors)})" if len(errors) > limit else ""
    return _face_grid(
        [(crop, f"{true}\n→ {pred} ({score:.2f})", "darkred") for crop, true, pred, score in shown],
        path,
        f"Misnamed faces: true → predicted (score){suffix}",
        "no errors",
    )


def sample_gallery(samples: list[tuple[Path, str, str, float]], path: Path, n: int = 24, seed: int = 0) -> Path:
    """A seeded random grid of ``n`` faces (the seed's "random test images with their predicted
    names"): each crop with the true name and the answer, green when right, red when not. The same
    ``seed`` shows the same faces, so runs can be compared picture for picture."""
    import random

    shown = random.Random(seed).sample(samples, min(n, len(samples)))
    right = sum(answer == true for _, true, answer, _ in shown)
    return _face_grid(
        [
            (crop, f"{true}\n{answer} ({score:.2f})", "darkgreen" if answer == true else "darkred")
            for crop, true, answer, score in shown
        ],
        path,
        f"{len(shown)} random faces (seed {seed}): true name, then the answer (score) — {right} right",
        "no faces",
    )


def det_plot(result: dict, path: Path) -> Path:
    """FNIR against FPIR as the threshold moves; the chosen threshold is marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    curve = result.get("det", {})
    fpir = np.asarray(curve.get("fpir", []), dtype=float)
    fnir = np.asarray(curve.get("fnir", []), dtype=float)
    if fpir.size:
        ax.plot(np.clip(fpir, 1e-4, 1), np.clip(fnir, 1e-4, 1), lw=2)
    if result.get("fpir") is not None and result.get("fnir") is not None:
        ax.scatter(
            [max(result["fpir"], 1e-4)],
            [max(result["fnir"], 1e-4)],
            color="red",
            zorder=3,
            label=f"threshold {result.get('threshold'):.3f}",
        )
        ax.legend()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR: strangers given a name")
    ax.set_ylabel("FNIR: known people rejected or misnamed")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Open-set trade-off (DET)")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def comparison_chart(rows: list[dict], path: Path) -> Path:
    """Bar chart of validation and test accuracy per run (the seed's tables as a picture)."""
    plt = _pyplot()
    names = [r["run"] for r in rows]
    val = [r.get("val_accuracy") or 0 for r in rows]
    test = [r.get("test_accuracy") or 0 for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.45 * len(rows) + 1)))
    ax.barh(y - 0.2, val, height=0.4, label="val")
    ax.barh(y + 0.2, test, height=0.4, label="test")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.legend(loc="lower right")
    ax.set_title("Runs compared")
    fig.tight_layout()
    save_figure(fig, path)
    return path
