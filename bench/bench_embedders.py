"""Face embedders side by side: dlib (128-d), FaceNet (512-d) and their ensemble, closed and open set.

    .venv/bin/python bench/bench_embedders.py [--data ../shared/data] [--out /tmp/facelab-bench-embedders]
        [--datasets celeb5 sports5] [--doc docs/benchmarks_embedders.md] [--sweep]

Workspaces are bench_embedding.py's (same helpers: RetinaFace, largest face = the person, 60/20/20
split per person with seed 0, grouped by sha256), built once under ``--out`` and kept. For each
embedder and data set:

* *test acc.* — the prototype head (train split) naming the test split's person faces (closed set).
* *FPIR / FNIR, calibrated* — the run's unknown threshold as ``train_embedding_run`` chooses it at
  a 1% target (val split + the **calibration** half of ``strangers/``), applied to the test
  photos and the **evaluation** half of the strangers, which no choice saw; photos without a face
  count as misses. *FNIR @ FPIR 1% (oracle)* picks the threshold on the test data itself.
* *verify EER* — single-face photos of both sets plus the 300 strangers, all pairs, euclidean
  distance: the error rate where false matches equal false non-matches; *d @ FMR 0.1%* is the
  distance at which 0.1% of different-person pairs match (how ``verify_distance`` is set).
* *unknown distance* — one-person models (bench_one_person.py's method) of each of the ten people
  against all 300 strangers: the median distance that names 1% of them (``unknown_distance``).
* *ms / face* — the embedder alone (alignment + network, photo already decoded), median of 30 faces.

Strangers are detected once; the ensemble's vectors are composed from the stored dlib and FaceNet
vectors with :func:`facelab.embedder_facenet.concat_unit` (checked against the ensemble embedder on a
few faces), so no network runs twice. ``--sweep`` also compares FaceNet's preprocessing (crop margin,
standardisation) on celeb5's faces. Results go between the markers of the doc and to OUT/results.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

# On a busy machine OpenMP's spinning worker threads make torch many times slower (see
# tests/conftest.py); passive waiting costs nothing when the cores are free. Before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from bench_embedding import build_minimal_workspace, evaluate
from facelab import openset
from facelab.embed_track import EmbeddingModel, build_head, train_embedding_run
from facelab.embedder_facenet import ENSEMBLE_WEIGHTS, FaceNetEmbedder, concat_unit
from facelab.embedders import (
    EmbedderInfo,
    embed_workspace,
    embedder_info,
    face_finder,
    find_faces,
    get_embedder,
    largest_face,
    register_embedder,
)
from facelab.imageio import ImageError, load_rgb
from facelab.items import load_items
from facelab.store import Workspace, _face_from_row
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SWEEP_START, SWEEP_END = "<!-- sweep:start -->", "<!-- sweep:end -->"
BASE = ("dlib", "facenet")
ENSEMBLE = "dlib+facenet"
EMBEDDERS = (*BASE, ENSEMBLE)
TIMING_FACES = 30


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- strangers: detected once, embedded by each network, cached where the runs look -------------


def stranger_faces(folder: Path, detector: str) -> list[tuple[Path, str, object]]:
    """``(photo, sha256, largest face or None)`` of every stranger photo."""
    out = []
    for path, sha in openset.stranger_files(folder, "all"):
        try:
            faces = find_faces(load_rgb(path), detector)
        except ImageError:
            faces = []
        out.append((path, sha, largest_face(faces)))
    return out


def read_stranger_cache(cache_dir: Path, model: str, detector: str) -> dict[str, np.ndarray | None]:
    """What :func:`write_stranger_cache` wrote (empty if nothing)."""
    path = cache_dir / f"largest-face-{model}-{detector}.npz"
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {
            str(sha): v.astype(np.float32) if found else None
            for sha, v, found in zip(data["sha256"], data["vectors"], data["found"], strict=True)
        }


def stranger_vectors_all(
    folder: Path, detector: str, cache_dir: Path
) -> tuple[dict[str, dict[str, np.ndarray | None]], list[tuple[Path, str, object]] | None]:
    """``{embedder: {sha256: vector or None}}`` for the base embedders and the ensemble, and the faces.

    The base vectors are read back from ``cache_dir`` when a previous run left them for every
    photo (the faces are then None: not detected again); the ensemble's are always recomposed.
    """
    files = openset.stranger_files(folder, "all")
    out: dict[str, dict[str, np.ndarray | None]] = {
        name: read_stranger_cache(cache_dir, name, detector) for name in BASE
    }
    faces = None
    if any(set(out[name]) != {sha for _, sha in files} for name in BASE):
        faces = stranger_faces(folder, detector)
        out = {name: {} for name in BASE}
        for path, sha, face in faces:
            rgb = load_rgb(path) if face is not None else None
            for name in BASE:
                out[name][sha] = get_embedder(name).embed(rgb, [face])[0] if face is not None else None
    out[ENSEMBLE] = {
        sha: None
        if v is None
        else concat_unit([out[n][sha][None] for n in BASE], [ENSEMBLE_WEIGHTS[n] for n in BASE])[0]
        for sha, v in out["dlib"].items()
    }
    return out, faces


def write_stranger_cache(cache_dir: Path, model: str, detector: str, vectors: dict[str, np.ndarray | None]) -> None:
    """The file ``embed_photos_largest_face`` reads (``largest-face-<model>-<detector>.npz``)."""
    dim = embedder_info(model).dim
    shas = sorted(vectors)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        sha256=np.array(shas),
        vectors=np.stack([v if (v := vectors[s]) is not None else np.zeros(dim, np.float32) for s in shas]),
        found=np.array([vectors[s] is not None for s in shas]),
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / f"largest-face-{model}-{detector}.npz").write_bytes(buffer.getvalue())


# -- workspaces ---------------------------------------------------------------------------------


def embed_all(ws_root: Path) -> None:
    """dlib and FaceNet vectors for every face; the ensemble's composed from them."""
    with Workspace(ws_root, create=False) as ws:
        for name in BASE:
            started = time.perf_counter()
            done = embed_workspace(ws, name)
            log(
                f"  {ws_root.name}: {done.embedded} faces embedded with {name} in {time.perf_counter() - started:.0f} s"
            )
        stored = {name: ws.embeddings(name) for name in BASE}
        with ws.transaction() as conn:
            # Always recomposed: the weights may have changed since the last run.
            conn.execute("DELETE FROM embeddings WHERE model = ?", (ENSEMBLE,))
            for face_id in sorted(set(stored["dlib"]) & set(stored["facenet"])):
                blocks = [stored[n][face_id][None] for n in BASE]
                ws.put_embedding(face_id, ENSEMBLE, concat_unit(blocks, [ENSEMBLE_WEIGHTS[n] for n in BASE])[0])


