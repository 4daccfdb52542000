"""The loop from answers back to training, through FastAPI's TestClient: the review queue across
everyone (``GET /api/review``) and accepting many faces (``POST /api/crops/accept``), "This is …"
on a recognized face (``POST /api/recognize/enroll``), and the unknown threshold chosen on a run's
page (``GET/PUT /api/runs/{name}/threshold``) that the app's recognition then uses.

The workspace is a copy of the tests' tiny model workspace (tests/tiny_model.py: four celeb5
people, a prototype embedding run), made once per module; tests that change it take their own copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install fastapi)")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")

from fastapi.testclient import TestClient

from facelab.server.app import create_app
from facelab.store import Workspace
from tiny_model import TinyModel

BASE = "http://127.0.0.1"


def _client(root: Path) -> TestClient:
    return TestClient(create_app(root, None), base_url=BASE)


@pytest.fixture(scope="module")
def shared_ws(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model workspace with one face made a bystander and one suspicious (as
    identity resolution marks them), for tests that only read."""
    root = tmp_path_factory.mktemp("teach") / "ws"
    shutil.copytree(tiny_model.workspace, root, symlinks=True)
    with Workspace(root, create=False) as ws:
        faces = [r["id"] for r in ws.query("SELECT f.id FROM faces f JOIN crops c ON c.face_id = f.id ORDER BY f.id")]
        with ws.transaction():
            ws.set_role(faces[0], "bystander", source="auto")
            ws.set_role(faces[1], "suspicious", source="auto")
    return root


@pytest.fixture()
def ws_copy(shared_ws: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(shared_ws, target, symlinks=True)
    return target


@contextmanager
def _held_by_another_process(root: Path) -> Iterator[None]:
    """The workspace's write lock held by another process (a CLI command), for the 409 answers."""
    code = (
        "import sys; from facelab.writelock import write_lock\n"
        f"with write_lock({str(root)!r}, command='facelab build'):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def _crop_of_role(client: TestClient, role: str) -> dict:
    return next(c for c in client.get("/api/review").json()["items"] if c["role"] == role)


# -- review ------------------------------------------------------------------------------------


def test_review_queue_puts_doubt_first_across_everyone(shared_ws: Path) -> None:
    client = _client(shared_ws)
    page = client.get("/api/review").json()
    items = page["items"]
    assert page["show"] == "all" and page["total"] == len(items) == page["counts"]["all"]
    assert "identity resolution" in page["states"] and "Rejected" in page["states"]
    # The suspicious face first, whoever it belongs to; then the pending faces least like their person.
    assert items[0]["doubt"] == "suspicious" and "unlike" in items[0]["doubt_words"]
    rest = [c["distance"] for c in items[1:] if c["status"] == "pending" and c["distance"] is not None]
    assert rest == sorted(rest, reverse=True)
    assert [c["person"] for c in items] != sorted(c["person"] for c in items)  # doubt, not names, decides
    # Pending faces train when identity resolution took them as the person's; a bystander does not.
    assert _crop_of_role(client, "bystander")["trains"] is False
    assert all(c["trains"] for c in items if c["role"] == "person")

    doubtful = client.get("/api/review?show=doubtful").json()
    assert [c["doubt"] for c in doubtful["items"]] == ["suspicious"] and doubtful["counts"]["doubtful"] == 1
    assert client.get("/api/review?show=rejected").json()["items"] == []
    madonna = client.get("/api/review?show=pending&person=madonna").json()
    assert madonna["items"] and {c["person"] for c in madonna["items"]} == {"madonna"}
    # Bad filters and people: 422 / 404 with one line saying what is allowed.
    assert "doubtful" in client.get("/api/review?show=everything").json()["detail"]
    assert client.get("/api/review?show=everything").status_code == 422
    assert client.get("/api/review?page=0").status_code == 422
    assert client.get("/api/review?person=nobody").status_code == 404
    # The old listing is unchanged: by person.
    crops = client.get("/api/crops").json()
    assert [c["person"] for c in crops] == sorted((c["person"] for c in crops), key=str.casefold)


def test_review_page_renders_filters_and_states(shared_ws: Path) -> None:
    client = _client(shared_ws)
    page = client.get("/review?show=doubtful")
    assert page.status_code == 200 and 'aria-current="page">doubtful' in page.text.replace("\n", "")
    assert "trains only if identity resolution" in page.text and "how far the face is from" in page.text
    assert 'id="accept-rest"' in page.text
    assert client.get("/review?show=nope").status_code == 422
    assert client.get("/review?person=nobody").status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"ids": []}, {"ids": [0]}, {"ids": [-3]}, {"ids": ["x"]}, {"ids": [2**63]}, {"ids": list(range(1, 502))}, {}],
    ids=["empty", "zero", "negative", "text", "too-big", "too-many", "missing"],
)
def test_accepting_many_refuses_bad_ids(shared_ws: Path, body: dict) -> None:
    response = _client(shared_ws).post("/api/crops/accept", json=body)
    assert response.status_code == 422 and response.json()["detail"]


