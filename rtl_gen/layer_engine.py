"""The layer engine: one binary dense layer with its requantization, unrolled or folded."""

from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerLayer
from rtl_gen import ADDER_TREES
from rtl_gen.adder_tree import AdderTree
from rtl_gen.pipeline import range_shape, shape_range
from rtl_gen.requantizer import Requantizer, absorbed_offsets


def sign_bit_excess(layer: IntegerLayer, tree: AdderTree, sf: int) -> np.ndarray:
    """How far each neuron's accumulator ends above its dot product in a folded binary layer:
    the sum over its ``sf`` weight words of ``tree.excess`` (padding weight bits are 0, i.e.
    -1 on a 0 input). A constant per neuron, absorbed into the requantizer's offset."""
    simd = tree.n_inputs
    padded = np.zeros((layer.out_features, sf * simd), dtype=bool)
    padded[:, : layer.in_features] = layer.weights > 0
    return np.array(
        [sum(tree.excess(row[s * simd : (s + 1) * simd]) for s in range(sf)) for row in padded],
        dtype=object,
    )


class LayerEngine(wiring.Component):
    """A binary dense layer: ``n_out`` neurons over ``n_in`` inputs, ``pe`` neurons and ``simd``
    inputs per cycle.

    Unrolled (``pe = n_out`` and ``simd = n_in``): the weights are constants folded into one
    add/subtract tree per neuron; one vector per cycle. Folded otherwise: weight bits in an
    on-chip memory (``nf * sf`` words of ``pe * simd`` bits, ``nf = ceil(n_out / pe)``,
    ``sf = ceil(n_in / simd)``), one accumulator per PE, and per cycle a tree over ``simd``
    inputs that adds ``x_i`` where the weight is +1 and its ones' complement ``ones - x_i``
    where it is -1 (XOR gates, no subtraction). The accumulator of neuron ``j`` so ends
    ``ones * zeros_j`` above the dot product, ``zeros_j`` being the -1 (and padding) weight bits
    of its row: a constant, absorbed into the requantizer's offset. With more than one
    neuron fold, the first writes the input stream's beats into a buffer and every fold reads
    them from there (the first, one cycle after writing). Folded layers take ``nf * sf``
    cycles per vector. ``adder_tree="relative"`` builds a folded layer's tree as a
    relative-sign tree (:class:`AdderTree`, ``relative``): smaller on 7-series, no smaller on
    iCE40, ECP5 and Gowin; its accumulators' excess is again a constant per neuron, absorbed
    alike.

    Ports
    -----
    i : stream of ``simd`` unsigned inputs; a vector is ``sf`` beats, the last one padded
        (padding lanes are ignored).
    o : stream of ``pe`` outputs; a vector is ``nf`` beats, padding lanes are 0.
    """

    def __init__(
        self,
        layer: IntegerLayer,
        pe: int,
        simd: int,
        pipeline_every: int = 2,
        requant_registered: bool = True,
        adder_tree: str = "xor",
    ) -> None:
        n_in, n_out = layer.in_features, layer.out_features
        problem = ""
        if adder_tree not in ADDER_TREES:
            problem = f"adder tree must be one of {', '.join(ADDER_TREES)}, got {adder_tree!r}"
        elif not 1 <= pe <= n_out:
            problem = f"PE must lie in 1..{n_out}, got {pe}"
        elif not 1 <= simd <= n_in:
            problem = f"SIMD must lie in 1..{n_in}, got {simd}"
        if problem:
            # Never elaborated: keep Amaranth from warning about an unused elaboratable.
            self._MustUse__silence = True
            raise ValueError(problem)
        self.layer = layer
        self.pe, self.simd = pe, simd
        self.nf, self.sf = math.ceil(n_out / pe), math.ceil(n_in / simd)
        self.unrolled = self.nf == 1 and self.sf == 1
        self.pipeline_every = pipeline_every
        self.requant_registered = requant_registered
        self.adder_tree = adder_tree
        self.input_shape = unsigned(layer.input_bits)
        x_max = layer.input_max
        if self.unrolled:
            self.tree = self._unrolled_tree(x_max, pipeline_every)
            acc_shape = self.tree.sum_shape
            static = list(range(n_out))
        else:
            # What travels with a beat through the tree: the accumulators' clear and hand-over.
            # (The requantizer reads the neuron folds' constants in order: no fold index.)
            self.tag_layout = data.StructLayout({"first": 1, "last": 1})
            self.tree = self._folded_tree(x_max, pipeline_every)
            acc_shape = range_shape(*self._acc_range())
            # One neuron fold means PE = n_out: the constants are fixed, as when unrolled.
            static = list(range(pe)) if self.nf == 1 else None
        self.acc_shape = acc_shape
        # No signal can overflow: the accumulator holds every reachable sum, and a folded
        # layer's per-cycle partial sum lies within it.
        acc_lo, acc_hi = shape_range(acc_shape)
        if self.unrolled:
            tree_lo = min(lo for lo, _ in self.tree.lane_ranges)
            tree_hi = max(hi for _, hi in self.tree.lane_ranges)
            assert -layer.acc_bound <= tree_lo and tree_hi <= layer.acc_bound
        else:
            part_lo, part_hi = self._partial_range()
            assert acc_lo <= part_lo and part_hi <= acc_hi
        # A folded PE hands over one result every sf cycles: the PEs share ceil(pe / sf)
        # requantizers, time-multiplexed, at no cost in throughput.
        share = min(self.sf, pe) if static is None and requant_registered else 1
        offsets = None if self.unrolled else self._requant_offsets()
        self.requantizer = Requantizer(
            layer, pe, acc_shape, static, requant_registered, share, offsets
        )
        self.output_shape = self.requantizer.output_shape
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(self.input_shape, simd))),
                "o": Out(stream.Signature(data.ArrayLayout(self.output_shape, pe))),
            }
        )

    # -- the dot-product unit (MacLayerEngine in rtl_gen/mac.py overrides these) ---------------

    def _unrolled_tree(self, x_max: int, pipeline_every: int) -> AdderTree:
        layer = self.layer
        n_out, n_in = layer.out_features, layer.in_features
        return AdderTree(n_out, n_in, (0, x_max), layer.weights, pipeline_every)

    def _folded_tree(self, x_max: int, pipeline_every: int) -> AdderTree:
        # One lane per PE; the weight bits select x_i or its ones' complement (XOR leaves), or
        # steer a relative-sign tree.
        return AdderTree(
            self.pe,
            self.simd,
            (0, x_max),
            None,
            pipeline_every,
            self.tag_layout,
            sign_bits=True,
            relative=self.adder_tree == "relative",
        )

    @property
    def weight_word_bits(self) -> int:
        """Bits of one weight-memory word (one synapse fold of one neuron fold)."""
        return self.pe * self.simd

    def _connect_weights(self, m: Module, tree: AdderTree, word) -> None:
        m.d.comb += tree.i.payload.sign.eq(word)

    def _partial(self, tree: AdderTree, p: int):
        """PE ``p``'s contribution this beat (the dot product plus ``ones`` per -1 weight)."""
        return tree.o.payload.sum[p]

    def _partial_range(self) -> tuple[int, int]:
        return self.tree.lane_ranges[0]

    def _acc_range(self) -> tuple[int, int]:
        """What a folded PE's accumulator holds: ``sf`` partial sums."""
        lo, hi = self.tree.lane_ranges[0]
        return self.sf * lo, self.sf * hi

    def _requant_offsets(self) -> list[int] | None:
        """Offsets that absorb each neuron's accumulator excess (:func:`sign_bit_excess`)."""
        return absorbed_offsets(self.layer, sign_bit_excess(self.layer, self.tree, self.sf))

    # -- timing ------------------------------------------------------------------------------

    @property
    def cycles_per_vector(self) -> int:
        """Initiation interval: cycles between vectors when nothing stalls."""
        return self.nf * self.sf

    @property
    def pipeline_depth(self) -> int:
        """Cycles from issuing a vector's last beat of a fold to that fold's output beat."""
        if self.unrolled:
            return self.tree.latency + self.requantizer.latency
        issue = 3 if self.nf > 1 else 2  # (the read stage, when a buffer is read) + memory
        return issue + self.tree.latency + self.requantizer.latency

    def output_times(self, input_times: list[int]) -> list[int]:
        """Cycle of each output beat of one vector, given when its input beats become valid
        (no back-pressure, engine idle before)."""
        if self.unrolled:
            return [input_times[0] + self.pipeline_depth]
        issue = []
        for beat, arrival in enumerate(input_times):
            issue.append(arrival if beat == 0 else max(arrival, issue[-1] + 1))
        last_fold0 = issue[-1]
        outs = [last_fold0 + self.pipeline_depth]
        for fold in range(1, self.nf):
            outs.append(last_fold0 + fold * self.sf + self.pipeline_depth)
        return outs

    # -- memories ------------------------------------------------------------------------------

    def weight_words(self) -> list[int]:
        """Word ``f * sf + s`` holds bit ``p * simd + l`` = weight of neuron ``f * pe + p`` on
        input ``s * simd + l`` being +1 (0 for padding)."""
        n_out, n_in = self.layer.out_features, self.layer.in_features
        padded = np.zeros((self.nf * self.pe, self.sf * self.simd), dtype=np.uint8)
        padded[:n_out, :n_in] = self.layer.weights > 0
        words = []
        for f in range(self.nf):
            for s in range(self.sf):
                block = padded[f * self.pe : (f + 1) * self.pe, s * self.simd : (s + 1) * self.simd]
                bits = block.reshape(-1)
                words.append(int(sum(int(b) << k for k, b in enumerate(bits) if b)))
        return words

    # -- hardware ------------------------------------------------------------------------------

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.tree = tree = self.tree
        m.submodules.requantizer = rq = self.requantizer
        if self.unrolled:
            m.d.comb += [
                tree.i.valid.eq(self.i.valid),
                self.i.ready.eq(tree.i.ready),
                tree.i.payload.x.eq(self.i.payload),
            ]
            m.d.comb += [
                rq.i.valid.eq(tree.o.valid),
                tree.o.ready.eq(rq.i.ready),
                rq.i.payload.acc.eq(tree.o.payload.sum),
            ]
        else:
            self._elaborate_folded(m, tree, rq)
        m.d.comb += [
            self.o.valid.eq(rq.o.valid),
            rq.o.ready.eq(self.o.ready),
            self.o.payload.eq(rq.o.payload),
        ]
        return m

    def _elaborate_folded(self, m: Module, tree: AdderTree, rq: Requantizer) -> None:
        layer, pe, simd, nf, sf = self.layer, self.pe, self.simd, self.nf, self.sf
        beat_layout = data.ArrayLayout(self.input_shape, simd)
        # Weights live in block RAM, as a hardware engineer would place them: left to itself,
        # Yosys builds a shallow, wide ROM (a binary layer's) as LUT logic that can outgrow the
        # dot-product unit. Yosys and Vivado both honour rom_style.
        m.submodules.weights = wmem = Memory(
            shape=unsigned(self.weight_word_bits),
            depth=nf * sf,
            init=self.weight_words(),
            attrs={"rom_style": "block"},
        )
        w_rd = wmem.read_port()

        # Issue stage: neuron fold f, synapse fold s, weight address f * sf + s.
        # At least one bit each: a single fold would otherwise give a zero-width counter.
        fold = Signal(range(max(2, nf)), name="fold")
        beat = Signal(range(max(2, sf)), name="beat")
        waddr = Signal(range(max(2, nf * sf)), name="waddr")
        from_stream = Signal(name="from_stream")
        m.d.comb += from_stream.eq(fold == 0)

        valid_a = Signal(name="valid_a")
        tag_a = Signal(self.tag_layout, name="tag_a")
        advance = Signal(name="advance_a")
        fire = Signal(name="fire")
        m.d.comb += [
            advance.eq(~valid_a | tree.i.ready),
            fire.eq(advance & (~from_stream | self.i.valid)),
            self.i.ready.eq(advance & from_stream),
        ]
        # Lanes past the last input of the last beat are padding: force them to 0.
        masked = Signal(beat_layout, name="x_masked")
        m.d.comb += masked.eq(self.i.payload)
        first_pad = layer.in_features - (sf - 1) * simd
        for lane in range(first_pad, simd):
            with m.If(beat == sf - 1):
                m.d.comb += masked[lane].eq(0)

        with m.If(fire):
            m.d.sync += waddr.eq(Mux(waddr == nf * sf - 1, 0, waddr + 1))
            with m.If(beat == sf - 1):
                m.d.sync += [beat.eq(0), fold.eq(Mux(fold == nf - 1, 0, fold + 1))]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        x_a = Signal(beat_layout, name="x_a")
        if nf > 1:
            # Fold 0 writes each input beat into the buffer, and every fold, fold 0 included,
            # reads its beats back from there one cycle later (a read stage): the tree takes its
            # input straight from the buffer, with no choice between the stream and the buffer
            # in front of it (a multiplexer per input bit) and no input register. The read
            # never overtakes the write; a new vector's write meets an old read of the same
            # beat at the earliest in the same cycle, and the read gets the old beat.
            # Depth at least 2: a one-entry memory would get a zero-width address.
            valid_r = Signal(name="valid_r")
            waddr_r = Signal.like(waddr, name="waddr_r")
            beat_r = Signal.like(beat, name="beat_r")
            tag_r = Signal(self.tag_layout, name="tag_r")
            m.submodules.buffer = buf = Memory(
                shape=unsigned(simd * layer.input_bits), depth=max(2, sf), init=[]
            )
            b_wr, b_rd = buf.write_port(), buf.read_port()
            with m.If(advance):
                m.d.sync += [
                    valid_r.eq(fire),
                    waddr_r.eq(waddr),
                    beat_r.eq(beat),
                    tag_r.first.eq(beat == 0),
                    tag_r.last.eq(beat == sf - 1),
                    valid_a.eq(valid_r),
                    tag_a.eq(tag_r),
                ]
            m.d.comb += [
                b_wr.addr.eq(beat),
                b_wr.data.eq(masked.as_value()),
                b_wr.en.eq(fire & from_stream),
                b_rd.addr.eq(beat_r),
                b_rd.en.eq(advance),
                w_rd.addr.eq(waddr_r),
                w_rd.en.eq(advance),
                x_a.eq(b_rd.data),
            ]
        else:
            # One neuron fold: each input beat is used once, as it arrives.
            x_reg = Signal(beat_layout, name="x_reg")
            with m.If(advance):
                m.d.sync += [
                    valid_a.eq(fire),
                    x_reg.eq(masked),
                    tag_a.first.eq(beat == 0),
                    tag_a.last.eq(beat == sf - 1),
                ]
            m.d.comb += [w_rd.addr.eq(waddr), w_rd.en.eq(advance), x_a.eq(x_reg)]

        m.d.comb += [
            tree.i.valid.eq(valid_a),
            tree.i.payload.tag.eq(tag_a),
            tree.i.payload.x.eq(x_a),
        ]
        self._connect_weights(m, tree, w_rd.data)

        # Accumulators: acc_p += lane_p (the dot product plus ones per -1 weight); on a fold's
        # last beat, hand over.
        tag = tree.o.payload.tag
        take = Signal(name="take")
        out_valid = Signal(name="acc_valid")
        m.d.comb += [
            tree.o.ready.eq(~tag.last | ~out_valid | rq.i.ready),
            take.eq(tree.o.valid & tree.o.ready),
            rq.i.valid.eq(out_valid),
        ]
        with m.If(rq.i.valid & rq.i.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(take & tag.last):
            m.d.sync += out_valid.eq(1)
        for p in range(pe):
            acc = Signal(self.acc_shape, name=f"acc{p}")
            partial = self._partial(tree, p)
            updated = Mux(tag.first, 0, acc) + partial
            with m.If(take):
                with m.If(tag.last):
                    m.d.sync += rq.i.payload.acc[p].eq(updated)
                with m.Else():
                    m.d.sync += acc.eq(updated)
