"""The web app's JSON API and pages through FastAPI's TestClient, on real photos (celeb5).

One workspace is filled per module through the API itself (two people, five photos each) and
trained once with the embedding track (seconds); security tests use small throwaway apps.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install fastapi)")
pytest.importorskip("python_multipart", reason="python-multipart is not installed")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")

from fastapi.testclient import TestClient

from facelab.server.app import create_app
from facelab.server.jobs import JobManager, JobState
from facelab.server.security import InsecureBind, check_bind, validate_person_name
from facelab.server.state import Limits
from facelab.store import Workspace

PEOPLE = ("ben_afflek", "madonna")
N_PHOTOS = 5
BASE = "http://127.0.0.1"
TOKEN = "test-token-0123456789abcdef"


def _photos(shared: Path, person: str) -> list[Path]:
    return sorted((shared / "celeb5" / person).glob("*.jpg"))


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _sky_png() -> bytes:
    """A smooth gradient: an image with no face in it."""
    sky = np.linspace(110, 230, 240 * 320 * 3).reshape(240, 320, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(sky).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Served:
    client: TestClient
    root: Path
    uploads: dict[str, dict]
    held_out: dict[str, Path]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Served]:
    """A workspace filled through the API: two people, five photos each (the sixth held out)."""
    root = tmp_path_factory.mktemp("served") / "ws"
    client = TestClient(create_app(root, None), base_url=BASE)
    uploads, held_out = {}, {}
    for person in PEOPLE:
        assert client.post("/api/people", json={"name": person}).status_code == 201
        photos = _photos(shared_data, person)
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:N_PHOTOS]]
        response = client.post(f"/api/people/{person}/photos", files=files)
        assert response.status_code == 200, response.text
        uploads[person] = response.json()
        held_out[person] = photos[-1]
    with client:
        yield Served(client, root, uploads, held_out)


@pytest.fixture(scope="module")
def trained(served: Served) -> dict:
    """The embedding track trained through a job; returns the finished job."""
    job = served.client.post("/api/jobs", json={"mode": "embedding", "head": "prototype"})
    assert job.status_code == 202, job.text
    return _wait(served.client, job.json()["id"])


def _wait(client: TestClient, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def _fresh(tmp_path: Path, token: str | None = None, **kwargs: object) -> TestClient:
    return TestClient(create_app(tmp_path / "ws", token, **kwargs), base_url=BASE)


def _one_drawn_face(tmp_path: Path) -> TestClient:
    """A fresh app whose workspace holds one person with one face drawn by hand: enough to train."""
    client = _fresh(tmp_path)
    client.post("/api/people", json={"name": "ada"})
    client.post("/api/people/ada/photos", files=[("files", ("sky.png", _sky_png(), "image/png"))])
    photo_id = client.get("/api/people/ada").json()["photo_list"][0]["id"]
    client.post(f"/api/photos/{photo_id}/faces", json={"x1": 100, "y1": 60, "x2": 180, "y2": 160})
    return client


# -- people and uploads ------------------------------------------------------------------------


def test_uploads_find_faces_and_store_under_server_names(served: Served) -> None:
    for person in PEOPLE:
        report = served.uploads[person]
        assert report["added"] == N_PHOTOS and report["rejected"] == 0
        assert all(r["status"] == "added" and r["photo_id"] for r in report["results"])
        assert sum(r["faces"] for r in report["results"]) >= N_PHOTOS - 1
        stored = sorted(p.name for p in (served.root / "uploads" / person).iterdir())
        assert len(stored) == N_PHOTOS
        # Names come from the content hash, never from the browser.
        assert all(len(Path(n).stem) == 24 and Path(n).suffix == ".jpg" for n in stored)
    people = {p["name"]: p for p in served.client.get("/api/people").json()}
    assert set(people) == set(PEOPLE)
    assert people["madonna"]["photos"] == N_PHOTOS and people["madonna"]["faces_usable"] >= N_PHOTOS - 1
    assert not list((served.root / ".facelab" / "tmp").iterdir())
    assert (served.root / "reports" / "faces.csv").is_file()


def test_person_detail_status_and_duplicate_upload(served: Served, shared_data: Path) -> None:
    detail = served.client.get("/api/people/madonna").json()
    assert detail["name"] == "madonna" and len(detail["photo_list"]) == N_PHOTOS
    assert all(p["viewable"] and p["uploaded"] for p in detail["photo_list"])
    first = _photos(shared_data, "madonna")[0]
    again = served.client.post(
        "/api/people/madonna/photos", files=[("files", ("copy.jpg", first.read_bytes(), "image/jpeg"))]
    )
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "duplicate"
    status = served.client.get("/api/status").json()
    assert status["people"] == 2 and status["photos"] == 2 * N_PHOTOS
    assert served.client.get("/api/people/nobody").status_code == 404


@pytest.mark.parametrize(
    "name", ["", "   ", "../x", "..", ".hidden", "a/b", "a\\b", "/etc", "x" * 65, "name.", "tab\tname", "%2e%2e"]
)
def test_bad_person_names_are_refused(served: Served, name: str) -> None:
    response = served.client.post("/api/people", json={"name": name})
    assert response.status_code == 422, response.text
    assert sorted(p.name for p in (served.root / "uploads").iterdir()) == sorted(PEOPLE)


def test_person_name_rules() -> None:
    assert validate_person_name("  Ada Lovelace ") == "Ada Lovelace"
    assert validate_person_name("José_M-1.2") == "José_M-1.2"
    for bad in ("..", ".x", "a/b", "a\\b", "x.", "", "a\nb"):
        with pytest.raises(ValueError):
            validate_person_name(bad)


def test_duplicate_person_conflicts(served: Served) -> None:
    assert served.client.post("/api/people", json={"name": "madonna"}).status_code == 409
    assert served.client.post("/api/people", json={"name": "MADONNA"}).status_code == 409


def test_bad_uploads_are_refused_and_leave_nothing_behind(tmp_path: Path, shared_data: Path) -> None:
    client = _fresh(tmp_path, limits=Limits(max_file_bytes=200_000, max_files=3, max_request_bytes=2_000_000))
    root = tmp_path / "ws"
    assert client.post("/api/people", json={"name": "ada"}).status_code == 201

    def upload(*files: tuple[str, bytes]) -> object:
        return client.post("/api/people/ada/photos", files=[("files", (n, b, "image/jpeg")) for n, b in files])

    not_image = upload(("photo.jpg", b"GIF89a? no, just text pretending to be a photo"))
    assert not_image.status_code == 415 and not_image.json()["results"][0]["status"] == "rejected"
    assert "not an image" in not_image.json()["detail"]
    empty = upload(("empty.jpg", b""))
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    big = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    too_big = upload(("big.jpg", _jpeg(big)))
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
    truncated = _photos(shared_data, "madonna")[0].read_bytes()[:3000]
    assert upload(("cut.jpg", truncated)).status_code == 415
    too_many = upload(*[(f"{i}.png", _sky_png()) for i in range(4)])
    assert too_many.status_code == 413
    # Whole-body limit: refused before the body is read (Content-Length) ...
    over = client.post(
        "/api/people/ada/photos", content=b"x" * 2_100_000, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert over.status_code == 413
    # ... and while reading a chunked body that has no Content-Length.
    chunks = (b"x" * 100_000 for _ in range(30))
    chunked = client.post(
        "/api/people/ada/photos", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert chunked.status_code == 413
    assert client.post("/api/people/ada/photos").status_code == 422  # no files at all
    # A mixed upload: the good file is added, the bad one reported, and the answer is 200.
    mixed = upload(("sky.txt", _sky_png()), ("bad.jpg", b"nope"))
    assert mixed.status_code == 200
    results = mixed.json()["results"]
    assert [r["status"] for r in results] == ["added", "rejected"]
    assert results[0]["photo_status"] == "no_face"  # judged by its bytes, not its ".txt" name
    assert len(list((root / "uploads" / "ada").iterdir())) == 1
    assert not [p for p in (root / ".facelab" / "tmp").iterdir()]
    with Workspace(root, create=False) as ws:
        assert ws.query("SELECT COUNT(*) AS n FROM photos")[0]["n"] == 1
    assert (
        client.post("/api/people/nobody/photos", files=[("files", ("a.png", _sky_png(), "image/png"))]).status_code
        == 404
    )


def test_client_file_names_are_never_paths(tmp_path: Path) -> None:
    client = _fresh(tmp_path)
    client.post("/api/people", json={"name": "ada"})
    response = client.post(
        "/api/people/ada/photos", files=[("files", ("../../../../escape.png", _sky_png(), "image/png"))]
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["filename"] == "escape.png"
    assert not list(tmp_path.rglob("escape*"))


# -- photos and manual faces -------------------------------------------------------------------


def test_photo_detail_image_and_missed_face(tmp_path: Path) -> None:
    client = _fresh(tmp_path)
    client.post("/api/people", json={"name": "ada"})
    report = client.post("/api/people/ada/photos", files=[("files", ("sky.png", _sky_png(), "image/png"))]).json()
    photo_id = report["results"][0]["photo_id"]
    detail = client.get(f"/api/photos/{photo_id}").json()
    assert detail["status"] == "no_face" and detail["faces_list"] == [] and detail["width"] == 320
    image = client.get(f"/api/photos/{photo_id}/image?size=thumb")
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
    assert client.get(f"/api/photos/{photo_id}/image?size=huge").status_code == 422
    # Boxes off the photo or too small are refused.
    assert (
        client.post(f"/api/photos/{photo_id}/faces", json={"x1": 400, "y1": 10, "x2": 500, "y2": 90}).status_code == 422
    )
    assert (
        client.post(f"/api/photos/{photo_id}/faces", json={"x1": 10, "y1": 10, "x2": 14, "y2": 90}).status_code == 422
    )
    assert client.post(f"/api/photos/{photo_id}/faces", json={"x1": -5, "y1": 0, "x2": 10, "y2": 10}).status_code == 422
    added = client.post(f"/api/photos/{photo_id}/faces", json={"x1": 100, "y1": 60, "x2": 180, "y2": 160})
    assert added.status_code == 201, added.text
    crop_id = added.json()["crop_id"]
    detail = client.get(f"/api/photos/{photo_id}").json()
    assert detail["status"] == "ok"
    (face,) = detail["faces_list"]
    assert face["role"] == "person" and face["role_source"] == "review" and face["crop_status"] == "accepted"
    assert face["detector"] == "manual" and face["box"] == [100, 60, 180, 160]
    crop = client.get(f"/api/crops/{crop_id}/image")
    assert crop.status_code == 200 and Image.open(io.BytesIO(crop.content)).size == (256, 256)
    assert client.get("/api/people/ada").json()["faces_usable"] == 1
    # Delete the uploaded photo: rows, crop and file go.
    assert client.delete(f"/api/photos/{photo_id}").status_code == 204
    assert client.get(f"/api/photos/{photo_id}").status_code == 404
    assert client.get(f"/api/crops/{crop_id}/image").status_code == 404
    assert not list((tmp_path / "ws" / "uploads" / "ada").iterdir())
    assert not list((tmp_path / "ws" / "crops").rglob("*.jpg"))
    assert not list((tmp_path / "ws" / ".facelab" / "cache" / "previews").glob(f"{photo_id}-*"))
    assert client.post("/api/photos/999/faces", json={"x1": 1, "y1": 1, "x2": 50, "y2": 50}).status_code == 404


def test_originals_outside_the_workspace_are_never_served_or_deleted(tmp_path: Path) -> None:
    outside = tmp_path / "mine.png"
    outside.write_bytes(_sky_png())
    client = _fresh(tmp_path)
    with Workspace(tmp_path / "ws", create=False) as ws, ws.transaction() as conn:
        conn.execute(
            "INSERT INTO photos(path, person, status, width, height) VALUES (?, 'ada', 'no_face', 320, 240)",
            (str(outside),),
        )
    (photo,) = client.get("/api/people/ada").json()["photo_list"]
    assert not photo["viewable"] and not photo["uploaded"]
    assert client.get(f"/api/photos/{photo['id']}/image").status_code == 404
    assert client.delete(f"/api/photos/{photo['id']}").status_code == 403
    assert outside.exists()


# -- review ------------------------------------------------------------------------------------


def test_review_list_accept_reject_move(served: Served) -> None:
    client = served.client
    crops = client.get("/api/crops").json()
    assert len(crops) >= 2 * N_PHOTOS - 2
    assert [c["person"] for c in crops] == sorted((c["person"] for c in crops), key=str.casefold)
    flagged = client.get("/api/crops?suspicious=true").json()
    assert all(c["flagged"] for c in flagged)
    ben = [c for c in crops if c["person"] == "ben_afflek"]
    target = ben[0]["id"]
    image = client.get(f"/api/crops/{target}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    rejected = client.post(f"/api/crops/{target}/reject").json()
    assert rejected["status"] == "rejected"
    accepted = client.post(f"/api/crops/{target}/accept").json()
    assert accepted["status"] == "accepted" and accepted["role"] == "person" and accepted["role_source"] == "review"
    moved = client.post(f"/api/crops/{target}/move", json={"person": "madonna"})
    assert moved.status_code == 200 and moved.json()["person"] == "madonna"
    assert client.get(f"/api/crops/{target}/image").status_code == 200  # the file moved with it
    back = client.post(f"/api/crops/{target}/move", json={"person": "ben_afflek"}).json()
    assert back["person"] == "ben_afflek"
    assert client.post(f"/api/crops/{target}/move", json={"person": "nobody"}).status_code == 404
    assert client.post(f"/api/crops/{target}/move", json={"person": "../x"}).status_code == 422
    assert client.post("/api/crops/999999/accept").status_code == 404
    assert client.post("/api/crops/999999/move", json={"person": "madonna"}).status_code == 404
    assert client.get("/api/crops?person=ben_afflek").json()[0]["person"] == "ben_afflek"
    assert client.get("/api/crops?person=..").status_code == 422


# -- training, runs and recognition ------------------------------------------------------------


def test_training_job_makes_the_current_model(served: Served, trained: dict) -> None:
    assert trained["state"] == "done", "\n".join(trained["log"])
    assert trained["run"] and trained["result"]["metrics"]["split"] == "test"
    client = served.client
    runs = client.get("/api/runs").json()
    current = [r for r in runs if r["current"]]
    assert [r["run"] for r in current] == [trained["run"]]
    detail = client.get(f"/api/runs/{trained['run']}").json()
    assert detail["summary"]["track"] == "embedding" and "accuracy" in detail["metrics"]
    assert "summary.json" in detail["files"]
    summary = client.get(f"/api/runs/{trained['run']}/files/summary.json")
    assert summary.status_code == 200 and json.loads(summary.content)["track"] == "embedding"
    assert client.get(f"/api/runs/{trained['run']}/files/head.npz").status_code == 404  # weights: never
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/status").json()["current_model"] == trained["run"]
    jobs = client.get("/api/jobs").json()
    assert jobs[0]["id"] == trained["id"]
    assert client.post(f"/api/jobs/{trained['id']}/cancel").json()["state"] == "done"
    assert client.get("/api/jobs/unknown").status_code == 404
    assert client.put("/api/current-model", json={"run": trained["run"]}).json()["current"]
    assert client.put("/api/current-model", json={"run": "../runs"}).status_code == 404


def test_bad_training_requests(served: Served) -> None:
    client = served.client
    assert client.post("/api/jobs", json={"mode": "sideways"}).status_code == 422
    assert client.post("/api/jobs", json={"mode": "embedding", "head": "nope"}).status_code == 422
    assert client.post("/api/jobs", json={"mode": "transfer", "backbone": "nope"}).status_code == 422
    assert client.post("/api/jobs", json={"mode": "auto", "budget_minutes": 0}).status_code == 422
    refused = client.post("/api/jobs", json={"mode": "embedding", "head": "prototype", "include_others": True})
    assert refused.status_code == 422 and "knn or linear" in refused.text
    assert client.post("/api/jobs", json={"mode": "auto", "include_others": True}).status_code == 422
    options = client.get("/api/options").json()
    assert "prototype" in options["heads"] and "mobilenet_v2" in options["backbones"]


def test_recognize_an_uploaded_photo(served: Served, trained: dict) -> None:
    for person in PEOPLE:
        photo = served.held_out[person]
        response = served.client.post("/api/recognize", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["model"] == trained["run"] and result["width"] > 0
        assert person in [f["name"] for f in result["faces"]]
    sky = served.client.post("/api/recognize", files={"file": ("sky.png", _sky_png(), "image/png")})
    assert sky.status_code == 200 and sky.json()["faces"] == []
    assert (
        served.client.post("/api/recognize", files={"file": ("x.jpg", b"not an image", "image/jpeg")}).status_code
        == 415
    )
    assert served.client.post("/api/recognize", files={"file": ("x.jpg", b"", "image/jpeg")}).status_code == 400


def test_recognize_without_a_model_says_so(tmp_path: Path) -> None:
    response = _fresh(tmp_path).post("/api/recognize", files={"file": ("sky.png", _sky_png(), "image/png")})
    assert response.status_code == 404 and "no model yet" in response.json()["detail"]


def test_verify_two_images(served: Served, shared_data: Path) -> None:
    ben = _photos(shared_data, "ben_afflek")
    madonna = _photos(shared_data, "madonna")

    def verify(a: Path, b: Path) -> dict:
        files = {"first": (a.name, a.read_bytes(), "image/jpeg"), "second": (b.name, b.read_bytes(), "image/jpeg")}
        response = served.client.post("/api/verify", files=files)
        assert response.status_code == 200, response.text
        return response.json()

    assert verify(ben[0], ben[1])["same"]
    different = verify(ben[0], madonna[0])
    assert not different["same"] and different["distance"] > different["threshold"]
    no_face = served.client.post(
        "/api/verify",
        files={"first": ("a.png", _sky_png(), "image/png"), "second": (ben[0].name, ben[0].read_bytes(), "image/jpeg")},
    )
    assert no_face.status_code == 422 and "no face" in no_face.json()["detail"]


def test_album_find(served: Served, trained: dict, tmp_path: Path) -> None:
    from facelab.album_index import index_library
    from facelab.recognize import Recognizer
    from facelab.runs import load_model

    client = served.client
    assert client.get("/api/albums/names").json() == []
    library = tmp_path / "library"
    library.mkdir()
    for person in PEOPLE:
        (library / f"{person}.jpg").write_bytes(served.held_out[person].read_bytes())
    with Workspace(served.root, create=False) as ws:
        index_library(ws, library, Recognizer(load_model(served.root / "runs" / trained["run"])))
    assert set(PEOPLE) <= set(client.get("/api/albums/names").json())
    found = client.get("/api/albums/find", params={"name": "madonna"}).json()
    assert [Path(p["path"]).name for p in found] == ["madonna.jpg"] and "madonna" in found[0]["people"]
    either = client.get("/api/albums/find", params=[("name", "madonna"), ("name", "ben_afflek"), ("any", "true")])
    assert len(either.json()) == 2
    both = client.get("/api/albums/find", params=[("name", "madonna"), ("name", "ben_afflek")])
    assert both.json() == []
    excluded = client.get("/api/albums/find", params={"name": "madonna", "exclude": "madonna"})
    assert excluded.json() == []
    assert client.get("/api/albums/find").status_code == 422
    assert client.get("/api/albums/find", params={"name": " "}).status_code == 422


def test_one_job_at_a_time_and_no_uploads_while_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_train(self: JobManager, job: object, ws: object) -> None:
        started.set()
        while not release.wait(0.05):
            job.check_cancel()  # type: ignore[attr-defined]

    monkeypatch.setattr(JobManager, "_train", slow_train)
    client = _one_drawn_face(tmp_path)
    job = client.post("/api/jobs", json={"mode": "embedding"}).json()
    assert started.wait(10)
    assert client.get(f"/api/jobs/{job['id']}").json()["state"] == "running"
    assert client.post("/api/jobs", json={"mode": "embedding"}).status_code == 409
    busy = client.post("/api/people/ada/photos", files=[("files", ("a.png", _sky_png(), "image/png"))])
    assert busy.status_code == 409 and "training" in busy.json()["detail"]
    assert client.get("/api/status").json()["active_job"] == job["id"]
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel").json()
    assert cancelled["cancel_requested"]
    finished = _wait(client, job["id"], timeout=20)
    assert finished["state"] == JobState.CANCELLED.value
    with Workspace(tmp_path / "ws", create=False) as ws:
        assert ws.setting("current_model") is None
    # The lock is free again: uploads work.
    again = client.post("/api/people/ada/photos", files=[("files", ("b.png", _sky_png()[:-1] + b"\x82", "image/png"))])
    assert again.status_code in (200, 415)


def test_a_failing_job_reports_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: JobManager, job: object, ws: object) -> None:
        raise RuntimeError("no weights for this backbone")

    monkeypatch.setattr(JobManager, "_train", broken)
    client = _one_drawn_face(tmp_path)
    job = _wait(client, client.post("/api/jobs", json={"mode": "auto"}).json()["id"])
    assert job["state"] == "failed" and "no weights" in job["error"]
    assert client.get("/api/status").json()["current_model"] is None
    assert (
        client.post("/api/people/ada/photos", files=[("files", ("s.png", _sky_png(), "image/png"))]).status_code == 200
    )


@pytest.mark.parametrize(
    ("request_body", "where"),
    [
        ({"mode": "embedding", "head": "knn", "include_others": True}, "facelab.embed_track.train_embedding_run"),
        ({"mode": "transfer", "include_others": True}, "facelab.transfer.train_workspace"),
    ],
)
def test_include_others_reaches_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_body: dict, where: str
) -> None:
    seen: list[object] = []

    def trainer(ws: object, *args: object, **kwargs: object) -> None:
        config = args[0] if args else None  # transfer: train_workspace(ws, config, ...)
        seen.append(kwargs.get("include_others", getattr(config, "include_others", None)))
        raise RuntimeError("stop here")

    module, name = where.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, trainer)
    client = _one_drawn_face(tmp_path)
    started = client.post("/api/jobs", json=request_body)
    assert started.status_code == 202 and started.json()["params"]["include_others"] is True
    job = _wait(client, started.json()["id"])
    assert job["state"] == "failed" and "stop here" in job["error"]
    assert seen == [True]


def test_web_auto_job_calibrates_with_the_remembered_strangers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facelab.auto

    seen: list[object] = []

    def auto_select(ws: object, **kwargs: object) -> None:
        seen.append(kwargs.get("strangers"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(facelab.auto, "auto_select", auto_select)
    client = _one_drawn_face(tmp_path)
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    with Workspace(tmp_path / "ws", create=False) as ws:
        facelab.auto.strangers_folder(ws, strangers)
    job = _wait(client, client.post("/api/jobs", json={"mode": "auto"}).json()["id"])
    assert job["state"] == "failed" and seen == [strangers.resolve()]


def test_training_needs_faces(tmp_path: Path) -> None:
    response = _fresh(tmp_path).post("/api/jobs", json={"mode": "auto"})
    assert response.status_code == 409 and "upload photos" in response.json()["detail"]


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/people/..%2F..%2Fetc%2Fpasswd",
        "/api/people/%2e%2e",
        "/api/people/%2e%2e%2f%2e%2e",
        "/api/photos/..%2F1/image",
        "/api/photos/%2Fetc%2Fpasswd/image",
        "/api/crops/..%2F..%2F.facelab%2Ffacelab.db/image",
        "/api/runs/%2e%2e/files/summary.json",
        "/api/runs/..%2F..%2F.facelab/files/summary.json",
        "/api/runs/%2Fetc/files/summary.json",
        "/static/..%2F..%2Fstore.py",
        "/static/%2e%2e/%2e%2e/store.py",
        "/static/%2e%2e%2f%2e%2e%2fstore.py",
        "/static//etc/passwd",
        "/docs-static/..%2F..%2F..%2Ffacelab%2Fstore.py",
    ],
)
def test_traversal_attempts_find_nothing(served: Served, url: str) -> None:
    response = served.client.get(url)
    assert response.status_code in (404, 422), (url, response.status_code)
    assert b"facelab.db" not in response.content[:200] and b"root:" not in response.content


def test_run_files_only_from_the_allow_list(served: Served, trained: dict) -> None:
    run = trained["run"]
    # (A literal "/.." is resolved by the HTTP client itself, so only encoded forms reach the server.)
    for name in ("..%2F..%2F.facelab%2Ffacelab.db", "%2e%2e", "config.yaml%00.png", "%2Fetc%2Fpasswd", "last.pt"):
        assert served.client.get(f"/api/runs/{run}/files/{name}").status_code == 404


def test_database_rows_pointing_outside_are_not_served(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg(np.zeros((64, 64, 3), np.uint8)))
    client = _fresh(tmp_path)
    root = tmp_path / "ws"
    link = root / "crops" / "ada" / "link.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with Workspace(root, create=False) as ws, ws.transaction() as conn:
        photo = conn.execute(
            "INSERT INTO photos(path, person, status) VALUES (?, 'ada', 'ok')", (str(root / "uploads" / "x.jpg"),)
        ).lastrowid
        for idx, path in enumerate((str(secret), "../secret.jpg", "crops/ada/link.jpg")):
            face = conn.execute(
                "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2) VALUES (?, ?, 0, 0, 10, 10)", (photo, idx)
            ).lastrowid
            conn.execute("INSERT INTO crops(face_id, path, person) VALUES (?, ?, 'ada')", (face, path))
    for crop in client.get("/api/crops").json():
        assert client.get(f"/api/crops/{crop['id']}/image").status_code == 404
    assert client.get(f"/api/photos/{photo}/image").status_code == 404


# -- security ----------------------------------------------------------------------------------


def test_token_is_checked_on_every_request(tmp_path: Path) -> None:
    client = _fresh(tmp_path, TOKEN)
    for url in ("/api/people", "/api/status", "/openapi.json", "/api/crops/1/image"):
        response = client.get(url)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/api/people", json={"name": "ada"}).status_code == 401
    for url in ("/people", "/review", "/train", "/recognize", "/docs", "/runs/x"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert client.get("/api/people", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/people", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/api/people", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/static/style.css").status_code == 200  # the login page's stylesheet
    login_form = client.get("/login")
    assert login_form.status_code == 200 and "token" in login_form.text
    assert client.get("/login?token=wrong", follow_redirects=False).status_code == 401
    assert "facelab_session" not in client.cookies
    ok = client.get(f"/login?token={TOKEN}&next=/train", follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/train"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert client.get("/people").status_code == 200
    assert client.get("/api/people").status_code == 200
    assert client.get("/docs").status_code == 200
    # Only local redirect targets after login.
    away = client.get(f"/login?token={TOKEN}&next=//evil.example/x", follow_redirects=False)
    assert away.headers["location"] == "/"
    client.cookies.set("facelab_session", "forged")
    assert client.get("/api/people").status_code == 401


def test_loopback_server_answers_only_loopback_names_and_same_origin_writes(tmp_path: Path) -> None:
    client = _fresh(tmp_path)
    assert client.get("/api/status").status_code == 200
    assert client.get("/api/status", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/status", headers={"host": "[::1]:8000"}).status_code == 200
    rebinding = client.get("/api/status", headers={"host": "attacker.example:8000"})
    assert rebinding.status_code == 421
    csrf = client.post("/api/people", json={"name": "ada"}, headers={"origin": "http://attacker.example"})
    assert csrf.status_code == 403
    sandboxed = client.post("/api/people", json={"name": "ada"}, headers={"origin": "null"})
    assert sandboxed.status_code == 403
    same = client.post("/api/people", json={"name": "ada"}, headers={"origin": BASE})
    assert same.status_code == 201
    # A server bound to the network (with a token) answers any host name.
    network = TestClient(create_app(tmp_path / "ws", TOKEN, host="0.0.0.0"), base_url="http://192.168.1.20:8000")
    assert network.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_security_headers(served: Served) -> None:
    page = served.client.get("/people")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert served.client.get("/api/status").headers["x-frame-options"] == "DENY"


def test_bind_rules() -> None:
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    for host, token in (("0.0.0.0", None), ("0.0.0.0", ""), ("192.168.1.5", "short"), ("::", None), ("127.0.0.1", "")):
        with pytest.raises(InsecureBind):
            check_bind(host, token)


def test_serve_command_refuses_network_without_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from typer.testing import CliRunner

    from facelab.cli import COMMAND_MODULES, app

    assert "facelab.cli.serve_cmds" in COMMAND_MODULES
    for module in COMMAND_MODULES:
        importlib.import_module(module)

    monkeypatch.delenv("FACELAB_TOKEN", raising=False)
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", str(tmp_path / "ws"), "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "token is required" in refused.output + (getattr(refused, "stderr", "") or "")
    assert not (tmp_path / "ws").exists()

    calls = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda application, **kwargs: calls.append(kwargs))
    started = runner.invoke(app, ["serve", str(tmp_path / "ws"), "--port", "8123"])
    assert started.exit_code == 0, started.output
    assert calls == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning"}]
    monkeypatch.setenv("FACELAB_TOKEN", TOKEN)
    assert runner.invoke(app, ["serve", str(tmp_path / "ws"), "--host", "0.0.0.0"]).exit_code == 0
    assert calls[-1]["host"] == "0.0.0.0"
    # A strangers folder given to serve is remembered for training from the web page.
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    monkeypatch.delenv("FACELAB_TOKEN")
    assert runner.invoke(app, ["serve", str(tmp_path / "ws"), "--strangers", str(strangers)]).exit_code == 0
    from facelab.auto import strangers_folder

    with Workspace(tmp_path / "ws", create=False) as ws:
        assert strangers_folder(ws) == strangers.resolve()
    assert runner.invoke(app, ["serve", str(tmp_path / "ws"), "--strangers", str(tmp_path / "nope")]).exit_code == 2


# -- pages and docs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("/people", "ben_afflek"),
        ("/people/madonna", "Drop photos of madonna here"),
        ("/review", 'data-action="reject"'),
        ("/review?person=madonna", "madonna"),
        ("/train", "Start training"),
        ("/recognize", "Start camera"),
    ],
)
def test_pages_render(served: Served, url: str, text: str) -> None:
    response = served.client.get(url)
    assert response.status_code == 200 and text in response.text
    assert '<script src="/static/common.js"' in response.text


def test_photo_and_run_pages(served: Served, trained: dict) -> None:
    photo_id = served.uploads["madonna"]["results"][0]["photo_id"]
    page = served.client.get(f"/photos/{photo_id}")
    assert page.status_code == 200 and "Add face" in page.text
    run = served.client.get(f"/runs/{trained['run']}")
    assert run.status_code == 200 and "test accuracy" in run.text and trained["run"] in run.text
    assert served.client.get("/runs/nope").status_code == 404
    assert served.client.get("/photos/99999").status_code == 404
    assert served.client.get("/people/nobody").status_code == 404
    assert served.client.get("/", follow_redirects=False).headers["location"] == "/people"


def test_openapi_documents_every_endpoint_and_docs_work_offline(served: Served) -> None:
    spec = served.client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/api/people",
        "/api/people/{name}",
        "/api/people/{name}/photos",
        "/api/photos/{photo_id}",
        "/api/photos/{photo_id}/image",
        "/api/photos/{photo_id}/faces",
        "/api/crops",
        "/api/crops/{crop_id}/image",
        "/api/crops/{crop_id}/accept",
        "/api/crops/{crop_id}/reject",
        "/api/crops/{crop_id}/move",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/runs",
        "/api/runs/{name}",
        "/api/runs/{name}/files/{filename}",
        "/api/current-model",
        "/api/recognize",
        "/api/verify",
        "/api/albums/find",
        "/api/status",
        "/api/options",
    ):
        assert path in paths, path
    assert not any(p.startswith(("/people", "/review", "/login")) for p in paths)  # pages stay out
    docs = served.client.get("/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert served.client.get("/docs-static/swagger-ui-bundle.js").status_code == 200


def test_nothing_heavy_at_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, facelab.server.app, facelab.server.api, facelab.server.pages, facelab.cli.serve_cmds;"
        "heavy = [m for m in ('torch', 'dlib', 'cv2', 'onnxruntime', 'matplotlib', 'uvicorn') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == ""


def test_page_data_is_valid_json_even_with_nan() -> None:
    # FPIR without strangers is NaN; a NaN in a page's data block once broke the whole train page.
    from facelab.server.pages import _json_block

    assert json.loads(_json_block({"fpir": float("nan"), "rows": [float("inf"), 0.5, "<"]})) == {
        "fpir": None,
        "rows": [None, 0.5, "<"],
    }
