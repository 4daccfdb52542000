"""Unknown without a strangers folder: how many strangers get a name, for galleries of 1–10 people.

A user runs ``facelab run PHOTOS -w WS`` with no strangers folder. This measures the share of
stranger photos given a name on any face (FPIR, photo level, faces as large as ``facelab
recognize`` names: ``openset.MIN_FACE``, 32 px) and the share of the people's own test faces not given their
name (FNIR), for galleries of 1, 2, 3, 5 and 10 people drawn from celeb5 + sports5 (random subsets;
mean and worst case), with the unknown threshold set by:

* ``old default`` — the fixed distance read off one-person models (before 2026-12);
* ``reference`` — the shipped reference strangers alone (facelab.reference; LFW, disjoint from the
  measuring strangers);
* ``people`` — leave-one-person-out over the gallery's own people alone;
* ``facelab`` — what facelab now does without a strangers folder (facelab.impostors.choose_threshold
  over reference + people + bystanders);
* ``strangers folder`` — the calibration half of ../shared/data/strangers (as with --strangers),
  measured on its evaluation half.

FPIR is measured on ../shared/data/strangers (300 LFW people, never calibrated on except by the
last row, which is measured on the other half). Writes docs/benchmarks_unknown.md.

    .venv/bin/python bench/bench_unknown.py [--workspace WS] [--subsets 10]

WS: a workspace built from celeb5 + sports5 together (built under $FACELAB_BENCH_DIR if missing).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from facelab import impostors, openset
from facelab.embed_track import build_head, calibrate_vectors
from facelab.embedders import DEFAULT_EMBEDDER, embedder_info, find_faces, get_embedder
from facelab.identity import ResolutionParams
from facelab.items import FaceSelection, load_items
from facelab.store import Workspace
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))
SIZES = (1, 2, 3, 5, 10)
METHODS = ("old default", "reference", "people", "facelab", "strangers folder")
TARGET = openset.DEFAULT_TARGET_FPIR


def ensure_workspace(ws_dir: Path) -> None:
    if (ws_dir / "dataset" / "manifest.csv").is_file():
        return
    import subprocess

    photos = WORK / "all10-photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        for folder in ("celeb5", "sports5"):
            for person in (DATA / folder).iterdir():
                if person.is_dir():
                    (photos / person.name).symlink_to(person)
    facelab = str(REPO / ".venv" / "bin" / "facelab")
    subprocess.run([facelab, "build", str(photos), "-w", str(ws_dir)], check=True)
    subprocess.run([facelab, "split", str(ws_dir)], check=True)


def stranger_photo_faces(folder: Path, cache: Path, min_face: float) -> dict[str, list[np.ndarray]]:
    """Per stranger photo (sha256): the vectors of its faces of ``min_face`` px or more."""
    from facelab.imageio import load_rgb

    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            shas, vectors, sides = data["sha"], data["vectors"], data["sides"]
    else:
        embedder = get_embedder(DEFAULT_EMBEDDER)
        rows_sha, rows_vec, rows_side = [], [], []
        for path, sha in openset.stranger_files(folder):
            rgb = load_rgb(path)
            faces = find_faces(rgb)
            rows_sha.append(sha)  # a photo with no face keeps a row with no vector
            rows_vec.append(np.zeros(embedder.dim, np.float32))
            rows_side.append(-1.0)
            for face, vector in zip(faces, embedder.embed(rgb, faces) if faces else [], strict=True):
                rows_sha.append(sha)
                rows_vec.append(vector)
                rows_side.append(min(face.box.width, face.box.height))
        shas, vectors, sides = np.array(rows_sha), np.stack(rows_vec), np.array(rows_side, np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, sha=shas, vectors=vectors, sides=sides)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(buffer.getvalue())
    out: dict[str, list[np.ndarray]] = {}
    for sha, vector, side in zip(shas, vectors, sides, strict=True):
        faces = out.setdefault(str(sha), [])
        if side >= min_face:
            faces.append(vector)
    return out


def photo_fpir(score, photos: dict[str, list[np.ndarray]], threshold: float) -> float:
    named = [bool(faces) and float(score(np.stack(faces)).max()) >= threshold for faces in photos.values()]
    return float(np.mean(named))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=WORK / "all10")
    parser.add_argument("--subsets", type=int, default=10, help="random galleries per size (below 10 people)")
    parser.add_argument("--head", default="prototype", choices=("prototype", "knn"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_unknown.md")
    args = parser.parse_args()
    started = time.perf_counter()
    ensure_workspace(args.workspace)
    min_face = impostors.DEFAULT_MIN_FACE
    with Workspace(args.workspace, create=False) as ws:
        vectors = ws.embeddings(DEFAULT_EMBEDDER)
        items = {s: load_items(ws, s) for s in ("train", "val", "test")}
        all_faces = load_items(ws, None, FaceSelection.ALL)
    strangers = stranger_photo_faces(
        DATA / "strangers", args.workspace / ".facelab" / "cache" / "bench-strangers-allfaces.npz", min_face
    )
    halves = {part: {sha for _, sha in openset.stranger_files(DATA / "strangers", part)} for part in openset.PARTS}
    calibration_half = np.stack(
        [v for sha, faces in strangers.items() if sha in halves["calibration"] for v in faces[:1]]
    )
    evaluation_half = {sha: faces for sha, faces in strangers.items() if sha in halves["evaluation"]}
    everyone = sorted({i.person for i in items["train"]})
    default_distance = embedder_info(DEFAULT_EMBEDDER).unknown_distance[args.head]
    match = ResolutionParams().match_distance
    rng = random.Random(0)
    results: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for size in SIZES:
        subsets = (
            [tuple(everyone)]
            if size >= len(everyone)
            else [tuple(sorted(rng.sample(everyone, size))) for _ in range(args.subsets)]
        )
        results[size] = {m: [] for m in METHODS}
        for gallery in subsets:
            classes = list(gallery)
            index = {p: i for i, p in enumerate(classes)}

            def xy(split_items, classes=classes, index=index):
                use = [i for i in split_items if i.person in index and i.face_id in vectors]
                return np.stack([vectors[i.face_id] for i in use]), np.array([index[i.person] for i in use])

            x_train, y_train = xy(items["train"])
            x_val, y_val = xy(items["val"])
            x_test, y_test = xy(items["test"])
            head = build_head(args.head, {})
            head.fit(x_train, y_train, len(classes))

            def score(x, head=head, classes=classes):
                return openset.open_scores(head.scores(x), classes)

            test_index, test_top, _ = openset.top_two(head.scores(x_test), classes)
            right = test_index == y_test

            def rates(threshold, photos=strangers, score=score, right=right, test_top=test_top):
                return photo_fpir(score, photos, threshold), float(1 - np.mean(right & (test_top >= threshold)))

            def fit_and_score(x, y, kept):
                h = build_head(args.head, {})
                h.fit(x, y, len(kept))
                return lambda v, h=h, kept=kept: openset.open_scores(h.scores(v), kept)

            x_cal, y_cal = np.vstack([x_train, x_val]), np.concatenate([y_train, y_val])
            reference = impostors.reference_evidence(score, DEFAULT_EMBEDDER, min_face, len(classes))
            people = impostors.people_evidence(fit_and_score, x_cal, y_cal, classes, range(len(classes)))
            # Bystanders of a workspace of just these people: faces in their photos far from all of them.
            bystanders = np.stack(
                [
                    vectors[f.face_id]
                    for f in all_faces
                    if f.role == "bystander"
                    and f.person in index
                    and f.split in ("train", "val")
                    and f.face_id in vectors
                ]
                or [np.zeros(128, np.float32)]
            )
            centers = np.stack([x_train[y_train == c].mean(axis=0) for c in range(len(classes))])
            bystanders = bystanders[np.linalg.norm(bystanders[:, None] - centers[None], axis=2).min(axis=1) > match]
            val_index, val_top, val_margin = openset.top_two(head.scores(x_val), classes)
            product = calibrate_vectors(
                args.head,
                {},
                head,
                x_cal,
                y_cal,
                classes,
                (val_top, val_index == y_val, val_margin),
                bystanders=bystanders,
                target_fpir=TARGET,
            )
            n = len(classes)
            thresholds = {
                "old default": 1.0 - default_distance,
                "reference": impostors.choose_threshold([reference], n, TARGET).threshold,
                "people": impostors.choose_threshold([people], n, TARGET, 1.0 - default_distance).threshold
                if people
                else None,
                "facelab": product.threshold,
            }
            for method, threshold in thresholds.items():
                if threshold is not None:
                    results[size][method].append(rates(threshold))
            folder = impostors.Evidence("strangers", score(calibration_half), n)
            t = impostors.choose_threshold([folder], n, TARGET).threshold
            results[size]["strangers folder"].append(rates(t, evaluation_half))
        print(size, {m: np.mean(r, axis=0).round(3).tolist() if r else None for m, r in results[size].items()})
    write_table(args, results, time.perf_counter() - started)


def write_table(args: argparse.Namespace, results: dict, seconds: float) -> None:
    lines = [
        "## Unknown without a strangers folder",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/bench_unknown.py` on {machine_line()}; {seconds:.0f} s. "
        f"Head: `{args.head}` on dlib embeddings; target FPIR "
        f"{TARGET:.0%}. Galleries drawn from the ten people of celeb5 + sports5 ({args.subsets} random "
        "galleries per size below 10, seeded; one of 10). FPIR: share of the 300 LFW stranger photos "
        f"(../shared/data/strangers) given a name on any face of {impostors.DEFAULT_MIN_FACE} px or more; FNIR: "
        "share of the gallery's "
        "test faces not given their own name. Cells: mean / worst gallery. `strangers folder` is "
        "calibrated on the strangers' calibration half and measured on the other half.",
        "",
        "| people | " + " | ".join(f"{m} FPIR | {m} FNIR" for m in METHODS) + " |",
        "|---:|" + "---:|---:|" * len(METHODS),
    ]
    for size, by_method in results.items():
        cells = []
        for method in METHODS:
            rows = by_method[method]
            if not rows:
                cells += ["–", "–"]
                continue
            fpir = [r[0] for r in rows]
            fnir = [r[1] for r in rows]
            cells.append(f"{statistics.mean(fpir):.1%} / {max(fpir):.1%}")
            cells.append(f"{statistics.mean(fnir):.1%} / {max(fnir):.1%}")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
