"""The parts of a transfer network the track works with: its head, the head's input (features), weights.

Used both to train (:mod:`facelab.transfer_loop`) and to load a finished run
(:mod:`facelab.transfer_model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from facelab import backbones as bb

if TYPE_CHECKING:
    import torch
    from torch import nn


def _head(model: nn.Module, spec: bb.BackboneSpec) -> nn.Module:
    return model.get_submodule(spec.head)


class _FeatureTap:
    """Captures the input of the head module: the backbone's features for each image."""

    def __init__(self, head: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        self.value = args[0].detach()

    def close(self) -> None:
        self._handle.remove()


def build_from_state(
    spec: bb.BackboneSpec, num_classes: int, image_size: int | None, state: dict[str, torch.Tensor]
) -> nn.Module:
    """The network with every weight taken from ``state`` (a checkpoint).

    Built on torch's meta device and then given the checkpoint's tensors, so no time goes into a
    random initialisation that would be overwritten (seconds for VGG-16).
    """
    import torch

    with torch.device("meta"):
        model = bb.build_model(spec, num_classes, bb.NO_WEIGHTS, image_size)
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        # A buffer the checkpoint does not hold (non-persistent): build for real instead.
        model = bb.build_model(spec, num_classes, bb.NO_WEIGHTS, image_size)
        model.load_state_dict(state)
    return model


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Feature maps (squeezenet's head takes one) averaged to vectors; vectors unchanged."""
    return features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)
