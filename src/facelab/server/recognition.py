"""Recognizing and verifying uploaded images for the web app, through :mod:`facelab.recognize`.

The workspace's current model is loaded once and kept while it stays the same: a webcam sends a
few frames a second, and loading a model per frame would take longer than recognizing it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.server.workspace_ops import NotFound, OpError
from facelab.store import Workspace


class ModelCache:
    """The workspace's current model as a :class:`facelab.recognize.Recognizer`, reloaded on change.

    The key covers what can change a model's answers without a restart: which run is current,
    its files being rewritten (recalibration), enrolments in the gallery, and the unknown
    threshold chosen for the run on its results page (:mod:`facelab.server.threshold_ops`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._recognizer: Any = None

    @staticmethod
    def _key_of(ws: Workspace) -> tuple | None:
        from facelab.workflow import current_model_key

        return current_model_key(ws)

    def recognizer(self, ws: Workspace) -> Any:
        """The recognizer of the current model; :class:`NotFound` when there is none yet."""
        key = self._key_of(ws)
        if key is None or not (ws.runs_dir / key[0] / "summary.json").is_file():
            raise NotFound("no model yet: train one on the Train page (or run facelab auto WS)")
        with self._lock:
            if key != self._key:
                from facelab.auto import current_model
                from facelab.recognize import Recognizer
                from facelab.workflow import DEFAULTS

                # The CLI's and the Python API's defaults (and the threshold chosen for the run,
                # applied by current_model): the same face gets the same answer.
                self._recognizer = Recognizer(
                    current_model(ws), detector=ws.setting("detector"), min_face=DEFAULTS.min_face
                )
                self._key = key
            return self._recognizer

    def clear(self) -> None:
        with self._lock:
            self._key, self._recognizer = None, None


@dataclass(frozen=True)
class SeenFaces:
    """The faces of one recognized image, kept so that one of them can be enrolled ("This is …")."""

    embedder: str | None  # None: the model is not an embedding model (no vectors to enroll)
    vectors: np.ndarray | None
    boxes: list[list[int]]


class FaceMemory:
    """The faces of the last ``size`` recognized images by their SHA-256, newest last.

    Enrolling a face from the Recognize page then needs neither the image again nor a second
    detection: the vector the answer was computed from is the one stored. Images themselves are
    not kept (webcam frames are never stored).
    """

    def __init__(self, size: int = 64) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._seen: OrderedDict[str, SeenFaces] = OrderedDict()

    def remember(self, image: str, faces: SeenFaces) -> None:
        with self._lock:
            self._seen[image] = faces
            self._seen.move_to_end(image)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def get(self, image: str) -> SeenFaces | None:
        with self._lock:
            return self._seen.get(image)


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recognize_file(recognizer: Any, path: Path, memory: FaceMemory | None = None) -> dict:
    """Faces of one image with names (or ``unknown``), boxes in the image's upright pixels.

    The steps of :meth:`facelab.recognize.Recognizer.recognize_photo` (load, detect, score, name),
    taken one by one to keep each face's embedding: with ``memory`` the faces are remembered under
    the image's SHA-256, answered as ``image``, for :func:`facelab.server.enroll_ops.enroll_face`.
    """
    from facelab.imageio import ImageError, load_rgb
    from facelab.recognize import PhotoResult, VectorModel, photo_json, score_faces
    from facelab.runs import run_name

    try:
        rgb = load_rgb(path)
    except ImageError as exc:
        raise OpError(f"{exc.reason} — {exc.fix}", 415) from exc
    try:
        faces = recognizer.detect(rgb)
        scores, vectors = score_faces(recognizer.model, rgb, faces)
        result = PhotoResult(path, recognizer.name_scores(faces, scores), rgb=rgb)
    except ValueError as exc:  # e.g. a degenerate box the embedder refuses (as recognize_photo)
        raise OpError(f"could not recognize faces ({exc})", 415) from exc
    payload = photo_json(result, recognizer)
    payload.pop("file", None)  # a temporary name, meaningless to the client
    height, width = result.rgb.shape[:2]
    payload.update(
        {
            "width": int(width),
            "height": int(height),
            "model": run_name(recognizer.model.run_dir),
            "threshold": recognizer.threshold,
            # Shown as a badge: a model that cannot answer unknown names every stranger.
            "closed_set_warning": recognizer.closed_set_warning(),
            "threshold_chosen": recognizer.threshold
            != getattr(recognizer.model, "calibrated_threshold", recognizer.model.threshold),
            "image": None,
            "can_enroll": isinstance(recognizer.model, VectorModel),
        }
    )
    if memory is not None and result.recognitions:
        image = file_sha256(path)
        embedder = recognizer.model.embedder if isinstance(recognizer.model, VectorModel) else None
        memory.remember(image, SeenFaces(embedder, vectors, [face["box"] for face in payload["faces"]]))
        payload["image"] = image
    return payload


def verify_files(path_a: Path, path_b: Path, model: str = "dlib", detector: str | None = None) -> dict:
    """Are the largest faces of two images the same person? :func:`facelab.api.verify`, as JSON."""
    from facelab.api import NoFace, verify
    from facelab.embedders import EmbedderUnavailable
    from facelab.imageio import ImageError

    try:
        check = verify(path_a, path_b, model=model, detector=detector)
    except KeyError as exc:
        raise OpError(str(exc.args[0]), 422) from exc
    except NoFace as exc:
        raise OpError(
            f"no face found in the {('first', 'second')[exc.index]} image — use one where the face is "
            "larger and frontal",
            422,
        ) from exc
    except ImageError as exc:
        label = "first" if exc.path == Path(path_a) else "second"
        raise OpError(f"{label} image: {exc.reason} — {exc.fix}", 415) from exc
    except EmbedderUnavailable as exc:
        raise OpError(str(exc), 503) from exc
    return {
        "same": check.same,
        "distance": round(check.distance, 4),
        "threshold": check.threshold,
        "model": model,
        "faces": [
            {"box": list(box), "faces_in_image": n} for box, n in zip(check.boxes, check.faces_in_image, strict=True)
        ],
    }
