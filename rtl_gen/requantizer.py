"""The multiplier-free requantization of docs/integer-model.md, lane by lane."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.intmodel import IntegerLayer, output_range, signed_bits
from rtl_gen.pipeline import range_shape, stall_pipeline


def constants_layout(layer: IntegerLayer) -> data.StructLayout:
    """One neuron's constants: K signs (-1/0/+1), K shifts and the offset."""
    used_shifts = layer.scale_shift[layer.scale_sign != 0]
    shift_max = int(used_shifts.max()) if used_shifts.size else 0
    offsets = [int(o) for o in layer.offset] + [0]  # 0: padding lanes
    return data.StructLayout(
        {
            "sign": data.ArrayLayout(signed(2), layer.scale_terms),
            "shift": data.ArrayLayout(unsigned(max(1, shift_max.bit_length())), layer.scale_terms),
            "offset": range_shape(min(offsets), max(offsets)),
        }
    )


def requant_width(layer: IntegerLayer) -> int:
    """Signed width of ``t`` for every neuron and for padding lanes (all-zero constants)."""
    lo, hi = layer.requant_range()
    return signed_bits(min(lo, layer.rounding), max(hi, layer.rounding))


class Requantizer(wiring.Component):
    """``y = clamp((sum_k s_k (acc << h_k) + o + 2^(R-1)) >> R)`` for ``n_lanes`` neurons.

    Shifts and adds only. With ``static_neurons`` (one neuron index per lane, ``None`` for a
    padding lane) the constants are fixed in the circuit; otherwise each beat carries them in its
    ``consts`` field (folded layers read them from memory). Padding lanes (all-zero constants)
    give 0. ``t`` is computed modulo ``2^requant_width``, which is exact because the final
    ``t`` fits that width for every neuron.

    Ports
    -----
    i : stream of ``{"acc": [n_lanes] (, "consts": [n_lanes])}``.
    o : stream of ``[n_lanes]`` outputs (``unsigned(b)`` hidden, ``signed(b)`` last layer);
        ``latency`` cycles after ``i`` (0 or 1: ``registered``).
    """

    def __init__(
        self,
        layer: IntegerLayer,
        n_lanes: int,
        acc_shape,
        static_neurons: list[int | None] | None = None,
        registered: bool = True,
    ) -> None:
        self.layer = layer
        self.n_lanes = n_lanes
        self.static_neurons = static_neurons
        self.latency = int(registered)
        self.t_width = requant_width(layer)
        # Deliberate bugs for the cosimulation self-check (rtl_gen/faults.py); never set otherwise.
        self.fault_shift_error = 0  # shift right by R + this
        self.fault_no_saturation = False  # no clamp at the top of the output range: wrap
        lo, hi = output_range(layer.output_bits, layer.output_signed)
        self.output_shape = range_shape(lo, hi)
        fields = {"acc": data.ArrayLayout(acc_shape, n_lanes)}
        if static_neurons is None:
            fields["consts"] = data.ArrayLayout(constants_layout(layer), n_lanes)
        elif len(static_neurons) != n_lanes:
            raise ValueError("static_neurons needs one entry per lane")
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout(fields))),
                "o": Out(stream.Signature(data.ArrayLayout(self.output_shape, n_lanes))),
            }
        )

    def _t_static(self, m: Module, acc, neuron: int | None, t: Signal) -> None:
        layer = self.layer
        if neuron is None:
            m.d.comb += t.eq(layer.rounding)
            return
        expr = int(layer.offset[neuron]) + layer.rounding
        for k in range(layer.scale_terms):
            sign, shift = int(layer.scale_sign[neuron, k]), int(layer.scale_shift[neuron, k])
            if sign > 0:
                expr = expr + (acc << shift)
            elif sign < 0:
                expr = expr - (acc << shift)
        m.d.comb += t.eq(expr)

    def _t_dynamic(self, m: Module, acc, consts, t: Signal, lane: int) -> None:
        expr = consts.offset + self.layer.rounding
        for k in range(self.layer.scale_terms):
            shifted = Signal(signed(self.t_width), name=f"shifted{lane}_{k}")
            m.d.comb += shifted.eq(acc << consts.shift[k])  # truncated: exact modulo 2^width
            term = Mux(consts.sign[k] == 0, 0, Mux(consts.sign[k][1], -shifted, shifted))
            expr = expr + term
        m.d.comb += t.eq(expr)

    def elaborate(self, platform) -> Module:
        m = Module()
        advance = stall_pipeline(m, self.i, self.o, self.latency, "requant")
        layer = self.layer
        lo, hi = output_range(layer.output_bits, layer.output_signed)
        for lane in range(self.n_lanes):
            acc = self.i.payload.acc[lane]
            t = Signal(signed(self.t_width), name=f"t{lane}")
            if self.static_neurons is not None:
                self._t_static(m, acc, self.static_neurons[lane], t)
            else:
                self._t_dynamic(m, acc, self.i.payload.consts[lane], t, lane)
            shift = layer.requant_shift + self.fault_shift_error
            v = Signal(signed(self.t_width - shift), name=f"v{lane}")
            m.d.comb += v.eq(t[shift:].as_signed())
            y = Signal(self.output_shape, name=f"y{lane}")
            top = v if self.fault_no_saturation else hi
            m.d.comb += y.eq(Mux(v > hi, top, Mux(v < lo, lo, v)))
            if advance is None:
                m.d.comb += self.o.payload[lane].eq(y)
            else:
                with m.If(advance):
                    m.d.sync += self.o.payload[lane].eq(y)
        return m
