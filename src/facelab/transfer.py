"""Transfer-learning track: train a classifier on an ImageNet backbone, and load the run back.

:func:`fit` trains on plain lists of ``(crop path, person)`` and writes a self-describing run
folder; :func:`train_workspace` feeds it a workspace's train/val split. :class:`TransferModel`
(registered as the ``transfer`` track's loader) turns the folder back into a
:class:`facelab.runs.Model`.

Run folder ``WS/runs/<name>/``::

    config.yaml          the TrainConfig, every default filled in
    classes.json         class order of the outputs
    preprocessing.json   image size, interpolation, normalisation (from the weights)
    best.safetensors     weights of the epoch with the best validation accuracy
    last.pt              everything --resume needs (model, optimizer, counters, history)
    history.csv          per epoch: phase, train/val loss and accuracy, lr, seconds
    curves.png           accuracy and loss against epoch
    summary.json         what the run is and how it did (read by evaluate, compare, recognize)

Strategies are phases (:data:`STRATEGIES`): a phase either trains the head alone on cached
features (the backbone is frozen, so each image goes through it once per augmentation pass, not
once per epoch) or trains every layer on images.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facelab import backbones as bb
from facelab.config import Augment, Device, Strategy, TrainConfig
from facelab.gate import EmbeddingGate, fit_gate
from facelab.imageio import write_text_atomic
from facelab.items import OTHERS, class_names_of
from facelab.runs import HISTORY_FIELDS, read_summary, register_loader
from facelab.transforms import AUGMENTS, Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

    from facelab.items import SplitItem
    from facelab.store import Workspace
    from facelab.types import Face

TRACK = "transfer"
# A cached (head-only) phase runs hundreds of epochs a second; writing the whole network to
# last.pt after each would dominate, so it is written at most this often (and at phase ends).
CACHED_CHECKPOINT_EVERY_S = 10.0


# -- progress -----------------------------------------------------------------------------------


class Reporter(Protocol):
    """Where training reports progress: a Rich bar on the CLI, nothing in tests."""

    def message(self, text: str) -> None: ...

    def task(self, description: str, total: int) -> None: ...

    def advance(self, n: int = 1, **fields: str) -> None: ...

    def done(self) -> None: ...


class NullReporter:
    def message(self, text: str) -> None:
        pass

    def task(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, **fields: str) -> None:
        pass

    def done(self) -> None:
        pass


class PrintReporter(NullReporter):
    """Messages only, to stderr (benchmarks and scripts)."""

    def message(self, text: str) -> None:
        from rich.text import Text

        print(Text.from_markup(text).plain, file=sys.stderr, flush=True)


class RichReporter:
    """A Rich progress bar on stderr (stdout stays parseable): loss, accuracy, ETA per phase."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def task(self, description: str, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        elif self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        self._task = self._progress.add_task(description, total=total, status="")

    def advance(self, n: int = 1, **fields: str) -> None:
        if self._progress is None or self._task is None:
            return
        if fields:
            status = "  ".join(f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, advance=n, status=status)
        else:
            self._progress.advance(self._task, n)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


# -- strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """Part of a schedule: ``cached`` phases train only the head, on features computed up front."""

    name: str
    epochs: int
    lr: float
    train_backbone: bool

    @property
    def cached(self) -> bool:
        return not self.train_backbone


def _feature_extract(cfg: TrainConfig) -> list[Phase]:
    return [Phase("head", cfg.epochs or 0, cfg.lr or 0.0, train_backbone=False)]


def _fine_tune(cfg: TrainConfig) -> list[Phase]:
    return [Phase("all", cfg.epochs or 0, cfg.lr or 0.0, train_backbone=True)]


def _two_stage(cfg: TrainConfig) -> list[Phase]:
    # fastai's fine_tune: the new head first, so its random weights do not send large gradients
    # into the pretrained layers; then everything at a lower rate.
    lr = cfg.lr or 0.0
    return [
        Phase("head", cfg.head_epochs, lr, train_backbone=False),
        Phase("all", cfg.epochs or 0, lr * cfg.unfreeze_lr_factor, train_backbone=True),
    ]


