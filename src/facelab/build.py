"""Stage 1: scan folders of photos (one folder per person), find faces, write crops.

The user's photos are only read. Each photo is processed and recorded in one database
transaction, after its crop files are on disk; crop names are deterministic (photo hash + face
index), so a build killed at any point and run again neither loses nor duplicates anything.
Re-runs skip photos whose size and modification time (or, failing that, content hash) did not
change since they were processed with the same detector and margin.

Absence is not deletion: a photo the scan does not see this time (its folder unreadable or
unmounted, the file gone or unreadable) is only marked *missing* (``photos.missing_since``). It
keeps its faces, crops, roles and review decisions, and still counts in splits and training (its
crops are in the workspace); when it comes back (same path, or the same bytes under another
path) it is restored as it was, without detecting again. ``build(..., prune=True)``
(``facelab build --prune``) is the only way a build forgets photos. A photo folder that yields no
photo at all (an unmounted drive) raises :class:`PhotoRootError` before anything changes.

Every input the scan leaves out is recorded (table ``skipped``, ``reports/errors.csv``): loose
photos, files that are not photos, pipes and devices, hidden folders, empty or unreadable person
folders, over-long paths, and folder links that loop or point back into the photo folder (file
links are followed; a folder link is followed only when it leads outside the photo folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np

from facelab.imageio import ImageError, is_image_path, load_rgb, save_jpeg_atomic
from facelab.store import Workspace
from facelab.types import Box, Face
from facelab.writelock import write_lock

CROP_SIZE = 256
# The detector name of faces drawn by hand in review (the web app's photo page).
MANUAL_DETECTOR = "manual"


# The web app's own photo folder inside a workspace (server.workspace_ops.uploads_dir): the one
# photo folder allowed inside a workspace, because nothing else in the workspace lies below it.
UPLOADS_FOLDER = "uploads"


def _path_max() -> int:
    try:
        return int(os.pathconf("/", "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 4096


# Paths at least this long (bytes) cannot be opened on this system (Linux: 4096).
PATH_MAX = _path_max()


@dataclass
class BuildIssue:
    path: Path
    reason: str
    fix: str


class SkipKind(StrEnum):
    """Why the scan left an input out (the ``kind`` column of ``reports/errors.csv``)."""

    LOOSE = "loose photo"  # an image in the photo folder itself, outside any person folder
    NOT_PHOTO = "not a photo"  # a file whose suffix facelab does not read
    NOT_FILE = "not a file"  # a named pipe, socket or device: never opened (it could block)
    HIDDEN = "hidden"  # a dot-folder, or a dot-file with a photo suffix
    EMPTY_FOLDER = "empty person folder"
    UNREADABLE_FOLDER = "unreadable folder"
    LONG_PATH = "path too long"
    LINK = "folder link"  # a loop, or a link into the photo folder or above it
    WORKSPACE = "facelab workspace"  # a folder holding a workspace, not a person's photos
    DELETED_PERSON = "deleted person"  # the folder of a person deleted with facelab people delete


@dataclass(frozen=True)
class Skipped:
    """One input the scan left out, with why and what to do."""

    path: Path
    kind: SkipKind
    reason: str
    fix: str
    person: str | None = None


class PhotoRootError(ValueError):
    """The photo folder cannot be built from (missing, unreadable, or holding no photo at all).

    Raised before anything in the workspace changes; ``str()`` names the path and the fix.
    """


class NestedFolders(ValueError):
    """The workspace lies inside the photo folder, or the photo folder inside the workspace."""


@dataclass
class Scan:
    """What a walk of a photo folder found: photos by person, and every input it left out."""

    root: Path  # absolute, links not resolved (photo paths in the database start with it)
    photos: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unread: list[Path] = field(default_factory=list)  # folders that could not be listed

    @property
    def loose(self) -> list[Path]:
        return [s.path for s in self.skipped if s.kind is SkipKind.LOOSE]


@dataclass
class BuildResult:
    """What a build did; printed as the summary and used by tests.

    ``missing``: photos of this folder in the workspace that the scan did not find (kept, see the
    module docstring); ``restored``: photos that were missing and are back; ``pruned``: missing
    photos forgotten because ``prune`` was asked for; ``skipped``: inputs left out, with reasons.
    """

    scanned: int = 0
    processed: int = 0
    unchanged: int = 0
    restored: int = 0
    pruned: int = 0
    faces: int = 0
    no_face: list[Path] = field(default_factory=list)
    multi_face: list[Path] = field(default_factory=list)
    errors: list[BuildIssue] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    per_person: Counter = field(default_factory=Counter)

    @property
    def readable(self) -> int:
        return self.scanned - len(self.errors)

    @property
    def outside_person_folder(self) -> list[Path]:
        return [s.path for s in self.skipped if s.kind is SkipKind.LOOSE]

    @property
    def links_skipped(self) -> list[Skipped]:
        return [s for s in self.skipped if s.kind is SkipKind.LINK]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def perceptual_hash(rgb: np.ndarray) -> str:
    """64-bit DCT perceptual hash (imagehash.phash): equal or close for resized/re-encoded copies."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(rgb)))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def crop_name(photo: Path, sha256: str, index: int) -> str:
    """A crop file name that is stable across runs and unique per photo *path* and face.

    The content hash alone is not enough: byte-identical copies (``x.jpg`` and ``x (1).jpg``) are
    two photos with their own rows, and long names cut to the same prefix must not collide.
    """
    stem = _UNSAFE.sub("_", photo.stem)[:50] or "photo"
    where = hashlib.sha1(str(photo).encode("utf-8")).hexdigest()[:6]
    return f"{stem}-{sha256[:8]}{where}-f{index}.jpg"


