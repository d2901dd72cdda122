"""The layer engine: one dense layer with its requantization, unrolled or folded, around an
explicitly chosen dot-product unit (binary adder trees here, the MAC baseline's multipliers in
:mod:`rtl_gen.mac`)."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerLayer
from rtl_gen.adder_tree import AdderTree
from rtl_gen.mac import MacDotProduct
from rtl_gen.pipeline import range_shape, shape_range, skid_buffer
from rtl_gen.plan import LayerPlan, pack_weight_words
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


class BinaryDotProduct:
    """The binary layers' dot-product unit: adder/subtractor trees, no multiplier.

    Unrolled, the weights are constants folded into one add/subtract tree per neuron. Folded,
    the tree over ``simd`` inputs takes one weight bit per synapse with each beat and adds
    ``x_i`` where it is 1 (+1) and its ones' complement ``ones - x_i`` where it is 0 (XOR
    gates, no subtraction), takes inputs in pairs (``adder_tree = "pair"``: each pair's sum and
    difference once for all neurons, one of them or its complement per neuron), or steers a
    relative-sign tree (``adder_tree = "relative"``). The
    accumulator of neuron ``j`` so ends a constant above its dot product
    (:func:`sign_bit_excess`), which the requantizer's offset absorbs.
    """

    def __init__(self, plan: LayerPlan) -> None:
        self.plan = plan

    def unrolled_tree(self) -> AdderTree:
        layer, plan = self.plan.layer, self.plan
        x_range = (0, layer.input_max)
        return AdderTree(
            layer.out_features, layer.in_features, x_range, layer.weights, plan.pipeline_every
        )

    def folded_tree(self, tag_layout) -> AdderTree:
        plan = self.plan
        return AdderTree(
            plan.pe,
            plan.simd,
            (0, plan.layer.input_max),
            None,
            plan.pipeline_every,
            tag_layout,
            sign_bits=True,
            relative=plan.unit.adder_tree == "relative",
            register_inputs=plan.register_tree_inputs,
            paired=plan.unit.adder_tree == "pair",
        )

    def weight_words(self) -> list[int]:
        """Bit ``p * simd + l`` of word ``f * sf + s`` = weight of neuron ``f * pe + p`` on
        input ``s * simd + l`` being +1 (0 for padding)."""
        return pack_weight_words(self.plan, self.plan.layer.weights > 0, 1)

    def connect_weights(self, m: Module, tree: AdderTree, word) -> None:
        m.d.comb += tree.i.payload.sign.eq(word)

    def requant_offsets(self, tree: AdderTree) -> list[int]:
        """Offsets that absorb each neuron's accumulator excess (:func:`sign_bit_excess`)."""
        layer = self.plan.layer
        return absorbed_offsets(layer, sign_bit_excess(layer, tree, self.plan.synapse_folds))


def dot_product_unit(plan: LayerPlan):
    """The Amaranth side of ``plan.unit``: :class:`BinaryDotProduct` or the MAC baseline's."""
    if plan.unit.kind == "mac":
        return MacDotProduct(plan)
    return BinaryDotProduct(plan)


