"""What every request handler shares: the workspace folder, limits, locks, jobs and the model cache."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from facelab.server.jobs import JobManager
from facelab.server.recognition import FaceMemory, ModelCache
from facelab.server.roots import remember_photo_root
from facelab.server.threshold_ops import CurveCache
from facelab.server.workspace_ops import Conflict, OpError, tmp_dir, uploads_dir
from facelab.store import Workspace
from facelab.writelock import WorkspaceBusy, write_lock


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """Upload and recognition limits. ``max_file_bytes``: one image (phone photos are 2–12 MB; HEIC
    less); ``max_files``: images in one upload request (the page sends bigger drops in batches);
    ``max_request_bytes``: a whole request body, checked before it is read.
    Decoded images are also capped in pixels by ``FACELAB_MAX_PIXELS`` (see facelab.imageio).

    ``max_recognitions``: recognitions (``/api/recognize``, ``/api/verify``) running at once; more
    get 429. Each holds a decoded image and a detector's buffers, and more than one per core only
    queues, so the default is the CPU count. ``max_request_pixels``: decoded pixels one recognition
    request may hold (both images for verify), checked from the image headers before decoding;
    beyond it 413. 50 MP is a full-resolution photo of any phone with room to spare (≈150 MB as
    RGB); raise it for big scans, lower it on a small machine."""

    max_file_bytes: int = 30 * 2**20
    max_files: int = 20
    max_request_bytes: int = 100 * 2**20
    max_recognitions: int = field(default_factory=_cpu_count)
    max_request_pixels: int = 50_000_000


@dataclass
class ServerState:
    """Shared by all requests of one app. The database is opened per request (:meth:`workspace`):
    SQLite connections are cheap, and one per request keeps transactions of concurrent requests apart."""

    root: Path
    token: str | None
    limits: Limits = field(default_factory=Limits)
    detector: str | None = None
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    models: ModelCache = field(default_factory=ModelCache)
    # Faces of recent recognitions, for "This is …" (enrolling one without sending the image again).
    faces: FaceMemory = field(default_factory=FaceMemory)
    # The unknown-threshold slider's curves: seconds to compute, the same until the run or faces change.
    curves: CurveCache = field(default_factory=CurveCache)
    jobs: JobManager = field(init=False)
    recognitions: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.jobs = JobManager(self.root, self.write_lock, on_model_change=self.models.clear)
        self.recognitions = threading.BoundedSemaphore(max(1, self.limits.max_recognitions))

    def prepare(self) -> None:
        """Create the workspace if needed and clear temporary files an earlier run left behind.

        Another facelab process writing to the workspace (a CLI build) may have uploads of its
        own server in flight; then the temporary folder is left alone.

        The photo folder of the last CLI build is remembered here too (see
        :mod:`facelab.server.roots`): the pages keep showing its photos after a later build of
        another folder (or an upload) replaces the ``photos_root`` setting.
        """
        with Workspace(self.root, create=True) as ws:
            uploads_dir(ws).mkdir(parents=True, exist_ok=True)
            try:
                with write_lock(self.root):
                    shutil.rmtree(tmp_dir(ws), ignore_errors=True)
                    remember_photo_root(ws)
            except WorkspaceBusy:
                pass
            tmp_dir(ws).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the workspace's write lock (against other processes) for one change; 409 if busy.

        Small changes (a review decision, the current model) take only this; changes to photos
        and faces take :meth:`exclusive`, which also keeps this server's own jobs out.
        """
        try:
            with write_lock(self.root):
                yield
        except WorkspaceBusy as exc:
            who = exc.holder.describe() if exc.holder else "another facelab process"
            raise Conflict(f"the workspace is being changed by {who}; try again when it has finished") from exc

    @contextmanager
    def recognition_slot(self) -> Iterator[None]:
        """One of ``max_recognitions`` slots for a recognition; 429 when all are taken (never waits)."""
        if not self.recognitions.acquire(blocking=False):
            raise OpError(
                f"{self.limits.max_recognitions} recognitions are already running (the server's limit); "
                "try again in a moment",
                429,
            )
        try:
            yield
        finally:
            self.recognitions.release()

    @contextmanager
    def workspace(self) -> Iterator[Workspace]:
        ws = Workspace(self.root, create=False)
        try:
            yield ws
        finally:
            ws.close()

    @contextmanager
    def exclusive(self, timeout: float = 120.0) -> Iterator[None]:
        """Hold the write lock for a change to photos or faces; :class:`Conflict` while a job trains."""
        job = self.jobs.active()
        if job is not None:
            raise Conflict(f"training job {job.id} is running; change photos when it has finished")
        if not self.write_lock.acquire(timeout=timeout):
            raise Conflict("the workspace is busy (another upload or a training job); try again")
        try:
            with self.writing():
                yield
        finally:
            self.write_lock.release()
