"""Album search and re-matching at a million faces (synthetic embeddings, no photos).

Makes a workspace whose album tables hold ``--faces`` faces (default 1,000,000) in about a third
as many photos, written straight into the tables: 128-d unit vectors around one centre per person
(``--people``, default 50, some far more often photographed than others), a "newcomer" who is
nobody yet (enrolled later) and random strangers (30% of the faces). The model is a real
embedding-track run (prototype head, then kNN) fitted on synthetic training vectors of the
people, loaded as facelab loads any run. Then it times:

* re-matching every photo from its stored vectors: the first naming (every face's answer
  changes), after enrolling the newcomer (a new model key; few answers change), and after a
  switch to a kNN head (every score changes);
* what people wait on: the web app's album page (a page and a total), ``album_listing`` (what
  ``facelab album find`` prints) for one person, two (all of them), two (any) but not a third,
  ``unknown`` (a huge answer), and ``facelab album find`` as a user runs it (a new process:
  start-up and imports included); ``count_photos``, ``known_names``; and ``find_photos``, which
  makes every photo and face of an answer an object;
* for scale, the code they replaced: the Python search over every face, and the photo-at-a-time
  re-match on a sample, extrapolated.

Writes docs/benchmarks_album_scale.md.

    .venv/bin/python bench/bench_album_scale.py [--faces 1000000] [--keep]

About 4 minutes on 2 cores; the workspace (~1 GB) goes to $FACELAB_BENCH_DIR (default
/tmp/facelab-bench) and is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facelab.album_rematch import DEFAULT_CHUNK, SCORE_BATCH, rematch_photos
from facelab.albums import (
    UNKNOWN,
    AlbumFace,
    AlbumPhoto,
    album_listing,
    album_photos,
    count_photos,
    ensure_album_tables,
    find_photos,
    known_names,
)
from facelab.embed_track import EmbeddingModel, store_gallery_vector
from facelab.recognize import Recognizer, model_key
from facelab.server.album_ops import search as web_search
from facelab.store import Workspace, blob_to_vector
from facelab.types import Box, Face
from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
WORK = Path(os.environ.get("FACELAB_BENCH_DIR", "/tmp/facelab-bench"))
DIM = 128
STRANGERS = 0.30  # share of faces of people nobody knows
NEWCOMER = 0.03  # share of faces of the person enrolled later
SPREAD = 0.03  # per-dimension noise around a person's centre: same-person distance ~0.35, others ~1.4
THRESHOLD = 0.4  # similarity = 1 − distance: dlib's usual 0.6 tolerance
INSERT_BATCH = 100_000


def person_name(i: int) -> str:
    return f"person_{i:02d}"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# -- the synthetic index and model -----------------------------------------------------------------


def build_index(root: Path, n_faces: int, n_people: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Write the album tables; returns the people's centres, the newcomer's centre and the photo count."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_people + 1, DIM)))
    people, newcomer = centres[:n_people], centres[n_people]
    # 1–5 faces a photo (3 on average), cut to exactly n_faces.
    counts = rng.integers(1, 6, size=n_faces // 2)
    counts = counts[: int(np.searchsorted(np.cumsum(counts), n_faces)) + 1]
    counts[-1] -= int(counts.sum()) - n_faces
    n_photos = len(counts)
    photo_of_face = np.repeat(np.arange(1, n_photos + 1), counts)
    idx_of_face = np.arange(n_faces) - np.repeat(np.cumsum(counts) - counts, counts)
    # Who each face is: a few people in many photos (family), most in few (Zipf-like).
    weights = 1.0 / np.arange(1, n_people + 1) ** 0.8
    who = rng.choice(n_people, size=n_faces, p=weights / weights.sum())
    kind = rng.random(n_faces)
    who[kind < STRANGERS] = -1
    who[(kind >= STRANGERS) & (kind < STRANGERS + NEWCOMER)] = n_people
    taken = 1_400_000_000 + rng.integers(0, 10 * 365 * 86400, size=n_photos)
    with Workspace(root) as ws:
        ensure_album_tables(ws)
        with ws.transaction() as conn:
            conn.executemany(
                "INSERT INTO album_photos(id, path, size, mtime, taken, taken_source, width, height, status, model, "
                "detector) VALUES (?, ?, 2000000, ?, ?, 'exif', 4000, 3000, 'ok', 'none@0', 'retinaface')",
                (
                    (i + 1, f"/photos/{time.strftime('%Y/%m', time.gmtime(int(t)))}/IMG_{i + 1:07d}.jpg", t, t)
                    for i, t in enumerate(taken.tolist())
                ),
            )
            for start in range(0, n_faces, INSERT_BATCH):
                stop = min(n_faces, start + INSERT_BATCH)
                part = who[start:stop]
                known = np.clip(part, 0, n_people)
                vectors = np.where(
                    (part >= 0)[:, None],
                    centres[known] + rng.normal(scale=SPREAD, size=(len(part), DIM)),
                    rng.normal(size=(len(part), DIM)),
                )
                blobs = unit(vectors).astype("<f4")
                # Named as an older model left them: the people by name, everybody else unknown.
                conn.executemany(
                    "INSERT INTO album_faces(photo_id, idx, x1, y1, x2, y2, det_score, name, score, margin, embedder, "
                    "vector) VALUES (?, ?, 100, 100, 300, 300, 0.99, ?, 0.0, NULL, 'dlib', ?)",
                    (
                        (p, i, person_name(w) if 0 <= w < n_people else None, blobs[j].tobytes())
                        for j, (p, i, w) in enumerate(
                            zip(
                                photo_of_face[start:stop].tolist(),
                                idx_of_face[start:stop].tolist(),
                                part.tolist(),
                                strict=True,
                            )
                        )
                    ),
                )
    return people, newcomer, n_photos


def write_run(root: Path, centres: np.ndarray, head: str, per_person: int = 20, seed: int = 1) -> Path:
    """A real embedding-track run folder (as ``train_embedding_run`` writes it, minus the plots)."""
    rng = np.random.default_rng(seed)
    x = unit(np.repeat(centres, per_person, axis=0) + rng.normal(scale=SPREAD, size=(len(centres) * per_person, DIM)))
    y = np.repeat(np.arange(len(centres)), per_person)
    run = root / "runs" / f"emb-dlib-{head}"
    run.mkdir(parents=True, exist_ok=True)
    classes = [person_name(i) for i in range(len(centres))]  # already sorted, as class_names makes them
    np.savez(run / "head.npz", classes=np.array(classes), x=x, y=y)
    summary = {"track": "embedding", "status": "finished", "strategy": head, "embedder": "dlib", "head_params": {}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "openset.json").write_text(json.dumps({"threshold": THRESHOLD, "min_margin": 0.05}))
    return run


# -- timing ------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float, object]:
    """Median wall time and CPU time (this process, all threads) of ``repeat`` calls, and the last
    result. On a shared machine the CPU time is the steadier figure: wall time includes waiting
    for a core."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def rematch_all(root: Path, recognizer: Recognizer, n_photos: int) -> tuple[float, float, int]:
    """Wall and CPU seconds to re-match every photo, and how many faces were rewritten."""
    key = model_key(recognizer.model)
    with Workspace(root) as ws:
        before = ws.conn.total_changes
        wall, cpu, left = timed(lambda: rematch_photos(ws, recognizer, key, list(range(1, n_photos + 1))), repeat=1)
        written = ws.conn.total_changes - before - n_photos
    assert not left, f"{len(left)} photos without usable vectors"  # every synthetic face has one
    return wall, cpu, written