def test_accept_the_rest_asks_for_bystanders_and_takes_the_lock(ws_copy: Path) -> None:
    client = _client(ws_copy)
    pending = [c for c in client.get("/api/review?show=pending").json()["items"]]
    bystander = next(c["id"] for c in pending if c["role"] == "bystander")
    others = [c["id"] for c in pending if c["role"] != "bystander"][:5]

    missing = client.post("/api/crops/accept", json={"ids": [*others, 999_999]})
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    refused = client.post("/api/crops/accept", json={"ids": [*others, bystander]})
    assert refused.status_code == 409 and "confirm_bystanders" in refused.json()["detail"]
    assert client.get("/api/review?show=accepted").json()["total"] == 0  # all or nothing

    with _held_by_another_process(ws_copy):
        busy = client.post("/api/crops/accept", json={"ids": others})
        assert busy.status_code == 409 and "facelab build" in busy.json()["detail"]
    assert client.get("/api/review?show=accepted").json()["total"] == 0

    done = client.post("/api/crops/accept", json={"ids": [*others, others[0], bystander], "confirm_bystanders": True})
    assert done.status_code == 200 and done.json()["accepted"] == len(others) + 1
    assert {c["status"] for c in done.json()["crops"]} == {"accepted"}
    accepted = client.get("/api/review?show=accepted").json()
    assert accepted["total"] == len(others) + 1 and all(c["trains"] for c in accepted["items"])


# -- "This is …" -------------------------------------------------------------------------------


