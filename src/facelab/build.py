"""Stage 1: scan folders of photos (one folder per person), find faces, write crops.

The user's photos are only read. Each photo is processed and recorded in one database
transaction, after its crop files are on disk; crop names are deterministic (photo hash + face
index), so a build killed at any point and run again neither loses nor duplicates anything.
Re-runs skip photos whose size and modification time (or, failing that, content hash) did not
change since they were processed with the same detector and margin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.imageio import ImageError, iter_image_files, load_rgb, save_jpeg_atomic
from facelab.store import Workspace
from facelab.types import Box, Face

CROP_SIZE = 256
# The detector name of faces drawn by hand in review (the web app's photo page).
MANUAL_DETECTOR = "manual"


@dataclass
class BuildIssue:
    path: Path
    reason: str
    fix: str


@dataclass
class BuildResult:
    """What a build did; printed as the summary and used by tests."""

    scanned: int = 0
    processed: int = 0
    unchanged: int = 0
    removed: int = 0
    faces: int = 0
    no_face: list[Path] = field(default_factory=list)
    multi_face: list[Path] = field(default_factory=list)
    errors: list[BuildIssue] = field(default_factory=list)
    outside_person_folder: list[Path] = field(default_factory=list)
    per_person: Counter = field(default_factory=Counter)

    @property
    def readable(self) -> int:
        return self.scanned - len(self.errors)


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


def scan_person_folders(photos_root: Path) -> tuple[list[tuple[str, Path]], list[Path]]:
    """(person, photo path) for every image below a person folder; images lying loose in the root."""
    photos_root = Path(photos_root)
    if not photos_root.is_dir():
        raise FileNotFoundError(
            f"{photos_root}: not a folder. Point facelab at a folder holding one sub-folder per person, "
            "e.g. photos/alice/*.jpg, photos/bob/*.jpg"
        )
    found: list[tuple[str, Path]] = []
    loose: list[Path] = []
    for entry in sorted(photos_root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend((entry.name, path) for path in iter_image_files(entry))
        elif entry.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".heic", ".bmp", ".tif", ".tiff"}:
            loose.append(entry)
    return found, loose


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

    def __init__(self, ws: Workspace, detector: str, margin: float) -> None:
        from facelab.align import crop_face, crop_quality
        from facelab.detect import get_detector

        self.ws = ws
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
        if row["size"] == stat.st_size and row["sha256"] == sha256_of(path):
            self.ws.conn.execute("UPDATE photos SET mtime = ? WHERE id = ?", (stat.st_mtime, row["id"]))
            return True
        return False

    def process(self, person: str, path: Path, result: BuildResult) -> None:
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is not None and self.is_current(path, stat):
            result.unchanged += 1
            self._count_existing(path, result)
            return
        try:
            rgb = load_rgb(path)
            sha = sha256_of(path)
        except ImageError as exc:
            self._record_error(person, path, exc.reason, exc.fix, result)
            return
        except OSError as exc:
            self._record_error(person, path, f"cannot read ({exc})", "check the file", result)
            return
        detected = self.detector.detect(rgb)
        reviewed = self._reviewed_faces(str(path))
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
        old_crops = self._crop_paths_of(str(path))
        with self.ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE path = ?", (str(path),))
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
        old_crops = self._crop_paths_of(str(path))
        with self.ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE path = ?", (str(path),))
            conn.execute(
                "INSERT INTO photos(path, person, status, error, detector) VALUES (?, ?, 'error', ?, ?)",
                (str(path), person, f"{reason} — {fix}", self.signature),
            )
        for stale in old_crops:
            (self.ws.root / stale).unlink(missing_ok=True)
        result.errors.append(BuildIssue(path, reason, fix))


def remove_vanished(ws: Workspace, photos_root: Path, seen: set[str]) -> int:
    """Forget photos under ``photos_root`` that are no longer there (and delete their crops)."""
    prefix = str(Path(os.path.abspath(photos_root))) + os.sep
    gone = [
        row
        for row in ws.query("SELECT id, path FROM photos")
        if row["path"].startswith(prefix) and row["path"] not in seen
    ]
    for row in gone:
        crop_rows = ws.query(
            "SELECT c.path FROM crops c JOIN faces f ON f.id = c.face_id WHERE f.photo_id = ?", (row["id"],)
        )
        with ws.transaction() as conn:
            conn.execute("DELETE FROM photos WHERE id = ?", (row["id"],))
        for crop in crop_rows:
            (ws.root / crop["path"]).unlink(missing_ok=True)
    return len(gone)


def build(
    photos_root: Path,
    ws: Workspace,
    *,
    detector: str | None = None,
    margin: float | None = None,
    progress: Callable[[int, int, Path], None] | None = None,
) -> BuildResult:
    """Scan ``photos_root`` (one folder per person) into ``ws``. See the module docstring."""
    from facelab.align import DEFAULT_MARGIN
    from facelab.detect import DEFAULT_DETECTOR

    detector = detector or DEFAULT_DETECTOR
    margin = float(margin if margin is not None else DEFAULT_MARGIN)
    found, loose = scan_person_folders(photos_root)
    builder = Builder(ws, detector, margin)
    result = BuildResult(scanned=len(found), outside_person_folder=loose)
    seen: set[str] = set()
    for number, (person, path) in enumerate(found, start=1):
        absolute = Path(os.path.abspath(path))
        seen.add(str(absolute))
        builder.process(person, absolute, result)
        if progress:
            progress(number, len(found), path)
    result.removed = remove_vanished(ws, photos_root, seen)
    ws.set_setting("crop_margin", f"{margin:g}")
    ws.set_setting("detector", detector)
    ws.set_setting("photos_root", str(Path(os.path.abspath(photos_root))))
    return result