def old_find(ws: Workspace, names: list[str]) -> list[AlbumPhoto]:
    """The search as it was: every face of every photo into Python objects, then filtered."""
    photos: dict[int, tuple[dict, list[AlbumFace]]] = {}
    rows = ws.query(
        "SELECT p.id, p.path, p.taken, p.taken_source, f.x1, f.y1, f.x2, f.y2, f.name, f.score "
        "FROM album_photos p JOIN album_faces f ON f.photo_id = p.id WHERE p.status = 'ok' ORDER BY p.id, f.idx"
    )
    for r in rows:
        entry = photos.setdefault(r["id"], (dict(r), []))
        entry[1].append(AlbumFace(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["name"], r["score"]))
    wanted = {n.casefold() for n in names}
    out = [
        AlbumPhoto(Path(info["path"]), info["taken"], info["taken_source"], tuple(faces))
        for info, faces in photos.values()
        if wanted <= {f.label.casefold() for f in faces}
    ]
    out.sort(key=lambda p: (-p.taken, str(p.path)))
    return out


def old_rematch_seconds_per_photo(root: Path, recognizer: Recognizer, sample: int) -> float:
    """The photo-at-a-time re-match (query, score, name, transaction per photo) on ``sample`` photos."""
    model, key = recognizer.model, model_key(recognizer.model)
    with Workspace(root) as ws:
        started = time.perf_counter()
        for photo_id in range(1, sample + 1):
            rows = ws.query("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo_id,))
            faces = [Face(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["det_score"] or 0.0) for r in rows]
            scores = model.predict_vectors(np.stack([blob_to_vector(r["vector"]) for r in rows]))
            recognitions = recognizer.name_scores(faces, np.asarray(scores))
            with ws.transaction() as conn:
                for row, rec in zip(rows, recognitions, strict=True):
                    conn.execute(
                        "UPDATE album_faces SET name = ?, score = ?, margin = ? WHERE id = ?",
                        (rec.name, rec.score, rec.margin if np.isfinite(rec.margin) else None, row["id"]),
                    )
                conn.execute("UPDATE album_photos SET model = ? WHERE id = ?", (key, photo_id))
        return (time.perf_counter() - started) / sample


def cli_seconds(root: Path, *args: str) -> tuple[float, float, int]:
    """Wall and CPU time of ``facelab album find ROOT ARGS`` in a new process (medians of 3), and
    its output lines; no ARGS: ``facelab --help``."""
    facelab = Path(sys.executable).parent / "facelab"
    command = [str(facelab), "album", "find", str(root), *args] if args else [str(facelab), "--help"]
    walls, cpus, lines = [], [], 0
    for _ in range(3):
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
        lines = done.stdout.count("\n")
    return statistics.median(walls), statistics.median(cpus), lines


# -- the page --------------------------------------------------------------------------------------


class Table:
    """The rows of the page: what, wall seconds, CPU seconds, target, answer (printed as they come)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, what: str, wall: float, cpu: float | None, target: str = "", answer: str = "") -> None:
        digits = 3 if wall < 10 else 1
        cpu_cell = f"{cpu:.{digits}f}" if cpu is not None else ""
        self.rows.append((what, f"{wall:.{digits}f}", cpu_cell, target, answer))
        print(" | ".join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        lines = ["| what | wall s | CPU s | target | answer |", "|---|---:|---:|---:|---:|"]
        return "\n".join(lines + [f"| {' | '.join(row)} |" for row in self.rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--old-sample", type=int, default=2000, help="photos for the photo-at-a-time re-match")
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    parser.add_argument("--out", type=Path, default=DOCS / "benchmarks_album_scale.md")
    args = parser.parse_args()
    root = WORK / f"album-scale-{args.faces}"
    if root.exists():
        shutil.rmtree(root)
    table = Table()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    build_s, build_cpu, built = timed(lambda: build_index(root, args.faces, args.people), repeat=1)
    people, newcomer, n_photos = built  # type: ignore[misc]
    size_mb = sum(f.stat().st_size for f in (root / ".facelab").iterdir()) / 1e6
    table.add(f"write the index ({size_mb:,.0f} MB)", build_s, build_cpu, "", f"{n_photos:,} photos")

    prototype = Recognizer(EmbeddingModel(write_run(root, people, "prototype")))
    wall, cpu, written = rematch_all(root, prototype, n_photos)
    table.add("re-match all, first naming (every answer changes)", wall, cpu, "< 60", f"{written:,} faces written")
    # The most photographed person (in a quarter of the photos), one in 6% and one in 2.5%.
    top, popular, second, typical = person_name(0), person_name(1), person_name(7), person_name(24)
    with Workspace(root) as ws:
        # What people wait on (target < 1 s): the web app's album page (one page of photos as
        # objects, and the total) and `album find`'s listing (below, also as a new process).
        # find_photos makes every photo and face of an answer a Python object (what `--export`
        # uses, then linking every photo): timed for scale, no target.
        huge = f"`{UNKNOWN}` (a huge answer)"
        # (what, names, options): one person, most to fewest photos; all of two; any of two but
        # not a third; unknown.
        asked: list[tuple[str, list[str], dict[str, Any]]] = [
            (f"`{top}`", [top], {}),
            (f"`{second}`", [second], {}),
            (f"`{typical}`", [typical], {}),
            (f"`{top}` and `{popular}` (all of)", [top, popular], {}),
            (f"`{popular}` or `{second}`, not `{top}`", [popular, second], {"any_": True, "exclude": [top]}),
            (huge, [UNKNOWN], {}),
        ]
        queries: list[tuple[str, str, Callable[[], object]]] = []
        searches = (
            ("web album page (500 + total)", web_search, "< 1"),
            ("`album_listing` (`album find`'s rows)", album_listing, "< 1"),
            ("`find_photos` (all as objects)", find_photos, ""),
        )
        for label, search, target in searches:
            for what, names, options in asked:
                wanted = "" if search is album_listing and what == huge else target
                queries.append((f"{label}: {what}", wanted, partial(search, ws, names, **options)))
        queries += [
            (f"`count_photos` `{top}`", "< 1", lambda: count_photos(ws, [top])),
            (f"`count_photos` `{UNKNOWN}`", "< 1", lambda: count_photos(ws, [UNKNOWN])),
            ("`known_names`", "< 1", lambda: known_names(ws)),
        ]
        for what, target, fn in queries:
            wall, cpu, found = timed(fn)
            if isinstance(found, int):
                answer = f"{found:,} photos"
            elif isinstance(found, tuple):  # the web page: (page, total)
                answer = f"{len(found[0]):,} of {found[1]:,} photos"
            else:
                answer = f"{len(found):,} {'names' if what == '`known_names`' else 'photos'}"  # type: ignore[arg-type]
            table.add(what, wall, cpu, target, answer)
        wall, cpu, photos = timed(lambda: album_photos(ws), repeat=1)
        table.add("`album_photos` (every photo and face as objects)", wall, cpu, "", f"{len(photos):,} photos")  # type: ignore[arg-type]
        del photos
        wall, cpu, found = timed(lambda: old_find(ws, [top]), repeat=1)
        table.add(f"before: the Python search, find `{top}`", wall, cpu, "", f"{len(found):,} photos")  # type: ignore[arg-type]
    # Byte-compiled first, as an installed package is (an editable install under
    # PYTHONDONTWRITEBYTECODE would compile facelab's modules again at every start).
    import compileall

    import facelab

    compileall.compile_dir(Path(facelab.__file__).parent, quiet=1)
    for query in ([top], [second], [typical], [top, popular], [popular, second, "--any", "--not", top]):
        wall, cpu, lines = cli_seconds(root, *query)
        what = f"`facelab album find WS {' '.join(query)}` (a new process)"
        table.add(what, wall, cpu, "", f"{lines - 1:,} CSV lines")
    wall, cpu, _ = cli_seconds(root)
    table.add("`facelab --help` (start-up and imports alone)", wall, cpu)

    # An enrolment: the newcomer gets five gallery faces; the new model key re-matches every photo.
    with Workspace(root) as ws, ws.transaction() as conn:
        rng = np.random.default_rng(5)
        for i, vector in enumerate(unit(newcomer + rng.normal(scale=SPREAD, size=(5, DIM)))):
            store_gallery_vector(conn, "newcomer", "dlib", f"newcomer-{i}.jpg", vector)
    prototype.model.refresh()
    wall, cpu, written = rematch_all(root, prototype, n_photos)
    table.add("re-match all after `enroll` (a new person)", wall, cpu, "< 60", f"{written:,} faces written")
    knn = Recognizer(EmbeddingModel(write_run(root, people, "knn")))
    wall, cpu, written = rematch_all(root, knn, n_photos)
    gallery = len(people) * 20  # write_run's per_person
    table.add(f"re-match all, kNN head ({gallery:,} gallery vectors)", wall, cpu, "< 60", f"{written:,} faces written")
    per_photo = old_rematch_seconds_per_photo(root, knn, args.old_sample)
    table.add(
        f"before: photo-at-a-time re-match, {args.old_sample:,} photos extrapolated to all",
        per_photo * n_photos,
        None,
        "",
        f"{per_photo * 1000:.1f} ms a photo",
    )

    # An index made by an older facelab: the new index is built on its next open, once.
    with Workspace(root) as ws:
        ws.conn.executescript(
            "DROP INDEX album_faces_person; DROP INDEX album_faces_photo; "
            "CREATE INDEX album_faces_name ON album_faces(name);"
        )
        wall, cpu, _ = timed(lambda: ensure_album_tables(ws), repeat=1)
        table.add(
            "first open of an older index (builds `album_faces_person` and `album_faces_photo`)", wall, cpu, "", "once"
        )
        wall, cpu, _ = timed(lambda: ensure_album_tables(ws))
        table.add("any later open (`ensure_album_tables`)", wall, cpu)

    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    page = f"""## Album search and re-match at a million faces

Measured {date.today().isoformat()} on {machine_line()} by `bench/bench_album_scale.py`; load average
{load_before} before and {load_after} after (other jobs shared the two cores: wall times include
waiting for a core, CPU times do not). {args.faces:,} synthetic faces (128-d unit vectors around
{args.people} people, a newcomer and random strangers, 1–5 a photo) in {n_photos:,} photos, written straight
into the album tables; the models are real embedding-track runs (a prototype head, then kNN, on
{len(people) * 20:,} training vectors) loaded as facelab loads any run. Searches: medians of 3; the rest one
run. Re-matches read and write in chunks of {DEFAULT_CHUNK:,} faces and score {SCORE_BATCH:,} at a time, all
photos each time.

{table.markdown()}

- Search is answered by SQLite from two covering indexes: `album_faces_person (name, photo_id)` finds the
  photos, `album_faces_photo (photo_id, idx, name, box, score)` gives their faces without reading the table
  rows (which carry the 512-byte vectors). What people wait on makes no object per face: the web app's album
  page is one page of photos (`limit` 500) and a total (`count_photos`); `album find` prints the rows of
  `album_listing`, each photo's names listed and its date formatted by the database. Their time follows the
  size of the answer, not of the index.
- `find_photos` makes every photo and face of the answer a Python object (what `album find --export` uses
  before linking every photo): most of its time for a large answer. `unknown` matches most photos here
  (every stranger is unknown).
- `facelab album find` in a new process (output captured through a pipe, facelab byte-compiled as an
  installed package is) adds to the listing Python's start-up and imports — the `--help` line, most of it
  the CLI library's (typer loads pydantic) — and writing the CSV. Start-up is not search, so these rows
  carry no target; they are what a person at a terminal waits.
- A re-match after `enroll` writes only the faces whose answer changed (the newcomer's, and the few whose
  runner-up changed); reading and scoring every vector is the rest. The first naming and the switch of head
  change every face's score, so every face is written.
- The kNN head costs most: every face against every gallery vector, in float64 (sklearn's exact
  distances), then a top-k per person. Scoring 8k faces a call instead of 50k halved it (fresh 400 MB
  temporaries per call cost page faults). An ANN index (faiss, hnswlib) is no fit: the head needs each
  person's k best, not the k best overall, and approximate distances would change the stored answers;
  a faster exact head (gallery columns grouped by person once, float32) belongs in `embed_track`.
"""
    args.out.write_text(page)
    print(f"written {args.out}")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
