"""Argmax over the class scores: the lowest index wins a tie."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.pipeline import stall_pipeline
from rtl_gen.plan import argmax_every, scan_latency
from rtl_gen.ranges import registers_after, tree_levels


def argmax_ports(n: int, score_shape) -> tuple[Shape, dict]:
    """Both argmaxes' index shape and ports: ``i`` a stream of ``n`` scores, ``o`` a stream of
    the class index and the scores."""
    index_shape = unsigned(max(1, (n - 1).bit_length()))
    scores = data.ArrayLayout(score_shape, n)
    ports = {
        "i": In(stream.Signature(scores)),
        "o": Out(stream.Signature(data.StructLayout({"index": index_shape, "scores": scores}))),
    }
    return index_shape, ports


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
        self.register_levels = registers_after(tree_levels(n), pipeline_every)
        self.latency = len(self.register_levels)
        # A deliberate bug for the cosimulation self-check (rtl_gen/faults.py): ties to highest.
        self.fault_ties_to_highest = False
        self.index_shape, ports = argmax_ports(n, score_shape)
        super().__init__(ports)

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


class ScanArgmax(wiring.Component):
    """The same answer as :class:`Argmax` (ties to the lowest index), one comparison a cycle:
    for a folded design, whose images are many cycles apart, one comparator, one multiplexer
    and a running maximum instead of a tree and its copies of the scores.

    The scores are read where they stand: ``i.ready`` stays low until the result leaves, and
    the block upstream must hold its beat (valid and payload) until then, as every block of a
    design does. Score ``k`` is read into a register on one cycle and compared on the next, so
    that neither the multiplexer nor the comparator waits on the other. Taking a beat at cycle
    ``t`` gives its result at ``t + n + 1`` (``latency``), and the beat is released then: a new
    one starts ``n + 2`` cycles after the last (:attr:`cycles_per_vector`). Only used where the
    design's interval is at least twice that (:func:`rtl_gen.plan.scan_argmax`), so it never
    slows the design.

    Ports: as :class:`Argmax`'s.
    """

    def __init__(self, n: int, score_shape) -> None:
        if n < 2:
            raise ValueError("a scanning argmax needs at least two scores")
        self.n = n
        self.score_shape = score_shape
        self.latency = scan_latency(n)
        self.cycles_per_vector = self.latency + 1
        self.fault_ties_to_highest = False  # as Argmax's
        self.index_shape, ports = argmax_ports(n, score_shape)
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.n
        busy = Signal(name="scan_busy")  # reading scores 1 .. n - 1
        k = Signal(self.index_shape, name="scan_k")  # the next to read; 0 when idle
        read = Signal(name="scan_read")  # score_r holds score read_index, to compare
        score = Signal(self.score_shape, name="scan_read_score")  # score k
        score_r = Signal(self.score_shape, name="scan_score")
        read_index = Signal(self.index_shape, name="scan_read_index")
        best = Signal(self.score_shape, name="scan_best")
        best_index = Signal(self.index_shape, name="scan_index")
        done = Signal(name="scan_done")
        start = Signal(name="scan_start")
        # A case per score, not ``payload[k]``: that indexes by ``k * width``, a multiplier
        # until synthesis folds it, and a binary design has none.
        with m.Switch(k):
            for index in range(n):
                with m.Case(index):
                    m.d.comb += score.eq(self.i.payload[index])
        m.d.comb += [
            start.eq(~busy & ~read & ~done & self.i.valid),
            self.o.valid.eq(done),
            self.i.ready.eq(done & self.o.ready),
            self.o.payload.index.eq(best_index),
            self.o.payload.scores.eq(self.i.payload),
        ]
        with m.If(busy | start):
            m.d.sync += [score_r.eq(score), read_index.eq(k), read.eq(1)]
            with m.If(k == n - 1):
                m.d.sync += [busy.eq(0), k.eq(0)]
            with m.Else():
                m.d.sync += [busy.eq(1), k.eq(k + 1)]
        with m.Else():
            m.d.sync += read.eq(0)
        greater = score_r >= best if self.fault_ties_to_highest else score_r > best
        with m.If(read):
            with m.If((read_index == 0) | greater):
                m.d.sync += [best.eq(score_r), best_index.eq(read_index)]
            with m.If(read_index == n - 1):
                m.d.sync += done.eq(1)
        with m.If(done & self.o.ready):
            m.d.sync += done.eq(0)
        return m


def argmax_block(classes: int, score_shape, scan: bool, pipeline_every: int):
    """The argmax a plan names: a scan (:class:`ScanArgmax`) or a tree (:class:`Argmax`)."""
    if scan:
        return ScanArgmax(classes, score_shape)
    return Argmax(classes, score_shape, argmax_every(pipeline_every))
