"""Side by side: ``facelab album index`` and the face_recognition peer name the faces of the same
photos in the same run (issue #18); writes docs/benchmarks_album.md.

    .venv/bin/python bench/bench_album.py [--data ../shared/data] [--train 8] [--repeats 2]
        [--limit N] [--peer-cpus 1 2] [--peer-venv .bench/peer-venv] [--keep DIR]
        [--doc docs/benchmarks_album.md]

A full run (every library photo, both tools twice, the peer with ``--cpus`` 1 and all cores)
takes ~20 min on two idle cores; ``--limit 5 --repeats 1`` a few minutes.

Photos. For each person of ``sports5`` and ``celeb5`` (both shared sets, ten people) the first
``--train`` photos in file-name order with distinct contents (sha256) are the *training* photos;
every other photo of the person is the *library*, except byte-identical copies of a training photo
(sports5 has ``x.jpg`` next to ``x (1).jpg``), so neither tool is tested on a photo it learnt from.
``--limit N`` keeps the first N library photos per person (a quick run).

facelab, through its CLI as a user runs it: ``facelab build TRAIN -w WS`` (RetinaFace, works out
which face is the folder's person), ``facelab split WS``, ``facelab train WS --track embedding``
(dlib 128-d embeddings, prototype head, "unknown" threshold calibrated with the strangers that ship
with facelab; the run becomes current and is deployed refit on every labelled photo). Not timed
against the peer (the peer's known-face loading is reported beside it). Then, per set, on a fresh
copy of WS (empty album tables): ``facelab album index LIBRARY/<set> -w WS_COPY -q`` — the whole
command's wall time, interpreter start and model loading included. When the CLI has ``--workers``,
it runs with 1 worker and with every core. The rate *after loading* is (photos - 1) / (time the
last photo was stored - time the first was stored), from the album table's ``indexed_at`` (1 s
resolution).

The peer, face_recognition 1.3.0 in its own virtual environment (``scripts/peer_env.sh``:
face_recognition ``--no-deps`` + dlib-bin, face_recognition_models, numpy, Pillow, Click from PyPI)
runs ``bench/peer_runner.py`` as a subprocess: its CLI's ``scan_known_people`` on the same training
photos (one known image each, ``<person>__<n>.jpg``), then its CLI's per-photo steps on the same
library photos, one set at a time (its docstring has the exact recipe). Its photos/s is photos /
wall time of the photos loop (loading its models and known faces excluded, reported apart); with
``--cpus`` > 1 the loop is a forkserver process pool, as the CLI's. A face's name is the person of
the nearest known image within tolerance 0.6 (what the project's examples do with
``face_distance``); the CLI prints *every* known image within tolerance, so faces that match
images of two or more people are counted as *ambiguous*.

Comparison per photo: faces are paired across the tools by box overlap (IoU ≥ 0.3, best pairs
first); *names agreed* counts pairs with the same person or both unknown; *right person* counts
photos where the folder's person is named on some face. Each timing is the best of ``--repeats``
runs (other jobs on a shared machine only slow a run down); the load average before and after
each timed command is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from machine_info import cpu_model

REPO = Path(__file__).resolve().parents[1]
SETS = ("sports5", "celeb5")
IMAGE = re.compile(r".*\.(jpg|jpeg|png)$", re.IGNORECASE)  # what both tools read (the peer's CLI: only these)
IOU = 0.3
UNKNOWN = "unknown"

Box = tuple[float, float, float, float]


# -- machine ------------------------------------------------------------------------------------


def load() -> str:
    """The load average (1/5/15 min)."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    """The machine and the versions on facelab's side."""
    import cv2
    import dlib
    import onnxruntime

    from facelab import __version__

    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "facelab": __version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "dlib": dlib.__version__,
        "nice": str(os.nice(0)),
    }


# -- photos -------------------------------------------------------------------------------------


