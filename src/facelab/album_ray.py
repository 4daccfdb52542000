"""The ``ray`` engine of :func:`facelab.album_index.index_library`: Ray Data analyses the photos.

``facelab album index LIBRARY -w WS --engine ray [--address ADDR] [--workers N]`` runs the same
per-photo function as the local engine (:func:`facelab.album_index.analyse_photo`) inside Ray
actors, each of which loads the detector and the model once, and streams the answers back to this
process, which writes each one into the workspace as it arrives (so a stopped run resumes).

* No address: a Ray is started on this machine with ``workers`` CPUs (default: every core) and
  stopped at the end.
* ``--address HOST:6379`` or ``auto`` (this machine is a node of the cluster): Ray Data runs the
  actors on the cluster; this process only writes the workspace.
* ``--address ray://HOST:10001`` (Ray Client, from a machine outside the cluster): Ray Data does not
  run over Ray Client (its executor needs a full Ray driver; ray-project/ray#48682), so the same
  actors are driven by Ray Core instead (:func:`_analyse_over_client`): a fixed pool, a batch of
  photos per call, answers as they come.

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
import sys
import time
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
# Over Ray Client: restarts of a dead actor, and retries of the call it was answering.
ACTOR_RETRIES = 2
# Joining through Ray Client: tries, when the head's client server says it could not start ours.
CLIENT_ATTEMPTS = 2
CLIENT_SERVER_FAILED = "Starting Ray client server failed"
# Ray Data settings while facelab's dataset runs (restored after).
QUIET_CONTEXT: dict[str, Any] = {
    # facelab draws its own progress bar; Ray's bars and start-up banner would garble it.
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    # A block that fails every retry is dropped (its photos are answered as errors), not fatal.
    "max_errored_blocks": -1,
}


# Where `ray start --head` keeps the cluster's token (Ray >= 2.59 turns token authentication on by
# default); RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH name another.
RAY_TOKEN_FILE = "~/.ray/auth_token"


def use_ray_token() -> None:
    """Present the cluster's token when one is at hand and RAY_AUTH_MODE is unset.

    A cluster started by ``ray start --head`` may require Ray's token, but a driver that joins it
    attaches the token only when RAY_AUTH_MODE=token is set, so joining fails ("Authentication token
    is missing"). A cluster without authentication ignores the token, so setting the mode is safe;
    an explicit RAY_AUTH_MODE (``disabled`` too) is left as it is.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_at_hand = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not (token_at_hand or os.path.isfile(os.path.expanduser(RAY_TOKEN_FILE))):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:
        # Ray read its configuration when it was imported; its own switch to token mode refreshes
        # it (private, so only where this Ray has it; else the next process sees the mode).
        try:
            from ray._private.authentication.authentication_token_setup import _enable_token_auth

            _enable_token_auth()
        except (ImportError, AttributeError):
            pass


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
        return self.analyse_batch(batch)

    def analyse_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{"path": [...], "mtime": [...]}`` in, ``{COLUMN: [pickled PhotoAnalysis, ...]}`` out."""
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
        if address is not None:
            use_ray_token()  # before Ray is imported: it reads RAY_AUTH_MODE once
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
            if ray.util.client.ray.is_connected():
                stream = _analyse_over_client(ray, recognizer, jobs, self._workers(ray, len(jobs)), self.batch_size)
            else:
                stream = (pickle.loads(row[COLUMN]) for row in self._dataset(ray, recognizer, jobs).iter_rows())
            for analysis in stream:
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
                # "local": a Ray of its own even when a cluster started with `ray start` runs on this
                # machine (ray.init() would join that one, and refuse num_cpus).
                address="local",
                num_cpus=self.workers or available_cpus(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        else:
            try:
                self._join(ray)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConnectionError(
                    f"--address {self.address}: cannot join that Ray cluster ({exc}) — give ray://HEAD:10001, "
                    "HEAD:6379 or auto for a cluster started with `ray start --head`; if the cluster uses Ray's "
                    f"token authentication, put its token in {RAY_TOKEN_FILE} or RAY_AUTH_TOKEN (see docs/scale.md)"
                ) from exc
        return True

    def _join(self, ray: Any) -> None:
        """``ray.init`` at ``address``; once more when Ray Client's server failed to start the
        per-client server it hands each driver (it does, now and then, just after the head starts)."""
        for attempt in range(CLIENT_ATTEMPTS):
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
                return
            except ConnectionError as exc:
                if attempt + 1 == CLIENT_ATTEMPTS or CLIENT_SERVER_FAILED not in str(exc):
                    raise
                time.sleep(2.0)

    def _workers(self, ray: Any, n_jobs: int) -> int:
        """Actors to start: ``workers``, else one per CPU of the cluster; never more than batches."""
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        return min(workers, math.ceil(n_jobs / self.batch_size))

    def _dataset(self, ray: Any, recognizer: Recognizer, jobs: Sequence[tuple[str, float]]) -> Any:
        workers = self._workers(ray, len(jobs))
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


def _analyse_over_client(
    ray: Any, recognizer: Recognizer, jobs: Sequence[tuple[str, float]], workers: int, batch_size: int
) -> Iterator[PhotoAnalysis]:
    """The photos through ``workers`` :class:`PhotoAnalyser` actors driven by Ray Core — what works
    over Ray Client, where Ray Data does not. Each actor has one batch in flight at a time and gets
    the next as soon as it answers, so a slow photo holds back only its own actor. A batch whose call
    failed (an exception, an actor that died) is answered by the caller as failed, like a dropped
    Ray Data block; an actor that died for good is not given more.
    """
    import numpy as np

    # An actor that dies (its node lost, out of memory) is restarted and its call retried, as Ray
    # Data does; after that its batch is answered as failed (retried on the next run).
    actor_class = ray.remote(num_cpus=1, max_restarts=ACTOR_RETRIES, max_task_retries=ACTOR_RETRIES)(PhotoAnalyser)
    recognizer_ref = ray.put(pickle.dumps(recognizer, protocol=pickle.HIGHEST_PROTOCOL))
    actors = [actor_class.remote(recognizer_ref) for _ in range(workers)]
    batches = iter([jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)])
    running: dict[Any, Any] = {}  # call's object ref -> the actor answering it

    def give(actor: Any) -> None:
        batch = next(batches, None)
        if batch is not None:
            paths = np.array([path for path, _ in batch], dtype=object)
            mtimes = np.array([float(mtime) for _, mtime in batch])
            running[actor.analyse_batch.remote({"path": paths, "mtime": mtimes})] = actor

    try:
        for actor in actors:
            give(actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ready[0])
            try:
                answers = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                continue  # the actor is gone: its batch is answered as failed, the others go on
            except ray.exceptions.RayError:
                give(actor)  # an exception in this batch: the actor itself is fine
                continue
            give(actor)
            for blob in answers[COLUMN]:
                yield pickle.loads(blob)
    finally:
        for actor in actors:
            ray.kill(actor)
