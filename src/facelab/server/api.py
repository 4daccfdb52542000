"""The JSON API under ``/api`` — the same operations as the pages, documented at ``/docs``.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, which suits SQLite,
face detection and the other blocking work they do. Every file is addressed by a database id (or,
for run files, by a run name from the runs listing and a fixed file name), never by a client path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from facelab.config import Augment, Strategy
from facelab.server import workspace_ops as ops
from facelab.server.jobs import TrainMode, TrainParams
from facelab.server.recognition import recognize_file, verify_files
from facelab.server.security import MAX_DB_ID, inside_workspace
from facelab.server.state import ServerState
from facelab.store import Workspace
from facelab.types import Box, CropStatus

router = APIRouter(prefix="/api")

# Files of a run folder the app shows; anything else in a run folder (weights) is not served.
RUN_FILES = {
    "curves.png": "image/png",
    "confusion_matrix.png": "image/png",
    "errors.png": "image/png",
    "det.png": "image/png",
    "report.md": "text/markdown; charset=utf-8",
    "metrics.json": "application/json",
    "summary.json": "application/json",
    "openset.json": "application/json",
    "history.csv": "text/csv; charset=utf-8",
    "config.yaml": "text/yaml; charset=utf-8",
}
PREVIEW_SIDES = {"thumb": 360, "large": 1600}


def get_state(request: Request) -> ServerState:
    return request.app.state.facelab


State = Annotated[ServerState, Depends(get_state)]
# A database id in a URL: SQLite integers are 64-bit signed, and a larger number must be a 422,
# not an OverflowError (500) from the driver.
DbId = Annotated[int, PathParam(ge=1, le=MAX_DB_ID, description="Database id (a positive 64-bit integer).")]


# -- schemas -----------------------------------------------------------------------------------


class PersonIn(BaseModel):
    name: str = Field(description="Letters, digits, spaces and - _ . (no slashes, no leading dot).", examples=["Ada"])


class Person(BaseModel):
    name: str
    photos: int
    photos_with_face: int
    photos_no_face: int
    photos_unreadable: int
    photos_missing: int = Field(
        0, description="Photos the last build did not find (kept with their faces until `facelab build --prune`)."
    )
    faces_usable: int = Field(description="Faces that count as this person for training.")
    crops_pending: int
    crops_accepted: int
    crops_rejected: int
    to_review: int = Field(description="Crops worth a look: suspicious, ambiguous or low quality.")
    cover_crop: int | None = Field(
        None, description="A crop that shows the person (best accepted or identified face), for thumbnails."
    )


class Photo(BaseModel):
    id: int
    person: str
    status: str = Field(description="ok | no_face | error")
    error: str | None
    width: int | None
    height: int | None
    faces: int
    viewable: bool = Field(description="False for originals outside the workspace (never served).")
    uploaded: bool


class DeletePreview(BaseModel):
    """What ``DELETE /api/people/{name}`` would remove, counted before anything changes."""

    photos: int = Field(description="Photos filed under the person (database rows; originals are never touched).")
    face_crops: int = Field(description="Face crops filed under the person (their review decisions go too).")
    other_faces: int = Field(description="Faces of other people in the person's photos, which go with the photos.")
    enrolled: int = Field(description="Face vectors added with facelab enroll.")
    album_faces: int = Field(description="Faces of the album index named after the person (they become unknown).")
    uploaded: int = Field(description="Copies uploaded through the web app, deleted from WS/uploads.")


class PersonDetail(Person):
    photo_list: list[Photo]
    delete_preview: DeletePreview


class RenameIn(BaseModel):
    name: str = Field(description="The new name: letters, digits, spaces and - _ . (no slashes).", examples=["Ada L"])


class MergeIn(BaseModel):
    into: str = Field(description="The existing person who keeps their name and gets everything.", examples=["Ada"])


class PeopleChangeOut(BaseModel):
    """What a rename, merge or delete changed (rows), and the sentence saying so."""

    action: Literal["rename", "merge", "delete"]
    person: str
    into: str | None = Field(description="The new name (rename) or the person merged into (merge).")
    photos: int
    faces: int
    enrolled: int
    album_faces: int
    message: str


class UploadResult(BaseModel):
    filename: str = Field(description="The name the client sent, echoed for display only.")
    status: Literal["added", "duplicate", "rejected"]
    reason: str | None = None
    photo_id: int | None = None
    faces: int | None = None
    photo_status: str | None = None
    code: int = Field(200, description="For a rejected file, the HTTP status saying why (400, 413, 415).")


class UploadReport(BaseModel):
    person: Person
    added: int
    duplicates: int
    rejected: int
    results: list[UploadResult]


class FaceInfo(BaseModel):
    id: int
    idx: int
    box: list[float] = Field(description="x1, y1, x2, y2 in the upright photo's pixels.")
    score: float | None
    role: str | None
    role_source: str | None
    detector: str | None
    crop_id: int | None
    crop_status: str | None
    crop_person: str | None


class PhotoDetail(Photo):
    faces_list: list[FaceInfo]


class BoxIn(BaseModel):
    x1: float = Field(ge=0)
    y1: float = Field(ge=0)
    x2: float = Field(ge=0)
    y2: float = Field(ge=0)


class FaceCreated(BaseModel):
    face_id: int
    crop_id: int


class Crop(BaseModel):
    id: int
    person: str
    status: str = Field(description="pending | accepted | rejected")
    role: str | None
    role_source: str | None
    quality: float | None
    distance: float | None = Field(description="Embedding distance to the person's identity (larger: less alike).")
    flagged: bool = False
    photo_id: int | None = None


class MoveIn(BaseModel):
    person: str


class TrainRequest(BaseModel):
    """``auto`` trains candidates cheapest first within ``budget_minutes`` and keeps the best on
    validation; ``embedding`` fits one head on dlib face embeddings (seconds); ``transfer`` trains
    one CNN (``backbone`` × ``strategy`` × ``augment``; minutes on a CPU)."""

    mode: TrainMode = TrainMode.AUTO
    budget_minutes: float = Field(5.0, gt=0, le=24 * 60)
    head: str = "prototype"
    backbone: str = "mobilenet_v2"
    strategy: Strategy = Strategy.FEATURE_EXTRACT
    augment: Augment = Augment.ROTATION
    epochs: int | None = Field(None, ge=1, le=1000)
    include_others: bool = Field(
        False,
        description="Bystanders of the user's photos who are none of their people as a class 'others' "
        "answered unknown (embedding heads knn/linear, or transfer).",
    )


class Job(BaseModel):
    id: str
    params: dict[str, Any]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created: float
    started: float | None
    finished: float | None
    elapsed: float
    phase: str
    step: int
    total: int
    epoch: int | None
    train_accuracy: float | None
    val_accuracy: float | None
    train_loss: float | None
    val_loss: float | None
    history: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    log: list[str]
    run: str | None
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool


class Run(BaseModel):
    run: str
    current: bool
    status: str | None = None
    files: list[str]
    row: dict[str, Any] = Field(description="The comparison-table row (see facelab compare).")


class RunDetail(Run):
    summary: dict[str, Any]
    metrics: dict[str, Any]


class CurrentIn(BaseModel):
    run: str


class RecognizedFace(BaseModel):
    box: list[int]
    name: str = Field(description="A person's name, or 'unknown'.")
    score: float
    margin: float | None
    lookalike: bool
    candidates: list[tuple[str, float]]


class Recognized(BaseModel):
    status: str
    error: str | None
    width: int
    height: int
    model: str
    threshold: float | None = Field(description="Faces scoring below it are answered unknown.")
    threshold_chosen: bool = Field(
        False, description="The threshold is one chosen on the run's results page, not the calibrated one."
    )
    image: str | None = Field(
        None, description="SHA-256 of the image: enroll one of its faces with POST /api/recognize/enroll."
    )
    can_enroll: bool = Field(False, description="The current model learns a face without retraining (embeddings).")
    closed_set_warning: str | None = Field(None, description="Set when the model cannot answer unknown.")
    faces: list[RecognizedFace]


class VerifyFace(BaseModel):
    box: list[int]
    faces_in_image: int


class Verified(BaseModel):
    same: bool
    distance: float
    threshold: float
    model: str
    faces: list[VerifyFace]


class Status(BaseModel):
    workspace: str
    people: int
    photos: int
    crops: int
    current_model: str | None
    active_job: str | None
    max_file_bytes: int
    max_files: int
    max_request_bytes: int


class Options(BaseModel):
    modes: list[str]
    heads: dict[str, str]
    backbones: dict[str, str]
    strategies: list[str]
    augments: list[str]


# -- helpers -----------------------------------------------------------------------------------


def _upload_files(state: ServerState, files: list[UploadFile]) -> None:
    if not files:
        raise ops.OpError("no files in the upload (send them as multipart field 'files')", 400)
    if len(files) > state.limits.max_files:
        raise ops.OpError(f"at most {state.limits.max_files} files per request; send the rest in another", 413)


def _single_upload(state: ServerState, ws: Workspace, upload: UploadFile, pixels_used: int = 0) -> tuple[Path, int]:
    """A received upload that is a readable image, as a temporary file inside the workspace, and
    the pixels of this request so far (``pixels_used`` + this image's).

    The image's size is read from its header before it is decoded: a request over the pixel budget
    is refused (413) without allocating the pixels.
    """
    tmp = ops.receive_file(upload.file, ops.tmp_dir(ws), state.limits.max_file_bytes)
    try:
        pixels = pixels_used + ops.image_pixels(tmp)
        budget = state.limits.max_request_pixels
        if pixels > budget:
            raise ops.OpError(
                f"the image(s) of this request hold {pixels / 1e6:.3g} megapixels, over the server's limit of "
                f"{budget / 1e6:.3g} MP per request; send a smaller image (a webcam frame or a phone photo fits)",
                413,
            )
        ops.check_image(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, pixels


def run_dir_of(ws: Workspace, name: str) -> Path:
    """The run folder called ``name`` — found by listing ``WS/runs``, never by joining a path."""
    folder = ws.runs_dir
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name == name and entry.is_dir() and (entry / "summary.json").is_file():
                real = inside_workspace(ws.root, entry / "summary.json")
                if real is not None:
                    return real.parent
    raise ops.NotFound(f"no run called {name!r}")


def run_listing(ws: Workspace) -> list[dict[str, Any]]:
    """Every finished run of the workspace (newest first) with its comparison row."""
    from facelab.compare import run_row

    current = ws.setting("current_model")
    runs = []
    folder = ws.runs_dir
    if not folder.is_dir():
        return []
    for entry in folder.iterdir():
        if not entry.is_dir() or not (entry / "summary.json").is_file():
            continue
        try:
            row = run_row(entry)
            status = json.loads((entry / "summary.json").read_text()).get("status")
        except (OSError, ValueError):
            continue  # a run being written; it shows up on the next look
        runs.append(
            {
                "run": entry.name,
                "current": entry.name == current,
                "status": status,
                "files": sorted(f for f in RUN_FILES if (entry / f).is_file()),
                "row": row,
                "mtime": (entry / "summary.json").stat().st_mtime,
            }
        )
    runs.sort(key=lambda r: r["mtime"], reverse=True)
    for r in runs:
        del r["mtime"]
    return runs


def unfinished_runs(ws: Workspace) -> list[str]:
    """Run folders that the listing leaves out: no readable summary.json (a training still
    running, or killed before its first checkpoint). The Train page names them."""
    from facelab.compare import finished_runs

    folder = ws.runs_dir
    if not folder.is_dir():
        return []
    folders = sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    finished = set(finished_runs(folders)[0])
    return [entry.name for entry in folders if entry not in finished]


def crop_info(ws: Workspace, crop_id: int) -> dict[str, Any]:
    row = ws.conn.execute(
        "SELECT c.id, c.person, c.status, c.quality, f.role, f.role_source, f.distance, f.photo_id "
        "FROM crops c JOIN faces f ON f.id = c.face_id WHERE c.id = ?",
        (crop_id,),
    ).fetchone()
    if row is None:
        raise ops.NotFound(f"no crop with id {crop_id}")
    return {
        "id": row["id"],
        "person": row["person"],
        "status": row["status"],
        "role": row["role"],
        "role_source": row["role_source"],
        "quality": None if row["quality"] is None else round(row["quality"], 3),
        "distance": None if row["distance"] is None else round(row["distance"], 3),
        "photo_id": row["photo_id"],
    }


def photo_preview(ws: Workspace, photo_id: int, size: str) -> Path:
    """An upright JPEG of a photo (EXIF applied, HEIC decoded), cached in the workspace."""
    source = ops.photo_file(ws, photo_id)
    row = ops.photo_row(ws, photo_id)
    side = PREVIEW_SIDES[size]
    tag = (row["sha256"] or "nohash")[:16]
    return render_preview(source, ops.previews_dir(ws) / f"{photo_id}-{tag}-{side}.jpg", side)


def render_preview(source: Path, target: Path, side: int) -> Path:
    """``source`` decoded (EXIF applied, HEIC decoded), shrunk to ``side`` pixels on its long side
    and saved as the JPEG ``target``, unless that exists. The pages only ever get such a re-encoded
    copy of an original, never the original's own bytes (or its EXIF: GPS stays private)."""
    from facelab.imageio import ImageError, load_rgb, save_jpeg_atomic

    if not target.is_file():
        import cv2

        try:
            rgb = load_rgb(source)
        except ImageError as exc:
            raise ops.OpError(f"{exc.reason} — {exc.fix}", 409) from exc
        height, width = rgb.shape[:2]
        scale = side / max(height, width)
        if scale < 1:
            rgb = cv2.resize(
                rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
            )
        save_jpeg_atomic(rgb, target, quality=85)
    return target


# -- status ------------------------------------------------------------------------------------


@router.get("/status", response_model=Status, tags=["status"])
def status(state: State) -> dict[str, Any]:
    """Counts, the current model and the running job, if any."""
    with state.workspace() as ws:
        counts = ws.query("SELECT (SELECT COUNT(*) FROM photos) AS photos, (SELECT COUNT(*) FROM crops) AS crops")[0]
        people = len(ops.person_names(ws))
        current = ws.setting("current_model")
    job = state.jobs.active()
    return {
        "workspace": state.root.name,
        "people": people,
        "photos": counts["photos"],
        "crops": counts["crops"],
        "current_model": current,
        "active_job": job.id if job else None,
        "max_file_bytes": state.limits.max_file_bytes,
        "max_files": state.limits.max_files,
        "max_request_bytes": state.limits.max_request_bytes,
    }


@router.get("/options", response_model=Options, tags=["training"])
def options() -> dict[str, Any]:
    """The choices a training job accepts."""
    return training_options()


def training_options() -> dict[str, Any]:
    from facelab.backbones import registered
    from facelab.embed_track import registered_heads

    return {
        "modes": [m.value for m in TrainMode],
        "heads": {name: info.summary for name, info in registered_heads().items()},
        "backbones": {name: spec.description for name, spec in registered().items()},
        "strategies": [s.value for s in Strategy],
        "augments": [a.value for a in Augment],
    }


# -- people and photos -------------------------------------------------------------------------


@router.get("/people", response_model=list[Person], tags=["people"])
def list_people(state: State) -> list[dict[str, Any]]:
    """Everyone, with photo, face and review counts."""
    with state.workspace() as ws:
        return ops.people_summary(ws)


@router.post("/people", response_model=Person, status_code=201, tags=["people"])
def create_person(body: PersonIn, state: State) -> dict[str, Any]:
    """Create a person (an empty folder to upload photos into)."""
    with state.workspace() as ws:
        name = ops.create_person(ws, body.name)
        return ops.person_summary(ws, name)


@router.get("/people/{name}", response_model=PersonDetail, tags=["people"])
def get_person(name: str, state: State) -> dict[str, Any]:
    """A person's counts and photos (those with no face found first), and what deleting them would remove."""
    from facelab.server.people_ops import delete_preview

    with state.workspace() as ws:
        name = ops.require_person(ws, name)
        return {
            **ops.person_summary(ws, name),
            "photo_list": ops.person_photos(ws, name),
            "delete_preview": delete_preview(ws, name),
        }


_PEOPLE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such person."},
    409: {
        "description": "Refused: the name is taken, the same person, or the workspace is busy (training, a CLI build)."
    },
    422: {"description": "Not a usable name."},
}


