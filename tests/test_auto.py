"""auto: every candidate calibrated, the winner chosen on validation (naming and "unknown" together),
only the winner tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")

from facelab.auto import CANDIDATES, _rank_key, auto_select, calibrate_run
from facelab.embed_track import train_embedding_run
from facelab.store import Workspace


def test_rank_prefers_naming_and_unknown_together() -> None:
    calibrated = {"calibrated_on_negatives": True, "params_total": 10, "train_seconds": 1}
    accurate_but_rejects = calibrated | {"run": "a", "val_accuracy": 1.0, "val_fnir": 0.6}
    slightly_worse_names_all = calibrated | {"run": "b", "val_accuracy": 0.95, "val_fnir": 0.05}
    best = sorted([accurate_but_rejects, slightly_worse_names_all], key=_rank_key)[0]
    assert best["run"] == "b"
    # Without strangers or bystanders there is no real threshold: accuracy decides, FNIR breaks ties.
    rows = (accurate_but_rejects, slightly_worse_names_all)
    uncalibrated = [row | {"calibrated_on_negatives": False} for row in rows]
    assert sorted(uncalibrated, key=_rank_key)[0]["run"] == "a"
    tie = [
        {"run": "c", "val_accuracy": 1.0, "val_fnir": 0.3, "params_total": 1},
        {"run": "d", "val_accuracy": 1.0, "val_fnir": 0.1, "params_total": 9},
    ]
    assert sorted(tie, key=_rank_key)[0]["run"] == "d"


@pytest.fixture(scope="module")
def strangers(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("auto-strangers")
    for path in sorted((shared_data / "strangers").iterdir())[:60]:
        (folder / path.name).symlink_to(path)
    return folder


def test_auto_calibrates_every_candidate_and_tests_only_the_winner(group_ws: Path, strangers: Path) -> None:
    embedding = tuple(c for c in CANDIDATES if c.name.startswith("emb-"))
    with Workspace(group_ws) as ws:
        outcome = auto_select(ws, budget_minutes=5, strangers=strangers, candidates=embedding)
        current = ws.setting("current_model")
    assert len(outcome.rows) == len(embedding)
    runs = [group_ws / "runs" / row["run"] for row in outcome.rows]
    assert all((run / "openset.json").is_file() for run in runs)  # every candidate has its threshold
    assert outcome.rows[0]["run"] == outcome.winner.name == current
    # The order is the ranking: lowest validation FNIR first (all three name every val face here).
    fnirs = [row["val_fnir"] for row in outcome.rows]
    assert fnirs == sorted(fnirs)
    assert [r.name for r in runs if (r / "metrics.json").exists()] == [outcome.winner.name]
    assert outcome.metrics["split"] == "test" and outcome.metrics["accuracy"] >= 0.9


def test_calibration_without_negatives_keeps_the_runs_own_threshold(group_ws: Path, strangers: Path) -> None:
    with Workspace(group_ws) as ws:
        # The embedding track sets a threshold when it trains (from strangers, or with three or more
        # people by leaving each out in turn); calibrating later with nobody to calibrate on keeps it.
        run = train_embedding_run(ws, head="prototype", name="keeps-threshold", strangers=strangers)
        before = json.loads((run / "openset.json").read_text())
        assert before["threshold"] is not None
        after = calibrate_run(ws, run, strangers=None, bystanders=False)
    assert after["threshold"] == before["threshold"]
    assert json.loads((run / "openset.json").read_text()) == before
