"""The web pages in a real browser: Debian's Chromium driven by Playwright, against uvicorn.

One walk through the app as a user would take it: create two people and upload their photos
(one by drag and drop, one with the file picker), draw a box on a photo where no face was found,
reject a crop in review with a key, train automatically, then recognize an uploaded photo and a
webcam (Chromium's fake camera playing a held-out photo). The assertions read what the page shows.

Set FACELAB_SCREENSHOTS=docs/screenshots to (re)write the screenshots of these pages (photos blurred);
tests/test_web_browser.py writes those of the People and Albums pages.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install playwright)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")

from playwright.sync_api import Browser, Page, expect, sync_playwright

from facelab.server.app import create_app

# Debian's Chromium, never a browser Playwright downloads (nothing downloads here).
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) to run the browser tests",
)

PEOPLE = ("ben_afflek", "madonna")
N_PHOTOS = 6
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = os.environ.get("FACELAB_SCREENSHOTS")
# Waits on server work (finding faces, training, recognizing) on a slow 2-core machine.
SLOW = 120_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _photos(shared: Path, person: str) -> list[Path]:
    return sorted((shared / "celeb5" / person).glob("*.jpg"))


def _write_y4m(photo: Path, path: Path, size: tuple[int, int] = (640, 480), frames: int = 3) -> None:
    """A few frames of ``photo`` letterboxed on grey, as the Y4M video Chromium's fake camera plays."""
    import cv2

    width, height = size
    image = Image.open(photo).convert("RGB")
    image.thumbnail((width, height))
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    i420 = cv2.cvtColor(np.asarray(canvas), cv2.COLOR_RGB2YUV_I420)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + i420.tobytes())


