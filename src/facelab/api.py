"""facelab in a few lines of Python: the same workflow the CLI and the web app run.

>>> import facelab
>>> ws = facelab.Workspace.create("workspace", photos="photos")   # doctest: +SKIP
>>> ws.build(); ws.split(); ws.train()                              # doctest: +SKIP
>>> for face in ws.recognize("door.jpg"):                           # doctest: +SKIP
...     print(face.name, face.box, round(face.score, 2))

Nothing heavy loads at import: the detector, the embedder and a model load on first use and are
kept by the object that loaded them. Every step calls :mod:`facelab.workflow`, so a workspace
trained here answers exactly as ``facelab recognize WS`` and the web app do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab import workflow
from facelab.writelock import write_lock

Image = str | Path | np.ndarray
BoxTuple = tuple[int, int, int, int]


@dataclass(frozen=True)
class FaceFound:
    """A face found in an image: ``box`` (x1, y1, x2, y2) in pixels of the image as given (after its
    EXIF rotation when read from a file); ``confidence`` the detector's."""

    box: BoxTuple
    confidence: float


@dataclass(frozen=True)
class RecognizedFace:
    """A face and who it is: ``name`` is ``"unknown"`` for a stranger (or a face too unlike anyone);
    ``score`` the model's confidence in the name (higher is surer; the run's threshold decides);
    ``candidates`` the best few people with their scores."""

    box: BoxTuple
    name: str
    score: float
    candidates: tuple[tuple[str, float], ...] = ()

    @property
    def known(self) -> bool:
        return self.name != "unknown"


@dataclass(frozen=True)
class Verification:
    """Are two faces the same person? ``distance`` between their embeddings (lower is more alike);
    ``same`` when it is at most ``threshold``. ``boxes``: the face compared in each image;
    ``faces_in_image``: how many faces each image had (the largest was compared)."""

    same: bool
    distance: float
    threshold: float
    boxes: tuple[BoxTuple, BoxTuple] = ((0, 0, 0, 0), (0, 0, 0, 0))
    faces_in_image: tuple[int, int] = (1, 1)


class NoFace(ValueError):
    """An image given to :func:`verify` has no face; ``index`` is 0 for the first image, 1 for the second."""

    def __init__(self, index: int, image: object) -> None:
        self.index = index
        where = image if isinstance(image, (str, Path)) else ("the first image", "the second image")[index]
        super().__init__(f"no face found in {where} — use one where the face is larger and frontal")