def check_roots(photos_root: Path | str, ws_root: Path | str) -> None:
    """Refuse a workspace inside the photo folder, and a photo folder inside the workspace.

    Either way a build would read its own output back in (crops filed as a person called after
    the workspace folder). ``WS/uploads`` (the web app's photo folder) is the one exception.
    Raises :class:`NestedFolders` naming both folders and the fix; creates nothing.
    """
    photos = Path(os.path.realpath(photos_root))
    ws = Path(os.path.realpath(ws_root))
    beside = photos.parent / f"{photos.name}-facelab"
    if ws == photos:
        raise NestedFolders(
            f"the workspace {ws_root} is the photo folder itself; keep them apart, e.g. --workspace {beside}"
        )
    if ws.is_relative_to(photos):
        person = ws.relative_to(photos).parts[0]
        raise NestedFolders(
            f"the workspace {ws_root} is inside the photo folder {photos_root}: the next build would read "
            f"its crops as photos of a person {person!r}. Put the workspace beside the photos, "
            f"e.g. --workspace {beside}"
        )
    if photos.is_relative_to(ws) and photos != ws / UPLOADS_FOLDER:
        raise NestedFolders(
            f"the photo folder {photos_root} is inside the workspace {ws_root}: the workspace's crops and "
            f"data set would be read as photos. Move the photos out of {ws_root}, or use a workspace "
            "elsewhere (--workspace)"
        )


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as listing:
        return sorted(listing, key=lambda entry: entry.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()  # follows links: a link to a photo is a photo
    except OSError:
        return False


def _suffix(path: Path) -> str:
    return path.suffix.lower() or "no suffix"


class _Scanner:
    """One walk of a photo folder; see :func:`scan_photos`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.real_root = Path(os.path.realpath(root))
        self.scan = Scan(root=self.root)
        self.visited: set[tuple[int, int]] = set()

    def skip(self, path: Path, kind: SkipKind, reason: str, fix: str, person: str | None = None) -> None:
        self.scan.skipped.append(Skipped(path, kind, reason, fix, person))

    def run(self) -> Scan:
        root = self.root
        if not root.is_dir():
            what = "does not exist" if not os.path.lexists(root) else "is not a folder"
            raise PhotoRootError(
                f"{root} {what}: point facelab at a folder holding one sub-folder of photos per person "
                "(photos/alice/*.jpg, photos/bob/*.jpg); nothing was changed"
            )
        try:
            entries = _entries(root)
        except OSError as exc:
            raise PhotoRootError(
                f"{root} cannot be read ({exc.strerror or exc}): check its permissions, or that the drive or "
                "share is connected; nothing was changed"
            ) from exc
        for entry in entries:
            path = Path(entry.path)
            if self._hidden_or_long(entry, path, None):
                continue
            if _is_dir(entry):
                if entry.is_symlink() and not self._link_ok(path, None):
                    continue
                if (path / ".facelab" / "facelab.db").exists():
                    self.skip(
                        path,
                        SkipKind.WORKSPACE,
                        "a facelab workspace, not a person's photos",
                        "keep workspaces outside the photo folder",
                    )
                    continue
                found, unread = len(self.scan.photos), len(self.scan.unread)
                self._walk(path, entry.name)
                if len(self.scan.photos) == found and len(self.scan.unread) == unread:
                    self.skip(
                        path,
                        SkipKind.EMPTY_FOLDER,
                        "no photo in this person folder",
                        "add photos of the person, or remove the folder",
                        entry.name,
                    )
            elif _is_file(entry) and is_image_path(path):
                self.skip(path, SkipKind.LOOSE, "not inside a person folder", "move it into PHOTOS/<person>/")
            else:
                self._other(entry, path, None)
        if not self.scan.photos:
            raise PhotoRootError(self._nothing_found(entries))
        return self.scan

    def _nothing_found(self, entries: list[os.DirEntry]) -> str:
        root = self.root
        if not entries:
            return f"{root} is empty (is the drive or share mounted?); nothing was changed"
        unreadable = [s.path.name for s in self.scan.skipped if s.kind is SkipKind.UNREADABLE_FOLDER]
        parts = []
        if unreadable:
            parts.append(
                f"{len(unreadable)} unreadable ({', '.join(unreadable[:3])}{'…' if len(unreadable) > 3 else ''})"
            )
        empty = sum(s.kind is SkipKind.EMPTY_FOLDER for s in self.scan.skipped)
        if empty:
            parts.append(f"{empty} empty")
        loose = len(self.scan.loose)
        found = f"person folders: {', '.join(parts)}; " if parts else ""
        loose_note = f"{loose} photo(s) lie loose in it; " if loose else ""
        return (
            f"no photo found under {root} ({found}{loose_note}expected {root}/<person>/<photo>.jpg); "
            "nothing was changed"
        )

    def _hidden_or_long(self, entry: os.DirEntry, path: Path, person: str | None) -> bool:
        if entry.name.startswith("."):
            if _is_dir(entry):
                self.skip(
                    path,
                    SkipKind.HIDDEN,
                    "hidden folder",
                    "rename it without the leading dot if it holds photos to use",
                    person,
                )
            elif is_image_path(path):
                self.skip(path, SkipKind.HIDDEN, "hidden file", "rename it without the leading dot to use it", person)
            # Other dot-files (.DS_Store, .picasa.ini) are the system's, never the user's photos.
            return True
        if len(os.fsencode(entry.path)) >= PATH_MAX:
            self.skip(
                path,
                SkipKind.LONG_PATH,
                f"path longer than this system's limit ({PATH_MAX} bytes)",
                "move it to a shallower folder or shorten the folder names",
                person,
            )
            return True
        return False

    def _other(self, entry: os.DirEntry, path: Path, person: str | None) -> None:
        """An entry that is neither a folder nor a photo file."""
        if _is_file(entry):
            self.skip(
                path,
                SkipKind.NOT_PHOTO,
                f"not a photo facelab reads ({_suffix(path)})",
                "JPEG, PNG, WebP, BMP, TIFF, GIF and HEIC are read; convert it, or leave it (it is ignored)",
                person,
            )
        elif entry.is_symlink():
            self.skip(path, SkipKind.LINK, "broken link", "fix or delete the link", person)
        else:
            self.skip(
                path,
                SkipKind.NOT_FILE,
                "not a regular file (a named pipe, socket or device)",
                "remove it from the photo folder",
                person,
            )

    def _link_ok(self, link: Path, person: str | None) -> bool:
        """A folder link is followed only if it leads outside the photo folder and is no loop."""
        target = Path(os.path.realpath(link))
        here = Path(os.path.realpath(link.parent))
        if target == self.real_root:
            reason = "link to the photo folder itself (a loop)" + (
                f": every person's photos would be filed under {person}" if person else ""
            )
        elif target.is_relative_to(self.real_root):
            reason = f"link to {target}, inside the photo folder: its photos would be counted twice" + (
                f" and filed under {person}" if person else ""
            )
        elif self.real_root.is_relative_to(target) or here.is_relative_to(target):
            reason = f"link to {target}, a folder above it (a loop)"
        else:
            return True
        self.skip(
            link, SkipKind.LINK, reason, "remove the link; folder links must point outside the photo folder", person
        )
        return False

    def _unreadable(self, folder: Path, person: str, exc: OSError) -> None:
        self.scan.unread.append(folder)
        self.skip(
            folder,
            SkipKind.UNREADABLE_FOLDER,
            f"folder cannot be read ({exc.strerror or exc})",
            "make it readable (chmod +rx) or reconnect the drive; its photos already in the workspace are kept",
            person,
        )

    def _walk(self, folder: Path, person: str) -> None:
        try:
            st = folder.stat()
            entries = _entries(folder)
        except OSError as exc:
            self._unreadable(folder, person, exc)
            return
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            self.skip(folder, SkipKind.LINK, "already scanned through another link (a loop)", "remove the link", person)
            return
        self.visited.add(key)
        for entry in entries:
            path = Path(entry.path)
            if self._hidden_or_long(entry, path, person):
                continue
            if _is_dir(entry):
                if entry.is_symlink() and not self._link_ok(path, person):
                    continue
                self._walk(path, person)
            elif _is_file(entry) and is_image_path(path):
                self.scan.photos.append((person, path))
            elif entry.is_symlink() and is_image_path(path):
                # A broken or looping link to a photo: build reports it by name as unreadable.
                self.scan.photos.append((person, path))
            else:
                self._other(entry, path, person)


def apply_people_names(ws: Workspace, scan: Scan) -> Scan:
    """File each folder's photos under the person the user made of it (facelab.people: renamed,
    merged), and leave deleted people's folders out, one skipped line per folder."""
    from facelab.people import folder_person

    photos, deleted = [], {}
    for folder, path in scan.photos:
        person = folder_person(ws, folder)
        if person is None:
            deleted.setdefault(folder, path)
        else:
            photos.append((person, path))
    skipped = list(scan.skipped)
    for folder in deleted:
        skipped.append(
            Skipped(
                scan.root / folder,
                SkipKind.DELETED_PERSON,
                "this person was deleted in facelab (facelab people delete)",
                f"to bring them back: facelab people restore WS {folder}",
                folder,
            )
        )
    return replace(scan, photos=photos, skipped=skipped)