def _sky_png() -> bytes:
    sky = np.linspace(110, 230, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(sky).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving a new workspace on 127.0.0.1 and a free port, in a background thread."""
    import uvicorn

    root = tmp_path_factory.mktemp("browser") / "ws"
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root, None), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Browser]:
    camera = tmp_path_factory.mktemp("camera") / "ben.y4m"
    _write_y4m(_photos(shared_data, "ben_afflek")[-1], camera)
    fake_camera = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
    ]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
        yield chromium
        chromium.close()


# The shared photo sets may not be copied into the repository (../shared/data/README.md), and a
# screenshot of a page full of crops is such a copy: blur every picture in it. Set through the
# CSSOM, which the pages' Content-Security-Policy allows (an injected <style> it would block).
_BLUR = "document.querySelectorAll('img, canvas, video').forEach((e) => { e.style.filter = %r; })"


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.evaluate(_BLUR % "blur(9px)")
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
        page.evaluate(_BLUR % "")


def _drop_files(page: Page, selector: str, files: list[Path]) -> None:
    """Drag and drop files onto ``selector`` the way a browser delivers them (a DataTransfer)."""
    payload = [{"name": f.name, "b64": base64.b64encode(f.read_bytes()).decode(), "type": "image/jpeg"} for f in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_upload_review_train_recognize(base_url: str, browser: Browser, shared_data: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.set_default_timeout(60_000)

    # People: create each person, then upload their photos (drag and drop / file picker).
    for number, person in enumerate(PEOPLE):
        page.goto(f"{base_url}/people")
        page.fill("#new-person input[name=name]", person)
        page.click("#new-person button[type=submit]")
        page.wait_for_url(f"**/people/{person}")
        photos = _photos(shared_data, person)[:N_PHOTOS]
        if number == 0:
            _drop_files(page, "#dropzone", photos)
        else:
            sky = tmp_path / "sky.png"
            sky.write_bytes(_sky_png())
            page.set_input_files("#file-input", [*photos, sky])
        expect(page.locator("#upload-results li")).to_have_count(N_PHOTOS + number, timeout=SLOW)
        expect(page.locator("#counts")).to_contain_text(f"{N_PHOTOS + number} photos")
    expect(page.locator("#upload-results")).to_contain_text("added, but no face found")
    expect(page.locator("#no-face .thumb, .thumb.no-face")).to_have_count(1)
    _shot(page, "person")

    page.goto(f"{base_url}/people")
    for person in PEOPLE:
        expect(page.locator(f"tr[data-person={person}]")).to_contain_text(person)
        expect(page.locator(f".person-card[data-person={person}] img.face")).to_be_visible()
    # (The People screenshots, at 375 and 1280 px, come from tests/test_web_browser.py.)

    # A photo where no face was found: draw a box round "the face" and add it.
    page.goto(f"{base_url}/people/madonna")
    page.click(".thumb.no-face")
    page.wait_for_url("**/photos/*")
    image = page.locator("#photo")
    expect(image).to_be_visible()
    box = image.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.25)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=5)
    page.mouse.up()
    expect(page.locator("#add-face")).to_be_enabled()
    _shot(page, "photo")
    page.click("#add-face")
    expect(page.locator(".face-box[data-box]")).to_have_count(1, timeout=SLOW)
    drawn_crop = page.locator(".crops figure.crop img").get_attribute("src")
    assert drawn_crop is not None
    crop_id = drawn_crop.split("/")[3]

    # Review: the drawn "face" is sky: reject it with the R key.
    page.goto(f"{base_url}/review")
    expect(page.locator("figure.crop")).to_have_count(2 * N_PHOTOS + 1, timeout=10_000)
    card = page.locator(f"figure.crop[data-id='{crop_id}']")
    card.focus()
    page.keyboard.press("r")
    expect(card.locator(".badge.status")).to_have_text("rejected")
    expect(card).to_have_class("crop status-rejected")
    page.reload()
    expect(page.locator(f"figure.crop[data-id='{crop_id}'] .badge.status")).to_have_text("rejected")
    page.locator("figure.crop").first.focus()
    _shot(page, "review")

    # Train automatically with a small budget (the embedding candidates take seconds).
    page.goto(f"{base_url}/train")
    page.check("input[name=mode][value=auto]")
    page.fill("input[name=budget_minutes]", "0.1")
    page.click("#start-training")
    expect(page.locator("#job")).to_be_visible()
    # When the job ends the page reloads once to list the new run among the trained models.
    expect(page.locator("#runs-table")).to_contain_text("auto-", timeout=SLOW)
    link = page.locator("#job-run-link")
    expect(link).to_be_visible()
    expect(page.locator("#job-state")).to_have_text("done")
    expect(page.locator("#runs-table tr.current")).to_contain_text(link.inner_text())
    expect(page.locator("#job-candidates tbody tr").first).to_be_visible()
    _shot(page, "train")
    run = link.inner_text()
    link.click()
    page.wait_for_url(f"**/runs/{run}")
    expect(page.locator("#run-name")).to_contain_text("current model")
    expect(page.locator("#test-accuracy")).to_contain_text("%")
    _shot(page, "run")

    # Recognize a photo that was not uploaded: the right name appears over the face.
    page.goto(f"{base_url}/recognize")
    unseen = _photos(shared_data, "madonna")[-1]
    page.set_input_files("#recognize-file", unseen)
    expect(page.locator("#recognize-names li").first).to_be_visible(timeout=SLOW)
    expect(page.locator("#recognize-names")).to_contain_text("madonna")
    expect(page.locator("#recognize-stage .face-box.known")).to_contain_text("madonna")

    # The webcam: Chromium's fake camera shows a held-out photo of ben_afflek.
    page.click("#camera-start")
    expect(page.locator("#camera-names")).to_contain_text("ben_afflek", timeout=SLOW)
    expect(page.locator("#camera-stage .face-box")).to_contain_text("ben_afflek")
    _shot(page, "recognize")
    page.click("#camera-stop")

    assert not problems, problems
    page.close()
