"""Training configuration: one dataclass, written as ``config.yaml`` beside every run.

Nothing here imports torch: the CLI builds and validates a :class:`TrainConfig` before any heavy
library loads. Options that are ``None`` mean "pick the sensible default" and are filled in by
:meth:`TrainConfig.resolved` (strategy defaults, then a preset such as ``seed``), so the YAML of a
run always records the values that were really used.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class Strategy(StrEnum):
    """How much of the backbone learns.

    ``feature-extract``: the backbone stays frozen; every image's features are computed once per
    augmentation pass and only the new head trains on them (seconds on a CPU; best with little data).
    ``fine-tune``: every layer trains from the first epoch (slowest; best with lots of data).
    ``two-stage``: head first on cached features, then all layers at a lower learning rate
    (fastai's ``fine_tune``; usually the most accurate with a few hundred faces per person).
    ``metric``: a face embedding of the user's own: a classification warm-up, then every layer
    trains with an additive-margin loss on balanced people × faces batches, bystanders pushed away
    from every person; answers with a calibrated "unknown" threshold (see :mod:`facelab.metric_fit`).
    """

    FEATURE_EXTRACT = "feature-extract"
    FINE_TUNE = "fine-tune"
    TWO_STAGE = "two-stage"
    METRIC = "metric"


class Augment(StrEnum):
    """Augmentation presets (see :mod:`facelab.transforms` for what each does)."""

    NONE = "none"
    ROTATION = "rotation"
    RESIZED_CROP = "resized-crop"
    NOISE = "noise"
    NORMALIZE = "normalize"
    FLIP = "flip"
    COLOR = "color"
    STRONG = "strong"


class Optimizer(StrEnum):
    ADAM = "adam"
    ADAMW = "adamw"


class Monitor(StrEnum):
    """Which validation figure picks the kept epoch and decides early stopping."""

    VAL_LOSS = "val_loss"  # lowest validation loss (ties: higher accuracy); the seed's choice
    VAL_ACCURACY = "val_accuracy"  # highest validation accuracy (ties: lower loss)


class Device(StrEnum):
    """``auto`` takes CUDA when present and says so; ``cuda`` fails loudly when there is none."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Preset(StrEnum):
    """Named recipes. ``seed`` reproduces the original project's training exactly."""

    DEFAULT = "default"
    SEED = "seed"


@dataclass(frozen=True)
class StrategyDefaults:
    """Per-strategy defaults, measured on celeb5 with mobilenet_v2 on 2 CPU cores (docs/benchmarks.md)."""

    epochs: int
    lr: float
    patience: int


# Why these numbers: a linear head on frozen features converges in a few dozen cheap epochs and
# tolerates a high learning rate; training all layers of an ImageNet network needs a small one
# or the pretrained features are destroyed in the first epochs.
STRATEGY_DEFAULTS: dict[Strategy, StrategyDefaults] = {
    Strategy.FEATURE_EXTRACT: StrategyDefaults(epochs=60, lr=3e-3, patience=15),
    Strategy.FINE_TUNE: StrategyDefaults(epochs=20, lr=3e-4, patience=6),
    Strategy.TWO_STAGE: StrategyDefaults(epochs=15, lr=3e-3, patience=6),
    # Metric: lr is the warm-up's (projection and class centres on cached features); the margin
    # stage trains every layer at lr × unfreeze_lr_factor, as two-stage does.
    Strategy.METRIC: StrategyDefaults(epochs=12, lr=3e-3, patience=5),
}

# The seed's recipe: Resize 224, no normalisation, Adam 1e-3, batch 32, 100 epochs, the epoch
# with the best validation accuracy kept, no early stopping, no weight decay.
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.DEFAULT: {},
    Preset.SEED: {
        "image_size": 224,
        "normalize": False,
        "optimizer": Optimizer.ADAM,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 32,
        "epochs": 100,
        "patience": 0,
        "head_epochs": 0,
        "monitor": "val_loss",
    },
}

DEFAULT_CROP_MARGIN = 1.3


