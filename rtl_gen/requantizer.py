"""The multiplier-free requantization of docs/integer-model.md, lane by lane."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerLayer, output_range
from rtl_gen.pipeline import range_shape, stall_pipeline
from rtl_gen.plan import REQUANT_ROM_STAGES, requant_schedule
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
    multiplexer; with ``constants_in_logic`` (a ROM of a few words, where a block would be
    mostly empty) it asks for logic instead. Either way the read is registered: same timing.

    Ports
    -----
    i : stream of ``{"acc": [n_lanes]}``.
    o : stream of ``[n_lanes]`` outputs (``unsigned(b)`` hidden, ``signed(b)`` last layer);
        ``latency`` cycles after ``i`` (:func:`~rtl_gen.plan.requant_schedule`: 0 when not
        ``registered``, 2 with constants fixed in the circuit, ``steps + 3`` with per-beat
        constants). With per-beat constants the ROM's first word is read in the cycle after
        reset: a beat offered then waits one cycle.
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
        constants_in_logic: bool = False,
    ) -> None:
        if share > 1 and (static_neurons is not None or not registered):
            raise ValueError("only a registered requantizer with per-beat constants is shared")
        self.layer = layer
        self.constants_in_logic = constants_in_logic
        self.offsets = [int(o) for o in (layer.offset if offsets is None else offsets)]
        self.consts_layout = constants_layout(layer)
        self.n_lanes = n_lanes
        self.static_neurons = static_neurons
        self.units, self.steps, self.latency = requant_schedule(
            n_lanes, share, registered, static_neurons is not None
        )
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
            # Yosys honours rom_style (Vivado too, for "block"); left alone, Yosys may build a
            # deep ROM in LUTs, and a shallow one in a block RAM of which it uses a sliver.
            attrs={"rom_style": "logic" if self.constants_in_logic else "block"},
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

    def _terms(self, m: Module, acc, consts, lane: int) -> list[Signal]:
        """The K terms of ``t`` (everything modulo 2^width: t is truncated to it): a term is
        acc << h, its ones' complement where the sign is negative (the +1 is in the ROM
        offset), 0 where the sign is 0; AND and XOR gates, which merge into the shifters'
        LUTs."""
        width = self.t_width
        terms = []
        for k, (h_min, bits) in enumerate(shift_ranges(self.layer)):
            shifted = Signal(unsigned(width), name=f"shifted{lane}_{k}")
            # acc << h = (acc << h_min) << (h - h_min): a shifter of ``bits`` stages.
            shift = consts.shift[k][:bits] if bits else 0
            m.d.comb += shifted.eq((acc << h_min) << shift)  # truncated: exact modulo 2^width
            nonzero, negative = consts.sign[k][0], consts.sign[k][1]
            term = Signal(unsigned(width), name=f"term{lane}_{k}")
            m.d.comb += term.eq((shifted ^ negative.replicate(width)) & nonzero.replicate(width))
            terms.append(term)
        return terms

    @staticmethod
    def _sum(m: Module, offset, terms, t: Signal) -> None:
        expr = offset
        for term in terms:
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
            # Registered: t, then the clamped output (REQUANT_STATIC_STAGES); combinational when
            # the latency is 0.
            advance = stall_pipeline(m, self.i, self.o, self.latency, "requant")
        for lane in range(self.n_lanes):
            acc = self.i.payload.acc[lane]
            t = Signal(signed(self.t_width), name=f"t{lane}")
            if self.static_neurons is not None:
                self._t_static(m, acc, self.static_neurons[lane], t)
            else:
                self._sum(m, consts[lane].offset, self._terms(m, acc, consts[lane], lane), t)
            if advance is None:
                m.d.comb += self.o.payload[lane].eq(self._clamp(m, t, lane))
                continue
            t_r = Signal.like(t, name=f"t{lane}_r")
            y = self._clamp(m, t_r, lane)  # outside the If: no enable in the clamp's logic
            with m.If(advance):
                m.d.sync += [t_r.eq(t), self.o.payload[lane].eq(y)]
        return m

    def _elaborate_stepped(self) -> Module:
        """Registered, per-beat constants: ``units`` units over ``steps`` cycles per beat (one
        step, all lanes at once, when not shared), each step's group through
        ``REQUANT_ROM_STAGES`` registers (the ROM word and the accumulator, the terms, ``t``)
        into the output register, all of them moving together."""
        m = Module()
        steps, units = self.steps, self.units
        step = Signal(range(max(2, steps)), name="step")
        o_valid = Signal(name="o_valid")
        # The pipeline moves unless its last stage holds a group that the output register,
        # full and not being emptied, cannot take. A step is started only when it moves.
        advance = Signal(name="requant_advance")
        go = Signal(name="go")
        last = step == steps - 1
        valids = [Signal(name=f"requant_valid{k}") for k in range(REQUANT_ROM_STAGES)]
        tags = [Signal.like(step, name=f"requant_step{k}") for k in range(REQUANT_ROM_STAGES)]
        consts_word, primed = self._constants_rom(m, go)
        m.d.comb += [
            advance.eq(~valids[-1] | ~o_valid | self.o.ready),
            go.eq(self.i.valid & primed & advance),
            self.i.ready.eq(go & last),
            self.o.valid.eq(o_valid),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_valid.eq(0)
        with m.If(go):
            m.d.sync += step.eq(Mux(last, 0, step + 1))
        with m.If(advance):
            m.d.sync += [valids[0].eq(go), tags[0].eq(step)]
            for k in range(1, REQUANT_ROM_STAGES):
                m.d.sync += [valids[k].eq(valids[k - 1]), tags[k].eq(tags[k - 1])]
            with m.If(valids[-1] & (tags[-1] == steps - 1)):
                m.d.sync += o_valid.eq(1)  # after the clear above: a beat taken and refilled
        acc_shape = self.i.payload.acc.shape().elem_shape
        for unit in range(units):
            lanes = {s: s * units + unit for s in range(steps)}
            lanes = {s: lane for s, lane in lanes.items() if lane < self.n_lanes}
            acc = Signal(acc_shape, name=f"acc_u{unit}")
            if steps == 1:
                m.d.comb += acc.eq(self.i.payload.acc[unit])
            else:
                with m.Switch(step):
                    for s, lane in lanes.items():
                        # The unit's last step takes every other value of ``step`` (values
                        # it never stores): the case is full, as Verilator's lint asks.
                        with m.Default() if s == max(lanes) else m.Case(s):
                            m.d.comb += acc.eq(self.i.payload.acc[lane])
            # Stage 1: the ROM word (straight from the block RAM's output) and the accumulator.
            acc_r = Signal(acc_shape, name=f"acc_u{unit}_r")
            consts_r = Signal(self.consts_layout, name=f"consts_u{unit}_r")
            # Stage 2: the shifted and gated terms, and the offset beside them.
            terms = self._terms(m, acc_r, consts_r, unit)
            terms_r = [Signal.like(term, name=f"{term.name}_r") for term in terms]
            offset_r = Signal(signed(self.t_width), name=f"offset_u{unit}_r")
            # Stage 3: t.
            t = Signal(signed(self.t_width), name=f"t_u{unit}")
            self._sum(m, offset_r, terms_r, t)
            t_r = Signal.like(t, name=f"t_u{unit}_r")
            with m.If(advance):
                m.d.sync += [
                    acc_r.eq(acc),
                    consts_r.eq(consts_word[unit]),
                    offset_r.eq(consts_r.offset),
                    t_r.eq(t),
                ]
                m.d.sync += [r.eq(term) for r, term in zip(terms_r, terms, strict=True)]
            y = self._clamp(m, t_r, unit)
            for s, lane in lanes.items():
                with m.If(advance & valids[-1] & (tags[-1] == s)):
                    m.d.sync += self.o.payload[lane].eq(y)
        return m