@dataclass
class Person:
    set: str
    name: str
    train: list[Path] = field(default_factory=list)
    library: list[Path] = field(default_factory=list)
    dropped: int = 0  # library photos byte-identical to a training photo


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def choose_photos(data: Path, n_train: int, limit: int | None) -> list[Person]:
    """Training and library photos of every person of SETS (see the module docstring)."""
    people = []
    for set_name in SETS:
        for folder in sorted(p for p in (data / set_name).iterdir() if p.is_dir()):
            person = Person(set_name, folder.name)
            files = sorted(p for p in folder.rglob("*") if p.is_file() and IMAGE.match(p.name))
            seen: set[str] = set()
            rest = []
            for path in files:
                digest = sha256(path)
                if len(person.train) < n_train and digest not in seen:
                    person.train.append(path)
                    seen.add(digest)
                else:
                    rest.append((path, digest))
            person.library = [p for p, d in rest if d not in seen]
            person.dropped = len(rest) - len(person.library)
            if limit is not None:
                person.library = person.library[:limit]
            people.append(person)
    return people


def link(target: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.resolve())
    return path


def lay_out(people: Sequence[Person], root: Path) -> tuple[Path, Path, dict[str, list[str]], dict[str, str]]:
    """Folders for both tools, as links: ``train/<person>/`` (facelab), ``known/<person>__<n>.jpg``
    (the peer) and ``library/<set>/<person>/``. Returns them, each set's library paths and each
    library path's person."""
    train, known, library = root / "train", root / "known", root / "library"
    per_set: dict[str, list[str]] = {s: [] for s in SETS}
    truth: dict[str, str] = {}
    for person in people:
        for i, path in enumerate(person.train):
            link(path, train / person.name / path.name)
            link(path, known / f"{person.name}__{i:02d}{path.suffix.lower()}")
        for path in person.library:
            linked = link(path, library / person.set / person.name / path.name)
            per_set[person.set].append(os.path.abspath(linked))
            truth[os.path.abspath(linked)] = person.name
    return train, known, per_set, truth


# -- facelab ------------------------------------------------------------------------------------


def facelab_cmd(*args: str | Path) -> list[str]:
    return [str(Path(sys.executable).parent / "facelab"), *map(str, args)]


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cmd(cmd: list[str], log: Path) -> float:
    """Run ``cmd``, its output to ``log``; the wall seconds. Fails loudly with the log's tail."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{tail}")
    return seconds


def train_facelab(train: Path, ws: Path, log: Path) -> dict[str, float]:
    """Build, split and train a workspace through the CLI; the seconds of each step."""
    return {
        "build": run_cmd(facelab_cmd("build", train, "-w", ws, "-q"), log),
        "split": run_cmd(facelab_cmd("split", ws), log),
        "train": run_cmd(facelab_cmd("train", ws, "--track", "embedding", "-q"), log),
    }


def has_workers() -> bool:
    """Whether ``facelab album index`` takes ``--workers`` (the parallel indexer)."""
    done = subprocess.run(
        facelab_cmd("album", "index", "--help"), capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"}
    )
    return "--workers" in done.stdout


@dataclass
class FacelabRun:
    set: str
    workers: int | None  # None: the CLI has no --workers
    photos: int
    seconds: float  # best whole-command wall time
    after_load: float | None  # photos/s between the first and the last photo stored
    first_s: float | None  # seconds from the command's start to the first photo stored (±1 s)
    cpu_s: float  # CPU seconds of the whole command (all its processes and threads)
    runs: list[tuple[float, str, str]]  # (seconds, load before, load after) of every repeat
    faces: dict[str, list[tuple[Box, str]]]  # photo path → [(box, name)]


def read_album(ws: Path, started: float) -> tuple[dict[str, list[tuple[Box, str]]], float | None, float | None]:
    """Every photo's faces (box, name) from a workspace's album tables, the rate after load and the
    seconds from ``started`` (epoch) to the first photo stored."""
    db = sqlite3.connect(ws / ".facelab" / "facelab.db")
    db.row_factory = sqlite3.Row
    faces: dict[str, list[tuple[Box, str]]] = {}
    stamps = []
    for photo in db.execute("SELECT id, path, indexed_at FROM album_photos"):
        stamps.append(dt.datetime.fromisoformat(photo["indexed_at"]).replace(tzinfo=dt.UTC))  # SQLite: UTC
        faces[photo["path"]] = [
            ((r["x1"], r["y1"], r["x2"], r["y2"]), r["name"] or UNKNOWN)
            for r in db.execute("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo["id"],))
        ]
    db.close()
    if not stamps:
        return faces, None, None
    span = (max(stamps) - min(stamps)).total_seconds()
    return faces, (len(stamps) - 1) / span if span > 0 else None, min(stamps).timestamp() - started


def bench_facelab(
    ws: Path, library: Path, set_name: str, workers: int | None, repeats: int, tmp: Path, log: Path
) -> FacelabRun:
    """``facelab album index`` on one set, each repeat on a fresh copy of ``ws``; the best kept."""
    best: FacelabRun | None = None
    runs = []
    for r in range(repeats):
        copy = tmp / f"ws-{set_name}-{workers}-{r}"
        shutil.copytree(ws, copy, symlinks=True)
        extra = ["--workers", str(workers)] if workers is not None else []
        before = load()
        started = time.time()
        cpu = children_cpu()
        seconds = run_cmd(facelab_cmd("album", "index", library / set_name, "-w", copy, "-q", *extra), log)
        cpu = children_cpu() - cpu
        runs.append((seconds, before, load()))
        print(f"facelab {set_name} workers={workers}: {seconds:.1f} s, load {before} → {load()}", file=sys.stderr)
        if best is None or seconds < best.seconds:
            faces, after, first = read_album(copy, started)
            best = FacelabRun(set_name, workers, len(faces), seconds, after, first, cpu, [], faces)
        shutil.rmtree(copy)
    assert best is not None
    best.runs = runs
    return best


# -- the peer -----------------------------------------------------------------------------------


def peer_env(venv: Path) -> Path:
    """The peer's virtual environment (made or reused by scripts/peer_env.sh); its python."""
    subprocess.run(["bash", str(REPO / "scripts" / "peer_env.sh"), str(venv)], check=True)
    return venv / "bin" / "python"


