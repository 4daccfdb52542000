"""The ``ray`` engine of :func:`facelab.album_index.index_library`: Ray Data analyses the photos.

``facelab album index LIBRARY -w WS --engine ray [--address ADDR] [--workers N]`` runs the same
per-photo function as the local engine (:func:`facelab.album_index.analyse_photo`) inside Ray
actors, each of which loads the detector and the model once, and streams the answers back to this
process, which writes each one into the workspace as it arrives (so a stopped run resumes).

* No address: a Ray is started on this machine with ``workers`` CPUs (default: every core) and
  stopped at the end.
* ``--address ray://HOST:10001`` (Ray Client), ``HOST:6379`` or ``auto`` (this machine is a node of
  the cluster): the actors run on the cluster; this process only writes the workspace.

Every node must see the library at the same absolute path (shared storage mounted alike on every
node) and have the same facelab installed; the workspace is written by this process only. See
docs/scale.md.

Tuning: ``workers`` is the number of actors, each holding one CPU and one copy of the models
(a few hundred MB); default one per CPU of the cluster. :data:`BATCH_SIZE` photos go to an actor at
a time: small, so answers stream back steadily and an interrupted run loses little work (a photo
takes ~0.1–1 s, far more than Ray's per-batch overhead).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from facelab.threads import available_cpus

if TYPE_CHECKING:
    from facelab.album_index import PhotoAnalysis
    from facelab.recognize import Recognizer

INSTALL = "pip install 'facelab[ray]'"
# Photos per Ray Data block and per map_batches call. Ray Data hands an actor's results back a
# block at a time, so this is also how often answers (and the progress bar) move.
BATCH_SIZE = 2
# Above this many blocks the blocks grow instead: every block is an object in Ray's object store and
# a task to schedule, which costs more than it gives for libraries of hundreds of thousands of photos.
MAX_BLOCKS = 10_000
COLUMN = "analysis"
# Ray Data settings while facelab's dataset runs (restored after).
QUIET_CONTEXT: dict[str, Any] = {
    # facelab draws its own progress bar; Ray's bars and start-up banner would garble it.
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    # A block that fails every retry is dropped (its photos are answered as errors), not fatal.
    "max_errored_blocks": -1,
}


def _no_bars_notice(record: logging.LogRecord) -> bool:
    """Drops Ray Data's "progress bars disabled" warning: facelab turned them off on purpose."""
    return not record.getMessage().startswith("Progress bars disabled")


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data  # the extra installs ray[data]: plain ray lacks what Ray Data imports
    except ImportError as exc:
        raise ImportError(f"--engine ray needs Ray with Ray Data: {INSTALL} (on every machine of the cluster)") from exc
    return ray


class PhotoAnalyser:
    """A Ray actor (through ``map_batches``): loads the models once, then analyses batches of photos.

    Runs on a Ray worker, so the photos are read there: a path this node cannot see comes back as
    the photo's error, naming the node and the fix (shared storage).
    """

    def __init__(self, recognizer_pickle: bytes) -> None:
        from facelab.threads import limit_threads

        # One actor per CPU: each library must keep to one thread, or N actors × N threads each
        # fight over the node's cores (and must be told before the models create their sessions).
        limit_threads(1)
        self.recognizer: Recognizer = pickle.loads(recognizer_pickle)
        self.recognizer.warm_up()
        self.node = socket.gethostname()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from facelab.album_index import PhotoAnalysis, analyse_photo

        out = []
        for path, mtime in zip(batch["path"], batch["mtime"], strict=True):
            path = str(path)
            if not os.path.exists(path):
                # Checked here, not on the driver: the driver found the file, this node does not.
                analysis = PhotoAnalysis(
                    path,
                    error=f"not found on Ray node {self.node} — on a cluster the library must be on shared "
                    "storage mounted at the same path on every node (see docs/scale.md)",
                )
            else:
                analysis = analyse_photo(self.recognizer, path, float(mtime))
            # Pickled whole: Recognition/Face are dataclasses that Arrow columns cannot hold.
            out.append(pickle.dumps(analysis, protocol=pickle.HIGHEST_PROTOCOL))
        return {COLUMN: np.array(out, dtype=object)}


