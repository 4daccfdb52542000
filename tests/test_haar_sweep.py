"""The Haar rotation sweep set from the CLI (`--sweep-step`, `--sweep-max`): a face turned 90° is
missed by the default ±45° sweep and found by the full circle; the setting is remembered by the
workspace and recognition uses the same detector."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facelab.cli import COMMAND_MODULES, app
from facelab.detect import get_detector
from facelab.store import Workspace


@pytest.fixture(scope="module")
def turned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos of one person, each with exactly one upright Haar face, turned 90°."""
    root = tmp_path_factory.mktemp("turned") / "photos"
    (root / "jerry").mkdir(parents=True)
    upright = get_detector("haar")
    kept = 0
    for path in sorted((shared_data / "celeb5" / "jerry_seinfeld").glob("*.jpg")):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if len(upright.detect(np.asarray(rgb))) == 1:
            rgb.rotate(90, expand=True).save(root / "jerry" / f"turned{kept}.jpg", quality=92)
            kept += 1
        if kept == 3:
            break
    assert kept == 3
    return root


def _faces(ws_root: Path) -> int:
    with Workspace(ws_root, create=False) as ws:
        return ws.query("SELECT COUNT(*) AS n FROM faces")[0]["n"]


def test_full_circle_sweep_finds_turned_faces_and_is_remembered(turned: Path, tmp_path: Path) -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    runner = CliRunner()
    narrow = runner.invoke(app, ["build", str(turned), "-w", str(tmp_path / "narrow"), "--detector", "haar", "-q"])
    assert narrow.exit_code == 0, narrow.output
    wide = runner.invoke(
        app,
        ["build", str(turned), "-w", str(tmp_path / "wide"), "--sweep-max", "180", "--sweep-step", "30", "-q"],
    )
    assert wide.exit_code == 0, wide.output
    assert _faces(tmp_path / "narrow") == 0 and _faces(tmp_path / "wide") >= 3
    with Workspace(tmp_path / "wide", create=False) as ws:
        assert ws.setting("detector") == "haar:sweep_range=180,sweep_step=30"
        angles = [r["angle"] for r in ws.query("SELECT angle FROM faces")]
    assert all(abs(abs(a) - 90) <= 30 for a in angles)  # found on the copies turned back

    bad = runner.invoke(app, ["build", str(turned), "-w", str(tmp_path / "bad"), "--sweep-step", "0"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "bad").exists()
