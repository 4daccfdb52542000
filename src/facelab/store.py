"""The workspace: one folder, one SQLite database, the single source of truth.

Layout of a workspace ``WS``::

    WS/.facelab/facelab.db     photos, faces, crops, embeddings, gallery, settings
    WS/crops/<person>/*.jpg    face crops written by build
    WS/dataset/<split>/<person>/*.jpg + manifest.csv   written by split
    WS/reports/*.csv           no_face, multi_face, faces
    WS/runs/<name>/            training runs

Every change is a transaction, so a build killed at any moment (even ``kill -9``) leaves the
database as it was after the last finished photo; WAL mode keeps readers (the web app) unblocked.
One process writes at a time (:mod:`facelab.writelock`).

Schema changes: put the new column into ``_SCHEMA`` (new workspaces) *and* into ``_ADDED_COLUMNS``
under a new ``SCHEMA_VERSION`` (existing workspaces get it on their next open); new tables and
indexes need only ``_SCHEMA`` (``IF NOT EXISTS``). Opening an up-to-date workspace writes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.types import Box, Face

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- as given on the command line (resolved to absolute)
    person TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    mtime REAL,
    width INTEGER,
    height INTEGER,
    phash TEXT,                          -- perceptual hash (hex) for near-duplicate grouping
    status TEXT NOT NULL,                -- ok | no_face | error
    error TEXT,
    detector TEXT,
    split TEXT,                          -- train | val | test | NULL (not split yet)
    processed_at TEXT DEFAULT CURRENT_TIMESTAMP,
    missing_since TEXT                   -- not found by the last build (kept; `build --prune` forgets)
);
CREATE INDEX IF NOT EXISTS photos_person ON photos(person);
CREATE INDEX IF NOT EXISTS photos_sha256 ON photos(sha256);
CREATE TABLE IF NOT EXISTS skipped (     -- inputs the last build of a photo folder left out, and why
    path TEXT NOT NULL,
    root TEXT NOT NULL,                  -- the photo folder that build scanned
    person TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (root, path)
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    score REAL,
    landmarks TEXT,                      -- JSON [[x, y] * 5] or NULL
    angle REAL DEFAULT 0,
    detector TEXT,
    role TEXT,                           -- person | bystander | ambiguous | suspicious | NULL
    distance REAL,                       -- to the folder person's identity (identity resolution)
    margin REAL,                         -- to the next face of the same photo
    role_source TEXT,                    -- auto | review
    UNIQUE (photo_id, idx)
);
CREATE TABLE IF NOT EXISTS crops (
    id INTEGER PRIMARY KEY,
    face_id INTEGER NOT NULL UNIQUE REFERENCES faces(id) ON DELETE CASCADE,
    path TEXT NOT NULL,                  -- relative to the workspace
    person TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | accepted | rejected
    quality REAL,
    sharpness REAL,
    face_px REAL,
    margin REAL
);
CREATE INDEX IF NOT EXISTS crops_person ON crops(person);
CREATE TABLE IF NOT EXISTS embeddings (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,                -- float32 little-endian
    PRIMARY KEY (face_id, model)
);
CREATE TABLE IF NOT EXISTS gallery (     -- people enrolled without retraining (enroll / forget)
    id INTEGER PRIMARY KEY,
    person TEXT NOT NULL,
    model TEXT NOT NULL,
    source TEXT,
    vector BLOB NOT NULL,
    added_at TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS gallery_person ON gallery(person);
"""

# Columns added after a workspace was first made: version → (table, column, declaration).
_ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [("photos", "missing_since", "TEXT")],
}


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one by one (executescript would commit a transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:  # a new database: no settings table yet
        return 0
    return int(row[0]) if row else 0


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION` in one transaction; no-op when it is there.

    Safe when several processes open a new or old workspace at once: the first one migrates
    under ``BEGIN IMMEDIATE``, the others find the work done.
    """
    if _schema_version(conn) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)
        if version < SCHEMA_VERSION:
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            for step in sorted(v for v in _ADDED_COLUMNS if v > version):
                for table, column, declaration in _ADDED_COLUMNS[step]:
                    present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            conn.execute(
                "INSERT INTO settings(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class FaceRow:
    id: int
    photo_id: int
    idx: int
    face: Face
    role: str | None
    distance: float | None
    margin: float | None
    role_source: str | None


def _face_from_row(row: sqlite3.Row) -> Face:
    landmarks = row["landmarks"]
    points = tuple((float(x), float(y)) for x, y in json.loads(landmarks)) if landmarks else None
    return Face(
        box=Box(row["x1"], row["y1"], row["x2"], row["y2"]),
        score=row["score"] if row["score"] is not None else 0.0,
        landmarks=points,
        angle=row["angle"] or 0.0,
        detector=row["detector"] or "",
    )


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").copy()


class Workspace:
    """A facelab workspace folder and its database. Use as a context manager or call :meth:`close`."""

    def __init__(self, root: Path | str, *, create: bool = True) -> None:
        self.root = Path(root).resolve()
        db_path = self.root / ".facelab" / "facelab.db"
        if not db_path.exists() and not create:
            raise FileNotFoundError(
                f"{self.root} is not a facelab workspace (no .facelab/facelab.db); "
                "create one with: facelab build PHOTOS --workspace " + str(root)
            )
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        # Autocommit mode: transactions are explicit through `transaction()`.
        self.conn = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(self.conn)

    # -- folders ---------------------------------------------------------------------------
    @property
    def crops_dir(self) -> Path:
        return self.root / "crops"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    # -- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- photos ----------------------------------------------------------------------------
    def photo_by_path(self, path: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM photos WHERE path = ?", (path,)).fetchone()

    def people(self) -> list[str]:
        return [r["person"] for r in self.query("SELECT DISTINCT person FROM photos ORDER BY person")]

    # -- faces -----------------------------------------------------------------------------
    def faces_of_photo(self, photo_id: int) -> list[FaceRow]:
        rows = self.query("SELECT * FROM faces WHERE photo_id = ? ORDER BY idx", (photo_id,))
        return [self._face_row(r) for r in rows]

    def _face_row(self, row: sqlite3.Row) -> FaceRow:
        return FaceRow(
            id=row["id"],
            photo_id=row["photo_id"],
            idx=row["idx"],
            face=_face_from_row(row),
            role=row["role"],
            distance=row["distance"],
            margin=row["margin"],
            role_source=row["role_source"],
        )

    def set_role(
        self,
        face_id: int,
        role: str,
        *,
        distance: float | None = None,
        margin: float | None = None,
        source: str = "auto",
    ) -> None:
        """Record who a face is. An automatic decision never overwrites a review decision."""
        if source == "auto":
            self.conn.execute(
                "UPDATE faces SET role = ?, distance = ?, margin = ?, role_source = 'auto' "
                "WHERE id = ? AND COALESCE(role_source, 'auto') != 'review'",
                (role, distance, margin, face_id),
            )
        else:
            self.conn.execute("UPDATE faces SET role = ?, role_source = ? WHERE id = ?", (role, source, face_id))

    # -- embeddings ------------------------------------------------------------------------
    def put_embedding(self, face_id: int, model: str, vector: np.ndarray) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO embeddings(face_id, model, vector) VALUES (?, ?, ?)",
            (face_id, model, vector_to_blob(vector)),
        )

    def embeddings(self, model: str) -> dict[int, np.ndarray]:
        rows = self.query("SELECT face_id, vector FROM embeddings WHERE model = ?", (model,))
        return {r["face_id"]: blob_to_vector(r["vector"]) for r in rows}
