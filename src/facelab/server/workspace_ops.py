"""What the web app does to a workspace: people, uploads, manual faces. No FastAPI in here.

Uploaded photos are kept as the workspace's own originals under ``WS/uploads/<person>/`` with
names made by the server from their content hash (the name a browser sends is only echoed back
for display, never used as a path), then the ordinary :func:`facelab.build.build` runs over
``WS/uploads``. A file reaches that folder only after it was read as an image (by its bytes, via
:func:`facelab.imageio.load_rgb`) from a temporary file, and only by an atomic rename, so a failed
or interrupted upload never leaves half a photo there; the database changes in transactions.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from facelab.imageio import SHARED_FILE_MODE
from facelab.server.roots import Servable, photo_roots, photo_servable, remember_photo_root
from facelab.server.security import inside_workspace, validate_person_name
from facelab.store import Workspace
from facelab.types import Box, CropStatus, Face, Role

CHUNK = 1 << 20
# Pillow format name → the suffix build's folder scan recognises (facelab.imageio.IMAGE_SUFFIXES).
_SUFFIX_OF_FORMAT = {
    "JPEG": ".jpg",
    "MPO": ".jpg",  # phones' multi-picture JPEG
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "GIF": ".gif",
    "HEIF": ".heic",
    "AVIF": ".heic",
}
# A drawn box smaller than this (pixels, shorter side) is a slip of the mouse, not a face.
MIN_MANUAL_FACE_PX = 8


class OpError(Exception):
    """An operation refused; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(OpError):
    status = 404


class Conflict(OpError):
    status = 409


def busy(exc: Exception) -> Conflict:
    """The 409 for a :class:`facelab.writelock.WorkspaceBusy`: who holds the workspace, and to retry."""
    holder = getattr(exc, "holder", None)
    who = holder.describe() if holder else "another facelab process"
    return Conflict(f"the workspace is being changed by {who}; try again when it has finished")


@dataclass
class UploadOutcome:
    """One uploaded file: ``added``, ``duplicate`` (the same photo is already there) or ``rejected``."""

    filename: str
    status: str
    reason: str | None = None
    photo_id: int | None = None
    faces: int | None = None
    photo_status: str | None = None
    code: int = 200  # for a rejected file: the HTTP status that says why (400, 413, 415)

    def to_json(self) -> dict:
        return asdict(self)


# -- people ------------------------------------------------------------------------------------


def uploads_dir(ws: Workspace) -> Path:
    return ws.root / "uploads"


def tmp_dir(ws: Workspace) -> Path:
    return ws.root / ".facelab" / "tmp"


def previews_dir(ws: Workspace) -> Path:
    """Upright JPEG renderings of photos for the pages (any format, EXIF applied), by photo id."""
    return ws.root / ".facelab" / "cache" / "previews"


def person_names(ws: Workspace) -> list[str]:
    """Everyone with photos in the database, plus people created in the app who have none yet.

    An upload folder counts as the person the user made of it (:func:`facelab.people.folder_person`):
    after a rename of ``ada`` to ``Ada L`` the folder ``uploads/ada/`` is Ada L's, and the folder of
    a deleted person is nobody's.
    """
    from facelab.people import folder_person

    names = set(ws.people())
    folder = uploads_dir(ws)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                try:
                    person = folder_person(ws, validate_person_name(entry.name))
                except ValueError:
                    continue  # not made by facelab; never offered as a person
                if person is not None:
                    names.add(person)
    return sorted(names, key=str.casefold)


def check_new_name(ws: Workspace, name: str, *, exclude: str | None = None) -> str:
    """``name`` cleaned for a new (or renamed) person; 422 if it cannot be a name, 409 if it is taken.

    ``exclude``: the person being renamed (a rename may change only the case of a name). A name
    whose upload folder a rename, merge or delete left mapped to someone else is taken too: photos
    uploaded under it would be filed under that other person.
    """
    from facelab.items import OTHERS
    from facelab.people import folder_person

    try:
        name = validate_person_name(name)
    except ValueError as exc:
        raise OpError(str(exc), 422) from exc
    if name.casefold() in {"unknown", OTHERS.casefold()}:
        raise OpError(
            f"{name!r} is a word facelab reserves for faces that are none of your people; choose another", 422
        )
    if name.casefold() in {n.casefold() for n in person_names(ws) if n != exclude}:
        raise Conflict(f"{name} already exists; to make two people one, merge them instead")
    mapped = folder_person(ws, name)
    if mapped is not None and mapped != name and mapped != exclude:
        raise Conflict(
            f"photos of a folder called {name} are filed under {mapped} (a rename or merge); choose another name"
        )
    return name


