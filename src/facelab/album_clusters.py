"""Group the faces nobody is named in, then name a whole group at once — as a photo manager does.

``cluster_unnamed_faces`` takes the faces of an album index (``facelab album index``) that the model
answered unknown and that have a stored face vector, and groups them by density clustering
(scikit-learn's HDBSCAN) over their embeddings: faces of one person lie close together, so each
dense group is most likely one person, and faces in no dense region (strangers seen once, blurred
faces) are left out as *noise*. A person appears once in a photo, so a group keeps at most one face
of each photo. Groups are numbered 1, 2, … largest first and stored in the workspace (table
``album_clusters``), replacing the previous clustering.

``name_cluster`` enrolls a group as a person without retraining: the face vectors go into the
workspace gallery the way ``facelab enroll`` stores them (so every embedding-track model knows the
person at once, and ``facelab forget`` removes them again), and the album's faces carry the name
right away, so ``facelab album find WS NAME`` lists those photos.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.albums import UNKNOWN, ensure_album_tables
from facelab.embed_track import store_gallery_vector
from facelab.store import Workspace, blob_to_vector
from facelab.types import Box

CLUSTERS_CSV = "clusters.csv"
CLUSTER_COLUMNS = ("cluster", "photo", "x1", "y1", "x2", "y2")
CLUSTER_SETTING = "album_clusters"  # JSON: parameters and when the stored clustering was made

# Rows disappear with their face: re-indexing a photo replaces its faces (new ids), and a stale
# assignment must never point at another face that later reuses an id.
CLUSTER_SCHEMA = """
CREATE TABLE IF NOT EXISTS album_clusters (
    face_id INTEGER PRIMARY KEY REFERENCES album_faces(id) ON DELETE CASCADE,
    cluster INTEGER NOT NULL,            -- 1 = the largest group
    probability REAL,                    -- HDBSCAN's strength of membership, 0..1
    named TEXT                           -- the name album name gave the group, NULL until then
);
CREATE INDEX IF NOT EXISTS album_clusters_cluster ON album_clusters(cluster);
"""

DEFAULT_MIN_CLUSTER_SIZE = 3
DEFAULT_METRIC = "euclidean"


class ClusterError(ValueError):
    """A user mistake or a state the command cannot work in; the message names the fix."""


class NoAlbumIndex(ClusterError):
    """The workspace has no album index to cluster."""


def ensure_cluster_table(ws: Workspace) -> None:
    """Create the album tables and the cluster table if missing (idempotent)."""
    ensure_album_tables(ws)
    ws.conn.executescript(CLUSTER_SCHEMA)


def _require_index(ws: Workspace) -> None:
    ensure_cluster_table(ws)
    if ws.query("SELECT COUNT(*) AS n FROM album_photos")[0]["n"] == 0:
        raise NoAlbumIndex(f"{ws.root}: no album index yet — run: facelab album index LIBRARY -w {ws.root}")


# -- clustering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterFace:
    """One face of a group: where it is and how firmly it belongs."""

    face_id: int
    photo: Path
    box: Box
    probability: float


@dataclass
class ClusterResult:
    """What :func:`cluster_unnamed_faces` found. ``clusters[0]`` is cluster 1 (the largest)."""

    clusters: list[list[ClusterFace]] = field(default_factory=list)
    faces: int = 0  # unnamed faces with a vector that were clustered
    noise: int = 0  # of those, the faces in no group
    without_vector: int = 0  # unnamed faces that could not take part (no stored vector)
    other_embedder: int = 0  # unnamed faces whose vectors come from another embedder
    embedder: str | None = None
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE

    @property
    def grouped(self) -> int:
        return self.faces - self.noise


def cluster_unnamed_faces(
    ws: Workspace,
    *,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    min_samples: int | None = None,
    cluster_selection_epsilon: float = 0.0,
    metric: str = DEFAULT_METRIC,
) -> ClusterResult:
    """Group the album's unnamed faces by who they look like; store and return the groups.

    Parameters (HDBSCAN's, see scikit-learn's ``sklearn.cluster.HDBSCAN``):

    * ``min_cluster_size`` — the fewest faces that make a group. 3 finds people seen in three
      photos or more; raise it (5–10) on a large library to list only the people who matter and
      leave more passers-by as noise; 2 also finds people seen twice, with more false pairs.
    * ``min_samples`` — how dense a face's neighbourhood must be for the face to count as core
      (default: ``min_cluster_size``). Higher is more conservative: more faces are left as noise
      and groups are purer; lower puts more faces into groups.
    * ``cluster_selection_epsilon`` — groups closer than this distance are merged. Leave 0 unless
      one person is split over several groups (different ages, glasses); then try 0.3–0.4 with
      dlib's vectors, whose same-person distances are mostly below 0.6.
    * ``metric`` — distance between face vectors: ``euclidean`` (dlib's 128-d vectors are
      trained for it) or ``cosine``.

    Re-running replaces the stored groups. Raises :class:`NoAlbumIndex` without an album index.
    """
    from sklearn.cluster import HDBSCAN

    if min_cluster_size < 2:
        raise ClusterError(f"--min-cluster-size {min_cluster_size}: a group needs at least 2 faces; give 2 or more")
    if min_samples is not None and min_samples < 1:
        raise ClusterError(f"--min-samples {min_samples}: give 1 or more (or leave it out)")
    if cluster_selection_epsilon < 0:
        raise ClusterError(f"--epsilon {cluster_selection_epsilon}: give 0 or a positive distance")
    if metric not in ("euclidean", "cosine"):
        raise ClusterError(f"--metric {metric}: use euclidean or cosine")
    _require_index(ws)
    rows = ws.query(
        "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.embedder, f.vector, p.path FROM album_faces f "
        "JOIN album_photos p ON p.id = f.photo_id WHERE f.name IS NULL AND p.status = 'ok' ORDER BY f.id"
    )
    result = ClusterResult(min_cluster_size=min_cluster_size)
    with_vector = [r for r in rows if r["vector"] is not None and r["embedder"]]
    result.without_vector = len(rows) - len(with_vector)
    if with_vector:
        # Vectors of different embedders are not comparable; the library is normally indexed by
        # one model, and after a change of embedder the most common one is what re-indexing left.
        result.embedder = Counter(r["embedder"] for r in with_vector).most_common(1)[0][0]
    usable = [r for r in with_vector if r["embedder"] == result.embedder]
    result.other_embedder = len(with_vector) - len(usable)
    result.faces = len(usable)
    labels = np.full(len(usable), -1)
    strength = np.zeros(len(usable))
    vectors = np.zeros((0, 0))
    if len(usable) >= min_cluster_size:
        vectors = np.stack([blob_to_vector(r["vector"]) for r in usable]).astype(np.float64)
        model = HDBSCAN(
            min_cluster_size=min_cluster_size,
            min_samples=min(min_samples or min_cluster_size, len(usable)),
            cluster_selection_epsilon=cluster_selection_epsilon,
            metric=metric,
            copy=True,
        )
        labels = model.fit_predict(vectors)
        strength = model.probabilities_
    labels = _one_face_per_photo(labels, [r["path"] for r in usable], vectors)
    groups: dict[int, list[ClusterFace]] = {}
    for row, label, prob in zip(usable, labels, strength, strict=True):
        if label < 0:
            continue
        box = Box(row["x1"], row["y1"], row["x2"], row["y2"])
        groups.setdefault(int(label), []).append(ClusterFace(row["id"], Path(row["path"]), box, float(prob)))
    # A group the rule above shrank below the minimum is no group any more.
    kept = [faces for faces in groups.values() if len(faces) >= min_cluster_size]
    # Largest first; equal sizes by their first face, so the numbering does not depend on HDBSCAN's.
    result.clusters = sorted(kept, key=lambda faces: (-len(faces), faces[0].face_id))
    result.noise = result.faces - sum(len(c) for c in result.clusters)
    params = {
        "min_cluster_size": min_cluster_size,
        "min_samples": min_samples,
        "cluster_selection_epsilon": cluster_selection_epsilon,
        "metric": metric,
        "embedder": result.embedder,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with ws.transaction() as conn:
        conn.execute("DELETE FROM album_clusters")
        conn.executemany(
            "INSERT INTO album_clusters(face_id, cluster, probability) VALUES (?, ?, ?)",
            [
                (face.face_id, number, face.probability)
                for number, faces in enumerate(result.clusters, 1)
                for face in faces
            ],
        )
        ws.set_setting(CLUSTER_SETTING, json.dumps(params))
    return result


def _one_face_per_photo(labels: np.ndarray, photos: list[str], vectors: np.ndarray) -> np.ndarray:
    """A person appears once in a photo: of a group's faces in one photo, keep the one closest to the
    group's mean vector and make the others noise.

    Density clustering alone lets a group grow through a crowd (wedding guests, team photos) into
    faces of other people; two faces of one photo in one group prove that happened. Measured on
    sports5 libraries it removed such faces without losing faces of the group's person from
    one-face photos.
    """
    labels = labels.copy()
    for label in set(labels.tolist()) - {-1}:
        members = np.flatnonzero(labels == label)
        centre = vectors[members].mean(axis=0)
        by_photo: dict[str, list[int]] = {}
        for i in members:
            by_photo.setdefault(photos[i], []).append(int(i))
        for faces in by_photo.values():
            if len(faces) > 1:
                closest = min(faces, key=lambda i: float(np.linalg.norm(vectors[i] - centre)))
                labels[[i for i in faces if i != closest]] = -1
    return labels


def clusters_csv(result: ClusterResult) -> str:
    """``cluster,photo,x1,y1,x2,y2``: one line per grouped face, cluster 1 first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLUSTER_COLUMNS)
    for number, faces in enumerate(result.clusters, start=1):
        for face in sorted(faces, key=lambda f: (str(f.photo), f.face_id)):
            writer.writerow([number, str(face.photo), *face.box.as_ints()])  # as recognize prints boxes
    return out.getvalue()


