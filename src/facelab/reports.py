"""CSV reports in ``WS/reports/`` that scripts and people read after a build.

Column names are an interface (see the README): ``no_face.csv`` and ``multi_face.csv`` have one row
per photo with the photo's path first; ``faces.csv`` one row per face found; ``errors.csv`` one row
per input a build could not use (unreadable, missing or skipped), with the reason, the fix and its kind.
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
    _write_csv(paths["errors"], ["photo", "person", "error", "kind"], _error_rows(ws))
    return paths


def _error_rows(ws: Workspace) -> list[list[object]]:
    """Every input a build could not use, in one list a person can work through.

    ``kind``: ``unreadable`` (a photo that cannot be read, not in the data set), ``missing`` (not
    found by the last build, or unreadable now, but built before: kept, with its faces and
    decisions, until ``facelab build --prune``), or why the scan skipped it (see
    :class:`facelab.build.SkipKind`: loose photo, not a photo, hidden, empty person folder, …).
    """
    rows: list[list[object]] = [
        [r["path"], r["person"], r["error"], "unreadable"]
        for r in ws.query("SELECT path, person, error FROM photos WHERE status = 'error' AND missing_since IS NULL")
    ]
    for r in ws.query("SELECT path, person, error, missing_since FROM photos WHERE missing_since IS NOT NULL"):
        when = str(r["missing_since"]).replace("T", " ")[:16]
        why = r["error"] or f"not found by the build of {when} (moved, deleted, or its drive not mounted)"
        rows.append(
            [
                r["path"],
                r["person"],
                f"{why} — kept with its faces and review decisions; if it is gone for good, forget it with "
                "facelab build PHOTOS --workspace WS --prune",
                "missing",
            ]
        )
    rows.extend([r["path"], r["person"] or "", r["reason"], r["kind"]] for r in ws.query("SELECT * FROM skipped"))
    return sorted(rows, key=lambda row: str(row[0]))
