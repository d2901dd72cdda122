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
FORMAT_VERSION = 1
HASH_BYTES = 32
PREFIX_BYTES = len(MAGIC) + 4

# Limits that keep every intermediate value inside a signed 64-bit integer, so that the numpy
# reference (and any independent implementation in int64) computes it exactly.
MAX_FEATURES = 1 << 16
MAX_INPUT_BITS = 16
MAX_HIDDEN_BITS = 16
MAX_OUTPUT_BITS = 32
MAX_SCALE_TERMS = 8
MAX_SHIFT = 48
PARTIAL_SUM_LIMIT = 1 << 62
MAX_HEADER_BYTES = 1 << 20

ARRAY_DTYPES = {"weights": "u1", "scale_sign": "i1", "scale_shift": "u1", "offset": "<i8"}
ACTIVATIONS = ("relu", "none")


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


@dataclass(frozen=True, eq=False)
class IntegerModel:
    """A BinaryConnect MLP in integers: unsigned pixels in, signed class scores out."""

    input_size: int
    input_bits: int
    input_scale: float
    layers: tuple[IntegerLayer, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the whole file; empty for a model not read from or written to bytes

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    @property
    def sizes(self) -> list[int]:
        return [self.input_size] + [layer.out_features for layer in self.layers]

    def arch(self) -> str:
        return "-".join(map(str, self.sizes))


# ----------------------------------------------------------------------------------------------
# Writing


def _layer_header(layer: IntegerLayer, arrays: dict[str, dict]) -> dict[str, Any]:
    return {
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


def to_bytes(model: IntegerModel) -> bytes:
    """Serialize ``model``; the bytes are read back through the validator before they are
    returned, so a malformed model is never written."""
    for index, layer in enumerate(model.layers):
        if not np.isin(layer.weights, (-1, 1)).all():
            raise BchwError(f"layer {index}: weights must be +1 or -1")
    payload = bytearray()
    layer_headers = []
    for layer in model.layers:
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
        layer_headers.append(_layer_header(layer, arrays))
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "input": {
            "size": model.input_size,
            "bits": model.input_bits,
            "signed": False,
            "scale": float(model.input_scale),
        },
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
INPUT_KEYS = {"size", "bits", "signed", "scale"}
LAYER_KEYS = {
    "in_features", "out_features", "input_bits", "input_signed", "acc_bits", "scale_terms",
    "requant_shift", "activation", "output_bits", "output_signed", "output_frac_bits", "arrays",
}  # fmt: skip
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
    if type(version) is not int or version != FORMAT_VERSION:
        raise _Invalid(
            f"format version {version!r} is not supported (this bchw reads {FORMAT_VERSION})"
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
    _check_keys(inp, INPUT_KEYS, "input")
    input_size = _get_int(inp, "size", 1, MAX_FEATURES, "input")
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
    layers = []
    cursor = 0
    prev_features, prev_bits = input_size, input_bits
    for index, lh in enumerate(layer_headers):
        where = f"layer {index}"
        if not isinstance(lh, dict):
            raise _Invalid(f"{where}: not a JSON object")
        _check_keys(lh, LAYER_KEYS, where)
        last = index == len(layer_headers) - 1
        n_in = _get_int(lh, "in_features", 1, MAX_FEATURES, where)
        n_out = _get_int(lh, "out_features", 1, MAX_FEATURES, where)
        if n_in != prev_features:
            raise _Invalid(
                f"{where}: in_features = {n_in} but the previous stage gives {prev_features}"
            )
        in_bits = _get_int(
            lh, "input_bits", 1, MAX_INPUT_BITS if index == 0 else MAX_HIDDEN_BITS, where
        )
        if in_bits != prev_bits:
            raise _Invalid(
                f"{where}: input_bits = {in_bits} but the previous stage gives {prev_bits}"
            )
        if _get(lh, "input_signed", bool, where):
            raise _Invalid(
                f"{where}: input_signed must be false (inputs are pixels or ReLU outputs)"
            )
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
            shape = _get(desc, "shape", list, awhere)
            if any(type(d) is not int for d in shape) or shape != shapes[name]:
                raise _Invalid(f"{awhere}: shape {shape}, expected {shapes[name]}")
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if _get(desc, "nbytes", int, awhere) != nbytes:
                raise _Invalid(f"{awhere}: nbytes {desc['nbytes']}, expected {nbytes}")
            if _get(desc, "offset", int, awhere) != cursor:
                found = desc["offset"]
                raise _Invalid(f"{awhere}: offset {found}, expected {cursor} (contiguous)")
            if cursor + nbytes > payload_bytes:
                raise _Invalid(f"{awhere}: runs past the end of the payload")
            arrays[name] = np.frombuffer(
                payload, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=cursor
            ).reshape(shape)
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
        layer = IntegerLayer(
            weights=weights,
            scale_sign=sign,
            scale_shift=shift_terms,
            offset=arrays["offset"].astype(np.int64),
            requant_shift=shift,
            input_bits=in_bits,
            output_bits=out_bits,
            activation=activation,
            output_frac_bits=frac,
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
        layers.append(layer)
        prev_features, prev_bits = n_out, out_bits
    if cursor != payload_bytes:
        raise _Invalid(f"payload has {payload_bytes - cursor} bytes that no array describes")
    if prev_features != classes:
        raise _Invalid(f"the last layer gives {prev_features} outputs but classes = {classes}")
    return IntegerModel(
        input_size=input_size,
        input_bits=input_bits,
        input_scale=input_scale,
        layers=tuple(layers),
        provenance=provenance,
        sha256=hashlib.sha256(data).hexdigest(),
    )