def check_composition(ws_root: Path, n: int = 3) -> float:
    """Largest difference between composed ensemble vectors and the ensemble embedder's own."""
    with Workspace(ws_root, create=False) as ws:
        rows = ws.query(
            "SELECT f.*, p.path AS photo_path FROM faces f JOIN photos p ON p.id = f.photo_id "
            "WHERE f.role = 'person' ORDER BY f.id LIMIT ?",
            (n,),
        )
        stored = ws.embeddings(ENSEMBLE)
    worst = 0.0
    for row in rows:
        direct = get_embedder(ENSEMBLE).embed(load_rgb(Path(row["photo_path"])), [_face_from_row(row)])[0]
        worst = max(worst, float(np.abs(direct - stored[row["id"]]).max()))
    return worst


def person_faces(ws_root: Path, single_face_only: bool = False, limit: int | None = None) -> list[tuple]:
    """``(person, sha256, photo, face, face_id)`` of the person face of each photo (one per sha256)."""
    with Workspace(ws_root, create=False) as ws:
        rows = ws.query(
            "SELECT f.*, p.path AS photo_path, p.person AS photo_person, p.sha256 AS sha, "
            "(SELECT COUNT(*) FROM faces g WHERE g.photo_id = p.id) AS n_faces "
            "FROM faces f JOIN photos p ON p.id = f.photo_id WHERE f.role = 'person' ORDER BY p.id"
        )
    out, seen, per_person = [], set(), {}
    for row in rows:
        if row["sha"] in seen or (single_face_only and row["n_faces"] != 1):
            continue
        if limit is not None and per_person.get(row["photo_person"], 0) >= limit:
            continue
        seen.add(row["sha"])
        per_person[row["photo_person"]] = per_person.get(row["photo_person"], 0) + 1
        out.append((row["photo_person"], row["sha"], Path(row["photo_path"]), _face_from_row(row), row["id"]))
    return out


