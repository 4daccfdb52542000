"""The metric stage's network: a backbone without its classifier, a projection, unit length.

``MetricNet(x) = normalise(projection(pooled(backbone(x))))``, the projection being
BatchNorm → Linear → BatchNorm (ArcFace's output layer); any registered backbone
(:mod:`facelab.backbones`) works, its classifier head replaced by an identity so its output is the
feature vector the classifier used to take. :class:`MetricParams` holds the stage's own settings and
is saved beside the run's ``config.yaml`` as ``metric.json``.

torch is imported inside the functions: importing this module loads nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab import backbones as bb

if TYPE_CHECKING:
    import torch
    from torch import nn

PARAMS_FILE = "metric.json"


@dataclass(frozen=True)
class MetricParams:
    """Settings of the metric stage (the rest — backbone, epochs, lr, augment — is the TrainConfig).

    - ``embed_dim`` [128]: length of the embedding. 128 is dlib's and FaceNet's; a few people
      need far fewer dimensions, and more only cost memory.
    - ``margin`` [0.25], ``scale`` [16], ``nobody`` [0.3]: the CosFace loss (see
      :mod:`facelab.metric_loss` for what each does and how to tune it).
    - ``people`` [8], ``faces`` [4], ``bystanders`` [8]: the P×K(+Q) batch (see
      :mod:`facelab.metric_sampler`).
    - ``mixes`` [8]: per batch, this many blends of two different people's faces (half and half)
      trained as *nobody*, like bystanders: the space between the people becomes nobody's, so each
      person's region tightens and a stranger — who resembles several people a little — falls
      outside them ("data placeholders", Zhou et al., CVPR 2021). 0 turns it off; raise it when the
      workspace has few bystanders and strangers are named too often.
    - ``head`` [prototype]: how the trained embedding names a face, over the training faces'
      embeddings: ``prototype`` (cosine to each person's mean; exportable to ONNX) or ``knn``
      (mean cosine of the 3 nearest faces of each person).
    """

    embed_dim: int = 128
    margin: float = 0.25
    scale: float = 16.0
    nobody: float = 0.3
    people: int = 8
    faces: int = 4
    bystanders: int = 8
    mixes: int = 8
    head: str = "prototype"

    def __post_init__(self) -> None:
        if self.embed_dim < 2:
            raise ValueError(f"embed_dim must be at least 2, got {self.embed_dim}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if self.head not in ("prototype", "knn"):
            raise ValueError(f"head must be prototype or knn, not {self.head!r}")

    def save(self, run_dir: Path) -> None:
        from facelab.imageio import write_text_atomic

        write_text_atomic(json.dumps(asdict(self), indent=2) + "\n", Path(run_dir) / PARAMS_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> MetricParams:
        path = Path(run_dir) / PARAMS_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The head's keyword arguments (facelab.embed_track.build_head): the embedding is trained on cosines.
HEAD_PARAMS: dict[str, Any] = {"metric": "cosine"}


def build_metric_net(
    spec: bb.BackboneSpec, weights: bb.ResolvedWeights, image_size: int | None, embed_dim: int
) -> nn.Module:
    """A new metric network: the backbone with ``weights`` loaded, its head an identity, and a fresh
    projection to ``embed_dim``."""
    from torch import nn

    backbone = bb.build_model(spec, 2, weights, image_size)
    feature_dim = bb.head_in_features(backbone.get_submodule(spec.head))
    bb.replace_module(backbone, spec.head, nn.Identity())
    return _metric_net(backbone, feature_dim, embed_dim)


def metric_net_from_state(
    spec: bb.BackboneSpec, image_size: int | None, embed_dim: int, state: dict[str, torch.Tensor]
) -> nn.Module:
    """The network of a finished run, every weight from ``state`` (``best.safetensors``)."""
    net = build_metric_net(spec, bb.NO_WEIGHTS, image_size, embed_dim)
    net.load_state_dict(state)
    return net


def _metric_net(backbone: nn.Module, feature_dim: int, embed_dim: int) -> nn.Module:
    """Built by a function so that torch loads only when a network is made."""
    from torch import nn

    from facelab.transfer_network import pooled

    class MetricNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            # ArcFace's output layer (BN, FC, BN): pooled ReLU features are all positive, so their
            # common direction would dominate every embedding and put all faces — strangers too —
            # at cosines near 1 of each other; centring before and after the projection spreads
            # them over the sphere (without it, tiny runs gave every stranger 0.99).
            self.projection = nn.Sequential(
                nn.BatchNorm1d(feature_dim),
                nn.Linear(feature_dim, embed_dim, bias=False),
                nn.BatchNorm1d(embed_dim),
            )
            self.feature_dim, self.embed_dim = feature_dim, embed_dim

        def features(self, images: torch.Tensor) -> torch.Tensor:
            """The backbone's feature vectors (what the warm-up caches)."""
            return pooled(self.backbone(images))

        def embed_features(self, features: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.projection(features), dim=1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.embed_features(self.features(images))

    return MetricNet()