@router.post("/people/{name}/rename", response_model=PeopleChangeOut, responses=_PEOPLE_ERRORS, tags=["people"])
def rename_person(name: str, body: RenameIn, state: State) -> dict[str, Any]:
    """Rename a person everywhere: photos, faces and review decisions, enrolled vectors, album faces.

    Later builds file the photos of the person's folder under the new name; the current model
    answers with the new name at once (``facelab.people.rename``)."""
    from facelab.server.people_ops import rename_person as rename

    with state.workspace() as ws, state.exclusive():
        return rename(ws, name, body.name)


@router.post("/people/{name}/merge", response_model=PeopleChangeOut, responses=_PEOPLE_ERRORS, tags=["people"])
def merge_person(name: str, body: MergeIn, state: State) -> dict[str, Any]:
    """Make two people one: everything of ``name`` becomes ``into``'s (``facelab.people.merge``)."""
    from facelab.server.people_ops import merge_person as merge

    with state.workspace() as ws, state.exclusive():
        return merge(ws, name, body.into)


@router.delete("/people/{name}", response_model=PeopleChangeOut, responses=_PEOPLE_ERRORS, tags=["people"])
def delete_person(name: str, state: State) -> dict[str, Any]:
    """Forget a person: their photos' rows, faces, crops, review decisions and enrolled vectors; their
    album faces become unknown; copies uploaded through the app are deleted. Original photo files
    are never touched, and later builds skip the person's folder until ``facelab people restore``.
    ``GET /api/people/{name}`` says beforehand what goes (``delete_preview``)."""
    from facelab.server.people_ops import delete_person as delete

    with state.workspace() as ws, state.exclusive():
        return delete(ws, name)


