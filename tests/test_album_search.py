"""Album search from SQL and chunked re-matching, checked against the photo-at-a-time Python code
they replace (kept below as the reference), on a small synthetic index with a real embedding run.

No photo, detector or network is involved: faces and their vectors are written straight into
the album tables, as bench/bench_album_scale.py does at a million faces.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest

from facelab import album_rematch
from facelab.album_rematch import name_scores_fast, rematch_photos
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
from facelab.items import OTHERS
from facelab.recognize import Recognizer, model_key
from facelab.store import Workspace, blob_to_vector, vector_to_blob
from facelab.types import Box, Face

DIM = 16
PEOPLE = ["Alice", "bob", "Zoë", "Straße"]
# Stored names as an index may hold them: case variants of one person (casefold alike), a
# literal "Unknown", non-ASCII ones, and None (nobody recognised).
STORED_NAMES = [*PEOPLE, "alice", "ZOË", "STRASSE", "Unknown", "carol", None, None, None]


# -- a synthetic index ----------------------------------------------------------------------------


def _make_index(root: Path, n_photos: int = 120, seed: int = 0) -> Path:
    """A workspace whose album tables hold ``n_photos`` photos (some not ok, some without faces;
    dates with ties so that paths decide) with 0–4 faces each, names from :data:`STORED_NAMES`
    and vectors near one centre per person (a few without a vector or of another embedder)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(PEOPLE), DIM))
    with Workspace(root) as ws:
        ensure_album_tables(ws)
        photos, faces = [], []
        for pid in range(1, n_photos + 1):
            status = rng.choice(["ok"] * 8 + ["no_face", "error"])
            taken = float(1_600_000_000 + int(rng.integers(0, 40)) * 3600)  # ties on purpose
            photos.append((pid, f"/lib/{rng.integers(0, 1000):03d}/p{pid}.jpg", taken, "exif", status, "old@0"))
            if status != "ok":
                continue
            for idx in range(int(rng.integers(0, 5))):
                name = STORED_NAMES[int(rng.integers(0, len(STORED_NAMES)))]
                person = int(rng.integers(0, len(PEOPLE)))
                vector = centres[person] + rng.normal(scale=0.3, size=DIM)
                embedder = "dlib"
                if rng.random() < 0.03:
                    vector = None
                elif rng.random() < 0.03:
                    embedder = "facenet"
                blob = vector_to_blob(vector) if vector is not None else None
                box = (10.0 * idx, 5.0, 10.0 * idx + 8, 13.0)
                faces.append((pid, idx, *box, 0.9, name, 0.5, 0.1, embedder if blob else None, blob))
        with ws.transaction() as conn:
            conn.executemany(
                "INSERT INTO album_photos(id, path, taken, taken_source, status, model) VALUES (?, ?, ?, ?, ?, ?)",
                photos,
            )
            conn.executemany(
                "INSERT INTO album_faces(photo_id, idx, x1, y1, x2, y2, det_score, name, score, margin, embedder, "
                "vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                faces,
            )
        np.save(root / "centres.npy", centres)
    return root


