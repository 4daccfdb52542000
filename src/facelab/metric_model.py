"""Loading a finished metric run back: :class:`MetricModel`, the ``metric`` track's loader.

It satisfies :class:`facelab.runs.Model`: faces are embedded by the run's network (crops made as
in training) and scored by the run's head over the training faces' embeddings (cosine to each
person's mean, or to their nearest faces); below the calibrated ``threshold`` a face is unknown.
Importing this module registers the loader; torch loads on first use.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab import backbones as bb
from facelab.config import TrainConfig
from facelab.metric_net import HEAD_PARAMS, MetricParams
from facelab.runs import read_summary, register_loader
from facelab.transfer_device import _threads
from facelab.transforms import Preprocessing

if TYPE_CHECKING:
    from torch import nn

    from facelab.items import SplitItem
    from facelab.types import Face

TRACK = "metric"


class MetricModel:
    """A trained metric run. ``threshold`` comes from ``openset.json`` (None until calibrated:
    then it names every face); scores are cosine similarities (``score_kind`` ``similarity``)."""

    score_kind = "similarity"

    def __init__(self, run_dir: Path | str, device: str = "auto", batch_size: int = 64) -> None:
        from facelab.embed_track import build_head

        self.run_dir = Path(run_dir)
        self.summary = read_summary(self.run_dir)
        self.config = TrainConfig.load(self.run_dir / "config.yaml")
        self.params = MetricParams.load(self.run_dir)
        self.preprocessing = Preprocessing.load(self.run_dir / "preprocessing.json")
        self.crop_margin = float(self.summary.get("crop_margin", self.config.crop_margin))
        openset = self.run_dir / "openset.json"
        calibration = json.loads(openset.read_text(encoding="utf-8")) if openset.exists() else {}
        self.threshold: float | None = calibration.get("threshold")
        self.min_margin: float | None = calibration.get("min_margin")
        self.workspace = Path(self.summary["workspace"]) if self.summary.get("workspace") else None
        with np.load(self.run_dir / "head.npz", allow_pickle=False) as data:
            self.classes: list[str] = [str(c) for c in data["classes"]]
            self.x = data["x"].astype(np.float32)
            self.y = data["y"].astype(np.int64)
            # The bystanders the network was trained to push away (calibration evidence).
            dim = self.x.shape[1] if self.x.ndim == 2 else self.params.embed_dim
            self.x_bystanders = (
                data["x_bystanders"].astype(np.float32) if "x_bystanders" in data else np.zeros((0, dim), np.float32)
            )
        # A name stands only if the face embedding agrees (facelab.gate, written by calibration):
        # the run's own threshold alone names far too many strangers (docs/benchmarks_metric.md).
        from facelab.gate import EmbeddingGate

        self.gate = EmbeddingGate.load(self.run_dir)
        self.head = build_head(self.params.head, HEAD_PARAMS)
        self.head.fit(self.x, self.y, len(self.classes))
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
            from facelab.metric_net import metric_net_from_state
            from facelab.transfer_device import load_best_weights
            from facelab.transforms import eval_transform

            self.device, state = load_best_weights(self.run_dir, self._device_request)
            net = metric_net_from_state(self.spec, self.preprocessing.image_size, self.params.embed_dim, state)
            self._net = net.to(self.device).eval()
            self._transform = eval_transform(self.preprocessing)
        return self._net

    def embed_images(self, images: Iterable[Any]) -> np.ndarray:
        """Unit embeddings ``(n, embed_dim)`` of uint8 CHW face crops; consumed lazily in batches."""
        import torch

        net, iterator, out = self.net, iter(images), []
        with torch.inference_mode():
            while chunk := list(itertools.islice(iterator, self.batch_size)):
                with _threads(1):  # per-image resizing: small work (see transfer_data._Crops)
                    batch = torch.stack([self._transform(im) for im in chunk])
                out.append(net(batch.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.params.embed_dim), np.float32)

    def embed_items(self, items: Sequence[SplitItem]) -> np.ndarray:
        """Embeddings of workspace faces, from their crop files."""
        from facelab.transforms import read_image

        return self.embed_images(read_image(item.crop_path) for item in items)

    def embed_faces(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Embeddings of faces found in a photo, cropped with the training crops' margin."""
        from facelab.align import crop_face
        from facelab.transforms import from_array

        return self.embed_images(from_array(crop_face(rgb, f, margin=self.crop_margin, size=256)) for f in faces)

    # -- Model protocol ----------------------------------------------------------------------
    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Per person, the head's cosine score of each embedding ``(n, classes)``."""
        if not len(embeddings):
            return np.zeros((0, len(self.classes)))
        return self.head.scores(embeddings)

    def predict_images(self, images: Iterable[Any]) -> np.ndarray:
        return self.scores(self.embed_images(images))

    def predict_items(self, items: Sequence[SplitItem]) -> np.ndarray:
        """Scores of workspace faces (−1 where the embedding gate refuses the name)."""
        scores = self.scores(self.embed_items(items))
        if self.gate is None or self.workspace is None:
            return scores
        return self.gate.apply_to_items(scores, self.workspace, items, self.classes)

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Scores of ``faces`` of ``rgb`` (−1 where the embedding gate refuses the name)."""
        scores = self.scores(self.embed_faces(rgb, faces))
        if self.gate is None:
            return scores
        return self.gate.apply_to_faces(scores, rgb, faces, self.classes)

    def prototypes(self) -> np.ndarray:
        """Each person's unit-length mean embedding ``(classes, embed_dim)``: the prototype head's
        centres, as a matrix (cosine score = embedding · prototype)."""
        centres = np.asarray(getattr(self.head, "centers", np.zeros((0, 0))), dtype=np.float64)
        if centres.shape != (len(self.classes), self.params.embed_dim):
            raise ValueError(f"{self.run_dir.name}: the {self.params.head} head has no prototypes")
        return centres / np.linalg.norm(centres, axis=1, keepdims=True)


register_loader(TRACK, MetricModel)
