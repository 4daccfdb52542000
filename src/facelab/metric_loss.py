"""The metric stage's loss: CosFace (additive cosine margin) with a "nobody" logit for bystanders.

Why CosFace and not ArcFace: both put a margin between a face and the other people's centres on
the unit sphere. ArcFace adds it to the *angle*, ``cos(θ + m)``, which is not monotonic once
``θ + m`` passes π and needs the "easy margin" / ``θ + m > π`` special cases to train stably;
CosFace subtracts it from the *cosine*, ``cos θ − m``, which is monotonic everywhere, so it trains
from a short warm-up on a few hundred faces without those cases, and its margin is in the same
unit as the unknown threshold that is calibrated afterwards (a cosine). On the large face data
sets both papers report nearly the same accuracy.

Per face with embedding ``e`` (unit length) and person centres ``W`` (unit rows), the logits are
``s · cos(e, W_c)``, the face's own person's lowered by ``s · m``. One more logit, constant,
stands for *nobody*: ``s · τ``. A person's face must beat it too (own cosine above ``τ + m``),
and a bystander — a face in the user's photos who is none of the people — takes it as its target,
lowered by the margin (every person's cosine below ``τ − m``). Bystanders are many different
people, so they get no centre of their own; this pushes them away from *every* person's centre,
which is what a stranger needs for the unknown threshold to work.

Tuning (defaults in :class:`facelab.metric_net.MetricParams`):

- ``scale`` ``s`` [16]: sharpness of the softmax. Large-scale face training uses 30–64 for
  thousands of people; a handful of people saturate the loss sooner, and 16 keeps gradients alive.
  Raise it if the training loss stalls high while accuracy is already perfect.
- ``margin`` ``m`` [0.25]: the gap demanded between a face and the other centres (0 is plain
  normalised softmax, what the warm-up uses). 0.2–0.35 is the usual range; larger separates people
  more but may not converge with few, varied photos (watch the training accuracy).
- ``nobody`` ``τ`` [0.3]: the cosine that splits people from bystanders during training. It only
  shapes the embedding; the answer's unknown threshold is calibrated afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

NOBODY = -1  # the label of a bystander in a batch


def cosface_logits(
    cosines: torch.Tensor, labels: torch.Tensor, *, scale: float, margin: float, nobody: float
) -> torch.Tensor:
    """Logits ``(n, people + 1)``: scaled cosines to each person's centre with the own person's
    lowered by the margin, and a last column for *nobody* (lowered by the margin for bystanders,
    whose label is :data:`NOBODY`)."""
    import torch

    n, people = cosines.shape
    target = torch.where(labels == NOBODY, torch.full_like(labels, people), labels)
    logits = torch.cat([cosines, cosines.new_full((n, 1), nobody)], dim=1)
    penalty = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), margin)
    return scale * (logits - penalty)


def cosface_loss(
    cosines: torch.Tensor, labels: torch.Tensor, *, scale: float, margin: float, nobody: float
) -> torch.Tensor:
    """Mean cross-entropy of :func:`cosface_logits` (people and bystanders alike, one term per face)."""
    import torch

    people = cosines.shape[1]
    target = torch.where(labels == NOBODY, torch.full_like(labels, people), labels)
    logits = cosface_logits(cosines, labels, scale=scale, margin=margin, nobody=nobody)
    return torch.nn.functional.cross_entropy(logits, target)


def margin_head(n_people: int, dim: int, seed: int = 0) -> nn.Module:
    """The learnable person centres ``W`` (``n_people × dim``; normalised when used): a module whose
    ``forward(e)`` gives the cosines of unit embeddings ``e`` to every centre."""
    import torch
    from torch import nn

    class Centres(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.weight = nn.Parameter(torch.randn(n_people, dim, generator=generator) / dim**0.5)

        def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
            return embeddings @ nn.functional.normalize(self.weight, dim=1).T

    return Centres()
