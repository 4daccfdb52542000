"""Run the face_recognition peer (github.com/ageitgey/face_recognition 1.3.0) the way its own CLI
names the faces in a folder, and report every face with its box; run by ``bench/bench_album.py``
with the *peer's* virtual environment (``scripts/peer_env.sh``), never facelab's.

    .bench/peer-venv/bin/python bench/peer_runner.py --known DIR --photos LIST --out RESULT.json
        [--tolerance 0.6] [--check N]

Method. The peer's ``face_recognition KNOWN_PEOPLE_FOLDER IMAGE_TO_CHECK`` command
(``face_recognition.face_recognition_cli``) is what a user runs; this calls its pieces, unchanged:

1. known people: ``face_recognition_cli.scan_known_people(DIR)`` itself: one encoding per known
   image (the first face found, full size, HOG detector upsampled once, 5-point landmarks, one
   jitter), named after the file (``<person>__<n>.jpg`` here, so the person is the part before
   ``__``). Timed apart from the photos (``load_s``).
2. each photo, as ``face_recognition_cli.test_image`` does it: ``load_image_file`` (Pillow, RGB, no
   EXIF rotation), shrunk with ``thumbnail((1600, 1600), LANCZOS)`` when ``max(shape) > 1600``,
   ``face_locations(img)`` (HOG, upsample 1) then ``face_encodings(img, boxes)`` (5-point landmarks,
   the API default the CLI uses, one jitter), ``face_distance`` to every known encoding; every known
   image within ``tolerance`` (0.6, the CLI default) is a match, none is ``unknown_person``. The
   boxes are passed to ``face_encodings`` instead of letting it detect again only so that they can be
   reported; ``--check N`` runs the CLI's own ``test_image`` on the first N photos and counts the
   photos whose printed names (and distances) are the same as here.

Prints one line per photo (``file,faces,names``) and the photos loop's wall time; writes every face
(box in original pixels, matches with distances) to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import PIL
import PIL.Image

MAX_SIDE = 1600  # the CLI shrinks photos larger than this ("so things run a little faster")


def versions() -> dict[str, str]:
    """Versions of the peer and what it runs on."""
    return {
        "face_recognition": importlib.metadata.version("face_recognition"),
        "face_recognition_models": importlib.metadata.version("face_recognition_models"),
        "dlib": dlib.__version__,
        "numpy": np.__version__,
        "Pillow": PIL.__version__,
        "python": sys.version.split()[0],
    }


def load_known(folder: Path) -> tuple[list[str], list[np.ndarray], list[str], float]:
    """The CLI's known people (names, encodings), its warnings, and the seconds it took."""
    from face_recognition import face_recognition_cli as cli

    started = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the CLI warns with click.echo on stdout
        names, encodings = cli.scan_known_people(str(folder))
    return names, encodings, printed.getvalue().splitlines(), time.perf_counter() - started


def name_photo(path: str, names: list[str], encodings: list[np.ndarray], tolerance: float) -> dict[str, Any]:
    """The faces of one photo as the CLI finds and names them, boxes mapped to original pixels."""
    from face_recognition import api

    image = api.load_image_file(path)
    height, width = image.shape[:2]
    scale = 1.0
    if max(image.shape) > MAX_SIDE:
        small = PIL.Image.fromarray(image)
        small.thumbnail((MAX_SIDE, MAX_SIDE), PIL.Image.LANCZOS)
        image = np.array(small)
        scale = width / image.shape[1]
    boxes = api.face_locations(image)
    faces = []
    for (top, right, bottom, left), encoding in zip(boxes, api.face_encodings(image, boxes), strict=True):
        distances = api.face_distance(encodings, encoding)
        matches = [[names[i], float(d)] for i, d in enumerate(distances) if d <= tolerance]
        faces.append({"box": [left * scale, top * scale, right * scale, bottom * scale], "matches": matches})
    return {"file": path, "width": width, "height": height, "faces": faces}


def orientation(path: str) -> int:
    """The photo's EXIF orientation (1 when none or unreadable: the peer ignores it anyway)."""
    try:
        with PIL.Image.open(path) as raw:
            return int(raw.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, TypeError):  # broken EXIF: Pillow raises SyntaxError
        return 1


def cli_lines(path: str, names: list[str], encodings: list[np.ndarray], tolerance: float) -> list[str]:
    """What the CLI's own ``test_image`` prints for ``path`` (name,distance per line, sorted)."""
    from face_recognition import face_recognition_cli as cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli.test_image(path, names, encodings, tolerance, True)
    return sorted(line[len(path) + 1 :] for line in printed.getvalue().splitlines())