def create_person(ws: Workspace, name: str) -> str:
    """Make ``WS/uploads/<name>/``; raises :class:`Conflict` if the person already exists.

    The name of a person deleted earlier is given back (:func:`facelab.people.restore`) unless a
    photo folder of the CLI's build still holds their folder: restoring would bring those photos back.
    """
    name = check_new_name(ws, name)
    claim_name(ws, name)
    (uploads_dir(ws) / name).mkdir(parents=True, exist_ok=True)
    return name


def claim_name(ws: Workspace, name: str) -> None:
    """Let builds read the upload folder ``name`` again if a person of that name was deleted.

    Refused (409) while a photo folder of a CLI build still holds a folder of that name: giving
    the name back (:func:`facelab.people.restore`) would bring the deleted person's photos back.
    """
    from facelab.people import folder_person, restore
    from facelab.writelock import WorkspaceBusy

    if folder_person(ws, name) is not None:
        return
    for root in photo_roots(ws):
        if root != uploads_dir(ws) and (root / name).is_dir():
            raise Conflict(
                f"{name} was deleted and builds skip their folder {root / name}; to bring them back: "
                f"facelab people restore {ws.root} {name} (then facelab build), or choose another name"
            )
    try:
        restore(ws, name)  # only the name: their uploaded copies went with the delete
    except WorkspaceBusy as exc:
        raise busy(exc) from exc


def require_person(ws: Workspace, name: str) -> str:
    """The existing person called ``name``; 404 if there is none, 422 if no person could be called so.

    Any name a photo folder gave (``José 😀``, ``trailing.``) is found as it is: the naming rule
    (:func:`validate_person_name`) is for people created in the app, not for lookups. A name
    spelled in another Unicode form (a Mac's decomposed accents) finds its person too.
    """
    names = person_names(ws)
    if name in names:
        return name
    composed = unicodedata.normalize("NFC", name) if isinstance(name, str) else name
    for known in names:
        if unicodedata.normalize("NFC", known) == composed:
            return known
    try:
        name = validate_person_name(name)
    except ValueError as exc:
        raise OpError(str(exc), 422) from exc
    if name not in names:
        raise NotFound(f"no person called {name!r}; create them first")
    return name


def people_summary(ws: Workspace) -> list[dict]:
    """Per person: photos by status, usable faces, crops by review status, crops worth a look."""
    from facelab.review import list_crops

    photos: dict[str, dict[str, int]] = {}
    for row in ws.query("SELECT person, status, COUNT(*) AS n FROM photos GROUP BY person, status"):
        photos.setdefault(row["person"], {})[row["status"]] = row["n"]
    missing = {
        r["person"]: r["n"]
        for r in ws.query("SELECT person, COUNT(*) AS n FROM photos WHERE missing_since IS NOT NULL GROUP BY person")
    }
    crops: dict[str, dict[str, int]] = {}
    for row in ws.query("SELECT person, status, COUNT(*) AS n FROM crops GROUP BY person, status"):
        crops.setdefault(row["person"], {})[row["status"]] = row["n"]
    usable = {
        r["person"]: r["n"]
        for r in ws.query(
            "SELECT c.person, COUNT(*) AS n FROM crops c JOIN faces f ON f.id = c.face_id "
            "WHERE (f.role = 'person' OR c.status = 'accepted') AND c.status != 'rejected' GROUP BY c.person"
        )
    }
    doubtful: dict[str, int] = {}
    for view in list_crops(ws, suspicious=True):
        doubtful[view.person] = doubtful.get(view.person, 0) + 1
    covers = cover_crops(ws)
    out = []
    for name in person_names(ws):
        by_status = photos.get(name, {})
        by_review = crops.get(name, {})
        out.append(
            {
                "name": name,
                "photos": sum(by_status.values()),
                "photos_with_face": by_status.get("ok", 0),
                "photos_no_face": by_status.get("no_face", 0),
                "photos_unreadable": by_status.get("error", 0),
                "photos_missing": missing.get(name, 0),
                "faces_usable": usable.get(name, 0),
                "crops_pending": by_review.get(CropStatus.PENDING.value, 0),
                "crops_accepted": by_review.get(CropStatus.ACCEPTED.value, 0),
                "crops_rejected": by_review.get(CropStatus.REJECTED.value, 0),
                "to_review": doubtful.get(name, 0),
                "cover_crop": covers.get(name),
            }
        )
    return out