@router.post(
    "/people/{name}/photos",
    response_model=UploadReport,
    responses={
        400: {"description": "Every file was empty (the body is an upload report with `detail`)."},
        413: {"description": "Too many files or bytes, or every file was over the size limit."},
        415: {"description": "Every file was refused: not an image facelab can read."},
    },
    tags=["people"],
)
def upload_photos(
    name: str,
    state: State,
    files: Annotated[list[UploadFile], File(description="Image files (JPEG, PNG, WebP, HEIC, …).")],
) -> Any:
    """Upload photos of a person; faces are found at once.

    Each file is checked by its bytes (it must decode as an image within the size and pixel
    limits) and stored under a name made from its content; the same photo twice is a
    ``duplicate``. A file that is refused does not stop the others: the answer is 200 with a
    result per file, unless every file was refused (then the status of the first refusal).
    """
    _upload_files(state, files)
    with state.workspace() as ws:
        name = ops.require_person(ws, name)
        with state.exclusive():
            outcomes, paths = [], []
            for upload in files:
                outcome, path = ops.stage_upload(
                    upload.file, upload.filename or "", ws, name, state.limits.max_file_bytes
                )
                outcomes.append(outcome)
                paths.append(path)
            added = [p for p in paths if p is not None]
            ops.process_uploads(ws, added, state.detector)
            ops.describe_outcomes(ws, outcomes, paths)
        report = {
            "person": ops.person_summary(ws, name),
            "added": sum(o.status == "added" for o in outcomes),
            "duplicates": sum(o.status == "duplicate" for o in outcomes),
            "rejected": sum(o.status == "rejected" for o in outcomes),
            "results": [o.to_json() for o in outcomes],
        }
    if report["rejected"] == len(outcomes):
        first = outcomes[0]
        return JSONResponse({**report, "detail": f"no photo added: {first.reason}"}, status_code=first.code)
    return report


