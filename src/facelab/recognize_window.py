"""The ``--show`` window: annotated frames of a video or camera on screen, with the processing rate.

Needs OpenCV's GUI build; :func:`gui_backend` says whether this one has it.
"""

from __future__ import annotations

import time

import numpy as np

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
        self._times: list[float] = []

    def show(self, bgr: np.ndarray) -> bool:
        """Draw the frame (and fps); False once the user pressed ESC or closed the window."""
        import cv2

        now = time.perf_counter()
        self._times = [*self._times[-29:], now]
        if len(self._times) > 1:
            fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
            cv2.putText(bgr, f"{fps:.1f} fps", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return key != 27 and not closed

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)
