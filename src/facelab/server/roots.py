"""Which original photos the web app may show: files under a remembered photo folder, never elsewhere.

A workspace built from the command line (``facelab build ~/Pictures/people -w WS``) keeps absolute
paths to the user's originals, outside the workspace. The pages show them read-only, always
re-encoded as a JPEG preview (:func:`facelab.server.api.photo_preview`), never as the file's own
bytes, and only when the file's real path (symlinks followed) lies inside one of:

* the workspace itself (its ``uploads/`` folder holds the photos uploaded through the app);
* a photo folder a build used: the workspace setting ``photos_root`` (the last build's folder),
  the folders named in the table ``skipped`` (every build that left something out records its
  folder there), and the list setting :data:`ROOTS_SETTING`, which the server extends with the
  current ``photos_root`` whenever it starts and before each upload (an upload builds
  ``WS/uploads``, which replaces ``photos_root``);
* for the album pages: a library indexed with ``facelab album index`` (:func:`album_roots`).

A database row that points anywhere else — a path outside every remembered folder, a symlink
leading out of one, a file that is gone — is not served. The file-system root itself is never a
photo folder (a row could otherwise name any file on the machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facelab.store import Workspace

# Every photo folder the workspace was built from: a JSON list of absolute paths, kept by
# facelab.build (and by the server for workspaces built before builds kept it).
ROOTS_SETTING = "photo_roots"


def _listed(ws: Workspace, key: str) -> list[str]:
    try:
        value = json.loads(ws.setting(key) or "[]")
    except ValueError:
        return []  # a hand-edited setting; the other sources still count
    return [str(v) for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def remember_photo_root(ws: Workspace) -> None:
    """Add the workspace's current ``photos_root`` to :data:`ROOTS_SETTING`. Call it holding the
    write lock, before a build replaces ``photos_root`` (a web upload builds ``WS/uploads``)."""
    current = ws.setting("photos_root")
    if not current:
        return
    known = _listed(ws, ROOTS_SETTING)
    if current in known:
        return
    ws.set_setting(ROOTS_SETTING, json.dumps(sorted({*known, current}), ensure_ascii=False))


def photo_roots(ws: Workspace) -> list[Path]:
    """Every folder whose photos the pages may show (absolute, unresolved; see the module docstring)."""
    found: list[str] = [*_listed(ws, ROOTS_SETTING)]
    if current := ws.setting("photos_root"):
        found.append(current)
    found.extend(r["root"] for r in ws.query("SELECT DISTINCT root FROM skipped"))
    found.append(str(ws.root / "uploads"))
    return _usable(found)


def album_roots(ws: Workspace) -> list[Path]:
    """The libraries indexed into the workspace (``facelab album index LIBRARY``)."""
    from facelab.albums import LIBRARIES_SETTING

    return _usable(_listed(ws, LIBRARIES_SETTING))


def _usable(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for text in paths:
        path = Path(os.path.abspath(text))
        if path.parent == path:  # "/" (or a drive root) would let a row name any file
            continue
        if path not in out:
            out.append(path)
    return out


class Servable:
    """Decides, for one request, whether a stored path may be shown: resolves the roots once."""

    def __init__(self, workspace: Path, roots: list[Path]) -> None:
        self.workspace = Path(workspace).resolve()
        resolved: list[Path] = [self.workspace]
        for root in roots:
            try:
                real = root.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # a drive not mounted now: nothing under it can be shown anyway
            if real.parent != real and real not in resolved:
                resolved.append(real)
        self.roots = resolved

    def file(self, path: Path | str) -> Path | None:
        """``path`` resolved (symlinks followed) if it is an existing file inside a root, else None.

        Relative paths are taken relative to the workspace, as :func:`inside_workspace` does.
        """
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.workspace / candidate
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # ValueError: a NUL byte in a stored path
            return None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            return None
        return resolved if resolved.is_file() else None


def photo_servable(ws: Workspace) -> Servable:
    """What the person and photo pages may show: the workspace and its photo folders."""
    return Servable(ws.root, photo_roots(ws))


def album_servable(ws: Workspace) -> Servable:
    """What the album pages may show: the workspace and the indexed libraries."""
    return Servable(ws.root, album_roots(ws))
