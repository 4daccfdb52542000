"""Transfer track: training on real faces, run folders, resume, the loader, the train command."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from facelab import weights as wts
from facelab.config import PRESETS, Augment, Preset, Strategy, TrainConfig
from facelab.items import class_names, load_items
from facelab.store import Workspace
from facelab.transfer import (
    HISTORY_FIELDS,
    TransferModel,
    fit,
    read_history,
    resolve_device,
    train_workspace,
)

SUMMARY_KEYS = {
    "track",
    "backbone",
    "strategy",
    "augment",
    "weights",
    "params_total",
    "params_trainable",
    "size_bytes",
    "train_seconds",
    "device",
    "best_epoch",
    "train_accuracy",
    "val_accuracy",
    "faces",
    "classes",
    "crop_margin",
    "workspace",
}


# -- tiny workspaces ----------------------------------------------------------------------------


def add_face(ws: Workspace, crop: np.ndarray, person: str, split: str, photo: str, box: tuple) -> None:
    """Insert one photo with one face and its crop, as build + split would leave them."""
    rel = Path("crops") / person / f"{Path(photo).stem}.jpg"
    (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop).save(ws.root / rel, quality=95)
    with ws.transaction() as conn:
        photo_id = conn.execute(
            "INSERT INTO photos(path, person, status, split) VALUES (?, ?, 'ok', ?)", (photo, person, split)
        ).lastrowid
        face_id = conn.execute(
            "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, role, role_source) "
            "VALUES (?, 0, ?, ?, ?, ?, 1.0, 'person', 'auto')",
            (photo_id, *box),
        ).lastrowid
        conn.execute(
            "INSERT INTO crops(face_id, path, person, status) VALUES (?, ?, ?, 'pending')",
            (face_id, str(rel), person),
        )


def pattern_workspace(root: Path, per_class: int = 4, size: int = 48) -> Path:
    """Three easy synthetic people (stripes, checks, a dot), 3/4 train and 1/4 val each."""
    rng = np.random.default_rng(1)
    with Workspace(root) as ws:
        for person in ("checks", "dot", "stripes"):
            for i in range(per_class):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                grid = np.indices((size, size))
                if person == "stripes":
                    img[(grid[0] // 6) % 2 == 0, 0] = 230
                elif person == "checks":
                    img[((grid[0] // 8) + (grid[1] // 8)) % 2 == 0, 1] = 230
                else:
                    img[(grid[0] - size // 2) ** 2 + (grid[1] - size // 2) ** 2 < (size // 4) ** 2, 2] = 230
                split = "val" if i % 4 == 0 else "train"
                add_face(ws, img, person, split, f"/photos/{person}/{i}.jpg", (0, 0, size, size))
        ws.set_setting("crop_margin", "1.3")
    return root


def _haar_faces(photos: Path) -> list[tuple[Path, str, np.ndarray, tuple]]:
    """The largest Haar face of each celeb5 photo, cropped 1.3× and resized to 256 (fast, no models)."""
    import cv2

    from facelab.imageio import load_rgb

    cv2.setNumThreads(1)  # a shared 2-core CI box: threads fight over cores instead of helping
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    out = []
    for person_dir in sorted(p for p in photos.iterdir() if p.is_dir()):
        for path in sorted(person_dir.iterdir()):
            rgb = load_rgb(path)
            scale = min(1.0, 600 / max(rgb.shape[:2]))
            small = cv2.resize(rgb, None, fx=scale, fy=scale) if scale < 1 else rgb
            found = cascade.detectMultiScale(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(30, 30))
            if len(found) == 0:
                continue
            x, y, w, h = (float(v) / scale for v in max(found, key=lambda b: b[2] * b[3]))
            side = 1.3 * max(w, h)
            x1, y1 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
            pad = round(side)
            padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
            crop = padded[y1 + pad : y1 + pad + round(side), x1 + pad : x1 + pad + round(side)]
            crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
            out.append((path, person_dir.name, crop, (x, y, x + w, y + h)))
    return out


@pytest.fixture(scope="module")
def celeb_ws(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of celeb5's faces: per person, a quarter of the photos in val, the rest in train."""
    root = tmp_path_factory.mktemp("celeb5")
    faces = _haar_faces(shared_data / "celeb5")
    rng = random.Random(0)
    by_person: dict[str, list] = {}
    for face in faces:
        by_person.setdefault(face[1], []).append(face)
    with Workspace(root) as ws:
        for person, rows in by_person.items():
            rng.shuffle(rows)
            n_val = max(2, len(rows) // 4)
            for i, (path, _, crop, box) in enumerate(rows):
                add_face(ws, crop, person, "val" if i < n_val else "train", str(path), box)
        ws.set_setting("crop_margin", "1.3")
    return root


@pytest.fixture(scope="module")
def celeb_run(celeb_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """mobilenet_v2 with its packaged ImageNet weights, feature extraction on celeb5 faces."""
    mp = pytest.MonkeyPatch()
    mp.setenv(wts.OFFLINE_ENV, "1")  # never download in tests
    try:
        config = TrainConfig(
            backbone="mobilenet_v2",
            strategy=Strategy.FEATURE_EXTRACT,
            augment=Augment.FLIP,
            image_size=128,  # smaller than the default 160: the test stays fast, accuracy holds
            aug_passes=1,
            epochs=40,
            patience=10,
            threads=1,  # steadier than 2 threads when other jobs share the 2 cores
        )
        with Workspace(celeb_ws, create=False) as ws:
            result = train_workspace(ws, config, name="celeb-fe")
            val_items = load_items(ws, "val")
    finally:
        mp.undo()
    return {"result": result, "val_items": val_items}


# -- real faces ---------------------------------------------------------------------------------


def test_pretrained_feature_extraction_recognizes_real_faces(celeb_run: dict) -> None:
    summary = celeb_run["result"].summary
    assert summary["weights"].startswith("pretrained:")
    assert len(summary["classes"]) == 5
    assert summary["val_accuracy"] >= 0.6, summary  # chance is 0.2
    assert summary["params_trainable"] == 1280 * 5 + 5  # only the head learned


def test_run_folder_describes_itself(celeb_run: dict) -> None:
    result = celeb_run["result"]
    run = result.run_dir
    for name in (
        "config.yaml",
        "history.csv",
        "curves.png",
        "best.safetensors",
        "classes.json",
        "preprocessing.json",
        "last.pt",
        "summary.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["track"] == "transfer" and summary["faces"] == "resolved"
    assert summary["crop_margin"] == 1.3
    assert 0 <= summary["train_accuracy"] <= 1 and 0 <= summary["val_accuracy"] <= 1
    assert summary["size_bytes"] == (run / "best.safetensors").stat().st_size
    assert summary["depth"] == 53  # mobilenet_v2: 52 convolutions + the classifier
    history = read_history(run / "history.csv")
    assert len(history) == summary["epochs_run"] >= summary["best_epoch"] >= 1
    assert set(history[0]) == set(HISTORY_FIELDS)
    best = history[summary["best_epoch"] - 1]
    assert best["val_accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-5)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = TrainConfig.load(run / "config.yaml")
    assert config.image_size == 128 and config.name == "celeb-fe"
    assert yaml.safe_load((run / "config.yaml").read_text())["strategy"] == "feature-extract"
    assert json.loads((run / "classes.json").read_text()) == summary["classes"]


def test_loaded_run_predicts_what_training_measured(celeb_run: dict) -> None:
    from facelab.runs import load_model

    result, items = celeb_run["result"], celeb_run["val_items"]
    model = load_model(result.run_dir)
    assert isinstance(model, TransferModel)
    # Training gives the run an embedding gate: the softmax has no unknown threshold of its own, so
    # a refused name scores −1 and the run answers unknown at threshold 0.
    assert model.score_kind == "probability" and model.gate is not None and model.threshold == 0.0
    with Workspace(result.run_dir.parents[1], create=False) as ws:
        assert model.classes == class_names(load_items(ws, "train"))
    from facelab.transforms import read_image

    scores = model.predict_images(read_image(item.crop_path) for item in items)
    gated = model.predict_items(items)
    assert scores.shape == gated.shape == (len(items), 5)
    refused = (gated == -1.0).all(axis=1)
    assert np.allclose(gated[~refused], scores[~refused], atol=1e-6)
    assert refused.mean() < 0.5  # the gate confirms most of the people's own faces
    truth = np.array([model.classes.index(i.person) for i in items])
    accuracy = float(np.mean(scores.argmax(1) == truth))
    loss = float(-np.mean(np.log(scores[np.arange(len(items)), truth])))
    assert accuracy == pytest.approx(result.summary["val_accuracy"], abs=1e-6)
    assert loss == pytest.approx(result.summary["val_loss"], rel=1e-3)
    features = model.features_items(items[:3])
    assert features.shape == (3, 1280) and np.isfinite(features).all()


def test_predict_faces_crops_new_photos_like_the_training_crops(celeb_run: dict) -> None:
    pytest.importorskip("facelab.align")
    from facelab.imageio import load_rgb

    result, items = celeb_run["result"], celeb_run["val_items"]
    model = TransferModel(result.run_dir)
    item = items[0]
    scores = model.predict_faces(load_rgb(item.photo_path), [item.face])
    assert scores.shape == (1, 5)
    np.testing.assert_allclose(scores.sum(), 1.0, atol=1e-5)


# -- synthetic data: resume, presets, the command ----------------------------------------------


def _tiny(ws_root: Path) -> tuple[list, list]:
    with Workspace(ws_root, create=False) as ws:
        train = [(i.crop_path, i.person) for i in load_items(ws, "train")]
        val = [(i.crop_path, i.person) for i in load_items(ws, "val")]
    return train, val


@pytest.mark.parametrize("strategy", [Strategy.FINE_TUNE, Strategy.TWO_STAGE])
def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, strategy: Strategy) -> None:
    train, val = _tiny(pattern_workspace(tmp_path / "ws"))
    cfg = TrainConfig(
        backbone="reference",
        strategy=strategy,
        augment=Augment.ROTATION,
        epochs=3,
        head_epochs=2,
        image_size=32,
        batch_size=4,
        patience=0,
        threads=1,
    )
    straight = fit(cfg, train, val, tmp_path / "straight")
    fit(dataclasses.replace(cfg, epochs=1), train, val, tmp_path / "resumed")
    with pytest.raises(FileExistsError):  # a finished run is never overwritten by accident
        fit(cfg, train, val, tmp_path / "resumed")
    resumed = fit(cfg, train, val, tmp_path / "resumed", resume=True)
    expected_epochs = 5 if strategy is Strategy.TWO_STAGE else 3  # two-stage: 2 head + 3 all
    assert [r["epoch"] for r in resumed.history] == list(range(1, expected_epochs + 1))
    keys = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
    assert [[r[k] for k in keys] for r in resumed.history] == [[r[k] for k in keys] for r in straight.history]
    assert resumed.summary["best_epoch"] == straight.summary["best_epoch"]


def test_weights_none_is_recorded_everywhere(tmp_path: Path) -> None:
    train, val = _tiny(pattern_workspace(tmp_path / "ws"))
    cfg = TrainConfig(backbone="mobilenet_v2", weights="none", epochs=2, image_size=32, threads=1)
    result = fit(cfg, train, val, tmp_path / "run")
    assert result.summary["weights"] == "none" and result.summary["weights_id"] is None
    assert TrainConfig.load(tmp_path / "run" / "config.yaml").weights == "none"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "best.safetensors"), "pt") as handle:
        assert handle.metadata()["backbone"] == "mobilenet_v2"


def test_offline_augmentation_writes_copies_inside_the_run(tmp_path: Path) -> None:
    ws_root = pattern_workspace(tmp_path / "ws")
    train, val = _tiny(ws_root)
    before = sorted(p.name for p in (ws_root / "crops").rglob("*"))
    cfg = TrainConfig(backbone="reference", offline_aug=2, augment=Augment.STRONG, epochs=1, image_size=32, threads=1)
    result = fit(cfg, train, val, tmp_path / "run")
    copies = list((tmp_path / "run" / "offline_aug").rglob("*.jpg"))
    assert len(copies) == 2 * len(train)
    assert result.summary["n_train"] == 3 * len(train)
    assert sorted(p.name for p in (ws_root / "crops").rglob("*")) == before  # nothing beside the user's data


def test_seed_preset_is_the_seeds_recipe() -> None:
    cfg = TrainConfig.from_preset(Preset.SEED, backbone="resnet18").resolved()
    assert (cfg.image_size, cfg.normalize, cfg.optimizer.value, cfg.lr, cfg.batch_size, cfg.epochs) == (
        224,
        False,
        "adam",
        1e-3,
        32,
        100,
    )
    assert cfg.patience == 0  # the seed kept the best epoch of all 100, no early stop
    # Options given on the command line win over the preset.
    assert TrainConfig.from_preset(Preset.SEED, epochs=5).epochs == 5
    assert set(PRESETS) == set(Preset)


def test_config_yaml_round_trip_and_bad_values(tmp_path: Path) -> None:
    cfg = TrainConfig(backbone="efficientnet_lite0", strategy="two-stage", augment="strong").resolved()
    cfg.save(tmp_path / "config.yaml")
    assert TrainConfig.load(tmp_path / "config.yaml") == cfg
    with pytest.raises(ValueError, match="one of"):
        TrainConfig(strategy="melt")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})


