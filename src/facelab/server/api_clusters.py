"""The API of "Unnamed faces": the groups of the album's faces nobody is named in, grouping them
again, naming a group, and the face thumbnails the page shows (:mod:`facelab.server.cluster_ops`).

Grouping and naming hold the workspace's write lock and never wait for it: 409 while a CLI
command, a training job or another change of this server holds it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from facelab.server import cluster_ops
from facelab.server.api import DbId, State

router = APIRouter(prefix="/api", tags=["albums"])


class ClusterFaceOut(BaseModel):
    face_id: int
    photo_id: int = Field(description="Album photo id: GET /api/albums/photos/{id}/image shows the whole photo.")
    box: list[int] = Field(description="x1, y1, x2, y2 in the upright photo's pixels.")
    probability: float | None = Field(description="How firmly the face belongs to the group, 0..1.")
    image: str = Field(description="The face thumbnail (GET).")


class ClusterOut(BaseModel):
    id: int = Field(description="The group's number: 1 was the largest when the faces were grouped.")
    size: int = Field(description="Faces in the group.")
    photos: int
    named: str | None = Field(description="The name the group was given, null until then.")
    find_url: str | None = Field(description="The Albums page searching for that name.")
    faces: list[ClusterFaceOut] = Field(description=f"The firmest {cluster_ops.FACES_SHOWN} faces of the group.")


class ClustersOut(BaseModel):
    ready: bool = Field(description="Whether the workspace has an album index (else run index_command).")
    index_command: str
    grouped_at: str | None = Field(description="When the stored groups were made; null: never.")
    min_cluster_size: int | None
    unnamed_faces: int = Field(description="Faces of the album nobody is named in.")
    clusters: list[ClusterOut] = Field(description="Unnamed groups largest first, then the named ones.")


class RegroupIn(BaseModel):
    min_cluster_size: int | None = Field(
        None, ge=2, le=1000, description="The fewest faces that make a group (default 3)."
    )


class RegroupOut(BaseModel):
    groups: int
    faces: int = Field(description="Unnamed faces with a face vector that were grouped.")
    grouped: int
    noise: int = Field(description="Faces in no group.")
    without_vector: int
    min_cluster_size: int
    message: str


class NameIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="An existing person or a new name.")


class NameOut(BaseModel):
    cluster: int
    name: str = Field(description="The name stored (an existing person's spelling when only case differs).")
    faces: int
    photos: int
    enrolled: int = Field(description="Face vectors added to the gallery (one per photo).")
    existing: bool = Field(description="The name was already a person of the workspace.")
    renamed_from: str | None
    album_photos: int = Field(description="Photos the album search for the name finds now.")
    find_url: str
    message: str


@router.get("/albums/clusters", response_model=ClustersOut)
def list_clusters(state: State) -> dict[str, Any]:
    """The stored groups of the album's unnamed faces (``facelab album cluster`` or the POST below
    makes them)."""
    with state.workspace() as ws:
        return cluster_ops.listing(ws)


@router.post(
    "/albums/clusters",
    response_model=RegroupOut,
    responses={409: {"description": "No album index, or the workspace is busy."}, 422: {"description": "Bad size."}},
)
def regroup(state: State, body: Annotated[RegroupIn | None, Body()] = None) -> dict[str, Any]:
    """Group the unnamed faces again (``facelab album cluster``), replacing the stored groups."""
    with state.workspace() as ws, state.exclusive(timeout=0):
        return cluster_ops.regroup(ws, body.min_cluster_size if body else None)


@router.post(
    "/albums/clusters/{cluster_id}/name",
    response_model=NameOut,
    responses={
        404: {"description": "No such group."},
        409: {"description": "No album index, or the workspace is busy."},
        422: {"description": "A bad group id or name."},
    },
)
def name_cluster(cluster_id: DbId, body: NameIn, state: State) -> dict[str, Any]:
    """Name a group (``facelab album name``): its faces are enrolled as the person without
    retraining, and the album search for the name finds their photos at once."""
    with state.workspace() as ws, state.exclusive(timeout=0):
        answer = cluster_ops.name_group(ws, cluster_id, body.name)
    state.models.clear()  # the gallery changed: the current model knows the person now
    return answer


@router.get(
    "/albums/faces/{face_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def face_image(face_id: DbId, state: State) -> FileResponse:
    """An album face as a small upright JPEG, cut from its photo (only photos inside an indexed
    library are shown)."""
    with state.workspace() as ws:
        path = cluster_ops.face_thumbnail(ws, face_id)
    return FileResponse(path, media_type="image/jpeg")
