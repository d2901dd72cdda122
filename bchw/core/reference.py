"""Bit-exact numpy reference of the integer model (semantics in ``docs/integer-model.md``).

The accumulation ``acc = W x`` runs as a BLAS matrix product in float32 (or float64): with
weights of +-1 and integer inputs, every partial sum is an integer no larger in magnitude than
``in_features * input_max``; below 2^24 (2^53 for float64) each such integer is representable,
so every addition is exact whatever order the BLAS library chooses. The requantization runs
in int64, where the file validator has bounded every intermediate value below 2^62.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from bchw.core.intmodel import IntegerLayer, IntegerModel, output_range
from bchw.errors import BchwError

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
CHUNK = 4096

_weight_cache: weakref.WeakKeyDictionary[IntegerLayer, np.ndarray] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerSaturation:
    """How many outputs of a layer the saturation clipped (ReLU's clip at 0 is not counted)."""

    high: int
    low: int
    outputs: int

    @property
    def total(self) -> int:
        return self.high + self.low


@dataclass(frozen=True)
class ReferenceResult:
    """Integer scores ``int64[N, classes]``, predicted classes ``int64[N]``, per-layer counts."""

    scores: np.ndarray
    predicted: np.ndarray
    saturation: tuple[LayerSaturation, ...]


def _transposed_weights(layer: IntegerLayer) -> np.ndarray:
    """``W^T`` as floats wide enough for exact accumulation (cached per layer)."""
    cached = _weight_cache.get(layer)
    if cached is None:
        if layer.acc_bound < FLOAT32_EXACT:
            dtype = np.float32
        elif layer.acc_bound < FLOAT64_EXACT:
            dtype = np.float64
        else:  # unreachable within the file format's limits; kept as a guard
            raise BchwError(f"accumulator bound {layer.acc_bound} exceeds exact float range")
        cached = np.ascontiguousarray(layer.weights.T, dtype=dtype)
        _weight_cache[layer] = cached
    return cached


def accumulate(layer: IntegerLayer, x: np.ndarray) -> np.ndarray:
    """``acc[n, j] = sum_i w[j, i] * x[n, i]``, exactly, as int64."""
    wt = _transposed_weights(layer)
    return (x.astype(wt.dtype, copy=False) @ wt).astype(np.int64)


def requantize(layer: IntegerLayer, acc: np.ndarray) -> np.ndarray:
    """``floor((sum_k s_k * acc * 2^h_k + offset + 2^(R-1)) / 2^R)``, before saturation."""
    t = np.broadcast_to(layer.offset + layer.rounding, acc.shape).copy()
    for k in range(layer.scale_terms):
        sign = layer.scale_sign[:, k].astype(np.int64)
        if not sign.any():
            continue
        t += np.left_shift(acc, layer.scale_shift[:, k]) * sign
    return np.right_shift(t, layer.requant_shift)


def saturate(layer: IntegerLayer, v: np.ndarray) -> tuple[np.ndarray, LayerSaturation]:
    """Clip to the output range (ReLU for hidden layers is the clip at 0)."""
    lo, hi = output_range(layer.output_bits, layer.output_signed)
    counts = LayerSaturation(
        high=int(np.count_nonzero(v > hi)),
        low=int(np.count_nonzero(v < lo)) if layer.output_signed else 0,
        outputs=int(v.size),
    )
    return np.clip(v, lo, hi), counts


def layer_forward(layer: IntegerLayer, x: np.ndarray) -> tuple[np.ndarray, LayerSaturation]:
    """One layer: accumulate, requantize, saturate."""
    return saturate(layer, requantize(layer, accumulate(layer, x)))


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Index of the largest score; a tie goes to the lowest index (numpy's argmax rule)."""
    return np.argmax(scores, axis=1).astype(np.int64)


def check_images(model: IntegerModel, images: np.ndarray) -> np.ndarray:
    """Refuse inputs of the wrong shape, type or range; return them unchanged (no copy: the
    first layer converts them once, to the float type of its matrix product)."""
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != model.input_size:
        raise BchwError(
            f"images have shape {list(images.shape)}, the model takes [N, {model.input_size}]"
        )
    if not np.issubdtype(images.dtype, np.integer):
        raise BchwError(f"images must be integers, found {images.dtype}")
    top = (1 << model.input_bits) - 1
    if images.size and (images.min() < 0 or images.max() > top):
        raise BchwError(
            f"pixel values span {int(images.min())}..{int(images.max())}, the model's "
            f"{model.input_bits}-bit input takes 0..{top}"
        )
    return images


def run(model: IntegerModel, images: np.ndarray) -> ReferenceResult:
    """Run ``images`` (``[N, input_size]`` unsigned integers) through the integer model."""
    x_all = check_images(model, images)
    high = [0] * len(model.layers)
    low = [0] * len(model.layers)
    outputs = [0] * len(model.layers)
    scores = []
    for start in range(0, len(x_all), CHUNK):
        x = x_all[start : start + CHUNK]
        for index, layer in enumerate(model.layers):
            x, counts = layer_forward(layer, x)
            high[index] += counts.high
            low[index] += counts.low
            outputs[index] += counts.outputs
        scores.append(x)
    all_scores = (
        np.concatenate(scores) if scores else np.zeros((0, model.num_classes), dtype=np.int64)
    )
    return ReferenceResult(
        scores=all_scores,
        predicted=argmax_lowest(all_scores),
        saturation=tuple(
            LayerSaturation(h, lo, o) for h, lo, o in zip(high, low, outputs, strict=True)
        ),
    )
