"""Engines that analyse a library's photos for :func:`facelab.album_index.index_library`.

Every engine runs the same per-photo function, :func:`facelab.album_index.analyse_photo`, and
yields its :class:`~facelab.album_index.PhotoAnalysis` results as they finish (in any order); the
caller writes each into the workspace at once, so every engine is resumable the same way.

* ``local`` — this machine. ``workers=1`` analyses in this process; more start that many worker
  processes, each loading the detector and the model once and using ``cores // workers`` threads
  (N processes × N threads each would fight over the cores). Default: one worker per core.
  Decoding, detecting and embedding all run in the workers, so every core stays busy; the main
  process only writes rows.
* ``ray`` — Ray Data on a cluster (:mod:`facelab.album_ray`, needs ``pip install facelab[ray]``).

Add an engine with :func:`register_engine`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Protocol

from facelab.threads import available_cpus

if TYPE_CHECKING:
    from facelab.album_index import PhotoAnalysis
    from facelab.recognize import Recognizer

Job = tuple[str, float]  # (absolute path, modification time)

# Each worker gets at least this many photos, else fewer workers (one: in this process). A forked
# worker costs ~1.5 s to start (its networks' sessions) on a 2-core machine, which pays off after
# 40-90 photos (bench/bench_album.py, 2026-12-02: 78 small celeb5 photos took 2.3 s in one process and
# 3.1 s with two workers; 328 sports5 photos 24.7 s and 13.6 s).
MIN_PHOTOS_PER_WORKER = 40
# Photos handed to each worker ahead of time: enough that a worker never waits for the next one,
# few enough that an interrupted run has little in flight.
QUEUE_PER_WORKER = 3


class Engine(Protocol):
    """Analyses photos with a recognizer and yields the results as they are ready."""

    def analyse(self, recognizer: Recognizer, jobs: Sequence[Job]) -> Iterator[PhotoAnalysis]: ...


ENGINES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make ``name`` usable as ``--engine NAME``; ``factory(workers=, address=)`` builds it."""
    ENGINES[name] = factory


def get_engine(name: str, *, workers: int | None = None, address: str | None = None) -> Engine:
    """The engine called ``name``; raises ``ValueError`` naming the choices for an unknown one."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(sorted(ENGINES))}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be 1 or more, not {workers}")
    return ENGINES[name](workers=workers, address=address)


# -- in a worker process ------------------------------------------------------------------------

_worker_recognizer: Recognizer | None = None


def _start_worker(recognizer: Recognizer, threads: int) -> None:
    """Runs once in each worker: its share of the cores, Ctrl-C left to the parent, models loaded."""
    global _worker_recognizer
    # The parent handles Ctrl-C (it stops the pool); a worker printing its own traceback would only
    # bury the message that says the index resumes next time.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from facelab.threads import limit_threads

    limit_threads(threads)
    _worker_recognizer = recognizer
    recognizer.warm_up()


def _analyse_in_worker(job: Job) -> PhotoAnalysis:
    from facelab.album_index import analyse_photo

    assert _worker_recognizer is not None, "worker started without a recognizer"
    return analyse_photo(_worker_recognizer, *job)


# -- the local engine ---------------------------------------------------------------------------


class LocalEngine:
    """This machine: in this process (``workers=1``) or a pool of worker processes."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if address is not None:
            raise ValueError("--address is for --engine ray; the local engine runs on this machine")
        self.workers = workers or available_cpus()

    def analyse(self, recognizer: Recognizer, jobs: Sequence[Job]) -> Iterator[PhotoAnalysis]:
        from facelab.album_index import analyse_photo

        workers = min(self.workers, max(1, len(jobs) // MIN_PHOTOS_PER_WORKER))
        if workers <= 1:
            for job in jobs:
                yield analyse_photo(recognizer, *job)
            return
        yield from self._pool(recognizer, jobs, workers)

    def _pool(self, recognizer: Recognizer, jobs: Sequence[Job], workers: int) -> Iterator[PhotoAnalysis]:
        import multiprocessing

        from facelab.album_index import analyse_photo

        threads = max(1, available_cpus() // workers)
        context = multiprocessing.get_context("fork" if _fork_is_safe(recognizer) else "spawn")
        pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(recognizer, threads))
        pending: dict[Future[Any], Job] = {}
        queue = iter(jobs)
        left: list[Job] = []
        try:
            while True:
                while len(pending) < workers * QUEUE_PER_WORKER:
                    job = next(queue, None)
                    if job is None:
                        break
                    pending[pool.submit(_analyse_in_worker, job)] = job
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        left.append(job)
                if left:
                    break
        except BaseException:
            _stop(pool)
            raise
        if left:
            # A worker died (a decoder crashed on some photo, or the system killed it for memory):
            # finish here, one photo at a time, so one bad file cannot stop the whole library.
            print(
                "facelab: a worker process stopped; analysing the remaining photos in this process",
                file=sys.stderr,
            )
            left += [job for job in pending.values() if job not in left] + list(queue)
            _stop(pool)
            for job in left:
                yield analyse_photo(recognizer, *job)
            return
        pool.shutdown(wait=True)


def _fork_is_safe(recognizer: Recognizer) -> bool:
    """Whether worker processes may be forked from this one rather than spawned.

    A forked worker starts at once with the model already loaded; a spawned one imports facelab and
    loads the model again (2-3 s on a 2-core machine: a small library's whole indexing time). But a
    fork copies only the calling thread: locks held by other threads (a web server's, onnxruntime's
    or PyTorch's thread pools) stay locked in the child for ever. So fork only from a process that
    has no other Python thread, has not started a network yet and names faces from embedding vectors
    (numpy only) — the command line's case with an embedding-track model.
    """
    import threading

    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    from facelab.embedders import has_built_embedders

    if has_built_embedders():
        return False
    retinaface = sys.modules.get("retinaface")
    if retinaface is not None and getattr(retinaface, "ONNX_SESSION", None) is not None:
        return False
    # A CNN model runs PyTorch, whose thread pools we cannot inspect: its workers are spawned.
    from facelab.recognize import VectorModel

    return isinstance(recognizer.model, VectorModel)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: queued photos are dropped and running workers are ended (they write nothing;
    the parent writes), so Ctrl-C returns at once and the next run resumes."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public way before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def _ray_engine(workers: int | None = None, address: str | None = None) -> Engine:
    from facelab.album_ray import RayEngine

    return RayEngine(workers=workers, address=address)


register_engine("local", LocalEngine)
register_engine("ray", _ray_engine)
