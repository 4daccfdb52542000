"""The ``--show`` live view: annotated frames of a video or camera with the processing rate.

Two kinds, one interface (:class:`LiveDisplay`: ``show(bgr, tracks)`` then ``close()``):

* :class:`LiveWindow`, an OpenCV window (ESC or closing it stops). Needs OpenCV's GUI build
  (:func:`gui_backend` says whether this one has it) and a display.
* :class:`facelab.recognize_stream.LiveView`, a local web page streaming the frames as MJPEG, for
  the headless OpenCV build, machines without a display, or when a port is asked for.

:func:`open_live_display` picks one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from facelab.tracking import Track

# -- live window --------------------------------------------------------------------------------


class GuiUnavailable(RuntimeError):
    """OpenCV was built without a GUI (opencv-python-headless): no window can open."""


def gui_backend() -> str | None:
    """OpenCV's GUI backend (GTK, QT, WIN32UI, COCOA…), or None for a headless build."""
    import re

    import cv2

    found = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    backend = found.group(1) if found else None
    return None if backend in (None, "NONE") else backend


def has_display() -> bool:
    """True where a window (or a browser) can appear: always on macOS and Windows; on other systems
    when ``DISPLAY`` (X11) or ``WAYLAND_DISPLAY`` is set. Over SSH without X forwarding it is False."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class FrameRate:
    """Frames per second over the last ``window`` frames (a moving rate: it follows changes in
    load within a second or two at 25 fps; raise ``window`` for a steadier figure)."""

    def __init__(self, window: int = 30) -> None:
        self.window = max(2, window)
        self._times: list[float] = []

    def tick(self) -> float | None:
        """Count one frame now; the rate so far (None until two frames were counted)."""
        self._times = [*self._times[-(self.window - 1) :], time.perf_counter()]
        return self.fps

    @property
    def fps(self) -> float | None:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return None
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


def draw_fps(bgr: np.ndarray, fps: float | None) -> None:
    """The rate in the top-left corner, in place (nothing before the rate is known)."""
    import cv2

    if fps is not None:
        cv2.putText(bgr, f"{fps:.1f} fps", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)


class LiveDisplay(Protocol):
    """What ``recognize --show`` draws into: a window or a web page."""

    def show(self, bgr: np.ndarray, tracks: Sequence[Track] = ()) -> bool:
        """Show an annotated BGR frame and the tracks in view; False when the user asked to stop."""
        ...

    def close(self) -> None: ...


class LiveWindow:
    """A window showing annotated frames with the processing rate; ESC or closing it stops."""

    def __init__(self, title: str = "facelab") -> None:
        if gui_backend() is None:
            raise GuiUnavailable(
                "--show needs a window, but this OpenCV is the headless build (opencv-python-headless, "
                "no GUI). Write an annotated video with --out DIR instead, or replace it with the GUI "
                "build: pip uninstall opencv-python-headless && pip install 'opencv-python<5'"
            )
        self.title = title
        self._rate = FrameRate()

    def show(self, bgr: np.ndarray, tracks: Sequence[Track] = ()) -> bool:
        """Draw the frame (and fps); False once the user pressed ESC or closed the window.

        ``tracks`` is accepted for the :class:`LiveDisplay` interface; their boxes are already drawn.
        """
        import cv2

        del tracks
        draw_fps(bgr, self._rate.tick())
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return key != 27 and not closed

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)


def open_live_display(
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    *,
    announce: bool = True,
) -> LiveDisplay:
    """The ``--show`` view: an OpenCV window where this OpenCV has a GUI and there is a display,
    otherwise (or when ``host`` or ``port`` is given) a page at http://127.0.0.1:PORT/ streaming the
    frames. ``announce`` prints the page's address on stderr and opens it in the browser where a
    display is available. Raises :class:`facelab.recognize_stream.LiveViewError` (one line saying
    what to change) for a bind that is refused or fails."""
    if host is None and port is None and gui_backend() is not None and has_display():
        return LiveWindow()
    from facelab.recognize_stream import LiveView

    view = LiveView(host or "127.0.0.1", port or 0, token, open_browser=announce and has_display())
    if announce:
        view.announce()
    return view
