"""The seeds' data studies: how good does a method get with 1, 3, 5, 10 … photos per person, and
with offline augmentation ×N — and what does it cost in training time?

For each photos-per-person count N, N of each person's *train* photos that hold the person's face
are drawn at random (seed = draw number); the rest of the train split is set aside, and the
validation and test splits and the strangers stay the same, so only the amount of training data
changes. Every draw runs in a throw-away copy of the workspace database (crops and caches are
linked, not copied): the user's workspace is never changed. Each run is calibrated like any other
(:func:`facelab.auto.calibrate_run`) and tested on the whole test split.

Writes ``WS/reports/study.csv`` (one row per method, photos per person, offline ×N and draw) and
``WS/reports/study.png`` (accuracy, FNIR and training time against photos per person).
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facelab.imageio import write_text_atomic
from facelab.store import Workspace

COLUMNS = (
    "method",
    "photos_per_person",
    "offline_aug",
    "draw",
    "accuracy",
    "photo_accuracy",
    "fnir",
    "fpir",
    "train_seconds",
    "train_photos",
)
DEFAULT_METHODS = ("prototype", "mobilenet_v2")
DEFAULT_SHOTS = (1, 3, 5, 10)


@dataclass(frozen=True)
class StudyMethod:
    """A method of the study: an embedding head (``prototype``, ``knn``, ``linear``) or a CNN
    backbone trained by feature extraction with rotation (the seed's best CPU recipe)."""

    name: str
    track: str

    @classmethod
    def parse(cls, name: str) -> StudyMethod:
        from facelab.backbones import registered
        from facelab.embed_track import registered_heads

        if name in registered_heads():
            return cls(name, "embedding")
        if name in registered():
            return cls(name, "transfer")
        choices = ", ".join([*registered_heads(), *registered()])
        raise ValueError(f"unknown study method {name!r}; choose a head or a backbone: {choices}")


def draw_workspace(source: Path, dest: Path, shots: int | None, seed: int) -> dict[str, int]:
    """A workspace at ``dest`` sharing ``source``'s crops whose train split keeps ``shots`` photos per
    person (None: all), drawn with ``seed``. Returns the train photos kept per person."""
    (dest / ".facelab").mkdir(parents=True)
    with (
        sqlite3.connect(source / ".facelab" / "facelab.db") as src,
        sqlite3.connect(dest / ".facelab" / "facelab.db") as dst,
    ):
        src.backup(dst)  # a consistent copy even while the source is in WAL mode
    for shared in ("crops", ".facelab/cache"):
        if (source / shared).exists():
            (dest / shared).symlink_to((source / shared).resolve(), target_is_directory=True)
    rng = random.Random(seed)
    with Workspace(dest, create=False) as ws:
        # Photos that hold the person's face (identity resolution or review said so): a photo where
        # the person could not be told apart teaches nothing and would leave a person without a face.
        rows = ws.query(
            "SELECT DISTINCT p.id, p.person FROM photos p JOIN faces f ON f.photo_id = p.id "
            "JOIN crops c ON c.face_id = f.id WHERE p.split = 'train' AND p.status = 'ok' "
            "AND c.status != 'rejected' AND (f.role = 'person' OR c.status = 'accepted') ORDER BY p.path"
        )
        by_person: dict[str, list[int]] = {}
        for row in rows:
            by_person.setdefault(row["person"], []).append(row["id"])
        kept: dict[str, int] = {}
        drop: list[int] = []
        for person, ids in sorted(by_person.items()):
            chosen = set(ids if shots is None else rng.sample(ids, min(shots, len(ids))))
            kept[person] = len(chosen)
            drop += [i for i in ids if i not in chosen]
        with ws.transaction() as conn:
            conn.executemany("UPDATE photos SET split = 'unused' WHERE id = ?", [(i,) for i in drop])
    return kept


def train_and_test(ws_dir: Path, method: StudyMethod, offline_aug: int, strangers: Path | None) -> dict:
    """Train ``method`` on ``ws_dir``'s train split, calibrate it, test it; the figures of one row."""
    from facelab.auto import calibrate_run
    from facelab.evaluate import evaluate_run

    started = time.perf_counter()
    with Workspace(ws_dir, create=False) as ws:
        if method.track == "embedding":
            from facelab.embed_track import train_embedding_run

            run = Path(train_embedding_run(ws, head=method.name, name="study", strangers=strangers))
        else:
            from facelab.config import TrainConfig
            from facelab.transfer import NullReporter, train_workspace

            config = TrainConfig(
                backbone=method.name, strategy="feature-extract", augment="rotation", offline_aug=offline_aug
            )
            run = train_workspace(ws, config, name="study", reporter=NullReporter()).run_dir
            calibrate_run(ws, run, strangers)
    seconds = time.perf_counter() - started
    metrics = evaluate_run(run, "test", strangers=strangers, workspace=ws_dir)
    return {
        "accuracy": metrics.get("accuracy"),
        "photo_accuracy": metrics.get("photo_accuracy"),
        "fnir": metrics.get("fnir"),
        "fpir": metrics.get("fpir"),
        "train_seconds": round(seconds, 2),
    }


def run_study(
    ws: Workspace,
    methods: list[StudyMethod],
    shots: list[int | None],
    offline_augs: list[int] = (0,),  # type: ignore[assignment]
    draws: int = 1,
    strangers: Path | None = None,
    progress: Callable[[int, int, object], None] | None = None,
) -> list[dict]:
    """Every method × photos per person (None: all) × offline ×N × draw; writes the report files.

    ``draws``: random draws of the training photos per count (more draws, steadier means; "all"
    is drawn once). ``offline_augs`` applies to CNN methods (an embedding head ignores it).
    ``strangers``: a folder of people who are none of the user's, for FPIR (as ``--strangers``).
    """
    from facelab.items import FaceSelection, load_items

    if not load_items(ws, "test", FaceSelection.RESOLVED):
        raise ValueError(f"{ws.root}: no test faces to measure on; run facelab split {ws.root} first")
    plan = [
        (method, n, aug, draw)
        for method in methods
        for n in shots
        for aug in (offline_augs if method.track == "transfer" else [0])
        for draw in range(1 if n is None else draws)
    ]
    rows: list[dict] = []
    for number, (method, n, aug, draw) in enumerate(plan, start=1):
        with tempfile.TemporaryDirectory(prefix="facelab-study-") as tmp:
            copy = Path(tmp) / "ws"
            kept = sum(draw_workspace(ws.root, copy, n, draw).values())
            figures = train_and_test(copy, method, aug, strangers)
        rows.append(
            {
                "method": method.name,
                "photos_per_person": "all" if n is None else n,
                "offline_aug": aug,
                "draw": draw,
                "train_photos": kept,
                **figures,
            }
        )
        if progress is not None:
            progress(number, len(plan), f"{method.name} {rows[-1]['photos_per_person']} ×{aug}")
    write_report(ws.reports_dir, rows)
    return rows


def write_report(folder: Path, rows: list[dict]) -> tuple[Path, Path]:
    """``study.csv`` and ``study.png`` in ``folder``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(buffer.getvalue(), folder / "study.csv")
    return folder / "study.csv", _plot(rows, folder / "study.png")


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per method, count and ×N: the mean over draws."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["photos_per_person"], row["offline_aug"]), []).append(row)
    out = []
    for (method, n, aug), members in groups.items():

        def mean(key: str, members: list[dict] = members) -> float | None:
            values = [m[key] for m in members if m[key] is not None]
            return statistics.fmean(values) if values else None

        out.append(
            {
                "method": method,
                "photos_per_person": n,
                "offline_aug": aug,
                "draws": len(members),
                "accuracy": mean("accuracy"),
                "fnir": mean("fnir"),
                "train_seconds": mean("train_seconds"),
            }
        )
    return out


def _plot(rows: list[dict], path: Path) -> Path:
    from facelab.plots import _pyplot, save_figure

    plt = _pyplot()
    means = mean_rows(rows)
    counts = sorted({r["photos_per_person"] for r in means if r["photos_per_person"] != "all"})
    positions = {n: i for i, n in enumerate([*counts, "all"])}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for (method, aug), label in {
        (r["method"], r["offline_aug"]): f"{r['method']}" + (f" ×{r['offline_aug']}" if r["offline_aug"] else "")
        for r in means
    }.items():
        series = sorted(
            (r for r in means if r["method"] == method and r["offline_aug"] == aug),
            key=lambda r: positions[r["photos_per_person"]],
        )
        xs = [positions[r["photos_per_person"]] for r in series]
        for ax, key in zip(axes, ("accuracy", "fnir", "train_seconds"), strict=True):
            ax.plot(xs, [r[key] if r[key] is not None else float("nan") for r in series], marker="o", label=label)
    for ax, title in zip(
        axes,
        ("test accuracy (faces)", "FNIR at the calibrated threshold", "training seconds"),
        strict=True,
    ):
        ax.set_xticks(list(positions.values()), [str(k) for k in positions])
        ax.set_xlabel("training photos per person")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
