"""The multiplier-free requantization of docs/integer-model.md, lane by lane."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerLayer, output_range
from rtl_gen.pipeline import range_shape, stall_pipeline
from rtl_gen.plan import requant_schedule
from rtl_gen.ranges import requant_width, shift_field_bits, shift_ranges, wrap_signed


def constants_layout(layer: IntegerLayer) -> data.StructLayout:
    """One neuron's constants in a requantizer's ROM: K signs (-1/0/+1: bit 0 nonzero, bit 1
    negative), K shifts less their term's smallest (:func:`shift_ranges`) and the ROM offset
    (:meth:`Requantizer.rom_offset`), which is kept modulo ``2^requant_width`` like ``t`` and
    so takes that width."""
    return data.StructLayout(
        {
            "sign": data.ArrayLayout(signed(2), layer.scale_terms),
            "shift": data.ArrayLayout(unsigned(shift_field_bits(layer)), layer.scale_terms),
            "offset": signed(requant_width(layer)),
        }
    )


def absorbed_offsets(layer: IntegerLayer, excess) -> list[int]:
    """Offsets for accumulators that hold ``acc_j + excess[j]`` instead of ``acc_j``.

    ``t = sum_k s_k ((acc + e) << h_k) + o'`` equals ``t`` of the true ``acc`` when
    ``o' = o - e * sum_k s_k 2^h_k``. The requantizer computes ``t`` modulo
    ``2^requant_width``, where the true ``t`` fits, so ``o'`` is kept modulo that too (as a
    signed value): the constants grow by no more than ``t`` itself.
    """
    width = requant_width(layer)
    return [
        wrap_signed(int(offset) - int(e) * int(gain), width)
        for offset, e, gain in zip(layer.offset, excess, layer.gains(), strict=True)
    ]


class Requantizer(wiring.Component):
    """``y = clamp((sum_k s_k (acc << h_k) + o + 2^(R-1)) >> R)`` for ``n_lanes`` neurons.

    Shifts and adds only. With ``static_neurons`` (one neuron index per lane, ``None`` for a
    padding lane) the constants are fixed in the circuit. Otherwise the beats are a folded
    layer's neuron folds in order, fold ``f`` holding neurons ``f * n_lanes + lane``, cycling
    through ``ceil(n_out / n_lanes)`` folds; the constants of each fold come from a ROM read in
    that same order (:meth:`constant_words`), one word ahead, so the beat carries only its
    accumulators. Padding lanes (all-zero constants) give 0. ``t`` is computed modulo
    ``2^requant_width``, which is exact because the final ``t`` fits that width for every
    neuron. ``offsets`` (one per neuron) replace the layer's where the accumulators carry a
    known excess (:func:`absorbed_offsets`).

    ``share`` > 1 (registered, per-beat constants only) time-shares the arithmetic: ``units =
    ceil(n_lanes / share)`` copies compute the lanes in ``steps = ceil(n_lanes / units)``
    cycles, a group of ``units`` lanes per cycle, while the input beat waits on ``i`` (it is
    taken on the last step). A folded layer hands a beat over only every ``sf`` cycles, so with
    ``share <= sf`` this costs no throughput and saves ``n_lanes - units`` copies of the barrel
    shifters, adders and clamps.

    The constants ROM holds one word per step: the constants of the ``units`` lanes computed
    then (``folds * steps`` words of ``units`` constants). Deep and narrow, it fits block RAM
    (which it asks for) instead of being built as a wide LUT ROM and a ``steps``-way
    multiplexer.

    Ports
    -----
    i : stream of ``{"acc": [n_lanes]}``.
    o : stream of ``[n_lanes]`` outputs (``unsigned(b)`` hidden, ``signed(b)`` last layer);
        ``latency`` cycles after ``i`` (0 or 1: ``registered``; ``steps`` when shared). With
        per-beat constants the ROM's first word is read in the cycle after reset: a beat
        offered then waits one cycle.
    """

    def __init__(
        self,
        layer: IntegerLayer,
        n_lanes: int,
        acc_shape,
        static_neurons: list[int | None] | None = None,
        registered: bool = True,
        share: int = 1,
        offsets=None,
    ) -> None:
        if share > 1 and (static_neurons is not None or not registered):
            raise ValueError("only a registered requantizer with per-beat constants is shared")
        self.layer = layer
        self.offsets = [int(o) for o in (layer.offset if offsets is None else offsets)]
        self.consts_layout = constants_layout(layer)
        self.n_lanes = n_lanes
        self.static_neurons = static_neurons
        self.units, self.steps, self.latency = requant_schedule(n_lanes, share, registered)
        self.t_width = requant_width(layer)
        # Deliberate bugs for the cosimulation self-check (rtl_gen/faults.py); never set otherwise.
        self.fault_shift_error = 0  # shift right by R + this
        self.fault_no_saturation = False  # no clamp at the top of the output range: wrap
        lo, hi = output_range(layer.output_bits, layer.output_signed)
        self.output_shape = range_shape(lo, hi)
        if static_neurons is not None and len(static_neurons) != n_lanes:
            raise ValueError("static_neurons needs one entry per lane")
        self.folds = -(-layer.out_features // n_lanes)
        self.word_layout = data.ArrayLayout(self.consts_layout, self.units)
        fields = {"acc": data.ArrayLayout(acc_shape, n_lanes)}
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout(fields))),
                "o": Out(stream.Signature(data.ArrayLayout(self.output_shape, n_lanes))),
            }
        )

    @property
    def constant_depth(self) -> int:
        """Words of the constants ROM (at least 2: a one-word memory has no address)."""
        return max(2, self.folds * self.steps)

    def constant_words(self) -> list[list[dict]]:
        """Word ``f * steps + s``: the constants of lanes ``s * units + u`` of fold ``f``, that
        is of neurons ``f * n_lanes + s * units + u`` (all zero for padding)."""
        layer = self.layer
        zeros = [0] * layer.scale_terms
        padding = {"sign": zeros, "shift": zeros, "offset": 0}
        ranges = shift_ranges(layer)
        words = []
        for f in range(self.folds):
            for s in range(self.steps):
                word = []
                for u in range(self.units):
                    lane = s * self.units + u
                    j = f * self.n_lanes + lane
                    if lane < self.n_lanes and j < layer.out_features:
                        word.append(
                            {
                                "sign": [int(v) for v in layer.scale_sign[j]],
                                "shift": self._rom_shifts(j, ranges),
                                "offset": self.rom_offset(j),
                            }
                        )
                    else:
                        word.append(padding)
                words.append(word)
        return words

    def _rom_shifts(self, neuron: int, ranges: list[tuple[int, int]]) -> list[int]:
        """The shifts that the ROM holds for ``neuron``: ``h - h_min`` per term (0 where the
        term's sign is 0)."""
        layer = self.layer
        return [
            int(layer.scale_shift[neuron, k]) - lo if layer.scale_sign[neuron, k] else 0
            for k, (lo, _) in enumerate(ranges)
        ]

    def rom_offset(self, neuron: int) -> int:
        """The offset that the ROM holds for ``neuron``: its offset plus the rounding constant
        plus one per negative scale term (each ``-(acc << h)`` is computed as its ones'
        complement, ``-v = ~v + 1``, the ``+1`` gathered here), modulo ``2^requant_width``.
        So the datapath has no negation and no constant add: ``t = offset' + sum_k term_k``.
        """
        negative = int((self.layer.scale_sign[neuron] < 0).sum())
        return wrap_signed(self.offsets[neuron] + self.layer.rounding + negative, self.t_width)

    def _constants_rom(self, m: Module, consume) -> tuple:
        """The constants ROM, read in order one word ahead: its data is the word of the step
        being computed; ``consume`` (that step is done) fetches the next. Returns the word and
        ``primed`` (the first word has been read since reset)."""
        depth = self.constant_depth
        m.submodules.constants = rom = Memory(
            shape=self.word_layout,
            depth=depth,
            init=self.constant_words(),
            # Yosys and Vivado honour rom_style; left alone, Yosys may build it in LUTs.
            attrs={"rom_style": "block"},
        )
        rd = rom.read_port()
        addr = Signal(range(depth), name="consts_addr")
        primed = Signal(name="consts_primed")
        fetch = Signal(name="consts_fetch")
        last_word = self.folds * self.steps - 1
        m.d.comb += [fetch.eq(consume | ~primed), rd.addr.eq(addr), rd.en.eq(fetch)]
        with m.If(fetch):
            m.d.sync += [primed.eq(1), addr.eq(Mux(addr == last_word, 0, addr + 1))]
        return rd.data, primed

    def _t_static(self, m: Module, acc, neuron: int | None, t: Signal) -> None:
        layer = self.layer
        if neuron is None:
            m.d.comb += t.eq(layer.rounding)
            return
        expr = self.offsets[neuron] + layer.rounding
        for k in range(layer.scale_terms):
            sign, shift = int(layer.scale_sign[neuron, k]), int(layer.scale_shift[neuron, k])
            if sign > 0:
                expr = expr + (acc << shift)
            elif sign < 0:
                expr = expr - (acc << shift)
        m.d.comb += t.eq(expr)

    def _t_dynamic(self, m: Module, acc, consts, t: Signal, lane: int) -> None:
        # Everything modulo 2^width (t is truncated to it): a term is acc << h, its ones'
        # complement where the sign is negative (the +1 is in the ROM offset), 0 where the
        # sign is 0; AND and XOR gates, which merge into the adders' LUTs.
        expr = consts.offset
        width = self.t_width
        for k, (h_min, bits) in enumerate(shift_ranges(self.layer)):
            shifted = Signal(unsigned(width), name=f"shifted{lane}_{k}")
            # acc << h = (acc << h_min) << (h - h_min): a shifter of ``bits`` stages.
            shift = consts.shift[k][:bits] if bits else 0
            m.d.comb += shifted.eq((acc << h_min) << shift)  # truncated: exact modulo 2^width
            nonzero, negative = consts.sign[k][0], consts.sign[k][1]
            term = (shifted ^ negative.replicate(width)) & nonzero.replicate(width)
            expr = expr + term
        m.d.comb += t.eq(expr)

    def _clamp(self, m: Module, t: Signal, lane: int) -> Signal:
        """``t >> R`` saturated to the output range."""
        layer = self.layer
        lo, hi = output_range(layer.output_bits, layer.output_signed)
        shift = layer.requant_shift + self.fault_shift_error
        v = Signal(signed(self.t_width - shift), name=f"v{lane}")
        m.d.comb += v.eq(t[shift:].as_signed())
        y = Signal(self.output_shape, name=f"y{lane}")
        top = v if self.fault_no_saturation else hi
        m.d.comb += y.eq(Mux(v > hi, top, Mux(v < lo, lo, v)))
        return y

    def elaborate(self, platform) -> Module:
        if self.static_neurons is None and self.latency > 0:
            return self._elaborate_stepped()
        m = Module()
        if self.static_neurons is None:
            # Combinational, per-beat constants: a beat passes once its word is on the ROM's
            # output, and taking it fetches the next.
            consts, primed = self._constants_rom(m, self.i.valid & self.i.ready)
            m.d.comb += [
                self.o.valid.eq(self.i.valid & primed),
                self.i.ready.eq(self.o.ready & primed),
            ]
            advance = None
        else:
            advance = stall_pipeline(m, self.i, self.o, self.latency, "requant")
        for lane in range(self.n_lanes):
            acc = self.i.payload.acc[lane]
            t = Signal(signed(self.t_width), name=f"t{lane}")
            if self.static_neurons is not None:
                self._t_static(m, acc, self.static_neurons[lane], t)
            else:
                self._t_dynamic(m, acc, consts[lane], t, lane)
            y = self._clamp(m, t, lane)
            if advance is None:
                m.d.comb += self.o.payload[lane].eq(y)
            else:
                with m.If(advance):
                    m.d.sync += self.o.payload[lane].eq(y)
        return m

    def _elaborate_stepped(self) -> Module:
        """Registered, per-beat constants: ``units`` units over ``steps`` cycles per beat (one
        step, all lanes at once, when not shared)."""
        m = Module()
        step = Signal(range(max(2, self.steps)), name="step")
        o_valid = Signal(name="o_valid")
        # Start a beat only when the output register is free (or being emptied this cycle);
        # once started, it stays empty until the last step fills it.
        go = Signal(name="go")
        last = step == self.steps - 1
        consts_word, primed = self._constants_rom(m, go)
        m.d.comb += [
            go.eq(self.i.valid & primed & ((step != 0) | ~o_valid | self.o.ready)),
            self.i.ready.eq(go & last),
            self.o.valid.eq(o_valid),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        with m.If(go):
            with m.If(last):
                m.d.sync += [step.eq(0), o_valid.eq(1)]
            with m.Else():
                m.d.sync += step.eq(step + 1)
        acc_shape = self.i.payload.acc.shape().elem_shape
        for unit in range(self.units):
            lanes = {s: s * self.units + unit for s in range(self.steps)}
            lanes = {s: lane for s, lane in lanes.items() if lane < self.n_lanes}
            acc = Signal(acc_shape, name=f"acc_u{unit}")
            if self.steps == 1:
                m.d.comb += acc.eq(self.i.payload.acc[unit])
            else:
                with m.Switch(step):
                    for s, lane in lanes.items():
                        # The unit's last step takes every other value of ``step`` (values
                        # it never stores): the case is full, as Verilator's lint asks.
                        with m.Default() if s == max(lanes) else m.Case(s):
                            m.d.comb += acc.eq(self.i.payload.acc[lane])
            t = Signal(signed(self.t_width), name=f"t_u{unit}")
            self._t_dynamic(m, acc, consts_word[unit], t, unit)
            y = self._clamp(m, t, unit)
            for s, lane in lanes.items():
                with m.If(go & (step == s)):
                    m.d.sync += self.o.payload[lane].eq(y)
        return m
