"""What every request handler shares: the workspace folder, limits, locks, jobs and the model cache."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from facelab.server.jobs import JobManager
from facelab.server.recognition import ModelCache
from facelab.server.workspace_ops import Conflict, tmp_dir, uploads_dir
from facelab.store import Workspace


@dataclass(frozen=True)
class Limits:
    """Upload limits. ``max_file_bytes``: one image (phone photos are 2–12 MB; HEIC less);
    ``max_files``: images in one upload request (the page sends bigger drops in batches);
    ``max_request_bytes``: a whole request body, checked before it is read.
    Decoded images are also capped in pixels by ``FACELAB_MAX_PIXELS`` (see facelab.imageio)."""

    max_file_bytes: int = 30 * 2**20
    max_files: int = 20
    max_request_bytes: int = 100 * 2**20


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
    jobs: JobManager = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.jobs = JobManager(self.root, self.write_lock, on_model_change=self.models.clear)

    def prepare(self) -> None:
        """Create the workspace if needed and clear temporary files an earlier run left behind."""
        with Workspace(self.root, create=True) as ws:
            uploads_dir(ws).mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp_dir(ws), ignore_errors=True)
            tmp_dir(ws).mkdir(parents=True, exist_ok=True)

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
            yield
        finally:
            self.write_lock.release()
