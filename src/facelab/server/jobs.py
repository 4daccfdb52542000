"""Training jobs: one at a time, in a background thread, with progress the pages poll.

A job splits the photos (train / val / test by photo, :func:`facelab.split.split_workspace`),
trains — automatically (:func:`facelab.auto.auto_select`), one embedding-track head, or one
transfer-track network — evaluates the result on the test split and makes it the workspace's
current model. Only one job runs at a time: on two CPU cores a second one would only slow both
down, and the job holds the workspace's write lock so uploads cannot change the photos under it.

A failed or cancelled job leaves the workspace as consistent as the library functions leave it:
split and database changes are transactions, run files are written atomically, and the current
model changes only after a run finished and was evaluated. Cancelling takes effect at the next
progress report (an epoch, a batch, a photo, a candidate).
"""

from __future__ import annotations

import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from facelab.server.workspace_ops import Conflict, NotFound
from facelab.store import Workspace
from facelab.writelock import WorkspaceBusy, write_lock

MAX_LOG_LINES = 200
MAX_HISTORY = 2000
KEEP_JOBS = 20
_RICH_MARKUP = re.compile(r"\[/?[a-z #0-9_]*\]")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrainMode(StrEnum):
    """``auto``: candidates cheapest first within a time budget; ``embedding``: one head on face
    embeddings (seconds); ``transfer``: one CNN (backbone × strategy × augment; minutes)."""

    AUTO = "auto"
    EMBEDDING = "embedding"
    TRANSFER = "transfer"


class JobCancelled(KeyboardInterrupt):
    """Raised from a progress callback to stop a job.

    A KeyboardInterrupt on purpose: the transfer track treats it as "stopped by the user" and
    records the run as interrupted (resumable), and ``auto`` does not swallow it as a failed candidate.
    """


@dataclass
class TrainParams:
    """What to train. Unused fields are ignored for the chosen mode."""

    mode: TrainMode = TrainMode.AUTO
    budget_minutes: float = 5.0
    head: str = "prototype"
    backbone: str = "mobilenet_v2"
    strategy: str = "feature-extract"
    augment: str = "rotation"
    epochs: int | None = None
    include_others: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mode": self.mode.value}
        if self.mode is TrainMode.AUTO:
            data["budget_minutes"] = self.budget_minutes
        elif self.mode is TrainMode.EMBEDDING:
            data["head"] = self.head
        else:
            data.update(backbone=self.backbone, strategy=self.strategy, augment=self.augment, epochs=self.epochs)
        if self.include_others and self.mode is not TrainMode.AUTO:
            data["include_others"] = True
        return data


