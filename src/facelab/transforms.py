"""Preprocessing and augmentation: the eval transform comes from the weights, train = eval + a preset.

:class:`Preprocessing` is the one description of how an image becomes a network input (size,
interpolation, normalisation statistics). It is derived from the weights' own transforms
(``Weights.transforms()`` in torchvision) by :func:`preprocessing_for`, stored beside every run's
weights as ``preprocessing.json``, and turned into the eval transform by :func:`eval_transform`,
so training, evaluation and recognition can never disagree.

Transforms work on ``uint8`` CHW tensors (``torchvision.transforms.v2``). Face crops are resized
whole to ``image_size`` × ``image_size``: unlike ImageNet's resize-then-centre-crop, the crop's
margin was chosen when the crops were made and cutting into it would lose the chin and hair.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, ResolvedWeights
from facelab.config import Augment

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a network input. ``mean``/``std`` None: raw 0–1 pixels (the seed's way)."""

    image_size: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    interpolation: str = "bilinear"
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        data = json.loads(text)
        for key in ("mean", "std"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def preprocessing_for(
    spec: BackboneSpec,
    weights: ResolvedWeights,
    image_size: int,
    normalize: bool | None = None,
    augment: Augment = Augment.NONE,
) -> Preprocessing:
    """The preprocessing a run uses.

    ``normalize`` None: normalise exactly when the backbone's weights expect it (their own
    statistics, also for ``--weights none`` since they describe photos, not the weights); the
    ``normalize`` augment preset forces ImageNet statistics even for the from-scratch CNN.
    """
    stats = spec.normalization(weights.option)
    force = AUGMENTS[Augment(augment)].force_normalize
    use = force or (normalize if normalize is not None else stats is not None)
    interpolation = stats.interpolation if stats is not None else "bilinear"
    if not use:
        return Preprocessing(image_size, None, None, interpolation, "no normalisation")
    if stats is None:
        return Preprocessing(image_size, IMAGENET_MEAN, IMAGENET_STD, interpolation, "ImageNet statistics")
    return Preprocessing(image_size, stats.mean, stats.std, interpolation, stats.source)


# -- augmentation presets -----------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentPreset:
    """An augmentation preset.

    ``ops(size)`` gives v2 transforms applied to the resized ``uint8`` image; ``random_crop``
    replaces the plain resize by a random resized crop; ``noise_sigma`` adds Gaussian noise to the
    0–1 float image; ``force_normalize`` turns ImageNet normalisation on.
    """

    name: Augment
    description: str
    ops: Callable[[int], list[Any]] = lambda size: []
    random_crop: bool = False
    noise_sigma: float = 0.0
    force_normalize: bool = False

    @property
    def is_random(self) -> bool:
        """Whether two passes over an image differ (if not, feature caching needs one pass only)."""
        return bool(self.ops(32)) or self.random_crop or self.noise_sigma > 0


def _rotation(size: int) -> list[Any]:
    from torchvision.transforms import v2

    return [v2.RandomRotation(20)]


def _flip(size: int) -> list[Any]:
    from torchvision.transforms import v2

    return [v2.RandomHorizontalFlip()]


def _color(size: int) -> list[Any]:
    from torchvision.transforms import v2

    # Phone photos differ mostly in exposure and white balance; hue shifts beyond ±0.02 make skin
    # colours no camera produces.
    return [v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02)]


def _strong(size: int) -> list[Any]:
    from torchvision.transforms import v2

    return [
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02),
        v2.RandomGrayscale(p=0.1),
    ]