def bench_peer(
    python: Path,
    known: Path,
    per_set: dict[str, list[str]],
    cpus: Sequence[int],
    repeats: int,
    tmp: Path,
    log: Path,
) -> dict[str, Any]:
    """Run bench/peer_runner.py once (known faces loaded once, then every ``--cpus`` value and set in
    turn); its JSON, with the whole command's wall time and load average added."""
    lists = []
    for set_name, files in per_set.items():
        listing = tmp / f"peer-{set_name}.txt"
        listing.write_text("\n".join(files) + "\n")
        lists += ["--photos", str(listing)]
    out = tmp / "peer.json"
    cmd = [str(python), str(REPO / "bench" / "peer_runner.py"), "--known", str(known), *lists, "--out", str(out)]
    cmd += ["--cpus", *map(str, cpus), "--repeats", str(repeats), "--check", "10"]
    env = os.environ | {"PYTHONWARNINGS": "ignore::UserWarning"}  # pkg_resources' deprecation notice
    before = load()
    started = time.perf_counter()
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(cmd)}\n")
        stream.flush()
        subprocess.run(cmd, stdout=stream, stderr=stream, check=True, env=env)
    result = json.loads(out.read_text())
    result["command_s"] = time.perf_counter() - started
    result["load_before"], result["load_after"] = before, load()
    for n, groups in result["by_cpus"].items():
        for set_name, group in zip(per_set, groups, strict=True):
            print(f"peer {set_name} --cpus {n}: {group['loop_s']:.1f} s, runs {group['runs']}", file=sys.stderr)
    return result


