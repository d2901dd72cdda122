"""Bit-exact numpy reference of the integer model (semantics in ``docs/integer-model.md``).

The accumulation ``acc = W x`` runs as a BLAS matrix product in float32 (or float64): with
weights of +-1 and integer inputs, every partial sum is an integer no larger in magnitude than
``in_features * input_max``; below 2^24 (2^53 for float64) each such integer is representable,
so every addition is exact whatever order the BLAS library chooses. A convolution is the same
product on every window (im2col). The requantization runs in float64 where every
intermediate value is an integer below 2^53 (so exact), else in int64, where the file
validator has bounded every intermediate value below 2^62.

Activations between spatial layers are ``[N, H, W, C]`` arrays: flattened, that is the model's
order (row by row, channels innermost).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bchw.core.intmodel import ConvLayer, IntegerLayer, IntegerModel, MaxPoolLayer, output_range
from bchw.core.machine import physical_memory
from bchw.errors import BchwError

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
CHUNK = 4096
CHUNK_BYTES = 1 << 27  # a CNN's widest step per chunk of images (128 MiB)

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


def convolve(layer: ConvLayer, x: np.ndarray) -> np.ndarray:
    """``acc[n, y, x, j]`` of a convolution on ``x[n, y, x, c]``, exactly, as int64: every
    window (zero padded, kernel row, kernel column, channel) times the weight rows."""
    return _convolve_float(layer, x).astype(np.int64)


def _convolve_float(layer: ConvLayer, x: np.ndarray) -> np.ndarray:
    """:func:`convolve` in the float type of the layer's matrix product (exact integers)."""
    wt = _transposed_weights(layer)
    p, k = layer.padding, layer.kernel
    padded = np.pad(x.astype(wt.dtype, copy=False), ((0, 0), (p, p), (p, p), (0, 0)))
    views = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
    windows = views.transpose(0, 1, 2, 4, 5, 3).reshape(-1, layer.in_features)  # [N*Ho*Wo, kkC]
    acc = windows @ wt
    return acc.reshape(len(x), layer.out_height, layer.out_width, layer.out_channels)


def max_pool(layer: MaxPoolLayer, x: np.ndarray) -> np.ndarray:
    """The largest of each ``size x size`` block of ``x[n, y, x, c]`` (a partial block at the
    bottom or right is dropped)."""
    s, ho, wo = layer.size, layer.out_height, layer.out_width
    out = x[:, 0 : ho * s : s, 0 : wo * s : s, :].copy()
    for dy in range(s):
        for dx in range(s):
            if dy or dx:  # elementwise maxima of strided views: faster than a reduction
                np.maximum(out, x[:, dy : ho * s : s, dx : wo * s : s, :], out=out)
    return out


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


def layer_forward(layer, x: np.ndarray) -> tuple[np.ndarray, LayerSaturation]:
    """One layer: accumulate (or convolve), requantize, saturate; or pool. ``x`` is
    ``[N, features]`` before a dense layer, ``[N, H, W, C]`` before a spatial one."""
    if isinstance(layer, MaxPoolLayer):
        pooled = max_pool(layer, x)
        return pooled, LayerSaturation(0, 0, int(pooled.size))
    if isinstance(layer, ConvLayer):
        return saturate(layer, requantize(layer, convolve(layer, x)))
    if x.ndim > 2:
        x = x.reshape(len(x), -1)  # H x W x C order: the model's flattening
    return saturate(layer, requantize(layer, accumulate(layer, x)))


@dataclass(frozen=True)
class _RequantConstants:
    """A layer's requantization constants for the float path, computed once per layer (the
    exact Python-integer arithmetic behind them is slow to repeat for every chunk)."""

    exact: bool  # every intermediate value an integer below 2^53: float64 computes it exactly
    gain: np.ndarray  # float64 [out]: sum_k s_k 2^h_k
    base: np.ndarray  # float64 [out]: offset + rounding
    signs: np.ndarray  # float64 [out]: -1 where the gain is negative, else +1
    limits: np.ndarray  # float64 [out]: v > max exactly where acc * sign >= limit


_constant_cache: weakref.WeakKeyDictionary[IntegerLayer, _RequantConstants] = (
    weakref.WeakKeyDictionary()
)