@router.get("/photos/{photo_id}", response_model=PhotoDetail, tags=["photos"])
def get_photo(photo_id: DbId, state: State) -> dict[str, Any]:
    """A photo and its faces (box, role, crop and review status)."""
    with state.workspace() as ws:
        return ops.photo_detail(ws, photo_id)


@router.get(
    "/photos/{photo_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["photos"],
)
def photo_image(
    photo_id: DbId, state: State, size: Annotated[Literal["thumb", "large"], Query()] = "large"
) -> FileResponse:
    """The photo upright as JPEG (thumb: 360 px, large: 1600 px on the long side). Only photos
    inside the workspace are served."""
    with state.workspace() as ws:
        path = photo_preview(ws, photo_id, size)
    return FileResponse(path, media_type="image/jpeg")


@router.delete("/photos/{photo_id}", status_code=204, tags=["photos"])
def delete_photo(photo_id: DbId, state: State) -> Response:
    """Delete a photo uploaded through the app (its faces and crops too)."""
    with state.workspace() as ws, state.exclusive():
        ops.delete_photo(ws, photo_id)
    return Response(status_code=204)


@router.post("/photos/{photo_id}/faces", response_model=FaceCreated, status_code=201, tags=["photos"])
def add_face(photo_id: DbId, box: BoxIn, state: State) -> dict[str, Any]:
    """Add a face the detector missed: a box in the upright photo's pixels. It is stored as the
    photo's person (decided by review) with an accepted crop."""
    with state.workspace() as ws, state.exclusive():
        return ops.add_manual_face(ws, photo_id, Box(box.x1, box.y1, box.x2, box.y2))