# -- measures -----------------------------------------------------------------------------------


def pair_figures(x: np.ndarray, labels: np.ndarray) -> dict:
    """Verification on all pairs: EER, distance at FMR 0.1% / 1% and FNMR there, medians."""
    from sklearn.metrics import roc_curve
    from sklearn.metrics.pairwise import euclidean_distances

    iu = np.triu_indices(len(x), 1)
    dist = euclidean_distances(x)[iu]
    same = labels[iu[0]] == labels[iu[1]]
    fpr, tpr, _ = roc_curve(same, -dist)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    out = {
        "n_faces": len(x),
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
        "eer": float((fpr[i] + 1 - tpr[i]) / 2),
        "same_median": float(np.median(dist[same])),
        "different_median": float(np.median(dist[~same])),
    }
    for fmr in (0.001, 0.01):
        t = float(np.quantile(dist[~same], fmr))
        out[f"fmr_{fmr}"] = {"distance": t, "fnmr": float(np.mean(dist[same] > t))}
    return out


def one_person_distances(ws_roots: list[Path], strangers: dict[str, np.ndarray | None], model: str) -> dict:
    """Median (over people) distance naming 1% of the strangers, per head, one-person models."""
    x_strangers = np.stack([v for v in strangers.values() if v is not None])
    found: dict[str, list[float]] = {"prototype": [], "knn": []}
    for ws_root in ws_roots:
        with Workspace(ws_root, create=False) as ws:
            train = load_items(ws, "train")
            vectors = ws.embeddings(model)
        for person in sorted({i.person for i in train}):
            own = np.stack([vectors[i.face_id] for i in train if i.person == person and i.face_id in vectors])
            for head_name in found:
                head = build_head(head_name, {})
                head.fit(own, np.zeros(len(own), dtype=np.int64), 1)
                found[head_name].append(1.0 - openset.threshold_for_fpir(head.scores(x_strangers)[:, 0], 0.01))
    return {head: {"median": statistics.median(v), "min": min(v), "max": max(v)} for head, v in found.items()}


def ms_per_face(faces: list[tuple], model: str) -> float:
    """Median milliseconds of ``embed`` for one face, photo already decoded, after one warm-up call.

    The median, not the mean: on a shared machine other jobs stretch a few calls many times over.
    """
    embedder = get_embedder(model)
    photos = [(load_rgb(photo), face) for _, _, photo, face, _ in faces]
    embedder.embed(photos[0][0], [photos[0][1]])
    times = []
    for rgb, face in photos:
        started = time.perf_counter()
        embedder.embed(rgb, [face])
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def run_prototype(ws_root: Path, strangers: Path, model: str) -> dict:
    run = train_embedding_run(
        ws_root, head="prototype", name=f"bench-{model}", strangers=strangers, target_fpir=0.01, model=model
    )
    try:
        summary = json.loads((run / "summary.json").read_text())
        metrics = evaluate(EmbeddingModel(run), ws_root, strangers, None)
    finally:
        shutil.rmtree(run, ignore_errors=True)  # re-runs start clean (run names would be numbered)
    return {"val_accuracy": summary["val_accuracy"], **metrics}