def cover_crops(ws: Workspace) -> dict[str, int]:
    """Per person, the crop that shows them on the People page: a face the detector found (a box
    drawn by hand may hold anything) that review accepted or identity resolution chose as theirs,
    the best quality first. Rejected faces and other people's faces in their photos (bystanders,
    doubtful ones) never stand for them."""
    from facelab.build import MANUAL_DETECTOR

    rows = ws.query(
        "SELECT person, id FROM ("
        "  SELECT c.person, c.id, ROW_NUMBER() OVER ("
        "    PARTITION BY c.person ORDER BY COALESCE(f.detector, '') != ? DESC,"
        "    (c.status = 'accepted' OR f.role = 'person') DESC, COALESCE(c.quality, 0) DESC, c.id) AS rank"
        "  FROM crops c JOIN faces f ON f.id = c.face_id"
        "  WHERE c.status != 'rejected' AND (c.status = 'accepted' OR f.role = 'person' OR f.role IS NULL)"
        ") WHERE rank = 1",
        (MANUAL_DETECTOR,),
    )
    return {r["person"]: r["id"] for r in rows}


def person_summary(ws: Workspace, name: str) -> dict:
    for row in people_summary(ws):
        if row["name"] == name:
            return row
    raise NotFound(f"no person called {name!r}")


# -- photos ------------------------------------------------------------------------------------


def _photo_json(ws: Workspace, row: dict, n_faces: int, servable: Servable | None = None) -> dict:
    path = Path(row["path"])
    servable = servable or photo_servable(ws)
    return {
        "id": row["id"],
        "person": row["person"],
        "status": row["status"],
        "error": row["error"],
        "width": row["width"],
        "height": row["height"],
        "faces": n_faces,
        # Uploads and originals under a photo folder the workspace was built from (a CLI build of
        # ~/Pictures/people) are shown; a row pointing anywhere else is not (facelab.server.roots).
        "viewable": servable.file(path) is not None,
        "uploaded": _is_upload(ws, path),
    }


def _is_upload(ws: Workspace, path: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(uploads_dir(ws))))


def person_photos(ws: Workspace, name: str) -> list[dict]:
    """The person's photos, those where no face was found first (they may need a drawn box)."""
    rows = ws.query(
        "SELECT p.*, COUNT(f.id) AS n FROM photos p LEFT JOIN faces f ON f.photo_id = p.id "
        "WHERE p.person = ? GROUP BY p.id "
        "ORDER BY CASE p.status WHEN 'no_face' THEN 0 WHEN 'error' THEN 1 ELSE 2 END, p.id",
        (name,),
    )
    servable = photo_servable(ws)  # the roots resolved once, not once per photo
    return [_photo_json(ws, dict(r), r["n"], servable) for r in rows]


def photo_row(ws: Workspace, photo_id: int) -> dict:
    row = ws.conn.execute("SELECT * FROM photos WHERE id = ?", (photo_id,)).fetchone()
    if row is None:
        raise NotFound(f"no photo with id {photo_id}")
    return dict(row)


def photo_detail(ws: Workspace, photo_id: int) -> dict:
    """A photo and its faces: box, role, who decided it, and the face's crop and review status."""
    row = photo_row(ws, photo_id)
    faces = ws.query(
        "SELECT f.id, f.idx, f.x1, f.y1, f.x2, f.y2, f.score, f.role, f.role_source, f.detector, "
        "c.id AS crop_id, c.status AS crop_status, c.person AS crop_person "
        "FROM faces f LEFT JOIN crops c ON c.face_id = f.id WHERE f.photo_id = ? ORDER BY f.idx",
        (photo_id,),
    )
    detail = _photo_json(ws, row, len(faces))
    detail["faces_list"] = [
        {
            "id": f["id"],
            "idx": f["idx"],
            "box": [round(f["x1"], 1), round(f["y1"], 1), round(f["x2"], 1), round(f["y2"], 1)],
            "score": f["score"],
            "role": f["role"],
            "role_source": f["role_source"],
            "detector": f["detector"],
            "crop_id": f["crop_id"],
            "crop_status": f["crop_status"],
            "crop_person": f["crop_person"],
        }
        for f in faces
    ]
    return detail