# -- crops and review --------------------------------------------------------------------------


@router.get("/crops", response_model=list[Crop], tags=["review"])
def list_crops(
    state: State,
    person: str | None = None,
    suspicious: Annotated[bool, Query(description="Only crops worth a look, most doubtful first.")] = False,
) -> list[dict[str, Any]]:
    """Crops in review order: per person, the most doubtful first."""
    from facelab.review import list_crops as review_list

    with state.workspace() as ws:
        if person is not None:
            person = ops.require_person(ws, person)
        if suspicious:
            photo_of = ops.crop_photo_ids(ws)
            views = review_list(ws, person=person, suspicious=True)
            return [{**ops.crop_json(v), "flagged": True, "photo_id": photo_of.get(v.id)} for v in views]
        return ops.review_order(ws, person)


@router.get(
    "/crops/{crop_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["review"],
)
def crop_image(crop_id: DbId, state: State) -> FileResponse:
    """The crop's JPEG."""
    with state.workspace() as ws:
        path = ops.crop_file(ws, crop_id)
    return FileResponse(path, media_type="image/jpeg")


def _set_status(state: ServerState, crop_id: int, status: CropStatus) -> dict[str, Any]:
    from facelab.review import set_status

    with state.workspace() as ws:
        crop_info(ws, crop_id)  # 404 before anything changes
        with state.writing():
            set_status(ws, [crop_id], status)
        return crop_info(ws, crop_id)


