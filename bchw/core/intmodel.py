"""The integer model: the one contract between software and hardware.

Semantics, field by field, are in ``docs/integer-model.md``; this module holds the in-memory form
(:class:`IntegerModel`), the derived widths, and the file format (write, read, validate).

File layout (all integers little-endian)::

    magic        8 bytes   b"BCHWIM\\r\\n"
    header_len   4 bytes   uint32, length of the JSON header in bytes
    header       JSON      UTF-8, describes every field and every array
    payload      bytes     the arrays, back to back, at the offsets the header gives
    trailer      32 bytes  SHA-256 of every byte before it (integrity check)

A model's identity, ``IntegerModel.sha256``, is the SHA-256 of the whole file (what
``sha256sum`` prints).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bchw import jsondoc
from bchw.errors import BchwError
from bchw.outputs import write_bytes_atomic

MAGIC = b"BCHWIM\r\n"
FORMAT_NAME = "bchw-integer-model"
FORMAT_VERSION = 2  # the newest; a model that version 1 can express is written as version 1
FORMAT_VERSIONS = (1, 2)
HASH_BYTES = 32
PREFIX_BYTES = len(MAGIC) + 4

# Limits that keep every intermediate value inside a signed 64-bit integer, so that the numpy
# reference (and any independent implementation in int64) computes it exactly.
MAX_FEATURES = 1 << 16
MAX_SIDE = 1 << 12
MAX_KERNEL = 15
MAX_INPUT_BITS = 16
MAX_HIDDEN_BITS = 16
MAX_OUTPUT_BITS = 32
MAX_SCALE_TERMS = 8
MAX_SHIFT = 48
PARTIAL_SUM_LIMIT = 1 << 62
MAX_HEADER_BYTES = 1 << 20

ARRAY_DTYPES = {"weights": "u1", "scale_sign": "i1", "scale_shift": "u1", "offset": "<i8"}
ACTIVATIONS = ("relu", "none")
LAYER_KINDS = ("dense", "conv", "maxpool")


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width that holds every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def output_range(bits: int, signed: bool) -> tuple[int, int]:
    """The saturation bounds of an activation: [0, 2^b - 1] unsigned, two's complement signed."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass(frozen=True, eq=False)
class IntegerLayer:
    """One binary dense layer with its requantization.

    ``weights`` is ``int8[out_features, in_features]`` holding +1/-1; ``scale_sign`` (-1/0/+1)
    and ``scale_shift`` are ``[out_features, scale_terms]``; ``offset`` is ``int64[out_features]``.
    """

    weights: np.ndarray
    scale_sign: np.ndarray
    scale_shift: np.ndarray
    offset: np.ndarray
    requant_shift: int
    input_bits: int
    output_bits: int
    activation: str
    output_frac_bits: int

    @property
    def in_features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def weight_bits(self) -> int:
        """Bits per weight: 1 (+1/-1). The multiply-accumulate baseline's layers have more."""
        return 1

    @property
    def scale_terms(self) -> int:
        return int(self.scale_sign.shape[1])

    @property
    def output_signed(self) -> bool:
        return self.activation == "none"

    @property
    def input_max(self) -> int:
        """Largest input value; inputs are unsigned (pixels or ReLU outputs)."""
        return (1 << self.input_bits) - 1

    @property
    def acc_bound(self) -> int:
        """|acc| never exceeds ``in_features * input_max``, whatever the weights."""
        return self.in_features * self.input_max

    @property
    def acc_bits(self) -> int:
        """Signed width of the accumulator: holds [-acc_bound, +acc_bound]."""
        return signed_bits(-self.acc_bound, self.acc_bound)

    @property
    def rounding(self) -> int:
        """The constant added before the final shift: 2^(R-1), or 0 when R = 0."""
        return (1 << self.requant_shift) >> 1

    def gains(self, magnitude: bool = False) -> np.ndarray:
        """Per neuron ``sum_k s_k 2^h_k`` (or ``sum_k |s_k| 2^h_k``) as exact Python ints."""
        signs = np.abs(self.scale_sign) if magnitude else self.scale_sign
        terms = signs.astype(object) * (
            np.ones_like(self.scale_shift, dtype=object) << self.scale_shift.astype(object)
        )
        return terms.sum(axis=1)

    def requant_range(self) -> tuple[int, int]:
        """Exact bounds of ``t`` (before the final shift) over every neuron and reachable acc.

        ``t = acc * sum_k s_k 2^h_k + o + rho``; this is the width a requantizer needs when it
        adds in two's complement (partial sums may wrap; the final value cannot).
        """
        spread = np.abs(self.gains(magnitude=False)) * self.acc_bound
        base = self.offset.astype(object) + self.rounding
        return int(min(base - spread)), int(max(base + spread))

    @property
    def requant_bits(self) -> int:
        """Signed width of ``t``."""
        return signed_bits(*self.requant_range())

    def partial_sum_bound(self) -> int:
        """Bound on |any partial sum| of ``t``'s terms, in any order of addition."""
        spread = self.gains(magnitude=True) * self.acc_bound
        return int(max(np.abs(self.offset.astype(object)) + self.rounding + spread))

    def packed_weights(self) -> np.ndarray:
        """``uint8[out, ceil(in / 8)]``: bit i%8 of byte i//8 of row j is 1 where w[j, i] = +1."""
        return np.packbits(self.weights > 0, axis=1, bitorder="little")

    kind = "dense"

    @property
    def positions(self) -> int:
        """Outputs of every neuron per image: 1 (a convolution: its output pixels)."""
        return 1

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.out_features,)

    def token(self) -> str:
        """The layer in the architecture notation (``512``, ``32C3``, ``MP2``)."""
        return str(self.out_features)