def photo_file(ws: Workspace, photo_id: int) -> Path:
    """The photo's file if it may be shown (see :mod:`facelab.server.roots`), else :class:`NotFound`."""
    row = photo_row(ws, photo_id)
    path = photo_servable(ws).file(row["path"])
    if path is None:
        if not os.path.lexists(row["path"]):
            raise NotFound(
                f"photo {photo_id} is not where it was built from (moved, deleted, or its drive not mounted); "
                "put it back or run facelab build again"
            )
        raise NotFound(
            f"photo {photo_id} lies outside the workspace and every photo folder it was built from, "
            "so the web app does not show it"
        )
    return path


def crop_file(ws: Workspace, crop_id: int) -> Path:
    row = ws.conn.execute("SELECT path FROM crops WHERE id = ?", (crop_id,)).fetchone()
    if row is None:
        raise NotFound(f"no crop with id {crop_id}")
    path = inside_workspace(ws.root, row["path"])
    if path is None:
        raise NotFound(f"the file of crop {crop_id} is missing; run facelab build again")
    return path


# -- uploads -----------------------------------------------------------------------------------


def receive_file(source: BinaryIO, folder: Path, max_bytes: int) -> Path:
    """Copy an upload into a temporary file in ``folder``, at most ``max_bytes``; returns its path.

    Raises :class:`OpError` (413 too big, 400 empty) after deleting the partial file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".tmp")
    tmp = Path(name)
    size = 0
    try:
        os.fchmod(fd, SHARED_FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise OpError(f"file over the limit of {max_bytes / 2**20:.0f} MiB", 413)
                out.write(chunk)
        if size == 0:
            raise OpError("empty file (0 bytes)", 400)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def image_pixels(tmp: Path) -> int:
    """Width × height from a received image's header (nothing decoded); :class:`OpError` 415 if unreadable."""
    import warnings

    from PIL import Image

    from facelab.imageio import _register_heif

    _register_heif()
    try:
        with warnings.catch_warnings():
            # The size is all that is wanted here; the pixel limits are checked by the caller.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(tmp) as image:
                return int(image.width) * int(image.height)
    except Image.DecompressionBombError as exc:
        raise OpError(f"too many pixels ({exc})", 413) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise OpError(f"not an image facelab can read ({exc})", 415) from exc


def check_image(tmp: Path) -> tuple[str, str]:
    """``(suffix, sha256)`` of a received file that is a readable image, else :class:`OpError` 415.

    The image is decoded in full (:func:`load_rgb`): its bytes decide, not its name or the
    browser's content type, and truncated files and decompression bombs are refused here.
    """
    from PIL import Image

    from facelab.imageio import ImageError, load_rgb

    try:
        load_rgb(tmp)
        with Image.open(tmp) as image:
            kind = image.format or ""
    except ImageError as exc:
        raise OpError(f"{exc.reason} — {exc.fix}", 415) from exc
    except OSError as exc:
        raise OpError(f"not an image facelab can read ({exc})", 415) from exc
    digest = hashlib.sha256()
    with tmp.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return _SUFFIX_OF_FORMAT.get(kind.upper(), ".jpg"), digest.hexdigest()


def stage_upload(
    source: BinaryIO, filename: str, ws: Workspace, person: str, max_bytes: int
) -> tuple[UploadOutcome, Path | None]:
    """Receive, check and file one upload under ``WS/uploads/<person>/<sha>.<ext>``.

    Returns the outcome and the new file (None when rejected or already there).
    """
    shown = Path(filename or "upload").name[:200]  # for messages only
    try:
        tmp = receive_file(source, tmp_dir(ws), max_bytes)
    except OpError as exc:
        return UploadOutcome(shown, "rejected", str(exc), code=exc.status), None
    try:
        suffix, sha = check_image(tmp)
        target = uploads_dir(ws) / person / f"{sha[:24]}{suffix}"
        if target.exists():
            if ws.photo_by_path(str(Path(os.path.abspath(target)))) is not None:
                return UploadOutcome(shown, "duplicate", f"{person} already has this photo"), None
            # There but never built (the server stopped mid-build): build it now.
            return UploadOutcome(shown, "added"), target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return UploadOutcome(shown, "added"), target
    except OpError as exc:
        return UploadOutcome(shown, "rejected", str(exc), code=exc.status), None
    finally:
        tmp.unlink(missing_ok=True)


