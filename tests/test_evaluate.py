"""Metrics on known predictions, photo-level judging, and the comparison table and pictures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab import plots
from facelab.compare import compare_runs
from facelab.evaluate import closed_set_metrics, decide, photo_level
from facelab.items import SplitItem
from facelab.store import Workspace


def test_closed_set_metrics_on_a_known_prediction_set() -> None:
    y_true = ["ann", "ann", "ann", "ann", "bob", "bob", "cat", "cat"]
    y_pred = ["ann", "ann", "ann", "bob", "bob", "bob", "cat", "unknown"]
    m = closed_set_metrics(y_true, y_pred, ["ann", "bob", "cat"])
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["n_images"] == 8
    assert m["classes"] == ["ann", "bob", "cat", "unknown"]
    assert m["confusion_matrix"] == [[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert m["per_class"]["ann"] == {
        "precision": 1.0,
        "recall": 0.75,
        "f1": pytest.approx(6 / 7),
        "support": 4,
    }
    assert m["per_class"]["bob"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["cat"]["recall"] == 0.5


def test_decide_answers_unknown_under_the_threshold() -> None:
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    assert decide(scores, ["a", "b"], None) == ["a", "b", "a"]
    assert decide(scores, ["a", "b"], 0.58) == ["a", "b", "unknown"]


class _FixedModel:
    """A stand-in model whose answer per face id is fixed, to test photo-level logic exactly."""

    score_kind = "probability"
    threshold = None

    def __init__(self, classes: list[str], answers: dict[int, str]) -> None:
        self.classes = classes
        self.answers = answers
        self.run_dir = Path(".")

    def predict_items(self, items: list[SplitItem]) -> np.ndarray:
        scores = np.zeros((len(items), len(self.classes)))
        for row, item in enumerate(items):
            scores[row, self.classes.index(self.answers[item.face_id])] = 1.0
        return scores


def _add_photo(ws: Workspace, path: str, person: str, faces: list[tuple[str, float]]) -> list[int]:
    """Insert a test photo with faces given as (role, box side); returns the face ids."""
    with ws.transaction() as conn:
        status = "ok" if faces else "no_face"
        photo_id = conn.execute(
            "INSERT INTO photos(path, person, sha256, status, split) VALUES (?, ?, ?, ?, 'test')",
            (path, person, path, status),
        ).lastrowid
        ids = []
        for idx, (role, side) in enumerate(faces):
            face_id = conn.execute(
                "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, role) VALUES (?, ?, 0, 0, ?, ?, 1, ?)",
                (photo_id, idx, side, side, role),
            ).lastrowid
            conn.execute(
                "INSERT INTO crops(face_id, path, person) VALUES (?, ?, ?)",
                (face_id, f"crops/{face_id}.jpg", person),
            )
            ids.append(face_id)
    return ids


def test_photo_level_judges_whole_photos(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        single = _add_photo(ws, "/p/ann1.jpg", "ann", [("person", 50)])
        group = _add_photo(ws, "/p/ann2.jpg", "ann", [("bystander", 90), ("person", 40)])
        missed = _add_photo(ws, "/p/bob1.jpg", "bob", [("bystander", 80), ("person", 30)])
        _add_photo(ws, "/p/bob2.jpg", "bob", [])  # no face found: a miss
        answers = {
            single[0]: "ann",
            group[0]: "bob",  # the co-star, correctly not called ann
            group[1]: "ann",
            missed[0]: "bob",  # bob named on the bystander's face only
            missed[1]: "ann",
        }
        metrics, outcomes = photo_level(ws, _FixedModel(["ann", "bob"], answers), "test")
    assert metrics["n_photos"] == 4
    assert metrics["photos_no_face"] == 1
    assert metrics["photo_accuracy"] == pytest.approx(2 / 4)
    assert metrics["any_face_recall"] == pytest.approx(3 / 4)
    assert metrics["photo_accuracy_single_face"] == 1.0
    assert metrics["photo_accuracy_multi_face"] == 0.5
    # The largest-face rule: ann2's largest face is the co-star; bob1's largest is named bob.
    assert metrics["photo_accuracy_largest_face"] == pytest.approx(2 / 4)
    assert {o.photo.name: o.chosen_name for o in outcomes}["bob2.jpg"] is None


def _fake_run(runs: Path, name: str, val: float, test: float, params: int) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    summary = {
        "track": "transfer",
        "backbone": name,
        "strategy": "feature-extract",
        "augment": "rotation",
        "weights": "none",
        "params_total": params,
        "params_trainable": params // 10,
        "size_bytes": params * 4,
        "train_seconds": 12.5,
        "best_epoch": 3,
        "train_accuracy": 0.99,
        "val_accuracy": val,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.json").write_text(json.dumps({"split": "test", "accuracy": test, "photo_accuracy": test}))
    return run


def test_compare_writes_table_csv_and_chart_best_on_validation_first(tmp_path: Path) -> None:
    runs = [
        _fake_run(tmp_path, "small", 0.80, 0.90, 1_000_000),
        _fake_run(tmp_path, "big", 0.95, 0.85, 20_000_000),
    ]
    rows = compare_runs(runs, tmp_path / "table.md")
    assert [r["run"] for r in rows] == ["big", "small"]  # by validation, never by test
    markdown = (tmp_path / "table.md").read_text()
    assert "| big |" in markdown and "0.950" in markdown and "20,000,000" in markdown
    with (tmp_path / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert table[1]["test_accuracy"] == "0.9"
    with Image.open(tmp_path / "table.png") as chart:
        assert chart.width > 300


def test_plots_are_written(tmp_path: Path) -> None:
    matrix = np.array([[3, 1], [0, 2]])
    plots.confusion_matrix_plot(matrix, ["ann", "bob"], tmp_path / "cm.png")
    crop = tmp_path / "crop.jpg"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(crop)
    plots.error_gallery([(crop, "ann", "bob", 0.7)], tmp_path / "errors.png")
    det = {"det": {"fpir": [0.0, 0.01, 0.1, 1.0], "fnir": [0.5, 0.1, 0.02, 0.0]}, "fpir": 0.01, "fnir": 0.1}
    plots.det_plot({**det, "threshold": 0.5}, tmp_path / "det.png")
    for name in ("cm.png", "errors.png", "det.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 200 and image.height > 200
            # Not a blank canvas: a real plot has many distinct colours.
            assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_sample_gallery_is_a_seeded_random_grid_coloured_by_answer(tmp_path: Path) -> None:
    crops = []
    for i in range(30):
        crop = tmp_path / f"c{i}.jpg"
        Image.new("RGB", (64, 64), (8 * i, 255 - 8 * i, 120)).save(crop)
        crops.append(crop)
    samples = [(c, "ann", "ann" if i % 3 else "bob", 0.8) for i, c in enumerate(crops)]
    first = plots.sample_gallery(samples, tmp_path / "a.png", n=12, seed=1)
    again = plots.sample_gallery(samples, tmp_path / "b.png", n=12, seed=1)
    other = plots.sample_gallery(samples, tmp_path / "c.png", n=12, seed=2)

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    assert np.array_equal(pixels(first), pixels(again))  # the same seed shows the same faces
    assert not np.array_equal(pixels(first), pixels(other))
    rgb = pixels(first).reshape(-1, 3).astype(int)
    green = ((rgb[:, 1] > 80) & (rgb[:, 0] < 40) & (rgb[:, 2] < 40)).sum()  # right answers' titles
    red = ((rgb[:, 0] > 110) & (rgb[:, 1] < 30) & (rgb[:, 2] < 30)).sum()  # wrong ones'
    assert green > 50 and red > 50