def write_clusters_csv(ws: Workspace, result: ClusterResult) -> Path:
    """Write ``WS/reports/clusters.csv`` atomically (a reader never sees half a file); returns it."""
    from facelab.imageio import write_text_atomic

    path = ws.reports_dir / CLUSTERS_CSV
    write_text_atomic(clusters_csv(result), path)
    return path


def cluster_sizes(ws: Workspace) -> dict[int, int]:
    """Stored groups: cluster id → number of faces (faces re-indexed since have left their group)."""
    ensure_cluster_table(ws)
    rows = ws.query("SELECT cluster, COUNT(*) AS n FROM album_clusters GROUP BY cluster ORDER BY cluster")
    return {r["cluster"]: r["n"] for r in rows}


# -- naming -------------------------------------------------------------------------------------


@dataclass
class NameResult:
    """What :func:`name_cluster` did."""

    cluster: int
    name: str
    faces: int  # album faces that now carry the name
    photos: int
    enrolled: int  # face vectors added to the gallery (one per photo)
    existing: bool  # the name was already a person of this workspace
    renamed_from: str | None = None  # the group's earlier name, if it was named before


def _known_people(ws: Workspace) -> list[str]:
    """Every person name this workspace already uses: photo folders, enrolled people, album names."""
    names: set[str] = set(ws.people())
    names.update(r["person"] for r in ws.query("SELECT DISTINCT person FROM gallery"))
    names.update(r["name"] for r in ws.query("SELECT DISTINCT name FROM album_faces WHERE name IS NOT NULL"))
    return sorted(n for n in names if n)