def _build_settings(ws: Workspace, detector: str | None) -> tuple[str | None, float | None]:
    """The detector and margin the workspace was built with, so a rebuild re-processes nothing."""
    margin = ws.setting("crop_margin")
    return detector or ws.setting("detector"), float(margin) if margin else None


def process_uploads(ws: Workspace, added: list[Path], detector: str | None = None) -> None:
    """Find faces in new uploads (build over ``WS/uploads``), resolve identities, rewrite reports.

    If the build fails, uploaded files that did not make it into the database are removed, so
    the folder and the database agree.
    """
    from facelab import workflow

    if not added:
        return
    det, margin = _build_settings(ws, detector)
    # The build below makes WS/uploads the workspace's photos_root: keep the folder a CLI build
    # used before, so its photos stay viewable.
    remember_photo_root(ws)
    try:
        # The CLI's build, step for step (without dlib the largest-face rule stands, as there).
        workflow.ingest(ws, uploads_dir(ws), detector=det, margin=margin, contact_sheets=False)
    except BaseException:
        for path in added:
            if ws.photo_by_path(str(Path(os.path.abspath(path)))) is None:
                path.unlink(missing_ok=True)
        raise


def describe_outcomes(ws: Workspace, outcomes: list[UploadOutcome], paths: list[Path | None]) -> None:
    """Fill in photo id, status and face count of the uploads that were added."""
    for outcome, path in zip(outcomes, paths, strict=True):
        if path is None:
            continue
        row = ws.photo_by_path(str(Path(os.path.abspath(path))))
        if row is None:
            continue
        outcome.photo_id = row["id"]
        outcome.photo_status = row["status"]
        outcome.faces = ws.query("SELECT COUNT(*) AS n FROM faces WHERE photo_id = ?", (row["id"],))[0]["n"]


def delete_photo(ws: Workspace, photo_id: int) -> None:
    """Forget an uploaded photo: its database rows, crops and file. User originals are never deleted."""
    row = photo_row(ws, photo_id)
    path = Path(row["path"])
    if not _is_upload(ws, path):
        raise OpError(
            "only photos uploaded through the web app can be deleted here; remove the original "
            "from its folder and run facelab build again",
            403,
        )
    crops = ws.query("SELECT c.path FROM crops c JOIN faces f ON f.id = c.face_id WHERE f.photo_id = ?", (photo_id,))
    with ws.transaction() as conn:
        conn.execute("DELETE FROM photos WHERE id = ?", (photo_id,))
    # Files after the commit: a crash in between leaves stray files, never rows without files.
    for crop in crops:
        stale = inside_workspace(ws.root, crop["path"])
        if stale is not None:
            stale.unlink(missing_ok=True)
    real = inside_workspace(ws.root, path)
    if real is not None:
        real.unlink(missing_ok=True)
    for preview in previews_dir(ws).glob(f"{photo_id}-*.jpg"):
        preview.unlink(missing_ok=True)


# -- faces the detector missed -----------------------------------------------------------------