STRATEGIES: dict[Strategy, Callable[[TrainConfig], list[Phase]]] = {
    Strategy.FEATURE_EXTRACT: _feature_extract,
    Strategy.FINE_TUNE: _fine_tune,
    Strategy.TWO_STAGE: _two_stage,
}


def _make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    import torch

    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return optimizers[cfg.optimizer.value](params, lr=lr, weight_decay=cfg.weight_decay)


# -- devices ------------------------------------------------------------------------------------


def available_cpus() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(requested: Device | str) -> tuple[torch.device, str]:
    """The torch device to use and a sentence saying which and why; errors if CUDA is asked but absent."""
    import torch

    requested = Device(requested)
    has_cuda = torch.cuda.is_available()
    if requested is Device.CUDA and not has_cuda:
        raise RuntimeError(
            "--device cuda: no CUDA device is visible to torch "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu"
        )
    if requested is Device.CPU or not has_cuda:
        why = "as asked" if requested is Device.CPU else "no CUDA device found"
        return torch.device("cpu"), f"cpu ({why})"
    return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads. A linear head on cached features is a few tiny matrix
    products, where synchronising threads costs more than the work (measured: 4 ms per epoch on
    one thread, 300 ms on two when the machine is busy)."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed_all(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(cfg: TrainConfig, epoch: int) -> int:
    # Each epoch seeds afresh from (seed, epoch), so a resumed run draws the same shuffles and
    # augmentations as an uninterrupted one without storing generator states.
    return cfg.seed * 100_003 + epoch


# -- data ---------------------------------------------------------------------------------------


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


