"""The metric stage (``--strategy metric``): P×K batches, the CosFace loss, a run that answers unknown,
the command end to end, ONNX export. Synthetic faces (patterns) and the seed's small CNN: seconds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab import weights as wts
from facelab.config import Augment, Strategy, TrainConfig
from facelab.items import load_items
from facelab.metric_loss import NOBODY, cosface_logits, cosface_loss, margin_head
from facelab.metric_net import MetricParams
from facelab.metric_sampler import PKBatchSampler
from facelab.store import Workspace
from test_train import _cli, add_face

# -- synthetic people ---------------------------------------------------------------------------


def _pattern(kind: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A noisy image whose pattern is its "identity": stripes, checks, a disc, rings."""
    img = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
    y, x = np.indices((size, size))
    shift = int(rng.integers(0, 4))
    masks = {
        "stripes": ((y + shift) // 5) % 2 == 0,
        "checks": (((y + shift) // 7) + (x // 7)) % 2 == 0,
        "disc": (y - size / 2) ** 2 + (x - size / 2 - shift) ** 2 < (size / 4) ** 2,
        "rings": ((np.hypot(y - size / 2, x - size / 2) + shift) // 4) % 2 == 0,
    }
    channel = {"stripes": 0, "checks": 1, "disc": 2, "rings": 0}[kind]
    img[masks[kind], channel] = 230
    return img


def _workspace(root: Path, people: tuple[str, ...], per_person: int = 8, counts: dict | None = None) -> Path:
    """Synthetic people (``counts`` faces of some, else ``per_person``), a quarter of each in val."""
    rng = np.random.default_rng(3)
    with Workspace(root) as ws:
        for person in people:
            for i in range((counts or {}).get(person, per_person)):
                split = "val" if i % 4 == 0 else "train"
                add_face(ws, _pattern(person, rng), person, split, f"/photos/{person}/{i}.jpg", (0, 0, 40, 40))
        ws.set_setting("crop_margin", "1.3")
    return root


def _tiny_config(**options: object) -> TrainConfig:
    values: dict = {
        "backbone": "reference",  # the seed's small CNN: no weights to find, fast at 32 px
        "strategy": Strategy.METRIC,
        "augment": Augment.NONE,
        "image_size": 32,
        "epochs": 3,
        "head_epochs": 4,
        "lr": 3e-3,
        "unfreeze_lr_factor": 0.3,
        "patience": 0,
        "threads": 1,
    }
    values.update(options)
    return TrainConfig(**values)


# -- the batch sampler --------------------------------------------------------------------------


def test_pk_sampler_yields_p_people_times_k_faces_and_bystanders() -> None:
    # 5 people with 3..11 faces, and 6 bystanders.
    labels = [p for p in range(5) for _ in range(3 + 2 * p)] + [NOBODY] * 6
    sampler = PKBatchSampler(labels, people=3, faces=4, bystanders=2, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-35 // 12)  # the people's 35 faces drawn about once
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert counts.pop(NOBODY) == 2
        assert len(counts) == 3 and set(counts.values()) == {4}  # P distinct people × K faces
    # Every person is in both batches of an epoch (8 draws each), and a person's faces come round
    # before any repeats: person 4's 11 faces give 8 different ones, person 0's 3 faces 3/3/2 times.
    sampler4 = PKBatchSampler(labels, people=5, faces=4, bystanders=0, seed=1)
    drawn = [i for batch in sampler4 for i in batch]
    assert len({i for i in drawn if labels[i] == 4}) == 8
    assert sorted(Counter(i for i in drawn if labels[i] == 0).values()) == [2, 3, 3]
    # The same epoch draws the same batches; another epoch others.
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # Fewer people than P: every batch holds all of them.
    assert all(len({labels[i] for i in b}) == 2 for b in PKBatchSampler([0, 0, 1, 1], people=8, faces=2))
    with pytest.raises(ValueError, match="at least 2 people"):
        PKBatchSampler([0, 0, NOBODY])


# -- the loss -----------------------------------------------------------------------------------


def test_cosface_margin_and_nobody_logit() -> None:
    import torch

    cosines = torch.tensor([[0.8, 0.1, -0.2], [0.2, 0.1, 0.0]])
    labels = torch.tensor([0, NOBODY])
    logits = cosface_logits(cosines, labels, scale=10.0, margin=0.3, nobody=0.4)
    expected = torch.tensor([[10 * (0.8 - 0.3), 1.0, -2.0, 4.0], [2.0, 1.0, 0.0, 10 * (0.4 - 0.3)]])
    assert torch.allclose(logits, expected)
    # The margin makes the same embedding cost more: it must be surer to pay as little.
    easy = cosface_loss(cosines, labels, scale=10.0, margin=0.0, nobody=0.4)
    hard = cosface_loss(cosines, labels, scale=10.0, margin=0.3, nobody=0.4)
    assert float(hard) > float(easy) > 0


def test_cosface_training_separates_people_and_pushes_bystanders_away() -> None:
    import torch

    torch.manual_seed(0)
    embeddings = torch.nn.Parameter(torch.randn(12, 8))
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, NOBODY, NOBODY, NOBODY])
    centres = margin_head(3, 8, seed=0)
    optimizer = torch.optim.Adam([embeddings, *centres.parameters()], lr=0.05)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        cosines = centres(torch.nn.functional.normalize(embeddings, dim=1))
        loss = cosface_loss(cosines, labels, scale=16.0, margin=0.25, nobody=0.3)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        cosines = centres(torch.nn.functional.normalize(embeddings, dim=1))
    own = cosines[torch.arange(9), labels[:9]]
    assert bool((own > 0.3 + 0.25 - 0.05).all())  # people: own centre above nobody + margin
    assert bool((cosines[9:].max(dim=1).values < 0.3 - 0.25 + 0.05).all())  # bystanders: below every centre


def test_the_kept_epoch_is_a_copy_of_its_weights_not_the_live_ones(tmp_path: Path) -> None:
    import torch

    from facelab import backbones as bb
    from facelab.metric_stage import MetricStage
    from facelab.transfer_report import NullReporter

    samples = [(tmp_path / "a.jpg", 0), (tmp_path / "b.jpg", 1)]
    stage = MetricStage(
        _tiny_config().resolved(), MetricParams(embed_dim=4), samples, samples, ["a", "b"], tmp_path, NullReporter()
    )
    stage.build(bb.NO_WEIGHTS)
    assert stage._record("metric", 1e-3, 0.0, (1.0, 0.5), (0.9, 0.5))  # the first epoch is the best so far
    kept = {k: v.clone() for k, v in (stage.best_state or {}).items()}
    with torch.no_grad():
        for parameter in stage.net.parameters():
            parameter.add_(1.0)  # training goes on
    assert kept and all(torch.equal(kept[k], stage.best_state[k]) for k in kept)
    assert not stage._record("metric", 1e-3, 0.0, (1.0, 0.5), (1.5, 0.0))  # worse: still the first epoch
    assert stage.best["epoch"] == 1


# -- a run: fit, load, calibrate, unknown -------------------------------------------------------


@pytest.fixture(scope="module")
def metric_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three synthetic people trained; a fourth ("rings") only ever seen as a bystander in the
    training photos, never as a person; plain noise as more bystanders."""
    from facelab.metric_fit import fit_metric

    root = tmp_path_factory.mktemp("metric")
    ws_root = _workspace(root / "ws", ("checks", "disc", "stripes", "rings"), counts={"rings": 16})
    rng = np.random.default_rng(11)
    bystanders = []
    for i in range(4):
        path = root / "bystanders" / f"b{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)).save(path)
        bystanders.append(path)
    with Workspace(ws_root, create=False) as ws:
        train = [(i.crop_path, i.person) for i in load_items(ws, "train") if i.person != "rings"]
        val = [(i.crop_path, i.person) for i in load_items(ws, "val") if i.person != "rings"]
        bystanders += [i.crop_path for i in load_items(ws, "train") if i.person == "rings"]
        outsider = [i for i in load_items(ws, "val") if i.person == "rings"]  # faces never trained on
    run_dir = ws_root / "runs" / "metric"
    result = fit_metric(
        _tiny_config(),
        train,
        val,
        run_dir,
        bystanders=bystanders,
        params=MetricParams(embed_dim=16, people=3, faces=3, bystanders=2),
        extra_summary={"workspace": str(ws_root)},
    )
    return {"result": result, "ws": ws_root, "run": run_dir, "outsider": outsider}


def test_metric_run_folder_and_loader(metric_run: dict) -> None:
    from facelab.metric_model import MetricModel
    from facelab.runs import load_model

    run = metric_run["run"]
    for name in ("config.yaml", "metric.json", "classes.json", "preprocessing.json", "best.safetensors", "head.npz"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["track"] == "metric" and summary["strategy"] == "metric"
    assert summary["classes"] == ["checks", "disc", "stripes"]
    assert summary["n_bystanders_train"] == 4 + 12 and summary["score_kind"] == "similarity"
    history = metric_run["result"].history
    assert [row["phase"] for row in history] == ["warm-up"] * 4 + ["metric"] * 3
    assert summary["epochs_run"] == 7 and 1 <= summary["best_epoch"] <= 7
    model = load_model(run)
    assert isinstance(model, MetricModel) and model.threshold is None  # not calibrated yet
    with Workspace(metric_run["ws"], create=False) as ws:
        val = [i for i in load_items(ws, "val") if i.person != "rings"]
    vectors = model.embed_items(val)
    assert vectors.shape == (len(val), 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # L2-normalised
    scores = model.predict_items(val)
    assert scores.shape == (len(val), 3) and float(scores.max()) <= 1.0 + 1e-6
    # The summary's validation accuracy is the prototype head's on these very faces.
    truth = np.array([model.classes.index(i.person) for i in val])
    assert float(np.mean(scores.argmax(1) == truth)) == pytest.approx(summary["val_accuracy"])
    assert summary["val_accuracy"] >= 2 / 3  # chance is 1/3


def test_calibrated_metric_run_answers_unknown(metric_run: dict) -> None:
    from facelab import openset
    from facelab.metric_calibrate import calibrate_metric_run
    from facelab.runs import load_model

    run = metric_run["run"]
    with Workspace(metric_run["ws"], create=False) as ws:
        payload = calibrate_metric_run(ws, run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["threshold"] == payload["threshold"] is not None
    sources = {e["source"]: e for e in payload["evidence"]}
    # Each person left out in turn (2 of 3 people's faces met by each): too few for FPIR 1%, so the
    # threshold sits just above every one of them, and the warning says the evidence is thin.
    assert sources["people"]["n"] > 0 and "optimistic" in sources["people"]["words"]
    assert sources["reference"]["used"] is False and "dlib embeddings" in sources["reference"]["words"]
    assert "none of them named" in payload["warning"] or "none of them named" in (payload.get("expected") or "")
    model = load_model(run)
    assert model.threshold == payload["threshold"]
    # Somebody seen only as a bystander: their unseen faces answer unknown.
    outsider = model.predict_items(metric_run["outsider"])
    assert len(outsider) == 4
    rejected = openset.decide(outsider, model.threshold, classes=model.classes).index == -1
    assert rejected.mean() >= 0.75, (outsider.max(axis=1), model.threshold)
    # ... while the people's own validation faces are mostly named (right).
    with Workspace(metric_run["ws"], create=False) as ws:
        val = [i for i in load_items(ws, "val") if i.person != "rings"]
    decided = openset.decide(model.predict_items(val), model.threshold, classes=model.classes)
    assert np.mean(openset.named_right(decided.index, model.classes, [i.person for i in val])) >= 0.5


def test_metric_names_stand_only_where_the_embedding_gate_agrees(metric_run: dict, tmp_path: Path) -> None:
    """A metric run's own threshold names far too many strangers (docs/benchmarks_metric.md), so its
    names need the face embedding's agreement, as a CNN classifier's do (facelab.gate)."""
    import shutil

    from facelab import openset
    from facelab.gate import EmbeddingGate
    from facelab.metric_model import MetricModel
    from facelab.types import Box, Face

    run = shutil.copytree(metric_run["run"], tmp_path / "run")
    rgb = np.asarray(Image.open(metric_run["outsider"][0].crop_path).convert("RGB").resize((160, 160)))
    faces = [Face(Box(20, 20, 140, 140), 1.0), Face(Box(40, 30, 120, 150), 1.0)]
    ungated = MetricModel(run).predict_faces(rgb, faces)
    classes = MetricModel(run).classes
    calibration = openset.Calibration(0.0, 0.01, 0.0, 0.0, 0, 0, "similarity")
    centres = np.zeros((len(classes), 128))
    EmbeddingGate("dlib", classes, centres, threshold=-1e9).save(run, calibration)  # agrees with every name
    assert MetricModel(run).gate is not None
    assert np.allclose(MetricModel(run).predict_faces(rgb, faces), ungated)
    EmbeddingGate("dlib", classes, centres, threshold=1e9).save(run, calibration)  # agrees with none
    refused = MetricModel(run).predict_faces(rgb, faces)
    assert (refused.max(axis=1) == -1.0).all()  # below any threshold: unknown


# -- the command, deployment, export ------------------------------------------------------------


def test_train_command_metric_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facelab.export import OnnxModel, export_run
    from facelab.metric_model import MetricModel

    monkeypatch.setenv(wts.OFFLINE_ENV, "1")
    ws_root = _workspace(tmp_path / "ws", ("checks", "disc", "stripes"), per_person=6)
    args = ["train", str(ws_root), "--strategy", "metric", "--backbone", "reference", "--augment", "none"]
    # 64 px: the seed's CNN pools to 8×8, which ONNX exports only from a multiple of 8 (32 px gives 4×4).
    args += ["--image-size", "64", "--epochs", "2", "--head-epochs", "3", "--threads", "1", "--name", "m", "-q"]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    run = ws_root / "runs" / "m"
    assert result.stdout.strip().endswith(str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["track"] == "metric" and isinstance(summary["threshold"], float)
    assert json.loads((run / "openset.json").read_text())["threshold"] == summary["threshold"]
    # No gate here: dlib finds no face to embed in these synthetic pictures (real faces get one:
    # test_metric_names_stand_only_where_the_embedding_gate_agrees).
    assert not (run / "gate.npz").exists()
    # Made current (nothing was) and deployed with its people's faces of every split.
    deployed = run / "deployed"
    with np.load(deployed / "head.npz") as head:
        assert len(head["y"]) == 18  # 6 faces × 3 people: train + val
    assert isinstance(MetricModel(deployed), MetricModel)
    # Resuming is refused with the reason.
    again = _cli(["train", str(ws_root), "--strategy", "metric", "--backbone", "reference", "--name", "m", "--resume"])
    assert again.exit_code == 2 and "cannot be resumed" in again.output
    # evaluate treats it as any run.
    evaluated = _cli(["evaluate", str(run), "--split", "val"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold"] == summary["threshold"] and metrics["n_images"] == 6
    # ONNX: the embedding and the prototypes in one graph, the same scores as the run.
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    onnx_path = export_run(run, "onnx", tmp_path / "m.onnx")
    exported = OnnxModel(onnx_path)
    assert exported.score_kind == "similarity" and exported.threshold == summary["threshold"]
    model = MetricModel(run)
    with Workspace(ws_root, create=False) as ws:
        items = load_items(ws, "val")
    from facelab.transforms import eval_transform, read_image

    transform = eval_transform(model.preprocessing)
    inputs = np.stack([transform(read_image(i.crop_path)).numpy() for i in items])
    np.testing.assert_allclose(exported.predict_inputs(inputs), model.predict_items(items), atol=1e-4)
    with pytest.raises(ValueError, match="--format onnx"):
        export_run(run, "bundle", tmp_path / "m.zip")


def test_auto_offers_the_metric_stage_within_its_budget() -> None:
    from facelab.auto import CANDIDATES

    metric = [c for c in CANDIDATES if "metric" in c.name]
    assert len(metric) == 1
    extract = next(c for c in CANDIDATES if c.name == "mobilenet_v2-feature-extract-rotation")
    # Dearer than feature extraction: it trains every layer, so auto reaches it only with time left.
    assert metric[0].estimate(200) > extract.estimate(200)
