"""One workflow behind the CLI, the web app and the Python API (facelab.workflow, facelab.api).

On a copy of the tiny celeb5 workspace (conftest's ``tiny_model``): the three front ends give the
same faces and names for the same photos; a run becomes current only through ``deploy`` (``facelab
use`` by hand, or training when no worse on the same validation faces); the documented API example
runs; ``import facelab`` loads no model.
"""

from __future__ import annotations

import csv
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import facelab
from facelab import workflow
from facelab.cli import COMMAND_MODULES, app
from facelab.store import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _cli():
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return CliRunner()


@pytest.fixture()
def own_ws(tiny_model, tmp_path: Path) -> Path:
    """A private copy of the tiny workspace (tests change its current model)."""
    target = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, target, symlinks=True)
    return target


@pytest.fixture()
def photos(tiny_model, shared_data: Path) -> list[Path]:
    """Held-out photos of each person plus three strangers: the answers must include 'unknown'."""
    held = [p for paths in tiny_model.held_out.values() for p in paths[:2]]
    strangers = sorted((shared_data / "strangers").iterdir())[200:203]
    return held + strangers


def _key(box, name: str, score) -> tuple:
    return (*(int(v) for v in box), name, round(float(score), 3))


def test_cli_web_and_python_api_give_the_same_faces_and_names(own_ws: Path, photos: list[Path]) -> None:
    with Workspace(own_ws, create=False) as ws:
        current = workflow.current_run(ws)
        assert current is not None
        workflow.deploy(ws, current, force=True)  # deployed refit: every front end must load it
        assert workflow.deployed_model_dir(current) != current
    # CLI
    result = _cli().invoke(app, ["recognize", str(own_ws), *map(str, photos), "--format", "csv", "-q"])
    assert result.exit_code == 0, result.output
    cli: dict[str, list] = {str(p): [] for p in photos}
    for row in csv.DictReader(io.StringIO(result.stdout)):
        if row["name"] not in ("no_face", "error"):
            cli[row["file"]].append(_key((row["x1"], row["y1"], row["x2"], row["y2"]), row["name"], row["score"]))

    # Python API
    ws = facelab.Workspace(own_ws)
    api = {str(p): [_key(face.box, face.name, face.score) for face in ws.recognize(p)] for p in photos}

    # Web API
    from fastapi.testclient import TestClient

    from facelab.server.app import create_app

    client = TestClient(create_app(own_ws, None), base_url="http://127.0.0.1")
    web: dict[str, list] = {}
    for photo in photos:
        response = client.post("/api/recognize", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert response.status_code == 200, response.text
        web[str(photo)] = [_key(face["box"], face["name"], face["score"]) for face in response.json()["faces"]]

    assert cli == api == web
    names = [key[4] for faces in api.values() for key in faces]
    assert "unknown" in names and len(set(names) - {"unknown"}) >= 3  # real answers, not all one thing


def test_use_makes_a_run_current_refit_on_every_labelled_face(own_ws: Path, tiny_model) -> None:
    runner = _cli()
    trained = runner.invoke(app, ["train", str(own_ws), "--track", "embedding", "--head", "knn", "--name", "knn"])
    assert trained.exit_code == 0, trained.output
    assert "current model" in trained.stderr  # it says what happened to the current model, either way

    used = runner.invoke(app, ["use", str(own_ws), "knn"])
    assert used.exit_code == 0, used.output
    with Workspace(own_ws, create=False) as ws:
        current = workflow.current_run(ws)
        assert current is not None and current.name == "knn"
        deployed = workflow.deployed_model_dir(current)
        assert deployed == current / "deployed"
        summary = json.loads((deployed / "summary.json").read_text())
        assert summary["refit_of"] == "knn" and "figures_from" in summary
        # Every labelled face is in the deployed head, the held-out split's too.
        assert summary["refit_faces"]["val"] > 0
        assert workflow.split_trained_run(deployed) == current

    photo = next(iter(tiny_model.held_out.values()))[0]
    named = runner.invoke(app, ["recognize", str(own_ws), str(photo), "--format", "csv", "-q"])
    assert named.exit_code == 0 and named.stdout.count("\n") >= 2
    row = next(csv.DictReader(io.StringIO(named.stdout)))
    assert row["name"] == photo.parent.name

    missing = runner.invoke(app, ["use", str(own_ws), "no-such-run"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output and "knn" in missing.stderr


def test_a_worse_cnn_run_never_replaces_the_current_model_silently(
    own_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facelab import weights as wts
    from facelab.config import Augment, Strategy, TrainConfig

    monkeypatch.setenv(wts.OFFLINE_ENV, "1")
    # Random initialisation, one epoch: a CNN that cannot tell the people apart.
    config = TrainConfig(
        backbone="mobilenet_v2",
        strategy=Strategy.FEATURE_EXTRACT,
        augment=Augment.NONE,
        weights="none",
        epochs=1,
        image_size=64,
        threads=1,
    )
    with Workspace(own_ws, create=False) as ws:
        before = workflow.current_run(ws)
        assert before is not None
        run_dir = workflow.train_transfer(ws, config, name="bad-cnn")
        assert (run_dir / "openset.json").is_file() and (run_dir / "gate.npz").is_file()  # calibrated
        outcome = workflow.deploy(ws, run_dir)
        assert not outcome.deployed and workflow.current_run(ws) == before
        assert outcome.candidate is not None and outcome.previous is not None
        assert outcome.candidate.miss_rate > outcome.previous.miss_rate
        assert "worse" in outcome.reason and f"facelab use {ws.root} bad-cnn" in outcome.reason

        # Without its embedding gate and threshold it cannot answer unknown: never made current
        # automatically, whatever its accuracy.
        (run_dir / "gate.npz").unlink()
        (run_dir / "openset.json").unlink()
        closed = workflow.deploy(ws, run_dir)
        assert not closed.deployed and "every stranger a name" in closed.reason

        chosen = workflow.deploy(ws, run_dir, force=True)  # the user's say-so
        assert chosen.deployed and workflow.current_run(ws) == run_dir
        # Trained again on every labelled face for the epochs validation chose, in RUN/deployed.
        deployed = workflow.deployed_model_dir(run_dir)
        refit = json.loads((deployed / "summary.json").read_text())
        assert deployed == run_dir / "deployed" and refit["refit_of"] == "bad-cnn"
        assert refit["n_train"] == sum(refit["refit_faces"].values()) and refit["epochs_run"] == 1
        assert chosen.notes and "trained again on all" in chosen.notes[0]


def test_the_documented_api_example_runs(own_ws: Path, tiny_model, capsys: pytest.CaptureFixture) -> None:
    example = runpy.run_path(str(ROOT / "docs" / "examples" / "recognize_with_api.py"))
    person, photos = next(iter(tiny_model.held_out.items()))
    answers = example["main"](str(own_ws), [str(photos[0]), str(photos[1])])
    assert (str(photos[0]), person) in answers
    printed = capsys.readouterr().out
    assert "same person: True" in printed


def test_verify_and_find_faces_answer_on_real_photos(tiny_model, shared_data: Path) -> None:
    photos = next(iter(tiny_model.held_out.values()))
    same = facelab.verify(photos[0], photos[1])
    stranger = sorted((shared_data / "strangers").iterdir())[250]
    different = facelab.verify(photos[0], stranger)
    assert same.same and not different.same and same.distance < different.distance
    faces = facelab.find_faces(photos[0])
    assert len(faces) == 1 and faces[0].box[2] > faces[0].box[0]
    with pytest.raises(FileNotFoundError, match="not a facelab workspace"):
        facelab.Workspace(shared_data)


def test_importing_facelab_loads_no_model() -> None:
    code = (
        "import sys, facelab; facelab.Workspace; facelab.verify; "
        "heavy = [m for m in ('torch', 'dlib', 'cv2', 'torchvision') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_cli_version_and_hints_lead_somewhere(tmp_path: Path) -> None:
    runner = _cli()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"facelab {facelab.__version__}"
    Workspace(tmp_path / "empty", create=True).close()
    early = runner.invoke(app, ["auto", str(tmp_path / "empty")])
    assert early.exit_code == 2 and "Traceback" not in early.output
    assert f"facelab split {tmp_path / 'empty'}" in early.stderr


def test_a_chosen_threshold_holds_for_every_front_end(own_ws: Path, tiny_model) -> None:
    photo = next(iter(tiny_model.held_out.values()))[0]
    ws_api = facelab.Workspace(own_ws)
    assert ws_api.recognize(photo)[0].known
    with Workspace(own_ws, create=False) as ws:
        current = workflow.current_run(ws)
        workflow.choose_threshold(ws, current.name, 0.99)  # stricter than any face's score
    assert ws_api.recognize(photo)[0].name == "unknown"
    result = _cli().invoke(app, ["recognize", str(own_ws), str(photo), "--format", "csv", "-q"])
    assert result.exit_code == 0 and next(csv.DictReader(io.StringIO(result.stdout)))["name"] == "unknown"
    with Workspace(own_ws, create=False) as ws:
        workflow.choose_threshold(ws, current.name, None)  # back to the calibrated one
    assert ws_api.recognize(photo)[0].known
