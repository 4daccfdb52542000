"""Recognizing people through a video, a webcam or a stream: tracks of faces, a name per track.

Faces are detected on a shrunken copy of every k-th frame, linked into tracks
(:mod:`facelab.tracking`), and a track is named only when needed: when it is new, when its box
changed much, when the face in its box changed, and on a slow periodic refresh; its name is a vote
over those answers weighted by face size. A shot cut ends every track, and a face whose embedding
moved away from its track's identity starts a new track, so no track (and no summary line) carries
one person's name onto another. See :class:`VideoOptions` for tuning.

Naming a face (an embedding network, ~0.1 s of one core) is the expensive step. For cameras and
streams it runs in a worker thread (:class:`NamingWorker`; the network itself in a child process
when it would hold Python's GIL, :class:`EmbedProcess`), so a frame never waits for it: a track
shows its own last name, or none until its first answer is back. Video files are named in the frame
loop, so the same file always gives the same answers (see :class:`NamingMode`).

The photo core (:mod:`facelab.recognize`) imports this module, so it is imported here only where
it is used.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.openset import MIN_FACE
from facelab.recognize_capture import LatestFrameReader, open_capture
from facelab.recognize_inputs import LIVE_KINDS, Source
from facelab.tracking import (
    IoUTracker,
    ShotCutDetector,
    Track,
    face_signature,
    face_weight,
    structure_distance,
)
from facelab.types import Face, Recognition

if TYPE_CHECKING:
    from facelab.recognize import Recognizer

TRACK_COLUMNS = ("file", "track", "name", "score", "agreement", "start_s", "end_s", "frames")


class NamingMode(StrEnum):
    """Where faces are named (embedded and scored) while a video plays.

    * ``inline``: in the frame loop. A frame that needs names waits for them (~0.1 s of one core a
      face), so the answers of a file never depend on timing: the same file gives the same tracks,
      names and arrivals on every run and machine. A file is read as fast as it can be processed
      and none of its frames is skipped, so waiting loses nothing but wall-clock time.
    * ``worker``: in a background thread (:class:`NamingWorker`); the frame loop hands over the
      faces that need a name and goes on at once, and each answer is folded into its track when it
      is back (a few frames later). What a camera shows is never held up by naming; the price is
      that which frame an answer lands on depends on the machine's load (names of a clean clip are
      the same as inline, ``tests/test_video_worker.py``).
    * ``auto`` (default): ``worker`` for cameras and streams (frames arrive in real time, and a late
      frame is a dropped one), ``inline`` for video files and for frames fed to
      :meth:`VideoRecognizer.process` directly.

    A thread, so frames are not copied and models not loaded twice: onnxruntime (the detector,
    dlib's network converted to ONNX) and PyTorch release Python's GIL while they compute, so the
    naming thread and the frame loop run on two cores at once. dlib's own network (``dlib-bin``)
    does not: measured, a thread embedding with it held the frame loop for each whole embedding
    (~0.25 s), so such an embedder runs in a child process instead (``embed_process``,
    :class:`EmbedProcess`), which the naming thread waits on without holding the GIL.
    """

    AUTO = "auto"
    INLINE = "inline"
    WORKER = "worker"

    def resolve(self, live: bool) -> NamingMode:
        """``inline`` or ``worker`` for a source that is ``live`` (a camera, a stream) or not."""
        if self is NamingMode.AUTO:
            return NamingMode.WORKER if live else NamingMode.INLINE
        return self


@dataclass(frozen=True)
class VideoOptions:
    """How video is processed; the defaults aim at real time for 640×480 on 2 CPU cores.

    * ``detect_every`` (2): detect faces on every k-th frame; boxes stay put in between. Raise it
      for speed (3–5 is fine for people talking or walking slowly), lower to 1 for fast motion.
    * ``detect_size`` (320): longest side of the copy the detector sees. RetinaFace then finds
      faces from about 16 px *in that copy*, i.e. 32 px in a 640-px frame, 96 px in 1920-px
      video: raise it for small or distant faces (time grows with the pixel count).
    * ``min_face`` (32, ``openset.MIN_FACE``): ignore faces whose shorter side (in frame pixels) is smaller; small faces
      are named poorly and cost as much as big ones.
    * ``reclassify_every`` (100): frames between two periodic re-namings of a track that nothing
      else sent for naming (4 s at 25 fps). Re-naming is needed when something changed, and that
      is caught without it: a new track (``warmup``), a box that moved or grew (``reclassify_iou``),
      a face whose pixels changed (``appearance_jump``), a shot cut (a new track). The periodic
      refresh is a slow safety net and adds votes; measured, 100 instead of 25 halved the namings
      of a 3-face clip and gave the same names (docs/benchmarks_recognize.md). Lower it for more
      votes on hard faces (each costs ~0.1 s of a core), raise it for speed.
    * ``reclassify_iou`` (0.5): a track is also re-named when its box overlaps its box at the
      last naming by less than this (the face moved or turned much).
    * ``warmup`` (2): a new track is named on each of its first ``warmup`` naming rounds, so its
      name rests on more than one frame before it is announced. Raise it when arrivals are
      announced with the wrong name; each extra vote costs one embedding per new face.
    * ``max_classify`` (4): faces named per detection round at most (faces that changed first,
      then new tracks, then the longest unnamed), all in one batch (one network call). Inline,
      a naming costs ~0.1 s of one core (dlib) that the frame waits for, so this bounds the stall
      when several people walk in at once; in a worker it bounds one batch, so the first names
      come back sooner. The rest wait for the next round.
    * ``naming`` (``auto``): where faces are named, see :class:`NamingMode`: ``worker`` for cameras
      and streams (frames never wait), ``inline`` for files (the same answers on every run).
    * ``embed_process`` (None: when needed): with naming in a worker, compute the face embeddings
      in a child process (:class:`EmbedProcess`) instead of the worker thread. Needed for dlib's own
      network (the ``dlib-bin`` wheel computes it holding Python's GIL: measured, a thread embedding
      with it stopped the frame loop for as long as each embedding took, ~0.25 s); not for
      onnxruntime, which releases the GIL. None decides by :func:`holds_gil`; True forces a
      process (costs ~1–2 s and ~100 MB to start it), False a thread.
    * ``min_iou`` / ``max_missed``: the tracker's (see :class:`facelab.tracking.IoUTracker`).
    * ``cuts`` (True): test every detection round for a shot cut, which ends all tracks;
      ``cut_floor`` (0.06), ``cut_k`` (6) and ``cut_window`` (30 rounds) tune the adaptive test
      (see :class:`facelab.tracking.ShotCutDetector`, which also gives what was measured). It costs
      ~0.4 ms a round (640×480, one core).
    * ``drift_distance`` (None: the embedder's same-person distance, 0.58 for dlib): a track's face
      whose embedding lies farther than this from the track's identity (its mean vector and its
      latest one, :meth:`facelab.tracking.Track.identity_distance`) is somebody else: the track
      ends and a new one starts. Lower it to split more eagerly (a blurred or turned face may then
      split one person's track in two, both named alike); ``math.inf`` disables the check. The
      check runs whenever a face is embedded anyway (``warmup``, ``reclassify_every``,
      ``reclassify_iou`` and the appearance test below), so it costs nothing extra with the
      embedding track; with a CNN model each of those namings also embeds the face with dlib
      (~0.1 s of one core), doubling the cost of naming.
    * ``appearance_jump`` (0.35): the cheap test that makes a swap visible between embeddings: the
      face's pixels in its box (24×24 grayscale) are compared with the previous round's by
      :func:`facelab.tracking.structure_distance`; a larger change classifies (and so
      identity-checks) the face in this round, ahead of everything else (~0.15 ms a face a round;
      measured: 0.01–0.18 within a shot, 0.58–0.93 where one person's face replaced another's at
      the same place, ``tests/test_video_identity.py``). Lower it to check more
      often (each check is one embedding), raise it if turning heads trigger needless checks.
      When a drift is found later than the swap, the track is cut at the largest appearance jump
      since its last check, or, without a clear one, at that last check (frames in between are
      given to nobody rather than to the wrong person).
    * ``min_hits`` (2): tracks seen in fewer detection rounds are dropped from the summary as
      noise (a false detection rarely survives two rounds).
    """

    detect_every: int = 2
    detect_size: int = 320
    min_face: int = MIN_FACE
    reclassify_every: int = 100
    reclassify_iou: float = 0.5
    warmup: int = 2
    max_classify: int = 4
    min_iou: float = 0.3
    max_missed: int = 5
    cuts: bool = True
    cut_floor: float = 0.06
    cut_k: float = 6.0
    cut_window: int = 30
    drift_distance: float | None = None
    appearance_jump: float = 0.35
    min_hits: int = 2
    naming: NamingMode = NamingMode.AUTO
    embed_process: bool | None = None

    def __post_init__(self) -> None:
        # Accept the plain strings of a command line or a config ("worker"), and refuse others.
        object.__setattr__(self, "naming", NamingMode(self.naming))
        if min(self.detect_every, self.reclassify_every, self.warmup, self.max_classify) < 1:
            raise ValueError("detect_every, reclassify_every, warmup and max_classify must be at least 1")
        if self.detect_size < 32:
            raise ValueError(f"detect_size {self.detect_size} is too small (use 160 or more)")
        if self.drift_distance is not None and not self.drift_distance > 0:
            raise ValueError(f"drift_distance {self.drift_distance} must be positive (math.inf disables it)")

    def cut_detector(self) -> ShotCutDetector | None:
        """A fresh shot-cut test with these settings (None when ``cuts`` is off)."""
        if not self.cuts:
            return None
        return ShotCutDetector(floor=self.cut_floor, k=self.cut_k, window=self.cut_window)


@dataclass(frozen=True)
class Event:
    """A new person in view, sent to ``--webhook`` and spoken by ``--announce``.

    Raised once per track, when it has been named ``warmup`` times (so a face seen in a single
    frame, often a false detection, raises none); ``name`` is ``"unknown"`` for strangers.
    """

    source: str
    track: int
    name: str
    score: float
    time_s: float
    frame: int
    box: tuple[int, int, int, int]
    event: str = "arrival"

    def to_json(self) -> dict[str, object]:
        return {
            "event": self.event,
            "source": self.source,
            "track": self.track,
            "name": self.name,
            "score": round(self.score, 4),
            "time_s": round(self.time_s, 3),
            "frame": self.frame,
            "box": list(self.box),
        }


@dataclass(frozen=True)
class TrackSummary:
    """One person's appearance: who, how sure, from when to when (seconds from the start)."""

    source: str
    track: int
    name: str
    score: float
    agreement: float
    start_s: float
    end_s: float
    frames: int
    box: tuple[int, int, int, int]

    def row(self) -> dict[str, object]:
        return {
            "file": self.source,
            "track": self.track,
            "name": self.name,
            "score": f"{self.score:.4f}",
            "agreement": f"{self.agreement:.3f}",
            "start_s": f"{self.start_s:.2f}",
            "end_s": f"{self.end_s:.2f}",
            "frames": self.frames,
        }

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.source,
            "track": self.track,
            "name": self.name,
            "score": round(self.score, 4),
            "agreement": round(self.agreement, 4),
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "frames": self.frames,
            "box": list(self.box),
        }


@dataclass
class FrameResult:
    """One processed frame: the BGR pixels (draw on them), the tracks in view, new arrivals."""

    index: int
    time_s: float
    bgr: np.ndarray = field(repr=False)
    tracks: list[Track]
    events: list[Event]
    detected: bool


@dataclass
class VideoStats:
    """Where the time went (seconds, wall clock)."""

    frames: int = 0
    detections: int = 0
    classified_faces: int = 0
    cuts: int = 0  # shot cuts found (every track ended)
    drift_splits: int = 0  # tracks split because their face became somebody else
    read_s: float = 0.0
    detect_s: float = 0.0
    classify_s: float = 0.0  # naming, wherever it ran (in the frame loop, or in the worker)
    total_s: float = 0.0
    dropped: int = 0  # live sources: frames skipped to stay current
    # Naming in a worker: seconds from the frame a face was sent off in to the frame its answer
    # was folded into its track (0 inline), summed and at most, over the batches.
    batches: int = 0
    name_lag_s: float = 0.0
    name_lag_max_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.total_s if self.total_s > 0 else float("nan")

    @property
    def name_lag_mean_s(self) -> float:
        """Mean seconds a batch of faces waited for its names (NaN before any batch)."""
        return self.name_lag_s / self.batches if self.batches else float("nan")


@dataclass
class NamingJob:
    """Faces of one detection round sent for naming: what the worker needs, and what it answers.

    ``rounds`` holds, per track, the rounds since its previous identity check up to this one
    (:attr:`facelab.tracking.Track.unchecked` when the job was made): if the answer shows that the
    face became somebody else, the track is cut where its appearance jumped among them.
    """

    index: int
    time_s: float
    rgb: np.ndarray = field(repr=False)
    tracks: list[Track]
    faces: list[Face]
    rounds: list[list[tuple[int, float, float]]] = field(repr=False)
    sent: float = 0.0  # perf_counter when it was handed over
    answers: list[Recognition] | None = field(default=None, repr=False)
    vectors: np.ndarray | None = field(default=None, repr=False)
    error: BaseException | None = None
    seconds: float = 0.0  # naming time


def holds_gil(embedder: object) -> bool:
    """True when ``embedder`` computes while holding Python's GIL, so a thread running it would
    stop the frame loop: dlib's own network (``dlib-bin``; an embedder that runs dlib's network
    with onnxruntime says ``backend = "onnx"`` and releases it)."""
    from facelab.embedders import DlibEmbedder

    return isinstance(embedder, DlibEmbedder) and getattr(embedder, "backend", "dlib") == "dlib"


def _embed_server(name: str, read_fd: int, write_fd: int) -> None:
    """The child process of :class:`EmbedProcess`: build the embedder, then embed what comes."""
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        from facelab.embedders import get_embedder

        embedder = get_embedder(name)
        outbox.send("ready")
    except BaseException as exc:
        outbox.send(exc)
        return
    while (message := inbox.recv()) is not None:
        try:
            outbox.send(embedder.embed(*message))
        except Exception as exc:  # the caller raises it; the process goes on with the next faces
            outbox.send(exc)


class EmbedProcess:
    """A registered embedder (:func:`facelab.embedders.get_embedder`) in a child process, called
    like the embedder itself: ``embed(rgb, faces)`` sends the frame and waits for the vectors.

    For embedders that hold the GIL (:func:`holds_gil`): the naming thread waits on a pipe, which
    releases the GIL, so the frame loop keeps running while the child computes on the other core.
    The child is a fresh interpreter (not a fork: forking a process that runs onnxruntime's threads
    is not safe; and not :mod:`multiprocessing`'s spawn, which re-imports the caller's main script)
    that loads its own copy of the model (~1–2 s, ~100 MB); sending a 640×480 frame costs about a
    millisecond. It ends with its parent (its pipe closes).
    """

    def __init__(self, name: str) -> None:
        import os
        import subprocess
        import sys
        from multiprocessing.connection import Connection
        from pathlib import Path

        import facelab

        to_child, from_parent = os.pipe()[::-1]
        from_child, to_parent = os.pipe()
        env = dict(os.environ)
        # The facelab this process runs, wherever it was imported from (a checkout, a venv).
        here = str(Path(facelab.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        code = (
            "import sys; from facelab.recognize_video import _embed_server; "
            "_embed_server(sys.argv[1], *map(int, sys.argv[2:]))"
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, name, str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        os.close(from_parent)
        os.close(to_parent)
        self._outbox = Connection(to_child, readable=False)
        self._inbox = Connection(from_child, writable=False)
        try:
            ready = self._inbox.recv()
        except EOFError:
            ready = RuntimeError(f"the embedding process for {name!r} ended at start (its error is printed above)")
        if isinstance(ready, BaseException):
            self.close()
            raise ready

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        self._outbox.send((rgb, list(faces)))
        result = self._inbox.recv()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop the child; idempotent."""
        if not self._outbox.closed:
            with contextlib.suppress(OSError):  # the child is gone already
                self._outbox.send(None)
            self._outbox.close()
        try:
            self._process.wait(timeout=10.0)
        except Exception:
            self._process.kill()
            self._process.wait()
        if not self._inbox.closed:
            self._inbox.close()


class NamingWorker:
    """One background thread that names faces, batch after batch, in the order they were sent.

    ``name(rgb, faces)`` returns ``(answers, vectors or None)``; the worker only calls it and keeps
    what it returns (or raises) in the job: tracks are changed by the frame loop alone, when it
    collects finished jobs (:meth:`collect`), so no lock guards them. The queue cannot grow without bound:
    a track is never sent again while a naming of it is on its way, so at most one job per face in
    view waits.
    """

    def __init__(self, name: Callable[[np.ndarray, list[Face]], tuple[list[Recognition], np.ndarray | None]]) -> None:
        self._name = name
        self._todo: queue.SimpleQueue[NamingJob | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[NamingJob] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._closed = False
        # A daemon: a frame loop that dies of an error must not leave the process waiting on it.
        self._thread = threading.Thread(target=self._run, name="facelab-naming", daemon=True)
        self._thread.start()

    @property
    def outstanding(self) -> int:
        """Jobs sent and not yet collected."""
        with self._cond:
            return self._outstanding

    def submit(self, job: NamingJob) -> None:
        """Queue ``job``; returns at once."""
        if self._closed:
            raise RuntimeError("the naming worker is closed")
        job.sent = time.perf_counter()
        with self._cond:
            self._outstanding += 1
        self._todo.put(job)

    def _run(self) -> None:
        while (job := self._todo.get()) is not None:
            t0 = time.perf_counter()
            try:
                job.answers, job.vectors = self._name(job.rgb, job.faces)
            except BaseException as exc:  # handed to the frame loop, which raises it
                job.error = exc
            job.seconds = time.perf_counter() - t0
            job.rgb = _NO_PIXELS  # the frame is not needed any more: free it now
            self._done.put(job)
            with self._cond:
                self._cond.notify_all()

    def collect(self) -> list[NamingJob]:
        """The jobs finished since the last call, oldest first; never waits."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        with self._cond:
            self._outstanding -= len(out)
        return out

    def wait(self, timeout: float | None = None) -> list[NamingJob]:
        """Wait until every job sent is finished (or ``timeout`` seconds), then :meth:`collect`."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while self._done.qsize() < self._outstanding:
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        return self.collect()

    def close(self) -> None:
        """Stop the thread after the jobs already queued; idempotent."""
        if not self._closed:
            self._closed = True
            self._todo.put(None)
            self._thread.join(timeout=30.0)


_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


class VideoRecognizer:
    """Detect, track and name faces through a video; iterate :meth:`frames`, then read :meth:`summary`.

    >>> video = VideoRecognizer(recognizer, VideoOptions(detect_every=3))
    >>> for frame in video.frames(classify_input("clip.mp4")):
    ...     pass                       # draw with draw_tracks(frame.bgr, frame.tracks), show, write
    >>> video.summary()                # who appeared, from when to when

    Faces are named in the frame loop or in a worker thread (:attr:`VideoOptions.naming`,
    :class:`NamingMode`); :attr:`naming` says which one the last source used.
    """

    def __init__(self, recognizer: Recognizer, options: VideoOptions | None = None) -> None:
        self.recognizer = recognizer
        self.options = options or VideoOptions()
        self.tracker = IoUTracker(self.options.min_iou, self.options.max_missed)
        self.cut_test = self.options.cut_detector()
        self.stats = VideoStats()
        self.source_label = ""
        self.fps = 25.0
        self.frame_count = 0
        self.size = (0, 0)
        # Frames fed to process() directly have no source that says whether they are live.
        self.naming = self.options.naming.resolve(live=False)
        self._worker: NamingWorker | None = None
        self._embed_process: EmbedProcess | None = None
        self._drift: tuple[Any, float] | None = None  # (embedder or None, distance), on first use

    def frames(self, source: Source, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Process ``source`` frame by frame; stopping the iteration early releases the capture.

        With naming in a worker, the answers still on their way when the source ends (or the
        iteration stops) are waited for and folded in, so :meth:`summary` holds them; arrivals
        they raise then are not yielded (there is no frame left to carry them).
        """
        import cv2

        capture = open_capture(source)
        try:
            self.recognizer.warm_up()
        except BaseException:
            capture.release()
            raise
        live = source.kind in LIVE_KINDS
        if live:
            capture = LatestFrameReader(capture)
        self.source_label = source.label
        self.tracker = IoUTracker(self.options.min_iou, self.options.max_missed)
        self.cut_test = self.options.cut_detector()
        self.stats = VideoStats()
        self.naming = self.options.naming.resolve(live)
        if self.naming is NamingMode.WORKER:
            try:
                self._start_worker()  # now, with the models loading, not on the first face
            except BaseException:
                capture.release()
                raise
        fps = capture.get(cv2.CAP_PROP_FPS)
        # Files carry their frame rate; some containers and most cameras report 0 or nonsense.
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else 25.0
        self.frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.size = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        started = time.perf_counter()
        index, time_s = -1, 0.0
        try:
            while max_frames is None or index + 1 < max_frames:
                t0 = time.perf_counter()
                ok, bgr = capture.read()
                self.stats.read_s += time.perf_counter() - t0
                if not ok or bgr is None:
                    break
                index += 1
                time_s = (time.perf_counter() - started) if live else index / self.fps
                detected = index % self.options.detect_every == 0
                # Between detection rounds too, answers from the worker are shown as soon as
                # they are back.
                events = self.process(bgr, index, time_s) if detected else self._collect(index, time_s)
                visible = [t for t in self.tracker.active if t.missed == 0]
                self.stats.frames += 1
                self.stats.total_s = time.perf_counter() - started
                yield FrameResult(index, time_s, bgr, visible, events, detected)
        except BaseException:
            capture.release()
            self._stop_worker(index, time_s, raise_errors=False)  # the error (or Ctrl-C, a stop) goes first
            raise
        else:
            capture.release()
            self._stop_worker(index, time_s)
        finally:
            if isinstance(capture, LatestFrameReader):
                self.stats.dropped = capture.dropped
            self.tracker.end_all()
            self.stats.total_s = time.perf_counter() - started

    def finish(self) -> list[Event]:
        """Wait for the names still being computed in the worker and fold them in; returns the
        arrivals they raise. Call it after feeding frames to :meth:`process` yourself with
        ``naming="worker"`` (:meth:`frames` calls it); nothing to do inline."""
        index = max((t.last_frame for t in self.tracker.all_tracks()), default=0)
        time_s = max((t.last_time for t in self.tracker.all_tracks()), default=0.0)
        return self._stop_worker(index, time_s)

    def process(self, bgr: np.ndarray, index: int, time_s: float) -> list[Event]:
        """One detection round on frame ``index`` (BGR): cut test, detection, tracking, naming with
        identity checks; returns the arrivals it raised. :meth:`frames` calls it on every
        ``detect_every``-th frame; call it directly to feed frames from elsewhere (then call
        :meth:`finish` at the end if ``naming`` is ``worker``)."""
        import cv2

        opts = self.options
        # Answers that came back since the last frame first: this round's identity checks and
        # choices of what to name build on them.
        events = self._collect(index, time_s)
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if self.cut_test is not None and self.cut_test.update(gray):
            # Another shot: whoever is now where a face was is not that face's person.
            self.tracker.end_all()
            self.stats.cuts += 1
        faces = [
            f for f in self.recognizer.detect(rgb, opts.detect_size) if min(f.box.width, f.box.height) >= opts.min_face
        ]
        seen, _ = self.tracker.update(faces, index, time_s)
        for track in seen:
            self._watch_appearance(track, gray, index, time_s)
        self.stats.detections += 1
        t1 = time.perf_counter()
        self.stats.detect_s += t1 - t0
        # A track whose naming is on its way is not sent again: its answer is not in yet.
        todo = [t for t in seen if not t.in_flight and (t.suspect or self._needs_classification(t, index))]
        # Faces that may have become somebody else first, then faces nobody has named yet, then
        # the ones waiting longest.
        todo = sorted(todo, key=lambda t: (not t.suspect, t.classified > 0, t.classified_frame))[: opts.max_classify]
        if todo:
            job = NamingJob(
                index,
                time_s,
                rgb,
                todo,
                [t.face for t in todo],
                [t.unchecked or [(index, time_s, 0.0)] for t in todo],
            )
            worker = self.naming is NamingMode.WORKER
            for track in todo:
                # Due again only after this naming: the next periodic one counts from here.
                track.classified_frame, track.classified_box = index, track.box
                track.unchecked = [(index, time_s, 0.0)]
                # A face that changed suddenly shows no name until the check says who it is.
                track.in_flight, track.doubted = worker, worker and track.suspect
                track.suspect = False
            if worker:
                self._start_worker().submit(job)
            else:
                job.sent = time.perf_counter()
                job.answers, job.vectors = self._name(rgb, job.faces)
                job.seconds = time.perf_counter() - job.sent
                named = dict(self._apply(job))
                # Arrivals in the order of the faces found (as before naming could move to a worker).
                events += self._arrivals([named.get(id(t), t) for t in seen], index, time_s)
        if self.naming is not NamingMode.WORKER:
            self.stats.classify_s += time.perf_counter() - t1
        return events

    # -- naming -------------------------------------------------------------------------------

    def _start_worker(self) -> NamingWorker:
        if self._worker is None:
            from facelab.embedders import get_embedder
            from facelab.recognize import VectorModel

            drift_embedder, _ = self._drift_setup()  # resolved here: the worker only reads it
            model = self.recognizer.model
            embedder = get_embedder(model.embedder) if isinstance(model, VectorModel) else drift_embedder
            wanted = self.options.embed_process
            if embedder is not None and (wanted or (wanted is None and holds_gil(embedder))):
                self._embed_process = EmbedProcess(embedder.name)
            self._worker = NamingWorker(self._name)
        return self._worker

    def _collect(self, index: int, time_s: float) -> list[Event]:
        """Fold in the answers the worker finished (never waits); the arrivals they raise."""
        if self._worker is None:
            return []
        events = []
        for job in self._worker.collect():
            events += self._arrivals([track for _, track in self._apply(job)], index, time_s)
        return events

    def _stop_worker(self, index: int, time_s: float, raise_errors: bool = True) -> list[Event]:
        """Wait for every naming on its way, fold the answers in and stop the worker thread."""
        worker, self._worker = self._worker, None
        if worker is None:
            return []
        try:
            jobs = worker.wait()
        finally:
            worker.close()
            if self._embed_process is not None:
                self._embed_process.close()
                self._embed_process = None
        events, error = [], None
        for job in jobs:
            if job.error is not None:
                error = error or job.error
                for track in job.tracks:  # nobody is waiting for these any more
                    track.in_flight = track.doubted = False
                continue
            events += self._arrivals([track for _, track in self._apply(job)], index, time_s)
        if error is not None and raise_errors:
            raise error
        return events

    def _apply(self, job: NamingJob) -> list[tuple[int, Track]]:
        """Fold ``job``'s answers into its tracks: identity check (a face that became somebody
        else splits its track), vote; returns ``(id of the track sent, track voted for)`` pairs.

        In a worker the answers come back a few frames after ``job.index``: the check and the
        split are done as of ``job.index`` (the face the answer is about), and the rounds seen
        since stay with whichever track now follows the face.
        """
        if job.error is not None:
            for track in job.tracks:
                track.in_flight = track.doubted = False
            raise job.error
        assert job.answers is not None
        lag = time.perf_counter() - job.sent if self.naming is NamingMode.WORKER else 0.0
        self.stats.batches += 1
        self.stats.name_lag_s += lag
        self.stats.name_lag_max_s = max(self.stats.name_lag_max_s, lag)
        if self.naming is NamingMode.WORKER:
            self.stats.classify_s += job.seconds
        self.stats.classified_faces += len(job.tracks)
        named = []
        for i, (sent, answer) in enumerate(zip(job.tracks, job.answers, strict=True)):
            # Still doubted if its face jumped again since this job was sent (checked next).
            sent.in_flight, sent.doubted = False, sent.suspect and self.naming is NamingMode.WORKER
            track = sent
            if job.vectors is not None:
                track = self._check_identity(sent, job.vectors[i], job.rounds[i], job.index, job.time_s)
            track.vote(answer.name, answer.score, face_weight(job.faces[i].box))
            named.append((id(sent), track))
        return named

    def _arrivals(self, tracks: list[Track], index: int, time_s: float) -> list[Event]:
        """An arrival for each of ``tracks`` named ``warmup`` times and not yet announced."""
        events = []
        for track in tracks:
            if not track.announced and track.classified >= self.options.warmup and track.name is not None:
                track.announced = True
                events.append(
                    Event(
                        self.source_label,
                        track.id,
                        track.name,
                        track.score,
                        time_s,
                        index,
                        track.box.as_ints(),
                    )
                )
        return events

    def _watch_appearance(self, track: Track, gray: np.ndarray, index: int, time_s: float) -> None:
        """Compare the face in ``track``'s box with the previous round's; a large change marks the
        track ``suspect`` (it is embedded this round). Costs microseconds per face."""
        signature = face_signature(gray, track.box)
        jump = 0.0
        if signature is not None and track.signature is not None and track.hits > 1:
            jump = structure_distance(track.signature, signature, shift=2)
        track.signature = signature
        if track.hits > 1:
            track.unchecked.append((index, time_s, jump))
        # A face still waiting for its first answer is being named anyway: nothing to check it against.
        if jump > self.options.appearance_jump and (track.classified > 0 or track.in_flight):
            track.suspect = True
            # Naming in a worker: hide the name until the check is back (inline it is done now).
            track.doubted = self.naming is NamingMode.WORKER

    def _name(self, rgb: np.ndarray, faces: list[Face]) -> tuple[list[Recognition], np.ndarray | None]:
        """Open-set answers for ``faces`` and their embedding vectors for the identity check (None
        when the check is off). All faces go through the network in one call (one batch).

        Runs in the worker thread with ``naming="worker"``: it reads only its arguments and
        settings fixed before the worker started."""
        from facelab.recognize import VectorModel, score_faces

        model = self.recognizer.model
        remote = self._embed_process
        if isinstance(model, VectorModel):
            # The same answers as Recognizer.name_faces, keeping the vectors it computes anyway.
            if remote is not None:
                vectors = remote.embed(rgb, faces)
                scores = np.asarray(model.predict_vectors(vectors))
            else:
                scores, vectors = score_faces(model, rgb, faces)
            answers = self.recognizer.name_scores(faces, scores)
        else:
            answers, vectors = self.recognizer.name_faces(rgb, faces), None
        embedder, distance = self._drift_setup()
        if not np.isfinite(distance):
            return answers, None
        if vectors is None and embedder is not None:
            vectors = (remote or embedder).embed(rgb, faces)
        return answers, vectors

    def _drift_setup(self) -> tuple[Any, float]:
        """The embedder for identity checks of a model that has none (CNN runs: dlib) and the
        drift distance, resolved once."""
        if self._drift is None:
            from facelab.embedders import DEFAULT_EMBEDDER, embedder_info, get_embedder
            from facelab.recognize import VectorModel

            model = self.recognizer.model
            name = model.embedder if isinstance(model, VectorModel) else DEFAULT_EMBEDDER
            distance = self.options.drift_distance
            if distance is None:
                distance = embedder_info(name).verify_distance
            embedder = None
            if not isinstance(model, VectorModel) and np.isfinite(distance):
                embedder = get_embedder(name)
            self._drift = (embedder, float(distance))
        return self._drift

    def _check_identity(
        self,
        track: Track,
        vector: np.ndarray,
        rounds: list[tuple[int, float, float]],
        index: int,
        time_s: float,
    ) -> Track:
        """``track`` if ``vector`` (its face at frame ``index``) is still its person, else the new
        track that takes over from where the face changed; the vector joins the identity of the
        track returned. ``rounds``: the track's rounds since its previous check, up to ``index``
        (frame, time, appearance jump)."""
        distance = self._drift_setup()[1]
        if track.identity_distance(vector) <= distance:
            track.remember(vector)
            return track
        rounds = rounds or [(index, time_s, 0.0)]
        # Rounds after ``index`` (a worker's answer comes back later): they follow the new face.
        later = [r for r in track.unchecked if r[0] > index]
        # Where did the face change? At the largest appearance jump since the last check, if there
        # was a clear one; otherwise somewhere unknown after that check, so the old track ends at
        # the check and the frames in between belong to nobody.
        j = max(range(len(rounds)), key=lambda i: rounds[i][2])
        if rounds[j][2] > self.options.appearance_jump and j > 0:
            end, start, hits = rounds[j - 1][:2], rounds[j][:2], len(rounds) - j
        else:
            end, start, hits = rounds[0][:2], (index, time_s), 1
        new = self.tracker.split(track, track.face, end, start, hits + len(later))
        new.remember(vector)
        # The new track was named (and checked) at ``index``, as the old one had been.
        new.classified_frame, new.classified_box = track.classified_frame, track.classified_box
        new.unchecked = [(index, time_s, 0.0), *later]
        new.suspect, new.doubted = track.suspect, track.doubted
        track.suspect = track.doubted = False
        self.stats.drift_splits += 1
        return new

    def _needs_classification(self, track: Track, index: int) -> bool:
        opts = self.options
        if track.classified < opts.warmup:
            return True
        if index - track.classified_frame >= opts.reclassify_every:
            return True
        return track.classified_box is not None and track.box.iou(track.classified_box) < opts.reclassify_iou

    def summary(self) -> list[TrackSummary]:
        """Every track seen in at least ``min_hits`` detection rounds and named at least once."""
        out = []
        for track in self.tracker.all_tracks():
            if track.hits < self.options.min_hits or track.name is None:
                continue
            out.append(
                TrackSummary(
                    source=self.source_label,
                    track=track.id,
                    name=track.name,
                    score=track.score,
                    agreement=track.agreement,
                    start_s=track.first_time,
                    end_s=track.last_time,
                    frames=track.last_frame - track.first_frame + 1,
                    box=track.box.as_ints(),
                )
            )
        return out