class RayEngine:
    """Ray Data on a Ray cluster at ``address``, or on a Ray started on this machine (no address).

    * ``workers``: actors analysing photos at once, one CPU each; default: one per CPU (of this
      machine when Ray is started here, of the cluster otherwise). Fewer leave CPUs to other jobs.
    * ``address``: what ``ray.init`` accepts — ``ray://HOST:10001`` (Ray Client, from any machine),
      ``HOST:6379`` or ``auto`` (from a node of the cluster).
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        import_ray()  # fail at once (the CLI checks the engine before loading a model)
        self.workers = workers
        self.address = address
        self.batch_size = BATCH_SIZE

    def analyse(self, recognizer: Recognizer, jobs: Sequence[tuple[str, float]]) -> Iterator[PhotoAnalysis]:
        """Analyse ``jobs`` ((absolute path, mtime) pairs) on Ray; yields each answer as it arrives,
        in any order. A photo whose worker failed for good comes back with an error (retried next run)."""
        from facelab.album_index import PhotoAnalysis

        if not jobs:
            return
        ray = import_ray()
        connected = self._connect(ray)
        context = ray.data.DataContext.get_current()
        saved = {name: getattr(context, name) for name in QUIET_CONTEXT}
        data_logger = logging.getLogger("ray.data")
        saved_level = data_logger.level
        progress_logger = logging.getLogger("ray.data._internal.progress")
        stream: Any = None
        try:
            for name, value in QUIET_CONTEXT.items():
                setattr(context, name, value)
            # Ray Data's INFO lines (execution started/finished) would garble facelab's progress bar;
            # its warnings (say, a cluster without the CPUs asked for) still show.
            data_logger.setLevel(logging.WARNING)
            progress_logger.addFilter(_no_bars_notice)
            done: set[str] = set()
            stream = iter(self._dataset(ray, recognizer, jobs).iter_rows())
            for row in stream:
                analysis: PhotoAnalysis = pickle.loads(row[COLUMN])
                done.add(analysis.path)
                yield analysis
            # Ray Data drops a block whose task raised (max_errored_blocks in QUIET_CONTEXT): its
            # photos are answered here, so the run goes on and they are retried next time. (An actor
            # that dies is restarted and its batch retried by Ray Data itself.)
            for path, _ in jobs:
                if path not in done:
                    yield PhotoAnalysis(
                        path,
                        error="the Ray actor analysing it failed (an exception; its log is on the Ray node: "
                        "`ray logs`) — retried on the next run",
                    )
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stops Ray Data's executor (a stopped run) before Ray itself goes
            for name, value in saved.items():  # this process's other Ray Data work keeps its settings
                setattr(context, name, value)
            data_logger.setLevel(saved_level)
            progress_logger.removeFilter(_no_bars_notice)
            if connected:
                # Stops the Ray started here; on a cluster it only disconnects this driver.
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Start or join Ray; False when this process was already connected (leave that Ray alone)."""
        if ray.is_initialized():
            return False
        if self.address is None:
            # A Ray private to this command: its start-up notices (token authentication, ports) are noise here.
            ray.init(
                num_cpus=self.workers or available_cpus(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        else:
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConnectionError(
                    f"--address {self.address}: cannot join that Ray cluster ({exc}) — give ray://HEAD:10001, "
                    "HEAD:6379 or auto for a cluster started with `ray start --head` (see docs/scale.md)"
                ) from exc
        return True

    def _dataset(self, ray: Any, recognizer: Recognizer, jobs: Sequence[tuple[str, float]]) -> Any:
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = min(workers, math.ceil(len(jobs) / self.batch_size))
        items = [{"path": path, "mtime": float(mtime)} for path, mtime in jobs]
        blocks = min(MAX_BLOCKS, math.ceil(len(items) / self.batch_size))
        batch_size = math.ceil(len(items) / blocks)
        return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            PhotoAnalyser,
            # Pickled once here, so the actors unpickle plain bytes; Ray ships it to each actor.
            fn_constructor_args=(pickle.dumps(recognizer, protocol=pickle.HIGHEST_PROTOCOL),),
            batch_size=batch_size,
            batch_format="numpy",
            # A fixed pool: every actor loads the models once, so growing and shrinking it costs loads.
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
