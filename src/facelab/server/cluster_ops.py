"""Unnamed faces in the web app: the groups :mod:`facelab.album_clusters` makes of the album's
faces nobody is named in, their face thumbnails, grouping again and naming a group.

Reading never writes to the workspace (a page view only looks in ``sqlite_master``); grouping
and naming are :func:`facelab.album_clusters.cluster_unnamed_faces` and
:func:`facelab.album_clusters.name_cluster`, called by the API under the workspace's write lock.
Face thumbnails are cut from the originals found by :func:`facelab.server.album_ops.photo_file`,
so they obey the same root checks as the album previews (only inside an indexed library).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from facelab.server import album_ops
from facelab.server.security import validate_person_name
from facelab.server.workspace_ops import NotFound, OpError, person_names, previews_dir
from facelab.store import Workspace

# Longest side of a face thumbnail; the crop is the face box grown by FACE_MARGIN on every side.
FACE_SIDE = 160
FACE_MARGIN = 0.25
# Faces shown per group (the firmest members first); the group's size is always given.
FACES_SHOWN = 12


def _tables(ws: Workspace) -> set[str]:
    return {r["name"] for r in ws.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


def find_url(name: str) -> str:
    """The Albums page searching for ``name``."""
    return "/albums?" + urlencode([("name", name)])


def known_people(ws: Workspace) -> list[str]:
    """Names a group can be given as an existing person: people with photos or created in the app,
    people enrolled in the gallery, and names the album already uses (``unknown`` left out)."""
    names = set(person_names(ws))
    names.update(r["person"] for r in ws.query("SELECT DISTINCT person FROM gallery") if r["person"])
    names.update(n for n in album_ops.names(ws) if n != "unknown")
    return sorted(names, key=str.casefold)


def _settings(ws: Workspace) -> dict[str, Any]:
    from facelab.album_clusters import CLUSTER_SETTING

    try:
        value = json.loads(ws.setting(CLUSTER_SETTING) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def listing(ws: Workspace, faces_shown: int = FACES_SHOWN) -> dict[str, Any]:
    """The stored groups for the page and ``GET /api/albums/clusters``: unnamed ones largest first,
    then the ones named since; each with its size, photos and its firmest ``faces_shown`` faces."""
    ready = album_ops.index_ready(ws)
    out: dict[str, Any] = {
        "ready": ready,
        "index_command": f"facelab album index LIBRARY -w {ws.root}",
        "grouped_at": None,
        "min_cluster_size": None,
        "unnamed_faces": 0,
        "clusters": [],
    }
    if not ready:
        return out
    out["unnamed_faces"] = ws.query(
        "SELECT COUNT(*) AS n FROM album_faces f JOIN album_photos p ON p.id = f.photo_id "
        "WHERE f.name IS NULL AND p.status = 'ok'"
    )[0]["n"]
    if "album_clusters" not in _tables(ws):
        return out
    settings = _settings(ws)
    out["grouped_at"] = settings.get("made_at")
    out["min_cluster_size"] = settings.get("min_cluster_size")
    rows = ws.query(
        "SELECT c.cluster, c.face_id, c.probability, c.named, f.photo_id, f.x1, f.y1, f.x2, f.y2 "
        "FROM album_clusters c JOIN album_faces f ON f.id = c.face_id "
        "ORDER BY c.cluster, c.probability DESC, c.face_id"
    )
    groups: dict[int, dict[str, Any]] = {}
    for r in rows:
        group = groups.setdefault(
            r["cluster"], {"id": r["cluster"], "size": 0, "photos": set(), "named": None, "faces": []}
        )
        group["size"] += 1
        group["photos"].add(r["photo_id"])
        group["named"] = group["named"] or r["named"]
        if len(group["faces"]) < faces_shown:
            group["faces"].append(
                {
                    "face_id": r["face_id"],
                    "photo_id": r["photo_id"],
                    "box": [round(r["x1"]), round(r["y1"]), round(r["x2"]), round(r["y2"])],
                    "probability": r["probability"],
                    "image": f"/api/albums/faces/{r['face_id']}/image",
                }
            )
    clusters = []
    for group in groups.values():
        group["photos"] = len(group["photos"])
        group["find_url"] = find_url(group["named"]) if group["named"] else None
        clusters.append(group)
    clusters.sort(key=lambda g: (g["named"] is not None, -g["size"], g["id"]))
    out["clusters"] = clusters
    return out


def face_file(ws: Workspace, face_id: int) -> tuple[Path, int, tuple[float, float, float, float]]:
    """The original photo of album face ``face_id`` (root-checked as the album previews are), the
    photo's id and the face box; 404 for an unknown face or a photo that may not be shown."""
    row = None
    if album_ops.index_ready(ws):
        row = ws.conn.execute("SELECT photo_id, x1, y1, x2, y2 FROM album_faces WHERE id = ?", (face_id,)).fetchone()
    if row is None:
        raise NotFound(f"no face with id {face_id} in the album index")
    source = album_ops.photo_file(ws, row["photo_id"])
    return source, row["photo_id"], (row["x1"], row["y1"], row["x2"], row["y2"])


