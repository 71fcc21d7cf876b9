"""dlib's face embedding network, run with numpy instead of dlib.

The dlib-bin wheel is built without BLAS (``dlib.DLIB_USE_BLAS`` is False), so its
ResNet spends ~77 ms per face in dlib's own matrix multiply, while numpy's
OpenBLAS does the same convolutions several times faster. This module reads the
weights from the model file face_recognition_models installs
(``dlib_face_recognition_resnet_model_v1.dat``, read once per process, never
converted nor copied) and computes the same 128-d embeddings: within 1e-6 of
dlib's on the sample photos (tests/test_resnet.py).

The file is dlib's binary serialization of ``anet_type`` from dlib's
examples/dnn_face_recognition_ex.cpp. The parser walks it against that
architecture and raises ModelFormatError at the first byte that is not what it
expects (another model, another dlib release, a damaged file); the engine then
keeps dlib's own encoder. Every format detail names the dlib source that writes it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHIP_SIZE = 150  # input_rgb_image_sized<150>
EMBEDDING_SIZE = 128
# Faces per pass: 4 to 8 make the matrix products ~20% cheaper per face than one at
# a time, and bound the memory (the first layer's patches take ~3 MB a face).
BATCH = 8


class ModelFormatError(ValueError):
    """The model file is not the serialized network this module was written for."""


# ---------------------------------------------------------------------------
# The architecture: anet_type of dlib/examples/dnn_face_recognition_ex.cpp, from the
# input to the output. dlib nests it the other way round (the loss outermost):
#
#   loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<alevel1<alevel2<alevel3<
#       alevel4<max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>
#   alevel4 = ares<32> x3, alevel3 = ares_down<64> + ares<64> x3,
#   alevel2 = ares_down<128> + ares<128> x2, alevel1 = ares_down<256> + ares<256> x2,
#   alevel0 = ares_down<256>
#   block<N,stride>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, SUBNET>>>>>
#   ares<N>      = relu<add_prev1<block<N,1, tag1<SUBNET>>>>
#   ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N,2, tag1<SUBNET>>>>>>>
#
# Each step is (kind, arguments): ("con", (filters, size, stride)), ("pool", (kind,
# size, stride)) with size 0 for avg_pool_everything, ("tag"/"skip"/"add_prev", (id,)).


def _block(filters: int, stride: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        ("con", (filters, 3, stride)),
        ("affine", ()),
        ("relu", ()),
        ("con", (filters, 3, 1)),
        ("affine", ()),
    ]


def _ares(filters: int) -> list[tuple[str, tuple[int, ...]]]:
    return [("tag", (1,)), *_block(filters, 1), ("add_prev", (1,)), ("relu", ())]


def _ares_down(filters: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        ("tag", (1,)),
        *_block(filters, 2),
        ("tag", (2,)),
        ("skip", (1,)),
        ("pool", ("avg", 2, 2)),
        ("add_prev", (2,)),
        ("relu", ()),
    ]


ARCHITECTURE: list[tuple[str, tuple]] = [
    ("con", (32, 7, 2)),
    ("affine", ()),
    ("relu", ()),
    ("pool", ("max", 3, 2)),
    *_ares(32) * 3,
    *_ares_down(64),
    *_ares(64) * 3,
    *_ares_down(128),
    *_ares(128) * 2,
    *_ares_down(256),
    *_ares(256) * 2,
    *_ares_down(256),
    ("pool", ("avg", 0, 1)),
    ("fc", (EMBEDDING_SIZE,)),
]


# ---------------------------------------------------------------------------
# Reading dlib's serialization.


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{what} at byte {self.pos}")

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise self.fail("truncated file")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def integer(self) -> int:
        """dlib/serialize.h, ser_helper::pack_int: a control byte, then the magnitude.

        The control byte's low 4 bits count the bytes that follow (1 to 8, little
        endian), bit 7 is the sign (signed types), bits 0x70 are reserved (zero).
        """
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def expect_integer(self, expected: int | set[int], what: str) -> int:
        value = self.integer()
        if value != expected and not (isinstance(expected, set) and value in expected):
            raise self.fail(f"{what}: expected {expected}, found {value}")
        return value

    def string(self) -> str:
        """dlib/serialize.h: std::string is its length (an integer), then its bytes."""
        size = self.integer()
        if not 0 <= size <= 256:
            raise self.fail(f"implausible string length {size}")
        return self.take(size).decode("latin-1")

    def expect_name(self, expected: str) -> None:
        """Every dlib layer starts with its name and format version, e.g. "con_4"."""
        start = self.pos
        found = self.string()
        if found != expected:
            self.pos = start
            raise self.fail(f"expected layer {expected!r}, found {found!r}")

    def floating(self) -> float:
        """dlib/serialize.h, serialize_floating_point: float_details, i.e. two integers,
        mantissa then exponent, the value being mantissa * 2**exponent. (The older ASCII
        format, whose first byte has bits 0x70 set, is refused by integer().)"""
        mantissa = self.integer()
        exponent = self.integer()
        try:
            value = math.ldexp(mantissa, exponent)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):  # float_details encodes inf and NaN as special exponents
            raise self.fail(f"non-finite float ({mantissa} * 2**{exponent})")
        return value

    def boolean(self) -> bool:
        """dlib/serialize.h: a bool is the ASCII character '1' or '0'."""
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail(f"bad bool {char!r}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        """dlib/dnn/tensor.h, serialize(tensor): version 2, num_samples, k, nr, nc,
        then every value as a 4-byte little-endian IEEE float (not float_details)."""
        self.expect_integer(2, "tensor version")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0 or math.prod(shape) > 10_000_000:
            raise self.fail(f"implausible tensor shape {shape}")
        return np.frombuffer(self.take(4 * math.prod(shape)), dtype="<f4").reshape(shape)

    def alias(self) -> tuple[int, ...]:
        """dlib/dnn/tensor.h, serialize(alias_tensor): version 1, then its 4 dimensions."""
        self.expect_integer(1, "alias_tensor version")
        return tuple(self.integer() for _ in range(4))


# ---------------------------------------------------------------------------
# The layers, as the forward pass uses them (images are NHWC float32 arrays).


@dataclass(frozen=True)
class Conv:
    weights: np.ndarray  # (size * size * channels, filters): rows ordered (dy, dx, channel)
    bias: np.ndarray  # (filters,)
    size: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Affine:
    scale: np.ndarray  # per channel
    shift: np.ndarray


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    size: int  # 0: the whole image (avg_pool_everything)
    stride: int


@dataclass(frozen=True)
class Step:
    kind: str  # "relu", "tag", "skip", "add_prev"
    tag: int = 0


@dataclass(frozen=True)
class Fc:
    weights: np.ndarray  # (inputs, outputs): dlib's fc_ computes input * weights


def _con(r: _Reader, channels: int, filters: int, size: int, stride: int) -> Conv:
    """dlib/dnn/layers.h, con_ (format "con_4"): params (filters then biases), the
    sizes, strides and paddings, the filters' and biases' alias shapes, then four
    learning-rate and weight-decay multipliers (training only)."""
    r.expect_name("con_4")
    params = r.tensor().ravel()
    r.expect_integer(filters, "con_ num_filters")
    r.expect_integer(size, "con_ nr")
    r.expect_integer(size, "con_ nc")
    r.expect_integer(stride, "con_ stride_y")
    r.expect_integer(stride, "con_ stride_x")
    # con_'s default padding (layers.h): 0 when the stride is not 1, else half the filter.
    padding = 0 if stride != 1 else size // 2
    r.expect_integer(padding, "con_ padding_y")
    r.expect_integer(padding, "con_ padding_x")
    if r.alias() != (filters, channels, size, size) or r.alias() != (1, filters, 1, 1):
        raise r.fail("con_ filters/biases shape")
    for _ in range(4):
        r.floating()
    weight_count = filters * channels * size * size
    if params.size != weight_count + filters:
        raise r.fail(f"con_ has {params.size} parameters, expected {weight_count + filters}")
    # dlib's filters are (filter, channel, row, column) and it correlates (no flip):
    # reorder them to match the (row, column, channel) patches of _conv.
    weights = params[:weight_count].reshape(filters, channels, size, size).transpose(2, 3, 1, 0)
    return Conv(np.ascontiguousarray(weights.reshape(-1, filters)), params[weight_count:].copy(), size, stride, padding)


def _affine(r: _Reader, channels: int) -> Affine:
    """dlib/dnn/layers.h, affine_: params (gamma then beta), their alias shapes, and the
    mode (0 = CONV_MODE: one scale and shift per channel)."""
    r.expect_name("affine_")
    params = r.tensor().ravel()
    if params.size != 2 * channels or r.alias() != (1, channels, 1, 1) or r.alias() != (1, channels, 1, 1):
        raise r.fail("affine_ shape")
    r.expect_integer(0, "affine_ mode (CONV_MODE)")
    return Affine(params[:channels].copy(), params[channels:].copy())


def _pool(r: _Reader, kind: str, size: int, stride: int) -> Pool:
    """dlib/dnn/layers.h, max_pool_ / avg_pool_ (format "…_pool_2"): window, strides,
    paddings. The default padding is 0 for a stride other than 1 (and for the
    whole-image pooling, size 0), so every window lies inside the image."""
    r.expect_name(f"{kind}_pool_2")
    for what, expected in (("nr", size), ("nc", size), ("stride_y", stride), ("stride_x", stride)):
        r.expect_integer(expected, f"{kind}_pool_ {what}")
    r.expect_integer(0, f"{kind}_pool_ padding_y")
    r.expect_integer(0, f"{kind}_pool_ padding_x")
    return Pool(kind, size, stride)


def _fc(r: _Reader, inputs: int, outputs: int) -> Fc:
    """dlib/dnn/layers.h, fc_ (format "fc_2"): outputs, inputs, params (inputs x
    outputs), the weights' and biases' alias shapes, the bias mode (1 = FC_NO_BIAS)
    and four multipliers."""
    r.expect_name("fc_2")
    r.expect_integer(outputs, "fc_ num_outputs")
    r.expect_integer(inputs, "fc_ num_inputs")
    params = r.tensor()
    if params.size != inputs * outputs or r.alias() != (inputs, outputs, 1, 1):
        raise r.fail("fc_ shape")
    r.alias()  # biases: unused without a bias
    r.expect_integer(1, "fc_ bias mode (FC_NO_BIAS)")
    for _ in range(4):
        r.floating()
    return Fc(params.reshape(inputs, outputs).copy())


def _layer_state(r: _Reader, *, innermost_version: int | None = None) -> None:
    """dlib/dnn/core.h, add_layer's state after its layer: this_layer_setup_called,
    gradient_input_is_stale, get_output_and_gradient_input_disabled, then the tensors
    x_grad, cached_output and params_grad (empty in a saved model, ignored). The
    add_layer over the input layer writes grad_final instead of params_grad and,
    from its version 3, _sample_expansion_factor."""
    for _ in range(3):
        r.boolean()
    for _ in range(3):
        r.tensor()
    if innermost_version == 3:
        r.expect_integer(1, "sample_expansion_factor")


@dataclass(frozen=True)
class Network:
    means: np.ndarray  # per channel, R G B, subtracted from the chip's pixels
    layers: tuple[Conv | Affine | Pool | Step | Fc, ...]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """The embeddings (n, 128) of face chips (n, 150, 150, 3) uint8 RGB.

        The chips are dlib's (dlib.get_face_chips with size 150 and padding 0.25,
        as dlib's compute_face_descriptor makes them), BATCH at a time.
        """
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) chips, got {chips.shape}")
        if len(chips) > BATCH:
            return np.concatenate([self.embed(chips[i : i + BATCH]) for i in range(0, len(chips), BATCH)])
        # dlib/dnn/input.h, input_rgb_image_sized::to_tensor: (pixel - mean) / 256 per
        # channel, red in channel 0.
        x = (chips.astype(np.float32) - self.means) / np.float32(256)
        tags: dict[int, np.ndarray] = {}
        for layer in self.layers:
            if isinstance(layer, Conv):
                x = _conv(x, layer)
            elif isinstance(layer, Affine):
                x = x * layer.scale + layer.shift
            elif isinstance(layer, Pool):
                x = _pool_forward(x, layer)
            elif isinstance(layer, Fc):
                x = x.reshape(x.shape[0], -1) @ layer.weights
            elif layer.kind == "relu":
                x = np.maximum(x, 0)
            elif layer.kind == "tag":  # remembers this output (core.h, add_tag_layer)
                tags[layer.tag] = x
            elif layer.kind == "skip":  # continues from a remembered one (add_skip_layer)
                x = tags[layer.tag]
            else:  # add_prev: x + the tagged output
                x = _add(x, tags[layer.tag])
        return x


def _conv(x: np.ndarray, conv: Conv) -> np.ndarray:
    """Convolution as one matrix product (im2col): each output pixel's
    size x size x channels patch is a row; zero padding as dlib's."""
    n, height, width, channels = x.shape
    if conv.padding:
        p = conv.padding
        x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        height, width = height + 2 * p, width + 2 * p
    size, stride = conv.size, conv.stride
    out_h = (height - size) // stride + 1
    out_w = (width - size) // stride + 1
    # In an NHWC image, a patch row (size pixels of all channels) is size * channels
    # consecutive floats, and the next output pixel's starts stride * channels
    # further: so each patch row is a sliding window over the flattened image row,
    # copied as one contiguous block (3 to 5 times faster than pixel-wise slices).
    rows = x.reshape(n, height, width * channels)
    patches = np.empty((n, out_h, out_w, size, size * channels), dtype=np.float32)
    for dy in range(size):
        windows = sliding_window_view(rows[:, dy : dy + stride * (out_h - 1) + 1 : stride], size * channels, axis=2)
        patches[:, :, :, dy] = windows[:, :, : stride * channels * (out_w - 1) + 1 : stride * channels]
    out = patches.reshape(n * out_h * out_w, -1) @ conv.weights
    out += conv.bias
    return out.reshape(n, out_h, out_w, -1)