def _check_name(ws: Workspace, name: str) -> tuple[str, bool]:
    """The name to store (an existing person's spelling when only case differs) and whether it exists."""
    from facelab.items import OTHERS

    name = name.strip()
    if not name:
        raise ClusterError("the name is empty; give the person's name: facelab album name WS CLUSTER NAME")
    if name.casefold() == UNKNOWN:
        raise ClusterError(f"{name!r} means 'nobody known' in album find; choose the person's name")
    if name == OTHERS:
        raise ClusterError(f"{OTHERS!r} is the class name of bystanders (--include-others); choose another name")
    known = _known_people(ws)
    if name in known:
        return name, True
    # album find compares names case-insensitively: "Alice" and "alice" would be one person there
    # but two in the gallery; join the person who exists instead.
    same = [k for k in known if k.casefold() == name.casefold()]
    return (same[0], True) if same else (name, False)


def name_cluster(ws: Workspace, cluster: int, name: str) -> NameResult:
    """Enroll the faces of group ``cluster`` as ``name`` and name them in the album at once.

    The vectors go into the workspace gallery as ``facelab enroll`` stores them (person, the
    vector's embedder as model, the photo's resolved path as source), so every embedding-track
    model of the workspace knows the person without retraining. Like ``enroll``, which takes the
    largest face of a photo, one vector per photo is enrolled — the largest face of the group in
    it — and naming the same group again replaces its vectors instead of counting them twice.
    A name the workspace already has (photo folder, enrolled, or in the album) adds to that person.

    Raises :class:`ClusterError` for an unknown group (the message lists the ids) or a bad name.
    """
    _require_index(ws)
    sizes = cluster_sizes(ws)
    if not sizes:
        raise ClusterError(f"no groups stored yet — run: facelab album cluster {ws.root}")
    if cluster not in sizes:
        ids = ", ".join(str(c) for c in sizes)
        raise ClusterError(f"no cluster {cluster}; the clusters are {ids} (see {ws.reports_dir / CLUSTERS_CSV})")
    name, existing = _check_name(ws, name)
    rows = ws.query(
        "SELECT f.id, f.x1, f.y1, f.x2, f.y2, f.embedder, f.vector, p.path, c.named FROM album_clusters c "
        "JOIN album_faces f ON f.id = c.face_id JOIN album_photos p ON p.id = f.photo_id "
        "WHERE c.cluster = ? ORDER BY f.id",
        (cluster,),
    )
    previous = {r["named"] for r in rows if r["named"] is not None} - {name}
    largest: dict[str, tuple[float, str, np.ndarray]] = {}  # source → (area, model, vector)
    for r in rows:
        if r["vector"] is None or not r["embedder"]:
            continue
        area = Box(r["x1"], r["y1"], r["x2"], r["y2"]).area
        source = str(Path(r["path"]).resolve())
        if source not in largest or area > largest[source][0]:
            largest[source] = (area, r["embedder"], blob_to_vector(r["vector"]))
    with ws.transaction() as conn:
        for old in previous:  # the group was named before: it is this person now, not that one
            conn.executemany(
                "DELETE FROM gallery WHERE person = ? AND model = ? AND source = ?",
                [(old, model, source) for source, (_, model, _) in largest.items()],
            )
        for source, (_, model, vector) in largest.items():
            store_gallery_vector(conn, name, model, source, vector)  # as facelab enroll stores it
        ids = [(r["id"],) for r in rows]
        conn.executemany("UPDATE album_faces SET name = ? WHERE id = ?", [(name, i) for (i,) in ids])
        conn.executemany("UPDATE album_clusters SET named = ? WHERE face_id = ?", [(name, i) for (i,) in ids])
    return NameResult(
        cluster=cluster,
        name=name,
        faces=len(rows),
        photos=len({r["path"] for r in rows}),
        enrolled=len(largest),
        existing=existing,
        renamed_from=", ".join(sorted(previous)) or None,
    )
