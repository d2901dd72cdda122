"""The multiply-accumulate (MAC) baseline's integer model: the same network with k-bit weights.

bchw's claim is that binary weights make the hardware cheaper than a conventional design. The
baseline is that conventional design (:mod:`rtl_gen.mac` builds its multipliers): the same
folding, streams, buffers and requantization as the binary design, each synapse multiplying an
activation by a signed k-bit weight.

The baseline's own integer model (:func:`mac_model`) keeps each binary weight's sign and gives
it a magnitude drawn from 1 .. 2^(k-1) - 1 (seeded by the model's hash), so weights use the full
k-bit range as trained k-bit weights do; the requantization is the binary layer's, shifted right
by k - 1 more bits (offsets scaled to match). :mod:`bchw.core.reference` runs it unchanged, so
the baseline is checked bit for bit like the binary design. Plain Python: the analytical model
counts its resources without Amaranth.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from bchw.core.intmodel import ConvLayer, IntegerLayer, IntegerModel, MaxPoolLayer
from bchw.errors import BchwError
from rtl_gen import DEFAULT_MAC_WEIGHT_BITS as DEFAULT_WEIGHT_BITS
from rtl_gen import MAC_WEIGHT_BITS as WEIGHT_BITS
from rtl_gen.ranges import signed_max


class _MacWeights:
    """Signed ``weight_bits``-bit weights: the largest magnitude and the accumulator's bound."""

    weight_bits: int
    in_features: int
    input_max: int

    @property
    def weight_max(self) -> int:
        return signed_max(self.weight_bits)

    @property
    def acc_bound(self) -> int:
        """|acc| never exceeds ``in_features * input_max * weight_max``."""
        return self.in_features * self.input_max * self.weight_max


@dataclass(frozen=True, eq=False)
class MacLayer(_MacWeights, IntegerLayer):
    """An :class:`IntegerLayer` whose weights are signed ``weight_bits``-bit integers."""

    weight_bits: int = DEFAULT_WEIGHT_BITS


@dataclass(frozen=True, eq=False)
class MacConvLayer(_MacWeights, ConvLayer):
    """A :class:`ConvLayer` whose weights are signed ``weight_bits``-bit integers."""

    weight_bits: int = DEFAULT_WEIGHT_BITS


def mac_model(model: IntegerModel, weight_bits: int = DEFAULT_WEIGHT_BITS) -> IntegerModel:
    """The MAC baseline of ``model``: same shapes and formats, ``weight_bits``-bit weights."""
    if weight_bits not in WEIGHT_BITS:
        raise BchwError(f"MAC weights must be one of {WEIGHT_BITS} bits, got {weight_bits}")
    seed = int.from_bytes(
        hashlib.sha256(model.sha256.encode() + model.arch().encode()).digest()[:8]
    )
    rng = np.random.default_rng(seed)
    extra = weight_bits - 1
    layers = []
    for layer in model.layers:
        if isinstance(layer, MaxPoolLayer):  # no weights: the same pooling
            layers.append(layer)
            continue
        magnitude = rng.integers(1, signed_max(weight_bits) + 1, size=layer.weights.shape)
        kind = MacConvLayer if isinstance(layer, ConvLayer) else MacLayer
        base = ConvLayer if isinstance(layer, ConvLayer) else IntegerLayer
        fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(base)}
        fields.update(
            weights=(layer.weights.astype(np.int64) * magnitude).astype(np.int32),
            offset=layer.offset.astype(np.int64) << extra,
            requant_shift=layer.requant_shift + extra,
        )
        layers.append(kind(**fields, weight_bits=weight_bits))
    return dataclasses.replace(model, layers=tuple(layers), sha256="")
