"""Announcing arrivals in a video: names spoken aloud (``--announce``) and POSTed as JSON (``--webhook``).

Both run on a background thread, so slow speech or a slow server never stalls the video loop.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from facelab.tracking import UNKNOWN

if TYPE_CHECKING:
    from facelab.recognize_video import Event

# -- announcing arrivals ------------------------------------------------------------------------


class _Worker:
    """One background thread running jobs in order, so slow speech or a slow server never stalls
    the video loop; :meth:`close` waits for queued jobs (at most ``timeout`` seconds)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # a failing job must not kill the worker
                print(f"facelab: {self._thread.name}: {exc}", file=sys.stderr)

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def close(self, timeout: float = 10.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)


SPEECH_PROGRAMS = ("espeak-ng", "espeak")


def _run_quietly(command: list[str]) -> None:
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)


class Speaker:
    """Says names aloud with the offline ``espeak-ng`` (or ``espeak``) program.

    ``cooldown_s`` (60): a name is not repeated within this many seconds of video time (a person
    whose track breaks and restarts is not greeted twice). ``unknown``: whether strangers are
    announced ("unknown person"). ``runner`` executes the command (tests record it instead).
    """

    def __init__(
        self,
        *,
        program: str | None = None,
        cooldown_s: float = 60.0,
        unknown: bool = False,
        runner: Callable[[list[str]], None] | None = None,
        voice_args: Sequence[str] = ("-s", "160"),
    ) -> None:
        found = program or next((p for p in SPEECH_PROGRAMS if shutil.which(p)), None)
        self.program = shutil.which(found) if found else None
        self.cooldown_s = cooldown_s
        self.unknown = unknown
        self.voice_args = tuple(voice_args)
        self._runner = runner or _run_quietly
        self._last: dict[str, float] = {}
        self._worker: _Worker | None = None

    @property
    def available(self) -> bool:
        return self.program is not None or self._runner is not _run_quietly

    @staticmethod
    def unavailable_message() -> str:
        return (
            "--announce: no espeak-ng on PATH, so names cannot be spoken (they are printed instead). "
            "Install it: sudo apt install espeak-ng (Debian/Ubuntu), brew install espeak-ng (macOS)"
        )

    def command_for(self, text: str) -> list[str]:
        return [self.program or SPEECH_PROGRAMS[0], *self.voice_args, text]

    @staticmethod
    def text_for(name: str) -> str:
        # Folder names use underscores and dashes; read as words.
        return "unknown person" if name == UNKNOWN else name.replace("_", " ").replace("-", " ")

    def announce(self, event: Event) -> list[str] | None:
        """Speak ``event``'s name unless it was spoken recently; returns the command (None if skipped)."""
        if event.name == UNKNOWN and not self.unknown:
            return None
        last = self._last.get(event.name)
        if last is not None and event.time_s - last < self.cooldown_s:
            return None
        self._last[event.name] = event.time_s
        command = self.command_for(self.text_for(event.name))
        if self.available:
            if self._worker is None:
                self._worker = _Worker("speech")
            self._worker.submit(lambda: self._runner(command))
        return command

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


class Webhook:
    """POSTs each :class:`Event` as JSON to ``url`` from a background thread.

    ``timeout`` (5 s) bounds each request; failures are reported on stderr (the first three, then a
    count) and never stop the video.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"--webhook {url}: give an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._worker = _Worker("webhook")

    def post(self, event: Event) -> None:
        self._worker.submit(lambda: self._send(event.to_json()))

    def _send(self, payload: dict[str, object]) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "facelab"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.failed += 1
            if self.failed <= 3:
                print(f"facelab: --webhook {self.url}: {exc}", file=sys.stderr)

    def close(self, timeout: float = 10.0) -> None:
        self._worker.close(timeout)
        if self.failed > 3:
            print(f"facelab: --webhook: {self.failed} events could not be delivered", file=sys.stderr)
