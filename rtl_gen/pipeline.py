"""Shared helpers: exact value ranges to shapes, and the stall-all pipeline control."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal, signed, unsigned
from amaranth.lib import stream

from rtl_gen.ranges import range_width


def range_shape(lo: int, hi: int) -> Shape:
    """The narrowest shape that holds every integer in [lo, hi] (:func:`range_width`)."""
    bits, is_signed = range_width(lo, hi)
    return signed(bits) if is_signed else unsigned(bits)


def shape_range(shape: Shape) -> tuple[int, int]:
    """Every value a shape can hold."""
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def stall_pipeline(
    m: Module, i: stream.Interface, o: stream.Interface, stages: int, name: str
) -> Signal | None:
    """Valid bits for a pipeline of ``stages`` registers that all move together.

    Returns ``advance``: the data registers must load on it. Everything advances when the last
    stage is empty or its beat is being taken (``~valid_last | o.ready``); ``o.valid`` never
    looks at ``o.ready``. With no stages the block is combinational: valid and ready pass
    straight through and ``None`` is returned.
    """
    if stages == 0:
        m.d.comb += [o.valid.eq(i.valid), i.ready.eq(o.ready)]
        return None
    valids = [Signal(name=f"{name}_valid{k}") for k in range(stages)]
    advance = Signal(name=f"{name}_advance")
    m.d.comb += [advance.eq(~valids[-1] | o.ready), i.ready.eq(advance), o.valid.eq(valids[-1])]
    with m.If(advance):
        m.d.sync += valids[0].eq(i.valid)
        for k in range(1, stages):
            m.d.sync += valids[k].eq(valids[k - 1])
    return advance


def skid_buffer(m: Module, i: stream.Interface, o: stream.Interface, name: str) -> None:
    """A register of one beat between ``i`` and ``o`` that takes no cycle: ``i.ready`` is a
    register (``~full``), not ``o.ready``, so back-pressure stops here.

    Empty, a beat passes straight through; when the output refuses it, the beat is held
    (``full``) and given first, while ``i`` waits. The output always ready, nothing is ever
    held: timing without stalls is as without the buffer.
    """
    full = Signal(name=f"{name}_full")
    held = Signal.like(i.payload, name=f"{name}_held")
    m.d.comb += [i.ready.eq(~full), o.valid.eq(full | i.valid)]
    with m.If(full):
        m.d.comb += o.payload.eq(held)
        with m.If(o.ready):
            m.d.sync += full.eq(0)
    with m.Else():
        m.d.comb += o.payload.eq(i.payload)
        m.d.sync += held.eq(i.payload)
        with m.If(i.valid & ~o.ready):
            m.d.sync += full.eq(1)
