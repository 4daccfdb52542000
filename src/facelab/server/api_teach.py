"""The API of the loop from answers back to training: the review queue and accepting many faces,
"This is …" on recognized faces, and the unknown threshold chosen on a run's results page.

Every write holds the workspace's write lock (409 while a CLI command or another write holds it),
like the other writes of :mod:`facelab.server.api`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from facelab.server import enroll_ops, review_ops, threshold_ops
from facelab.server import workspace_ops as ops
from facelab.server.api import Crop, State, crop_info, run_dir_of
from facelab.server.security import MAX_DB_ID
from facelab.server.state import ServerState

router = APIRouter(prefix="/api")

# Ids one "accept the rest" may carry: a page is review_ops.PAGE_SIZE faces; more is not a page.
MAX_IDS = 500


# -- review ------------------------------------------------------------------------------------


class ReviewCrop(Crop):
    doubt: str | None = Field(description="suspicious | ambiguous | low_quality for a pending face worth a look.")
    doubt_words: str | None = Field(description="Why the face is doubtful, in words.")
    trains: bool = Field(description="Whether the face counts as its person for training now.")


class ReviewPage(BaseModel):
    show: review_ops.Show
    person: str | None
    page: int
    pages: int
    page_size: int
    total: int = Field(description="Crops under this filter, on every page.")
    counts: dict[str, int] = Field(description="Crops under each filter.")
    states: str = Field(description="What pending, accepted and rejected mean for training.")
    items: list[ReviewCrop]


CropId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]


class AcceptIn(BaseModel):
    ids: list[CropId] = Field(min_length=1, max_length=MAX_IDS, description="The crops to accept (those shown).")
    confirm_bystanders: bool = Field(
        False, description="Accept crops identity resolution took for someone else (bystanders) too; else 409."
    )


class AcceptOut(BaseModel):
    accepted: int
    crops: list[Crop]
    message: str


@router.get("/review", response_model=ReviewPage, tags=["review"])
def review_queue(
    state: State,
    show: review_ops.Show = review_ops.Show.ALL,
    person: str | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> dict[str, Any]:
    """The review queue across everyone, most doubtful first (suspicious, ambiguous, low quality, then
    the other pending faces least like their person, then rejected and accepted), one page at a time."""
    with state.workspace() as ws:
        if person:
            person = ops.require_person(ws, person)
        return {**review_ops.queue(ws, show, person or None, page), "states": review_ops.STATES_EXPLAINED}


@router.post(
    "/crops/accept",
    response_model=AcceptOut,
    responses={
        404: {"description": "One of the crops does not exist (nothing changed)."},
        409: {"description": "A bystander without confirm_bystanders, or the workspace is busy."},
    },
    tags=["review"],
)
def accept_crops(body: AcceptIn, state: State) -> dict[str, Any]:
    """Accept many crops at once ("accept the rest of this page"): each is then its person's face and
    trains. All or nothing; the ids are the client's, explicitly — never "everything pending"."""
    with state.workspace() as ws:
        with state.writing():
            ids = review_ops.accept_many(ws, body.ids, body.confirm_bystanders)
        crops = [crop_info(ws, i) for i in ids]
    return {"accepted": len(ids), "crops": crops, "message": f"accepted {len(ids)} face(s)"}


# -- "This is …" -------------------------------------------------------------------------------


class EnrollIn(BaseModel):
    image: str = Field(pattern=r"^[0-9a-f]{64}$", description="The `image` of a POST /api/recognize answer.")
    face: int = Field(ge=0, le=10_000, description="The face's position in that answer's `faces`.")
    person: str = Field(min_length=1, max_length=200, description="Who the face is.")
    new: bool = Field(False, description="Create the person (a name not taken yet).")


class EnrollOut(BaseModel):
    person: str
    created: bool
    source: str = Field(description="The gallery entry's source: web:<sha256 of the image>#<face>.")
    gallery_faces: int = Field(description="Faces enrolled for the person now.")
    named: str = Field(description="What the current model answers for this face now.")
    message: str
    retrain: str = Field(description="Where to retrain (recalibrates unknown for the new gallery).")


