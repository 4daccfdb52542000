"""Speed of recognition: frames per second on 640×480 video with 1–3 faces, photos per second for
``recognize`` on a folder and for ``album index``; writes docs/benchmarks_recognize.md.

    .venv/bin/python bench/bench_recognize.py [--data ../shared/data] [--workspace WS]
        [--frames 250] [--repeats 2] [--load 0 1 2] [--skip-photos] [--doc docs/benchmarks_recognize.md]

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

``--load N …``: the videos are run once per N, with N busy processes started before them and
stopped after them (each a pure-Python spin loop, one core's worth of work, at the benchmark's
niceness), so "on 2 busy cores" names its load: 1 busy process leaves about one core, 2 leave
about two thirds of one (the scheduler shares 2 cores among 3+ runnable threads). The load average
at the start of each run is recorded too (other users' work shows there). ``--skip-photos`` keeps
the photos section of the existing document instead of measuring it again (the album index part
takes minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
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
from facelab.recognize_video import NamingMode
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


# One core's worth of work that needs no memory bandwidth and no library: the plainest "busy".
SPIN = "while True:\n    pass\n"


class BusyLoad:
    """``n`` busy processes for the duration of a ``with`` block (niceness: the benchmark's own)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BusyLoad:
        self.procs = [
            subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for _ in range(self.n)
        ]
        if self.procs:
            time.sleep(2.0)  # let them reach the run queue before the first measurement
        return self

    @property
    def nice(self) -> str:
        return ",".join(str(os.getpriority(os.PRIO_PROCESS, p.pid)) for p in self.procs) or "-"

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs = []


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
    busy: int  # background busy processes during the run
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
    lag: str  # naming in a worker: mean / max seconds from a face's frame to its name


LIVE = "live default: naming in a worker (cameras, streams)"
FILE = "file default: naming inline"
BEFORE = "before #18: inline, re-name every 25 frames, 2 faces a round"
FASTER = "faster: worker, detect every 3rd frame"
NAIVE = "naive (detect every frame at 640 px, name every face every frame)"
CONFIGS: dict[str, VideoOptions] = {
    LIVE: VideoOptions(naming=NamingMode.WORKER),
    FILE: VideoOptions(naming=NamingMode.INLINE),
    BEFORE: VideoOptions(naming=NamingMode.INLINE, reclassify_every=25, max_classify=2),
    FASTER: VideoOptions(naming=NamingMode.WORKER, detect_every=3),
    NAIVE: VideoOptions(
        detect_every=1, detect_size=640, reclassify_every=1, warmup=1, max_classify=99, cuts=False, naming="inline"
    ),
}
# Under a background load only the configurations the question is about (time on a shared machine).
LOADED_CONFIGS = (LIVE, FILE, BEFORE)


def run_video(
    recognizer: Recognizer,
    video: Path,
    people: list[str],
    n_faces: int,
    name: str,
    frames: int,
    repeats: int,
    busy: int,
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
    lag = (
        f"{stats.name_lag_mean_s:.2f} / {stats.name_lag_max_s:.2f}"
        if options.naming is NamingMode.WORKER and stats.batches
        else "–"
    )
    return VideoRow(
        config=name,
        busy=busy,
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
        lag=lag,
    )


# -- photos and albums --------------------------------------------------------------------------


def bench_photos(recognizer: Recognizer, photos: list[Path]) -> dict[str, float]:
    started = time.perf_counter()
    faces = sum(len(recognizer.recognize_photo(p).recognitions) for p in photos)
    seconds = time.perf_counter() - started
    return {"photos": len(photos), "faces": faces, "seconds": seconds, "per_s": len(photos) / seconds}


def bench_album(ws_root: Path, library: Path, recognizer: Recognizer) -> dict[str, dict[str, float]]:
    from facelab.album_index import index_library
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


def load_label(busy: int) -> str:
    if busy == 0:
        return "no background load"
    return f"2 busy cores: {busy} background busy process{'es' if busy > 1 else ''}"


def video_section(rows: list[VideoRow], info: dict[str, str]) -> list[str]:
    lines = ["## Video, 640×480, 25 fps source", ""]
    header = [
        "| configuration | faces | frames | fps measured, best (worst) | CPU ms/frame | fps, 2 idle cores (≥) "
        "| detect ms/frame | name ms/frame | name lag s, mean / max "
        "| faces named | tracks found / people shown | named right | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for busy in sorted({r.busy for r in rows}):
        lines += [f"### {load_label(busy)}", "", *header]
        for r in (r for r in rows if r.busy == busy):
            lines.append(
                f"| {r.config} | {r.faces} | {r.frames} | **{r.fps:.1f}** ({r.fps_worst:.1f}) | {r.cpu_ms:.1f} "
                f"| {1000 / r.cpu_ms:.0f} | {r.detect_ms:.1f} | {r.classify_ms:.1f} | {r.lag} "
                f"| {r.classified} | {r.tracks} | {r.right} | {r.load} |"
            )
        lines.append("")
    lines += ["### Is it real time?", ""]
    live = [r for r in rows if r.config == LIVE]
    for busy in sorted({r.busy for r in live}):
        here = [r for r in live if r.busy == busy]
        three = [r for r in here if r.faces == 3]
        verdict = "**yes**" if three and three[0].fps >= 25 else "**no**" if three else "not measured with 3 faces"
        rates = ", ".join(f"{r.faces} face(s) {r.fps:.1f} fps" for r in here)
        lines.append(f"* {load_label(busy)}: 3 faces at 25 fps or more with naming in a worker: {verdict} ({rates}).")
    before = {(r.busy, r.faces): r for r in rows if r.config == BEFORE}
    after = {(r.busy, r.faces): r for r in rows if r.config == FILE}
    gains = [
        f"{k[1]} face(s) {load_label(k[0])}: {before[k].classified} → {after[k].classified} faces named, "
        f"{before[k].fps:.1f} → {after[k].fps:.1f} fps"
        for k in sorted(before)
        if k in after
    ]
    lines += [
        "",
        "The frame loop never waits for a name in the *live default* rows: naming (dlib's network, ~0.1 s "
        "of one core a face) runs in a worker thread, and *name lag* is how long a face waited for its "
        "name (from the frame it was sent in to the frame the answer was folded into its track); the "
        "track shows no name meanwhile. The *file default* names inline (a file gives the same answers "
        "on every run, see `NamingMode`); its fps is how fast a file is processed. *fps measured* counts "
        "frames as fast as the file can be read, i.e. a camera faster than the machine: a real camera "
        "delivers 25–30 fps and the frames it cannot take are dropped (buffer of 1).",
        "",
        "Re-naming only when needed (a new track, a box that moved, a face that changed, and a periodic "
        "refresh every 100 frames instead of 25), measured inline: " + "; ".join(gains) + ".",
        "",
        "The naive row (detect at full size and name every face in every frame) is what tracking saves.",
        f"Busy processes ran at niceness {info.get('busy_nice', '-')}.",
        "",
    ]
    return lines


def photos_section(photos: dict, album: dict) -> list[str]:
    lines = [
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
    return lines


def kept_photos_section(doc: Path) -> list[str]:
    """The photos section of an existing document (``--skip-photos``), word for word."""
    text = doc.read_text() if doc.is_file() else ""
    if "## Photos" not in text:
        raise SystemExit(f"--skip-photos: {doc} has no '## Photos' section to keep; run without it once")
    return [*text[text.index("## Photos") :].rstrip("\n").split("\n"), ""]


def write_doc(path: Path, info: dict[str, str], rows: list[VideoRow], photos: list[str]) -> None:
    lines = [
        "# Recognition speed",
        "",
        "Measured by `bench/bench_recognize.py` (method in its docstring). Machine: "
        f"**{info['nproc']} CPU cores ({info['cpu']})**, no GPU; {info['date']}; Python {info['python']}, "
        f"OpenCV {info['opencv']}, onnxruntime {info['onnxruntime']}, dlib {info['dlib']}. "
        "Detector RetinaFace (MobileNet-0.25, ONNX), names by dlib's 128-d embedding + prototype head.",
        "",
        "**Machine load**: each video table ran with a named number of background busy processes (`--load`: "
        "pure-Python spin loops, one core's work each, started before the videos and stopped after them). "
        "The load average (1/5/15 min) at the start of each run is given too (the benchmark's own work "
        "counts about 1–2 of it, the busy processes one each once the average has caught up, other users' "
        "jobs the rest), and the benchmark ran at niceness "
        f"{info.get('nice', '0')} (negative: scheduled ahead of other jobs). "
        "With a load above the core count every figure is pessimistic; "
        "CPU ms/frame (process time of all its threads) is the steadier figure. It gives the "
        "*estimated* column: were the two cores ours alone, a frame would take at most its CPU time "
        "(all work one after the other on one core; the detector's two threads and the naming worker only "
        "shorten it), so 1000 / CPU ms is a lower bound of the idle-machine rate — an estimate, not a "
        "measurement, and CPU time itself is inflated by the contention (shared caches), so it errs low.",
        "",
        "*named right* counts a track as right when its name is the person shown in its tile; a track "
        "answered `unknown` (the person's score under the model's threshold, calibrated on LFW strangers) "
        "counts as wrong and is noted in brackets.",
        "",
        *video_section(rows, info),
        *photos,
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
    parser.add_argument(
        "--load",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="background busy processes during the videos; one video table per value",
    )
    parser.add_argument("--skip-photos", action="store_true", help="keep the existing doc's photos section")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_recognize.md")
    args = parser.parse_args()

    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    kept = kept_photos_section(args.doc) if args.skip_photos else None
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
        videos = {}
        for n_faces in (1, 2, 3):
            first = [singles[p][0] for p in PEOPLE[:n_faces]]
            second = [singles[p][1] for p in PEOPLE[-n_faces:]]
            video = tmp / f"faces{n_faces}.mp4"
            videos[n_faces] = (video, make_video(recognizer, video, first, second, args.frames))
        rows = []
        for busy in args.load:
            with BusyLoad(busy) as load_procs:
                if busy:
                    info["busy_nice"] = load_procs.nice
                for n_faces, (video, people) in videos.items():
                    for name in CONFIGS if busy == 0 else LOADED_CONFIGS:
                        frames = args.naive_frames if name == NAIVE else args.frames
                        row = run_video(recognizer, video, people, n_faces, name, frames, args.repeats, busy)
                        print(row, file=sys.stderr)
                        rows.append(row)
                if not load_procs.alive():
                    raise SystemExit(f"a background busy process stopped early: the rows under load {busy} are void")

        if kept is not None:
            photos_lines = kept
        else:
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
            photos_lines = photos_section(photos, album)
    write_doc(args.doc, info, rows, photos_lines)
    print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
