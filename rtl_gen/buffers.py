"""Buffers between layers: they decouple the layers so that they overlap in a pipeline."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from rtl_gen.plan import VectorBufferLink


class VectorBuffer(wiring.Component):
    """Re-beat a vector of ``n`` elements from ``in_lanes`` to ``out_lanes`` per beat.

    Two banks of ``n`` registers: one fills while the other drains, so a whole vector can wait
    while the next arrives. Input padding lanes (past ``n``) are dropped; output padding lanes
    are 0. The first output beat is valid the cycle after the last input beat is taken
    (:class:`rtl_gen.plan.VectorBufferLink` states its timing).
    """

    def __init__(self, n: int, elem_shape, in_lanes: int, out_lanes: int) -> None:
        self.n, self.elem_shape = n, elem_shape
        self.in_lanes, self.out_lanes = in_lanes, out_lanes
        link = VectorBufferLink(n, in_lanes, out_lanes)
        self.in_beats, self.out_beats = link.in_beats, link.out_beats
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(elem_shape, in_lanes))),
                "o": Out(stream.Signature(data.ArrayLayout(elem_shape, out_lanes))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        banks = [
            [Signal(self.elem_shape, name=f"bank{b}_{e}") for e in range(self.n)] for b in (0, 1)
        ]
        full = [Signal(name=f"full{b}") for b in (0, 1)]
        w_bank, r_bank = Signal(name="w_bank"), Signal(name="r_bank")
        w_beat = Signal(range(max(2, self.in_beats)), name="w_beat")
        r_beat = Signal(range(max(2, self.out_beats)), name="r_beat")

        m.d.comb += self.i.ready.eq(Mux(w_bank, full[1], full[0]) == 0)
        with m.If(self.i.valid & self.i.ready):
            for e in range(self.n):
                with m.If(w_beat == e // self.in_lanes):
                    for b in (0, 1):
                        with m.If(w_bank == b):
                            m.d.sync += banks[b][e].eq(self.i.payload[e % self.in_lanes])
            with m.If(w_beat == self.in_beats - 1):
                m.d.sync += [w_beat.eq(0), w_bank.eq(~w_bank)]
                for b in (0, 1):
                    with m.If(w_bank == b):
                        m.d.sync += full[b].eq(1)
            with m.Else():
                m.d.sync += w_beat.eq(w_beat + 1)

        m.d.comb += self.o.valid.eq(Mux(r_bank, full[1], full[0]))
        with m.Switch(r_beat):
            for beat in range(self.out_beats):
                # The last beat takes every remaining value of r_beat, so the case is full.
                last = beat == self.out_beats - 1
                with m.Default() if last else m.Case(beat):
                    for lane in range(self.out_lanes):
                        e = beat * self.out_lanes + lane
                        if e < self.n:
                            m.d.comb += self.o.payload[lane].eq(
                                Mux(r_bank, banks[1][e], banks[0][e])
                            )
        with m.If(self.o.valid & self.o.ready):
            with m.If(r_beat == self.out_beats - 1):
                m.d.sync += [r_beat.eq(0), r_bank.eq(~r_bank)]
                for b in (0, 1):
                    with m.If(r_bank == b):
                        m.d.sync += full[b].eq(0)
            with m.Else():
                m.d.sync += r_beat.eq(r_beat + 1)
        return m


class BeatFIFO(wiring.Component):
    """A first-in first-out queue of ``depth`` beats (inferable as block RAM).

    The first beat is valid :data:`rtl_gen.plan.FIFO_LATENCY` cycles after it is written
    (Amaranth's ``SyncFIFOBuffered``: a memory and an output register).
    """

    def __init__(self, layout: data.ArrayLayout, depth: int) -> None:
        self.layout, self.depth = layout, depth
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.layout.size, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload.as_value()),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        return m