def transpose_box(box: Box, orientation: int, width: int, height: int) -> Box:
    """A box in a photo's stored pixels → after its EXIF orientation is applied (as facelab does)."""
    x1, y1, x2, y2 = box
    w, h = width, height
    maps = {
        2: lambda x, y: (w - x, y),
        3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (h - y, x),
        7: lambda x, y: (h - y, w - x),
        8: lambda x, y: (y, w - x),
    }
    if orientation not in maps:
        return box
    (ax, ay), (bx, by) = maps[orientation](x1, y1), maps[orientation](x2, y2)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def peer_faces(groups: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[Box, str]]], int, int]:
    """Every photo's faces (box, person) as the peer named them; the ambiguous faces (matches of
    two or more people) and the photos it could not read."""
    faces: dict[str, list[tuple[Box, str]]] = {}
    ambiguous = errors = 0
    for group in groups:
        for photo in group["photos"]:
            errors += "error" in photo
            found = []
            for face in photo["faces"]:
                people = {name.split("__")[0] for name, _ in face["matches"]}
                ambiguous += len(people) > 1
                nearest = min(face["matches"], key=lambda m: m[1])[0].split("__")[0] if face["matches"] else UNKNOWN
                box = transpose_box(tuple(face["box"]), photo.get("orientation", 1), photo["width"], photo["height"])
                found.append((box, nearest))
            faces[photo["file"]] = found
    return faces, ambiguous, errors


