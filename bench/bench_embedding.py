"""Benchmark of the embedding track (dlib 128-d + prototype / kNN / linear heads) with open-set figures.

    .venv/bin/python bench/bench_embedding.py [--data ../shared/data] [--out /tmp/facelab-bench-embedding]
        [--datasets sports5 celeb5] [--doc docs/benchmarks_embedding.md]

For each data set it builds a minimal workspace of its own (so it does not depend on the build and
split commands): every photo is read upright (EXIF), faces are found with the default detector
(RetinaFace; dlib's HOG when it is missing), the **largest face of each photo is the person** and
every other face a bystander, and photos are split 60/20/20 per person with seed 0, grouped by
file sha256 so byte-identical copies never straddle splits. Photos without a face are split too
and count as misses at photo level. A second workspace with dlib's HOG detector and the same
split reproduces the peer (face_recognition: HOG + largest face + nearest photo at distance 0.6).

Heads are trained with :func:`facelab.embed_track.train_embedding_run`: threshold calibrated at
FPIR 1% on the val split plus the *calibration* half of ``strangers/``; test figures use the test
split and the *evaluation* half, which no choice ever saw. Results go between the markers of the
doc (the prose around them is kept) and to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from facelab import openset
from facelab.embed_track import EmbeddingModel, train_embedding_run
from facelab.embedders import (
    DlibEmbedder,
    EmbedderInfo,
    embed_workspace,
    embedder_info,
    face_finder,
    find_faces,
    register_embedder,
)
from facelab.imageio import ImageError, iter_image_files, load_rgb, save_jpeg_atomic
from facelab.items import load_items
from facelab.store import Workspace

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
VERIFY_THRESHOLDS = (0.45, 0.5, 0.55, 0.58, 0.6, 0.65)
HEADS = [
    ("prototype", {}),
    ("prototype", {"metric": "cosine"}),
    ("knn", {"k": 1}),
    ("knn", {"k": 3}),
    ("linear", {}),
    ("linear", {"kind": "svm", "C": 1.0}),
]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seeded_split(files: list[tuple[str, Path, str]], seed: int = 0) -> dict[Path, str]:
    """60/20/20 per person by photo, byte-identical copies (same sha256) kept together."""
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for person, path, sha in files:
        groups[person][sha].append(path)
    rng = random.Random(seed)
    out: dict[Path, str] = {}
    for person in sorted(groups):
        shas = sorted(groups[person])
        rng.shuffle(shas)
        n = len(shas)
        n_train, n_val = round(0.6 * n), round(0.2 * n)
        for i, sha in enumerate(shas):
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for path in groups[person][sha]:
                out[path] = split
    return out


def build_minimal_workspace(photos_root: Path, ws_root: Path, detector: str | None, seed: int = 0) -> Path:
    """The workspace described in the module docstring (kept if it already exists)."""
    if (ws_root / ".facelab" / "facelab.db").exists():
        return ws_root
    files = [
        (folder.name, path, sha256_of(path))
        for folder in sorted(p for p in photos_root.iterdir() if p.is_dir())
        for path in iter_image_files(folder)
    ]
    split = seeded_split(files, seed)
    tmp = ws_root.with_name(ws_root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    with Workspace(tmp) as ws:
        for n, (person, path, sha) in enumerate(files, 1):
            try:
                rgb = load_rgb(path)
            except ImageError as exc:
                ws.conn.execute(
                    "INSERT INTO photos(path, person, sha256, status, error) VALUES (?, ?, ?, 'error', ?)",
                    (str(path), person, sha, str(exc)),
                )
                continue
            faces = find_faces(rgb, detector)
            largest = max(range(len(faces)), key=lambda i: faces[i].box.area, default=-1)
            with ws.transaction() as conn:
                photo_id = conn.execute(
                    "INSERT INTO photos(path, person, sha256, width, height, status, detector, split) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(path),
                        person,
                        sha,
                        rgb.shape[1],
                        rgb.shape[0],
                        "ok" if faces else "no_face",
                        faces[0].detector if faces else detector,
                        split[path],
                    ),
                ).lastrowid
                for idx, face in enumerate(faces):
                    face_id = conn.execute(
                        "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, detector, role, "
                        "role_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'auto')",
                        (
                            photo_id,
                            idx,
                            face.box.x1,
                            face.box.y1,
                            face.box.x2,
                            face.box.y2,
                            face.score,
                            json.dumps(face.landmarks) if face.landmarks else None,
                            face.detector,
                            "person" if idx == largest else "bystander",
                        ),
                    ).lastrowid
                    x1, y1, x2, y2 = face.box.as_ints()
                    crop_rel = f"crops/{person}/{photo_id}-{idx}.jpg"
                    if x2 > x1 and y2 > y1:
                        save_jpeg_atomic(np.ascontiguousarray(rgb[y1:y2, x1:x2]), ws.root / crop_rel)
                    conn.execute(
                        "INSERT INTO crops(face_id, path, person) VALUES (?, ?, ?)",
                        (face_id, crop_rel, person),
                    )
            if n % 50 == 0:
                print(f"  {photos_root.name}: {n}/{len(files)} photos", file=sys.stderr)
    tmp.rename(ws_root)
    return ws_root


def photo_table(ws: Workspace, split: str) -> dict[int, dict]:
    """Photos of a split: person, number of faces, the largest (person) face id."""
    photos = {
        r["id"]: {"person": r["person"], "faces": 0, "face_id": None}
        for r in ws.query("SELECT id, person FROM photos WHERE split = ? AND status != 'error'", (split,))
    }
    for r in ws.query(
        "SELECT f.id, f.photo_id, f.role FROM faces f JOIN photos p ON p.id = f.photo_id WHERE p.split = ?",
        (split,),
    ):
        photos[r["photo_id"]]["faces"] += 1
        if r["role"] == "person":
            photos[r["photo_id"]]["face_id"] = r["id"]
    return photos


def evaluate(model: EmbeddingModel, ws_root: Path, strangers: Path, similarity_at_06: float | None) -> dict:
    """Test-split figures. Open-set rates are per photo: a photo without a face is a miss."""
    with Workspace(ws_root, create=False) as ws:
        items = load_items(ws, "test")
        photos = photo_table(ws, "test")
    scores = model.predict_items(items)
    best, top, _ = openset.top_two(scores)
    names = {item.face_id: model.classes[b] for item, b in zip(items, best, strict=True)}
    correct = np.array([model.classes[b] == item.person for item, b in zip(items, best, strict=True)])

    def photo_acc(selected: list[dict]) -> float:
        return float(np.mean([names.get(p["face_id"]) == p["person"] for p in selected])) if selected else np.nan

    all_photos = list(photos.values())
    single = [p for p in all_photos if p["faces"] == 1]
    faceless = sum(p["face_id"] is None for p in all_photos)
    # Photo level: each faceless photo adds a known person who can never be named.
    photo_top = np.r_[top, np.full(faceless, -np.inf)]
    photo_correct = np.r_[correct, np.zeros(faceless, dtype=bool)]
    stranger_best = model.stranger_scores(strangers, "evaluation")
    faces = openset.evaluate_open_set(top, correct, stranger_best, model.threshold)
    result = openset.evaluate_open_set(photo_top, photo_correct, stranger_best, model.threshold)
    out = {
        "face_accuracy": float(np.mean(correct)),
        "n_faces": len(items),
        "photo_accuracy": photo_acc(all_photos),
        "n_photos": len(all_photos),
        "photo_accuracy_single_face": photo_acc(single),
        "n_single": len(single),
        "photos_no_face": faceless,
        "threshold": model.threshold,
        "test_fpir": result["fpir"],
        "test_fnir": result["fnir"],
        "test_rejected": result["rejected"],
        "test_misnamed": result["misnamed"],
        "fnir_at_fpir_1pct": result["fnir_at_fpir"]["0.01"],
        "fnir_at_fpir_10pct": result["fnir_at_fpir"]["0.1"],
        "face_fnir_at_fpir_1pct": faces["fnir_at_fpir"]["0.01"],
        "eer": result["eer"],
        "n_strangers": result["n_strangers"],
    }
    if similarity_at_06 is not None:
        fpir, fnir = openset.rates_at(similarity_at_06, photo_top, photo_correct, stranger_best)
        out["fpir_at_dlib_06"], out["fnir_at_dlib_06"] = fpir, fnir
    return out


def verify_distances(data: Path, detector: str | None, cache: Path) -> dict:
    """Same / different person distances between largest faces of single-face photos (+ strangers)."""

    from facelab.embedders import embed_largest_face

    if cache.exists():
        with np.load(cache) as saved:
            return verify_table(saved["x"], saved["labels"])
    vectors, labels = [], []
    for dataset in ("celeb5", "sports5"):
        for folder in sorted(p for p in (data / dataset).iterdir() if p.is_dir()):
            seen = set()
            for path in iter_image_files(folder):
                sha = sha256_of(path)
                if sha in seen:
                    continue
                seen.add(sha)
                try:
                    rgb = load_rgb(path)
                except ImageError:
                    continue
                faces = find_faces(rgb, detector)
                if len(faces) != 1:
                    continue
                _, vector, _ = embed_largest_face(rgb, detector=detector)
                vectors.append(vector)
                labels.append(f"{dataset}/{folder.name}")
    for path, _ in openset.stranger_files(data / "strangers"):
        _, vector, _ = embed_largest_face(load_rgb(path), detector=detector)
        if vector is not None:
            vectors.append(vector)
            labels.append(f"stranger/{path.stem}")
    x = np.stack(vectors)
    lab = np.array(labels)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, labels=lab)
    return verify_table(x, lab)


def verify_table(x: np.ndarray, lab: np.ndarray) -> dict:
    from sklearn.metrics.pairwise import euclidean_distances

    d = euclidean_distances(x)
    iu = np.triu_indices(len(x), 1)
    same = lab[iu[0]] == lab[iu[1]]
    dist = d[iu]
    out = {"n_faces": len(x), "n_same": int(same.sum()), "n_different": int((~same).sum())}
    for t in VERIFY_THRESHOLDS:
        out[f"at_{t}"] = {
            "false_match": float(np.mean(dist[~same] <= t)),
            "false_non_match": float(np.mean(dist[same] > t)),
        }
    for fmr in (0.001, 0.01):
        t = float(np.quantile(dist[~same], fmr))
        out[f"threshold_at_fmr_{fmr}"] = {"threshold": t, "false_non_match": float(np.mean(dist[same] > t))}
    out["same_median"] = float(np.median(dist[same]))
    out["different_median"] = float(np.median(dist[~same]))
    return out


def pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/facelab-bench-embedding"))
    parser.add_argument("--datasets", nargs="+", default=["sports5", "celeb5"])
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_embedding.md")
    parser.add_argument("--no-peer", action="store_true", help="skip the HOG workspace (peer reproduction)")
    parser.add_argument("--no-verify", action="store_true", help="skip the verify distance study")
    args = parser.parse_args()
    strangers = args.data / "strangers"
    detector = face_finder()[0]
    # The same network fed the detector's raw box, to show what the landmark-derived box buys.
    register_embedder(
        EmbedderInfo(
            name="dlib-rawbox",
            build=lambda: DlibEmbedder("dlib-rawbox", box_from="box"),
            dim=128,
            params=embedder_info("dlib").params,
            package="",
            weights=embedder_info("dlib").weights,
            verify_distance=0.6,
        )
    )
    results: dict = {"detector": detector, "datasets": {}}
    for dataset in args.datasets:
        rows = []
        configs = [(detector, "dlib", head, params) for head, params in HEADS]
        configs.append((detector, "dlib-rawbox", "prototype", {}))
        if not args.no_peer:
            configs.append(("dlib_hog", "dlib", "knn", {"k": 1}))
        for det, embedder, head, params in configs:
            ws_root = build_minimal_workspace(args.data / dataset, args.out / f"{dataset}-{det}", det)
            with Workspace(ws_root, create=False) as ws:
                started = time.perf_counter()
                embed_workspace(ws, embedder)
                embed_s = time.perf_counter() - started
            run = train_embedding_run(
                ws_root,
                head=head,
                name=f"{embedder}-{head}-" + "-".join(f"{k}{v}" for k, v in params.items()),
                strangers=strangers,
                target_fpir=0.01,
                model=embedder,
                head_params=params,
            )
            summary = json.loads((run / "summary.json").read_text())
            calib = json.loads((run / "openset.json").read_text())
            model = EmbeddingModel(run)
            euclid = head != "linear" and params.get("metric", "euclidean") == "euclidean"
            metrics = evaluate(model, ws_root, strangers, 0.4 if euclid else None)
            row = {
                "detector": det,
                "embedder": embedder,
                "head": head,
                "params": params,
                "train_seconds": summary["train_seconds"],
                "embed_seconds_new": round(embed_s, 1),
                "val_accuracy": summary["val_accuracy"],
                "val_fnir_at_threshold": calib["fnir"],
                "calibration_strangers": calib["n_strangers"],
                **metrics,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        results["datasets"][dataset] = rows
    if not args.no_verify:
        results["verify"] = verify_distances(args.data, detector, args.out / f"verify-{detector}.npz")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    write_doc(args.doc, results)


def write_doc(doc: Path, results: dict) -> None:
    lines = [START, ""]
    for dataset, rows in results["datasets"].items():
        n = rows[0]
        lines += [
            f"### {dataset} — test split: {n['n_photos']} photos ({n['n_single']} with a single face); "
            f"{n['n_strangers']} evaluation strangers",
            "",
            "| detector | embedding | head | photo acc. | single-face photo acc. | "
            "FNIR @ FPIR 1% (best threshold on test) | calibrated threshold | "
            "test FPIR / FNIR at it (rejected + misnamed) | FPIR / FNIR at dlib's 0.6 | "
            "val acc. | head fit |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
            head = f"{r['head']} ({params})" if params else r["head"]
            at06 = (
                f"{pct(r.get('fpir_at_dlib_06'))} / {pct(r.get('fnir_at_dlib_06'))}" if "fpir_at_dlib_06" in r else "–"
            )
            fit_ms = r["train_seconds"] * 1000
            lines.append(
                f"| {r['detector']} | {r['embedder']} | {head} | {pct(r['photo_accuracy'])} | "
                f"{pct(r['photo_accuracy_single_face'])} | {pct(r['fnir_at_fpir_1pct'])} | "
                f"{r['threshold']:.3f} | {pct(r['test_fpir'])} / {pct(r['test_fnir'])} "
                f"({pct(r['test_rejected'])} + {pct(r['test_misnamed'])}) | {at06} | "
                f"{pct(r['val_accuracy'])} | {'<1' if fit_ms < 1 else f'{fit_ms:.0f}'} ms |"
            )
        lines.append("")
    if "verify" in results:
        v = results["verify"]
        lines += [
            f"### verify — {v['n_faces']} faces (single-face photos of celeb5 + sports5, and strangers): "
            f"{v['n_same']} same-person pairs, {v['n_different']} different-person pairs",
            "",
            f"Median distance: same person {v['same_median']:.3f}, different people {v['different_median']:.3f}.",
            "",
            "| threshold | false match (different people called same) | false non-match (same person missed) |",
            "|---:|---:|---:|",
        ]
        for t in VERIFY_THRESHOLDS:
            r = v[f"at_{t}"]
            lines.append(f"| {t} | {pct(r['false_match'])} | {pct(r['false_non_match'])} |")
        for fmr in (0.001, 0.01):
            r = v[f"threshold_at_fmr_{fmr}"]
            lines.append(
                f"| {r['threshold']:.3f} (false match {pct(fmr)}) | {pct(fmr)} | {pct(r['false_non_match'])} |"
            )
        lines.append("")
    lines.append(END)
    block = "\n".join(lines)
    text = doc.read_text() if doc.exists() else f"# Embedding track benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text += "\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"written {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
