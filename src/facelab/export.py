"""Models that leave the workspace: ONNX for CNN runs, a portable bundle for embedding runs.

* ``facelab export RUN --format onnx --out FILE.onnx`` — a transfer (CNN) run as one ONNX graph
  (network + softmax; input ``images``: float32 N×3×S×S, the face crop resized to S and normalised
  as in training). Everything else a recognizer needs rides in the model's metadata (key
  ``facelab``, JSON): class names, the unknown threshold and look-alike margin, the preprocessing
  (size, mean/std, crop margin) and the run's embedding gate (prototypes + threshold), so an
  exported model answers "unknown" as the run does. Runs with onnxruntime; PyTorch is not needed.
* A metric run (``--strategy metric``) exports to ONNX too: its embedding network followed by the
  cosine to each person's prototype (output ``similarities``), the unknown threshold in the
  metadata (``score_kind`` ``similarity``); only the prototype head exports (a kNN head is refused).
* ``facelab export RUN --format bundle --out FILE.zip`` — an embedding run as the files that define
  it (summary, head vectors, calibration): small, no network inside (the embedder, e.g. dlib, is
  installed with facelab).

``facelab recognize --model FILE PHOTOS...`` loads either (:func:`load_exported`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.types import Face

FORMAT_VERSION = 1
METADATA_KEY = "facelab"
BUNDLE_FILES = ("summary.json", "openset.json", "head.npz", "config.yaml")


class ExportError(ValueError):
    """A run that cannot be exported in the format asked for; the message says what can."""


def export_run(run_dir: Path, fmt: str, out: Path) -> Path:
    """Export ``run_dir`` (a run folder, or its ``deployed`` refit) as ``fmt`` to ``out``."""
    from facelab.runs import read_summary

    track = read_summary(run_dir).get("track", "transfer")
    if fmt not in ("onnx", "bundle"):
        raise ExportError(f"unknown export format {fmt!r}: onnx (CNN and metric runs) or bundle (embedding runs)")
    exporter = _EXPORTERS.get((fmt, track))
    if exporter is None:
        other = "bundle" if track == "embedding" else "onnx"
        kind = "an embedding run" if track == "embedding" else f"a CNN run ({track} track)"
        raise ExportError(f"{run_dir.name} is {kind}: export it with --format {other}")
    return exporter(run_dir, out)


def _export_onnx(run_dir: Path, out: Path) -> Path:
    import torch

    from facelab.imageio import write_bytes_atomic
    from facelab.transfer_model import TransferModel

    try:
        import onnx
    except ImportError as exc:
        raise ExportError("exporting ONNX needs the onnx package: pip install 'facelab[export]'") from exc
    model = TransferModel(run_dir, device="cpu")
    net = model.net.float().eval()

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(images).flatten(1), dim=1)

    size = model.preprocessing.image_size
    example = torch.rand(1, 3, size, size)
    with tempfile.TemporaryDirectory(prefix="facelab-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fine for CNNs
            warnings.simplefilter("ignore", DeprecationWarning)
            _export_graph(torch, WithSoftmax(net), example, path)
        graph = onnx.load(str(path))
    meta = graph.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(_onnx_metadata(model), ensure_ascii=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(graph.SerializeToString(), out)
    return out


def _export_graph(torch: Any, module: Any, example: Any, path: Path, output: str = "probabilities") -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, CNNs export as they are
        input_names=["images"],
        output_names=[output],
        dynamic_axes={"images": {0: "faces"}, output: {0: "faces"}},
        opset_version=17,
    )


def _export_metric_onnx(run_dir: Path, out: Path) -> Path:
    """A metric run as one graph: the embedding network, then the cosine to each person's prototype
    (output ``similarities``, faces × people). The prototypes ride inside the graph; the threshold in
    the metadata. A kNN head keeps every training face and is not exported."""
    import torch

    from facelab.imageio import write_bytes_atomic
    from facelab.metric_model import MetricModel

    try:
        import onnx
    except ImportError as exc:
        raise ExportError("exporting ONNX needs the onnx package: pip install 'facelab[export]'") from exc
    model = MetricModel(run_dir, device="cpu")
    try:
        prototypes = torch.from_numpy(model.prototypes()).float()
    except ValueError as exc:
        raise ExportError(
            f"{run_dir.name}: only the prototype head exports to ONNX (this run's head is {model.params.head}); "
            "train it with the prototype head"
        ) from exc
    net = model.net.float().eval()

    class WithPrototypes(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, centres: torch.Tensor) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("centres", centres)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images) @ self.centres.T

    size = model.preprocessing.image_size
    example = torch.rand(1, 3, size, size)
    with tempfile.TemporaryDirectory(prefix="facelab-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            _export_graph(torch, WithPrototypes(net, prototypes), example, path, output="similarities")
        graph = onnx.load(str(path))
    meta = graph.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(_onnx_metadata(model, "similarity"), ensure_ascii=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(graph.SerializeToString(), out)
    return out


def _onnx_metadata(model: Any, score_kind: str = "probability") -> dict:
    from facelab.runs import run_name

    pre = model.preprocessing
    gate = getattr(model, "gate", None)
    return {
        "format": FORMAT_VERSION,
        "run": run_name(model.run_dir),
        "classes": list(model.classes),
        "score_kind": score_kind,
        "threshold": model.threshold,
        "min_margin": model.min_margin,
        "image_size": pre.image_size,
        "mean": list(pre.mean) if pre.mean is not None else None,
        "std": list(pre.std) if pre.std is not None else None,
        "interpolation": pre.interpolation,
        "crop_margin": model.crop_margin,
        "gate": None
        if gate is None
        else {
            "embedder": gate.embedder,
            "classes": list(gate.classes),
            "centers": np.asarray(gate.centers, dtype=np.float64).round(7).tolist(),
            "threshold": gate.threshold,
        },
    }


def _export_bundle(run_dir: Path, out: Path) -> Path:
    from facelab.imageio import write_bytes_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facelab-export-") as tmp:
        staging = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in BUNDLE_FILES:
                if (run_dir / name).is_file():
                    archive.write(run_dir / name, name)
            archive.writestr("facelab-bundle.json", json.dumps({"format": FORMAT_VERSION, "run": run_dir.name}))
        write_bytes_atomic(staging.read_bytes(), out)
    return out


# (format, track) → exporter; a pair not here is refused with the format that track exports to.
_EXPORTERS: dict[tuple[str, str], Callable[[Path, Path], Path]] = {
    ("onnx", "transfer"): _export_onnx,
    ("onnx", "metric"): _export_metric_onnx,
    ("bundle", "embedding"): _export_bundle,
}


# -- loading -----------------------------------------------------------------------------------


def load_exported(path: Path | str) -> Any:
    """The model an exported file holds (.onnx: :class:`OnnxModel`; .zip: an embedding bundle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model (make one with facelab export RUN --out FILE)")
    if path.suffix.lower() == ".onnx":
        return OnnxModel(path)
    if zipfile.is_zipfile(path):
        return _load_bundle(path)
    raise ValueError(f"{path}: not an exported facelab model (.onnx from a CNN run, or a .zip bundle)")


def _load_bundle(path: Path) -> Any:
    from facelab.embed_track import EmbeddingModel

    with tempfile.TemporaryDirectory(prefix="facelab-bundle-") as tmp:
        folder = Path(tmp) / path.stem
        folder.mkdir()
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "facelab-bundle.json" not in names or "head.npz" not in names:
                raise ValueError(f"{path}: not a facelab embedding bundle (made by facelab export --format bundle)")
            for name in BUNDLE_FILES:
                if name in names:
                    (folder / name).write_bytes(archive.read(name))  # fixed names only: no path from the archive
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        summary.pop("workspace", None)  # a bundle stands alone: no workspace gallery
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        model = EmbeddingModel(folder)  # reads every file now; nothing later
    model.run_dir = path  # named after the bundle in messages
    return model


class OnnxModel:
    """An exported CNN or metric run, run with onnxruntime: satisfies :class:`facelab.runs.Model` for photos.

    Faces are cropped as in training (the run's crop margin), resized to the network's input with
    the run's own transform when PyTorch is installed (identical scores), else with Pillow's
    bilinear filter (scores may differ in the third decimal). The run's embedding gate is applied
    when the embedder is installed; without it the model names every face (``threshold`` None).
    """

    score_kind = "probability"

    def __init__(self, path: Path | str) -> None:
        import onnxruntime as ort

        self.run_dir = Path(path)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ValueError(f"{path}: an ONNX model without facelab's metadata (export it with facelab export)")
        self.meta = json.loads(meta)
        # A CNN classifier's probabilities, or a metric run's cosine similarities to its prototypes.
        self.score_kind: str = self.meta.get("score_kind", "probability")
        self.classes: list[str] = list(self.meta["classes"])
        self.min_margin: float | None = self.meta.get("min_margin")
        self.crop_margin = float(self.meta["crop_margin"])
        self.gate = self._gate()
        threshold = self.meta.get("threshold")
        self.threshold: float | None = 0.0 if threshold is None and self.gate is not None else threshold

    def _gate(self) -> Any:
        data = self.meta.get("gate")
        if not data:
            return None
        from facelab.embedders import EmbedderUnavailable, get_embedder
        from facelab.gate import EmbeddingGate

        try:
            get_embedder(data["embedder"])
        except (EmbedderUnavailable, KeyError, ImportError):
            return None
        return EmbeddingGate(data["embedder"], list(data["classes"]), np.asarray(data["centers"]), data["threshold"])

    def _inputs(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        size = int(self.meta["image_size"])
        mean, std = self.meta.get("mean"), self.meta.get("std")
        try:
            from facelab.transforms import Preprocessing, eval_transform, from_array

            transform = eval_transform(
                Preprocessing(
                    size,
                    tuple(mean) if mean else None,
                    tuple(std) if std else None,
                    self.meta.get("interpolation", "bilinear"),
                )
            )
            return np.stack([transform(from_array(c)).numpy() for c in crops]).astype(np.float32)
        except ImportError:  # no PyTorch here: Pillow's bilinear resize, then the same arithmetic
            from PIL import Image

            out = []
            for crop in crops:
                small = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))
                x = small.astype(np.float32).transpose(2, 0, 1) / 255.0
                if mean and std:
                    x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
                out.append(x)
            return np.stack(out).astype(np.float32)

    def predict_inputs(self, images: np.ndarray) -> np.ndarray:
        """Scores for preprocessed inputs (N×3×S×S float32), as the graph computes them: probabilities,
        or a metric run's similarities (``score_kind``)."""
        return self.session.run(None, {"images": np.asarray(images, dtype=np.float32)})[0]

    def predict_faces(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        from facelab.align import crop_face

        if not faces:
            return np.zeros((0, len(self.classes)), np.float32)
        crops = [crop_face(rgb, face, margin=self.crop_margin, size=256) for face in faces]
        scores = self.predict_inputs(self._inputs(crops))
        if self.gate is None:
            return scores
        from facelab.embedders import get_embedder

        return self.gate.apply(scores, get_embedder(self.gate.embedder).embed(rgb, faces), self.classes)

    def predict_items(self, items: list) -> np.ndarray:
        raise NotImplementedError("an exported model names faces in photos; evaluate the run folder instead")