# -- comparison ---------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def pair(ours: Sequence[tuple[Box, str]], theirs: Sequence[tuple[Box, str]]) -> list[tuple[int, int]]:
    """Faces paired across the tools: IoU ≥ IOU, the best-overlapping pairs first, each face once."""
    scored = sorted(((iou(a[0], b[0]), i, j) for i, a in enumerate(ours) for j, b in enumerate(theirs)), reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for score, i, j in scored:
        if score < IOU:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


@dataclass
class Agreement:
    photos: int = 0
    ours: int = 0  # faces facelab found
    theirs: int = 0  # faces the peer found
    paired: int = 0  # faces both found (IoU ≥ 0.3)
    agreed: int = 0  # paired faces with the same name (or both unknown)
    both_named: int = 0  # paired faces both named someone
    ours_right: int = 0  # photos where facelab named the folder's person on some face
    theirs_right: int = 0
    ours_named: int = 0  # faces given a name
    theirs_named: int = 0


def compare(
    files: Iterable[str],
    truth: dict[str, str],
    ours: dict[str, list[tuple[Box, str]]],
    theirs: dict[str, list[tuple[Box, str]]],
) -> Agreement:
    out = Agreement()
    for path in files:
        a, b = ours.get(path, []), theirs.get(path, [])
        out.photos += 1
        out.ours += len(a)
        out.theirs += len(b)
        out.ours_named += sum(name != UNKNOWN for _, name in a)
        out.theirs_named += sum(name != UNKNOWN for _, name in b)
        for i, j in pair(a, b):
            out.paired += 1
            out.agreed += a[i][1] == b[j][1]
            out.both_named += a[i][1] != UNKNOWN and b[j][1] != UNKNOWN
        out.ours_right += any(name == truth[path] for _, name in a)
        out.theirs_right += any(name == truth[path] for _, name in b)
    return out


# -- report -------------------------------------------------------------------------------------


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "–"


def rate(photos: int, seconds: float) -> float:
    return photos / seconds if seconds > 0 else float("nan")


def write_doc(
    path: Path,
    info: dict[str, str],
    people: Sequence[Person],
    train_s: dict[str, float],
    fl_runs: dict[int | None, dict[str, FacelabRun]],
    peer: dict[str, Any],
    per_set: dict[str, list[str]],
    truth: dict[str, str],
    args: argparse.Namespace,
) -> None:
    peers = {int(n): groups for n, groups in peer["by_cpus"].items()}
    v = peer["versions"]
    n_train = sum(len(p.train) for p in people)
    n_dropped = sum(p.dropped for p in people)
    known = peer["known"]
    no_face = sum("No faces found" in w for w in known["warnings"])
    multi = sum("More than one face" in w for w in known["warnings"])
    limit = f", at most {args.limit} per person (`--limit`)" if args.limit else ""
    lines = [
        "# Album indexing side by side with face_recognition",
        "",
        "Measured by `bench/bench_album.py` (method in its docstring; `make bench-album`). Machine: "
        f"**{info['nproc']} CPU cores ({info['cpu']})**, no GPU; {info['date']}; niceness {info['nice']}. "
        f"facelab {info['facelab']} (Python {info['python']}, OpenCV {info['opencv']}, onnxruntime "
        f"{info['onnxruntime']}, dlib {info['dlib']}) against **face_recognition {v['face_recognition']}** "
        f"(face_recognition_models {v['face_recognition_models']}, dlib-bin {v['dlib']}, numpy {v['numpy']}, "
        f"Pillow {v['Pillow']}, Python {v['python']}) in its own virtual environment (`scripts/peer_env.sh`).",
        "",
        f"**Same photos, same people.** Both learnt from the same {n_train} training photos ({args.train} per "
        "person, the first in file-name order with distinct contents, of the ten people of sports5 and celeb5) "
        f"and named the same {sum(map(len, per_set.values()))} library photos (every other photo of those "
        f"people{limit}; {n_dropped} byte-identical copies of training photos left out). "
        f"The peer's known faces: {known['encodings']} encodings from {known['images']} known images "
        f"({no_face} without a face it could find, ignored; {multi} with several faces, of which its CLI "
        "keeps the first it finds — not necessarily the person's). facelab's build decided which face is "
        f"the person; its build + split + train took {sum(train_s.values()):.0f} s "
        f"({', '.join(f'{k} {s:.0f} s' for k, s in train_s.items())}); the peer loaded its models in "
        f"{peer['import_s']:.1f} s and its known faces in {peer['load_s']:.0f} s. Neither is in the "
        "photos/s below.",
        "",
        "## What ran",
        "",
        "- **facelab**: `facelab build TRAIN -w WS`, `facelab split WS`, `facelab train WS --track embedding` "
        "(defaults: RetinaFace MobileNet-0.25 at 1024 px, dlib 128-d embedding, prototype head, unknown "
        "threshold calibrated on the strangers' embeddings that ship with facelab), then per set on a fresh "
        "copy of WS `facelab album index LIBRARY/<set> -w WS -q`"
        + (" `--workers N`" if any(w is not None for w in fl_runs) else "")
        + ". *photos/s* = photos / the command's whole wall time (start, model load, reading, detecting, "
        "naming, storing); *after load* = photos/s between the first and the last photo stored "
        "(`indexed_at`, 1 s resolution); *start → first photo stored*: interpreter start, imports, model "
        "loading and the first photo (±1 s); *CPU s/photo*: CPU time (user + system, all processes and "
        "threads) of the whole command per photo — steadier than wall time on a busy machine. With "
        "`--workers` > 1 photos are stored as the workers hand them back, in bursts, so *after load* and "
        "*start → first photo stored* mostly measure that batching: read them for `--workers 1` only.",
        "- **face_recognition** (`bench/peer_runner.py`, run with the peer's Python): the steps of its CLI "
        "`face_recognition KNOWN_FOLDER PHOTO_FOLDER` — known people by the CLI's own `scan_known_people` "
        "(one encoding per known image: first face found, full size, HOG detector upsampled once, 5-point "
        "landmarks, 1 jitter, named after the file); each photo as the CLI's `test_image`: "
        "`load_image_file` (RGB, no EXIF rotation), shrunk to 1600 px on the long side when larger "
        "(`thumbnail`, LANCZOS), `face_locations` (HOG, upsample 1), `face_encodings` on those boxes "
        "(5-point landmarks — the API default the CLI uses, not the 68-point model — 1 jitter), "
        "`face_distance` to every known encoding, tolerance 0.6. A face's name: the person of the nearest "
        "known image within 0.6 (the CLI prints every match; faces matching two or more people are counted "
        f"as ambiguous below). Checked against the CLI's own `test_image` on {peer['check']['photos']} "
        f"photos: {peer['check']['same']} printed exactly the same names and distances. *photos/s* = photos "
        "/ wall time of the photos loop (per set, as one CLI call per folder; with `--cpus` > 1 a forkserver "
        "process pool like the CLI's, its start included); its *CPU s/photo* is the loop's (with `--cpus 1`; "
        "the pool's workers are not its children, so not counted).",
        "",
        "## Speed",
        "",
        f"Best of {args.repeats} runs; load average (1/5/15 min) before → after each run of the best. "
        "With a load above the core count the figures are pessimistic for both tools.",
        "",
        "| set | photos | tool | photos/s | after load | seconds | start → first photo stored "
        "| CPU s/photo | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, int, str, float, str, float, str, str, str]] = []
    for set_name in (*SETS, "both"):
        sets = SETS if set_name == "both" else (set_name,)
        n = sum(len(per_set[s]) for s in sets)
        for workers, runs in fl_runs.items():
            label = "facelab `album index`" + (f" `--workers {workers}`" if workers is not None else "")
            seconds = sum(runs[s].seconds for s in sets)
            after = first = loads = "–"
            if set_name != "both":
                run = runs[set_name]
                after = f"{run.after_load:.2f}" if run.after_load else "–"
                # indexed_at has 1 s resolution: the first stamp may fall just before the start
                first = f"{max(0.0, run.first_s):.0f} s" if run.first_s is not None else "–"
                best = min(run.runs)
                loads = f"{best[1]} → {best[2]}"
            cpu = sum(runs[s].cpu_s for s in sets) / n if n else float("nan")
            rows.append((set_name, n, label, rate(n, seconds), after, seconds, first, f"{cpu:.2f}", loads))
        for cpus, peer_groups in peers.items():
            groups = [peer_groups[SETS.index(s)] for s in sets]
            seconds = sum(g["loop_s"] for g in groups)
            if set_name == "both":
                loads = "–"
            else:
                best_run = min(groups[0]["runs"], key=lambda r: r["loop_s"])
                loads = f"{best_run['load']} → {best_run['load_after']}"
            label = f"face_recognition `--cpus {cpus}`"
            cpu = f"{sum(g['cpu_s'] for g in groups) / n:.2f}" if cpus == 1 and n else "–"
            rows.append((set_name, n, label, rate(n, seconds), "(loop only)", seconds, "(not timed)", cpu, loads))
    for set_name, n, label, per_s, after, seconds, first, cpu, loads in rows:
        lines.append(
            f"| {set_name} | {n} | {label} | **{per_s:.2f}** | {after} | {seconds:.1f} | {first} | {cpu} | {loads} |"
        )

    n_all = sum(len(f) for f in per_set.values())
    lines += ["", "**Speed ratio** (facelab whole command ÷ the peer's photos loop, both sets):", ""]
    for workers, runs in fl_runs.items():
        ours = rate(n_all, sum(r.seconds for r in runs.values()))
        label = f"`--workers {workers}`" if workers is not None else "facelab (one process)"
        for cpus, peer_groups in peers.items():
            theirs = rate(n_all, sum(g["loop_s"] for g in peer_groups))
            lines.append(f"- {label} vs face_recognition `--cpus {cpus}`: **{ours / theirs:.2f}×**")

    ref = fl_runs[next(iter(fl_runs))]
    ours_faces = {p: f for run in ref.values() for p, f in run.faces.items()}
    theirs_faces, ambiguous, errors = peer_faces(peers[min(peers)])
    lines += [
        "",
        "## Faces and names",
        "",
        "Faces are paired across the tools when their boxes overlap (IoU ≥ 0.3). *names agreed*: paired "
        "faces given the same person, or both unknown. *right person*: photos where the folder's person is "
        "named on some face (a photo may show the person too small or turned away for either tool).",
        "",
        "| set | photos | faces facelab / peer | facelab's faces the peer also found | peer's faces facelab "
        "also found | names agreed | faces named facelab / peer | right person: facelab | right person: peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name in (*SETS, "both"):
        files = [f for s in SETS for f in per_set[s]] if set_name == "both" else per_set[set_name]
        a = compare(files, truth, ours_faces, theirs_faces)
        lines.append(
            f"| {set_name} | {a.photos} | **{a.ours} / {a.theirs}** | {pct(a.paired, a.ours)} "
            f"| {pct(a.paired, a.theirs)} | {pct(a.agreed, a.paired)} | {a.ours_named} / {a.theirs_named} "
            f"| **{pct(a.ours_right, a.photos)}** | **{pct(a.theirs_right, a.photos)}** |"
        )
    from facelab.workflow import DEFAULTS

    min_face = DEFAULTS.min_face
    lines += [
        "",
        f"The peer's CLI matched {ambiguous} face(s) to known images of two or more people (it prints all of "
        f"them; here the nearest counts); it could not read {errors} photo(s) (its CLI would stop there). "
        f"Faces are as each tool reports them: facelab names no face under {min_face} px "
        "(docs/benchmarks_small_faces.md); "
        "the peer's HOG detector finds frontal faces of about 40 px and more at upsample 1 and none turned "
        "far aside.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# -- main ---------------------------------------------------------------------------------------


def render(results: Path, doc: Path) -> None:
    """Write the doc from a run's saved results (``--keep DIR`` then ``--render DIR``)."""
    saved = json.loads(results.read_text())
    people = [
        Person(p["set"], p["name"], [Path(x) for x in p["train"]], [Path(x) for x in p["library"]], p["dropped"])
        for p in saved["people"]
    ]
    fl_runs: dict[int | None, dict[str, FacelabRun]] = {}
    for workers, runs in saved["facelab"].items():
        fl_runs[None if workers == "None" else int(workers)] = {
            s: FacelabRun(
                **{k: v for k, v in r.items() if k != "faces"},
                faces={p: [(tuple(box), name) for box, name in f] for p, f in r["faces"].items()},
            )
            for s, r in runs.items()
        }
    args = argparse.Namespace(**saved["args"])
    write_doc(
        doc, saved["info"], people, saved["train_s"], fl_runs, saved["peer"], saved["per_set"], saved["truth"], args
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--train", type=int, default=8, help="training photos per person (both tools)")
    parser.add_argument("--limit", type=int, help="at most N library photos per person (a quick run)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each command; the best is kept")
    parser.add_argument("--peer-venv", type=Path, default=REPO / ".bench" / "peer-venv")
    parser.add_argument("--peer-cpus", type=int, nargs="+", help="the peer's --cpus values (default: 1 and all)")
    parser.add_argument("--keep", type=Path, help="keep the photos, workspace and logs in this folder")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_album.md")
    parser.add_argument("--render", type=Path, help="only write the doc again from KEEP/results.json")
    args = parser.parse_args()

    if args.render:
        render(args.render / "results.json", args.doc)
        return
    info = machine()
    print(f"machine: {info}, load {load()}", file=sys.stderr)
    python = peer_env(args.peer_venv)
    people = choose_photos(args.data, args.train, args.limit)
    nproc = os.cpu_count() or 1
    peer_cpus = args.peer_cpus or ([1, nproc] if nproc > 1 else [1])
    with tempfile.TemporaryDirectory(prefix="facelab-bench-album-") as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        log = tmp / "commands.log"
        train, known, per_set, truth = lay_out(people, tmp)
        ws = tmp / "ws"
        train_s = train_facelab(train, ws, log)
        print(f"facelab trained: {train_s}", file=sys.stderr)
        worker_counts: list[int | None] = sorted({1, nproc}) if has_workers() else [None]
        fl_runs: dict[int | None, dict[str, FacelabRun]] = {}
        for workers in worker_counts:
            fl_runs[workers] = {s: bench_facelab(ws, tmp / "library", s, workers, args.repeats, tmp, log) for s in SETS}
        peer = bench_peer(python, known, per_set, peer_cpus, args.repeats, tmp, log)
        saved = {
            "info": info,
            "people": [asdict(p) for p in people],
            "train_s": train_s,
            "facelab": {str(w): {s: asdict(r) for s, r in runs.items()} for w, runs in fl_runs.items()},
            "peer": peer,
            "per_set": per_set,
            "truth": truth,
            "args": {"train": args.train, "limit": args.limit, "repeats": args.repeats},
        }
        (tmp / "results.json").write_text(json.dumps(saved, default=str))
        write_doc(args.doc, info, people, train_s, fl_runs, peer, per_set, truth, args)
    print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