def _rgb(image: Image) -> np.ndarray:
    """An upright RGB uint8 array from a path (EXIF rotation applied) or an array (used as given:
    H×W×3 RGB, or H×W grey)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an H×W×3 RGB image array, got shape {image.shape}")
        return np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    from facelab.imageio import load_rgb

    return load_rgb(Path(image))


def _box(face: Any) -> BoxTuple:
    x1, y1, x2, y2 = face.box.as_ints()  # the CLI's and the web's rounding
    return (x1, y1, x2, y2)


def find_faces(image: Image, detector: str | None = None) -> list[FaceFound]:
    """The faces of an image, best first. ``detector``: a name from ``facelab detectors``.

    (Not ``facelab.detect``: that name is the package of detectors.)"""
    from facelab.embedders import find_faces

    return [FaceFound(_box(face), float(face.score)) for face in find_faces(_rgb(image), detector)]


def embed(image: Image, model: str = "dlib", detector: str | None = None) -> np.ndarray | None:
    """The embedding of the largest face of an image (None when there is no face)."""
    from facelab.embedders import embed_largest_face

    _, vector, _ = embed_largest_face(_rgb(image), model, detector)
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def verify(
    a: Image, b: Image, threshold: float | None = None, model: str = "dlib", detector: str | None = None
) -> Verification:
    """Are the largest faces of ``a`` and ``b`` the same person? ``threshold``: the largest distance
    still called the same (default: the embedder's calibrated one; lower is stricter). The one rule
    behind ``facelab verify``, the web's ``/api/verify`` and this function. Raises :class:`NoFace`
    when an image has no face, :class:`facelab.imageio.ImageError` when one cannot be read,
    ``KeyError`` for an unknown ``model``."""
    from facelab.embedders import embed_largest_face, embedder_info

    limit = embedder_info(model).verify_distance if threshold is None else float(threshold)
    sides = []
    for index, image in enumerate((a, b)):
        face, vector, n_faces = embed_largest_face(_rgb(image), model, detector)
        if vector is None or face is None:
            raise NoFace(index, image)
        sides.append((_box(face), np.asarray(vector, dtype=np.float64), n_faces))
    distance = float(np.linalg.norm(sides[0][1] - sides[1][1]))
    return Verification(
        distance <= limit,
        distance,
        float(limit),
        (sides[0][0], sides[1][0]),
        (sides[0][2], sides[1][2]),
    )


class Workspace:
    """A facelab workspace: photos in, a model out, people recognized.

    ``Workspace(path)`` opens an existing one; :meth:`create` makes one for a photo folder
    (``photos/<person>/…``). Each method is one step of :mod:`facelab.workflow`, holding the
    workspace's write lock while it changes anything.
    """

    def __init__(self, path: str | Path, photos: str | Path | None = None, *, _create: bool = False) -> None:
        from facelab.store import Workspace as Store

        self.path = Path(path)
        if not _create and not (self.path / ".facelab" / "facelab.db").is_file():
            raise FileNotFoundError(
                f"{self.path} is not a facelab workspace; make one with facelab.Workspace.create(path, photos=...)"
            )
        Store(self.path, create=_create).close()
        self.photos = Path(photos) if photos is not None else None
        self._recognizer: Any = None
        self._recognizer_run: tuple | None = None

    @classmethod
    def create(cls, path: str | Path, photos: str | Path | None = None) -> Workspace:
        """A workspace at ``path`` (made if needed) for the photo folder ``photos``."""
        if photos is not None:
            from facelab.build import check_roots

            check_roots(Path(photos), Path(path))
        return cls(path, photos, _create=True)

    def _open(self) -> Any:
        from facelab.store import Workspace as Store

        return Store(self.path, create=False)

    # -- the steps -------------------------------------------------------------------------
    def build(self, photos: str | Path | None = None, **options: Any) -> workflow.Ingest:
        """Find and crop the faces of ``photos/<person>/…`` (default: the folder given to create)
        and decide which face is each folder's person. Options: see :func:`facelab.workflow.ingest`."""
        folder = Path(photos) if photos is not None else self.photos
        if folder is None:
            raise ValueError("which photos? give build(photos=...) or Workspace.create(path, photos=...)")
        with self._open() as ws:
            return workflow.ingest(ws, folder, **options)

    def split(self, seed: int = workflow.DEFAULTS.split_seed) -> Any:
        """Split photos into train / val / test (by photo, near-duplicates kept together)."""
        with self._open() as ws:
            return workflow.split(ws, seed=seed)

    def train(self, head: str = "prototype", strangers: str | Path | None = None) -> workflow.Deployment:
        """Train an embedding-track run (seconds), calibrate "unknown", and make it current if it is no
        worse than the current model. Splits first when there is no split yet."""
        from facelab.items import FaceSelection, load_items

        with self._open() as ws:
            if not load_items(ws, "train", FaceSelection.RESOLVED):
                workflow.split(ws)
            run_dir = workflow.train_embedding(ws, head=head, strangers=Path(strangers) if strangers else None)
            return workflow.deploy(ws, run_dir)

    def auto(self, budget_minutes: float = workflow.DEFAULTS.budget_minutes) -> workflow.Deployment:
        """Train candidates within the budget, keep the best (as ``facelab auto``)."""
        with self._open() as ws:
            return workflow.auto(ws, budget_minutes=budget_minutes)[1]

    def use(self, run: str | Path) -> workflow.Deployment:
        """Make a finished run (a name under ``runs/`` or a folder) the current model."""
        with self._open() as ws:
            return workflow.deploy(ws, run, force=True)

    # -- people ----------------------------------------------------------------------------
    def enroll(self, name: str, photos: list[str | Path], model: str = "dlib") -> int:
        """Add a person (or more photos of one) without retraining: the largest face of each photo.
        Returns how many photos were enrolled (as ``facelab enroll``)."""
        from facelab.embed_track import enroll

        with self._open() as ws, write_lock(ws.root):
            return sum(o.ok for o in enroll(ws, name, [Path(p) for p in photos], model=model))

    def forget(self, name: str) -> None:
        """Remove what :meth:`enroll` stored about a person."""
        from facelab.embed_track import forget

        with self._open() as ws, write_lock(ws.root):
            forget(ws, name)

    def rename_person(self, old: str, new: str) -> str:
        """Rename a person everywhere (kept by later builds); returns what changed, in words."""
        from facelab import people

        with self._open() as ws:
            return people.rename(ws, old, new).words()

    def merge_people(self, source: str, into: str) -> str:
        """Make ``source`` part of ``into`` (photos, faces, review decisions); returns what changed."""
        from facelab import people

        with self._open() as ws:
            return people.merge(ws, source, into).words()

    def delete_person(self, name: str) -> str:
        """Forget a person (their photo files are untouched; builds skip their folder)."""
        from facelab import people

        with self._open() as ws:
            return people.delete(ws, name).words()

    @property
    def current_run(self) -> str | None:
        """The current model's run folder name (None before training)."""
        with self._open() as ws:
            current = workflow.current_run(ws)
        return current.name if current else None

    @property
    def people(self) -> list[str]:
        """The people the current model can name."""
        return list(self._recognizer_now().classes)

    # -- recognition -----------------------------------------------------------------------
    def _recognizer_now(self) -> Any:
        from facelab.auto import current_model
        from facelab.recognize import Recognizer

        with self._open() as ws:
            # The web app's rule: reload when anything that changes the answers changed.
            key = workflow.current_model_key(ws)
            if key is None:
                raise FileNotFoundError(f"{self.path} has no current model yet: call train() or auto() first")
            if self._recognizer is None or self._recognizer_run != key:
                self._recognizer = Recognizer(
                    current_model(ws), detector=ws.setting("detector"), min_face=workflow.DEFAULTS.min_face
                )
                self._recognizer_run = key
        return self._recognizer

    def recognize(self, image: Image) -> list[RecognizedFace]:
        """Every face of a photo (a path or an RGB array) with its name, ``"unknown"`` for strangers —
        the answers ``facelab recognize WS`` gives for the same photo."""
        recognizer = self._recognizer_now()
        return [
            RecognizedFace(_box(r.face), r.label, float(r.score), tuple(r.candidates))
            for r in recognizer.recognize(_rgb(image))
        ]

    def recognize_folder(self, folder: str | Path) -> Iterator[tuple[Path, list[RecognizedFace]]]:
        """(photo, faces) for every photo under ``folder``; unreadable files are skipped."""
        from facelab.imageio import ImageError, iter_image_files

        for path in iter_image_files(Path(folder)):
            try:
                yield path, self.recognize(path)
            except ImageError:
                continue

    def __repr__(self) -> str:
        return f"facelab.Workspace({str(self.path)!r})"