@router.post("/crops/{crop_id}/accept", response_model=Crop, tags=["review"])
def accept_crop(crop_id: DbId, state: State) -> dict[str, Any]:
    """This face is the person: it trains, and identity resolution never overrides the decision."""
    return _set_status(state, crop_id, CropStatus.ACCEPTED)


@router.post("/crops/{crop_id}/reject", response_model=Crop, tags=["review"])
def reject_crop(crop_id: DbId, state: State) -> dict[str, Any]:
    """Leave this face out of every data set."""
    return _set_status(state, crop_id, CropStatus.REJECTED)


@router.post("/crops/{crop_id}/move", response_model=Crop, tags=["review"])
def move_crop(crop_id: DbId, body: MoveIn, state: State) -> dict[str, Any]:
    """File the face under another (existing) person."""
    from facelab.review import move_crop as review_move

    with state.workspace() as ws:
        target = ops.require_person(ws, body.person)
        crop_info(ws, crop_id)
        with state.writing():
            review_move(ws, crop_id, target)
        return crop_info(ws, crop_id)


# -- training ----------------------------------------------------------------------------------


@router.post("/jobs", response_model=Job, status_code=202, tags=["training"])
def start_job(body: TrainRequest, state: State) -> dict[str, Any]:
    """Start training in the background; poll ``GET /api/jobs/{id}`` for progress."""
    choices = training_options()
    if body.mode is TrainMode.EMBEDDING and body.head not in choices["heads"]:
        raise ops.OpError(f"unknown head {body.head!r}; choose one of: {', '.join(choices['heads'])}", 422)
    if body.include_others and body.mode is TrainMode.EMBEDDING and body.head == "prototype":
        raise ops.OpError("include_others needs the knn or linear head: a prototype is one centre per person", 422)
    if body.include_others and body.mode is TrainMode.AUTO:
        raise ops.OpError("include_others applies to one embedding or transfer run, not to auto", 422)
    if body.mode is TrainMode.TRANSFER and body.backbone not in choices["backbones"]:
        raise ops.OpError(f"unknown backbone {body.backbone!r}; choose one of: {', '.join(choices['backbones'])}", 422)
    with state.workspace() as ws:
        if not ws.query("SELECT 1 FROM crops LIMIT 1"):
            raise ops.OpError("no faces yet: upload photos of a person first (two or more to tell them apart)", 409)
    params = TrainParams(
        mode=body.mode,
        budget_minutes=body.budget_minutes,
        head=body.head,
        backbone=body.backbone,
        strategy=body.strategy.value,
        augment=body.augment.value,
        epochs=body.epochs,
        include_others=body.include_others,
    )
    return state.jobs.start(params).to_json()