def scan_photos(photos_root: Path | str) -> Scan:
    """Walk a photo folder (one sub-folder per person, photos at any depth below it).

    Reads only. Raises :class:`PhotoRootError` when the folder is missing, unreadable or holds no
    photo at all, so that a build changes nothing when a drive is not mounted.
    """
    return _Scanner(Path(photos_root)).run()


def _matching_review(face: Face, reviewed: list) -> dict | None:
    """The earlier review decision for the same face (boxes overlapping by IoU ≥ 0.5), if any."""
    for row in reviewed:
        if face.box.iou(Box(row["x1"], row["y1"], row["x2"], row["y2"])) >= 0.5:
            return dict(row)
    return None


def _fallback_roles(faces: list[Face]) -> list[str]:
    """Roles before identity resolution can run: one face → person; several → undecided.

    Without embeddings the largest face is only a guess, so multi-face photos are kept out of
    training (``ambiguous``/``bystander``) until identity resolution or review decides.
    """
    if len(faces) == 1:
        return ["person"]
    largest = max(range(len(faces)), key=lambda i: faces[i].box.area)
    return ["ambiguous" if i == largest else "bystander" for i in range(len(faces))]


class Builder:
    """Runs the build of one photo folder into one workspace. Tune with ``detector`` and ``margin``.

    ``margin`` is the seed's "extended image" factor: the crop's side is ``margin`` × the face box
    side. Larger keeps hair and jaw (helps CNNs that were trained on whole objects), smaller keeps
    only the face; the default is chosen by measurement (docs/benchmarks.md).
    """

    def __init__(self, ws: Workspace, detector: str, margin: float, root: Path | None = None) -> None:
        from facelab.align import crop_face, crop_quality
        from facelab.detect import get_detector

        self.ws = ws
        # The photo folder being built: a photo moves to another person only within it.
        self.root = root
        self.detector_name = detector
        self.detector = get_detector(detector)
        self.margin = margin
        self._crop_face = crop_face
        self._crop_quality = crop_quality
        self.signature = f"{detector}|margin={margin:g}"

    def is_current(self, path: Path, stat: os.stat_result) -> bool:
        row = self.ws.photo_by_path(str(path))
        if row is None or row["status"] == "error" or row["detector"] != self.signature:
            return False
        if row["size"] == stat.st_size and row["mtime"] == stat.st_mtime:
            return True
        # Touched but maybe not changed (copied with new times): compare content.
        try:
            same = row["size"] == stat.st_size and row["sha256"] == sha256_of(path)
        except OSError:
            return False
        if same:
            self.ws.conn.execute("UPDATE photos SET mtime = ? WHERE id = ?", (stat.st_mtime, row["id"]))
        return same

    def process(self, person: str, path: Path, result: BuildResult, unread: tuple[Path, ...] = ()) -> None:
        """Build one photo, or take it as it is when it did not change (or only moved).

        ``unread``: folders the scan could not list; a photo recorded below one of them is not
        taken as moved when the same bytes turn up elsewhere (it may well still be there).
        """
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is not None and self.is_current(path, stat):
            result.unchanged += 1
            if self._clear_missing(str(path)):
                result.restored += 1
            self._count_existing(path, result)
            return
        try:
            sha = sha256_of(path)
        except OSError as exc:
            try:
                load_rgb(path)  # names what is wrong: a broken link, a loop, permissions
            except ImageError as image_error:
                self._record_error(person, path, image_error.reason, image_error.fix, result)
                return
            self._record_error(person, path, f"cannot read ({exc.strerror or exc})", "check the file", result)
            return
        moved = self._moved_photo(sha, path, unread)
        # Re-filed under another person: only within this photo folder. The same bytes in another
        # folder tree (a copy, while the original's drive is away) are another photo.
        if (
            moved is not None
            and moved["person"] != person
            and (self.root is None or not Path(moved["path"]).is_relative_to(self.root))
        ):
            moved = None
        if moved is not None and moved["person"] == person and self.ws.photo_by_path(str(path)) is None:
            self._restore_moved(moved, path, stat)
            result.unchanged += 1
            result.restored += 1
            self._count_existing(path, result)
            return
        try:
            rgb = load_rgb(path)
        except ImageError as exc:
            self._record_error(person, path, exc.reason, exc.fix, result)
            return
        detected = self.detector.detect(rgb)
        # A photo re-filed under another person keeps its review decisions (the faces are the same).
        replaced = moved["path"] if moved is not None else None
        reviewed = self._reviewed_faces(str(path)) or (self._reviewed_faces(replaced) if replaced else [])
        # Faces the user drew by hand (the detector missed them) survive re-detection: a new
        # detector or margin re-cuts them, unless the detector now finds the same face itself.
        drawn = [
            Face(box=box, score=1.0, landmarks=None, angle=0.0, detector=MANUAL_DETECTOR)
            for box in (Box(r["x1"], r["y1"], r["x2"], r["y2"]) for r in reviewed if r["detector"] == MANUAL_DETECTOR)
            if not any(face.box.iou(box) >= 0.5 for face in detected)
        ]
        faces = [*detected, *drawn]
        crops_dir = self.ws.crops_dir / person
        crop_rows = []
        for index, face in enumerate(faces):
            crop = self._crop_face(rgb, face, margin=self.margin, size=CROP_SIZE)
            quality = self._crop_quality(crop, face, rgb.shape)
            crop_path = crops_dir / crop_name(path, sha, index)
            save_jpeg_atomic(crop, crop_path)
            crop_rows.append((face, crop_path, quality))
        phash = perceptual_hash(rgb)
        roles = (_fallback_roles(detected) if detected else []) + ["person"] * len(drawn)
        old_crops = self._crop_paths_of(str(path)) | (self._crop_paths_of(replaced) if replaced else set())
        with self.ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE path = ?", (str(path),))
            if replaced:
                conn.execute("DELETE FROM photos WHERE path = ?", (replaced,))
            cursor = conn.execute(
                "INSERT INTO photos(path, person, sha256, size, mtime, width, height, phash, status, "
                "detector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(path),
                    person,
                    sha,
                    stat.st_size if stat else None,
                    stat.st_mtime if stat else None,
                    int(rgb.shape[1]),
                    int(rgb.shape[0]),
                    phash,
                    "ok" if faces else "no_face",
                    self.signature,
                ),
            )
            photo_id = cursor.lastrowid
            for index, ((face, crop_path, quality), role) in enumerate(zip(crop_rows, roles, strict=True)):
                face_id = conn.execute(
                    "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, angle, detector, "
                    "role, role_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'auto')",
                    (
                        photo_id,
                        index,
                        face.box.x1,
                        face.box.y1,
                        face.box.x2,
                        face.box.y2,
                        float(face.score),
                        json.dumps(face.landmarks) if face.landmarks else None,
                        face.angle,
                        face.detector or self.detector_name,
                        role,
                    ),
                ).lastrowid
                decision = _matching_review(face, reviewed)
                if decision and replaced and moved is not None and decision["crop_person"] == moved["person"]:
                    decision["crop_person"] = person  # follows the photo to its new folder
                conn.execute(
                    "INSERT INTO crops(face_id, path, person, status, quality, sharpness, face_px, margin) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        face_id,
                        str(crop_path.relative_to(self.ws.root)),
                        decision["crop_person"] if decision else person,
                        decision["status"] if decision else "pending",
                        float(quality["quality"]),
                        float(quality["sharpness"]),
                        float(quality["face_px"]),
                        self.margin,
                    ),
                )
                if decision and decision["role_source"] == "review":
                    conn.execute(
                        "UPDATE faces SET role = ?, role_source = 'review' WHERE id = ?",
                        (decision["role"], face_id),
                    )
        new_crops = {str(p.relative_to(self.ws.root)) for _, p, _ in crop_rows}
        for stale in old_crops - new_crops:
            (self.ws.root / stale).unlink(missing_ok=True)
        result.processed += 1
        self._tally(path, person, len(faces), result)

    def _clear_missing(self, photo_path: str) -> bool:
        """Mark a photo seen again; True if it had been missing."""
        cursor = self.ws.conn.execute(
            "UPDATE photos SET missing_since = NULL, error = NULL WHERE path = ? AND missing_since IS NOT NULL",
            (photo_path,),
        )
        return cursor.rowcount > 0

    def _moved_photo(self, sha: str, path: Path, unread: tuple[Path, ...]) -> sqlite3.Row | None:
        """A photo with these bytes, built the same way, whose file is gone from where it was.

        That is this photo, moved or renamed (or its drive mounted elsewhere): it is restored
        rather than detected again, and keeps its crops and review decisions.
        """
        rows = self.ws.query(
            "SELECT * FROM photos WHERE sha256 = ? AND detector = ? AND status != 'error' AND path != ? ORDER BY id",
            (sha, self.signature, str(path)),
        )
        for row in rows:
            old = Path(row["path"])
            if any(old.is_relative_to(folder) for folder in unread):
                continue
            if not os.path.lexists(old):
                return row
        return None

    def _restore_moved(self, row: sqlite3.Row, path: Path, stat: os.stat_result | None) -> None:
        with self.ws.transaction() as conn:
            conn.execute(
                "UPDATE photos SET path = ?, size = ?, mtime = ?, missing_since = NULL, error = NULL WHERE id = ?",
                (str(path), stat.st_size if stat else row["size"], stat.st_mtime if stat else row["mtime"], row["id"]),
            )

    def _reviewed_faces(self, photo_path: str) -> list:
        """Review decisions on the photo's previous faces, to carry over to the new detection."""
        return self.ws.query(
            "SELECT f.x1, f.y1, f.x2, f.y2, f.role, f.role_source, f.detector, c.status, c.person AS crop_person "
            "FROM faces f JOIN crops c ON c.face_id = f.id JOIN photos p ON p.id = f.photo_id "
            "WHERE p.path = ? AND (f.role_source = 'review' OR c.status != 'pending')",
            (photo_path,),
        )

    def _crop_paths_of(self, photo_path: str) -> set[str]:
        rows = self.ws.query(
            "SELECT c.path FROM crops c JOIN faces f ON f.id = c.face_id JOIN photos p ON p.id = f.photo_id "
            "WHERE p.path = ?",
            (photo_path,),
        )
        return {r["path"] for r in rows}

    def _count_existing(self, path: Path, result: BuildResult) -> None:
        row = self.ws.query(
            "SELECT p.person, COUNT(f.id) AS n FROM photos p LEFT JOIN faces f ON f.photo_id = p.id "
            "WHERE p.path = ? GROUP BY p.id",
            (str(path),),
        )[0]
        self._tally(path, row["person"], row["n"], result)

    @staticmethod
    def _tally(path: Path, person: str, n_faces: int, result: BuildResult) -> None:
        result.faces += n_faces
        result.per_person[person] += 1
        if n_faces == 0:
            result.no_face.append(path)
        elif n_faces > 1:
            result.multi_face.append(path)

    def _record_error(self, person: str, path: Path, reason: str, fix: str, result: BuildResult) -> None:
        result.errors.append(BuildIssue(path, reason, fix))
        row = self.ws.photo_by_path(str(path))
        if row is not None and row["status"] != "error":
            # Built before, unreadable now (a flaky share, a file being replaced): keep its faces,
            # crops and review decisions; it is missing until it reads again.
            self.ws.conn.execute(
                "UPDATE photos SET missing_since = COALESCE(missing_since, ?), error = ? WHERE id = ?",
                (_now(), f"{reason} — {fix}", row["id"]),
            )
            return
        old_crops = self._crop_paths_of(str(path))
        with self.ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE path = ?", (str(path),))
            conn.execute(
                "INSERT INTO photos(path, person, status, error, detector) VALUES (?, ?, 'error', ?, ?)",
                (str(path), person, f"{reason} — {fix}", self.signature),
            )
        for stale in old_crops:
            (self.ws.root / stale).unlink(missing_ok=True)


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _under(root: Path, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    prefix = str(root) + os.sep
    return [row for row in rows if row["path"].startswith(prefix)]


def mark_missing(ws: Workspace, photos_root: Path, seen: set[str]) -> list[Path]:
    """Mark the photos under ``photos_root`` that the scan did not see as missing; returns all missing.

    Nothing is deleted: faces, crops, roles and review decisions stay, and the photo is restored
    when it is seen again. :func:`prune_missing` forgets them.
    """
    root = Path(os.path.abspath(photos_root))
    rows = _under(root, ws.query("SELECT id, path, missing_since FROM photos"))
    gone = [row for row in rows if row["path"] not in seen]
    now = _now()
    with ws.transaction() as conn:
        conn.executemany(
            "UPDATE photos SET missing_since = ? WHERE id = ? AND missing_since IS NULL",
            [(now, row["id"]) for row in gone],
        )
    missing = _under(root, ws.query("SELECT path FROM photos WHERE missing_since IS NOT NULL ORDER BY path"))
    return [Path(row["path"]) for row in missing]


def prune_missing(ws: Workspace, photos_root: Path) -> int:
    """Forget the missing photos under ``photos_root``: their faces, crops (files too) and decisions."""
    root = Path(os.path.abspath(photos_root))
    gone = _under(root, ws.query("SELECT id, path FROM photos WHERE missing_since IS NOT NULL"))
    for row in gone:
        crop_rows = ws.query(
            "SELECT c.path FROM crops c JOIN faces f ON f.id = c.face_id WHERE f.photo_id = ?", (row["id"],)
        )
        with ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE id = ?", (row["id"],))
        # Files after the commit: a crash in between leaves stray files, never rows without files.
        for crop in crop_rows:
            (ws.root / crop["path"]).unlink(missing_ok=True)
    return len(gone)


def record_skipped(ws: Workspace, scan: Scan) -> None:
    """Replace what the last build of this photo folder skipped (reports/errors.csv lists it)."""
    root = str(scan.root)
    with ws.transaction() as conn:
        conn.execute("DELETE FROM skipped WHERE root = ?", (root,))
        conn.executemany(
            "INSERT OR REPLACE INTO skipped(path, root, person, kind, reason) VALUES (?, ?, ?, ?, ?)",
            [(str(s.path), root, s.person, s.kind.value, f"{s.reason} — {s.fix}") for s in scan.skipped],
        )


def build(
    photos_root: Path,
    ws: Workspace,
    *,
    detector: str | None = None,
    margin: float | None = None,
    progress: Callable[[int, int, Path], None] | None = None,
    prune: bool = False,
    scan: Scan | None = None,
) -> BuildResult:
    """Scan ``photos_root`` (one folder per person) into ``ws``. See the module docstring.

    Raises :class:`NestedFolders` or :class:`PhotoRootError` before changing anything, and
    :class:`facelab.writelock.WorkspaceBusy` when another process is writing to ``ws``.
    ``prune``: forget the photos that are missing (see :func:`prune_missing`). ``scan``: a scan
    of ``photos_root`` made just before (the CLI scans first so that an empty folder creates no
    workspace); scanned again when not given.
    """
    from facelab.align import DEFAULT_MARGIN
    from facelab.detect import DEFAULT_DETECTOR

    check_roots(photos_root, ws.root)
    detector = detector or DEFAULT_DETECTOR
    margin = float(margin if margin is not None else DEFAULT_MARGIN)
    with write_lock(ws.root):
        scan = scan if scan is not None else scan_photos(photos_root)
        scan = apply_people_names(ws, scan)
        builder = Builder(ws, detector, margin, scan.root)
        result = BuildResult(scanned=len(scan.photos), skipped=list(scan.skipped))
        seen: set[str] = set()
        unread = tuple(scan.unread)
        for number, (person, path) in enumerate(scan.photos, start=1):
            absolute = Path(os.path.abspath(path))
            seen.add(str(absolute))
            builder.process(person, absolute, result, unread)
            if progress:
                progress(number, len(scan.photos), path)
        result.missing = mark_missing(ws, scan.root, seen)
        if prune:
            result.pruned = prune_missing(ws, scan.root)
            result.missing = []
        record_skipped(ws, scan)
        ws.set_setting("crop_margin", f"{margin:g}")
        ws.set_setting("detector", detector)
        ws.set_setting("photos_root", str(scan.root))
        # Every photo folder ever built into the workspace: the web app shows photos only from these.
        roots = json.loads(ws.setting("photo_roots") or "[]")
        if str(scan.root) not in roots:
            ws.set_setting("photo_roots", json.dumps([*roots, str(scan.root)], ensure_ascii=False))
    return result
