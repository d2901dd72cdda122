"""Adder/subtractor trees: sums of inputs with constant +1/-1 signs, no multiplier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, ShapeCastable, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.pipeline import range_shape, stall_pipeline
from rtl_gen.ranges import (
    flip_correction,
    flip_node_range,
    flipped_range,
    ones,
    pair_up,
    paired_excess,
    paired_lane_range,
    registers_after,
    relative_root_range,
    signed_node,
    sum_range,
    tree_levels,
)


@dataclass(frozen=True)
class Term:
    """A node of the tree: it contributes ``sign * value``, with ``value`` in [lo, hi]."""

    value: Value
    sign: int
    lo: int
    hi: int


def _combine(m: Module, a: Term, b: Term, name: str) -> Term:
    """One add where the signs agree, else one subtraction (positive minus negative)."""
    sign, lo, hi = signed_node((a.sign, a.lo, a.hi), (b.sign, b.lo, b.hi))
    if a.sign == b.sign:
        expr = a.value + b.value
    elif a.sign > 0:
        expr = a.value - b.value
    else:
        expr = b.value - a.value
    # keep: Yosys would otherwise merge the adds between two registers into one $macc and build
    # it as carry-save logic in LUTs instead of carry-chain adders.
    node = Signal(range_shape(lo, hi), name=name, attrs={"keep": 1})
    m.d.comb += node.eq(expr)
    return Term(node, sign, lo, hi)


def reduce_terms(
    m: Module, terms: list[Term], register_levels, advance: Signal | None, prefix: str
) -> Term:
    """Pair terms level by level into one; a register after each level in ``register_levels``
    (updated when ``advance``)."""

    def combine(a, b, level, k):
        return _combine(m, a, b, f"{prefix}_n{level}_{k}")

    def registers(terms, level):
        if level not in register_levels:
            return terms
        return [register_term(m, t, advance, f"{prefix}_r{level}_{k}") for k, t in enumerate(terms)]

    return pair_up(terms, combine, registers)


@dataclass(frozen=True)
class FlipNode:
    """A node of a sign-bit tree: it contributes ``value`` (in [lo, hi]) where ``flip`` is 0 and
    its complement ``~value`` (over the node's own shape) where ``flip`` is 1."""

    value: Value
    flip: Value
    lo: int
    hi: int


def _flip_combine(m: Module, a: FlipNode, b: FlipNode, name: str) -> FlipNode:
    """``a - ~b`` where the two flips agree, ``a - b`` where they differ; the node flips as ``a``.

    Where ``a`` does not flip, ``a + b' = node + K_b`` (``b'`` being ``b``'s contribution, and
    ``-~b = b - K_b``); where it flips, ``(K_a - a) + b' = K_a - node``, the node's complement
    plus ``K_a - K_node``: a constant per node and weight word (:func:`flip_correction`). A
    subtraction, not an add: synthesis keeps ``a`` as the carry chain's first operand, which
    enters it as it is (an add's operands may be swapped, putting the complemented one there,
    which costs a gate per bit on 7-series)."""
    lo, hi = flip_node_range((a.lo, a.hi), (b.lo, b.hi))
    node = Signal(range_shape(lo, hi), name=name, attrs={"keep": 1})
    m.d.comb += node.eq(a.value - Mux(a.flip ^ b.flip, b.value, ~b.value))
    return FlipNode(node, a.flip, lo, hi)


def register_term(m: Module, term: Term, advance: Signal | None, name: str) -> Term:
    reg = Signal(range_shape(term.lo, term.hi), name=name)
    with m.If(advance):
        m.d.sync += reg.eq(term.value)
    return Term(reg, term.sign, term.lo, term.hi)


def input_stage(m: Module, payload, fields: dict, registered: bool, advance) -> dict:
    """A tree's inputs by field name, registered (on ``advance``) when ``registered``: a folded
    layer's weights arrive straight from a block RAM, whose read is slow to leave the block (5.3
    ns on ECP5); a register there (or after the XOR leaves) keeps it out of the adders' cycle
    (once a placed design's critical path: the read, the XOR leaves and two adder levels)."""
    if not registered:
        return {name: payload[name] for name in fields}
    out = {}
    for name, layout in fields.items():
        reg = Signal(layout, name=f"{name}_in_r")
        with m.If(advance):
            m.d.sync += reg.eq(payload[name])
        out[name] = reg
    return out


def delay_tag(m: Module, tag: Value, shape, cycles: int, advance: Signal | None) -> Value:
    """``tag`` delayed by ``cycles`` pipeline stages (moving when ``advance``)."""
    for k in range(cycles):
        delayed = Signal(shape, name=f"tag_r{k}")
        with m.If(advance):
            m.d.sync += delayed.eq(tag)
        tag = delayed
    return tag


def tree_signature(in_fields: dict, sum_shape, n_lanes: int, tag_shape) -> dict:
    """Ports of a tree: ``i`` carries ``in_fields`` (and the tag), ``o`` the sums (and the tag)."""
    out_fields = {"sum": data.ArrayLayout(sum_shape, n_lanes)}
    if tag_shape is not None:
        in_fields = {**in_fields, "tag": tag_shape}
        out_fields["tag"] = tag_shape
    return {
        "i": In(stream.Signature(data.StructLayout(in_fields))),
        "o": Out(stream.Signature(data.StructLayout(out_fields))),
    }


class AdderTree(wiring.Component):
    """``n_lanes`` sums over one shared vector of ``n_inputs`` values, no multiplier.

    Lane ``j`` computes ``sum_i signs[j][i] * x[i]`` with constant signs (where a sign is -1 the
    tree subtracts; never negate-then-add), or, with ``sign_bits``, signs that arrive with each
    beat as bits (1: +1, 0: -1): the leaf is then ``x[i]`` or its ones' complement
    ``ones - x[i]`` (an XOR gate; ``ones = 2^w - 1`` for ``w``-bit inputs), so the lane gives
    ``sum_i s_i x[i] + ones * zeros`` where ``zeros`` counts the 0 bits. A weight-memory word
    fixes ``zeros``, so the caller removes ``ones * zeros`` as a constant per neuron (bchw folds
    it into the requantizer's offset); the hardware has no negation, no all-inputs lane and no
    per-lane correction. Every node is sized from its exact range, so nothing overflows. A
    pipeline register follows every ``pipeline_every`` adder levels (0: none).

    Parameters
    ----------
    n_lanes, n_inputs:
        Number of sums and of inputs.
    input_range:
        ``(lo, hi)`` with ``lo >= 0``: every input lies in it.
    signs:
        ``int[n_lanes, n_inputs]`` of +1/-1 (constant signs); all +1 when omitted.
    sign_bits:
        Take per-beat sign bits instead of constant signs.
    relative:
        With ``sign_bits``, a relative-sign tree instead of XOR leaves: every node subtracts
        its right child, or the child's complement, from its left child (complemented where
        their leftmost leaves' weights agree), the node counting as negated where its leftmost
        leaf's weight is -1, and the root complemented where so. No gate sits in front of an
        adder's first operand, which on 7-series enters the carry chain as it is (an XOR leaf
        there costs a second LUT per bit); on iCE40, ECP5 and Gowin it costs as many LUTs as
        XOR leaves or more. The lane then gives the dot product plus a constant per weight word that
        :meth:`excess` states (the caller absorbs it, as with XOR leaves).
    paired:
        With ``sign_bits``, paired leaves instead of XOR leaves: the inputs go in pairs
        ``(a, b)``, whose sum ``S = a + b`` and difference ``D = a + ~b`` are added once for all
        lanes; a lane's leaf is then ``S``, ``D``, ``~D`` or ``~S`` (over ``w + 1`` bits) as its
        two weight bits say, one 4-input LUT per bit. That does the first adder level once per
        layer instead of once per lane, and drops a lane's ``w`` XOR gates per input (18 to 29
        % of a folded design's LUTs, docs/benchmarks.md). A lane's sum lies above its dot
        product by :meth:`excess`, as with XOR leaves.
    pipeline_every:
        Adder levels between pipeline registers.
    register_inputs:
        A register stage in front of the adders (a folded layer's, whose weight bits come from
        block RAM): the XOR leaves registered, or with a relative-sign tree the inputs.
    tag_shape:
        Shape of a side payload delayed alongside the sums (None: no tag).

    Ports
    -----
    i : stream of ``{"x": [n_inputs], ("sign": [n_lanes] of n_inputs bits), ("tag")}``.
    o : stream of ``{"sum": [n_lanes], ("tag")}``, ``latency`` cycles after ``i``.
    """

    def __init__(
        self,
        n_lanes: int,
        n_inputs: int,
        input_range: tuple[int, int],
        signs: np.ndarray | None = None,
        pipeline_every: int = 0,
        tag_shape: ShapeCastable | None = None,
        sign_bits: bool = False,
        relative: bool = False,
        register_inputs: bool = False,
        paired: bool = False,
    ) -> None:
        if input_range[0] < 0:
            raise ValueError("adder tree inputs must be non-negative")
        if sign_bits and signs is not None:
            raise ValueError("a tree with per-beat sign bits has no constant signs")
        if relative and not sign_bits:
            raise ValueError("a relative-sign tree takes per-beat sign bits")
        if paired and (relative or not sign_bits):
            raise ValueError("paired leaves take per-beat sign bits, in place of a relative tree")
        self.relative = relative
        self.paired = paired
        self.n_lanes = n_lanes
        self.n_inputs = n_inputs
        self.input_range = input_range
        self.sign_bits = sign_bits
        self.signs = (
            np.ones((n_lanes, n_inputs), dtype=np.int64)
            if signs is None
            else np.asarray(signs, dtype=np.int64).reshape(n_lanes, n_inputs)
        )
        if not np.isin(self.signs, (-1, 1)).all():
            raise ValueError("adder tree signs must be +1 or -1")
        self.pipeline_every = pipeline_every
        self.input_shape = range_shape(*input_range)
        self.ones = ones(input_range[1])  # the ones' complement of 0
        if relative:
            root = relative_root_range(n_inputs, input_range)
            self.lane_ranges = [flipped_range(*root)] * n_lanes
        elif paired:
            self.lane_ranges = [paired_lane_range(n_inputs, self.ones)] * n_lanes
        else:
            leaf = (0, self.ones) if sign_bits else input_range
            self.lane_ranges = [sum_range(row, *leaf) for row in self.signs]
        self.sum_shape = range_shape(
            min(lo for lo, _ in self.lane_ranges), max(hi for _, hi in self.lane_ranges)
        )
        self.register_levels = registers_after(tree_levels(n_inputs), pipeline_every)
        self.register_inputs = register_inputs
        self.latency = int(register_inputs) + len(self.register_levels)
        self.tag_shape = tag_shape
        self.in_fields = {"x": data.ArrayLayout(self.input_shape, n_inputs)}
        if sign_bits:
            self.in_fields["sign"] = data.ArrayLayout(unsigned(n_inputs), n_lanes)
        super().__init__(tree_signature(self.in_fields, self.sum_shape, n_lanes, tag_shape))

    def excess(self, plus) -> int:
        """How far a sign-bit lane's sum lies above its signed dot product, for weight bits
        ``plus`` (true: +1): ``ones`` per -1 leaf (``~x = ones - x``), with paired leaves one
        more per pair whose first weight is -1 (:func:`paired_excess`), and in a relative tree
        less each node's :func:`flip_correction`. It depends on the weight bits alone."""
        if self.paired:
            return paired_excess(plus, self.ones)
        if not self.relative:
            return self.ones * sum(1 for p in plus if not p)

        def combine(a, b, *_):
            (flip_a, range_a, excess_a), (_, range_b, excess_b) = a, b
            excess = excess_a + excess_b - flip_correction(flip_a, range_a, range_b)
            return flip_a, flip_node_range(range_a, range_b), excess

        leaf = self.input_range
        leaves = [(0, leaf, 0) if p else (1, leaf, self.ones) for p in plus]
        return pair_up(leaves, combine)[2]

    def _elaborate_relative(self, m: Module, lane: int, advance: Signal | None, x, signs) -> Value:
        sign = signs[lane]
        lo, hi = self.input_range
        nodes = [FlipNode(x[k], ~sign[k], lo, hi) for k in range(self.n_inputs)]
        prefix = f"l{lane}"

        def combine(a, b, level, k):
            return _flip_combine(m, a, b, f"{prefix}_n{level}_{k}")

        def registers(nodes, level):
            if level not in self.register_levels:
                return nodes
            out = []
            for k, node in enumerate(nodes):
                value = Signal(range_shape(node.lo, node.hi), name=f"{prefix}_r{level}_{k}")
                flip = Signal(name=f"{prefix}_f{level}_{k}")
                with m.If(advance):
                    m.d.sync += [value.eq(node.value), flip.eq(node.flip)]
                out.append(FlipNode(value, flip, node.lo, node.hi))
            return out

        root = pair_up(nodes, combine, registers)
        return Mux(root.flip, ~root.value, root.value)

    def _pair_sums(self, m: Module, x) -> list[tuple[Signal, Signal]]:
        """``S = a + b`` and ``D = a + ~b`` of every input pair, shared by all lanes."""
        sums = []
        for k in range(self.n_inputs // 2):
            a, b = x[2 * k], x[2 * k + 1]
            # keep: each is one carry-chain add; Yosys would otherwise fold them into the
            # lanes' leaves and trees, once per lane.
            s = Signal(range_shape(0, 2 * self.ones), name=f"pair{k}_s", attrs={"keep": 1})
            d = Signal(range_shape(0, 2 * self.ones), name=f"pair{k}_d", attrs={"keep": 1})
            m.d.comb += [s.eq(a + b), d.eq(a + (b ^ self.ones))]
            sums.append((s, d))
        return sums

    def _elaborate_paired(self, m: Module, lane: int, advance, x, pair_sums, signs) -> Term:
        sign = signs[lane]
        full = 2 * self.ones + 1  # all ones over a pair's w + 1 bits
        terms = []
        for k, (s, d) in enumerate(pair_sums):
            plus_a, plus_b = sign[2 * k], sign[2 * k + 1]
            # S for (+, +), D for (+, -), ~D for (-, +), ~S for (-, -): one LUT4 per bit.
            value = Mux(plus_a ^ plus_b, d, s) ^ Mux(plus_a, 0, full)
            terms.append(Term(value, 1, 0, full))
        if self.n_inputs % 2:  # the odd input: an XOR leaf
            last = self.n_inputs - 1
            terms.append(Term(x[last] ^ Mux(sign[last], 0, self.ones), 1, 0, self.ones))
        # The pairs are the tree's first adder level: the leaves take that level's register
        # (and a folded layer's input register), so the latency is the XOR tree's.
        levels = self.register_levels
        for r in range(int(self.register_inputs) + int(1 in levels)):
            terms = [
                register_term(m, term, advance, f"l{lane}_leaf{r}_{k}")
                for k, term in enumerate(terms)
            ]
        later = [level - 1 for level in levels if level > 1]
        root = reduce_terms(m, terms, later, advance, f"l{lane}")
        assert (root.lo, root.hi) == self.lane_ranges[lane], "paired tree range bookkeeping"
        return root

    def elaborate(self, platform) -> Module:
        m = Module()
        advance = stall_pipeline(m, self.i, self.o, self.latency, "tree")
        lo, hi = self.input_range
        # With XOR leaves the leaves are registered instead (below): one LUT after the read, in
        # the slice of its flip-flop. (Registering the inputs there made the Yosys 0.50 that
        # YoWASP ships crash in ABC9 on a small CNN; the leaves do not.)
        xor_leaves = self.sign_bits and not self.relative
        register = self.register_inputs and not xor_leaves
        inputs = input_stage(m, self.i.payload, self.in_fields, register, advance)
        x = inputs["x"]
        if self.paired:
            pair_sums = self._pair_sums(m, x)
        for lane in range(self.n_lanes):
            if self.relative:
                root = self._elaborate_relative(m, lane, advance, x, inputs["sign"])
                m.d.comb += self.o.payload.sum[lane].eq(root)
                continue
            if self.paired:
                root = self._elaborate_paired(m, lane, advance, x, pair_sums, inputs["sign"])
                m.d.comb += self.o.payload.sum[lane].eq(root.value)
                continue
            if self.sign_bits:
                sign = inputs["sign"][lane]
                terms = [
                    Term(x[k] ^ Mux(sign[k], 0, self.ones), 1, 0, self.ones)
                    for k in range(self.n_inputs)
                ]
                if self.register_inputs:
                    terms = [
                        register_term(m, term, advance, f"l{lane}_leaf{k}")
                        for k, term in enumerate(terms)
                    ]
            else:
                terms = [Term(x[k], int(self.signs[lane, k]), lo, hi) for k in range(self.n_inputs)]
            root = reduce_terms(m, terms, self.register_levels, advance, f"l{lane}")
            lane_lo, lane_hi = self.lane_ranges[lane]
            root_range = (root.lo, root.hi) if root.sign > 0 else (-root.hi, -root.lo)
            assert root_range == (lane_lo, lane_hi), "tree range bookkeeping is inconsistent"
            # Only a lane whose every weight is -1 ends negative: one final subtraction from 0.
            total = root.value if root.sign > 0 else -root.value
            m.d.comb += self.o.payload.sum[lane].eq(total)
        if self.tag_shape is not None:
            tag = delay_tag(m, self.i.payload.tag, self.tag_shape, self.latency, advance)
            m.d.comb += self.o.payload.tag.eq(tag)
        return m