def _recognize(client: TestClient, photo: Path) -> dict:
    response = client.post("/api/recognize", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def test_this_is_enrolls_a_face_without_retraining(ws_copy: Path, tiny_model: TinyModel) -> None:
    client = _client(ws_copy)
    photo = tiny_model.held_out["madonna"][0]
    first = _recognize(client, photo)
    assert first["can_enroll"] and len(first["image"]) == 64 and first["faces"][0]["name"] == "madonna"

    # A new person: the face is theirs from now on; the same photo again names them.
    body = {"image": first["image"], "face": 0, "person": "Lookalike", "new": True}
    made = client.post("/api/recognize/enroll", json=body)
    assert made.status_code == 201, made.text
    answer = made.json()
    assert answer["named"] == "Lookalike" and answer["source"] == f"web:{first['image']}#0"
    assert answer["retrain"] == "/train" and "no retraining" in answer["message"]
    assert _recognize(client, photo)["faces"][0]["name"] == "Lookalike"
    with Workspace(ws_copy, create=False) as ws:
        rows = ws.query("SELECT person, source FROM gallery")
    assert [(r["person"], r["source"]) for r in rows] == [("Lookalike", answer["source"])]
    assert "Lookalike" in [p["name"] for p in client.get("/api/people").json()]

    # Corrected back to a known person: the face's earlier entry goes, it is madonna's again.
    back = client.post("/api/recognize/enroll", json={"image": first["image"], "face": 0, "person": "madonna"})
    assert back.status_code == 201 and back.json()["named"] == "madonna"
    with Workspace(ws_copy, create=False) as ws:
        assert [r["person"] for r in ws.query("SELECT person FROM gallery")] == ["madonna"]


def test_this_is_refuses_what_it_cannot_do(ws_copy: Path, tiny_model: TinyModel) -> None:
    client = _client(ws_copy)
    image = _recognize(client, tiny_model.held_out["ben_afflek"][0])["image"]
    post = lambda **body: client.post("/api/recognize/enroll", json={"image": image, "face": 0, **body})  # noqa: E731
    assert post(person="madonna", image="0" * 64).status_code == 404  # not recognized lately
    assert post(person="madonna", face=7).status_code == 404
    assert post(person="nobody").status_code == 404
    assert post(person="madonna", new=True).status_code == 409  # taken
    assert post(person="../x", new=True).status_code == 422
    assert post(person="madonna", image="not-a-hash").status_code == 422
    assert post(person="madonna", face=-1).status_code == 422
    assert post(person="").status_code == 422
    with _held_by_another_process(ws_copy):
        busy = post(person="madonna")
        assert busy.status_code == 409 and "facelab build" in busy.json()["detail"]
    with Workspace(ws_copy, create=False) as ws:
        assert ws.query("SELECT COUNT(*) AS n FROM gallery")[0]["n"] == 0


# -- the unknown threshold ---------------------------------------------------------------------


def test_threshold_curve_matches_the_calibration(tiny_model: TinyModel, tmp_path: Path) -> None:
    import json

    # The faces as calibrated (shared_ws marks two of them, which changes the validation faces).
    shutil.copytree(tiny_model.workspace, tmp_path / "ws", symlinks=True)
    client = _client(tmp_path / "ws")
    run = tiny_model.run_dir.name
    curve = client.get(f"/api/runs/{run}/threshold")
    assert curve.status_code == 200, curve.text
    data = curve.json()
    calibration = json.loads((tiny_model.run_dir / "openset.json").read_text())
    assert data["calibrated"] == pytest.approx(calibration["threshold"]) and data["chosen"] is None
    assert data["thresholds"] == sorted(data["thresholds"]) and len(data["thresholds"]) > 50
    at = data["thresholds"].index(min(data["thresholds"], key=lambda t: abs(t - data["calibrated"])))
    # At the calibrated threshold the figures are the calibration's own.
    assert data["strangers_named"][at] == pytest.approx(calibration["expected_fpir"], abs=1e-4)
    assert data["people_missed"][at] == pytest.approx(calibration["fnir"], abs=1e-4)
    # Stricter names fewer strangers and misses more of your people.
    assert data["strangers_named"][0] >= data["strangers_named"][-1]
    assert data["people_missed"][0] <= data["people_missed"][-1]
    assert client.get("/api/runs/nope/threshold").status_code == 404


def test_a_chosen_threshold_changes_the_apps_answer(ws_copy: Path, tiny_model: TinyModel) -> None:
    client = _client(ws_copy)
    run = tiny_model.run_dir.name
    photo = tiny_model.held_out["madonna"][0]
    before = _recognize(client, photo)
    assert before["faces"][0]["name"] == "madonna" and not before["threshold_chosen"]
    score = before["faces"][0]["score"]

    assert client.put(f"/api/runs/{run}/threshold", json={"threshold": 9}).status_code == 422
    assert client.put(f"/api/runs/{run}/threshold", json={"threshold": "high"}).status_code == 422
    assert client.put(f"/api/runs/{run}/threshold", json={}).status_code == 422
    assert client.put("/api/runs/nope/threshold", json={"threshold": 0.5}).status_code == 404
    with _held_by_another_process(ws_copy):
        assert client.put(f"/api/runs/{run}/threshold", json={"threshold": 0.5}).status_code == 409

    stricter = round(score + 0.02, 4)  # just above this face's score: it becomes unknown
    saved = client.put(f"/api/runs/{run}/threshold", json={"threshold": stricter})
    assert saved.status_code == 200 and saved.json()["chosen"] and saved.json()["threshold"] == stricter
    assert client.get(f"/api/runs/{run}/threshold").json()["chosen"] == stricter
    after = _recognize(client, photo)
    assert after["faces"][0]["name"] == "unknown" and after["threshold"] == stricter and after["threshold_chosen"]
    # Saved in the workspace: a new server uses it too; null goes back to the calibrated one.
    assert _recognize(_client(ws_copy), photo)["faces"][0]["name"] == "unknown"
    reset = client.put(f"/api/runs/{run}/threshold", json={"threshold": None})
    assert reset.status_code == 200 and not reset.json()["chosen"]
    assert _recognize(client, photo)["faces"][0]["name"] == "madonna"


def test_run_page_explains_its_figures(ws_copy: Path, tiny_model: TinyModel) -> None:
    run = ws_copy / "runs" / tiny_model.run_dir.name
    shutil.copy(Path(__file__).parent.parent / "docs" / "screenshots" / "run.png", run / "det.png")  # any PNG
    page = _client(ws_copy).get(f"/runs/{run.name}")
    assert page.status_code == 200
    for words in ("strangers given a name", "your people missed", 'id="threshold-slider"', "faces scoring below it"):
        assert words in page.text
    # The DET plot and its log axes sit behind a "details" toggle, not among the pictures.
    details = page.text.split('<details class="card" id="det-details">')
    assert len(details) == 2 and "det.png" not in details[0].split('<div class="pictures">')[1]
    assert "log scale" in details[1]