@router.get("/jobs", response_model=list[Job], tags=["training"])
def list_jobs(state: State) -> list[dict[str, Any]]:
    """Jobs since the server started, newest first."""
    return [job.to_json() for job in state.jobs.list()]


@router.get("/jobs/{job_id}", response_model=Job, tags=["training"])
def get_job(job_id: str, state: State) -> dict[str, Any]:
    """A job's state and progress: phase, step of total, epoch, accuracies, log, and its run when done."""
    return state.jobs.get(job_id).to_json()


@router.post("/jobs/{job_id}/cancel", response_model=Job, tags=["training"])
def cancel_job(job_id: str, state: State) -> dict[str, Any]:
    """Ask a running job to stop at its next progress report."""
    return state.jobs.cancel(job_id).to_json()


@router.get("/runs", response_model=list[Run], tags=["runs"])
def list_runs(state: State) -> list[dict[str, Any]]:
    """Trained runs, newest first, with their comparison rows."""
    with state.workspace() as ws:
        return run_listing(ws)


@router.get("/runs/{name}", response_model=RunDetail, tags=["runs"])
def get_run(name: str, state: State) -> dict[str, Any]:
    """One run: its comparison row, summary and test metrics."""
    with state.workspace() as ws:
        folder = run_dir_of(ws, name)
        listing = next(r for r in run_listing(ws) if r["run"] == folder.name)
    summary = json.loads((folder / "summary.json").read_text())
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {**listing, "summary": summary, "metrics": metrics}


@router.get("/runs/{name}/files/{filename}", response_class=FileResponse, tags=["runs"])
def run_file(name: str, filename: str, state: State) -> FileResponse:
    """A picture or report of a run: one of curves.png, confusion_matrix.png, errors.png, det.png,
    report.md, metrics.json, summary.json, openset.json, history.csv, config.yaml."""
    if filename not in RUN_FILES:
        raise ops.NotFound(f"{filename!r} is not a run file the app serves ({', '.join(sorted(RUN_FILES))})")
    with state.workspace() as ws:
        folder = run_dir_of(ws, name)
        path = inside_workspace(ws.root, folder / filename)
    if path is None:
        raise ops.NotFound(f"run {name} has no {filename}")
    return FileResponse(path, media_type=RUN_FILES[filename])


@router.put("/current-model", response_model=Run, tags=["runs"])
def set_current(body: CurrentIn, state: State) -> dict[str, Any]:
    """Make a run the model that recognizes (the Recognize page and ``/api/recognize``): the user's
    choice, as ``facelab use`` (:func:`facelab.workflow.deploy`; an embedding run is deployed refit
    on every labelled face, in ``RUN/deployed``)."""
    from facelab.workflow import deploy

    with state.workspace() as ws:
        folder = run_dir_of(ws, body.run)
        with state.writing():
            deploy(ws, folder, force=True)
        listing = next(r for r in run_listing(ws) if r["run"] == folder.name)
    state.models.clear()
    return listing


# -- recognition -------------------------------------------------------------------------------


@router.post("/recognize", response_model=Recognized, tags=["recognize"])
def recognize(
    state: State, file: Annotated[UploadFile, File(description="A photo or a webcam frame.")]
) -> dict[str, Any]:
    """Find the faces of an image and name them with the current model (``unknown`` for strangers).

    At most ``max_recognitions`` run at once (429 beyond) and an image may hold at most
    ``max_request_pixels`` (413 beyond): see :class:`facelab.server.state.Limits`."""
    with state.recognition_slot():
        with state.workspace() as ws:
            recognizer = state.models.recognizer(ws)
            tmp, _ = _single_upload(state, ws, file)
        try:
            return recognize_file(recognizer, tmp, state.faces)
        finally:
            tmp.unlink(missing_ok=True)