@dataclass
class Job:
    """A training job and everything the status endpoint reports about it."""

    id: str
    params: TrainParams
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    phase: str = ""
    step: int = 0
    total: int = 0
    epoch: int | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    run: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The workspace's write lock (against other processes), held from start to end of the job.
    held: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)

    def note(self, text: str) -> None:
        with self.lock:
            self.log.append(_RICH_MARKUP.sub("", text).strip())
            del self.log[:-MAX_LOG_LINES]

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled()

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            end = self.finished or time.time()
            return {
                "id": self.id,
                "params": self.params.to_json(),
                "state": self.state.value,
                "created": self.created,
                "started": self.started,
                "finished": self.finished,
                "elapsed": round(end - self.started, 1) if self.started else 0.0,
                "phase": self.phase,
                "step": self.step,
                "total": self.total,
                "epoch": self.epoch,
                "train_accuracy": self.train_accuracy,
                "val_accuracy": self.val_accuracy,
                "train_loss": self.train_loss,
                "val_loss": self.val_loss,
                "history": list(self.history),
                "candidates": list(self.candidates),
                "log": list(self.log),
                "run": self.run,
                "result": self.result,
                "error": self.error,
                "cancel_requested": self.cancel_event.is_set(),
            }


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class JobReporter:
    """The transfer track's :class:`facelab.transfer.Reporter`, writing into a :class:`Job`."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def message(self, text: str) -> None:
        self.job.note(text)
        self.job.check_cancel()

    def task(self, description: str, total: int) -> None:
        with self.job.lock:
            self.job.phase, self.job.step, self.job.total = description, 0, int(total)
        self.job.check_cancel()

    def advance(self, n: int = 1, **fields: str) -> None:
        job = self.job
        with job.lock:
            job.step += n
            epoch = fields.get("epoch")
            if "val_acc" in fields and epoch is not None:
                # The end-of-epoch report (batch reports carry loss/acc of the batch only).
                job.epoch = int(epoch)
                job.train_accuracy = _float(fields.get("acc"))
                job.val_accuracy = _float(fields.get("val_acc"))
                job.train_loss = _float(fields.get("loss"))
                job.val_loss = _float(fields.get("val_loss"))
                job.history.append(
                    {
                        "epoch": job.epoch,
                        "train_accuracy": job.train_accuracy,
                        "val_accuracy": job.val_accuracy,
                    }
                )
                del job.history[:-MAX_HISTORY]
        job.check_cancel()

    def done(self) -> None:
        pass


def _metrics_subset(metrics: dict) -> dict[str, Any]:
    keys = ("split", "accuracy", "n_images", "photo_accuracy", "n_photos", "fpir", "fnir", "threshold")
    return {k: metrics.get(k) for k in keys if k in metrics}


class JobManager:
    """Starts, tracks and cancels training jobs for one workspace.

    ``write_lock`` is the workspace's lock for changes to photos; a job holds it from start to end.
    ``on_model_change`` is called after every job (the recognizer cache drops its model).
    """

    def __init__(
        self, root: Path, write_lock: threading.Lock, on_model_change: Callable[[], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.write_lock = write_lock
        self.on_model_change = on_model_change
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- queries ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (jobs are forgotten when the server restarts)")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def active(self) -> Job | None:
        return next((j for j in self.list() if j.active), None)

    # -- control ---------------------------------------------------------------------------
    def start(self, params: TrainParams) -> Job:
        """Start a job in a background thread; :class:`Conflict` while another job or an upload runs."""
        current = self.active()
        if current is not None:
            raise Conflict(f"job {current.id} is still running; wait for it or cancel it")
        if not self.write_lock.acquire(blocking=False):
            raise Conflict("photos are being uploaded or changed; start training when that is done")
        job = Job(id=uuid.uuid4().hex[:12], params=params)
        try:
            job.held.enter_context(write_lock(self.root))
        except WorkspaceBusy as exc:
            self.write_lock.release()
            who = exc.holder.describe() if exc.holder else "another facelab process"
            raise Conflict(f"the workspace is being changed by {who}; start training when it has finished") from exc
        with self._lock:
            self._jobs[job.id] = job
            for old in sorted(self._jobs.values(), key=lambda j: j.created)[:-KEEP_JOBS]:
                if not old.active:
                    del self._jobs[old.id]
        thread = threading.Thread(target=self._run, args=(job,), name=f"facelab-job-{job.id}", daemon=True)
        try:
            thread.start()
        except BaseException:
            job.held.close()
            self.write_lock.release()
            raise
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.active:
            job.cancel_event.set()
            job.note("cancel requested; stopping at the next progress report")
        return job

    # -- the work --------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        with job.lock:
            job.state, job.started = JobState.RUNNING, time.time()
        outcome, error = JobState.DONE, None
        try:
            with Workspace(self.root, create=False) as ws:
                self._train(job, ws)
        except JobCancelled:
            outcome = JobState.CANCELLED
            job.note("cancelled; the current model was left as it was")
        except Exception as exc:  # the job reports any failure instead of dying silently
            outcome, error = JobState.FAILED, str(exc) or type(exc).__name__
            job.note(f"failed: {error}")
            job.note(traceback.format_exc(limit=6))
        finally:
            with job.lock:
                job.state, job.finished, job.error = outcome, time.time(), error
            job.held.close()
            self.write_lock.release()
            if self.on_model_change is not None:
                self.on_model_change()

    def _train(self, job: Job, ws: Workspace) -> None:
        from facelab import workflow

        params = job.params
        with job.lock:
            job.phase = "split"
        job.note("splitting photos into train / val / test (by photo, no near-duplicate leaks)")
        split = workflow.split(ws)
        for warning in split.warnings:
            job.note(f"warning: {warning}")
        job.check_cancel()
        if params.mode is TrainMode.AUTO:
            run_dir, result = self._auto(job, ws)
        elif params.mode is TrainMode.EMBEDDING:
            run_dir, result = self._embedding(job, ws)
        else:
            run_dir, result = self._transfer(job, ws)
        with job.lock:
            job.phase = "deciding whether it replaces the current model"
        # One rule for every front end: current only if no worse on the same validation faces.
        deployment = workflow.deploy(ws, run_dir)
        result["deployed"] = deployment.deployed
        result["deployment"] = workflow.describe(deployment)
        with job.lock:
            job.run, job.result, job.phase = run_dir.name, result, "done"
        for line in workflow.describe(deployment):
            job.note(line)
        job.note(f"done: {run_dir.name}")

    def _embedding_progress(self, job: Job, label: str) -> Callable[[int, int, object], None]:
        def progress(done: int, total: int, item: object = None) -> None:
            with job.lock:
                job.phase, job.step, job.total = label, int(done), int(total)
            job.check_cancel()

        return progress

    def _auto(self, job: Job, ws: Workspace) -> tuple[Path, dict[str, Any]]:
        from facelab.auto import CANDIDATES, auto_select, strangers_folder

        budget = job.params.budget_minutes
        job.note(f"automatic: training candidates cheapest first within {budget:g} minute(s)")
        with job.lock:
            job.phase, job.total = "candidates", len(CANDIDATES)
        started = time.time()

        def progress(number: int, total: int, name: object) -> None:
            # Called after each candidate that ran; its run folder is the newest auto-*-NAME.
            folders = [p for p in ws.runs_dir.glob(f"auto-*-{name}") if p.stat().st_mtime >= started - 1]
            row: dict[str, Any] = {"name": str(name), "val_accuracy": None, "run": None}
            if folders:
                from facelab.compare import run_row

                newest = max(folders, key=lambda p: p.stat().st_mtime)
                try:
                    data = run_row(newest)
                    row.update(run=newest.name, val_accuracy=data.get("val_accuracy"))
                except (OSError, ValueError):
                    pass
            with job.lock:
                job.step, job.total = int(number), int(total)
                job.candidates.append(row)
            job.note(f"candidate {number}/{total}: {name}")
            job.check_cancel()

        def phase(text: str) -> None:  # after the candidates: never a full bar that waits in silence
            with job.lock:
                job.phase = text
            job.note(text)

        outcome = auto_select(
            ws, budget_minutes=budget, strangers=strangers_folder(ws), progress=progress, on_phase=phase
        )
        # (deployed by _train, through facelab.workflow.deploy like every other run)
        # Every candidate is calibrated at the end; show what the ranking used.
        fnir_of = {row["run"]: row.get("val_fnir") for row in outcome.rows}
        with job.lock:
            for row in job.candidates:
                row["val_fnir"] = fnir_of.get(row.get("run"))
        for note in outcome.skipped:
            job.note(f"skipped {note}")
        job.note(f"winner {outcome.winner.name}, ranked by {outcome.ranked_by}")
        self._winner_accuracy(job, outcome.winner)
        return outcome.winner, {
            "metrics": _metrics_subset(outcome.metrics),
            "candidates": [r.get("run") for r in outcome.rows],
            "skipped": outcome.skipped,
            "comparison": outcome.comparison.name,
        }

    def _finish_run(self, job: Job, ws: Workspace, run_dir: Path, calibrate: bool) -> dict[str, Any]:
        from facelab import workflow

        if calibrate:
            with job.lock:
                job.phase = "calibrating the unknown threshold"
            workflow.calibrate(ws, run_dir)
        with job.lock:
            job.phase = "evaluating on the test split"
        job.check_cancel()
        metrics = workflow.evaluate(ws, run_dir)
        return {"metrics": _metrics_subset(metrics)}

    def _embedding(self, job: Job, ws: Workspace) -> tuple[Path, dict[str, Any]]:
        from facelab import workflow

        head = job.params.head
        job.note(f"embedding track: dlib face embeddings + {head} head")
        run_dir = workflow.train_embedding(
            ws,
            head=head,
            include_others=job.params.include_others,
            progress=self._embedding_progress(job, "embedding faces"),
        )
        self._winner_accuracy(job, run_dir)
        return run_dir, self._finish_run(job, ws, run_dir, calibrate=False)

    @staticmethod
    def _winner_accuracy(job: Job, run_dir: Path) -> None:
        """Show the trained run's accuracies (tracks without epochs report none while training)."""
        from facelab.runs import read_summary

        summary = read_summary(run_dir)
        with job.lock:
            job.train_accuracy = _float(summary.get("train_accuracy"))
            job.val_accuracy = _float(summary.get("val_accuracy"))

    def _transfer(self, job: Job, ws: Workspace) -> tuple[Path, dict[str, Any]]:
        from facelab import workflow
        from facelab.config import TrainConfig

        p = job.params
        config = TrainConfig(
            backbone=p.backbone,
            strategy=p.strategy,
            augment=p.augment,
            epochs=p.epochs,
            include_others=p.include_others,
        )

        def phase(text: str) -> None:
            with job.lock:
                job.phase = text

        run_dir = workflow.train_transfer(ws, config, reporter=JobReporter(job), on_phase=phase)  # calibrated too
        return run_dir, self._finish_run(job, ws, run_dir, calibrate=False)
