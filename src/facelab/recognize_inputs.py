"""What a ``facelab recognize`` input is: a photo, a folder, a video file, a camera or a stream.

:func:`classify_input` turns one command-line argument into a :class:`Source`; :func:`expand_photos`
lists every photo of the photo and folder inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
)
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"})

# -- inputs -------------------------------------------------------------------------------------


class InputKind(StrEnum):
    PHOTO = "photo"
    FOLDER = "folder"
    VIDEO = "video"
    CAMERA = "camera"
    STREAM = "stream"


# Kinds whose output is a per-track summary rather than per-face lines.
MOVING_KINDS = frozenset({InputKind.VIDEO, InputKind.CAMERA, InputKind.STREAM})
# Kinds whose frames arrive in real time: their clock is the wall clock, not the frame count.
LIVE_KINDS = frozenset({InputKind.CAMERA, InputKind.STREAM})


@dataclass(frozen=True)
class Source:
    """One command-line input: its kind and what opens it (a path, a URL, a camera index)."""

    kind: InputKind
    spec: str

    @property
    def path(self) -> Path:
        return Path(self.spec)

    @property
    def label(self) -> str:
        return f"camera:{self.spec}" if self.kind is InputKind.CAMERA else self.spec


def _is_stream(text: str) -> bool:
    scheme = urlparse(text).scheme.lower()
    return scheme in STREAM_SCHEMES and "://" in text


def _is_camera(text: str) -> bool:
    return text.startswith("camera:") and text[len("camera:") :].isdigit()


def _camera_index(text: str) -> str:
    return text[len("camera:") :]


# Checked in order; the first that matches decides. PHOTO last: anything else is handed to the
# image reader, which names the file and the reason when it is not a photo.
INPUT_KINDS: tuple[tuple[InputKind, Callable[[str], bool], Callable[[str], str]], ...] = (
    (InputKind.STREAM, _is_stream, str),
    (InputKind.CAMERA, _is_camera, _camera_index),
    (InputKind.FOLDER, lambda t: Path(t).is_dir(), str),
    (InputKind.VIDEO, lambda t: Path(t).suffix.lower() in VIDEO_SUFFIXES, str),
    (InputKind.PHOTO, lambda t: True, str),
)


def classify_input(text: str) -> Source:
    """What a command-line input is: ``rtsp://…`` a stream, ``camera:0`` a webcam, a folder, a video
    (by suffix), else a photo."""
    for kind, matches, spec in INPUT_KINDS:
        if matches(text):
            return Source(kind, spec(text))
    raise AssertionError("unreachable: PHOTO matches everything")


def expand_photos(sources: Iterable[Source]) -> list[tuple[Path, Source]]:
    """Every photo of the photo and folder inputs (folders recursively), with the input it came from."""
    from facelab.imageio import iter_image_files

    out = []
    for source in sources:
        if source.kind is InputKind.FOLDER:
            out.extend((path, source) for path in iter_image_files(source.path))
        elif source.kind is InputKind.PHOTO:
            out.append((source.path, source))
    return out
