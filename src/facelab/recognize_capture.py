"""Opening videos, cameras and streams for reading, and MP4 files for writing (OpenCV, on first use).

:func:`open_capture` opens a :class:`facelab.recognize_inputs.Source` (or raises
:class:`VideoUnavailable` saying what to check); live sources are read through
:class:`LatestFrameReader`, which hands out only the newest frame. :func:`open_writer` writes MP4.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facelab.recognize_inputs import InputKind, Source

# -- reading ------------------------------------------------------------------------------------


class VideoUnavailable(RuntimeError):
    """A video, camera or stream that cannot be opened; the message says what to check."""


def _open_file(source: Source) -> Any:
    import cv2

    if not source.path.is_file():
        raise VideoUnavailable(f"{source.spec}: video file not found — check the path")
    return cv2.VideoCapture(str(source.path))


def _open_camera(source: Source) -> Any:
    import cv2

    capture = cv2.VideoCapture(int(source.spec))
    # Keep only the newest frame: when processing is slower than the camera, old frames must be
    # dropped, not queued (a queue makes the picture lag further and further behind).
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture


def _open_stream(source: Source) -> Any:
    import cv2

    capture = cv2.VideoCapture(source.spec, cv2.CAP_FFMPEG)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture


OPENERS: dict[InputKind, Callable[[Source], Any]] = {
    InputKind.VIDEO: _open_file,
    InputKind.CAMERA: _open_camera,
    InputKind.STREAM: _open_stream,
}
_OPEN_HINTS = {
    InputKind.VIDEO: "is it a video OpenCV's FFmpeg can decode (mp4, avi, mkv, mov, webm)?",
    InputKind.CAMERA: "check the camera index (0 is the first camera) and that nothing else uses it "
    "(on Linux: ls /dev/video*; permission to read it)",
    InputKind.STREAM: "check the URL, credentials and that the stream is reachable from here",
}


class LatestFrameReader:
    """Reads a live capture on its own thread and hands out only the newest frame.

    A camera or stream delivers frames at its own pace; when recognition is slower, reading
    frame after frame would fall further and further behind (the picture lags by seconds, then
    minutes). Decoding releases Python's GIL, so this thread costs little; frames the consumer
    never saw are counted in ``dropped``.
    """

    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.dropped = 0
        self._frame: np.ndarray | None = None
        self._ended = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            ok, frame = self.capture.read()
            with self._cond:
                if not ok or frame is None:
                    self._ended = True
                    self._cond.notify_all()
                    return
                if self._frame is not None:
                    self.dropped += 1
                self._frame = frame
                self._cond.notify_all()

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The newest frame not yet handed out (waits for one); ``(False, None)`` at the end."""
        with self._cond:
            while self._frame is None and not self._ended:
                self._cond.wait()
            frame, self._frame = self._frame, None
        return (frame is not None), frame

    def get(self, prop: int) -> float:
        return self.capture.get(prop)

    def release(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self.capture.release()


def open_capture(source: Source) -> Any:
    """An opened ``cv2.VideoCapture`` for a video, camera or stream source (or :class:`VideoUnavailable`)."""
    capture = OPENERS[source.kind](source)
    if not capture.isOpened():
        capture.release()
        raise VideoUnavailable(f"{source.label}: cannot open it — {_OPEN_HINTS[source.kind]}")
    return capture


# -- writing ------------------------------------------------------------------------------------


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    """An MP4 (``mp4v``) ``cv2.VideoWriter``; raises :class:`VideoUnavailable` if it cannot write."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise VideoUnavailable(f"{path}: cannot write an MP4 video there — check the folder and free space")
    return writer