class LayerEngine(wiring.Component):
    """A dense layer: ``n_out`` neurons over ``n_in`` inputs, ``pe`` neurons and ``simd`` inputs
    per cycle, as its :class:`~rtl_gen.plan.LayerPlan` says.

    Unrolled (``pe = n_out`` and ``simd = n_in``): constant weights, one vector per cycle.
    Folded otherwise: weight words in an on-chip memory (``nf * sf`` words of
    ``plan.weight_word_bits``, ``nf = ceil(n_out / pe)``, ``sf = ceil(n_in / simd)``), one
    accumulator per PE, and per cycle the dot-product unit over ``simd`` inputs. With more than
    one neuron fold, the first writes the input stream's beats into a buffer and every fold
    reads them from there (the first, one cycle after writing). Folded layers take ``nf * sf``
    cycles per vector; ``plan.output_times`` gives the cycle of every output beat.

    Ports
    -----
    i : stream of ``simd`` unsigned inputs; a vector is ``sf`` beats, the last one padded
        (padding lanes are ignored).
    o : stream of ``pe`` outputs; a vector is ``nf`` beats, padding lanes are 0.
    """

    def __init__(self, plan: LayerPlan) -> None:
        layer = plan.layer
        self.plan = plan
        self.layer = layer
        self.pe, self.simd = plan.pe, plan.simd
        self.nf, self.sf = plan.neuron_folds, plan.synapse_folds
        self.unrolled = plan.unrolled
        self.input_shape = unsigned(layer.input_bits)
        self.unit = dot_product_unit(plan)
        if self.unrolled:
            self.tree = self.unit.unrolled_tree()
            static = list(range(layer.out_features))
        else:
            # What travels with a beat through the tree: the accumulators' clear and hand-over.
            # (The requantizer reads the neuron folds' constants in order: no fold index.)
            self.tag_layout = data.StructLayout({"first": 1, "last": 1})
            self.tree = self.unit.folded_tree(self.tag_layout)
            # One neuron fold means PE = n_out: the constants are fixed, as when unrolled.
            static = list(range(self.pe)) if plan.static_constants else None
        self.acc_shape = range_shape(*plan.acc_range)
        # The plan's ranges are the built tree's: nothing can overflow.
        assert self.tree.latency == plan.tree_latency
        if self.unrolled:
            assert self.acc_shape == self.tree.sum_shape
            tree_lo = min(lo for lo, _ in self.tree.lane_ranges)
            tree_hi = max(hi for _, hi in self.tree.lane_ranges)
            assert -layer.acc_bound <= tree_lo and tree_hi <= layer.acc_bound
        else:
            assert tuple(self.tree.lane_ranges[0]) == plan.lane_range
            acc_lo, acc_hi = shape_range(self.acc_shape)
            assert acc_lo <= plan.lane_range[0] and plan.lane_range[1] <= acc_hi
        offsets = None if self.unrolled else self.unit.requant_offsets(self.tree)
        self.requantizer = Requantizer(
            layer,
            self.pe,
            self.acc_shape,
            static,
            plan.requant_registered,
            plan.requant_share,
            offsets,
            plan.constants_in_logic,
        )
        rq = self.requantizer
        assert (rq.units, rq.steps, rq.latency) == (
            plan.requant_units,
            plan.requant_steps,
            plan.requant_latency,
        )
        assert static is not None or rq.constant_depth == plan.requant_rom_depth
        self.output_shape = self.requantizer.output_shape
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(self.input_shape, self.simd))),
                "o": Out(stream.Signature(data.ArrayLayout(self.output_shape, self.pe))),
            }
        )

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
        if self.plan.output_skid:
            skid_buffer(m, rq.o, self.o, "skid")
        else:
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
            shape=unsigned(self.plan.weight_word_bits),
            depth=nf * sf,
            init=self.unit.weight_words(),
            attrs={"rom_style": "block"},
        )
        w_rd = wmem.read_port()

        # Issue stage: neuron fold f, synapse fold s, weight address f * sf + s.
        # At least one bit each: a single fold would otherwise give a zero-width counter.
        fold = Signal(range(max(2, nf)), name="fold")
        beat = Signal(range(max(2, sf)), name="beat")
        waddr = Signal(range(max(2, nf * sf)), name="waddr")
        # fold == 0, kept in a register: it enables the input buffer's writes (on iCE40, which
        # has no LUT RAM, hundreds of flip-flops), and a comparison of the fold counter in
        # front of them was a UP5K design's critical path.
        from_stream = Signal(name="from_stream", init=1)

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
                m.d.sync += [
                    beat.eq(0),
                    fold.eq(Mux(fold == nf - 1, 0, fold + 1)),
                    from_stream.eq(fold == nf - 1),
                ]
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
        self.unit.connect_weights(m, tree, w_rd.data)

        # The tree's sums reach the accumulators through a skid buffer when pipelined: the
        # tree's stage enables (thousands of registers) and the weight memory's read enable
        # then wait on one register, not on the requantizer's step and the hand-over.
        if self.plan.tree_skid:
            sums = tree.o.signature.create(path=("tree_skid",))
            skid_buffer(m, tree.o, sums, "tree_skid")
        else:
            sums = tree.o

        # Accumulators: acc_p += lane_p (the dot product plus ones per -1 weight); on a fold's
        # last beat, hand over.
        tag = sums.payload.tag
        take = Signal(name="take")
        out_valid = Signal(name="acc_valid")
        m.d.comb += [
            sums.ready.eq(~tag.last | ~out_valid | rq.i.ready),
            take.eq(sums.valid & sums.ready),
            rq.i.valid.eq(out_valid),
        ]
        with m.If(rq.i.valid & rq.i.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(take & tag.last):
            m.d.sync += out_valid.eq(1)
        for p in range(pe):
            acc = Signal(self.acc_shape, name=f"acc{p}")
            partial = sums.payload.sum[p]
            updated = Mux(tag.first, 0, acc) + partial
            with m.If(take):
                with m.If(tag.last):
                    m.d.sync += rq.i.payload.acc[p].eq(updated)
                with m.Else():
                    m.d.sync += acc.eq(updated)
