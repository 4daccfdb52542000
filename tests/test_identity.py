"""Identity resolution on real photos: the folder's person is found in group shots, an intruder is flagged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facelab.build import build
from facelab.identity import resolve_identities
from facelab.review import list_crops, set_status
from facelab.store import Workspace
from facelab.types import CropStatus

# Checked by eye: Jerry Seinfeld walking on the left beside Julia Louis-Dreyfus, a passer-by behind her.
GROUP_PHOTO = "train__httpwwweonlinecomresizewwweonlinecomeolimagesEntireSitersxjerryseinfeldjulialouisdreyfusjwjpg.jpg"
# Checked by eye: Jerry on stage, a small face of someone in the audience at the lower right.
STAGE_PHOTO = "train__httpsuploadwikimediaorgwikipediacommonsthumbbJerrySeinfeldjpgpxJerrySeinfeldjpg.jpg"
INTRUDER = "madonna"


@pytest.fixture(scope="module")
def jerry_ws(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("identity")
    photos = root / "photos" / "jerry_seinfeld"
    photos.mkdir(parents=True)
    for photo in sorted((shared_data / "celeb5" / "jerry_seinfeld").iterdir()):
        shutil.copy2(photo, photos / photo.name)
    # One photo of somebody else filed in Jerry's folder by mistake.
    wrong = sorted((shared_data / "celeb5" / INTRUDER).iterdir())[0]
    shutil.copy2(wrong, photos / "wrong_person.jpg")
    with Workspace(root / "ws") as ws:
        build(root / "photos", ws)
        resolve_identities(ws)
    return root


def _faces_of(ws: Workspace, name: str) -> list:
    return ws.query(
        "SELECT f.id, f.x1, f.role, f.distance, f.margin FROM faces f JOIN photos p ON p.id = f.photo_id "
        "WHERE p.path LIKE ? ORDER BY f.x1",
        (f"%{name}",),
    )


def test_group_photo_picks_the_folders_person(jerry_ws: Path) -> None:
    with Workspace(jerry_ws / "ws") as ws:
        group = _faces_of(ws, GROUP_PHOTO)
        assert len(group) == 3
        assert [f["role"] for f in group] == ["person", "bystander", "bystander"]
        assert group[0]["margin"] > 0.08
        stage = _faces_of(ws, STAGE_PHOTO)
        assert [f["role"] for f in stage] == ["person", "bystander"]


def test_photo_of_someone_else_is_suspicious(jerry_ws: Path) -> None:
    with Workspace(jerry_ws / "ws") as ws:
        wrong = _faces_of(ws, "wrong_person.jpg")
        assert len(wrong) == 1
        assert wrong[0]["role"] == "suspicious"
        assert wrong[0]["distance"] > 0.6
        # Most of Jerry's single-face photos are Jerry.
        roles = [r["role"] for r in ws.query("SELECT role FROM faces")]
        assert roles.count("person") >= 24
        # Review lists the doubtful face first.
        first = list_crops(ws, suspicious=True)[0]
        assert first.photo.name == "wrong_person.jpg"


def test_review_decision_beats_resolution_and_survives_rebuild(jerry_ws: Path) -> None:
    with Workspace(jerry_ws / "ws") as ws:
        bystander = _faces_of(ws, GROUP_PHOTO)[1]
        crop_id = ws.query("SELECT id FROM crops WHERE face_id = ?", (bystander["id"],))[0]["id"]
        set_status(ws, [crop_id], CropStatus.ACCEPTED)
        resolve_identities(ws)
        assert _faces_of(ws, GROUP_PHOTO)[1]["role"] == "person"
        # Re-detect every photo (another margin forces it): the decision is carried to the new face.
        build(jerry_ws / "photos", ws, margin=1.5)
        resolve_identities(ws)
        again = _faces_of(ws, GROUP_PHOTO)
        assert again[1]["role"] == "person"
        status = ws.query("SELECT status FROM crops WHERE face_id = ?", (again[1]["id"],))[0]["status"]
        assert status == "accepted"


def test_bystanders_who_are_strangers_serve_as_negatives(jerry_ws: Path) -> None:
    from facelab.identity import stranger_bystanders

    with Workspace(jerry_ws / "ws") as ws:
        usable = stranger_bystanders(ws)
        group = _faces_of(ws, GROUP_PHOTO)
        # Julia Louis-Dreyfus and the passer-by are nobody in this data set; Jerry is somebody.
        assert group[2]["id"] in usable
        # An earlier test accepted face 1 as Jerry in review: then it is nobody's negative any more.
        assert (group[1]["id"] in usable) == (group[1]["role"] == "bystander")
        assert group[0]["id"] not in usable
        person_faces = {r["id"] for r in ws.query("SELECT id FROM faces WHERE role = 'person'")}
        assert not (usable & person_faces)
