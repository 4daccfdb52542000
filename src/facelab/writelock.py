"""One writer at a time per workspace: a lock file held for the whole of a command that changes it.

``WS/.facelab/write.lock`` is locked with ``flock`` (``msvcrt.locking`` on Windows) by every
command that writes to the workspace — build, split, train, review decisions, enroll/forget, auto,
run, album index — and by the web server while one of its writes or training jobs runs. The
operating system releases the lock when its process ends, however it ends (``kill -9``
included), so a lock is never left behind. Readers (``recognize``, the server's pages) never take
it: SQLite's WAL mode lets them read while a writer works.

The holder writes its pid and command line into the file, so a second writer can say who it is
waiting for. Inside one process the lock is re-entrant and shared by threads (the web server's
upload handler and its training job thread are one writer as far as other processes are
concerned; the server orders its own threads with its own in-process lock).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LOCK_NAME = "write.lock"
# How often a waiting writer tries again. A build takes seconds to hours; a quarter of a second
# is invisible to a person and costs nothing.
POLL_SECONDS = 0.25
# Exit status of a command that found the workspace busy (EX_TEMPFAIL of sysexits.h: "try again later").
BUSY_EXIT_CODE = 75


@dataclass(frozen=True)
class Holder:
    """Who holds a workspace's write lock (as it wrote itself into the lock file)."""

    pid: int | None
    command: str
    since: str
    host: str

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "another process"
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        since = f" since {self.since.replace('T', ' ')}" if self.since else ""
        return f"{who}{where} ({self.command or 'a facelab command'}){since}"


class WorkspaceBusy(RuntimeError):
    """Another process is writing to the workspace. ``str()`` names it and says what to do."""

    def __init__(self, root: Path, holder: Holder | None) -> None:
        self.root = root
        self.holder = holder
        who = holder.describe() if holder else "another facelab process"
        super().__init__(f"{root} is being changed by {who}; wait for it to finish, or add --wait to wait for it")


def lock_path(root: Path) -> Path:
    return Path(root) / ".facelab" / LOCK_NAME


def read_holder(root: Path) -> Holder | None:
    """What the current (or last) holder wrote into the lock file; None if nothing readable."""
    try:
        data = json.loads(lock_path(root).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    pid = data.get("pid")
    return Holder(
        pid=pid if isinstance(pid, int) else None,
        command=str(data.get("command", "")),
        since=str(data.get("since", "")),
        host=str(data.get("host", "")),
    )


def current_command() -> str:
    """This process's command line as a person typed it (``facelab build photos -w ws``)."""
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    return " ".join(argv)[:300]


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


class _Held:
    """The lock as this process holds it: one file descriptor, counted re-entries."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count = 0


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def _acquire(root: Path, command: str) -> bool:
    key = _key(root)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return True
        path = lock_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: a writer that fails to get the lock must not wipe the holder's name.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return False
        info = {
            "pid": os.getpid(),
            "command": command,
            "since": datetime.now().isoformat(timespec="seconds"),
            "host": socket.gethostname(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        held = _Held(fd)
        held.count = 1
        _held[key] = held
        return True


def _release(root: Path) -> None:
    key = _key(root)
    with _held_guard:
        held = _held[key]
        held.count -= 1
        if held.count:
            return
        del _held[key]
        try:
            # The file stays (removing it would race with a writer that just opened it); emptied,
            # it says nobody holds the lock.
            os.ftruncate(held.fd, 0)
            _unlock(held.fd)
        finally:
            os.close(held.fd)


def holds_lock(root: Path) -> bool:
    """Whether this process holds the workspace's write lock."""
    with _held_guard:
        return _key(root) in _held


@contextmanager
def write_lock(
    root: Path | str,
    *,
    wait: bool = False,
    timeout: float | None = None,
    command: str | None = None,
    on_wait: Callable[[WorkspaceBusy], None] | None = None,
) -> Iterator[None]:
    """Hold ``root``'s write lock for the ``with`` block.

    ``wait=False`` raises :class:`WorkspaceBusy` at once when another process holds it;
    ``wait=True`` waits (up to ``timeout`` seconds, None: as long as it takes), calling
    ``on_wait`` once first so the user learns whom they wait for. ``command`` is what other
    writers are told holds it (default: this process's command line). Creates ``WS/.facelab``.
    """
    root = Path(root)
    command = command or current_command()
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while not _acquire(root, command):
        busy = WorkspaceBusy(root.resolve(), read_holder(root))
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            raise busy
        if not told and on_wait is not None:
            on_wait(busy)
        told = True
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        _release(root)
