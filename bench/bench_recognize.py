"""Speed of recognition: frames per second on 640×480 video with 1–3 faces, photos per second for
``recognize`` on a folder and for ``album index``; writes docs/benchmarks_recognize.md.

    .venv/bin/python bench/bench_recognize.py [--data ../shared/data] [--workspace WS]
        [--frames 250] [--repeats 2] [--doc docs/benchmarks_recognize.md]

Model: an embedding-track run (dlib 128-d + prototype head, threshold calibrated on 40 LFW
strangers) trained on the first 8 photos of each celeb5 person through the real pipeline (build →
resolve identities → split → train), unless ``--workspace`` names one with a current model.

Videos are synthetic but made of real photos the model never saw: held-out celeb5 photos tiled
side by side (1, 2 or 3 people) on a 640×480 canvas, drifting a few pixels per frame like a hand-held
camera, 25 fps; halfway through the people change (a cut), so new tracks are created and named
mid-video. fps is frames / wall-clock seconds of :class:`facelab.recognize.VideoRecognizer` (decode,
detect, track, name; no drawing or writing), after the models are loaded; the best of
``--repeats`` runs is kept because other processes on a shared machine only ever slow a run down.
CPU ms/frame (process time, all threads) is also given: it depends much less on other load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelab.imageio import iter_image_files, load_rgb
from facelab.recognize import Recognizer, VideoOptions, VideoRecognizer, classify_input
from facelab.types import Box
from machine_info import cpu_model

REPO = Path(__file__).resolve().parents[1]

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")
TRAIN_PHOTOS = 8
SIZE = (640, 480)


# -- machine ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import dlib
    import onnxruntime

    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": nproc,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "dlib": dlib.__version__,
        # Negative when run as `nice -n -10 …` to take precedence over other jobs on a shared machine.
        "nice": str(os.nice(0)),
    }


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- model --------------------------------------------------------------------------------------


def build_model(data: Path, root: Path) -> tuple[Path, dict[str, list[Path]]]:
    """A workspace whose current model knows PEOPLE; returns it and each person's unseen photos."""
    from facelab.build import build
    from facelab.embed_track import train_embedding_run
    from facelab.identity import resolve_identities
    from facelab.split import split_workspace
    from facelab.store import Workspace

    photos = root / "photos"
    held_out: dict[str, list[Path]] = {}
    for person in PEOPLE:
        files = list(iter_image_files(data / "celeb5" / person))
        (photos / person).mkdir(parents=True)
        for path in files[:TRAIN_PHOTOS]:
            shutil.copy(path, photos / person / path.name)
        held_out[person] = files[TRAIN_PHOTOS:]
    strangers = root / "strangers"
    strangers.mkdir()
    for path in sorted((data / "strangers").iterdir())[:40]:
        (strangers / path.name).symlink_to(path)
    with Workspace(root / "ws") as ws:
        build(photos, ws)
        resolve_identities(ws)
        split_workspace(ws, ratios=(0.7, 0.3, 0.0))
        run = train_embedding_run(ws, strangers=strangers)
        ws.set_setting("current_model", run.name)
    return root / "ws", held_out


# -- videos -------------------------------------------------------------------------------------


def fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))))
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def portrait(rgb: np.ndarray, face: Box, width: int, height: int) -> np.ndarray:
    """The region around ``face`` (head and shoulders: 2.4 face sides wide) fitted into a tile, so
    faces in a 3-person frame are ~85 px wide, as at a webcam, not shrunk with the whole photo."""
    cx, cy = face.center
    side = 2.4 * max(face.width, face.height)
    half_w, half_h = side / 2, side * height / width / 2
    x1, y1 = max(0, round(cx - half_w)), max(0, round(cy - half_h * 0.8))
    x2, y2 = min(rgb.shape[1], round(cx + half_w)), min(rgb.shape[0], round(cy + half_h * 1.2))
    return fit(rgb[y1:y2, x1:x2], width, height)