def _constants(layer: IntegerLayer) -> _RequantConstants:
    cached = _constant_cache.get(layer)
    if cached is None:
        gains = layer.gains()
        bases = (layer.offset + layer.rounding).tolist()
        hi = output_range(layer.output_bits, layer.output_signed)[1]
        bound = layer.acc_bound
        limits = []
        for g, base in zip(gains, bases, strict=True):
            c = ((hi + 1) << layer.requant_shift) - base  # v > hi  <=>  acc * g >= c
            if g > 0:
                limit = -(-c // g)  # acc >= ceil(c / g)
            elif g < 0:
                limit = -(c // g)  # acc <= floor(c / g)  <=>  -acc >= -floor(c / g)
            else:
                limit = -bound if c <= 0 else bound + 1  # always or never
            limits.append(min(max(limit, -bound - 1), bound + 1))
        cached = _RequantConstants(
            exact=layer.partial_sum_bound() < FLOAT64_EXACT,
            gain=np.array([float(g) for g in gains]),
            base=np.array([float(b) for b in bases]),
            signs=np.array([-1.0 if g < 0 else 1.0 for g in gains]),
            limits=np.array([float(v) for v in limits]),
        )
        _constant_cache[layer] = cached
    return cached


def _forward_float(layer, x: np.ndarray) -> tuple[np.ndarray, LayerSaturation]:
    """:func:`layer_forward` on activations held as floats (exact integers), the fast path of
    :func:`run`: one conversion per layer instead of one per step."""
    if isinstance(layer, MaxPoolLayer):
        pooled = max_pool(layer, x)
        return pooled, LayerSaturation(0, 0, int(pooled.size))
    if isinstance(layer, ConvLayer):
        acc = _convolve_float(layer, x)
    else:
        wt = _transposed_weights(layer)
        acc = x.reshape(len(x), -1).astype(wt.dtype, copy=False) @ wt
    return _requantize_float(layer, acc)


def _requantize_float(layer: IntegerLayer, acc: np.ndarray) -> tuple[np.ndarray, LayerSaturation]:
    """Requantize and saturate accumulators held as floats; activations as float32 (hidden
    layers, at most 16 bits: exact) or float64 (the scores)."""
    constants = _constants(layer)
    if not constants.exact:  # huge shifts: the int64 path
        y, counts = saturate(layer, requantize(layer, acc.astype(np.int64)))
        return y.astype(np.float64), counts
    # Every product, sum and result below is an integer under 2^53 (checked above): float64
    # holds each exactly, and scaling by 2^-R then flooring is the exact arithmetic shift.
    t = acc.astype(np.float64)
    t *= constants.gain
    t += constants.base
    t *= 2.0**-layer.requant_shift
    np.floor(t, out=t)
    lo, hi = output_range(layer.output_bits, layer.output_signed)
    counts = LayerSaturation(
        high=int(np.count_nonzero(t > hi)),
        low=int(np.count_nonzero(t < lo)) if layer.output_signed else 0,
        outputs=int(t.size),
    )
    np.clip(t, lo, hi, out=t)
    return (t if layer.output_signed else t.astype(np.float32)), counts


def _conv_pool_float(
    conv: ConvLayer, pool: MaxPoolLayer, x: np.ndarray
) -> tuple[np.ndarray, LayerSaturation]:
    """A convolution and the max pooling after it, pooling the accumulators first.

    Exact: requantization and saturation are monotone in ``acc`` per channel, non-decreasing
    where the gain ``sum_k s_k 2^h_k`` is at least 0 and non-increasing where it is negative,
    so the largest output of a block comes from its largest ``acc * sign(gain)``. The
    saturation count is still over every convolution output: ``v > max`` exactly where
    ``acc * sign(gain)`` reaches a per-channel integer threshold. A quarter of the
    requantization work for 2x2 pooling."""
    constants = _constants(conv)
    acc = _convolve_float(conv, x)
    acc *= constants.signs.astype(acc.dtype)
    high = int(np.count_nonzero(acc >= constants.limits.astype(acc.dtype)))
    pooled = max_pool(pool, acc)
    pooled *= constants.signs.astype(acc.dtype)
    y, _ = _requantize_float(conv, pooled)
    return y, LayerSaturation(high, 0, int(acc.size))


def image_bytes(model: IntegerModel) -> int:
    """Bytes one image takes at the widest step of :func:`run`: a convolution's float32
    windows and accumulators and the float64 requantization beside them, or a dense layer's."""
    largest = 8 * model.input_size
    for layer in model.layers:
        if isinstance(layer, ConvLayer):
            positions = layer.out_height * layer.out_width
            need = positions * (4 * layer.in_features + 20 * layer.out_channels)
        elif isinstance(layer, MaxPoolLayer):
            need = 8 * layer.channels * layer.in_height * layer.in_width
        else:
            need = 8 * layer.in_features + 20 * layer.out_features
        largest = max(largest, need)
    return largest


def chunk_images(model: IntegerModel) -> int:
    """Images per chunk: the widest step of a chunk stays near CHUNK_BYTES (the whole chunk of
    an MLP's images)."""
    if model.is_mlp:
        return CHUNK
    per_image = image_bytes(model)
    memory = physical_memory()
    if memory and per_image > memory // 2:
        raise BchwError(
            f"one image of the model {model.arch()} takes {per_image / 2**30:,.1f} GiB in the "
            f"reference, more than half this machine's {memory / 2**30:,.1f} GiB"
        )
    return max(1, min(CHUNK, CHUNK_BYTES // per_image))


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


def run(
    model: IntegerModel, images: np.ndarray, progress: Callable[[int, int], None] | None = None
) -> ReferenceResult:
    """Run ``images`` (``[N, input_size]`` unsigned integers, an image flattened row by row with
    its channels innermost) through the integer model. ``progress(done, total)`` is called
    after each chunk of images (a large CNN takes minutes on a CPU)."""
    x_all = check_images(model, images)
    high = [0] * len(model.layers)
    low = [0] * len(model.layers)
    outputs = [0] * len(model.layers)
    scores = []
    chunk = chunk_images(model)
    for start in range(0, len(x_all), chunk):
        x = x_all[start : start + chunk]
        if len(model.input_shape) == 3:
            c, h, w = model.input_shape
            x = x.reshape(len(x), h, w, c)
        index = 0
        while index < len(model.layers):
            layer = model.layers[index]
            after = model.layers[index + 1] if index + 1 < len(model.layers) else None
            pooled = (
                isinstance(layer, ConvLayer)
                and isinstance(after, MaxPoolLayer)
                and _constants(layer).exact
            )
            if pooled:
                x, counts = _conv_pool_float(layer, after, x)
                outputs[index + 1] += int(x.size)
            else:
                x, counts = _forward_float(layer, x)
            high[index] += counts.high
            low[index] += counts.low
            outputs[index] += counts.outputs
            index += 2 if pooled else 1
        scores.append(x.astype(np.int64))
        if progress is not None:
            progress(min(start + chunk, len(x_all)), len(x_all))
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
