"""How small a face can be and still get an honest name: people and strangers by face size.

facelab names no face whose shorter side is under ``min_face`` pixels (``workflow.DEFAULTS``). This
measures, for faces shrunk to 16…64 px, what the default embedding model answers, so the floor is a
measured choice rather than a guess (issue #18: the face_recognition peer names 30–40 px faces that
facelab skipped). Writes docs/benchmarks_small_faces.md.

    .venv/bin/python bench/bench_small_faces.py [--data ../shared/data] [--train 8] [--quality 75]

Model: as ``bench/bench_album.py`` trains it, through the CLI (``facelab build``/``split``/``train
--track embedding``) on the first ``--train`` photos of each of the ten people of sports5 + celeb5;
the unknown threshold is calibrated as a user without a strangers folder gets it (shipped reference
strangers + leave-one-person-out over the people).

Probes, each photo shrunk as a whole (``cv2.INTER_AREA``, then re-encoded as JPEG at ``--quality`` so a
shrunk face carries compression like a naturally small one) until the probe face's shorter side is
the target size, then detected and named as ``facelab album index`` does:

* **people** — in each library photo (not a training photo) the face facelab names as the folder's
  person at full size, when its shorter side is at least 80 px. *right*: named as the person;
  *wrong*: another person's name (the worst answer); *unknown*; *not found*: no detection overlaps it
  (IoU ≥ 0.3). Starting from faces named right at full size measures what size takes away.
* **people as strangers** — the same faces with the person's own column removed from the scores
  (leave-one-person-out: the model as if the person were never enrolled): *named* is a stranger
  given someone's name. Not independent of the threshold: calibration used these people's training
  photos as strangers to each other (leave-one-person-out); the probes are other photos of them.
  The *strangers* column is the independent one.
* **strangers** — ../shared/data/strangers (300 LFW people; measured, never calibrated on), the
  largest face of each photo. *named* is a stranger given a name (FPIR).

Rows at "full" are the unshrunk photos. The target sizes are short sides of the detector's box
(RetinaFace boxes run a little larger than dlib's HOG boxes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_album import IOU, choose_photos, iou, lay_out, train_facelab
from facelab.openset import MIN_FACE
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
SIZES: tuple[int | None, ...] = (None, 64, 48, 40, 36, 32, 28, 24, 20, 16)  # None: full size
PROBE_MIN = 80  # a probe face's shorter side at full size


@dataclass
class Probe:
    path: str
    rgb: np.ndarray
    box: tuple[float, float, float, float]
    person: str | None  # None: a stranger


def shrink(rgb: np.ndarray, factor: float, quality: int) -> np.ndarray:
    """``rgb`` scaled by ``factor`` (≤ 1) and passed through JPEG at ``quality``."""
    if factor < 1:
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def people_probes(recognizer, library: dict[str, str]) -> list[Probe]:
    """The face named as the folder's person (shorter side ≥ PROBE_MIN) of each library photo."""
    from facelab.imageio import ImageError, load_rgb

    probes = []
    for path, person in sorted(library.items()):
        try:
            rgb = load_rgb(path)
        except ImageError:
            continue
        for rec in recognizer.recognize(rgb):
            box = rec.face.box
            if rec.name == person and min(box.width, box.height) >= PROBE_MIN:
                probes.append(Probe(path, rgb, (box.x1, box.y1, box.x2, box.y2), person))
                break
    return probes


def stranger_probes(recognizer, folder: Path) -> list[Probe]:
    """The largest face of each stranger photo."""
    from facelab.imageio import ImageError, load_rgb

    probes = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            rgb = load_rgb(path)
        except ImageError:
            continue
        faces = recognizer.detect(rgb)
        if faces:
            box = max(faces, key=lambda f: f.box.width * f.box.height).box
            probes.append(Probe(str(path), rgb, (box.x1, box.y1, box.x2, box.y2), None))
    return probes


def answer(recognizer, probe: Probe, size: int | None, quality: int) -> dict[str, str]:
    """What the model says about ``probe`` shrunk to a ``size``-px face: outcome per view
    (``as_person`` for people, ``as_stranger`` for people without their column and for strangers)."""
    from facelab.recognize import score_faces

    x1, y1, x2, y2 = probe.box
    short = min(x2 - x1, y2 - y1)
    factor = 1.0 if size is None else size / short
    rgb = shrink(probe.rgb, factor, quality)
    target = (x1 * factor, y1 * factor, x2 * factor, y2 * factor)
    faces = recognizer.detect(rgb)
    overlaps = [(iou((f.box.x1, f.box.y1, f.box.x2, f.box.y2), target), f) for f in faces]
    best = max(overlaps, key=lambda t: t[0], default=(0.0, None))
    if best[0] < IOU:
        return {"as_person": "not found", "as_stranger": "not found"} if probe.person else {"as_stranger": "not found"}
    face = best[1]
    scores = np.asarray(score_faces(recognizer.model, rgb, [face])[0], dtype=float)
    out = {}
    classes = recognizer.display_classes
    if probe.person is not None:
        name = recognizer.name_scores([face], scores)[0].name
        out["as_person"] = "right" if name == probe.person else ("unknown" if name is None else "wrong")
        left_out = scores.copy()
        left_out[:, [j for j, c in enumerate(classes) if c == probe.person]] = -1e9
        scores = left_out
    name = recognizer.name_scores([face], scores)[0].name
    out["as_stranger"] = "unknown" if name is None else "named"
    return out