def _pool_forward(x: np.ndarray, pool: Pool) -> np.ndarray:
    """dlib/dnn/cpu_dlib.cpp, pooling: window (r*stride .. r*stride+size-1) with no
    padding here, so each window is whole; avg_pool_everything averages everything."""
    if pool.size == 0:
        return x.mean(axis=(1, 2), keepdims=True)
    height, width = x.shape[1:3]
    out_h = (height - pool.size) // pool.stride + 1
    out_w = (width - pool.size) // pool.stride + 1
    reach_h, reach_w = pool.stride * (out_h - 1) + 1, pool.stride * (out_w - 1) + 1
    windows = [
        x[:, dy : dy + reach_h : pool.stride, dx : dx + reach_w : pool.stride, :]
        for dy in range(pool.size)
        for dx in range(pool.size)
    ]
    if pool.kind == "max":
        return functools.reduce(np.maximum, windows)
    return functools.reduce(np.add, windows) / np.float32(pool.size * pool.size)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib/dnn/cpu_dlib.cpp, add(dest, src1, src2) as add_prev_ calls it: the output
    has the larger of each dimension and a missing element counts as 0 (the
    shortcut of a down-sampling block has half the channels, and its average pool
    keeps one more row and column than the stride-2 convolution)."""
    if a.shape == b.shape:
        return a + b
    out = np.zeros(tuple(max(i, j) for i, j in zip(a.shape, b.shape, strict=True)), dtype=np.float32)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


def parse(data: bytes) -> Network:
    """The network serialized in data (see the module's docstring), or ModelFormatError."""
    r = _Reader(data)
    # dlib/dnn/core.h, add_loss_layer: version 1, the loss, then the subnetwork.
    r.expect_integer(1, "add_loss_layer version")
    # dlib/dnn/loss.h, loss_metric_: margin and distance threshold (training only).
    r.expect_name("loss_metric_2")
    r.floating()
    r.floating()
    # core.h: add_layer, add_tag_layer and add_skip_layer each write their version
    # and then their subnetwork before (for add_layer) their own layer, so the file
    # holds every wrapper's version, outermost first, then the layers from the input up.
    for kind, _ in reversed(ARCHITECTURE[1:]):
        r.expect_integer(1 if kind in ("tag", "skip") else 2, f"{kind} wrapper version")
    innermost_version = r.expect_integer({2, 3}, "input add_layer version")
    # dlib/dnn/input.h, input_rgb_image_sized: mean red, green, blue; rows; columns.
    r.expect_name("input_rgb_image_sized")
    means = np.array([r.floating() for _ in range(3)], dtype=np.float32)
    r.expect_integer(CHIP_SIZE, "input rows")
    r.expect_integer(CHIP_SIZE, "input columns")

    layers: list[Conv | Affine | Pool | Step | Fc] = []
    channels = 3
    for index, (kind, args) in enumerate(ARCHITECTURE):
        if kind == "con":
            layers.append(_con(r, channels, *args))
            channels = args[0]
        elif kind == "affine":
            layers.append(_affine(r, channels))
        elif kind == "pool":
            layers.append(_pool(r, *args))
        elif kind == "fc":
            layers.append(_fc(r, channels, *args))
        elif kind in ("relu", "add_prev"):
            r.expect_name(f"{kind}_")
            layers.append(Step(kind, *args))
        else:  # tag and skip layers write nothing after their subnetwork
            layers.append(Step(kind, *args))
            continue
        _layer_state(r, innermost_version=innermost_version if index == 0 else None)
    if r.pos != len(data):
        raise r.fail("unexpected data after the network")
    return Network(means=means, layers=tuple(_fold(layers)))


def _fold(layers: list[Conv | Affine | Pool | Step | Fc]) -> list[Conv | Affine | Pool | Step | Fc]:
    """Every affine layer follows a convolution: fold its scale and shift into that
    convolution's weights and bias (the same function, one pass less)."""
    folded: list[Conv | Affine | Pool | Step | Fc] = []
    for layer in layers:
        if isinstance(layer, Affine) and folded and isinstance(folded[-1], Conv):
            conv = folded.pop()
            folded.append(
                Conv(
                    weights=(conv.weights * layer.scale).astype(np.float32),
                    bias=(conv.bias * layer.scale + layer.shift).astype(np.float32),
                    size=conv.size,
                    stride=conv.stride,
                    padding=conv.padding,
                )
            )
        else:
            folded.append(layer)
    return folded


def load(path: str | Path) -> Network:
    return parse(Path(path).read_bytes())


@functools.cache
def installed_network() -> Network:
    """The network of face_recognition_models' model file, parsed once per process."""
    import face_recognition_models

    return load(face_recognition_models.face_recognition_model_location())


def _bench(paths: list[str], rounds: int) -> None:
    """CPU and wall ms per face, dlib's encoder vs this network, in one process.

    Both get every face of the photos (found by face_recognition, 5-point
    landmarks) photo by photo, as the engine does; the numpy side includes
    making the chips. Run with OPENBLAS_NUM_THREADS=1, as the workers do.
    """
    import os
    import statistics
    import time
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # face_recognition_models imports pkg_resources
        import dlib
        import face_recognition
        from face_recognition import api

    network = installed_network()
    photos = []
    for path in paths:
        pixels = face_recognition.load_image_file(path)
        shapes = dlib.full_object_detections()
        for top, right, bottom, left in face_recognition.face_locations(pixels, 1):
            shapes.append(api.pose_predictor_5_point(pixels, dlib.rectangle(left, top, right, bottom)))
        if len(shapes):
            photos.append((pixels, shapes))
    faces = sum(len(shapes) for _, shapes in photos)

    def dlib_side() -> None:
        for pixels, shapes in photos:
            api.face_encoder.compute_face_descriptor(pixels, shapes, 1)

    def numpy_side() -> None:
        for pixels, shapes in photos:
            network.embed(np.stack(dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=0.25)))

    print(f"{faces} faces in {len(photos)} photos, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    results: dict[str, list[tuple[float, float]]] = {"dlib": [], "numpy": []}
    for _ in range(rounds):
        for name, side in (("dlib", dlib_side), ("numpy", numpy_side)):
            cpu, wall = time.process_time(), time.perf_counter()
            side()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results[name].append((cpu * 1000 / faces, wall * 1000 / faces))
    for name, runs in results.items():
        cpu = statistics.median(run[0] for run in runs)
        wall = statistics.median(run[1] for run in runs)
        print(f"{name:5s} median of {rounds} rounds: {cpu:5.1f} ms CPU, {wall:5.1f} ms wall per face")
    print("load average (1, 5, 15 min):", " ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    # OPENBLAS_NUM_THREADS=1 python -m matching.engines.resnet [--rounds N] [photo ...]
    import argparse

    parser = argparse.ArgumentParser(description=_bench.__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("photos", nargs="*")
    arguments = parser.parse_args()
    samples = Path(__file__).resolve().parents[2] / "gallery" / "sample_photos"
    photos = arguments.photos or sorted(str(p) for p in samples.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    _bench(photos, arguments.rounds)
