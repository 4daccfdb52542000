"""CSV reports in ``WS/reports/`` that scripts and people read after a build.

Column names are an interface (see the README): ``no_face.csv`` and ``multi_face.csv`` have one row
per photo with the photo's path first; ``faces.csv`` one row per face found.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from facelab.imageio import write_text_atomic
from facelab.store import Workspace


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(buffer.getvalue(), path)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_reports(ws: Workspace) -> dict[str, Path]:
    """(Re)write every report from the database; returns their paths by name."""
    out = ws.reports_dir
    paths = {
        "no_face": out / "no_face.csv",
        "multi_face": out / "multi_face.csv",
        "faces": out / "faces.csv",
        "errors": out / "errors.csv",
    }
    no_face = ws.query("SELECT path, person FROM photos WHERE status = 'no_face' ORDER BY person, path")
    _write_csv(paths["no_face"], ["photo", "person"], [[r["path"], r["person"]] for r in no_face])

    multi = ws.query(
        "SELECT p.id, p.path, p.person, COUNT(f.id) AS n FROM photos p JOIN faces f ON f.photo_id = p.id "
        "GROUP BY p.id HAVING n > 1 ORDER BY p.person, p.path"
    )
    multi_rows = []
    for row in multi:
        chosen = ws.query(
            "SELECT idx, distance, margin, role FROM faces WHERE photo_id = ? AND role = 'person'", (row["id"],)
        )
        best = chosen[0] if chosen else None
        multi_rows.append(
            [
                row["path"],
                row["person"],
                row["n"],
                "" if best is None else best["idx"],
                _fmt(best["distance"]) if best else "",
                _fmt(best["margin"]) if best else "",
            ]
        )
    _write_csv(
        paths["multi_face"],
        ["photo", "person", "faces", "chosen_face", "distance", "margin"],
        multi_rows,
    )

    faces = ws.query(
        "SELECT p.path, p.person, f.x1, f.y1, f.x2, f.y2, f.role, f.distance, f.margin, f.idx "
        "FROM faces f JOIN photos p ON p.id = f.photo_id ORDER BY p.person, p.path, f.idx"
    )
    _write_csv(
        paths["faces"],
        ["photo", "x1", "y1", "x2", "y2", "person", "role", "distance", "margin"],
        [
            [
                r["path"],
                round(r["x1"]),
                round(r["y1"]),
                round(r["x2"]),
                round(r["y2"]),
                r["person"],
                r["role"] or "",
                _fmt(r["distance"]),
                _fmt(r["margin"]),
            ]
            for r in faces
        ],
    )
    errors = ws.query("SELECT path, person, error FROM photos WHERE status = 'error' ORDER BY path")
    _write_csv(paths["errors"], ["photo", "person", "error"], [[r["path"], r["person"], r["error"]] for r in errors])
    return paths
