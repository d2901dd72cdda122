"""The multiply-accumulate (MAC) baseline's dot-product unit: k-bit weights and multipliers.

The baseline (its integer model: :mod:`rtl_gen.baseline`) is the conventional design bchw is
measured against, written as a competent engineer would: the layer engines, streams, buffers
and requantization of the binary design, but each synapse multiplies an activation by a signed
k-bit weight (``x * w``: synthesis may map it to a DSP block), the products are registered (as
DSP blocks are), then summed by a pipelined adder tree.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, ShapeCastable, signed
from amaranth.lib import data, wiring

from rtl_gen.adder_tree import (
    Term,
    delay_tag,
    input_stage,
    reduce_terms,
    register_term,
    tree_signature,
)
from rtl_gen.pipeline import range_shape, stall_pipeline
from rtl_gen.plan import LayerPlan, pack_weight_words
from rtl_gen.ranges import product_range, registers_after, signed_max, tree_levels


class MultiplyTree(wiring.Component):
    """``n_lanes`` dot products over one shared vector: products, registered, then an adder tree.

    Lane ``j`` computes ``sum_i w[j][i] * x[i]`` with constant weights (``weights`` given) or
    signed ``weight_bits``-bit weights arriving with each beat. Every node is sized from its
    exact range. Latency: one cycle for the input registers (``register_inputs``: a folded
    layer's, whose weights come from block RAM), one for the product registers, plus a register
    after every ``pipeline_every`` adder levels.

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
        register_inputs: bool = False,
    ) -> None:
        if input_range[0] < 0:
            raise ValueError("multiply tree inputs must be non-negative")
        self.n_lanes, self.n_inputs = n_lanes, n_inputs
        self.input_range = input_range
        self.weight_bits = weight_bits
        self.weights = None if weights is None else np.asarray(weights, np.int64)
        x_max = input_range[1]
        if self.weights is None:
            bound = signed_max(weight_bits) * x_max
            leaf = [[(-bound, bound)] * n_inputs for _ in range(n_lanes)]
        else:
            leaf = [
                [product_range(w, x_max) for w in row]
                for row in self.weights.reshape(n_lanes, n_inputs)
            ]
        self.leaf_ranges = leaf
        self.lane_ranges = [(sum(lo for lo, _ in row), sum(hi for _, hi in row)) for row in leaf]
        self.sum_shape = range_shape(
            min(lo for lo, _ in self.lane_ranges), max(hi for _, hi in self.lane_ranges)
        )
        self.register_levels = registers_after(tree_levels(n_inputs), pipeline_every)
        self.register_inputs = register_inputs
        self.latency = int(register_inputs) + 1 + len(self.register_levels)
        self.tag_shape = tag_shape
        self.input_shape = range_shape(*input_range)
        self.in_fields = {"x": data.ArrayLayout(self.input_shape, n_inputs)}
        if self.weights is None:
            self.in_fields["w"] = data.ArrayLayout(
                data.ArrayLayout(signed(weight_bits), n_inputs), n_lanes
            )
        super().__init__(tree_signature(self.in_fields, self.sum_shape, n_lanes, tag_shape))

    def elaborate(self, platform) -> Module:
        m = Module()
        advance = stall_pipeline(m, self.i, self.o, self.latency, "mac")
        inputs = input_stage(m, self.i.payload, self.in_fields, self.register_inputs, advance)
        x = inputs["x"]
        for lane in range(self.n_lanes):
            terms = []
            for k in range(self.n_inputs):
                lo, hi = self.leaf_ranges[lane][k]
                if self.weights is None:
                    product = x[k] * inputs["w"][lane][k]
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


class MacDotProduct:
    """The MAC baseline's dot-product unit for :class:`~rtl_gen.layer_engine.LayerEngine`.

    Folded: the weight memory holds ``nf * sf`` words of ``pe * simd * weight_bits`` bits (word
    ``f * sf + s``, field ``[p][l]`` = weight of neuron ``f * pe + p`` on input ``s * simd + l``),
    and each PE adds its lane's dot product to its accumulator, which holds it exactly.
    """

    def __init__(self, plan: LayerPlan) -> None:
        self.plan = plan
        self.weight_bits = plan.unit.weight_bits

    def unrolled_tree(self) -> MultiplyTree:
        layer = self.plan.layer
        return MultiplyTree(
            layer.out_features,
            layer.in_features,
            (0, layer.input_max),
            self.weight_bits,
            weights=layer.weights,
            pipeline_every=self.plan.pipeline_every,
        )

    def folded_tree(self, tag_layout) -> MultiplyTree:
        plan = self.plan
        return MultiplyTree(
            plan.pe,
            plan.simd,
            (0, plan.layer.input_max),
            self.weight_bits,
            pipeline_every=plan.pipeline_every,
            tag_shape=tag_layout,
            register_inputs=plan.register_tree_inputs,
        )

    def weight_words(self) -> list[int]:
        return pack_weight_words(self.plan, self.plan.layer.weights, self.weight_bits)

    def connect_weights(self, m: Module, tree: MultiplyTree, word) -> None:
        m.d.comb += tree.i.payload.w.eq(word)

    def requant_offsets(self, tree: MultiplyTree) -> None:
        return None  # the accumulators hold the dot products themselves
