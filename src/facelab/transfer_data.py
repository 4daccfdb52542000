"""The transfer track's training data: crop files checked and labelled, loaded in batches, augmented offline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from facelab.config import TrainConfig
from facelab.transfer_device import _threads, available_cpus

if TYPE_CHECKING:
    import torch

    from facelab.transfer_report import Reporter


class _Crops:
    """A map-style dataset of crop files: (transformed image, label)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable) -> None:
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from facelab.transforms import read_image

        # One image's decode, resize and augmentation are small operations: on two threads they
        # ran 20–40× slower than on one (thread hand-offs cost more than the work).
        with _threads(1):
            return self.transform(read_image(self.paths[index])), self.labels[index]


def _loader(
    paths: Sequence[Path],
    labels: Sequence[int],
    transform: Callable,
    cfg: TrainConfig,
    device: torch.device,
    shuffle: bool,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    import torch
    from torch.utils.data import DataLoader

    workers = cfg.num_workers
    if workers is None:
        # On a CPU the network needs every core; decoding a 256-pixel JPEG costs ~1 ms against
        # ~30–100 ms of network per image, so worker processes would only compete with it.
        workers = min(8, available_cpus()) if device.type == "cuda" else 0
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        _Crops(paths, labels, transform),  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=generator,
        # Workers live as long as the loader (a phase), not an epoch: starting them costs seconds.
        persistent_workers=workers > 0,
    )


def _offline_augment(
    train: list[tuple[Path, str]], cfg: TrainConfig, folder: Path, reporter: Reporter
) -> list[tuple[Path, str]]:
    """Write ``cfg.offline_aug`` augmented copies of every training crop under ``folder``.

    Copies live in the run folder, never beside the user's photos; existing copies are kept, so
    a resumed run does not redo them.
    """
    import torch

    from facelab.imageio import save_jpeg_atomic
    from facelab.transforms import offline_transform, read_image

    copies: list[tuple[Path, str]] = []
    reporter.task(f"offline augmentation ×{cfg.offline_aug}", len(train))
    for index, (path, label) in enumerate(train):
        image = None
        for k in range(cfg.offline_aug):
            out = folder / label / f"{index:05d}-{Path(path).stem}-aug{k}.jpg"
            if not out.exists():
                if image is None:
                    image = read_image(path)
                torch.manual_seed(cfg.seed * 100_003 + index * 101 + k)
                augmented = offline_transform(cfg.augment, image.shape[-1])(image)
                save_jpeg_atomic(augmented.permute(1, 2, 0).numpy(), out)
            copies.append((out, label))
        reporter.advance()
    return copies


def _labelled(samples: Sequence[tuple[Path | str, str]], index: dict[str, int]) -> list[tuple[Path, int]]:
    return [(Path(p), index[label]) for p, label in samples if label in index]


def _check_files(samples: Sequence[tuple[Path | str, str]], reporter: Reporter) -> list[tuple[Path | str, str]]:
    """Drop missing or empty crop files, naming each (the run goes on with the others)."""
    kept = []
    for path, label in samples:
        p = Path(path)
        if p.is_file() and p.stat().st_size > 0:
            kept.append((path, label))
        else:
            reporter.message(f"[yellow]{p}: crop file missing or empty — skipped (re-run facelab build)[/]")
    return kept