def add_manual_face(ws: Workspace, photo_id: int, box: Box) -> dict:
    """Store a face drawn by hand: a new face (role person, decided by review) and its crop (accepted).

    The crop is cut exactly as build cuts detected faces (same margin and size), so it trains like
    any other. Returns ``{"face_id", "crop_id"}``.
    """
    from facelab.align import DEFAULT_MARGIN, crop_face, crop_quality
    from facelab.build import CROP_SIZE, MANUAL_DETECTOR, crop_name, sha256_of
    from facelab.imageio import ImageError, load_rgb, save_jpeg_atomic

    row = photo_row(ws, photo_id)
    if row["status"] == "error":
        raise OpError(f"photo {photo_id} could not be read when it was built: {row['error']}", 409)
    path = Path(row["path"])
    source = photo_file(ws, photo_id)  # a face is drawn on what the page showed, nothing else
    try:
        rgb = load_rgb(source)
    except ImageError as exc:
        raise OpError(f"the photo cannot be read any more: {exc.reason} — {exc.fix}", 409) from exc
    height, width = rgb.shape[:2]
    clipped = Box(min(box.x1, box.x2), min(box.y1, box.y2), max(box.x1, box.x2), max(box.y1, box.y2)).clip(
        width, height
    )
    if min(clipped.width, clipped.height) < MIN_MANUAL_FACE_PX:
        raise OpError(
            f"the box must lie on the photo ({width}×{height}) and be at least {MIN_MANUAL_FACE_PX} pixels "
            "on each side",
            422,
        )
    face = Face(box=clipped, score=1.0, landmarks=None, angle=0.0, detector=MANUAL_DETECTOR)
    margin = float(ws.setting("crop_margin") or DEFAULT_MARGIN)
    crop = crop_face(rgb, face, margin=margin, size=CROP_SIZE)
    quality = crop_quality(crop, face, rgb.shape)
    index = ws.query("SELECT COALESCE(MAX(idx), -1) + 1 AS n FROM faces WHERE photo_id = ?", (photo_id,))[0]["n"]
    sha = row["sha256"] or sha256_of(path)
    crop_path = ws.crops_dir / row["person"] / crop_name(path, sha, index)
    save_jpeg_atomic(crop, crop_path)
    try:
        with ws.transaction() as conn:
            face_id = conn.execute(
                "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, angle, detector, role, "
                "role_source) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, 'review')",
                (
                    photo_id,
                    index,
                    clipped.x1,
                    clipped.y1,
                    clipped.x2,
                    clipped.y2,
                    1.0,
                    MANUAL_DETECTOR,
                    Role.PERSON.value,
                ),
            ).lastrowid
            crop_id = conn.execute(
                "INSERT INTO crops(face_id, path, person, status, quality, sharpness, face_px, margin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    face_id,
                    str(crop_path.relative_to(ws.root)),
                    row["person"],
                    CropStatus.ACCEPTED.value,
                    float(quality["quality"]),
                    float(quality["sharpness"]),
                    float(quality["face_px"]),
                    margin,
                ),
            ).lastrowid
            conn.execute("UPDATE photos SET status = 'ok' WHERE id = ? AND status = 'no_face'", (photo_id,))
    except BaseException:
        crop_path.unlink(missing_ok=True)
        raise
    return {"face_id": face_id, "crop_id": crop_id}


# -- crops -------------------------------------------------------------------------------------


def crop_json(view: object) -> dict:
    """A :class:`facelab.review.CropView` as JSON (paths left out: files are fetched by id)."""
    from facelab.review import CropView

    assert isinstance(view, CropView)
    return {
        "id": view.id,
        "person": view.person,
        "status": view.status,
        "role": view.role,
        "role_source": view.role_source,
        "quality": None if view.quality is None else round(view.quality, 3),
        "distance": None if view.distance is None else round(view.distance, 3),
    }


def crop_photo_ids(ws: Workspace) -> dict[int, int]:
    """crop id → photo id (the review page links each crop to its photo)."""
    rows = ws.query("SELECT c.id, f.photo_id FROM crops c JOIN faces f ON f.id = c.face_id")
    return {r["id"]: r["photo_id"] for r in rows}


def review_order(ws: Workspace, person: str | None = None) -> list[dict]:
    """Every crop of ``person`` (or everyone) for the review grid, grouped by person, most doubtful first.

    Within a person: the crops :func:`facelab.review.list_crops` flags (suspicious, ambiguous, low
    quality; its order), then the other pending crops (far from the person first), then decided ones.
    """
    from facelab.review import list_crops

    doubtful = list_crops(ws, person=person, suspicious=True)
    flagged = {v.id for v in doubtful}
    rest = [v for v in list_crops(ws, person=person) if v.id not in flagged]
    decided_rank = {CropStatus.PENDING.value: 0, CropStatus.REJECTED.value: 1, CropStatus.ACCEPTED.value: 2}
    rest.sort(key=lambda v: (decided_rank.get(v.status, 3), v.doubt))
    photo_of = crop_photo_ids(ws)
    out = []
    for view in [*doubtful, *rest]:
        item = crop_json(view)
        item["flagged"] = view.id in flagged
        item["photo_id"] = photo_of.get(view.id)
        out.append(item)
    out.sort(key=lambda item: item["person"].casefold())  # stable: keeps the doubt order per person
    return out