def tiled(recognizer: Recognizer, photos: list[Path]) -> np.ndarray:
    width = SIZE[0] // len(photos)
    tiles = []
    for path in photos:
        rgb = load_rgb(path)
        (face,) = recognizer.detect(rgb)
        tiles.append(portrait(rgb, face.box, width, SIZE[1]))
    return np.hstack(tiles)


def single_face(recognizer: Recognizer, photos: list[Path], n: int) -> list[Path]:
    """The first ``n`` photos in which exactly one face is found."""
    out = []
    for path in photos:
        if len(recognizer.detect(load_rgb(path))) == 1:
            out.append(path)
            if len(out) == n:
                break
    return out


def make_video(recognizer: Recognizer, path: Path, first: list[Path], second: list[Path], frames: int) -> list[str]:
    """``first`` tiled for half the frames, then ``second``; returns the people in order of tiles."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    for group, count in ((first, frames // 2), (second, frames - frames // 2)):
        base = cv2.cvtColor(np.ascontiguousarray(tiled(recognizer, group)), cv2.COLOR_RGB2BGR)
        if base.shape[1] < SIZE[0]:
            base = cv2.copyMakeBorder(base, 0, 0, 0, SIZE[0] - base.shape[1], cv2.BORDER_CONSTANT)
        for i in range(count):
            dx, dy = 6 * np.sin(i / 9), 3 * np.cos(i / 13)
            shift = np.float32([[1, 0, dx], [0, 1, dy]])
            writer.write(cv2.warpAffine(base, shift, SIZE))
    writer.release()
    return [p.parent.name for p in first] + [p.parent.name for p in second]


@dataclass
class VideoRow:
    config: str
    faces: int
    frames: int
    fps: float
    fps_worst: float
    cpu_ms: float
    detect_ms: float
    classify_ms: float
    classified: int
    tracks: str
    right: str
    load: str


CONFIGS: dict[str, VideoOptions] = {
    "default (detect every 2nd frame at 320 px, re-name every 25)": VideoOptions(),
    "faster (detect every 3rd frame)": VideoOptions(detect_every=3),
    "naive (detect every frame at 640 px, name every face every frame)": VideoOptions(
        detect_every=1, detect_size=640, reclassify_every=1, warmup=1, max_classify=99, cuts=False
    ),
}


def run_video(
    recognizer: Recognizer, video: Path, people: list[str], n_faces: int, name: str, frames: int, repeats: int
) -> VideoRow:
    options = CONFIGS[name]
    best: tuple[float, VideoRecognizer, float] | None = None
    loads = []
    rates = []
    for _ in range(repeats):
        runner = VideoRecognizer(recognizer, options)
        loads.append(load())
        cpu = time.process_time()
        for _frame in runner.frames(classify_input(str(video)), max_frames=frames):
            pass
        cpu = time.process_time() - cpu
        rates.append(runner.stats.fps)
        if best is None or runner.stats.fps > best[0]:
            best = (runner.stats.fps, runner, cpu)
    assert best is not None
    fps, runner, cpu = best
    stats = runner.stats
    summary = runner.summary()
    # A track is right when its name is the person of the tile its box is in, in its half.
    width = SIZE[0] // n_faces
    half = frames // 2 / runner.fps
    right = 0
    for track in summary:
        tile = min(n_faces - 1, int(((track.box[0] + track.box[2]) / 2) // width))
        who = people[tile + (n_faces if track.start_s >= half else 0)]
        right += track.name == who
    unknown = sum(track.name == "unknown" for track in summary)
    return VideoRow(
        config=name,
        faces=n_faces,
        frames=stats.frames,
        fps=fps,
        fps_worst=min(rates),
        cpu_ms=1000 * cpu / max(stats.frames, 1),
        detect_ms=1000 * stats.detect_s / max(stats.frames, 1),
        classify_ms=1000 * stats.classify_s / max(stats.frames, 1),
        classified=stats.classified_faces,
        tracks=f"{len(summary)}/{2 * n_faces}",
        right=f"{right}/{len(summary)}" + (f" ({unknown} unknown)" if unknown else ""),
        load=" → ".join(loads),
    )


# -- photos and albums --------------------------------------------------------------------------


def bench_photos(recognizer: Recognizer, photos: list[Path]) -> dict[str, float]:
    started = time.perf_counter()
    faces = sum(len(recognizer.recognize_photo(p).recognitions) for p in photos)
    seconds = time.perf_counter() - started
    return {"photos": len(photos), "faces": faces, "seconds": seconds, "per_s": len(photos) / seconds}


def bench_album(ws_root: Path, library: Path, recognizer: Recognizer) -> dict[str, dict[str, float]]:
    from facelab.albums import index_library
    from facelab.store import Workspace

    out = {}
    with Workspace(ws_root) as ws:
        for label, rec in (
            ("first index", recognizer),
            ("again, nothing changed", recognizer),
            ("model changed: re-named from stored vectors", Recognizer(recognizer.model, threshold=0.5)),
        ):
            load_before = load()
            started = time.perf_counter()
            result = index_library(ws, library, rec)
            seconds = time.perf_counter() - started
            out[label] = {
                "photos": result.scanned,
                "faces": result.faces,
                "seconds": seconds,
                "per_s": result.scanned / seconds,
                "load": load_before,
            }
    return out


# -- report -------------------------------------------------------------------------------------


def write_doc(path: Path, info: dict[str, str], rows: list[VideoRow], photos: dict, album: dict) -> None:
    lines = [
        "# Recognition speed",
        "",
        "Measured by `bench/bench_recognize.py` (method in its docstring). Machine: "
        f"**{info['nproc']} CPU cores ({info['cpu']})**, no GPU; {info['date']}; Python {info['python']}, "
        f"OpenCV {info['opencv']}, onnxruntime {info['onnxruntime']}, dlib {info['dlib']}. "
        "Detector RetinaFace (MobileNet-0.25, ONNX), names by dlib's 128-d embedding + prototype head.",
        "",
        "**Machine load**: the load average (1/5/15 min) at the start of each run is given (the benchmark's "
        "own work counts about 1–2 of it), and the benchmark ran at niceness "
        f"{info.get('nice', '0')} (negative: scheduled ahead of other jobs). "
        "With a load above the core count every figure is pessimistic; "
        "CPU ms/frame (process time of all its threads) is the steadier figure. It gives the "
        "*estimated* column: were the two cores ours alone, a frame would take at most its CPU time "
        "(all work one after the other on one core; the detector's two threads only shorten it), so "
        "1000 / CPU ms is a lower bound of the idle-machine rate — an estimate, not a measurement, "
        "and CPU time itself is inflated by the contention (shared caches), so it errs low.",
        "",
        "*named right* counts a track as right when its name is the person shown in its tile; a track "
        "answered `unknown` (the person's score under the model's threshold, calibrated on LFW strangers) "
        "counts as wrong and is noted in brackets.",
        "",
        "## Video, 640×480, 25 fps source",
        "",
        "| configuration | faces | frames | fps measured, best (worst) | CPU ms/frame | fps, 2 idle cores (≥) "
        "| detect ms/frame | name ms/frame "
        "| faces named | tracks found / people shown | named right | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.config} | {r.faces} | {r.frames} | **{r.fps:.1f}** ({r.fps_worst:.1f}) | {r.cpu_ms:.1f} "
            f"| {1000 / r.cpu_ms:.0f} | {r.detect_ms:.1f} "
            f"| {r.classify_ms:.1f} | {r.classified} | {r.tracks} | {r.right} | {r.load} |"
        )
    default = [r for r in rows if r.config.startswith("default")]
    reached = [r.faces for r in default if r.fps >= 25]
    missed = [r for r in default if r.fps < 25]
    lines += ["", "### Is it real time?", ""]
    if not missed:
        lines.append("Yes: with the defaults every video (1–3 faces) ran at 25 fps or more on this machine.")
    else:
        slow = ", ".join(f"{r.faces} face(s) ran at {r.fps:.1f} fps" for r in missed)
        lines.append(
            f"Not everywhere: with the defaults {slow}"
            + (f", while {', '.join(map(str, reached))} face(s) reached 25 fps" if reached else "")
            + " (measured, on the shared machine). "
            + (
                f"The work itself fits: by CPU time every default row would run at "
                f"{min(1000 / r.cpu_ms for r in default):.0f} fps or more on two idle cores (estimated "
                "above, not measured). "
                if all(1000 / r.cpu_ms >= 25 for r in default)
                else ""
            )
            + "Naming a face (dlib's network, ~0.1 s of one core, holding Python's GIL) is the "
            "expensive step: each new person costs `warmup` namings, then one every `reclassify_every` "
            "frames. Faster settings: `--detect-every 3`, `--reclassify-every 50`; a live camera drops the "
            "frames it cannot process (buffer of 1), so the picture stays current at a lower rate."
        )
    lines += [
        "",
        "The naive row (detect at full size and name every face in every frame) is what tracking saves.",
        "",
        "## Photos",
        "",
        "| task | photos | faces | seconds | photos/s | load avg |",
        "|---|---|---|---|---|---|",
        "| `facelab recognize` (detect at 1024 px, name every face) "
        f"| {photos['photos']} | {photos['faces']} | {photos['seconds']:.1f} "
        f"| **{photos['per_s']:.2f}** | {photos['load']} |",
    ]
    for label, r in album.items():
        lines.append(
            f"| `album index`: {label} | {r['photos']} | {r['faces']} | {r['seconds']:.1f} "
            f"| **{r['per_s']:.2f}** | {r['load']} |"
        )
    lines += [
        "",
        "Library: the held-out celeb5 photos plus the first 60 sports5 photos (crowds, several faces, "
        "some without a usable face). Re-indexing an unchanged library only compares sizes and "
        "modification times; a changed model re-names faces from the stored embeddings without "
        "reading a photo.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--workspace", type=Path, help="existing workspace with a current model")
    parser.add_argument("--frames", type=int, default=250, help="frames per video (25 fps)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is kept")
    parser.add_argument("--naive-frames", type=int, default=50, help="frames for the naive configuration")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_recognize.md")
    args = parser.parse_args()

    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="facelab-bench-recognize-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        if args.workspace:
            ws_root = args.workspace
            held_out = {p: list(iter_image_files(args.data / "celeb5" / p))[TRAIN_PHOTOS:] for p in PEOPLE}
        else:
            ws_root, held_out = build_model(args.data, tmp / "model")
        print(f"model ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        recognizer = Recognizer.from_path(ws_root)
        recognizer.warm_up()

        singles = {p: single_face(recognizer, held_out[p], 2) for p in PEOPLE}
        rows = []
        for n_faces in (1, 2, 3):
            first = [singles[p][0] for p in PEOPLE[:n_faces]]
            second = [singles[p][1] for p in PEOPLE[-n_faces:]]
            video = tmp / f"faces{n_faces}.mp4"
            people = make_video(recognizer, video, first, second, args.frames)
            for name in CONFIGS:
                frames = args.naive_frames if name.startswith("naive") else args.frames
                row = run_video(recognizer, video, people, n_faces, name, frames, args.repeats)
                print(row, file=sys.stderr)
                rows.append(row)

        photo_list = [p for person in PEOPLE for p in held_out[person]][:40]
        load_before = load()
        photos = bench_photos(recognizer, photo_list) | {"load": load_before}
        print(photos, file=sys.stderr)

        library = tmp / "library"
        for person in PEOPLE:
            (library / person).mkdir(parents=True)
            for path in held_out[person]:
                (library / person / path.name).symlink_to(path)
        (library / "sports").mkdir()
        for path in sorted(p for p in iter_image_files(args.data / "sports5"))[:60]:
            (library / "sports" / f"{path.parent.name}-{path.name}").symlink_to(path)
        album_ws = tmp / "album-ws"
        shutil.copytree(ws_root, album_ws)
        album = bench_album(album_ws, library, Recognizer.from_path(album_ws))
        print(album, file=sys.stderr)
    write_doc(args.doc, info, rows, photos, album)
    print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
