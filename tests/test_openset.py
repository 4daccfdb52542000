"""Open-set math on small hand-made score sets, where every rate can be counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelab import openset

# Ten strangers 0.0 … 0.9; five known faces, the third one misnamed.
STRANGERS = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
GENUINE = np.array([0.95, 0.85, 0.75, 0.65, 0.55])
CORRECT = np.array([True, True, False, True, True])


def test_rates_at_a_threshold_count_rejected_and_misnamed_as_misses() -> None:
    fpir, fnir = openset.rates_at(0.7, GENUINE, CORRECT, STRANGERS)
    assert fpir == pytest.approx(0.3)  # 0.9, 0.8, 0.7 get a name
    assert fnir == pytest.approx(0.6)  # 0.65, 0.55 rejected + 0.75 misnamed
    result = openset.evaluate_open_set(GENUINE, CORRECT, STRANGERS, 0.7, score_kind="similarity")
    assert result["threshold"] == 0.7
    assert (result["fpir"], result["fnir"]) == (pytest.approx(0.3), pytest.approx(0.6))
    assert result["rejected"] == pytest.approx(0.4)
    assert result["misnamed"] == pytest.approx(0.2)
    assert result["fnir"] == pytest.approx(result["rejected"] + result["misnamed"])
    assert result["n_genuine"] == 5 and result["n_strangers"] == 10
    assert result["closed_set_accuracy"] == pytest.approx(0.8)
    assert result["score_kind"] == "similarity"


def test_no_threshold_names_every_stranger() -> None:
    result = openset.evaluate_open_set(GENUINE, CORRECT, STRANGERS, None)
    assert result["threshold"] is None
    assert result["fpir"] == 1.0
    assert result["fnir"] == pytest.approx(0.2)  # only the misnamed face


def test_det_curve_and_fnir_at_fpir() -> None:
    det = openset.det_curve(GENUINE, CORRECT, STRANGERS)
    assert det["threshold"] == sorted(det["threshold"], reverse=True)
    assert np.all(np.diff(det["fpir"]) >= 0) and np.all(np.diff(det["fnir"]) <= 0)
    # Every point agrees with counting at its threshold.
    for t, fpir, fnir in zip(det["threshold"], det["fpir"], det["fnir"], strict=True):
        assert (fpir, fnir) == pytest.approx(openset.rates_at(t, GENUINE, CORRECT, STRANGERS))
    # FPIR 0: threshold above 0.9 → only 0.95 named → FNIR 4/5.
    assert openset.fnir_at_fpir(det, 0.0) == pytest.approx(0.8)
    # FPIR ≤ 10%: threshold 0.85 names one stranger (0.9) and two right faces → FNIR 3/5.
    assert openset.fnir_at_fpir(det, 0.1) == pytest.approx(0.6)
    # The floor is the misnamed face: FNIR never goes below 1/5.
    assert min(det["fnir"]) == pytest.approx(0.2)
    assert openset.fnir_at_fpir(det, 1.0) == pytest.approx(0.2)


def test_threshold_for_fpir_exact_and_ties() -> None:
    # j = floor(0.2 · 10) = 2 → the 2nd highest stranger score.
    t = openset.threshold_for_fpir(STRANGERS, 0.2)
    assert t == 0.8
    assert openset.rates_at(t, GENUINE, CORRECT, STRANGERS)[0] == pytest.approx(0.2)
    # 1% of 10 strangers is 0 of them: just above the highest.
    t = openset.threshold_for_fpir(STRANGERS, 0.01)
    assert 0.9 < t < 0.9 + 1e-9
    # Ties: three at 0.8 cannot all be named when two are allowed.
    t = openset.threshold_for_fpir(np.array([0.9, 0.8, 0.8, 0.1]), 0.5)
    assert 0.8 < t < 0.8 + 1e-9
    assert openset.rates_at(t, [], [], np.array([0.9, 0.8, 0.8, 0.1]))[0] == pytest.approx(0.25)


def test_threshold_holds_on_new_strangers() -> None:
    """The conformal argument: on fresh strangers from the same distribution, FPIR stays near target."""
    rng = np.random.default_rng(0)
    named = []
    for _ in range(400):
        t = openset.threshold_for_fpir(rng.normal(size=300), 0.01)
        named.append(np.mean(rng.normal(size=2000) >= t))
    # Expected share: j / (n + 1) = 3 / 301 ≈ 0.00997; this sample's mean is within noise of it.
    assert np.mean(named) == pytest.approx(3 / 301, abs=0.0005)


def test_calibrate_reports_rates_margin_and_warning() -> None:
    margins = np.array([0.5, 0.4, 0.01, 0.3, 0.2])
    cal = openset.calibrate(STRANGERS, GENUINE, CORRECT, 0.2, stranger_source="unit", margins=margins)
    assert cal.threshold == 0.8
    assert cal.fpir == pytest.approx(0.2)
    assert cal.fnir == pytest.approx(0.6)  # 0.95 and 0.85 named right, 0.75 (< 0.8) rejected too
    assert (cal.n_strangers, cal.n_genuine) == (10, 5)
    assert cal.min_margin == pytest.approx(np.quantile([0.5, 0.4, 0.3, 0.2], 0.05))
    assert cal.lookalike_share_of_errors == 1.0  # the misnamed face's margin 0.01 is flagged
    assert cal.warning is None  # 1/0.2 − 1 = 4 strangers suffice for a 20% target
    cal = openset.calibrate(STRANGERS, GENUINE, CORRECT, 0.01)
    assert cal.warning is not None and "99" in cal.warning
    as_json = openset.calibrate([], GENUINE, CORRECT, 0.01).to_json()
    assert as_json["threshold"] is None and as_json["fpir"] is None


def test_decide_unknown_and_lookalike() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.3, 0.35, 0.1], [0.5, 0.45, 0.2]])
    d = openset.decide(scores, threshold=0.4, min_margin=0.1)
    assert d.index.tolist() == [0, -1, 0]
    assert d.margin == pytest.approx([0.8, 0.05, 0.05])
    assert d.lookalike.tolist() == [False, False, True]
    assert d.names(["a", "b", "c"]) == ["a", "unknown", "a"]
    closed = openset.decide(scores, threshold=None)
    assert closed.index.tolist() == [0, 1, 0]
    one_class = openset.top_two(np.array([[0.3], [0.7]]))
    assert math.isinf(one_class[2][0])


def test_probability_scores_work_alike() -> None:
    """Nothing assumes similarities: softmax rows go through the same calibration."""
    rng = np.random.default_rng(1)
    known = rng.dirichlet([8, 1, 1], size=50)
    strangers = rng.dirichlet([1, 1, 1], size=200)
    best, top, _ = openset.top_two(known)
    cal = openset.calibrate(strangers.max(axis=1), top, best == 0, 0.05, score_kind="probability")
    assert 0 < cal.threshold < 1
    assert cal.fpir <= 0.05


def test_bystander_class_is_nobody() -> None:
    # Classes as a run trained with --include-others has them: two people, then "others".
    classes = ["ann", "bob", "others"]
    scores = np.array(
        [
            [0.7, 0.2, 0.1],  # ann, margin 0.5 to bob
            [0.2, 0.3, 0.5],  # others wins: unknown at any threshold; best person bob 0.3
            [0.1, 0.6, 0.3],  # bob
        ]
    )
    index, top, margin = openset.top_two(scores, classes)
    assert index.tolist() == [0, -1, 1]
    assert top == pytest.approx([0.7, 0.3, 0.6])
    assert margin == pytest.approx([0.5, 0.1, 0.5])  # people only: "others" is never the runner-up
    assert openset.decide(scores, None, classes=classes).names(classes) == ["ann", "unknown", "bob"]
    assert openset.decide(scores, 0.65, classes=classes).names(classes) == ["ann", "unknown", "unknown"]
    # Without the class names the columns are three people, as before.
    assert openset.top_two(scores)[0].tolist() == [0, 2, 1]
    # A stranger the bystander class wins is named at no threshold, not even without one.
    strangers = openset.open_scores(scores, classes)
    assert strangers[1] == -np.inf
    genuine, correct = np.array([0.9, 0.8]), np.array([True, True])
    assert openset.rates_at(None, genuine, correct, strangers)[0] == pytest.approx(2 / 3)
    det = openset.det_curve(genuine, correct, strangers)
    assert all(math.isfinite(t) for t in det["threshold"])
    assert max(det["fpir"]) == pytest.approx(2 / 3)
    calibration = openset.calibrate(strangers, genuine, correct, 0.34)
    assert calibration.fpir <= 0.34 and calibration.fnir == 0.0