@router.post(
    "/recognize/enroll",
    response_model=EnrollOut,
    status_code=201,
    responses={
        404: {"description": "The image's faces are no longer held, no such face, or no such person."},
        409: {"description": "The name is taken (new), the model is a CNN, or the workspace is busy."},
        422: {"description": "A bad image id, face index or name."},
    },
    tags=["recognize"],
)
def enroll(body: EnrollIn, state: State) -> dict[str, Any]:
    """ "This is …": enroll a face of a recent recognition as a person (new or known), without
    retraining — its embedding goes into the workspace gallery as ``facelab enroll`` puts a photo's,
    and the current model names that face from then on."""
    embedder, vector, box = enroll_ops.face_vector(state.faces, body.image, body.face)
    with state.workspace() as ws:
        known = _known_names(state, ws)
        with state.writing():
            person = enroll_ops.person_for(ws, body.person.strip(), body.new, known)
            source = enroll_ops.source_of(body.image, body.face)
            count = enroll_ops.enroll_face(ws, person, embedder, source, vector)
        # The cache keys on the gallery's count and last id, which a correction (one row replaced
        # by another that may reuse its id) can leave as they were: reload for certain.
        state.models.clear()
        recognizer = state.models.recognizer(ws)
    named = enroll_ops.answer_now(recognizer, vector, box)
    return {
        "person": person,
        "created": body.new,
        "source": source,
        "gallery_faces": count,
        "named": named,
        "message": enroll_ops.message(person, named, body.new),
        "retrain": "/train",
    }


def _known_names(state: ServerState, ws: Any) -> list[str]:
    """People the current model names (enrolled from the command line too), for "This is …"."""
    try:
        return list(state.models.recognizer(ws).classes)
    except ops.OpError:
        return []


# -- the unknown threshold ---------------------------------------------------------------------


class ThresholdCurve(BaseModel):
    run: str
    calibrated: float = Field(description="The threshold calibration chose.")
    chosen: float | None = Field(description="The threshold chosen for this run in the app (None: calibrated).")
    current: bool = Field(description="The run is the current model (a chosen threshold applies to recognition).")
    thresholds: list[float] = Field(description="Slider positions, ascending.")
    strangers_named: list[float] = Field(description="Share of strangers given a name (FPIR) at each position.")
    people_missed: list[float | None] = Field(
        description="Share of your people's validation faces missed or misnamed (FNIR) at each position."
    )
    n_validation_faces: int
    n_people: int
    evidence: list[dict[str, Any]] = Field(description="The stranger evidence behind strangers_named.")


class ThresholdIn(BaseModel):
    threshold: float | None = Field(
        allow_inf_nan=False, description="The threshold to use; null goes back to the calibrated one."
    )


class ThresholdOut(BaseModel):
    run: str
    threshold: float = Field(description="The threshold recognition uses for this run now.")
    chosen: bool
    message: str


_THRESHOLD_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such run."},
    409: {"description": "Not a face-embedding run with an unknown answer, or the workspace is busy."},
    422: {"description": "Not a number, or outside the run's range."},
}


def _curve(state: ServerState, name: str) -> dict[str, Any]:
    with state.workspace() as ws:
        folder = run_dir_of(ws, name)
        key = threshold_ops.state_key(ws, folder)
        curve = state.curves.get(key)
        if curve is None:
            curve = threshold_ops.compute_curve(ws, folder)
            state.curves.put(key, curve)
        return {
            **curve,
            "chosen": threshold_ops.saved_threshold(ws, folder.name),
            "current": ws.setting("current_model") == folder.name,
        }


@router.get("/runs/{name}/threshold", response_model=ThresholdCurve, responses=_THRESHOLD_ERRORS, tags=["runs"])
def threshold_curve(name: str, state: State) -> dict[str, Any]:
    """What each unknown threshold would do for this run: strangers given a name, and your people
    missed, computed from its calibration evidence and validation faces (cached); and the chosen one."""
    return _curve(state, name)


@router.put("/runs/{name}/threshold", response_model=ThresholdOut, responses=_THRESHOLD_ERRORS, tags=["runs"])
def set_threshold(name: str, body: ThresholdIn, state: State) -> dict[str, Any]:
    """Choose the unknown threshold for this run (saved in the workspace); the web app's recognition
    uses it while the run is the current model. ``null`` goes back to the calibrated threshold."""
    curve = _curve(state, name)
    value = None if body.threshold is None else threshold_ops.check_value(curve, body.threshold)
    with state.workspace() as ws, state.writing():
        threshold_ops.save_threshold(ws, curve["run"], value)
    used = curve["calibrated"] if value is None else value
    if value is None:
        message = f"back to the calibrated threshold {used:.3f}"
    else:
        message = f"unknown below {used:.3f}" + ("" if curve["current"] else " once this run is the current model")
    return {"run": curve["run"], "threshold": used, "chosen": value is not None, "message": message}