def test_cuda_requested_without_cuda_is_an_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    device, text = resolve_device("auto")
    assert device.type == "cpu" and "no CUDA device found" in text  # said, not silent


def _cli(args: list[str]):
    from facelab.cli import COMMAND_MODULES, app

    for module in COMMAND_MODULES:
        __import__(module)
    return CliRunner().invoke(app, args)


def test_train_command_writes_a_run_and_prints_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws_root = pattern_workspace(tmp_path / "ws")
    monkeypatch.setenv(wts.OFFLINE_ENV, "1")
    args = [
        "train",
        str(ws_root),
        "--backbone",
        "reference",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--threads",
        "1",
        "--name",
        "cli",
        "--quiet",
    ]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    run = ws_root / "runs" / "cli"
    assert result.stdout.strip().endswith(str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backbone"] == "reference" and summary["weights"] == "none"
    assert summary["strategy"] == "feature-extract" and summary["augment"] == "rotation"  # defaults
    again = _cli(["train", str(ws_root), "--name", "cli", "--resume", "--epochs", "3", "--quiet"])
    assert again.exit_code == 0, again.output
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 3


def test_train_command_explains_missing_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws_root = pattern_workspace(tmp_path / "ws")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(wts.OFFLINE_ENV, "1")
    result = _cli(["train", str(ws_root), "--backbone", "resnet18", "--quiet"])
    assert result.exit_code == 2
    assert "--weights none" in result.output and "mobilenet_v2" in result.output
    assert not (ws_root / "runs").exists() or not any((ws_root / "runs").rglob("last.pt"))


def test_train_command_hands_the_embedding_track_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facelab.embed_track

    ws_root = pattern_workspace(tmp_path / "ws")
    calls = []

    def fake(ws, **kwargs):
        calls.append((ws, kwargs))
        return ws.runs_dir / "emb"

    import facelab.workflow

    monkeypatch.setattr(facelab.embed_track, "train_embedding_run", fake)
    deployed = []
    monkeypatch.setattr(
        facelab.workflow,
        "deploy",
        lambda ws, run_dir, **kw: deployed.append(run_dir) or facelab.workflow.Deployment(False, None, "kept"),
    )
    result = _cli(["train", str(ws_root), "--track", "embedding", "--head", "knn", "--faces", "all"])
    assert result.exit_code == 0, result.output
    _, kwargs = calls[0]
    assert kwargs == {
        "head": "knn",
        "name": None,
        "faces": "all",
        "strangers": None,
        "target_fpir": 0.01,
        "include_others": False,
        "progress": None,
        "model": "dlib",
    }
    assert result.stdout.strip().endswith("emb")
    assert [p.name for p in deployed] == ["emb"]  # proposed for deployment, by the one rule
    assert "not made current: kept" in result.stderr


def test_worker_processes_and_a_device_that_is_missing(tmp_path: Path) -> None:
    import torch

    train, val = _tiny(pattern_workspace(tmp_path / "ws"))
    cfg = TrainConfig(backbone="reference", strategy=Strategy.FINE_TUNE, epochs=1, image_size=32, threads=1)
    result = fit(dataclasses.replace(cfg, num_workers=1), train, val, tmp_path / "workers")
    assert result.summary["epochs_run"] == 1
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            fit(dataclasses.replace(cfg, device="cuda"), train, val, tmp_path / "cuda")
        assert not (tmp_path / "cuda").exists()  # a run that cannot start leaves nothing behind


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_monitor_picks_the_kept_epoch(tmp_path: Path, monitor: str) -> None:
    train, val = _tiny(pattern_workspace(tmp_path / "ws"))
    cfg = TrainConfig(
        backbone="reference",
        strategy=Strategy.FINE_TUNE,
        augment=Augment.NONE,
        epochs=6,
        patience=0,
        lr=3e-3,
        image_size=32,
        batch_size=4,
        threads=1,
        monitor=monitor,
    )
    result = fit(cfg, train, val, tmp_path / "run")
    history = read_history(tmp_path / "run" / "history.csv")
    losses = [row["val_loss"] for row in history]
    accuracies = [row["val_accuracy"] for row in history]
    if monitor == "val_loss":
        # The lowest loss; ties go to the higher accuracy, then the earlier epoch.
        best = min(range(len(history)), key=lambda i: (losses[i], -accuracies[i], i))
    else:
        best = min(range(len(history)), key=lambda i: (-accuracies[i], losses[i], i))
    assert result.summary["best_epoch"] == history[best]["epoch"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["monitor"] == monitor
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="val_f1")
