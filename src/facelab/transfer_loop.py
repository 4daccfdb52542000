"""The transfer track's training loop: a strategy's phases, their optimizers, epochs and checkpoints.

Strategies are phases (:data:`STRATEGIES`): a phase either trains the head alone on cached
features (the backbone is frozen, so each image goes through it once per augmentation pass, not
once per epoch) or trains every layer on images. :class:`_Trainer` runs one training session over
them; :func:`facelab.transfer_fit.fit` sets it up and writes the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab import backbones as bb
from facelab.config import Augment, Monitor, Strategy, TrainConfig
from facelab.items import OTHERS
from facelab.transfer_checkpoints import _save_safetensors, _State, _state_dict_cpu, _torch_save_atomic, _write_history
from facelab.transfer_data import _loader
from facelab.transfer_device import _threads, available_cpus, resolve_device
from facelab.transfer_network import _FeatureTap, _head, build_from_state
from facelab.transforms import AUGMENTS, Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

    from facelab.transfer_report import Reporter

# A cached (head-only) phase runs hundreds of epochs a second; writing the whole network to
# last.pt after each would dominate, so it is written at most this often (and at phase ends).
CACHED_CHECKPOINT_EVERY_S = 10.0

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


# -- seeds --------------------------------------------------------------------------------------


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


# -- the trainer --------------------------------------------------------------------------------


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
                # The kept epoch, by cfg.monitor (see TrainConfig): the lowest validation loss
                # (ties: higher accuracy), or the highest accuracy (ties: lower loss, surer).
                if cfg.monitor == Monitor.VAL_LOSS:
                    improved = val_loss < state.best_val_loss or (
                        val_loss == state.best_val_loss and val_acc > state.best_val_accuracy
                    )
                else:
                    improved = val_acc > state.best_val_accuracy or (
                        val_acc == state.best_val_accuracy and val_loss < state.best_val_loss
                    )
                if improved:
                    state.best_epoch, state.best_val_accuracy, state.best_val_loss = epoch, val_acc, val_loss
                    state.seconds_to_best = state.elapsed
                    self.save_best()
                # Early stopping: an epoch is bad when the loss did not fall — and, monitoring
                # accuracy, the accuracy did not rise either (with a few dozen validation faces
                # accuracy moves in big steps and plateaus long before the model stops learning).
                lower_loss = val_loss < state.stop_loss - 1e-4
                higher_accuracy = cfg.monitor == Monitor.VAL_ACCURACY and val_acc > state.stop_accuracy
                if lower_loss:
                    state.stop_loss = val_loss
                if higher_accuracy:
                    state.stop_accuracy = val_acc
                state.bad_epochs = 0 if lower_loss or higher_accuracy else state.bad_epochs + 1
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
                        f"({cfg.monitor.value.replace('_', ' ')} not better for {cfg.patience} epochs)"
                    )
                if phase_over:
                    break

    def _next_phase(self) -> None:
        self.state.phase_index += 1
        self.state.phase_epoch = 0
        self.state.stop_loss, self.state.stop_accuracy, self.state.bad_epochs = float("inf"), -1.0, 0
