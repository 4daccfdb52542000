"""Loading a finished transfer run back: :class:`TransferModel`, the ``transfer`` track's loader.

It satisfies :class:`facelab.runs.Model` (scores for photos and workspace faces) and also gives
the backbone's penultimate features. Importing this module registers the loader.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab import backbones as bb
from facelab.config import TrainConfig
from facelab.gate import EmbeddingGate
from facelab.runs import read_summary, register_loader
from facelab.transfer_device import _threads
from facelab.transfer_network import _FeatureTap, _head, build_from_state, pooled
from facelab.transforms import Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

    from facelab.items import SplitItem
    from facelab.types import Face

TRACK = "transfer"


class TransferModel:
    """A trained transfer run: satisfies :class:`facelab.runs.Model`, plus penultimate features.

    The network loads on first use (``device`` ``auto``: CUDA when present). ``threshold`` comes
    from ``openset.json`` when the run was calibrated, else None (never answers unknown).
    """

    score_kind = "probability"

    def __init__(self, run_dir: Path | str, device: str = "auto", batch_size: int = 64) -> None:
        self.run_dir = Path(run_dir)
        self.summary = read_summary(self.run_dir)
        self.config = TrainConfig.load(self.run_dir / "config.yaml")
        self.classes: list[str] = json.loads((self.run_dir / "classes.json").read_text(encoding="utf-8"))
        self.preprocessing = Preprocessing.load(self.run_dir / "preprocessing.json")
        self.crop_margin = float(self.summary.get("crop_margin", self.config.crop_margin))
        openset = self.run_dir / "openset.json"
        calibration = json.loads(openset.read_text(encoding="utf-8")) if openset.exists() else {}
        self.threshold: float | None = calibration.get("threshold")
        self.min_margin: float | None = calibration.get("min_margin")
        # A name stands only if the face embedding agrees (facelab.gate); refused rows score −1,
        # so the gate needs a threshold of at least 0 even where the softmax has none.
        self.gate = EmbeddingGate.load(self.run_dir)
        if self.gate is not None and self.threshold is None:
            self.threshold = 0.0
        self.workspace = Path(self.summary["workspace"]) if self.summary.get("workspace") else None
        self.batch_size = batch_size
        self._device_request = device
        self._net: Any = None
        self._transform: Any = None

    # -- the network -----------------------------------------------------------------------
    @property
    def spec(self) -> bb.BackboneSpec:
        return bb.get(self.config.backbone)

    @property
    def net(self) -> nn.Module:
        if self._net is None:
            from facelab.transfer_device import load_best_weights
            from facelab.transforms import eval_transform

            self.device, state = load_best_weights(self.run_dir, self._device_request)
            net = build_from_state(self.spec, len(self.classes), self.preprocessing.image_size, state)
            self._net = net.to(self.device).eval()
            self._transform = eval_transform(self.preprocessing)
        return self._net

    def _batches(self, images: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, features) per batch of uint8 CHW tensors; images are consumed lazily."""
        import torch

        net = self.net
        tap = _FeatureTap(_head(net, self.spec))
        iterator = iter(images)
        try:
            with torch.inference_mode():
                while chunk := list(itertools.islice(iterator, self.batch_size)):
                    with _threads(1):  # per-image resizing: small work, see _Crops
                        batch = torch.stack([self._transform(im) for im in chunk])
                    logits = net(batch.to(self.device)).float().flatten(1)
                    assert tap.value is not None
                    yield logits, pooled(tap.value.float())
        finally:
            tap.close()

    def _run(self, images: Iterable[Any], want: str) -> np.ndarray:
        import torch

        outs = []
        for logits, features in self._batches(images):
            out = torch.softmax(logits, dim=1) if want == "scores" else features
            outs.append(out.cpu().numpy())
        if outs:
            return np.concatenate(outs).astype(np.float32)
        width = len(self.classes) if want == "scores" else self.spec.feature_dim
        return np.zeros((0, width), np.float32)

    # -- Model protocol ----------------------------------------------------------------------
    def predict_images(self, images: Iterable[Any]) -> np.ndarray:
        """Softmax probabilities ``(n, classes)`` for uint8 CHW tensors of face crops."""
        return self._run(images, "scores")

    def predict_items(self, items: Sequence[SplitItem]) -> np.ndarray:
        """Probabilities for workspace faces, read from their crop files one batch at a time (−1 for
        a face whose name the embedding gate refuses)."""
        from facelab.transforms import read_image

        scores = self.predict_images(read_image(item.crop_path) for item in items)
        if self.gate is None:
            return scores
        return self.gate.apply_to_items(scores, self.workspace, items, self.classes)

    def _face_crops(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[Any]:
        from facelab.align import crop_face
        from facelab.transforms import from_array

        # The same margin as the training crops: a tighter or looser crop is a different picture.
        return [from_array(crop_face(rgb, face, margin=self.crop_margin, size=256)) for face in faces]

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        scores = self.predict_images(self._face_crops(rgb, faces))
        if self.gate is None:
            return scores
        return self.gate.apply_to_faces(scores, rgb, faces, self.classes)

    # -- penultimate features ----------------------------------------------------------------
    def features_images(self, images: Iterable[Any]) -> np.ndarray:
        """The head's input (the backbone's feature vector) ``(n, feature_dim)`` for uint8 CHW tensors."""
        return self._run(images, "features")

    def features_items(self, items: Sequence[SplitItem]) -> np.ndarray:
        """Penultimate-layer features of workspace faces, e.g. for an embedding-track head."""
        from facelab.transforms import read_image

        return self.features_images(read_image(item.crop_path) for item in items)

    def features_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        return self.features_images(self._face_crops(rgb, faces))


register_loader(TRACK, TransferModel)
