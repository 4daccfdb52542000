"""Naming in a worker thread (``VideoOptions(naming="worker")``): frames never wait for names, the
names are the ones inline naming gives, and a late answer never lands on another track.

The ordering tests use a fake embedder whose every call blocks until the test opens it, so they
assert what happened before what (a frame came back while its naming was still blocked), never
how long anything took. The comparison with inline naming runs the real model on a real clip.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from facelab import embedders
from facelab.imageio import load_rgb
from facelab.recognize import Recognizer, VideoOptions, VideoRecognizer, classify_input
from facelab.recognize_video import NamingMode
from facelab.tracking import Track
from facelab.types import Box, Face

WIDTH, HEIGHT = 640, 480
BOX = Box(270, 190, 370, 290)
PEOPLE = ("alice", "bob")
FAKE = "test-slow-embedder"
# How long a blocked naming waits for the test before giving up. Never reached when the code under
# test is right; if it is reached, the test fails on ``timed_out`` (an ordering), not on a time.
PATIENCE_S = 30.0


# -- a fake model whose naming blocks until the test lets it go ---------------------------------


class SlowEmbedder:
    """Embeds the face in ``BOX`` as alice ``(1, 0)`` when it is bright, bob ``(0, 1)`` when dark;
    call ``k`` (counted from 0, warm-up excluded) blocks until ``release[k]`` is set."""

    name = FAKE
    dim = 2

    def __init__(self) -> None:
        self.entered = [threading.Event() for _ in range(16)]
        self.release = [threading.Event() for _ in range(16)]
        self.calls = 0
        self.timed_out = False

    def embed(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        vectors = np.array([_who(rgb, f) for f in faces], dtype=np.float32).reshape(len(faces), 2)
        if rgb.shape[0] <= 64:  # Recognizer.warm_up's blank image: not a naming
            return vectors
        k, self.calls = self.calls, self.calls + 1
        self.entered[k].set()
        if not self.release[k].wait(PATIENCE_S):
            self.timed_out = True
        return vectors


def _who(rgb: np.ndarray, face: Face) -> tuple[float, float]:
    x1, y1, x2, y2 = face.box.as_ints()
    bright = float(rgb[y1:y2, x1:x2].mean()) > 128
    return (1.0, 0.0) if bright else (0.0, 1.0)


class VectorFake:
    """An embedding-track model over :class:`SlowEmbedder`: scores are the vectors themselves."""

    run_dir = None
    classes: ClassVar[list[str]] = list(PEOPLE)
    score_kind = "similarity"
    threshold = 0.5
    embedder = FAKE

    def predict_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float64)


class FixedDetector:
    """One face, always at ``BOX`` (the tests are about naming, not detection)."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [Face(BOX, 0.99)] if rgb.shape[0] > 64 else []


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowEmbedder]:
    embedder = SlowEmbedder()
    info = embedders.EmbedderInfo(FAKE, lambda: embedder, 2, 0, "tests", "none", verify_distance=0.5)
    monkeypatch.setitem(embedders._REGISTRY, FAKE, info)
    monkeypatch.setitem(embedders._CACHE, FAKE, embedder)
    yield embedder
    for event in embedder.release:  # never leave the worker thread blocked after a failure
        event.set()


def fake_recognizer() -> Recognizer:
    recognizer = Recognizer(VectorFake())  # type: ignore[arg-type]
    recognizer._detector = FixedDetector()
    return recognizer


def frame(scene: int, person: str) -> np.ndarray:
    """A BGR 640×480 frame: a textured background (one per ``scene``, so a change of scene is a
    shot cut) and a textured face in ``BOX``, bright for alice, dark for bob (a different texture
    each, so a swap is an appearance jump)."""
    rng = np.random.default_rng(scene)
    image = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8), (0, 0), 4)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    noise = np.random.default_rng(100 + PEOPLE.index(person)).integers(0, 256, (100, 100)).astype(np.float32)
    face = cv2.GaussianBlur(noise, (0, 0), 3)
    face = cv2.normalize(face.astype(np.float32), None, 0, 1, cv2.NORM_MINMAX)
    low = 150 if person == "alice" else 0
    x1, y1, x2, y2 = BOX.as_ints()
    image[y1:y2, x1:x2] = (low + 100 * face).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def until(video: VideoRecognizer, bgr: np.ndarray, start: int, done, limit: int = 20000) -> int:
    """Feed ``bgr`` as frames ``start``, ``start + 1``… until ``done()``; returns the next index.

    Waits for the worker by feeding frames (never by sleeping a fixed time); ``limit`` only stops
    a broken run from looping for ever."""
    index = start
    while not done():
        assert index - start < limit, "the worker's answer never came back"
        video.process(bgr, index, index / 10)
        shown = [t.name for t in video.tracker.active if t.missed == 0]
        assert "alice" not in shown or bgr[240, 320, 0] > 128, f"frame {index}: alice shown on bob's face"
        time.sleep(0.001)  # leave the core to the worker on a busy machine
        index += 1
    return index