def face_thumbnail(ws: Workspace, face_id: int) -> Path:
    """A JPEG of the face (its box with a margin, upright), cut from the original and cached beside
    the album previews; the original is only read."""
    from facelab.imageio import ImageError, load_rgb, save_jpeg_atomic

    source, photo_id, (x1, y1, x2, y2) = face_file(ws, face_id)
    stat = source.stat()
    box = f"{round(x1)}-{round(y1)}-{round(x2)}-{round(y2)}"
    target = previews_dir(ws) / f"album-face-{face_id}-{photo_id}-{box}-{stat.st_size}-{stat.st_mtime_ns}.jpg"
    if target.is_file():
        return target
    import cv2

    try:
        rgb = load_rgb(source)
    except ImageError as exc:
        raise OpError(f"{exc.reason} — {exc.fix}", 409) from exc
    height, width = rgb.shape[:2]
    grow = FACE_MARGIN * max(x2 - x1, y2 - y1)
    left, top = max(0, int(x1 - grow)), max(0, int(y1 - grow))
    right, bottom = min(width, round(x2 + grow)), min(height, round(y2 + grow))
    if right <= left or bottom <= top:
        raise NotFound(f"face {face_id} lies outside its photo; run facelab album index again")
    crop = rgb[top:bottom, left:right]
    scale = FACE_SIDE / max(crop.shape[:2])
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    save_jpeg_atomic(crop, target, quality=85)
    return target


def regroup(ws: Workspace, min_cluster_size: int | None = None) -> dict[str, Any]:
    """Group the unnamed faces again (replacing the stored groups and ``reports/clusters.csv``);
    409 without an album index, 422 for a bad parameter. Call it holding the write lock."""
    from facelab.album_clusters import (
        DEFAULT_MIN_CLUSTER_SIZE,
        ClusterError,
        NoAlbumIndex,
        cluster_unnamed_faces,
        write_clusters_csv,
    )

    if not album_ops.index_ready(ws):  # refused before the library would create its tables
        raise OpError(f"no album index yet — run: facelab album index LIBRARY -w {ws.root}", 409)
    try:
        result = cluster_unnamed_faces(ws, min_cluster_size=min_cluster_size or DEFAULT_MIN_CLUSTER_SIZE)
    except NoAlbumIndex as exc:
        raise OpError(str(exc), 409) from exc
    except ClusterError as exc:
        raise OpError(str(exc), 422) from exc
    write_clusters_csv(ws, result)
    groups = len(result.clusters)
    message = (
        f"{groups} group(s) of {result.faces} unnamed face(s); {result.noise} face(s) in no group"
        if groups
        else f"no group of {result.min_cluster_size} or more alike faces among {result.faces} unnamed face(s)"
    )
    return {
        "groups": groups,
        "faces": result.faces,
        "grouped": result.grouped,
        "noise": result.noise,
        "without_vector": result.without_vector,
        "min_cluster_size": result.min_cluster_size,
        "message": message,
    }


def check_group(ws: Workspace, cluster: int) -> None:
    """404 unless ``cluster`` is a stored group (409 without an album index)."""
    if not album_ops.index_ready(ws):
        raise OpError(f"no album index yet — run: facelab album index LIBRARY -w {ws.root}", 409)
    if "album_clusters" not in _tables(ws):
        raise NotFound("no groups yet: group the unnamed faces first (POST /api/albums/clusters)")
    found = ws.conn.execute("SELECT 1 FROM album_clusters WHERE cluster = ? LIMIT 1", (cluster,)).fetchone()
    if found is None:
        raise NotFound(f"no group {cluster}; group the faces again or reload the page")


def name_group(ws: Workspace, cluster: int, name: str) -> dict[str, Any]:
    """Enroll group ``cluster`` as ``name`` (an existing person, matched ignoring case, or a new one
    with a name the app accepts for new people); 404 unknown group, 422 bad name. Call it holding
    the write lock."""
    from facelab.album_clusters import ClusterError, name_cluster
    from facelab.albums import count_photos

    check_group(ws, cluster)
    name = name.strip()
    known = {n.casefold() for n in known_people(ws)}
    if name.casefold() not in known:
        try:
            name = validate_person_name(name)
        except ValueError as exc:
            raise OpError(str(exc), 422) from exc
    try:
        result = name_cluster(ws, cluster, name)
    except ClusterError as exc:
        raise OpError(str(exc), 422) from exc
    found = count_photos(ws, [result.name])  # a count, not every photo as objects
    message = f"{result.faces} face(s) in {result.photos} photo(s) are now {result.name}"
    message += "" if result.existing else " (a new person)"
    return {
        "cluster": result.cluster,
        "name": result.name,
        "faces": result.faces,
        "photos": result.photos,
        "enrolled": result.enrolled,
        "existing": result.existing,
        "renamed_from": result.renamed_from,
        "album_photos": found,
        "find_url": find_url(result.name),
        "message": message + f"; the album finds {found} photo(s) of {result.name}",
    }