def _write_run(root: Path, centres: np.ndarray, *, head: str = "prototype", threshold: float | None = 0.2) -> Path:
    """A real embedding-track run folder (WS/runs/NAME) fitted on vectors near ``centres``."""
    rng = np.random.default_rng(1)
    x = np.vstack([c + rng.normal(scale=0.3, size=(6, DIM)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(len(centres)), 6)
    run = root / "runs" / f"emb-dlib-{head}"
    run.mkdir(parents=True)
    classes = sorted(PEOPLE)
    order = np.argsort(PEOPLE)  # class index i is PEOPLE[order[i]]
    remap = np.empty(len(PEOPLE), dtype=np.int64)
    remap[order] = np.arange(len(PEOPLE))
    np.savez(run / "head.npz", classes=np.array(classes), x=x, y=remap[y])
    summary = {"track": "embedding", "strategy": head, "embedder": "dlib", "head_params": {}, "status": "finished"}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "openset.json").write_text(json.dumps({"threshold": threshold, "min_margin": 0.05}))
    return run


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_index(tmp_path_factory.mktemp("album-search") / "ws")


# -- the reference: the Python code the SQL replaces -----------------------------------------------


def _old_album_photos(ws: Workspace) -> list[AlbumPhoto]:
    photos: dict[int, tuple[dict, list[AlbumFace]]] = {}
    rows = ws.query(
        "SELECT p.id, p.path, p.taken, p.taken_source, f.x1, f.y1, f.x2, f.y2, f.name, f.score "
        "FROM album_photos p JOIN album_faces f ON f.photo_id = p.id WHERE p.status = 'ok' "
        "ORDER BY p.id, f.idx"
    )
    for r in rows:
        entry = photos.setdefault(r["id"], (dict(r), []))
        entry[1].append(AlbumFace(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["name"], r["score"]))
    return [
        AlbumPhoto(Path(info["path"]), info["taken"], info["taken_source"], tuple(faces))
        for info, faces in photos.values()
    ]


def _old_find(ws: Workspace, names: Sequence[str], any_: bool = False, exclude: Iterable[str] = ()) -> list:
    wanted = {n.strip().casefold() for n in names if n.strip()}
    unwanted = {n.strip().casefold() for n in exclude if n.strip()}
    out = []
    for photo in _old_album_photos(ws):
        present = {f.label.casefold() for f in photo.faces}
        hit = bool(wanted & present) if any_ else wanted <= present
        if hit and not (unwanted & present):
            out.append(photo)
    out.sort(key=lambda p: (-p.taken, str(p.path)))
    return out


def _old_known_names(ws: Workspace) -> list[str]:
    names = [r["name"] for r in ws.query("SELECT DISTINCT name FROM album_faces")]
    return sorted(n for n in names if n is not None) + ([UNKNOWN] if None in names else [])


def _old_rename_photo(ws: Workspace, photo_id: int, recognizer: Recognizer, key: str) -> bool:
    """The photo-at-a-time re-match (facelab before the chunked one), verbatim."""
    model = recognizer.model
    rows = ws.query("SELECT * FROM album_faces WHERE photo_id = ? ORDER BY idx", (photo_id,))
    if any(r["vector"] is None or r["embedder"] != model.embedder for r in rows):
        return False
    faces = [Face(Box(r["x1"], r["y1"], r["x2"], r["y2"]), r["det_score"] or 0.0) for r in rows]
    recognitions = []
    if rows:
        scores = model.predict_vectors(np.stack([blob_to_vector(r["vector"]) for r in rows]))
        recognitions = recognizer.name_scores(faces, np.asarray(scores))
    with ws.transaction() as conn:
        for row, rec in zip(rows, recognitions, strict=True):
            conn.execute(
                "UPDATE album_faces SET name = ?, score = ?, margin = ? WHERE id = ?",
                (rec.name, rec.score, rec.margin if np.isfinite(rec.margin) else None, row["id"]),
            )
        conn.execute("UPDATE album_photos SET model = ? WHERE id = ?", (key, photo_id))
    return True


# -- search ---------------------------------------------------------------------------------------

QUERIES = [
    (["Alice"], False, []),
    (["ALICE"], False, []),
    ([" alice "], False, []),
    (["zoë"], False, []),
    (["strasse"], False, []),  # "Straße" and "STRASSE" casefold alike
    (["unknown"], False, []),  # unnamed faces and the literal "Unknown"
    (["Unknown", "bob"], False, []),
    (["alice", "bob"], False, []),
    (["alice", "bob", "zoë"], False, []),
    (["alice", "bob"], True, []),
    (["alice", "nobody"], False, []),  # nobody is called so: no photo has all
    (["alice", "nobody"], True, []),  # … but any-of still finds Alice
    (["nobody"], True, []),
    (["alice"], False, ["bob"]),
    (["alice", "carol"], True, ["unknown", "ZOË"]),
    (["unknown"], False, ["nobody", "alice"]),
    (["alice", "alice"], False, [" "]),
    (["bob", "Straße"], True, ["bob"]),  # excluding a wanted name leaves the others
]


@pytest.mark.parametrize(("names", "any_", "exclude"), QUERIES)
def test_find_answers_as_the_python_search_did(index: Path, names: list[str], any_: bool, exclude: list[str]) -> None:
    with Workspace(index) as ws:
        expected = _old_find(ws, names, any_, exclude)
        found = find_photos(ws, names, any_=any_, exclude=exclude)
        assert found == expected  # same photos, faces (boxes, names, scores) and order
        ids = {r["path"]: r["id"] for r in ws.query("SELECT id, path FROM album_photos")}
        assert [p.id for p in found] == [ids[str(p.path)] for p in found]  # what the web app links by
        assert count_photos(ws, names, any_=any_, exclude=exclude) == len(expected)
        assert find_photos(ws, names, any_=any_, exclude=exclude, limit=3) == expected[:3]
        # What `album find` prints, listed and formatted by the database: the same photos, order,
        # dates and people.
        assert album_listing(ws, names, any_=any_, exclude=exclude) == [
            (str(p.path), p.taken_iso, ";".join(p.people)) for p in expected
        ]


def test_known_names_and_all_photos_as_before(index: Path) -> None:
    with Workspace(index) as ws:
        assert known_names(ws) == _old_known_names(ws)
        assert UNKNOWN in known_names(ws) and "Straße" in known_names(ws)
        assert album_photos(ws) == _old_album_photos(ws)
        with pytest.raises(ValueError, match="at least one name"):
            find_photos(ws, [" ", ""])


def test_search_reads_only_the_covering_index(index: Path) -> None:
    with Workspace(index) as ws:
        plan = " | ".join(
            r[3]
            for r in ws.query(
                "EXPLAIN QUERY PLAN SELECT photo_id FROM album_faces WHERE name IN (?, ?) "
                "INTERSECT SELECT photo_id FROM album_faces WHERE name IS NULL",
                ("Alice", "alice"),
            )
        )
    assert plan.count("COVERING INDEX album_faces_person") == 2, plan


def test_an_answers_faces_come_from_the_covering_index(index: Path) -> None:
    """The faces an answer shows (boxes, names, scores) are read without touching the table rows,
    which carry the 512-byte vectors: what keeps a 90,000-photo answer under a second."""
    with Workspace(index) as ws:
        plans = [
            " | ".join(r[3] for r in ws.query(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in (
                (
                    "SELECT photo_id, x1, y1, x2, y2, name, score FROM album_faces "
                    "WHERE photo_id IN (SELECT value FROM json_each(?)) ORDER BY photo_id, idx",
                    ("[1, 2]",),
                ),
                ("SELECT DISTINCT photo_id, coalesce(name, 'unknown') FROM album_faces WHERE photo_id IN (1, 2)", ()),
            )
        ]
    for plan in plans:
        assert "COVERING INDEX album_faces_photo" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_an_older_index_gets_the_new_index_once(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        ws.conn.executescript(
            "CREATE TABLE album_photos (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, taken REAL, "
            "taken_source TEXT, status TEXT NOT NULL, model TEXT);"
            "CREATE INDEX album_photos_taken ON album_photos(taken);"
            "CREATE TABLE album_faces (id INTEGER PRIMARY KEY, photo_id INTEGER NOT NULL, idx INTEGER NOT NULL, "
            "x1 REAL, y1 REAL, x2 REAL, y2 REAL, name TEXT, score REAL, UNIQUE (photo_id, idx));"
            "CREATE INDEX album_faces_name ON album_faces(name);"
        )
        ensure_album_tables(ws)
        indexes = {r[0] for r in ws.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"album_faces_person", "album_faces_photo"} <= indexes and "album_faces_name" not in indexes
        statements: list[str] = []
        ws.conn.set_trace_callback(statements.append)
        ensure_album_tables(ws)
        known_names(ws)
        ws.conn.set_trace_callback(None)
        # Up to date: only reads (a page view must not write).
        assert statements and all(s.lstrip().upper().startswith(("SELECT", "WITH")) for s in statements), statements


# -- re-matching ----------------------------------------------------------------------------------


def _copy(src: Path, dest: Path) -> Path:
    """A copy of workspace ``src`` (its database through SQLite's backup, its run folders)."""
    import shutil

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("facelab.db*"))
    source = sqlite3.connect(src / ".facelab" / "facelab.db")
    target = sqlite3.connect(dest / ".facelab" / "facelab.db")
    source.backup(target)
    source.close()
    target.close()
    return dest


def _faces_state(root: Path) -> tuple[list[tuple], list[tuple]]:
    with Workspace(root) as ws:
        faces = [tuple(r) for r in ws.query("SELECT id, name, score, margin FROM album_faces ORDER BY id")]
        photos = [tuple(r) for r in ws.query("SELECT id, model FROM album_photos ORDER BY id")]
    return faces, photos


def _assert_same_state(a: Path, b: Path) -> None:
    faces_a, photos_a = _faces_state(a)
    faces_b, photos_b = _faces_state(b)
    assert photos_a == photos_b
    assert [(f[0], f[1]) for f in faces_a] == [(f[0], f[1]) for f in faces_b]  # names exactly
    # Scores from one matrix product per chunk against one per photo: equal but for rounding.
    for (_, _, score_a, margin_a), (_, _, score_b, margin_b) in zip(faces_a, faces_b, strict=True):
        assert score_a == pytest.approx(score_b, abs=1e-9)
        assert (margin_a is None) == (margin_b is None)
        if margin_a is not None:
            assert margin_a == pytest.approx(margin_b, abs=1e-9)


@pytest.fixture()
def ws_with_run(index: Path, tmp_path: Path) -> Path:
    root = _copy(index, tmp_path / "ws")
    _write_run(root, np.load(root / "centres.npy"))
    return root


# 7: many chunks, photos cut across the boundary; 5: one chunk scored in many batches.
@pytest.mark.parametrize(("chunk", "score_batch"), [(7, 8192), (50_000, 5)])
def test_chunked_rematch_equals_photo_at_a_time(
    ws_with_run: Path, tmp_path: Path, chunk: int, score_batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(album_rematch, "SCORE_BATCH", score_batch)
    reference = _copy(ws_with_run, tmp_path / "reference")
    ids = [*range(130, 0, -1), 999, 5, 5]  # unsorted, an id that is not there, a repeat
    run = ws_with_run / "runs" / "emb-dlib-prototype"
    recognizer = Recognizer(EmbeddingModel(run))
    key = model_key(recognizer.model)
    with Workspace(ws_with_run) as ws:
        left = rematch_photos(ws, recognizer, key, ids, chunk=chunk)
    ref_recognizer = Recognizer(EmbeddingModel(reference / "runs" / "emb-dlib-prototype"))
    with Workspace(reference) as ws:
        expected = [i for i in ids if not _old_rename_photo(ws, i, ref_recognizer, key)]
    assert left == expected and left  # some photos have a face without a usable vector
    _assert_same_state(ws_with_run, reference)
    # After an enrolment (a new person, a new key) the answers still agree.
    for root, _ in ((ws_with_run, recognizer), (reference, ref_recognizer)):
        with Workspace(root) as ws, ws.transaction() as conn:
            vector = np.load(root / "centres.npy")[0] * -1.0
            store_gallery_vector(conn, "Dave", "dlib", "dave.jpg", vector.astype(np.float32))
    recognizer.model.refresh()
    ref_recognizer.model.refresh()
    new_key = model_key(recognizer.model)
    assert new_key != key and "Dave" in recognizer.classes
    with Workspace(ws_with_run) as ws:
        left = rematch_photos(ws, recognizer, new_key, ids, chunk=chunk)
    with Workspace(reference) as ws:
        expected = [i for i in ids if not _old_rename_photo(ws, i, ref_recognizer, new_key)]
    assert left == expected
    _assert_same_state(ws_with_run, reference)


def test_rematch_with_a_knn_head_and_no_threshold(ws_with_run: Path, tmp_path: Path) -> None:
    _write_run(ws_with_run, np.load(ws_with_run / "centres.npy"), head="knn", threshold=None)
    reference = _copy(ws_with_run, tmp_path / "reference")
    ids = list(range(1, 121))
    recognizers = [Recognizer(EmbeddingModel(root / "runs" / "emb-dlib-knn")) for root in (ws_with_run, reference)]
    with Workspace(ws_with_run) as ws:
        left = rematch_photos(ws, recognizers[0], "k", ids, chunk=10)
    with Workspace(reference) as ws:
        assert left == [i for i in ids if not _old_rename_photo(ws, i, recognizers[1], "k")]
    _assert_same_state(ws_with_run, reference)


def test_rematch_keeps_whole_chunks_when_stopped(ws_with_run: Path) -> None:
    recognizer = Recognizer(EmbeddingModel(ws_with_run / "runs" / "emb-dlib-prototype"))
    model = recognizer.model
    calls = 0
    score = model.predict_vectors

    def failing_second_time(vectors: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return score(vectors)

    model.predict_vectors = failing_second_time  # type: ignore[method-assign]
    before = _faces_state(ws_with_run)
    with Workspace(ws_with_run) as ws, pytest.raises(KeyboardInterrupt):
        rematch_photos(ws, recognizer, "new@1", list(range(1, 121)), chunk=20)
    faces, photos = _faces_state(ws_with_run)
    done = {pid for pid, model_of in photos if model_of == "new@1"}
    assert done and len(done) < 120
    with Workspace(ws_with_run) as ws:
        owner = {r["id"]: r["photo_id"] for r in ws.query("SELECT id, photo_id FROM album_faces")}
    changed = {owner[new[0]] for old, new in zip(before[0], faces, strict=True) if old != new}
    assert changed and changed <= done  # no face changed in a photo not marked done


def test_rematch_without_a_vector_model_renames_nothing(ws_with_run: Path) -> None:
    class PixelsOnly:
        classes = PEOPLE
        threshold = 0.5
        min_margin = None

    before = _faces_state(ws_with_run)
    with Workspace(ws_with_run) as ws:
        assert rematch_photos(ws, Recognizer(PixelsOnly()), "x", [3, 1, 2]) == [3, 1, 2]
    assert _faces_state(ws_with_run) == before


@pytest.mark.parametrize(
    ("classes", "threshold", "min_margin"),
    [(["a", "b", "c"], 0.3, 0.1), (["a", "b", OTHERS], 0.2, None), (["a"], 0.5, None), (["a", "b"], None, None)],
)
def test_fast_naming_equals_name_scores(classes: list[str], threshold: float | None, min_margin: float | None) -> None:
    class Scores:
        pass

    model = Scores()
    model.classes, model.threshold, model.min_margin = classes, threshold, min_margin  # type: ignore[attr-defined]
    recognizer = Recognizer(model)  # type: ignore[arg-type]
    scores = np.random.default_rng(3).uniform(-0.2, 1.0, size=(200, len(classes)))
    faces = [Face(Box(0, 0, 1, 1), 1.0)] * len(scores)
    expected = recognizer.name_scores(faces, scores)
    names, tops, margins = name_scores_fast(recognizer, scores)
    assert names == [r.name for r in expected]
    assert tops == [r.score for r in expected]
    assert margins == [r.margin for r in expected]
    assert any(n is None for n in names) == (threshold is not None or OTHERS in classes)


def test_vectors_round_trip_as_one_buffer() -> None:
    # The chunked reader joins the blobs and reads them as one array: same floats as one by one.
    vectors = np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32)
    blobs = [vector_to_blob(v) for v in vectors]
    joined = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(5, DIM)
    assert np.array_equal(joined, np.stack([blob_to_vector(b) for b in blobs]))


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_listing_dates_are_local_time_as_python_writes_them(tmp_path: Path, monkeypatch, zone: str) -> None:
    """`album find` prints the database's formatting of the date: it must be Python's, in the
    user's time zone, seconds truncated, on both sides of a daylight-saving change."""
    import time
    from datetime import datetime

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        stamps = [1_600_000_000.999, 1_615_705_200.0, 1_615_712_400.5, 1_636_264_800.0, 946_684_799.0, 0.0]
        with Workspace(tmp_path / "ws") as ws:
            ensure_album_tables(ws)
            with ws.transaction() as conn:
                for pid, taken in enumerate(stamps, 1):
                    conn.execute(
                        "INSERT INTO album_photos(id, path, taken, taken_source, status, model) "
                        "VALUES (?, ?, ?, 'exif', 'ok', 'm@0')",
                        (pid, f"/lib/p{pid}.jpg", taken),
                    )
                    conn.execute(
                        "INSERT INTO album_faces(photo_id, idx, x1, y1, x2, y2, name) VALUES (?, 0, 0, 0, 9, 9, 'Ann')",
                        (pid,),
                    )
            listed = {path: taken for path, taken, _ in album_listing(ws, ["ann"])}
        assert listed == {
            f"/lib/p{pid}.jpg": datetime.fromtimestamp(t).isoformat(timespec="seconds")
            for pid, t in enumerate(stamps, 1)
        }
    finally:
        monkeypatch.undo()
        time.tzset()