def our_lines(photo: dict[str, Any]) -> list[str]:
    """The lines ``test_image`` would print for a photo named by :func:`name_photo`."""
    lines = []
    for face in photo["faces"]:
        if face["matches"]:
            lines += [f"{name},{distance}" for name, distance in face["matches"]]
        else:
            lines.append("unknown_person,None")
    return sorted(lines or ["no_persons_found,None"])


def name_timed(path: str, names: list[str], encodings: list[np.ndarray], tolerance: float) -> dict[str, Any]:
    """:func:`name_photo` with its seconds; a file Pillow cannot read is reported, not raised."""
    started = time.perf_counter()
    try:
        photo = name_photo(path, names, encodings, tolerance)
    except (OSError, ValueError, SyntaxError) as exc:  # the CLI itself would stop at such a file
        photo = {"file": path, "faces": [], "error": f"{type(exc).__name__}: {exc}"}
    photo["seconds"] = time.perf_counter() - started
    photo["orientation"] = orientation(path)  # for the comparison only, not timed
    return photo


def run_group(
    files: list[str], names: list[str], encodings: list[np.ndarray], tolerance: float, cpus: int
) -> tuple[list[dict[str, Any]], float]:
    """Name every photo of one folder as one CLI call would: in a loop with ``--cpus 1``, else in a
    process pool of ``cpus`` workers (forkserver, as the CLI's ``process_images_in_process_pool``;
    starting the pool is timed too). Returns the photos and the wall seconds."""
    started = time.perf_counter()
    if cpus == 1:
        photos = [name_timed(path, names, encodings, tolerance) for path in files]
    else:
        context = multiprocessing.get_context("forkserver")
        with context.Pool(processes=None if cpus == -1 else cpus) as pool:
            photos = pool.starmap(name_timed, [(path, names, encodings, tolerance) for path in files])
    return photos, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--known", type=Path, required=True, help="flat folder of known images <person>__<n>.jpg")
    parser.add_argument(
        "--photos", type=Path, action="append", required=True, help="text file, one photo path a line (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--tolerance", type=float, default=0.6, help="the CLI's --tolerance (default 0.6)")
    parser.add_argument(
        "--cpus", type=int, nargs="+", default=[1], help="the CLI's --cpus: 1 (its default) or N, -1 all; each in turn"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each photo list; the fastest is kept")
    parser.add_argument("--check", type=int, default=0, help="compare with the CLI's test_image on N photos")
    args = parser.parse_args()

    started = time.perf_counter()
    import face_recognition.face_recognition_cli  # noqa: F401  (loads the peer's four models)

    import_s = time.perf_counter() - started
    names, encodings, warnings, load_s = load_known(args.known)
    by_cpus: dict[str, list[dict[str, Any]]] = {}
    for cpus in args.cpus:
        by_cpus[str(cpus)] = groups = []
        for listing in args.photos:
            files = [line for line in listing.read_text().splitlines() if line]
            runs = []
            for _ in range(args.repeats):
                load_avg = "/".join(f"{x:.1f}" for x in os.getloadavg())
                cpu = time.process_time()
                photos, loop_s = run_group(files, names, encodings, args.tolerance, cpus)
                after = "/".join(f"{x:.1f}" for x in os.getloadavg())
                run = {"loop_s": loop_s, "cpu_s": time.process_time() - cpu, "load": load_avg, "load_after": after}
                runs.append(run | {"photos": photos})
                print(
                    f"# {listing} --cpus {cpus}: {len(files)} photos in {loop_s:.2f} s, load {load_avg}",
                    file=sys.stderr,
                )
            best = min(runs, key=lambda r: r["loop_s"])
            for photo in best["photos"]:
                labels = ";".join("|".join(n for n, _ in f["matches"]) or "unknown_person" for f in photo["faces"])
                print(f"{photo['file']},{len(photo['faces'])},{labels}")
            rate = len(files) / max(best["loop_s"], 1e-9)
            print(f"# --cpus {cpus}: {len(files)} photos in {best['loop_s']:.2f} s ({rate:.3f} photos/s)")
            groups.append(
                {
                    "list": str(listing),
                    "loop_s": best["loop_s"],
                    "cpu_s": best["cpu_s"],
                    "runs": [{k: v for k, v in r.items() if k != "photos"} for r in runs],
                    "photos": best["photos"],
                }
            )

    checked = [p for g in by_cpus[str(args.cpus[0])] for p in g["photos"] if "error" not in p][: args.check]
    same = sum(cli_lines(p["file"], names, encodings, args.tolerance) == our_lines(p) for p in checked)
    result = {
        "versions": versions(),
        "tolerance": args.tolerance,
        "import_s": import_s,
        "known": {"images": len(os.listdir(args.known)), "encodings": len(names), "warnings": warnings},
        "load_s": load_s,
        "check": {"photos": len(checked), "same": same},
        "by_cpus": by_cpus,
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
