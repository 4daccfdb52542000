"""Models that leave the workspace (`facelab export`): a CNN run as ONNX agrees with PyTorch and
names the same people; an embedding run as a bundle answers as the run; wrong formats are refused."""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facelab.cli import COMMAND_MODULES, app


def _cli() -> CliRunner:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return CliRunner()


def _names(stdout: str) -> list[tuple[str, str]]:
    return [(Path(r["file"]).name, r["name"]) for r in csv.DictReader(io.StringIO(stdout))]


@pytest.fixture(scope="module")
def cnn_run(group_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facelab import weights as wts
    from facelab.config import Augment, TrainConfig
    from facelab.store import Workspace
    from facelab.transfer import NullReporter, train_workspace

    mp = pytest.MonkeyPatch()
    mp.setenv(wts.OFFLINE_ENV, "1")
    try:
        config = TrainConfig(augment=Augment.NONE, epochs=8, image_size=96, threads=1)
        with Workspace(group_ws, create=False) as ws:
            return train_workspace(ws, config, name="export-cnn", reporter=NullReporter()).run_dir
    finally:
        mp.undo()


def test_onnx_export_agrees_with_pytorch_and_names_the_same_people(
    cnn_run: Path, group_ws: Path, tmp_path: Path
) -> None:
    import torch

    from facelab.export import OnnxModel
    from facelab.imageio import load_rgb
    from facelab.items import load_items
    from facelab.store import Workspace
    from facelab.transfer_model import TransferModel

    runner = _cli()
    result = runner.invoke(app, ["export", str(cnn_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    exported = OnnxModel(tmp_path / "m.onnx")
    model = TransferModel(cnn_run, device="cpu")
    assert exported.classes == model.classes and exported.threshold == model.threshold
    assert exported.gate is not None and exported.gate.threshold == pytest.approx(model.gate.threshold)

    # The graph: same preprocessed inputs, same probabilities.
    inputs = torch.rand(5, 3, 96, 96)
    with torch.inference_mode():
        expected = torch.softmax(model.net(inputs).flatten(1), dim=1).numpy()
    assert np.abs(exported.predict_inputs(inputs.numpy()) - expected).max() <= 1e-4

    # Whole faces of real photos, gate included: the same scores, so the same names.
    with Workspace(group_ws, create=False) as ws:
        items = load_items(ws, "test")[:8]
    for item in items:
        rgb = load_rgb(item.photo_path)
        ours, theirs = exported.predict_faces(rgb, [item.face]), model.predict_faces(rgb, [item.face])
        assert np.abs(ours - theirs).max() <= 1e-4

    photos = sorted({str(item.photo_path) for item in items})
    by_run = runner.invoke(app, ["recognize", str(cnn_run), *photos, "-q"])
    by_file = runner.invoke(app, ["recognize", "--model", str(tmp_path / "m.onnx"), *photos, "-q"])
    assert by_run.exit_code == by_file.exit_code == 0, by_file.output
    assert _names(by_run.stdout) == _names(by_file.stdout) and _names(by_file.stdout)


def test_embedding_bundle_answers_as_the_run(tiny_model, tmp_path: Path) -> None:
    runner = _cli()
    bundle = tmp_path / "tiny.zip"
    made = runner.invoke(app, ["export", str(tiny_model.run_dir), "--format", "bundle", "--out", str(bundle)])
    assert made.exit_code == 0, made.output
    assert bundle.stat().st_size < 200_000  # vectors and calibration, no network
    photos = [str(p) for paths in tiny_model.held_out.values() for p in paths[:2]]
    by_run = runner.invoke(app, ["recognize", str(tiny_model.run_dir), *photos, "-q"])
    by_file = runner.invoke(app, ["recognize", "--model", str(bundle), *photos, "-q"])
    assert by_run.exit_code == by_file.exit_code == 0, by_file.output
    assert by_run.stdout == by_file.stdout  # identical lines: boxes, names, scores
    assert {name for _, name in _names(by_file.stdout)} >= {"ben_afflek", "madonna"}

    wrong = runner.invoke(app, ["export", str(tiny_model.run_dir), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "--format bundle" in wrong.stderr and "Traceback" not in wrong.output
    missing = runner.invoke(app, ["recognize", "--model", str(tmp_path / "none.onnx"), photos[0]])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