# -- frames never wait for names ----------------------------------------------------------------


def test_frames_come_back_while_their_naming_is_still_running(slow: SlowEmbedder, tmp_path: Path) -> None:
    clip = tmp_path / "one-face.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for _ in range(12):
        writer.write(frame(0, "alice"))
    writer.release()
    options = VideoOptions(naming="worker", detect_every=1, detect_size=WIDTH, warmup=1)
    video = VideoRecognizer(fake_recognizer(), options)
    frames = video.frames(classify_input(str(clip)))
    first = next(frames)
    assert slow.entered[0].wait(PATIENCE_S)  # the worker is inside the first naming, blocked
    during = [first] + [next(frames) for _ in range(5)]  # ...and frames keep coming
    assert video.naming is NamingMode.WORKER
    # None of them waited for the name: the face is shown unnamed, and sent only once.
    assert [[t.name for t in f.tracks] for f in during] == [[None]] * 6
    assert slow.calls == 1 and video.stats.classified_faces == 0
    slow.release[0].set()
    rest = list(frames)  # the end of the clip waits for answers still on their way
    assert not slow.timed_out
    assert len(during) + len(rest) == 12 and slow.calls == 1
    (line,) = video.summary()
    assert line.name == "alice" and video.stats.classified_faces == 1 and video.stats.batches == 1
    # The arrival is raised on the frame the name came back in, after the frames that went on
    # without it (or, when the clip ended first, while finishing: no frame carries it then).
    arrivals = [(f.index, e.name) for f in rest for e in f.events]
    assert len(arrivals) <= 1 and all(index >= 6 and name == "alice" for index, name in arrivals)


def test_inline_naming_waits_and_is_what_files_get_by_default(slow: SlowEmbedder) -> None:
    """The deterministic path: ``auto`` names a file's (or process()'s) faces in the frame loop."""
    video = VideoRecognizer(fake_recognizer(), VideoOptions(detect_every=1, detect_size=WIDTH, warmup=1))
    assert video.naming is NamingMode.INLINE
    slow.release[0].set()
    events = video.process(frame(0, "alice"), 0, 0.0)
    (track,) = video.tracker.active
    assert track.name == "alice" and [e.name for e in events] == ["alice"] and video.finish() == []


# -- a late answer lands on its own track -------------------------------------------------------


def test_an_answer_that_comes_back_after_a_cut_stays_with_its_track(slow: SlowEmbedder) -> None:
    options = VideoOptions(naming="worker", detect_every=1, detect_size=WIDTH, warmup=1)
    video = VideoRecognizer(fake_recognizer(), options)
    alice, bob = frame(1, "alice"), frame(2, "bob")
    for index in range(3):
        video.process(alice, index, index / 10)
    (first,) = video.tracker.active
    assert slow.entered[0].wait(PATIENCE_S) and first.in_flight and first.name is None
    # A cut: alice's track ends, bob (at the same place) gets a track of his own, queued for naming.
    video.process(bob, 3, 0.3)
    (second,) = video.tracker.active
    assert second is not first and video.stats.cuts == 1
    # Alice's answer comes back now, after the cut: it names her (finished) track, not bob's.
    slow.release[0].set()
    index = until(video, bob, 4, lambda: first.name is not None)
    assert first.name == "alice" and second.name is None
    assert slow.entered[1].wait(PATIENCE_S)
    slow.release[1].set()
    until(video, bob, index, lambda: second.name is not None)
    assert second.name == "bob"
    video.finish()
    lines = video.summary()
    assert [(s.name, s.track) for s in lines] == [("alice", first.id), ("bob", second.id)]
    assert lines[0].end_s < lines[1].start_s and not slow.timed_out


