"""Argmax over the class scores: the lowest index wins a tie."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.pipeline import stall_pipeline
from rtl_gen.ranges import registers_after, tree_levels


class Argmax(wiring.Component):
    """Index of the largest of ``n`` scores, ties to the lowest index, and the scores themselves.

    A balanced tree of comparators; each node keeps its left (lower-index) candidate unless the
    right one is strictly greater. A register follows every ``pipeline_every`` levels.

    Ports
    -----
    i : stream of ``[n]`` scores.
    o : stream of ``{"index": unsigned, "scores": [n]}``; ``latency`` cycles after ``i``.
    """

    def __init__(self, n: int, score_shape, pipeline_every: int = 0) -> None:
        self.n = n
        self.score_shape = score_shape
        self.index_shape = unsigned(max(1, (n - 1).bit_length()))
        self.register_levels = registers_after(tree_levels(n), pipeline_every)
        self.latency = len(self.register_levels)
        # A deliberate bug for the cosimulation self-check (rtl_gen/faults.py): ties to highest.
        self.fault_ties_to_highest = False
        scores = data.ArrayLayout(score_shape, n)
        super().__init__(
            {
                "i": In(stream.Signature(scores)),
                "o": Out(
                    stream.Signature(
                        data.StructLayout({"index": self.index_shape, "scores": scores})
                    )
                ),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        advance = stall_pipeline(m, self.i, self.o, self.latency, "argmax")
        nodes = [(self.i.payload[k], k) for k in range(self.n)]  # (score, index expression)
        scores = self.i.payload
        level = 0
        while len(nodes) > 1:
            level += 1
            merged = []
            for k in range(0, len(nodes) - 1, 2):
                (va, ia), (vb, ib) = nodes[k], nodes[k + 1]
                take_right = vb >= va if self.fault_ties_to_highest else vb > va
                value = Signal(self.score_shape, name=f"max{level}_{k // 2}")
                index = Signal(self.index_shape, name=f"idx{level}_{k // 2}")
                m.d.comb += [value.eq(Mux(take_right, vb, va)), index.eq(Mux(take_right, ib, ia))]
                merged.append((value, index))
            if len(nodes) % 2:
                merged.append(nodes[-1])
            nodes = merged
            if level in self.register_levels:
                registered = []
                for k, (value, index) in enumerate(nodes):
                    rv = Signal(self.score_shape, name=f"max{level}_r{k}")
                    ri = Signal(self.index_shape, name=f"idx{level}_r{k}")
                    with m.If(advance):
                        m.d.sync += [rv.eq(value), ri.eq(index)]
                    registered.append((rv, ri))
                nodes = registered
                delayed = Signal(
                    data.ArrayLayout(self.score_shape, self.n), name=f"scores_r{level}"
                )
                with m.If(advance):
                    m.d.sync += delayed.eq(scores)
                scores = delayed
        m.d.comb += [self.o.payload.index.eq(nodes[0][1]), self.o.payload.scores.eq(scores)]
        return m
