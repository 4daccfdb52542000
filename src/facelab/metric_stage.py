"""The metric stage's training loop: the warm-up on cached features, the margin stage on P×K batches.

:class:`MetricStage` runs one training session (what each stage does and how to tune it:
:mod:`facelab.metric_fit`); :func:`facelab.metric_fit.fit_metric` sets it up and writes the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab import backbones as bb
from facelab.config import Monitor, TrainConfig
from facelab.metric_loss import NOBODY, cosface_loss, margin_head
from facelab.metric_net import MetricParams, build_metric_net
from facelab.metric_sampler import PKBatchSampler
from facelab.transfer_checkpoints import _save_safetensors, _state_dict_cpu, _write_history
from facelab.transfer_data import _Crops, _loader
from facelab.transfer_device import available_cpus, resolve_device
from facelab.transfer_report import Reporter

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "facelab-metric-1"


class MetricStage:
    """One metric-stage training session: the network, the centres, the data, the history."""

    def __init__(
        self,
        cfg: TrainConfig,
        params: MetricParams,
        samples: list[tuple[Path, int]],
        val: list[tuple[Path, int]],
        classes: list[str],
        run_dir: Path,
        reporter: Reporter,
    ) -> None:
        import torch

        self.cfg, self.params, self.samples, self.val, self.classes = cfg, params, samples, val, classes
        self.run_dir, self.reporter = run_dir, reporter
        self.spec = bb.get(cfg.backbone)
        self.device, self.device_text = resolve_device(cfg.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads or available_cpus())
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, "accuracy": -1.0, "loss": float("inf"), "elapsed": 0.0}
        self.best_state: dict[str, Any] | None = None
        self.best_centres: np.ndarray | None = None
        self.stopped_early = False
        self.feature_seconds = 0.0
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        self.net: nn.Module
        self.centres: nn.Module

    # -- set-up ----------------------------------------------------------------------------
    def build(self, weights: bb.ResolvedWeights) -> None:
        from facelab.transfer_loop import _seed_all
        from facelab.transforms import preprocessing_for

        cfg = self.cfg
        self.pre = preprocessing_for(self.spec, weights, cfg.image_size, cfg.normalize, cfg.augment)
        _seed_all(cfg.seed)
        self.net = build_metric_net(self.spec, weights, cfg.image_size, self.params.embed_dim).to(self.device)
        self.centres = margin_head(len(self.classes), self.params.embed_dim, cfg.seed).to(self.device)

    def _loss(self, cosines: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
        return cosface_loss(cosines, labels, scale=self.params.scale, margin=margin, nobody=self.params.nobody)

    def _with_mixes(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``y`` plus ``params.mixes`` half-and-half blends of two different people's
        images (or features), labelled :data:`NOBODY` (see :class:`MetricParams`)."""
        import torch

        known = torch.nonzero(y != NOBODY).flatten()
        if self.params.mixes < 1 or len(known) < 2:
            return x, y
        generator = torch.Generator().manual_seed(seed)
        a = known[torch.randint(len(known), (4 * self.params.mixes,), generator=generator).to(known.device)]
        b = known[torch.randint(len(known), (4 * self.params.mixes,), generator=generator).to(known.device)]
        pairs = y[a] != y[b]
        a, b = a[pairs][: self.params.mixes], b[pairs][: self.params.mixes]
        if not len(a):
            return x, y
        mixed = 0.5 * (x[a] + x[b])
        return torch.cat([x, mixed]), torch.cat([y, torch.full((len(a),), NOBODY, dtype=y.dtype, device=y.device)])

    # -- embeddings and features -----------------------------------------------------------
    def _forward_all(self, paths: Sequence[Path], transform: Any, features: bool, seed: int = 0) -> torch.Tensor:
        """Backbone features (``features``) or embeddings of ``paths`` (eval mode, no gradients)."""
        import torch

        from facelab.transfer_loop import _seed_all

        loader = _loader(list(paths), [0] * len(paths), transform, self.cfg, self.device, False, seed)
        _seed_all(seed)
        self.net.eval()
        out = []
        with torch.inference_mode():
            for x, _ in loader:
                x = x.to(self.device)
                out.append((self.net.features(x) if features else self.net(x)).float())
                self.reporter.advance()
        return torch.cat(out) if out else torch.zeros((0, self.params.embed_dim), device=self.device)

    def embed(self, paths: Sequence[Path]) -> np.ndarray:
        """Unit embeddings of crop files with the network as it is now."""
        from facelab.transforms import eval_transform

        return self._forward_all(paths, eval_transform(self.pre), features=False).cpu().numpy()

    # -- bookkeeping -----------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _record(self, phase: str, lr: float, seconds: float, train: tuple, val: tuple) -> bool:
        """Add an epoch to the history; keep it when it is the best so far. True when it improved."""
        epoch = len(self.history) + 1
        self.history.append(
            {
                "epoch": epoch,
                "phase": phase,
                "train_loss": train[0],
                "train_accuracy": train[1],
                "val_loss": val[0],
                "val_accuracy": val[1],
                "lr": lr,
                "seconds": seconds,
                "elapsed": self.elapsed(),
            }
        )
        loss, accuracy = val
        best = self.best
        if self.cfg.monitor == Monitor.VAL_LOSS:
            improved = loss < best["loss"] or (loss == best["loss"] and accuracy > best["accuracy"])
        else:
            improved = accuracy > best["accuracy"] or (accuracy == best["accuracy"] and loss < best["loss"])
        if improved:
            self.best = {"epoch": epoch, "accuracy": accuracy, "loss": loss, "elapsed": self.elapsed()}
            # A copy: on the CPU the state dict's tensors are the live weights themselves.
            self.best_state = {k: v.clone() for k, v in _state_dict_cpu(self.net).items()}
            self.best_centres = self._unit_centres()
        _write_history(self.history, self.run_dir / "history.csv")
        self.reporter.advance(
            epoch=str(epoch), loss=f"{train[0]:.3f}", acc=f"{train[1]:.2f}", val_acc=f"{accuracy:.2f}"
        )
        return improved

    def _unit_centres(self) -> np.ndarray:
        import torch

        weight = self.centres.weight.detach().float()
        return torch.nn.functional.normalize(weight, dim=1).cpu().numpy()

    def _val_figures(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Margin-free loss and nearest-centre accuracy of validation embeddings."""
        import torch

        with torch.inference_mode():
            cosines = self.centres(embeddings)
            loss = float(self._loss(cosines, labels, 0.0))
            accuracy = float((cosines.argmax(1) == labels).float().mean())
        return loss, accuracy

    # -- stage 1: warm-up on cached features -----------------------------------------------
    def warm_up(self) -> None:
        import torch

        from facelab.transforms import eval_transform, train_transform

        cfg = self.cfg
        if cfg.head_epochs < 1:
            return
        started = time.perf_counter()
        paths = [p for p, _ in self.samples]
        labels = torch.tensor([y for _, y in self.samples], device=self.device)
        self.reporter.task("warm-up features", len(paths) * (1 + cfg.aug_passes) + len(self.val))
        banks = [self._forward_all(paths, eval_transform(self.pre), features=True)]
        augmented = train_transform(self.pre, cfg.augment)
        banks += [self._forward_all(paths, augmented, True, seed=cfg.seed + k + 1) for k in range(cfg.aug_passes)]
        val_x = self._forward_all([p for p, _ in self.val], eval_transform(self.pre), features=True)
        val_y = torch.tensor([y for _, y in self.val], device=self.device)
        self.feature_seconds = time.perf_counter() - started
        self.reporter.done()
        params = [*self.net.projection.parameters(), *self.centres.parameters()]
        optimizer = _optimizer(cfg, params, cfg.lr or 0.0)
        self.reporter.task("warm-up", cfg.head_epochs)
        generator = torch.Generator().manual_seed(cfg.seed)
        for epoch in range(cfg.head_epochs):
            t0 = time.perf_counter()
            bank = banks[epoch % len(banks)]
            order = torch.randperm(len(labels), generator=generator).to(self.device)
            self.net.projection.train()
            total, correct, people = 0.0, 0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm needs two faces to take statistics from
                    continue
                optimizer.zero_grad(set_to_none=True)
                xb, yb = self._with_mixes(bank[idx], labels[idx], cfg.seed * 100_003 + epoch * 1_009 + start)
                cosines = self.centres(self.net.embed_features(xb))
                loss = self._loss(cosines, yb, 0.0)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                known = yb != NOBODY
                correct += int((cosines.argmax(1)[known] == yb[known]).sum())
                people += int(known.sum())
            self._settle_statistics(banks[0])  # few steps: settle BatchNorm before judging the epoch
            with torch.inference_mode():
                val = self._val_figures(self.net.embed_features(val_x), val_y)
            train = (total / max(1, len(order)), correct / max(1, people))
            self._record("warm-up", cfg.lr or 0.0, time.perf_counter() - t0, train, val)
        self.reporter.done()

    # -- stage 2: every layer with the margin ------------------------------------------------
    def margin_stage(self) -> None:
        import torch
        from torch.utils.data import DataLoader

        from facelab.transforms import eval_transform, train_transform

        cfg, params = self.cfg, self.params
        epochs = cfg.epochs or 0
        if epochs < 1:
            return
        lr = (cfg.lr or 0.0) * cfg.unfreeze_lr_factor
        sampler = PKBatchSampler(
            [y for _, y in self.samples], params.people, params.faces, params.bystanders, seed=cfg.seed
        )
        dataset = _Crops(
            [p for p, _ in self.samples], [y for _, y in self.samples], train_transform(self.pre, cfg.augment)
        )
        workers = cfg.num_workers if cfg.num_workers is not None else (0 if self.device.type == "cpu" else 4)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers)  # type: ignore[arg-type]
        for p in self.net.parameters():
            p.requires_grad_(True)
        optimizer = _optimizer(cfg, [*self.net.parameters(), *self.centres.parameters()], lr)
        val_paths = [p for p, _ in self.val]
        val_y = torch.tensor([y for _, y in self.val], device=self.device)
        stop_loss, stop_accuracy, bad = float("inf"), -1.0, 0
        # The warm-up is the margin stage's start, not a candidate: the epoch kept is the margin
        # stage's best (the warm-up's is judged without a margin, on a few dozen faces, and kept
        # it on celeb5 although the margin epochs were as accurate and separated people better).
        self.best = {"epoch": 0, "accuracy": -1.0, "loss": float("inf"), "elapsed": 0.0}
        self.reporter.task("metric (margin) stage", epochs * (len(sampler) + len(val_paths)))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # the augmentations of this epoch
            self.net.train()
            total, seen, correct, people = 0.0, 0, 0, 0
            for step, (x, y) in enumerate(loader):
                x, y = self._with_mixes(x.to(self.device), y.to(self.device), cfg.seed * 100_003 + epoch * 1_009 + step)
                optimizer.zero_grad(set_to_none=True)
                cosines = self.centres(self.net(x))
                loss = self._loss(cosines, y, params.margin)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
                known = y != NOBODY
                correct += int((cosines.argmax(1)[known] == y[known]).sum())
                people += int(known.sum())
                self.reporter.advance(loss=f"{total / seen:.3f}")
            embeddings = self._forward_all(val_paths, eval_transform(self.pre), features=False)
            val = self._val_figures(embeddings, val_y)
            self._record("metric", lr, time.perf_counter() - t0, (total / max(1, seen), correct / max(1, people)), val)
            # Early stopping as in the transfer track: an epoch is bad when the validation loss did
            # not fall and (monitoring accuracy) the accuracy did not rise either.
            lower, higher = val[0] < stop_loss - 1e-4, cfg.monitor == Monitor.VAL_ACCURACY and val[1] > stop_accuracy
            stop_loss, stop_accuracy = min(stop_loss, val[0]), max(stop_accuracy, val[1])
            bad = 0 if lower or higher else bad + 1
            if cfg.patience and bad >= cfg.patience:
                self.stopped_early = True
                self.reporter.message(f"metric: stopped early at epoch {len(self.history)}")
                break
        self.reporter.done()

    def keep_best(self) -> np.ndarray:
        """Load the kept epoch's weights, settle the projection's BatchNorm statistics on the training
        faces, write ``best.safetensors``; returns every training sample's embedding (people's, then
        bystanders', in ``samples`` order)."""
        import torch

        from facelab.transforms import eval_transform

        if self.best_state is None:
            raise RuntimeError("no epoch was trained: give --epochs or --head-epochs above 0")
        self.net.load_state_dict(self.best_state)
        features = self._forward_all([p for p, _ in self.samples], eval_transform(self.pre), features=True)
        self._settle_statistics(features)
        with torch.inference_mode():
            embeddings = self.net.embed_features(features).float().cpu().numpy()
        metadata = {
            "backbone": self.cfg.backbone,
            "embed_dim": str(self.params.embed_dim),
            "image_size": str(self.cfg.image_size),
            "format": FORMAT,
        }
        _save_safetensors(self.net, self.run_dir / "best.safetensors", metadata)
        return embeddings

    def _settle_statistics(self, features: torch.Tensor) -> None:
        """The projection's BatchNorm statistics, exactly, over the kept network's training features.

        Training leaves running averages of statistics from many earlier weights (and from few
        steps on a small data set); recognition centres every face with them, so they are taken
        again, once, from the final weights (as SWA's ``update_bn`` does).
        """
        import torch

        norms = [m for m in self.net.projection.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches below
        self.net.projection.train()
        with torch.inference_mode():
            for start in range(0, len(features), self.cfg.batch_size):
                chunk = features[start : start + self.cfg.batch_size]
                if len(chunk) > 1:
                    self.net.projection(chunk)
        for norm in norms:
            norm.momentum = 0.1
        self.net.eval()


def _optimizer(cfg: TrainConfig, params: list, lr: float) -> Any:
    from facelab.transfer_loop import _make_optimizer

    return _make_optimizer(cfg, params, lr)
