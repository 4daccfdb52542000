"""Where ``facelab recognize --out DIR`` writes annotated copies, without ever touching an input.

:func:`check_out_dir` refuses an output folder that could overwrite an input; :class:`OutputPlanner`
names each annotated photo and video inside it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from facelab.recognize_inputs import InputKind, Source

# -- output files -------------------------------------------------------------------------------


class UnsafeOutput(ValueError):
    """``--out`` would write over or among the inputs."""


def _contains(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out_dir: Path, sources: Sequence[Source]) -> None:
    """Refuse an output folder that could overwrite an input: the inputs' folder, one inside it, or
    one that holds an input (annotated copies keep the inputs' names)."""
    out = Path(os.path.abspath(out_dir)).resolve()
    for source in sources:
        if source.kind not in (InputKind.PHOTO, InputKind.FOLDER, InputKind.VIDEO):
            continue
        where = source.path.resolve()
        if _contains(out, where):
            raise UnsafeOutput(
                f"--out {out_dir} holds the input {source.spec}: annotated copies could overwrite it; "
                "choose a folder outside your photos"
            )
        if source.kind is InputKind.FOLDER and _contains(where, out):
            raise UnsafeOutput(
                f"--out {out_dir} is inside the input folder {source.spec}: never write among the "
                "originals (a later run would also read the annotated copies); choose another folder"
            )


class OutputPlanner:
    """Where annotated copies go: ``OUT/<folder name>/<path below it>.jpg`` for folder inputs,
    ``OUT/<name>.jpg`` for single photos, ``OUT/<name>.mp4`` for videos; names are made unique, and
    a target that is an input file is refused."""

    def __init__(self, out_dir: Path, sources: Sequence[Source]) -> None:
        check_out_dir(out_dir, sources)
        self.out_dir = Path(out_dir)
        self._inputs = {s.path.resolve() for s in sources if s.kind in (InputKind.PHOTO, InputKind.VIDEO)}
        self._used: set[Path] = set()

    def _unique(self, target: Path) -> Path:
        candidate, n = target, 2
        while candidate in self._used:
            candidate, n = target.with_name(f"{target.stem}-{n}{target.suffix}"), n + 1
        self._used.add(candidate)
        if candidate.resolve() in self._inputs:
            raise UnsafeOutput(f"{candidate} is an input: refusing to overwrite it")
        return candidate

    def photo(self, path: Path, source: Source) -> Path:
        if source.kind is InputKind.FOLDER:
            relative = path.relative_to(source.path)
            target = self.out_dir / source.path.resolve().name / relative.with_suffix(".jpg")
        else:
            target = self.out_dir / f"{path.stem}.jpg"
        return self._unique(target)

    def video(self, source: Source) -> Path:
        if source.kind is InputKind.VIDEO:
            name = source.path.stem
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"camera{source.spec}-{stamp}" if source.kind is InputKind.CAMERA else f"stream-{stamp}"
        return self._unique(self.out_dir / f"{name}.mp4")
