"""Contact sheets: every photo where identity resolution had a choice to make, boxes coloured by role.

One HTML page per person under ``WS/reports/contact/`` (thumbnails beside it), so a person can
check in a minute which face was taken as theirs in group photos, and which photos were set aside
as ambiguous or suspicious. Green: the person; grey: a bystander; orange: ambiguous; red: suspicious.
"""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import numpy as np

from facelab.imageio import ImageError, load_rgb, save_jpeg_atomic, write_text_atomic
from facelab.store import Workspace

ROLE_COLOURS = {  # RGB
    "person": (40, 200, 60),
    "bystander": (150, 150, 150),
    "ambiguous": (255, 150, 0),
    "suspicious": (230, 30, 30),
}
THUMB_SIDE = 360


def _thumbnail(rgb: np.ndarray, faces: list, side: int = THUMB_SIDE) -> np.ndarray:
    scale = side / max(rgb.shape[:2])
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))))
    for face in faces:
        colour = ROLE_COLOURS.get(face["role"] or "", (80, 80, 255))
        x1, y1, x2, y2 = (round(face[k] * scale) for k in ("x1", "y1", "x2", "y2"))
        cv2.rectangle(small, (x1, y1), (x2, y2), colour, 2)
        if face["distance"] is not None:
            cv2.putText(
                small, f"{face['distance']:.2f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1
            )
    return small


def write_contact_sheets(ws: Workspace, only_doubtful: bool = True) -> list[Path]:
    """Write one page per person; with ``only_doubtful`` only multi-face and non-``person`` photos."""
    out = ws.reports_dir / "contact"
    pages = []
    for person in ws.people():
        photos = ws.query(
            "SELECT p.id, p.path FROM photos p WHERE p.person = ? AND p.status = 'ok' ORDER BY p.path", (person,)
        )
        cards = []
        for photo in photos:
            faces = ws.query(
                "SELECT x1, y1, x2, y2, role, distance, margin, role_source FROM faces WHERE photo_id = ? ORDER BY idx",
                (photo["id"],),
            )
            if only_doubtful and len(faces) < 2 and all(f["role"] == "person" for f in faces):
                continue
            try:
                rgb = load_rgb(photo["path"])
            except ImageError:
                continue
            thumb_path = out / person / f"{photo['id']}.jpg"
            save_jpeg_atomic(_thumbnail(rgb, faces), thumb_path, quality=85)
            roles = ", ".join(
                f"{f['role']}{' (review)' if f['role_source'] == 'review' else ''}"
                + (f" d={f['distance']:.2f}" if f["distance"] is not None else "")
                for f in faces
            )
            cards.append(
                f'<figure><img src="{html.escape(person)}/{photo["id"]}.jpg" loading="lazy">'
                f"<figcaption>{html.escape(Path(photo['path']).name)}<br>{html.escape(roles)}</figcaption></figure>"
            )
        legend = " ".join(f'<span style="color:rgb{colour}">■ {role}</span>' for role, colour in ROLE_COLOURS.items())
        page = (
            f"<!doctype html><meta charset='utf-8'><title>{html.escape(person)} — faces to check</title>"
            "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:.4em;"
            "width:360px;vertical-align:top}img{max-width:360px}figcaption{font-size:12px;word-break:break-all}"
            "</style>"
            f"<h1>{html.escape(person)}</h1><p>{legend} — number: distance to {html.escape(person)}'s identity "
            f"(smaller is closer). {len(cards)} photo(s) to check. Change a decision with "
            "<code>facelab review WS --accept/--reject/--move</code>.</p>" + "".join(cards)
        )
        page_path = out / f"{person}.html"
        write_text_atomic(page, page_path)
        pages.append(page_path)
    return pages