@dataclass(frozen=True, eq=False)
class ConvLayer(IntegerLayer):
    """A binary convolution, stride 1, zero padding: a dense layer applied to every window.

    ``weights`` is ``int8[out_channels, kernel * kernel * in_channels]``, a window's inputs
    ordered by kernel row, kernel column, then channel; ``in_features`` is the window size. The
    input is ``in_height x in_width x in_channels``, padded with ``padding`` zeros each side.
    """

    in_channels: int = 0
    in_height: int = 0
    in_width: int = 0
    kernel: int = 1
    padding: int = 0

    kind = "conv"

    @property
    def out_channels(self) -> int:
        return self.out_features

    @property
    def positions(self) -> int:
        """Output pixels per image: the dense layer over a window runs once for each."""
        return self.out_height * self.out_width

    @property
    def out_height(self) -> int:
        return self.in_height + 2 * self.padding - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.in_width + 2 * self.padding - self.kernel + 1

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.out_height, self.out_width)

    def token(self) -> str:
        same = (self.kernel - 1) // 2
        pad = f"p{self.padding}" if self.padding != same else ""
        return f"{self.out_channels}C{self.kernel}{pad}"

    def kernel_weights(self) -> np.ndarray:
        """``int8[out, kernel, kernel, in_channels]``: the weights by kernel position."""
        shape = (self.out_channels, self.kernel, self.kernel, self.in_channels)
        return self.weights.reshape(shape)


@dataclass(frozen=True, eq=False)
class MaxPoolLayer:
    """``size x size`` max pooling with stride ``size`` on ``bits``-bit unsigned activations; a
    last row or column that does not fill a window is dropped."""

    channels: int
    in_height: int
    in_width: int
    size: int
    bits: int

    kind = "maxpool"

    @property
    def input_bits(self) -> int:
        return self.bits

    @property
    def output_bits(self) -> int:
        return self.bits

    @property
    def out_height(self) -> int:
        return self.in_height // self.size

    @property
    def out_width(self) -> int:
        return self.in_width // self.size

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.channels, self.out_height, self.out_width)

    def token(self) -> str:
        return f"MP{self.size}"


Layer = IntegerLayer | MaxPoolLayer  # a ConvLayer is an IntegerLayer


