"""Recognizing and verifying uploaded images for the web app, through :mod:`facelab.recognize`.

The workspace's current model is loaded once and kept while it stays the same: a webcam sends a
few frames a second, and loading a model per frame would take longer than recognizing it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from facelab.server.workspace_ops import NotFound, OpError
from facelab.store import Workspace


class ModelCache:
    """The workspace's current model as a :class:`facelab.recognize.Recognizer`, reloaded on change.

    The key covers what can change a model's answers without a restart: which run is current,
    its files being rewritten (recalibration), and enrolments in the gallery.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._recognizer: Any = None

    @staticmethod
    def _key_of(ws: Workspace) -> tuple | None:
        name = ws.setting("current_model")
        if not name:
            return None
        run = ws.runs_dir / name
        stamps = tuple(
            (run / f).stat().st_mtime_ns if (run / f).exists() else 0 for f in ("summary.json", "openset.json")
        )
        gallery = ws.query("SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS last FROM gallery")[0]
        return (name, stamps, gallery["n"], gallery["last"], ws.setting("detector"))

    def recognizer(self, ws: Workspace) -> Any:
        """The recognizer of the current model; :class:`NotFound` when there is none yet."""
        key = self._key_of(ws)
        if key is None or not (ws.runs_dir / key[0] / "summary.json").is_file():
            raise NotFound("no model yet: train one on the Train page (or run facelab auto WS)")
        with self._lock:
            if key != self._key:
                from facelab.auto import current_model
                from facelab.recognize import Recognizer

                self._recognizer = Recognizer(current_model(ws), detector=ws.setting("detector"))
                self._key = key
            return self._recognizer

    def clear(self) -> None:
        with self._lock:
            self._key, self._recognizer = None, None


def recognize_file(recognizer: Any, path: Path) -> dict:
    """Faces of one image with names (or ``unknown``), boxes in the image's upright pixels."""
    from facelab.recognize import photo_json

    result = recognizer.recognize_photo(path, keep_pixels=True)
    if result.error is not None:
        raise OpError(result.error, 415)
    payload = photo_json(result, recognizer)
    payload.pop("file", None)  # a temporary name, meaningless to the client
    height, width = result.rgb.shape[:2]
    payload.update(
        {
            "width": int(width),
            "height": int(height),
            "model": recognizer.model.run_dir.name,
            "threshold": recognizer.threshold,
            # Shown as a badge: a model that cannot answer unknown names every stranger.
            "closed_set_warning": recognizer.closed_set_warning(),
        }
    )
    return payload


def verify_files(path_a: Path, path_b: Path, model: str = "dlib", detector: str | None = None) -> dict:
    """Are the largest faces of two images the same person? Same rule as ``facelab verify``."""
    import numpy as np

    from facelab.embedders import EmbedderUnavailable, embed_largest_face, embedder_info
    from facelab.imageio import ImageError, load_rgb

    try:
        info = embedder_info(model)
    except KeyError as exc:
        raise OpError(str(exc.args[0]), 422) from exc
    sides = []
    for label, path in (("first", path_a), ("second", path_b)):
        try:
            face, vector, n_faces = embed_largest_face(load_rgb(path), model, detector)
        except ImageError as exc:
            raise OpError(f"{label} image: {exc.reason} — {exc.fix}", 415) from exc
        except EmbedderUnavailable as exc:
            raise OpError(str(exc), 503) from exc
        if vector is None or face is None:
            raise OpError(f"no face found in the {label} image — use one where the face is larger and frontal", 422)
        sides.append((face, vector, n_faces))
    distance = float(np.linalg.norm(sides[0][1] - sides[1][1]))
    limit = float(info.verify_distance)
    return {
        "same": distance <= limit,
        "distance": round(distance, 4),
        "threshold": limit,
        "model": model,
        "faces": [{"box": list(face.box.as_ints()), "faces_in_image": n} for face, _, n in sides],
    }