def test_a_face_swap_hides_the_name_until_the_check_and_then_splits(slow: SlowEmbedder) -> None:
    """No cut (same background), only the face changes: the old name is not shown on the new face
    while its check runs, and the check starts a new track that carries nothing from the old one."""
    options = VideoOptions(naming="worker", detect_every=1, detect_size=WIDTH, warmup=1, cuts=False)
    video = VideoRecognizer(fake_recognizer(), options)
    alice, bob = frame(3, "alice"), frame(3, "bob")
    slow.release[0].set()
    video.process(alice, 0, 0.0)
    (track,) = video.tracker.active
    index = until(video, alice, 1, lambda: track.name is not None)
    assert track.name == "alice"
    # Bob steps into alice's place: an appearance jump, checked in the worker (blocked for now).
    video.process(bob, index, index / 10)
    assert slow.entered[1].wait(PATIENCE_S)
    assert video.tracker.active == [track] and track.doubted and track.name is None
    for k in range(1, 4):  # frames go on meanwhile, with no name on the face
        video.process(bob, index + k, (index + k) / 10)
        assert [t.name for t in video.tracker.active] == [None]
    slow.release[1].set()
    until(video, bob, index + 4, lambda: video.stats.drift_splits == 1)
    (new,) = video.tracker.active
    assert new is not track and new.id > track.id
    assert track.name == "alice" and track.last_frame < index
    assert new.name == "bob" and set(new.votes) == {"bob"} and new.first_frame == index
    video.finish()
    assert [s.name for s in video.summary()] == ["alice", "bob"] and not slow.timed_out


def test_a_split_of_a_finished_track_keeps_both_parts_finished() -> None:
    """A worker's answer can show a drift after the track already ended (a cut came first)."""
    from facelab.tracking import IoUTracker

    tracker = IoUTracker()
    (track,) = tracker.update([Face(BOX, 0.9)], frame=0, time_s=0.0)[0]
    tracker.update([Face(BOX, 0.9)], frame=2, time_s=0.2)
    tracker.end_all()
    new = tracker.split(track, track.face, end=(0, 0.0), start=(2, 0.2), hits=1)
    assert tracker.active == [] and tracker.finished == [track, new]
    assert [t.id for t in tracker.all_tracks()] == [track.id, new.id] and isinstance(new, Track)


# -- the same names as inline, on a real clip ----------------------------------------------------


def write_clip(path: Path, photos: list[Path], frames_each: int) -> None:
    """A 640×480 10-fps clip: each photo letterboxed for ``frames_each`` frames, drifting a pixel a
    frame; the photo changes at a cut."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for photo in photos:
        rgb = load_rgb(photo)
        scale = min(WIDTH / rgb.shape[1], HEIGHT / rgb.shape[0])
        small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        y, x = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        base = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        for i in range(frames_each):
            writer.write(cv2.warpAffine(base, np.float32([[1, 0, i % 6 - 3], [0, 1, 0]]), (WIDTH, HEIGHT)))
    writer.release()


def test_worker_gives_the_tracks_and_names_inline_naming_gives(tiny_model, tmp_path: Path) -> None:
    recognizer = Recognizer.from_path(tiny_model.workspace)
    people = ["jerry_seinfeld", "madonna", "elton_john"]
    # Each person's first held-out photo the model names right (this test is about the worker).
    photos = [
        next(p for p in tiny_model.held_out[person] if recognizer.recognize(load_rgb(p))[0].name == person)
        for person in people
    ]
    clip = tmp_path / "three-people.mp4"
    write_clip(clip, photos, frames_each=12)
    lines = {}
    for mode in ("inline", "worker"):
        video = VideoRecognizer(recognizer, VideoOptions(naming=mode))
        for _ in video.frames(classify_input(str(clip))):
            pass
        assert video.naming == mode and not any(t.in_flight for t in video.tracker.all_tracks())
        lines[mode] = [(s.name, s.start_s, s.end_s, s.frames) for s in video.summary()]
    assert [name for name, *_ in lines["inline"]] == people
    assert lines["worker"] == lines["inline"]
    assert math.isfinite(video.stats.name_lag_mean_s) and video.stats.batches >= len(people)


def test_an_embedder_in_a_child_process_gives_the_same_vectors(shared_data: Path) -> None:
    """dlib's own network holds the GIL, so with naming in a worker it runs in a child process:
    the vectors must be the ones the embedder gives here."""
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    from facelab.embedders import find_faces, get_embedder
    from facelab.imageio import iter_image_files
    from facelab.recognize_video import EmbedProcess, holds_gil

    assert not holds_gil(SlowEmbedder())  # waits on an event: a thread is enough
    rgb = load_rgb(next(iter(iter_image_files(shared_data / "celeb5" / "madonna"))))
    faces = find_faces(rgb)
    process = EmbedProcess("dlib")
    try:
        remote = process.embed(rgb, faces)
    finally:
        process.close()
    np.testing.assert_allclose(remote, get_embedder("dlib").embed(rgb, faces), atol=1e-5)
    assert remote.shape == (len(faces), 128) and len(faces) >= 1