@router.post("/verify", response_model=Verified, tags=["recognize"])
def verify(
    state: State,
    first: Annotated[UploadFile, File(description="First image.")],
    second: Annotated[UploadFile, File(description="Second image.")],
) -> dict[str, Any]:
    """Are the largest faces of two images the same person? (dlib embeddings; same rule as facelab verify)"""
    temps: list[Path] = []
    with state.recognition_slot():
        try:
            pixels = 0
            with state.workspace() as ws:
                for upload in (first, second):
                    tmp, pixels = _single_upload(state, ws, upload, pixels)
                    temps.append(tmp)
                detector = state.detector or ws.setting("detector")
            return verify_files(temps[0], temps[1], detector=detector)
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)


# -- albums ------------------------------------------------------------------------------------


class AlbumFaceOut(BaseModel):
    box: list[int]
    name: str
    score: float | None


class AlbumPhotoOut(BaseModel):
    id: int | None = Field(description="Album photo id: its preview is GET /api/albums/photos/{id}/image.")
    path: str = Field(description="Where the photo lies in the indexed library.")
    taken: str
    people: list[str]
    faces: list[AlbumFaceOut]


Names = Annotated[list[str], Query(description="People to look for (repeat the parameter).")]
AnyOf = Annotated[bool, Query(alias="any", description="Any of the names instead of all of them.")]
Exclude = Annotated[list[str] | None, Query(description="People who must not be in the photo.")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="At most this many photos, newest first.")]


@router.get("/albums/names", response_model=list[str], tags=["albums"])
def album_names(state: State) -> list[str]:
    """Every name in the album index (``facelab album index`` builds it); empty without one."""
    from facelab.server import album_ops

    with state.workspace() as ws:
        return album_ops.names(ws)


@router.get("/albums/find", response_model=list[AlbumPhotoOut], tags=["albums"])
def album_find(state: State, name: Names, any_: AnyOf = False, exclude: Exclude = None, limit: Limit = 500) -> Any:
    """Indexed photos showing all (or any) of the names and none of ``exclude``, newest first."""
    from facelab.server import album_ops

    with state.workspace() as ws:
        photos, _ = album_ops.search(ws, name, any_=any_, exclude=exclude or (), limit=limit)
    return photos


@router.get(
    "/albums/photos/{album_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["albums"],
)
def album_image(
    album_id: DbId, state: State, size: Annotated[Literal["thumb", "large"], Query()] = "thumb"
) -> FileResponse:
    """An indexed photo upright as JPEG (thumb: 360 px, large: 1600 px on the long side); only photos
    inside an indexed library are shown."""
    from facelab.server import album_ops

    with state.workspace() as ws:
        path = album_ops.preview(ws, album_id, size)
    return FileResponse(path, media_type="image/jpeg")


@router.get(
    "/albums/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}, "text/csv": {}}}},
    tags=["albums"],
)
def album_export(
    state: State,
    name: Names,
    any_: AnyOf = False,
    exclude: Exclude = None,
    limit: Limit = 500,
    format: Annotated[
        Literal["zip", "csv"], Query(description="zip: the originals and album.csv; csv: the list.")
    ] = "zip",
) -> Response:
    """The answer of ``/api/albums/find`` to download: a ZIP of the original photos (numbered in
    order, with ``album.csv``) or the CSV list alone (path, taken, people)."""
    from starlette.background import BackgroundTask

    from facelab.server import album_ops

    with state.workspace() as ws:
        photos, _ = album_ops.search(ws, name, any_=any_, exclude=exclude or (), limit=limit)
        if not photos:
            raise ops.NotFound("no photo matches: nothing to export")
        if format == "csv":
            return Response(
                album_ops.export_csv(photos),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="album.csv"'},
            )
        archive = album_ops.export_zip(ws, photos)
    return FileResponse(
        archive,
        media_type="application/zip",
        filename="album.zip",
        background=BackgroundTask(archive.unlink, missing_ok=True),
    )