def sweep(ws_root: Path, strangers: list[tuple[Path, str, object]]) -> list[dict]:
    """FaceNet's preprocessing variants: verification EER on celeb5's faces + 100 strangers."""
    variants = [
        ("fixed", 1.35, "landmarks"),
        ("prewhiten", 1.35, "landmarks"),
        ("fixed", 1.15, "landmarks"),
        ("fixed", 1.55, "landmarks"),
        ("fixed", 1.25, "box"),
    ]
    faces = [(person, path, face) for person, _, path, face, _ in person_faces(ws_root)]
    faces += [(f"stranger/{sha}", path, face) for path, sha, face in strangers[:100] if face is not None]
    images = {path: load_rgb(path) for _, path, _ in faces}
    rows = []
    for standardize, margin, box_from in variants:
        name = f"facenet-{standardize}-{margin}-{box_from}"
        register_embedder(
            EmbedderInfo(
                name=name,
                build=lambda n=name, s=standardize, m=margin, b=box_from: FaceNetEmbedder(
                    n, standardize=s, margin=m, box_from=b
                ),
                dim=512,
                params=embedder_info("facenet").params,
                package="",
                weights="",
                verify_distance=1.0,
            )
        )
        embedder = get_embedder(name)
        x = np.stack([embedder.embed(images[path], [face])[0] for _, path, face in faces])
        figures = pair_figures(x, np.array([p for p, _, _ in faces]))
        rows.append({"standardize": standardize, "margin": margin, "box_from": box_from, **figures})
        log(f"  sweep {name}: EER {figures['eer']:.3f}")
    return rows


# -- the report ---------------------------------------------------------------------------------


def pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def write_doc(doc: Path, results: dict) -> None:
    lines = [START, "", f"Machine: {results['machine']}; detector {results['detector']}.", ""]
    lines += [
        "| set | embedder | test acc. (faces) | test acc. (photos) | FPIR / FNIR at calibrated threshold "
        "| FNIR @ FPIR 1% (oracle) | threshold |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset, rows in results["datasets"].items():
        for model, r in rows.items():
            lines.append(
                f"| {dataset} ({r['n_faces']} faces, {r['n_photos']} photos) | {model} | {pct(r['face_accuracy'])} | "
                f"{pct(r['photo_accuracy'])} | {pct(r['test_fpir'])} / {pct(r['test_fnir'])} | "
                f"{pct(r['fnir_at_fpir_1pct'])} | {r['threshold']:.3f} |"
            )
    v0 = results["verify"][EMBEDDERS[0]]
    lines += [
        "",
        f"Verification: {v0['n_faces']} faces (single-face photos of both sets + strangers), {v0['n_same']} same-"
        f"person and {v0['n_different']} different-person pairs. One-person models: the ten people against all "
        f"{results['n_strangers']} strangers.",
        "",
        "| embedder | dim | verify EER | d @ FMR 0.1% (FNMR) | d @ FMR 1% (FNMR) | median d same / different "
        "| unknown distance prototype / kNN (median, range) | ms / face |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in EMBEDDERS:
        v, u = results["verify"][model], results["unknown_distance"][model]
        a, b = v["fmr_0.001"], v["fmr_0.01"]
        lines.append(
            f"| {model} | {embedder_info(model).dim} | {pct(v['eer'])} | {a['distance']:.3f} ({pct(a['fnmr'])}) | "
            f"{b['distance']:.3f} ({pct(b['fnmr'])}) | {v['same_median']:.3f} / {v['different_median']:.3f} | "
            f"{u['prototype']['median']:.3f} ({u['prototype']['min']:.2f}–{u['prototype']['max']:.2f}) / "
            f"{u['knn']['median']:.3f} ({u['knn']['min']:.2f}–{u['knn']['max']:.2f}) | "
            f"{results['ms_per_face'][model]:.0f} |"
        )
    lines += ["", END]
    text = doc.read_text() if doc.exists() else f"## Face embedders compared\n\n{START}\n{END}\n"
    text = _replace(text, START, END, "\n".join(lines))
    if "sweep" in results:
        sweep_lines = [
            SWEEP_START,
            "",
            "| standardisation | margin | box | EER | d @ FMR 1% (FNMR) | median d same / different |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in results["sweep"]:
            sweep_lines.append(
                f"| {r['standardize']} | {r['margin']} | {r['box_from']} | {pct(r['eer'])} | "
                f"{r['fmr_0.01']['distance']:.3f} ({pct(r['fmr_0.01']['fnmr'])}) | "
                f"{r['same_median']:.3f} / {r['different_median']:.3f} |"
            )
        sweep_lines += ["", SWEEP_END]
        text = _replace(text, SWEEP_START, SWEEP_END, "\n".join(sweep_lines))
    doc.write_text(text)
    log(f"written {doc}")


def _replace(text: str, start: str, end: str, block: str) -> str:
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    return text + "\n" + block + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/facelab-bench-embedders"))
    parser.add_argument("--datasets", nargs="+", default=["celeb5", "sports5"])
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_embedders.md")
    parser.add_argument("--sweep", action="store_true", help="also compare FaceNet preprocessing variants")
    args = parser.parse_args()
    started = time.perf_counter()
    strangers_dir = args.data / "strangers"
    detector = face_finder()[0]
    results: dict = {"machine": machine_line(), "detector": detector, "datasets": {}}
    roots = []
    for dataset in args.datasets:
        log(f"{dataset}: workspace")
        roots.append(build_minimal_workspace(args.data / dataset, args.out / f"{dataset}-{detector}", detector))
    log("strangers: detecting and embedding")
    s_vectors, s_faces = stranger_vectors_all(strangers_dir, detector, roots[0] / ".facelab" / "cache")
    results["n_strangers"] = sum(v is not None for v in s_vectors["dlib"].values())
    for root in roots:
        for model in EMBEDDERS:
            write_stranger_cache(root / ".facelab" / "cache", model, detector, s_vectors[model])
        embed_all(root)
    results["ensemble_check_max_abs"] = check_composition(roots[0])
    log(f"ensemble composed vs embedded: max |diff| {results['ensemble_check_max_abs']:.2e}")
    results["ms_per_face"] = {m: ms_per_face(person_faces(roots[0])[:TIMING_FACES], m) for m in EMBEDDERS}
    for dataset, root in zip(args.datasets, roots, strict=True):
        results["datasets"][dataset] = {}
        for model in EMBEDDERS:
            row = run_prototype(root, strangers_dir, model)
            results["datasets"][dataset][model] = row
            log(f"{dataset} {model}: {json.dumps(row)}")
    # Verification pairs: single-face photos of both sets (one per sha256) plus every stranger.
    results["verify"], results["unknown_distance"] = {}, {}
    for model in EMBEDDERS:
        vectors, labels = [], []
        for root in roots:
            with Workspace(root, create=False) as ws:
                mine = ws.embeddings(model)
            for person, _, _, _, face_id in person_faces(root, True):
                vectors.append(mine[face_id])
                labels.append(f"{root.name}/{person}")
        for sha, v in s_vectors[model].items():
            if v is not None:
                vectors.append(v)
                labels.append(f"stranger/{sha}")
        x = np.stack(vectors)
        results["verify"][model] = pair_figures(x, np.array(labels))
        # The ensemble's weights come from this: each part's median different-person distance
        # between unit vectors (ConcatEmbedder, ENSEMBLE_WEIGHTS).
        unit = pair_figures(x / np.linalg.norm(x, axis=1, keepdims=True), np.array(labels))
        results["verify"][model]["unit_different_median"] = unit["different_median"]
        results["unknown_distance"][model] = one_person_distances(roots, s_vectors[model], model)
        log(f"{model}: verify {json.dumps(results['verify'][model])}")
    if args.sweep:
        results["sweep"] = sweep(roots[0], s_faces or stranger_faces(strangers_dir, detector))
    results["seconds"] = round(time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    write_doc(args.doc, results)
    log(f"done in {results['seconds']} s")


if __name__ == "__main__":
    main()