@dataclass
class TrainConfig:
    """Everything that decides a transfer-track training run.

    Tuning guide (defaults in brackets):

    - ``backbone`` [mobilenet_v2]: ``facelab backbones`` lists them; bigger ones (resnet50,
      efficientnet_b0) gain little on small data sets and cost much more time on a CPU.
    - ``strategy`` [feature-extract]: see :class:`Strategy`. Start with feature-extract; try
      two-stage when validation accuracy stalls and you have a GPU or patience.
    - ``augment`` [rotation]: see :mod:`facelab.transforms`; ``strong`` helps fine-tuning with many
      epochs, ``none`` is fastest for feature extraction.
    - ``weights`` [pretrained]: ``pretrained`` (ImageNet, found offline or downloaded once),
      ``none`` (random initialisation: needs far more data and epochs), a torchvision weights name
      such as ``IMAGENET1K_V2``, or a path to a ``.pth`` file.
    - ``epochs`` / ``lr`` / ``patience`` [per strategy, see ``STRATEGY_DEFAULTS``]: raise ``epochs``
      if the validation curve still climbs at the end; lower ``lr`` 3× if it jumps around;
      ``patience`` is how many epochs without improvement stop the phase (0: never).
    - ``monitor`` [val_accuracy; the seed preset: val_loss]: the validation figure that picks the
      kept epoch (``best.safetensors``) and counts epochs without improvement. Accuracy on a few
      dozen faces moves in big steps, so under ``val_accuracy`` an epoch counts as an improvement
      when either the accuracy rose or the loss fell; ``val_loss`` keeps the surest model, often a
      little earlier.
    - ``head_epochs`` [10]: two-stage only, epochs of the head-only first stage (cheap).
    - ``unfreeze_lr_factor`` [0.1]: two-stage only, second-stage learning rate = ``lr`` × this.
    - ``batch_size`` [32]: lower it if memory runs out; larger batches need a larger ``lr``.
    - ``image_size`` [160]: side of the square network input. 224 is what ImageNet weights saw;
      160 is about twice as fast on a CPU and, for 256-pixel face crops, about as accurate.
    - ``aug_passes`` [1]: feature extraction computes the features of the plain training images
      plus this many augmented copies, and the epochs cycle through them. Each pass costs as much
      as the first; on celeb5 four rotation passes gained nothing over none (docs/benchmarks.md).
    - ``offline_aug`` [0]: write this many augmented copies of each training face into the run
      folder first and train on originals + copies without on-the-fly augmentation (the seed's way).
    - ``normalize`` [as the weights expect]: ``False`` feeds raw 0–1 pixels (the seed did).
    - ``num_workers`` [0 on CPU, up to 8 on CUDA]: DataLoader processes. On a 2-core CPU the
      network is the bottleneck and workers only steal its cores.
    - ``threads`` [all cores this process may use]: torch's intra-op threads on the CPU.
    - ``amp`` / ``channels_last`` [on]: mixed precision and NHWC memory layout; CUDA only.
    """

    backbone: str = "mobilenet_v2"
    strategy: Strategy = Strategy.FEATURE_EXTRACT
    augment: Augment = Augment.ROTATION
    weights: str = "pretrained"
    epochs: int | None = None
    lr: float | None = None
    patience: int | None = None
    head_epochs: int = 10
    unfreeze_lr_factor: float = 0.1
    optimizer: Optimizer = Optimizer.ADAMW
    monitor: Monitor = Monitor.VAL_ACCURACY
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    batch_size: int = 32
    image_size: int | None = None
    normalize: bool | None = None
    aug_passes: int = 1
    offline_aug: int = 0
    seed: int = 0
    device: Device = Device.AUTO
    num_workers: int | None = None
    threads: int | None = None
    amp: bool = True
    channels_last: bool = True
    faces: str = "resolved"
    include_others: bool = False
    crop_margin: float = DEFAULT_CROP_MARGIN
    preset: Preset = Preset.DEFAULT
    name: str | None = None

    def __post_init__(self) -> None:
        # Coerce strings (from YAML or the CLI) into enums; a wrong value names the choices.
        for name, enum in (
            ("strategy", Strategy),
            ("augment", Augment),
            ("optimizer", Optimizer),
            ("monitor", Monitor),
            ("device", Device),
            ("preset", Preset),
        ):
            value = getattr(self, name)
            try:
                setattr(self, name, enum(value))
            except ValueError as exc:
                choices = ", ".join(m.value for m in enum)
                raise ValueError(f"{name}: {value!r} is not one of: {choices}") from exc
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.offline_aug < 0 or self.aug_passes < 0:
            raise ValueError("offline_aug and aug_passes must be >= 0")

    @classmethod
    def from_preset(cls, preset: Preset | str = Preset.DEFAULT, **options: Any) -> TrainConfig:
        """A config from a preset, where every option given (not ``None``) wins over the preset."""
        preset = Preset(preset)
        values = dict(PRESETS[preset])
        values.update({k: v for k, v in options.items() if v is not None})
        return cls(preset=preset, **values)

    def resolved(self, default_image_size: int = 160) -> TrainConfig:
        """A copy with every ``None`` replaced by its default (strategy defaults, image size)."""
        defaults = STRATEGY_DEFAULTS[self.strategy]
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else defaults.epochs,
            lr=self.lr if self.lr is not None else defaults.lr,
            patience=self.patience if self.patience is not None else defaults.patience,
            image_size=self.image_size if self.image_size is not None else default_image_size,
        )

    # -- YAML ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # Enums as their plain values so the YAML reads (and diffs) like hand-written config.
        return json.loads(json.dumps(data, default=str))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, text: str) -> TrainConfig:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError("config.yaml must hold a mapping of option: value")
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        from facelab.imageio import write_text_atomic

        write_text_atomic(self.to_yaml(), Path(path))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        path = Path(path)
        try:
            return cls.from_yaml(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the training config ({exc})") from exc
