"""`facelab study WS`: the seeds' data-size study on real photos (two sports5 people)."""

from __future__ import annotations

import csv
import importlib
import shutil
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from facelab.cli import COMMAND_MODULES, app
from facelab.store import Workspace


def test_study_measures_quality_against_photos_per_person(group_ws: Path, tmp_path: Path) -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    ws_root = tmp_path / "ws"
    shutil.copytree(group_ws, ws_root, symlinks=True, ignore=shutil.ignore_patterns("runs"))
    with Workspace(ws_root, create=False) as ws:
        splits_before = ws.query("SELECT id, split FROM photos ORDER BY id")
    result = CliRunner().invoke(app, ["study", str(ws_root), "--method", "prototype", "--shots", "1", "--shots", "3"])
    assert result.exit_code == 0, result.output
    with (ws_root / "reports" / "study.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {"method", "photos_per_person", "accuracy", "fnir", "train_seconds"} <= set(rows[0])
    assert [r["photos_per_person"] for r in rows] == ["1", "3", "all"]
    assert [int(r["train_photos"]) for r in rows][:2] == [2, 6]  # two people
    accuracy = {r["photos_per_person"]: float(r["accuracy"]) for r in rows}
    assert accuracy["1"] > 0.6 and accuracy["all"] >= 0.9  # two people: chance is 0.5
    assert all(float(r["train_seconds"]) > 0 for r in rows)
    with Image.open(ws_root / "reports" / "study.png") as plot:
        assert plot.width > 600
    with Workspace(ws_root, create=False) as ws:  # every run happened in a copy
        assert ws.query("SELECT id, split FROM photos ORDER BY id") == splits_before
    assert not (ws_root / "runs").exists() or not any((ws_root / "runs").iterdir())

    bad = CliRunner().invoke(app, ["study", str(ws_root), "--method", "nope"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
