"""The multiply-accumulate (MAC) baseline: the same network with k-bit weights and multipliers.

bchw's claim is that binary weights make the hardware cheaper than a conventional design. The
baseline is that conventional design, written as a competent engineer would: the same folding,
streams, buffers and requantization as the binary design, but each synapse multiplies an
activation by a signed k-bit weight (``x * w``: synthesis may map it to a DSP block), the
products are registered (as DSP blocks are), then summed by a pipelined adder tree.

The baseline's own integer model (:func:`mac_model`) keeps each binary weight's sign and gives
it a magnitude drawn from 1 .. 2^(k-1) - 1 (seeded by the model's hash), so weights use the full
k-bit range as trained k-bit weights do; the requantization is the binary layer's, shifted right
by k - 1 more bits (offsets scaled to match). :mod:`bchw.core.reference` runs it unchanged, so the
baseline is checked bit for bit like the binary design.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, ShapeCastable, signed
from amaranth.lib import data, wiring

from bchw.errors import BchwError
from bchw.core.intmodel import IntegerLayer, IntegerModel
from rtl_gen.adder_tree import (
    Term,
    delay_tag,
    reduce_terms,
    register_term,
    tree_levels,
    tree_signature,
)
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.pipeline import range_shape, registers_after, stall_pipeline

WEIGHT_BITS = (4, 8, 16)
DEFAULT_WEIGHT_BITS = 8


@dataclass(frozen=True, eq=False)
class MacLayer(IntegerLayer):
    """An :class:`IntegerLayer` whose weights are signed ``weight_bits``-bit integers."""

    weight_bits: int = DEFAULT_WEIGHT_BITS

    @property
    def weight_max(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def acc_bound(self) -> int:
        """|acc| never exceeds ``in_features * input_max * weight_max``."""
        return self.in_features * self.input_max * self.weight_max


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
        top = (1 << (weight_bits - 1)) - 1
        magnitude = rng.integers(1, top + 1, size=layer.weights.shape)
        fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(IntegerLayer)}
        fields.update(
            weights=(layer.weights.astype(np.int64) * magnitude).astype(np.int32),
            offset=layer.offset.astype(np.int64) << extra,
            requant_shift=layer.requant_shift + extra,
        )
        layers.append(MacLayer(**fields, weight_bits=weight_bits))
    return dataclasses.replace(model, layers=tuple(layers), sha256="")


class MultiplyTree(wiring.Component):
    """``n_lanes`` dot products over one shared vector: products, registered, then an adder tree.

    Lane ``j`` computes ``sum_i w[j][i] * x[i]`` with constant weights (``weights`` given) or
    signed ``weight_bits``-bit weights arriving with each beat. Every node is sized from its
    exact range. Latency: one cycle for the product registers, plus a register after every
    ``pipeline_every`` adder levels.

    Ports
    -----
    i : stream of ``{"x": [n_inputs], ("w": [n_lanes] of [n_inputs] signed), ("tag")}``.
    o : stream of ``{"sum": [n_lanes], ("tag")}``, ``latency`` cycles after ``i``.
    """

    def __init__(
        self,
        n_lanes: int,
        n_inputs: int,
        input_range: tuple[int, int],
        weight_bits: int,
        weights: np.ndarray | None = None,
        pipeline_every: int = 0,
        tag_shape: ShapeCastable | None = None,
    ) -> None:
        if input_range[0] < 0:
            raise ValueError("multiply tree inputs must be non-negative")
        self.n_lanes, self.n_inputs = n_lanes, n_inputs
        self.input_range = input_range
        self.weight_bits = weight_bits
        self.weights = None if weights is None else np.asarray(weights, np.int64)
        w_max = (1 << (weight_bits - 1)) - 1
        x_max = input_range[1]
        if self.weights is None:
            leaf = [[(-w_max * x_max, w_max * x_max)] * n_inputs for _ in range(n_lanes)]
        else:
            leaf = [
                [(min(0, int(w) * x_max), max(0, int(w) * x_max)) for w in row]
                for row in self.weights.reshape(n_lanes, n_inputs)
            ]
        self.leaf_ranges = leaf
        self.lane_ranges = [(sum(lo for lo, _ in row), sum(hi for _, hi in row)) for row in leaf]
        self.sum_shape = range_shape(
            min(lo for lo, _ in self.lane_ranges), max(hi for _, hi in self.lane_ranges)
        )
        self.register_levels = registers_after(tree_levels(n_inputs), pipeline_every)
        self.latency = 1 + len(self.register_levels)
        self.tag_shape = tag_shape
        self.input_shape = range_shape(*input_range)
        in_fields = {"x": data.ArrayLayout(self.input_shape, n_inputs)}
        if self.weights is None:
            in_fields["w"] = data.ArrayLayout(
                data.ArrayLayout(signed(weight_bits), n_inputs), n_lanes
            )
        super().__init__(tree_signature(in_fields, self.sum_shape, n_lanes, tag_shape))

    def elaborate(self, platform) -> Module:
        m = Module()
        advance = stall_pipeline(m, self.i, self.o, self.latency, "mac")
        x = self.i.payload.x
        for lane in range(self.n_lanes):
            terms = []
            for k in range(self.n_inputs):
                lo, hi = self.leaf_ranges[lane][k]
                if self.weights is None:
                    product = x[k] * self.i.payload.w[lane][k]
                else:
                    product = x[k] * int(self.weights.reshape(self.n_lanes, -1)[lane, k])
                terms.append(register_term(m, Term(product, 1, lo, hi), advance, f"p{lane}_{k}"))
            root = reduce_terms(m, terms, self.register_levels, advance, f"l{lane}")
            assert (root.lo, root.hi) == self.lane_ranges[lane]
            m.d.comb += self.o.payload.sum[lane].eq(root.value)
        if self.tag_shape is not None:
            tag = delay_tag(m, self.i.payload.tag, self.tag_shape, self.latency, advance)
            m.d.comb += self.o.payload.tag.eq(tag)
        return m


class MacLayerEngine(LayerEngine):
    """:class:`LayerEngine` for a :class:`MacLayer`: the same issue logic, buffers, accumulators
    and requantizer, with a :class:`MultiplyTree` in place of the binary adder tree.

    Folded: the weight memory holds ``nf * sf`` words of ``pe * simd * weight_bits`` bits (word
    ``f * sf + s``, field ``[p][l]`` = weight of neuron ``f * pe + p`` on input ``s * simd + l``),
    and each PE adds its lane's dot product to its accumulator.
    """

    layer: MacLayer

    def _unrolled_tree(self, x_max: int, pipeline_every: int) -> MultiplyTree:
        layer = self.layer
        return MultiplyTree(
            layer.out_features,
            layer.in_features,
            (0, x_max),
            layer.weight_bits,
            weights=layer.weights,
            pipeline_every=pipeline_every,
        )

    def _folded_tree(self, x_max: int, pipeline_every: int) -> MultiplyTree:
        return MultiplyTree(
            self.pe,
            self.simd,
            (0, x_max),
            self.layer.weight_bits,
            pipeline_every=pipeline_every,
            tag_shape=self.tag_layout,
        )

    @property
    def weight_word_bits(self) -> int:
        return self.pe * self.simd * self.layer.weight_bits

    def weight_words(self) -> list[int]:
        n_out, n_in, k = self.layer.out_features, self.layer.in_features, self.layer.weight_bits
        padded = np.zeros((self.nf * self.pe, self.sf * self.simd), dtype=np.int64)
        padded[:n_out, :n_in] = self.layer.weights
        fields = padded & ((1 << k) - 1)  # two's complement, k bits
        words = []
        for f in range(self.nf):
            for s in range(self.sf):
                block = fields[f * self.pe : (f + 1) * self.pe, s * self.simd : (s + 1) * self.simd]
                words.append(sum(int(v) << (k * n) for n, v in enumerate(block.reshape(-1)) if v))
        return words

    def _connect_weights(self, m: Module, tree: MultiplyTree, word) -> None:
        m.d.comb += tree.i.payload.w.eq(word)

    def _partial(self, tree: MultiplyTree, p: int):
        return tree.o.payload.sum[p]

    def _partial_range(self) -> tuple[int, int]:
        return self.tree.lane_ranges[0] if self.tree.lane_ranges else (0, 0)

    def _acc_range(self) -> tuple[int, int]:
        return -self.layer.acc_bound, self.layer.acc_bound

    def _requant_offsets(self) -> None:
        return None  # the accumulators hold the dot products themselves