def measure(recognizer, probes: list[Probe], quality: int) -> dict[int | None, dict[str, Counter]]:
    table: dict[int | None, dict[str, Counter]] = {}
    for size in SIZES:
        counts: dict[str, Counter] = {"as_person": Counter(), "as_stranger": Counter()}
        for probe in probes:
            short = min(probe.box[2] - probe.box[0], probe.box[3] - probe.box[1])
            if size is not None and size >= short:
                continue  # only shrink, never enlarge
            for view, outcome in answer(recognizer, probe, size, quality).items():
                counts[view][outcome] += 1
        table[size] = counts
    return table


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.1f}%)" if d else "–"


def write_doc(doc: Path, people: dict, strangers: dict, n: dict[str, int], args, seconds: float) -> None:
    lines = [
        "## Small faces: what the default model answers as faces shrink",
        "",
        f"Measured by `bench/bench_small_faces.py` (method in its docstring). Machine: {machine_line()}; "
        f"{dt.datetime.now():%Y-%m-%d %H:%M}; {seconds / 60:.0f} min. Model: facelab's defaults (RetinaFace, dlib "
        f"128-d embedding, prototype head, unknown threshold calibrated without a strangers folder) trained on "
        f"{args.train} photos each of the ten people of sports5 + celeb5. Photos shrunk as a whole and re-encoded "
        f"as JPEG quality {args.quality}.",
        "",
        f"Probes: {n['people']} faces of the ten people (library photos, named right at full size, ≥ {PROBE_MIN} px), "
        f"{n['strangers']} strangers (../shared/data/strangers, largest face).",
        "",
        "| face (short side) | people: right | people: wrong name | people: unknown | people: not found "
        "| people as strangers: named | strangers: named (FPIR) | strangers: not found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        p, s = people[size], strangers[size]
        total = sum(p["as_person"].values())
        st = sum(s["as_stranger"].values())
        left = p["as_stranger"]
        found_left = left["named"] + left["unknown"]
        found_st = s["as_stranger"]["named"] + s["as_stranger"]["unknown"]
        lines.append(
            f"| {'full' if size is None else f'{size} px'} | {pct(p['as_person']['right'], total)} "
            f"| {pct(p['as_person']['wrong'], total)} | {pct(p['as_person']['unknown'], total)} "
            f"| {pct(p['as_person']['not found'], total)} | {pct(left['named'], found_left)} "
            f"| {pct(s['as_stranger']['named'], found_st)} | {pct(s['as_stranger']['not found'], st)} |"
        )
    lines += [
        "",
        "*people as strangers* and *strangers: named* are shares of the faces the detector found at that size "
        "(a face not found cannot be misnamed). Read the rows down: the size where *wrong name* or either "
        "*named* column climbs above its full-size value is where names stop being honest. *people as "
        "strangers* is not independent of the threshold (calibration used these people's training photos as "
        "strangers to each other; the probes are other photos of them); *strangers* is (never calibrated on).",
        "",
        f"facelab names faces of {MIN_FACE} px and more (`openset.MIN_FACE`, the default `--min-face` of "
        "`recognize`, `album index`, video and the web app); smaller ones are counted as *too small* and left "
        "unnamed. Each row is one small sample (one face moves a figure by 0.4 points, one stranger by 0.3): "
        "read it as where the rates turn, not as exact rates.",
        "",
    ]
    doc.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_small_faces.md")
    args = parser.parse_args()

    from facelab.recognize import Recognizer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facelab-small-") as tmp:
        root = Path(tmp)
        chosen = choose_photos(args.data, args.train, None)
        train, _known, _per_set, truth = lay_out(chosen, root)
        train_facelab(train, root / "ws", root / "log.txt")
        recognizer = Recognizer.from_path(root / "ws", min_face=0)
        people = people_probes(recognizer, truth)
        strangers = stranger_probes(recognizer, args.data / "strangers")
        print(f"{len(people)} people probes, {len(strangers)} stranger probes", flush=True)
        people_table = measure(recognizer, people, args.quality)
        stranger_table = measure(recognizer, strangers, args.quality)
    n = {"people": len(people), "strangers": len(strangers)}
    write_doc(args.doc, people_table, stranger_table, n, args, time.perf_counter() - started)
    print(args.doc.read_text())


if __name__ == "__main__":
    main()