# -- the model's parts --------------------------------------------------------------------------


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


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors (channels-last ones are not contiguous).
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _atomic_path(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)`` beside ``path``, then rename: readers never see half a file.

    Checkpoints go straight to disk rather than through memory: VGG-16's last.pt with Adam's
    state is 1.5 GB.
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_safetensors(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    _atomic_path(path, lambda tmp: save_file(_state_dict_cpu(model), tmp, metadata=metadata))


def _torch_save_atomic(obj: Any, path: Path) -> None:
    import torch

    _atomic_path(path, lambda tmp: torch.save(obj, tmp))


# -- training state -----------------------------------------------------------------------------


@dataclass
class _State:
    """Everything besides weights that --resume restores."""

    epoch: int = 0  # epochs finished, all phases together
    phase_index: int = 0
    phase_epoch: int = 0  # epochs finished in the current phase
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_val_loss: float = float("inf")
    seconds_to_best: float = 0.0
    stop_loss: float = float("inf")  # early stopping: lowest val loss of the phase
    bad_epochs: int = 0
    elapsed: float = 0.0  # training seconds, all sessions together
    cpu_seconds: float = 0.0  # process CPU time of training (less sensitive to other jobs than wall time)
    feature_seconds: float = 0.0
    stopped_early: list[int] = field(default_factory=list)  # phases that stopped early
    history: list[dict[str, Any]] = field(default_factory=list)
    weights_label: str = "none"
    weights_id: str | None = None


@dataclass
class RunResult:
    """What :func:`fit` returns: the folder, its summary, and the trained model (best weights)."""

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    model: TransferModel


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(out.getvalue(), path)


def read_history(path: Path) -> list[dict[str, Any]]:
    """``history.csv`` back as dicts with numbers as numbers."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key == "phase":
                parsed[key] = value
            elif key == "epoch":
                parsed[key] = int(value)
            else:
                parsed[key] = float(value) if value not in ("", None) else float("nan")
        out.append(parsed)
    return out


def default_run_name(cfg: TrainConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.backbone}-{cfg.strategy.value}-{cfg.augment.value}-{stamp}"


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


# -- fit ----------------------------------------------------------------------------------------


class _Trainer:
    """One training session over a schedule of phases (a resumed run is a new session)."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: list[tuple[Path, int]],
        val: list[tuple[Path, int]],
        classes: list[str],
        run_dir: Path,
        reporter: Reporter,
    ) -> None:
        import torch

        self.cfg, self.train, self.val, self.classes = cfg, train, val, classes
        # With --include-others, validation accuracy is over the people's faces only (a face the
        # "others" class takes is a miss), as in the embedding track: bystanders are training data.
        self.others_index = classes.index(OTHERS) if OTHERS in classes else None
        self.run_dir, self.reporter = run_dir, reporter
        self.spec = bb.get(cfg.backbone)
        self.device, self.device_text = resolve_device(cfg.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads or available_cpus())
        else:
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self.amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.online_augment = Augment.NONE if cfg.offline_aug > 0 else cfg.augment
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.state = _State()
        self.model: nn.Module | None = None
        self.pre: Preprocessing | None = None
        self._last_save = time.perf_counter()

    # -- set-up ----------------------------------------------------------------------------
    def build(self, weights: bb.ResolvedWeights, checkpoint: dict | None) -> None:
        import torch

        from facelab.transforms import preprocessing_for

        cfg = self.cfg
        assert cfg.image_size is not None
        saved = self.run_dir / "preprocessing.json"
        if checkpoint is not None and saved.is_file():
            self.pre = Preprocessing.load(saved)  # resumed: exactly what the run started with
        else:
            self.pre = preprocessing_for(self.spec, weights, cfg.image_size, cfg.normalize, cfg.augment)
        _seed_all(cfg.seed)  # the new head's random initial weights
        if checkpoint is not None:
            model = build_from_state(self.spec, len(self.classes), cfg.image_size, checkpoint["model"])
        else:
            model = bb.build_model(self.spec, len(self.classes), weights, cfg.image_size)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.channels_last and x.dim() == 4:
            return x.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _set_trainable(self, phase: Phase) -> list[torch.nn.Parameter]:
        assert self.model is not None
        head = _head(self.model, self.spec)
        head_ids = {id(p) for p in head.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(phase.train_backbone or id(p) in head_ids)
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- feature caching -------------------------------------------------------------------
    def _features(self, samples: list[tuple[Path, int]], transform: Callable, seed: int) -> Any:
        """Backbone features of ``samples`` (eval mode, no gradients) on the training device."""
        import torch

        assert self.model is not None
        model, tap = self.model, _FeatureTap(_head(self.model, self.spec))
        loader = _loader(
            [p for p, _ in samples], [y for _, y in samples], transform, self.cfg, self.device, False, seed
        )
        _seed_all(seed)
        chunks = []
        try:
            model.eval()
            with torch.inference_mode(), self._autocast():
                for x, _ in loader:
                    model(self._to_device(x))
                    assert tap.value is not None
                    chunks.append(tap.value.float())
                    self.reporter.advance()
        finally:
            tap.close()
        return torch.cat(chunks) if chunks else torch.zeros(0)

    # -- epochs ----------------------------------------------------------------------------
    def _run_head_epoch(
        self, head: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: Any, seed: int
    ) -> tuple[float, float]:
        import torch

        head.train()
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(y), generator=g).to(self.device)
        total_loss, correct = 0.0, 0
        for start in range(0, len(y), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = head(xb).flatten(1)
            loss = self.criterion(logits, yb)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
        return total_loss / max(1, len(y)), correct / max(1, len(y))

    def _eval_head(self, head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        import torch

        head.eval()
        with torch.inference_mode():
            logits = head(x).flatten(1)
            loss = float(torch.nn.functional.cross_entropy(logits, y))
            hits, counted = self._people_hits(logits, y)
        return loss, hits / max(1, counted)

    def _people_hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        """Right answers and faces counted for validation accuracy: the people's faces only when
        there is an "others" class."""
        right = logits.argmax(1) == y
        if self.others_index is None:
            return int(right.sum()), len(y)
        person = y != self.others_index
        return int(right[person].sum()), int(person.sum())

    def _run_image_epoch(self, loader: Any, optimizer: Any, status: dict[str, str]) -> tuple[float, float]:
        assert self.model is not None
        # BatchNorm stays in training mode: freezing its statistics was tried and measured worse
        # (celeb5, mobilenet_v2, 8 epochs: val accuracy 0.48 frozen against 0.86 training).
        self.model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.model(x)
                loss = self.criterion(logits, y)
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            self.reporter.advance(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.2f}", **status)
        return total_loss / max(1, seen), correct / max(1, seen)

    def _eval_images(self, loader: Any) -> tuple[float, float]:
        import torch

        assert self.model is not None
        self.model.eval()
        total_loss, correct, seen, counted_all = 0.0, 0, 0, 0
        with torch.inference_mode(), self._autocast():
            for x, y in loader:
                x, y = self._to_device(x), y.to(self.device, non_blocking=True)
                logits = self.model(x).float()
                total_loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                hits, counted = self._people_hits(logits, y)
                correct += hits
                seen += len(y)
                counted_all += counted
                self.reporter.advance()
        return total_loss / max(1, seen), correct / max(1, counted_all)

    # -- checkpoints -----------------------------------------------------------------------
    def _metadata(self) -> dict[str, str]:
        return {
            "backbone": self.cfg.backbone,
            "num_classes": str(len(self.classes)),
            "image_size": str(self.cfg.image_size),
            "format": "facelab-transfer-1",
        }

    def save_best(self) -> None:
        assert self.model is not None
        _save_safetensors(self.model, self.run_dir / "best.safetensors", self._metadata())

    def save_last(self, optimizer: Any) -> None:
        assert self.model is not None
        _torch_save_atomic(
            {
                "format": "facelab-transfer-1",
                "state": asdict(self.state),
                "model": _state_dict_cpu(self.model),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "optimizer_phase": self.state.phase_index,
                "scaler": self.scaler.state_dict(),
            },
            self.run_dir / "last.pt",
        )
        self._last_save = time.perf_counter()

    # -- the schedule ----------------------------------------------------------------------
    def run(self, optimizer_state: dict | None, session_start: float) -> None:
        """Train the remaining epochs of every phase. ``optimizer_state`` (resume) belongs to the
        phase the checkpoint was written in and is only used to continue that phase."""
        import torch

        from facelab.transforms import eval_transform, train_transform

        assert self.model is not None and self.pre is not None
        cfg, state = self.cfg, self.state
        phases = STRATEGIES[cfg.strategy](cfg)
        eval_tf = eval_transform(self.pre)
        train_tf = train_transform(self.pre, self.online_augment)
        train_paths, train_labels = [p for p, _ in self.train], [y for _, y in self.train]
        val_paths, val_labels = [p for p, _ in self.val], [y for _, y in self.val]
        base_elapsed, base_cpu, cpu_start = state.elapsed, state.cpu_seconds, time.process_time()

        def elapsed() -> float:
            return base_elapsed + time.perf_counter() - session_start

        while state.phase_index < len(phases):
            phase = phases[state.phase_index]
            if state.phase_epoch >= phase.epochs or state.phase_index in state.stopped_early:
                if state.phase_index == len(phases) - 1:
                    break  # done; a resumed run with more epochs continues the last phase here
                self._next_phase()
                optimizer_state = None
                continue
            params = self._set_trainable(phase)
            optimizer = _make_optimizer(cfg, params, phase.lr)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            head = _head(self.model, self.spec)
            if phase.cached:
                t0 = time.perf_counter()
                augmented = cfg.aug_passes if AUGMENTS[self.online_augment].is_random else 0
                batches = -(-len(self.train) // cfg.batch_size) * (1 + augmented)
                batches += -(-len(self.val) // cfg.batch_size)
                self.reporter.task(f"features (train ×{1 + augmented}, val)", batches)
                # The plain images first, then each augmented pass; epochs cycle through them.
                banks = [self._features(self.train, eval_tf, 0)]
                banks += [
                    self._features(self.train, train_tf, _epoch_seed(cfg, 10_000_000 + k)) for k in range(augmented)
                ]
                val_x = self._features(self.val, eval_tf, 0)
                train_y = torch.tensor(train_labels, device=self.device)
                val_y = torch.tensor(val_labels, device=self.device)
                state.feature_seconds += time.perf_counter() - t0
                self.reporter.task(f"{phase.name} ({cfg.backbone})", phase.epochs - state.phase_epoch)
            else:
                train_loader = _loader(train_paths, train_labels, train_tf, cfg, self.device, True)
                val_loader = _loader(val_paths, val_labels, eval_tf, cfg, self.device, False)
                steps = -(-len(self.train) // cfg.batch_size) + len(val_loader)
                self.reporter.task(f"{phase.name} ({cfg.backbone})", (phase.epochs - state.phase_epoch) * steps)
            while state.phase_epoch < phase.epochs:
                epoch = state.epoch + 1
                t0 = time.perf_counter()
                seed = _epoch_seed(cfg, epoch)
                _seed_all(seed)
                if phase.cached:
                    bank = banks[(epoch - 1) % len(banks)]
                    with _threads(1 if self.device.type == "cpu" else None):
                        train_loss, train_acc = self._run_head_epoch(head, bank, train_y, optimizer, seed)
                        val_loss, val_acc = self._eval_head(head, val_x, val_y)
                else:
                    # The shuffle (and, without worker processes, every augmentation) follows the
                    # epoch's seed, so a resumed CPU run repeats an uninterrupted one exactly.
                    train_loader.generator.manual_seed(seed)
                    train_loss, train_acc = self._run_image_epoch(train_loader, optimizer, {"epoch": f"{epoch}"})
                    val_loss, val_acc = self._eval_images(val_loader)
                seconds = time.perf_counter() - t0
                state.epoch, state.phase_epoch = epoch, state.phase_epoch + 1
                state.elapsed = elapsed()
                state.cpu_seconds = base_cpu + time.process_time() - cpu_start
                state.history.append(
                    {
                        "epoch": epoch,
                        "phase": phase.name,
                        "train_loss": train_loss,
                        "train_accuracy": train_acc,
                        "val_loss": val_loss,
                        "val_accuracy": val_acc,
                        "lr": phase.lr,
                        "seconds": seconds,
                        "elapsed": state.elapsed,
                    }
                )
                # Best = highest validation accuracy; on a tie the lower validation loss (surer).
                improved = val_acc > state.best_val_accuracy or (
                    val_acc == state.best_val_accuracy and val_loss < state.best_val_loss
                )
                if improved:
                    state.best_epoch, state.best_val_accuracy, state.best_val_loss = epoch, val_acc, val_loss
                    state.seconds_to_best = state.elapsed
                    self.save_best()
                # Early stopping watches the loss, not the accuracy: with a few dozen validation
                # faces accuracy moves in big steps and plateaus long before the model stops learning.
                if val_loss < state.stop_loss - 1e-4:
                    state.stop_loss, state.bad_epochs = val_loss, 0
                else:
                    state.bad_epochs += 1
                stop = bool(cfg.patience) and state.bad_epochs >= (cfg.patience or 0)
                if stop:
                    state.stopped_early.append(state.phase_index)
                phase_over = stop or state.phase_epoch >= phase.epochs
                _write_history(state.history, self.run_dir / "history.csv")
                if (
                    not phase.cached
                    or improved
                    or phase_over
                    or time.perf_counter() - self._last_save >= CACHED_CHECKPOINT_EVERY_S
                ):
                    self.save_last(optimizer)
                self.reporter.advance(
                    1 if phase.cached else 0,
                    epoch=f"{epoch}",
                    loss=f"{train_loss:.3f}",
                    acc=f"{train_acc:.2f}",
                    val_loss=f"{val_loss:.3f}",
                    val_acc=f"{val_acc:.2f}",
                )
                if stop:
                    self.reporter.message(
                        f"{phase.name}: stopped early at epoch {epoch} "
                        f"(validation loss not lower for {cfg.patience} epochs)"
                    )
                if phase_over:
                    break

    def _next_phase(self) -> None:
        self.state.phase_index += 1
        self.state.phase_epoch = 0
        self.state.stop_loss, self.state.bad_epochs = float("inf"), 0


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


def fit(
    config: TrainConfig,
    train: Sequence[tuple[Path | str, str]],
    val: Sequence[tuple[Path | str, str]],
    run_dir: Path | str,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    extra_summary: dict[str, Any] | None = None,
) -> RunResult:
    """Train on ``train`` (crop path, person) pairs, pick the epoch by ``val``, write ``run_dir``.

    Classes are the sorted people of ``train``; validation faces of anybody else are left out.
    ``resume`` continues the run in ``run_dir`` from its ``last.pt`` (its own config.yaml is
    used; pass it in as ``config``, with ``epochs`` raised to train longer).
    Raises :class:`facelab.weights.WeightsUnavailable` when pretrained weights cannot be had.
    """
    import torch

    reporter = reporter or NullReporter()
    run_dir = Path(run_dir)
    cfg = config.resolved()
    spec = bb.get(cfg.backbone)  # unknown names fail before any work
    train = _check_files(train, reporter)
    val = _check_files(val, reporter)
    classes = class_names_of(label for _, label in train)
    if len(classes) < 2:
        raise ValueError(f"training needs faces of at least 2 people in the train split, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    dropped = sorted({label for _, label in val if label not in index})
    if dropped:
        reporter.message(f"[yellow]validation faces of {', '.join(dropped)} left out: nobody in train[/]")
    val_l = _labelled(val, index)
    if not val_l:
        raise ValueError("no validation faces of the trained people; run facelab split to make a val split")

    checkpoint = None
    if resume:
        last = run_dir / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no last.pt)")
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        if json.loads((run_dir / "classes.json").read_text()) != classes:
            raise ValueError(f"{run_dir}: the split's people changed since this run started; start a new run")
    elif (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume or choose another --name")

    # The device and the weights are settled before anything is written: a run that cannot
    # start leaves no folder behind.
    trainer = _Trainer(cfg, _labelled(train, index), val_l, classes, run_dir, reporter)
    reporter.message(
        f"Training {cfg.backbone} ({cfg.strategy.value}, augment {cfg.augment.value}) on {trainer.device_text}"
    )
    if checkpoint is not None:
        trainer.state = _State(**checkpoint["state"])
        weights = bb.NO_WEIGHTS  # the checkpoint holds every weight
        trainer.build(weights, checkpoint)
        if checkpoint.get("scaler"):
            trainer.scaler.load_state_dict(checkpoint["scaler"])
        optimizer_state = checkpoint.get("optimizer")
        trainer.state.history = trainer.state.history[: trainer.state.epoch]
        reporter.message(f"Resuming {run_dir.name} after epoch {trainer.state.epoch}")
    else:
        weights = bb.resolve_weights(spec, cfg.weights)
        trainer.state.weights_label, trainer.state.weights_id = weights.label, weights.id
        trainer.build(weights, None)
        optimizer_state = None
        source = weights.label if weights.pretrained else "none (random initialisation)"
        reporter.message(f"Weights: {source}{f' [{weights.id}]' if weights.id else ''}")
        run_dir.mkdir(parents=True, exist_ok=True)
    assert trainer.pre is not None
    if cfg.offline_aug > 0:
        if not AUGMENTS[cfg.augment].is_random:
            reporter.message(
                f"[yellow]--offline-aug with augment {cfg.augment.value}: copies would be identical; skipped[/]"
            )
        else:
            copies = _offline_augment(list(train), cfg, run_dir / "offline_aug", reporter)
            trainer.train += _labelled(copies, index)
    # Written before training so a run folder always says what it is, even if interrupted.
    cfg.save(run_dir / "config.yaml")
    write_text_atomic(json.dumps(classes, indent=2) + "\n", run_dir / "classes.json")
    write_text_atomic(trainer.pre.to_json(), run_dir / "preprocessing.json")

    session_start = time.perf_counter()
    status = "finished"
    try:
        trainer.run(optimizer_state, session_start)
    except KeyboardInterrupt:
        status = "interrupted"  # last.pt holds the last finished epoch: --resume goes on from there
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        reporter.done()
        summary = _summary(trainer, cfg, status, len(trainer.train), len(val_l), extra_summary)
        if trainer.state.history:
            _write_history(trainer.state.history, run_dir / "history.csv")
            from facelab import plots

            plots.training_curves(
                trainer.state.history,
                run_dir / "curves.png",
                title=(f"{cfg.backbone} · {cfg.strategy.value} · {cfg.augment.value} · weights {summary['weights']}"),
                best_epoch=trainer.state.best_epoch,
            )
        if (run_dir / "best.safetensors").exists():
            summary["size_bytes"] = (run_dir / "best.safetensors").stat().st_size
        write_text_atomic(json.dumps(summary, indent=2) + "\n", run_dir / "summary.json")
    model = TransferModel(run_dir)
    if summary["val_accuracy"] is not None:
        reporter.message(
            f"Best validation accuracy {summary['val_accuracy']:.3f} at epoch {summary['best_epoch']} "
            f"of {summary['epochs_run']} (train accuracy {summary['train_accuracy']:.3f}); "
            f"{summary['train_seconds']:.1f} s on {summary['device']}; run folder {run_dir}"
        )
    return RunResult(run_dir, summary, trainer.state.history, model)


def _summary(
    trainer: _Trainer, cfg: TrainConfig, status: str, n_train: int, n_val: int, extra: dict[str, Any] | None
) -> dict[str, Any]:
    import torch

    state, model = trainer.state, trainer.model
    best = next((row for row in state.history if row["epoch"] == state.best_epoch), None)
    phases = STRATEGIES[cfg.strategy](cfg)
    last_phase = phases[min(state.phase_index, len(phases) - 1)] if phases else None
    trainable = 0
    if model is not None:
        head = _head(model, trainer.spec)
        trainable = (
            _count(model.parameters()) if last_phase and last_phase.train_backbone else _count(head.parameters())
        )
    summary: dict[str, Any] = {
        "track": TRACK,
        "status": status,
        "backbone": cfg.backbone,
        "strategy": cfg.strategy.value,
        "augment": cfg.augment.value,
        "offline_aug": cfg.offline_aug,
        "preset": cfg.preset.value,
        "weights": state.weights_label,
        "weights_id": state.weights_id,
        "params_total": _count(model.parameters()) if model is not None else 0,
        "params_trainable": trainable,
        "size_bytes": 0,
        "train_seconds": round(state.elapsed, 3),
        "cpu_seconds": round(state.cpu_seconds, 3),
        "feature_seconds": round(state.feature_seconds, 3),
        "seconds_to_best": round(state.seconds_to_best, 3),
        "device": trainer.device.type,
        "device_name": trainer.device_text,
        "threads": torch.get_num_threads(),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": bool(state.stopped_early),
        "train_accuracy": best["train_accuracy"] if best else None,
        "train_loss": best["train_loss"] if best else None,
        "val_accuracy": best["val_accuracy"] if best else None,
        "val_loss": best["val_loss"] if best else None,
        "faces": cfg.faces,
        "include_others": cfg.include_others,
        "crop_margin": cfg.crop_margin,
        "image_size": cfg.image_size,
        "classes": trainer.classes,
        "n_train": n_train,
        "n_val": n_val,
        "score_kind": "probability",
        "peak_rss_mb": _peak_rss_mb(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if trainer.device.type == "cuda":
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    summary.update(extra or {})
    return summary


# -- workspaces -----------------------------------------------------------------------------------


def latest_run(runs_dir: Path) -> Path | None:
    """The most recently written transfer run that can be resumed."""
    candidates = [p.parent for p in Path(runs_dir).glob("*/last.pt")]
    return max(candidates, key=lambda p: (p / "last.pt").stat().st_mtime) if candidates else None


def train_workspace(
    ws: Workspace,
    config: TrainConfig,
    *,
    name: str | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train on a workspace's train split, validate on its val split; the run goes to ``WS/runs/<name>``.

    The crop margin the workspace's crops were made with (``crop_margin`` setting) is recorded so
    that recognition crops new photos the same way. ``resume`` continues run ``name`` (the latest
    resumable run when ``name`` is None) with its own config plus ``overrides`` (e.g. ``epochs``).
    """
    import dataclasses

    from facelab.items import load_items

    if resume:
        run_dir = ws.runs_dir / name if name else latest_run(ws.runs_dir)
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"no run to resume in {ws.runs_dir}" + (f" named {name}" if name else ""))
        config = dataclasses.replace(TrainConfig.load(run_dir / "config.yaml"), **(overrides or {}))
    else:
        margin = ws.setting("crop_margin")
        config = dataclasses.replace(config, crop_margin=float(margin) if margin else config.crop_margin)
        run_name = name or config.name or default_run_name(config)
        config = dataclasses.replace(config, name=run_name)
        run_dir = ws.runs_dir / run_name
    train_items = load_items(ws, "train", config.faces, config.include_others)
    val_items = load_items(ws, "val", config.faces, config.include_others)
    if not train_items:
        raise ValueError(f"{ws.root}: no {config.faces} faces in the train split; run facelab split {ws.root} first")
    result = fit(
        config,
        [(i.crop_path, i.person) for i in train_items],
        [(i.crop_path, i.person) for i in val_items],
        run_dir,
        reporter=reporter,
        resume=resume,
        extra_summary={
            "workspace": str(ws.root),
            "n_others_train": sum(item.person == OTHERS for item in train_items),
        },
    )
    write_gate(ws, run_dir, reporter=reporter)
    return result


def write_gate(ws: Workspace, run_dir: Path, strangers: Path | None = None, reporter: Reporter | None = None) -> bool:
    """Give a finished CNN run its embedding gate (:mod:`facelab.gate`), so it answers unknown for
    strangers; ``strangers`` defaults to the folder the workspace remembers. False (and a message)
    when no face embedder is installed: the run then names every face, and recognition warns."""
    from facelab.embedders import EmbedderUnavailable

    if strangers is None:
        remembered = ws.setting("strangers")
        strangers = Path(remembered) if remembered and Path(remembered).is_dir() else None
    summary = read_summary(run_dir)
    try:
        gate, calibration = fit_gate(
            ws,
            json.loads((run_dir / "classes.json").read_text(encoding="utf-8")),
            faces=summary.get("faces", "resolved"),
            strangers=strangers,
        )
    except (EmbedderUnavailable, ImportError, ValueError) as exc:
        if reporter is not None:
            reporter.message(f"{run_dir.name}: no embedding gate ({exc}); this model names every face, strangers too")
        return False
    gate.save(run_dir, calibration)
    if reporter is not None and calibration.expected:
        reporter.message(f"{run_dir.name}: a name stands only if the face embedding agrees — {calibration.expected}")
    return True


# -- loading a run ------------------------------------------------------------------------------


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
            import torch
            from safetensors.torch import load_file

            from facelab.transforms import eval_transform

            if self._device_request == "auto":
                self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            else:
                self.device = torch.device(self._device_request)
            path = self.run_dir / "best.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"{self.run_dir}: no best.safetensors (the run never finished an epoch)")
            net = build_from_state(self.spec, len(self.classes), self.preprocessing.image_size, load_file(str(path)))
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
        if self.gate is None or not len(items):
            return scores
        from facelab.embed_track import item_vectors

        return self.gate.apply(scores, item_vectors(self.workspace, list(items), self.gate.embedder), self.classes)

    def _face_crops(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[Any]:
        from facelab.align import crop_face
        from facelab.transforms import from_array

        # The same margin as the training crops: a tighter or looser crop is a different picture.
        return [from_array(crop_face(rgb, face, margin=self.crop_margin, size=256)) for face in faces]

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        scores = self.predict_images(self._face_crops(rgb, faces))
        if self.gate is None or not faces:
            return scores
        from facelab.embedders import get_embedder

        return self.gate.apply(scores, get_embedder(self.gate.embedder).embed(rgb, faces), self.classes)

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
