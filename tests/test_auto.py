"""auto: every candidate calibrated, the winner chosen on validation (naming and "unknown" together),
only the winner tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")

from facelab import workflow
from facelab.auto import CANDIDATES, _rank_key, calibrate_run
from facelab.embed_track import train_embedding_run
from facelab.store import Workspace


def test_rank_prefers_naming_and_unknown_together() -> None:
    accurate_but_rejects = {"run": "a", "order": 0, "val_accuracy": 1.0, "val_fnir": 0.6}
    slightly_worse_names_all = {"run": "b", "order": 1, "val_accuracy": 0.95, "val_fnir": 0.05}
    rows = [accurate_but_rejects, slightly_worse_names_all]
    # With enough strangers behind the thresholds, FNIR judges naming and "unknown" together.
    assert sorted((r | {"trusted": True} for r in rows), key=_rank_key)[0]["run"] == "b"
    # With a handful, FNIRs are not comparable: accuracy decides, ties go to the earlier candidate.
    assert sorted((r | {"trusted": False} for r in rows), key=_rank_key)[0]["run"] == "a"
    lax = {"run": "linear", "order": 2, "val_accuracy": 1.0, "val_fnir": 0.0, "trusted": False}
    floored = {"run": "prototype", "order": 0, "val_accuracy": 1.0, "val_fnir": 0.1, "trusted": False}
    assert sorted([lax, floored], key=_rank_key)[0]["run"] == "prototype"


@pytest.fixture(scope="module")
def strangers(stranger_links) -> Path:
    return stranger_links(60)


def test_auto_calibrates_every_candidate_and_tests_only_the_winner(group_ws: Path, strangers: Path) -> None:
    embedding = tuple(c for c in CANDIDATES if c.name.startswith("emb-"))
    with Workspace(group_ws) as ws:
        outcome, deployment = workflow.auto(ws, budget_minutes=5, strangers=strangers, candidates=embedding)
        current = ws.setting("current_model")
    # Deployed when no worse than the model current before (none, in a fresh workspace).
    assert deployment.current == current and (deployment.deployed or deployment.previous is not None)
    assert len(outcome.rows) == len(embedding)
    runs = [group_ws / "runs" / row["run"] for row in outcome.rows]
    assert all((run / "openset.json").is_file() for run in runs)  # every candidate has its threshold
    assert outcome.rows[0]["run"] == outcome.winner.name
    assert current == outcome.winner.name or not deployment.deployed
    # 30 calibration strangers alone are too few for FPIR 1% (99 needed), but the reference strangers
    # shipped with facelab make every threshold rest on ~1,000 impostors: FNIR ranks, then accuracy.
    assert all(row["val_accuracy"] == 1.0 for row in outcome.rows)
    fnirs = [row["val_fnir"] for row in outcome.rows]
    assert fnirs == sorted(fnirs)
    for run in runs:
        evidence = {e["source"]: e for e in json.loads((run / "openset.json").read_text())["evidence"]}
        assert evidence["reference"]["n"] >= 900 and evidence["reference"]["used"]
        # The user's own 30 calibration strangers: none of them may be named.
        assert evidence["strangers"]["n"] >= 20 and evidence["strangers"]["fpir_at_threshold"] == 0.0
    assert [r.name for r in runs if (r / "metrics.json").exists()] == [outcome.winner.name]
    assert (outcome.winner / "samples.png").is_file() and (outcome.winner / "errors.png").is_file()
    assert outcome.metrics["split"] == "test" and outcome.metrics["accuracy"] >= 0.9
    assert outcome.metrics["ms_per_face"] > 0  # embedding a face takes real time
    winner_row = next(row for row in outcome.rows if row["run"] == outcome.winner.name)
    assert winner_row["depth"] == 29 and winner_row["ms_per_face"] == outcome.metrics["ms_per_face"]


def test_calibration_without_a_strangers_folder_uses_reference_and_own_people(group_ws: Path) -> None:
    with Workspace(group_ws) as ws:
        run = train_embedding_run(ws, head="prototype", name="no-folder")
        trained = json.loads((run / "openset.json").read_text())
        again = calibrate_run(ws, run, strangers=None, bystanders=False)
    # Training and a later calibration with the same evidence agree.
    assert again["threshold"] == pytest.approx(trained["threshold"])
    used = {e["source"] for e in again["evidence"] if e["used"]}
    assert "reference" in used and "strangers" not in used
    # The expected rates are stored in plain words, and the shipped evidence expects about 1%.
    assert "strangers may be given a name" in again["expected"]
    assert again["expected_fpir"] <= 0.011