AUGMENTS: dict[Augment, AugmentPreset] = {
    preset.name: preset
    for preset in (
        AugmentPreset(Augment.NONE, "no augmentation"),
        AugmentPreset(Augment.ROTATION, "random rotation within ±20° (the seed's best)", _rotation),
        AugmentPreset(Augment.RESIZED_CROP, "random crop of 70–100% of the face, resized back", random_crop=True),
        AugmentPreset(Augment.NOISE, "Gaussian pixel noise, σ 0.01", noise_sigma=0.01),
        AugmentPreset(
            Augment.NORMALIZE,
            "no augmentation; ImageNet normalisation forced on (the seed tried it as an augmentation)",
            force_normalize=True,
        ),
        AugmentPreset(Augment.FLIP, "random horizontal flip", _flip),
        AugmentPreset(Augment.COLOR, "brightness, contrast, saturation and slight hue jitter", _color),
        AugmentPreset(
            Augment.STRONG,
            "resized crop + flip + rotation ±15° + colour jitter + 10% grey + noise σ 0.01",
            _strong,
            random_crop=True,
            noise_sigma=0.01,
        ),
    )
}

# Random resized crop: keep most of the face (a crop of the forehead alone names nobody).
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (0.9, 1.1)


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


def _tail(pre: Preprocessing, noise_sigma: float = 0.0) -> list[Any]:
    import torch
    from torchvision.transforms import v2

    ops: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
    if noise_sigma > 0:
        ops.append(v2.GaussianNoise(sigma=noise_sigma, clip=True))
    if pre.mean is not None and pre.std is not None:
        ops.append(v2.Normalize(list(pre.mean), list(pre.std)))
    return ops


def eval_transform(pre: Preprocessing) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 CHW image → normalised float input: resize the whole crop, scale to 0–1, normalise."""
    from torchvision.transforms import v2

    size = (pre.image_size, pre.image_size)
    return v2.Compose([v2.Resize(size, interpolation=_interpolation(pre.interpolation), antialias=True), *_tail(pre)])


def train_transform(pre: Preprocessing, augment: Augment) -> Callable[[torch.Tensor], torch.Tensor]:
    """The eval transform with ``augment``'s random operations inserted before the float conversion."""
    from torchvision.transforms import v2

    preset = AUGMENTS[Augment(augment)]
    size = (pre.image_size, pre.image_size)
    interpolation = _interpolation(pre.interpolation)
    if preset.random_crop:
        first = v2.RandomResizedCrop(
            size, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=interpolation, antialias=True
        )
    else:
        first = v2.Resize(size, interpolation=interpolation, antialias=True)
    return v2.Compose([first, *preset.ops(pre.image_size), *_tail(pre, preset.noise_sigma)])


def offline_transform(augment: Augment, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``augment``'s random operations at the crop's own size, uint8 in and out (``--offline-aug``)."""
    import torch
    from torchvision.transforms import v2

    preset = AUGMENTS[Augment(augment)]
    ops: list[Any] = []
    if preset.random_crop:
        ops.append(v2.RandomResizedCrop((size, size), scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True))
    ops.extend(preset.ops(size))
    if preset.noise_sigma > 0:
        ops += [
            v2.ToDtype(torch.float32, scale=True),
            v2.GaussianNoise(sigma=preset.noise_sigma, clip=True),
            v2.ToDtype(torch.uint8, scale=True),
        ]
    return v2.Compose(ops) if ops else v2.Identity()


# -- reading images -----------------------------------------------------------------------------


def read_image(path: Path) -> torch.Tensor:
    """A crop file as a uint8 CHW RGB tensor; the error names the file and the fix.

    Decoded by Pillow through :func:`facelab.imageio.load_rgb` (torchvision's decoders are
    deprecated since 0.29); a 256-pixel JPEG takes about a millisecond.
    """
    from facelab.imageio import ImageError, load_rgb

    try:
        return from_array(load_rgb(path))
    except ImageError as exc:
        raise ValueError(
            f"{exc.path}: cannot read this face crop ({exc.reason}); re-create it with facelab build"
        ) from exc


def from_array(rgb: np.ndarray) -> torch.Tensor:
    """An H×W×3 uint8 array (a crop made on the fly) as a uint8 CHW tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()
