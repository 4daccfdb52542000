"""Balanced batches for the metric stage: P people × K faces each, plus Q bystanders.

A margin loss learns from comparisons inside a batch: each person needs several faces in it (so
their faces are pulled together) and several other people beside them (so they are pushed apart).
Random batches of a small, unbalanced data set often hold one face of a person, or none of the
rarest one; P×K batches hold exactly ``K`` faces of each of ``P`` people, and the rare people are
seen as often as the common ones.

Tuning (defaults in :class:`facelab.metric_net.MetricParams`):

- ``people`` P [8, at most the number of people]: more people per batch means more negatives per
  face; with fewer people in the workspace, every batch holds all of them.
- ``faces`` K [4]: faces of each person per batch. A person with fewer faces repeats some (with
  a different augmentation each time). Raise it with many photos per person.
- ``bystanders`` Q [8]: bystander faces per batch, pushed away from every person (0: none even
  when the workspace has some).

An epoch has as many batches as it takes for the people's faces to be drawn about once each.
Faces of a person are drawn in a shuffled cycle, so every face comes round before any repeats.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from facelab.metric_loss import NOBODY


class _Cycle:
    """Indices drawn in a reshuffled cycle: each comes round once before any comes twice."""

    def __init__(self, indices: Sequence[int], rng: np.random.Generator) -> None:
        self.indices, self.rng = np.asarray(indices, dtype=np.int64), rng
        self.order: list[int] = []

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if not self.order:
                self.order = self.rng.permutation(self.indices).tolist()
            out.append(self.order.pop())
        return out


class PKBatchSampler:
    """Batches of dataset indices: ``people`` distinct people × ``faces`` faces each, then
    ``bystanders`` faces labelled :data:`facelab.metric_loss.NOBODY`.

    ``labels`` holds a person index per face (or ``NOBODY``). Usable as a DataLoader's
    ``batch_sampler``; :meth:`set_epoch` changes the draw (the same seed and epoch give the
    same batches).
    """

    def __init__(
        self, labels: Sequence[int], people: int = 8, faces: int = 4, bystanders: int = 8, seed: int = 0
    ) -> None:
        if people < 2 or faces < 1 or bystanders < 0:
            raise ValueError(f"P×K batches need people ≥ 2, faces ≥ 1, bystanders ≥ 0 (got {people}, {faces})")
        labels = np.asarray(labels, dtype=np.int64)
        self.by_person = {int(p): np.flatnonzero(labels == p) for p in np.unique(labels[labels != NOBODY])}
        if len(self.by_person) < 2:
            raise ValueError(f"P×K batches need faces of at least 2 people, found {len(self.by_person)}")
        self.bystander_indices = np.flatnonzero(labels == NOBODY)
        self.people = min(people, len(self.by_person))
        self.faces = faces
        self.bystanders = bystanders if len(self.bystander_indices) else 0
        self.seed, self.epoch = seed, 0
        person_faces = int(sum(len(v) for v in self.by_person.values()))
        self.batches = max(1, math.ceil(person_faces / (self.people * self.faces)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed * 100_003 + self.epoch)
        cycles = {p: _Cycle(idx, rng) for p, idx in self.by_person.items()}
        persons = np.array(sorted(cycles))
        others = _Cycle(self.bystander_indices, rng) if self.bystanders else None
        for _ in range(self.batches):
            batch: list[int] = []
            for person in rng.choice(persons, size=self.people, replace=False):
                batch += cycles[int(person)].take(self.faces)
            if others is not None:
                batch += others.take(self.bystanders)
            yield batch