@dataclass(frozen=True, eq=False)
class IntegerModel:
    """A BinaryConnect network in integers: unsigned pixels in, signed class scores out.

    ``input_shape`` is ``(input_size,)`` for a flat input (the default) or ``(C, H, W)`` for
    images, which arrive flattened row by row with their channels innermost.
    """

    input_size: int
    input_bits: int
    input_scale: float
    layers: tuple[Layer, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the whole file; empty for a model not read from or written to bytes
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.input_shape:
            object.__setattr__(self, "input_shape", (self.input_size,))
        if math.prod(self.input_shape) != self.input_size:
            raise BchwError(
                f"input shape {self.input_shape} does not hold {self.input_size} values"
            )

    @property
    def num_classes(self) -> int:
        return self.layers[-1].output_shape[0]

    @property
    def is_mlp(self) -> bool:
        """Dense layers on a flat input: what version 1 of the format and the MLP hardware hold."""
        return len(self.input_shape) == 1 and all(layer.kind == "dense" for layer in self.layers)

    @property
    def sizes(self) -> list[int]:
        """An MLP's layer sizes, input first."""
        if not self.is_mlp:
            raise BchwError(f"the model {self.arch()} is not an MLP")
        return [self.input_size] + [layer.output_shape[0] for layer in self.layers]

    def arch(self) -> str:
        """The architecture in ``--arch`` notation (``784-1024-10``, ``1x28x28-32C3-...``)."""
        head = "x".join(map(str, self.input_shape))
        return "-".join([head] + [layer.token() for layer in self.layers])

    def weighted_layers(self) -> list[IntegerLayer]:
        """The dense and convolution layers, in order (pooling has no weights)."""
        return [layer for layer in self.layers if isinstance(layer, IntegerLayer)]


def require_mlp(model: IntegerModel, what: str) -> None:
    """Refuse, in one line, a convolutional model where only MLPs are handled yet."""
    if not model.is_mlp:
        raise BchwError(
            f"{what} handles MLP models only so far; {model.arch()} has convolution or pooling "
            "layers (bchw eval and bchw random take them)"
        )


# ----------------------------------------------------------------------------------------------
# Writing


def _layer_header(layer: IntegerLayer, arrays: dict[str, dict], version: int) -> dict[str, Any]:
    header: dict[str, Any] = {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "input_bits": layer.input_bits,
        "input_signed": False,
        "acc_bits": layer.acc_bits,
        "scale_terms": layer.scale_terms,
        "requant_shift": layer.requant_shift,
        "activation": layer.activation,
        "output_bits": layer.output_bits,
        "output_signed": layer.output_signed,
        "output_frac_bits": layer.output_frac_bits,
        "arrays": arrays,
    }
    if version >= 2:
        header["kind"] = layer.kind
    if isinstance(layer, ConvLayer):
        del header["in_features"], header["out_features"]
        header.update(
            in_channels=layer.in_channels,
            in_height=layer.in_height,
            in_width=layer.in_width,
            kernel=layer.kernel,
            padding=layer.padding,
            out_channels=layer.out_channels,
            out_height=layer.out_height,
            out_width=layer.out_width,
        )
    return header


def _pool_header(layer: MaxPoolLayer) -> dict[str, Any]:
    return {
        "kind": "maxpool",
        "channels": layer.channels,
        "in_height": layer.in_height,
        "in_width": layer.in_width,
        "size": layer.size,
        "out_height": layer.out_height,
        "out_width": layer.out_width,
        "bits": layer.bits,
    }


def to_bytes(model: IntegerModel) -> bytes:
    """Serialize ``model``; the bytes are read back through the validator before they are
    returned, so a malformed model is never written. An MLP is written as version 1 (its bytes
    as before version 2 existed), any other model as version 2."""
    version = 1 if model.is_mlp else 2
    payload = bytearray()
    layer_headers = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, MaxPoolLayer):
            layer_headers.append(_pool_header(layer))
            continue
        if not np.isin(layer.weights, (-1, 1)).all():
            raise BchwError(f"layer {index}: weights must be +1 or -1")
        arrays = {}
        values = {
            "weights": layer.packed_weights(),
            "scale_sign": layer.scale_sign,
            "scale_shift": layer.scale_shift,
            "offset": layer.offset,
        }
        for name, dtype in ARRAY_DTYPES.items():
            data = np.ascontiguousarray(values[name], dtype=np.dtype(dtype)).tobytes()
            arrays[name] = {
                "dtype": dtype,
                "shape": list(values[name].shape),
                "offset": len(payload),
                "nbytes": len(data),
            }
            payload += data
        layer_headers.append(_layer_header(layer, arrays, version))
    model_input: dict[str, Any] = {
        "bits": model.input_bits,
        "signed": False,
        "scale": float(model.input_scale),
    }
    if version == 1:
        model_input["size"] = model.input_size
    else:
        model_input["shape"] = list(model.input_shape)
    header = {
        "format": FORMAT_NAME,
        "version": version,
        "input": model_input,
        "classes": model.num_classes,
        "layers": layer_headers,
        "payload_bytes": len(payload),
        "provenance": model.provenance,
    }
    text = json.dumps(header, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")
    body = MAGIC + struct.pack("<I", len(text)) + text + bytes(payload)
    data = body + hashlib.sha256(body).digest()
    from_bytes(data)
    return data


def save(model: IntegerModel, path: str | os.PathLike[str]) -> str:
    """Write ``model`` atomically; return the file's SHA-256 (hex)."""
    data = to_bytes(model)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Reading and validation


class _Invalid(Exception):
    """A validation failure; the loader prefixes the file name."""


def _reject_constant(name: str) -> float:
    raise _Invalid(f"header holds the non-finite number {name}")


HEADER_KEYS = {"format", "version", "input", "classes", "layers", "payload_bytes", "provenance"}
INPUT_KEYS = {1: {"size", "bits", "signed", "scale"}, 2: {"shape", "bits", "signed", "scale"}}
LAYER_KEYS = {
    "in_features", "out_features", "input_bits", "input_signed", "acc_bits", "scale_terms",
    "requant_shift", "activation", "output_bits", "output_signed", "output_frac_bits", "arrays",
}  # fmt: skip
CONV_GEOMETRY_KEYS = {
    "in_channels", "in_height", "in_width", "kernel", "padding", "out_channels", "out_height",
    "out_width",
}  # fmt: skip
CONV_KEYS = (LAYER_KEYS - {"in_features", "out_features"}) | CONV_GEOMETRY_KEYS | {"kind"}
DENSE_KEYS = LAYER_KEYS | {"kind"}
POOL_KEYS = {"kind", "channels", "in_height", "in_width", "size", "out_height", "out_width", "bits"}
ARRAY_KEYS = {"dtype", "shape", "offset", "nbytes"}


def _check_keys(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _Invalid(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise _Invalid(f"header repeats the key(s) {', '.join(map(repr, duplicated))}")
    return dict(pairs)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
               list: "an array", dict: "an object"}  # fmt: skip


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise _Invalid(f"{where}: field '{key}' is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a JSON true must not pass for a width.
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise _Invalid(f"{where}: field '{key}' must be {_TYPE_NAMES[kinds[0]]}, found {value!r}")
    return value


def _get_int(obj: dict, key: str, lo: int, hi: int, where: str) -> int:
    value = _get(obj, key, int, where)
    if not lo <= value <= hi:
        raise _Invalid(f"{where}: {key} = {value} is outside {lo}..{hi}")
    return value


def _check_finite_tree(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(f"{where}: non-finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_tree(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite_tree(v, f"{where}[{i}]")


def from_bytes(data: bytes) -> IntegerModel:
    """Parse and validate a model file's bytes; raise :class:`BchwError` naming the problem."""
    try:
        return _parse(data)
    except _Invalid as exc:
        raise BchwError(str(exc)) from None


def load(path: str | os.PathLike[str]) -> IntegerModel:
    """Read and validate an integer model file (see :func:`from_bytes`)."""
    path = Path(path)
    if path.is_dir():
        raise BchwError(f"integer model {path} is a folder, not a file")
    if not path.is_file():
        raise BchwError(f"integer model {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BchwError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return _parse(data)
    except _Invalid as exc:
        raise BchwError(f"{path}: {exc}") from None


def _parse(data: bytes) -> IntegerModel:
    if len(data) < PREFIX_BYTES:
        raise _Invalid(f"not a bchw integer model (only {len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise _Invalid("not a bchw integer model (bad magic bytes)")
    (header_len,) = struct.unpack_from("<I", data, len(MAGIC))
    if header_len > MAX_HEADER_BYTES:
        raise _Invalid(f"header length {header_len} is absurd (limit {MAX_HEADER_BYTES})")
    if len(data) < PREFIX_BYTES + header_len:
        raise _Invalid(
            f"truncated: header needs {header_len} bytes, file has {len(data) - PREFIX_BYTES}"
        )
    try:
        header = jsondoc.parse(
            data[PREFIX_BYTES : PREFIX_BYTES + header_len],
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except jsondoc.JsonProblem as exc:
        raise _Invalid(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _Invalid("header is not a JSON object")
    fmt = header.get("format")
    if fmt != FORMAT_NAME:
        raise _Invalid(f"format is {fmt!r}, expected {FORMAT_NAME!r}")
    version = header.get("version")
    if type(version) is not int or version not in FORMAT_VERSIONS:
        raise _Invalid(
            f"format version {version!r} is not supported (this bchw reads "
            f"{' and '.join(map(str, FORMAT_VERSIONS))})"
        )

    payload_bytes = _get_int(header, "payload_bytes", 0, 1 << 40, "header")
    expected_size = PREFIX_BYTES + header_len + payload_bytes + HASH_BYTES
    if len(data) < expected_size:
        raise _Invalid(f"truncated: expected {expected_size} bytes, file has {len(data)}")
    if len(data) > expected_size:
        raise _Invalid(f"{len(data) - expected_size} unexpected bytes after the end of the model")
    digest = hashlib.sha256(data[:-HASH_BYTES]).digest()
    if digest != data[-HASH_BYTES:]:
        raise _Invalid(
            "integrity check failed (SHA-256 trailer): the file is corrupted or was edited"
        )
    payload = memoryview(data)[
        PREFIX_BYTES + header_len : PREFIX_BYTES + header_len + payload_bytes
    ]

    _check_keys(header, HEADER_KEYS, "header")
    inp = _get(header, "input", dict, "header")
    _check_keys(inp, INPUT_KEYS[version], "input")
    if version == 1:
        input_size = _get_int(inp, "size", 1, MAX_FEATURES, "input")
        input_shape: tuple[int, ...] = (input_size,)
    else:
        input_shape = _input_shape(inp)
        input_size = math.prod(input_shape)
    input_bits = _get_int(inp, "bits", 1, MAX_INPUT_BITS, "input")
    if _get(inp, "signed", bool, "input"):
        raise _Invalid("input: signed inputs are not supported (pixels are unsigned)")
    input_scale = float(_get(inp, "scale", (float, int), "input"))
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise _Invalid(f"input: scale {input_scale} must be a positive finite number")
    classes = _get_int(header, "classes", 1, MAX_FEATURES, "header")
    provenance = _get(header, "provenance", dict, "header")
    _check_finite_tree(provenance, "provenance")

    layer_headers = _get(header, "layers", list, "header")
    if not layer_headers:
        raise _Invalid("header: the model has no layers")
    layers: list[Layer] = []
    cursor = 0
    shape, bits = input_shape, input_bits
    seen_dense = False
    for index, lh in enumerate(layer_headers):
        where = f"layer {index}"
        if not isinstance(lh, dict):
            raise _Invalid(f"{where}: not a JSON object")
        last = index == len(layer_headers) - 1
        if version == 1:
            _check_keys(lh, LAYER_KEYS, where)
            kind = "dense"
        else:
            kind = _get(lh, "kind", str, where)
            if kind not in LAYER_KINDS:
                raise _Invalid(f"{where}: kind {kind!r} is not one of {', '.join(LAYER_KINDS)}")
            _check_keys(
                lh, {"dense": DENSE_KEYS, "conv": CONV_KEYS, "maxpool": POOL_KEYS}[kind], where
            )
        if kind == "dense":
            seen_dense = True
        else:
            if last:
                raise _Invalid(f"{where}: the last layer must be dense (the class scores)")
            if seen_dense or len(shape) != 3:
                place = "after a dense layer" if seen_dense else "on a flat input"
                raise _Invalid(f"{where}: a {kind} layer cannot come {place}")
        if kind == "maxpool":
            layer: Layer = _parse_pool(lh, shape, bits, where)
        else:
            layer, cursor = _parse_weighted(
                lh, kind, shape, bits, index, last, payload, payload_bytes, cursor, where
            )
        layers.append(layer)
        shape, bits = layer.output_shape, layer.output_bits
    if cursor != payload_bytes:
        raise _Invalid(f"payload has {payload_bytes - cursor} bytes that no array describes")
    if shape[0] != classes:
        raise _Invalid(f"the last layer gives {shape[0]} outputs but classes = {classes}")
    model = IntegerModel(
        input_size=input_size,
        input_bits=input_bits,
        input_scale=input_scale,
        layers=tuple(layers),
        provenance=provenance,
        sha256=hashlib.sha256(data).hexdigest(),
        input_shape=input_shape,
    )
    return model


def _input_shape(inp: dict) -> tuple[int, ...]:
    """Version 2's input: an image (a flat input is version 1's)."""
    shape = _get(inp, "shape", list, "input")
    ok = len(shape) == 3 and all(type(d) is int for d in shape)
    if not ok or not (1 <= shape[0] <= MAX_FEATURES and all(1 <= d <= MAX_SIDE for d in shape[1:])):
        raise _Invalid(
            f"input: shape {str(shape)[:80]} must be [channels, height, width] (channels "
            f"1..{MAX_FEATURES}, sides 1..{MAX_SIDE})"
        )
    return tuple(shape)


def _expect(lh: dict, key: str, value: int, why: str, where: str) -> None:
    found = _get(lh, key, int, where)
    if found != value:
        raise _Invalid(f"{where}: {key} = {found} but {why} gives {value}")


def _parse_pool(lh: dict, shape: tuple[int, ...], bits: int, where: str) -> MaxPoolLayer:
    c, h, w = shape
    _expect(lh, "channels", c, "the previous stage", where)
    _expect(lh, "in_height", h, "the previous stage", where)
    _expect(lh, "in_width", w, "the previous stage", where)
    _expect(lh, "bits", bits, "the previous stage", where)
    size = _get_int(lh, "size", 2, min(h, w), where)
    layer = MaxPoolLayer(channels=c, in_height=h, in_width=w, size=size, bits=bits)
    _expect(lh, "out_height", layer.out_height, "in_height // size", where)
    _expect(lh, "out_width", layer.out_width, "in_width // size", where)
    return layer


def _parse_weighted(
    lh: dict,
    kind: str,
    shape: tuple[int, ...],
    prev_bits: int,
    index: int,
    last: bool,
    payload: memoryview,
    payload_bytes: int,
    cursor: int,
    where: str,
) -> tuple[IntegerLayer, int]:
    """A dense or convolution layer, its arrays read from ``payload`` at ``cursor``."""
    geometry: dict[str, int] = {}
    if kind == "conv":
        c, h, w = shape
        _expect(lh, "in_channels", c, "the previous stage", where)
        _expect(lh, "in_height", h, "the previous stage", where)
        _expect(lh, "in_width", w, "the previous stage", where)
        kernel = _get_int(lh, "kernel", 1, MAX_KERNEL, where)
        if kernel % 2 == 0:
            raise _Invalid(f"{where}: kernel = {kernel} must be odd")
        padding = _get_int(lh, "padding", 0, (kernel - 1) // 2, where)
        if min(h, w) + 2 * padding - kernel + 1 < 1:
            raise _Invalid(f"{where}: a {kernel}x{kernel} kernel does not fit a {h}x{w} input")
        n_out = _get_int(lh, "out_channels", 1, MAX_FEATURES, where)
        _expect(
            lh,
            "out_height",
            h + 2 * padding - kernel + 1,
            "in_height + 2 padding - kernel + 1",
            where,
        )
        _expect(
            lh,
            "out_width",
            w + 2 * padding - kernel + 1,
            "in_width + 2 padding - kernel + 1",
            where,
        )
        n_in = c * kernel * kernel
        if n_in > MAX_FEATURES:
            raise _Invalid(f"{where}: a window of {n_in} inputs exceeds {MAX_FEATURES}")
        geometry = dict(in_channels=c, in_height=h, in_width=w, kernel=kernel, padding=padding)
    else:
        n_in = _get_int(lh, "in_features", 1, MAX_FEATURES, where)
        n_out = _get_int(lh, "out_features", 1, MAX_FEATURES, where)
        if n_in != math.prod(shape):
            raise _Invalid(
                f"{where}: in_features = {n_in} but the previous stage gives {math.prod(shape)}"
            )
    in_bits = _get_int(
        lh, "input_bits", 1, MAX_INPUT_BITS if index == 0 else MAX_HIDDEN_BITS, where
    )
    if in_bits != prev_bits:
        raise _Invalid(f"{where}: input_bits = {in_bits} but the previous stage gives {prev_bits}")
    if _get(lh, "input_signed", bool, where):
        raise _Invalid(f"{where}: input_signed must be false (inputs are pixels or ReLU outputs)")
    activation = _get(lh, "activation", str, where)
    want_activation = "none" if last else "relu"
    if activation != want_activation:
        raise _Invalid(f"{where}: activation {activation!r}, expected {want_activation!r}")
    out_signed = _get(lh, "output_signed", bool, where)
    if out_signed != last:
        raise _Invalid(f"{where}: output_signed must be {str(last).lower()}")
    out_bits = _get_int(
        lh, "output_bits", 2 if last else 1, MAX_OUTPUT_BITS if last else MAX_HIDDEN_BITS, where
    )
    frac = _get_int(lh, "output_frac_bits", -64, 64, where)
    terms = _get_int(lh, "scale_terms", 1, MAX_SCALE_TERMS, where)
    shift = _get_int(lh, "requant_shift", 0, MAX_SHIFT, where)
    acc_bits = _get_int(lh, "acc_bits", 1, 64, where)

    descs = _get(lh, "arrays", dict, where)
    if set(descs) != set(ARRAY_DTYPES):
        raise _Invalid(
            f"{where}: arrays must be exactly {sorted(ARRAY_DTYPES)}, found {sorted(descs)}"
        )
    shapes = {
        "weights": [n_out, (n_in + 7) // 8],
        "scale_sign": [n_out, terms],
        "scale_shift": [n_out, terms],
        "offset": [n_out],
    }
    arrays = {}
    for name, dtype in ARRAY_DTYPES.items():
        awhere = f"{where} array '{name}'"
        desc = descs[name]
        if not isinstance(desc, dict):
            raise _Invalid(f"{awhere}: not a JSON object")
        _check_keys(desc, ARRAY_KEYS, awhere)
        if _get(desc, "dtype", str, awhere) != dtype:
            raise _Invalid(f"{awhere}: dtype {desc['dtype']!r}, expected {dtype!r}")
        array_shape = _get(desc, "shape", list, awhere)
        if any(type(d) is not int for d in array_shape) or array_shape != shapes[name]:
            raise _Invalid(f"{awhere}: shape {array_shape}, expected {shapes[name]}")
        nbytes = int(np.prod(array_shape)) * np.dtype(dtype).itemsize
        if _get(desc, "nbytes", int, awhere) != nbytes:
            raise _Invalid(f"{awhere}: nbytes {desc['nbytes']}, expected {nbytes}")
        if _get(desc, "offset", int, awhere) != cursor:
            found = desc["offset"]
            raise _Invalid(f"{awhere}: offset {found}, expected {cursor} (contiguous)")
        if cursor + nbytes > payload_bytes:
            raise _Invalid(f"{awhere}: runs past the end of the payload")
        arrays[name] = np.frombuffer(
            payload, dtype=np.dtype(dtype), count=int(np.prod(array_shape)), offset=cursor
        ).reshape(array_shape)
        cursor += nbytes

    packed = arrays["weights"]
    bits = np.unpackbits(packed, axis=1, bitorder="little")
    if bits[:, n_in:].any():
        raise _Invalid(f"{where}: padding bits after the last input of a weight row must be 0")
    weights = np.where(bits[:, :n_in] == 1, 1, -1).astype(np.int8)
    sign = arrays["scale_sign"].astype(np.int8)
    shift_terms = arrays["scale_shift"].astype(np.int64)
    if not np.isin(sign, (-1, 0, 1)).all():
        raise _Invalid(f"{where}: scale_sign values must be -1, 0 or +1")
    if (shift_terms > MAX_SHIFT).any():
        raise _Invalid(f"{where}: scale_shift exceeds {MAX_SHIFT}")
    if (shift_terms[sign == 0] != 0).any():
        raise _Invalid(f"{where}: an unused scale term (sign 0) must have shift 0")
    cls = ConvLayer if kind == "conv" else IntegerLayer
    layer = cls(
        weights=weights,
        scale_sign=sign,
        scale_shift=shift_terms,
        offset=arrays["offset"].astype(np.int64),
        requant_shift=shift,
        input_bits=in_bits,
        output_bits=out_bits,
        activation=activation,
        output_frac_bits=frac,
        **geometry,
    )
    if acc_bits != layer.acc_bits:
        raise _Invalid(
            f"{where}: acc_bits = {acc_bits}, but {n_in} inputs of {in_bits} bits need "
            f"exactly {layer.acc_bits}"
        )
    if layer.partial_sum_bound() >= PARTIAL_SUM_LIMIT:
        raise _Invalid(
            f"{where}: requantization sums can reach {layer.partial_sum_bound()}, "
            "not below 2^62; the shifts or offsets are absurd"
        )
    return layer, cursor
