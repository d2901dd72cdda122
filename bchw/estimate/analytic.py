"""The analytical resource model: closed-form counts per layer, no synthesis.

For every block the generator builds (adder or multiply tree, accumulators, requantizer, issue
stage, weight and constant memories, links between layers, argmax), :func:`layer_counts` counts
family-independent primitives from the integer model, the folding and the widths alone:

``tree``
    adder bits of the dot-product trees (every node a kept, carry-chain add);
``add``
    bits of the other two-input adders, subtractors and comparators (accumulators,
    requantizers, counters, the argmax), which Yosys may merge into multi-operand adds;
``ftree``
    the part of ``tree`` in folded layers (trees over weight bits from memory), which Yosys
    maps to carry chains at about twice the rate of an unrolled layer's constant trees;
``leaf``
    a folded binary tree's XOR gates, one per input bit (input bit XOR weight bit): a
    primitive of their own, since some families merge them into the carry chain's LUTs;
``gate``
    other two-input gate bits (the accumulators' clear on a fold's first beat, a per-beat
    requantizer's term gating);
``mux``
    2:1 multiplexer bits (an n-input multiplexer counts n - 1);
``reg``
    flip-flop bits outside memories, except:
``preg``
    the MAC baseline's product registers (a DSP block absorbs them);
``mul``
    partial-product bits of multipliers whose both operands vary (``a x k`` each);
``cmul``
    adder bits of constant multipliers (shift-and-add over the constant's signed digits);
``n_mul``
    multipliers that a DSP block can take (one block each: every one here is at most 16 x 16);
``memories``
    each memory's depth, width, whether it is read-only and whether the generator asks for
    block RAM (the weights and all but the shallowest requantizer constants: ``rom_style =
    "block"``);
``rom_lut``
    LUTs of a shallow constants ROM that the generator asks to build in logic, added to the
    LUT figure as counted (no fitted cost).

The counts come from the design plan (:mod:`rtl_gen.plan`: folds, ranges, widths, sharing),
not from a circuit. :func:`resources` turns them into LUT, FF, carry, LUT-RAM, block-RAM and
DSP figures per FPGA family with per-primitive costs (``coefficients.json``, read by
:func:`load_coefficients`), fitted once by ``benchmarks/fit_estimates.py`` to Yosys runs on the
designs of :data:`bchw.estimate.calibration.CALIBRATION_DESIGNS`; the error against Yosys on
held-out designs is measured and written in docs/estimates.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from rtl_gen.conv_plan import ArgmaxStage, ConvDesignPlan, PoolStage, WindowStage
from rtl_gen.plan import (
    REQUANT_ROM_STAGES,
    DesignPlan,
    FifoLink,
    LayerPlan,
    VectorBufferLink,
    argmax_every,
)
from rtl_gen.ranges import (
    constants_bits,
    counter_bits,
    flip_node_range,
    ones,
    pair_up,
    product_range,
    registers_after,
    requant_width,
    shift_ranges,
    signed_max,
    signed_node,
    tree_levels,
)
from rtl_gen.ranges import width as range_bits

PRIMITIVES = (
    "tree", "ftree", "leaf", "add", "gate", "mux", "reg", "preg", "mul", "cmul", "n_mul", "rom_lut"
)  # fmt: skip
RESOURCES = ("lut", "ff", "carry", "lutram", "bram", "dsp")
# Package data (benchmarks/fit_estimates.py rewrites it in a checkout).
COEFFICIENTS_PATH = files("bchw.estimate").joinpath("coefficients.json")


@dataclass
class Counts:
    """Primitive counts of one part of a design."""

    tree: int = 0
    ftree: int = 0
    add: int = 0
    leaf: int = 0
    gate: int = 0
    mux: int = 0
    reg: int = 0
    preg: int = 0
    mul: int = 0
    cmul: int = 0
    n_mul: int = 0
    # LUTs counted as they are, not through a fitted cost: a shallow constants ROM built in
    # logic, one LUT4 per bit per 16 words (an upper bound: Yosys folds the constant bits).
    rom_lut: int = 0
    # Constant multipliers (not by a power of two) by product width: DSP candidates.
    cmul_widths: dict[int, int] = field(default_factory=dict)
    # depth, width, read-only, block RAM asked for
    memories: list[tuple[int, int, bool, bool]] = field(default_factory=list)

    def __iadd__(self, other: Counts) -> Counts:
        for name in PRIMITIVES:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.memories = self.memories + other.memories
        for width, count in other.cmul_widths.items():
            self.cmul_widths[width] = self.cmul_widths.get(width, 0) + count
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree": self.tree,
            "ftree": self.ftree,
            "add": self.add,
            "leaf": self.leaf,
            "gate": self.gate,
            "mux": self.mux,
            "reg": self.reg,
            "preg": self.preg,
            "mul": self.mul,
            "cmul": self.cmul,
            "n_mul": self.n_mul,
            "rom_lut": self.rom_lut,
            "memories": [list(m) for m in self.memories],
            "cmul_widths": dict(self.cmul_widths),
        }


def tree_counts(
    leaves: list[tuple[int, int, int]], pipeline_every: int, first_level: int = 1
) -> tuple[int, int]:
    """Adder bits and register bits of one balanced tree, whose first adder level is level
    ``first_level`` of the pipeline's count (2 over paired leaves)."""
    levels = tree_levels(len(leaves)) + first_level - 1
    register_levels = [r - first_level + 1 for r in registers_after(levels, pipeline_every)]
    add = reg = level = 0
    terms = leaves
    while len(terms) > 1:
        level += 1
        paired = [signed_node(terms[k], terms[k + 1]) for k in range(0, len(terms) - 1, 2)]
        add += sum(range_bits(lo, hi) for _, lo, hi in paired)
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
        if level in register_levels:
            reg += sum(range_bits(lo, hi) for _, lo, hi in terms)
    if terms and terms[0][0] < 0:  # an all-negative lane ends with one negation
        add += range_bits(-terms[0][2], -terms[0][1])
    return add, reg


def relative_tree_counts(
    n_inputs: int, input_range: tuple[int, int], pipeline_every: int
) -> tuple[int, int, int]:
    """Adder bits, complement-gate bits and register bits of one lane of a relative-sign tree
    (``AdderTree`` with ``relative``)."""
    register_levels = registers_after(tree_levels(n_inputs), pipeline_every)
    totals = {"add": 0, "leaf": 0, "reg": 0}

    def combine(a, b, *_):
        node = flip_node_range(a, b)
        totals["add"] += range_bits(*node)
        totals["leaf"] += range_bits(*b)
        return node

    def registers(nodes, level):
        if level in register_levels:
            totals["reg"] += sum(range_bits(*node) + 1 for node in nodes)  # value and flip
        return nodes

    root = pair_up([input_range] * n_inputs, combine, registers)
    totals["leaf"] += range_bits(*root)  # the root's complement, in front of the accumulator
    return totals["add"], totals["leaf"], totals["reg"]


def _csd_digits(value: int) -> int:
    """Nonzero digits of ``value`` in canonical signed-digit form."""
    value, digits = abs(int(value)), 0
    while value:
        if value & 1:
            digits += 1
            value -= 2 - (value & 3)  # +1 or -1 digit, whichever leaves a run of zeros
        value >>= 1
    return digits


def _requantizer(plan: LayerPlan) -> Counts:
    """The layer's requantizer (rtl_gen.requantizer): constants fixed in the circuit with one
    neuron fold, else per-beat constants from its ROM, computed by ``plan.requant_units``
    time-shared units over ``plan.requant_steps`` cycles."""
    layer, lanes = plan.layer, plan.pe
    t = requant_width(layer)
    v = t - layer.requant_shift
    c = Counts()
    if plan.static_constants:
        # Per neuron: one add per nonzero scale term (the offset and rounding fold into them).
        c.add += t * int((layer.scale_sign[:lanes] != 0).sum())
        units = lanes
    else:
        k = layer.scale_terms
        shift_stages = sum(bits for _, bits in shift_ranges(layer))
        units, steps = plan.requant_units, plan.requant_steps
        # Per unit: K barrel shifters, K terms gated (XOR for the sign, AND for a zero term)
        # and K adds onto the ROM's offset; shared units pick their lane's accumulator with a
        # steps-way multiplexer.
        c.mux += units * t * shift_stages
        c.gate += units * k * t
        c.add += units * k * t
        # The constants ROM: one word of ``units`` constants per step of each neuron fold,
        # read in order (an address counter and a primed bit), in block RAM; a shallow one in
        # logic, each bit a LUT4 function per 16 words, its read register beside it.
        words = plan.requant_rom_depth
        word_bits = units * constants_bits(layer)
        if plan.constants_in_logic:
            c.rom_lut += word_bits * math.ceil(words / 16)
            c.reg += word_bits
        else:
            c.memories.append((words, word_bits, True, True))
        c.add += counter_bits(words)
        c.reg += counter_bits(words) + 1
        if steps > 1:
            c.mux += units * (steps - 1) * plan.acc_width
            c.reg += counter_bits(steps)
            c.add += counter_bits(steps)
    c.add += units * 2 * v  # clamp: two comparisons
    c.mux += units * 2 * layer.output_bits
    if plan.requant_latency == 0:
        return c  # combinational
    c.reg += lanes * layer.output_bits + 1
    if plan.static_constants:
        c.reg += units * v + 1  # the t stage (its low R bits have no load)
    else:
        # The stages before the output: the accumulator and ROM word, the K terms and the
        # offset, t; a valid bit and a step tag each.
        k = layer.scale_terms
        c.reg += units * (plan.acc_width + constants_bits(layer) + (k + 1) * t + v)
        c.reg += REQUANT_ROM_STAGES * (1 + counter_bits(max(2, plan.requant_steps)))
    return c


def _skid(bits: int) -> Counts:
    """A skid buffer (``rtl_gen.pipeline.skid_buffer``) of ``bits``: the held beat, a full bit
    and a multiplexer per bit."""
    return Counts(reg=bits + 1, mux=bits)


def _output_skid(plan: LayerPlan) -> Counts:
    """The skid buffer on a pipelined engine's output."""
    return _skid(plan.pe * plan.layer.output_bits) if plan.output_skid else Counts()


def layer_counts(plan: LayerPlan) -> Counts:
    """Primitive counts of one layer engine (binary, its folded tree ``plan.unit.adder_tree``,
    or the MAC baseline's, as ``plan.unit`` says)."""
    layer = plan.layer
    n_out, b, x_max = layer.out_features, layer.input_bits, layer.input_max
    pe, simd, nf, sf = plan.pe, plan.simd, plan.neuron_folds, plan.synapse_folds
    weight_bits = plan.unit.weight_bits
    binary = plan.unit.kind == "binary"
    c = Counts()
    if plan.unrolled:
        # Unrolled: constant weights, one tree per neuron over all inputs.
        for j in range(n_out):
            row = layer.weights[j]
            if binary:
                leaves = [(int(s), 0, x_max) for s in row]
            else:
                leaves = [(1, *product_range(w, x_max)) for w in row]
                c.cmul += sum((_csd_digits(w) - 1) * (b + int(abs(w)).bit_length()) for w in row)
                for (_, lo, hi), w in zip(leaves, row, strict=True):
                    if abs(int(w)) & (abs(int(w)) - 1):  # a power of two is a shift
                        bits = range_bits(lo, hi)
                        c.cmul_widths[bits] = c.cmul_widths.get(bits, 0) + 1
                c.preg += sum(range_bits(lo, hi) for _, lo, hi in leaves)  # product registers
            add, reg = tree_counts(leaves, plan.pipeline_every)
            c.tree += add
            c.reg += reg
        c.reg += plan.tree_latency  # valid bits
        c += _requantizer(plan)
        c += _output_skid(plan)
        return c

    tag_width = 2  # first, last
    if binary and plan.unit.adder_tree == "relative":
        # Subtractions whose right operand is complemented or not (a gate per bit, counted as
        # a leaf: the same XOR in front of an adder), node flips registered with the values.
        lane_add, lane_leaf, lane_reg = relative_tree_counts(simd, (0, x_max), plan.pipeline_every)
        c.tree += pe * lane_add
        c.ftree += pe * lane_add
        c.leaf += pe * lane_leaf
        c.reg += pe * lane_reg
    elif binary and plan.unit.adder_tree == "pair":
        # Each input pair's sum and difference once per layer (the first adder level), then per
        # lane a LUT per bit picking one or its complement (counted as a leaf), and the tree
        # over those; the pair leaves take the first level's register and a folded layer's
        # input register, as AdderTree registers them.
        x_width = range_bits(0, x_max)
        pairs, odd = divmod(simd, 2)
        full = 2 * ones(x_max) + 1
        shared = 2 * pairs * range_bits(0, full - 1)
        leaves = [(1, 0, full)] * pairs + [(1, 0, ones(x_max))] * odd
        lane_add, lane_reg = tree_counts(leaves, plan.pipeline_every, first_level=2)
        leaf_bits = pairs * range_bits(0, full) + odd * x_width
        c.tree += pe * lane_add + shared
        c.ftree += pe * lane_add + shared
        c.reg += pe * lane_reg
        c.leaf += pe * leaf_bits
        first_level = 1 in registers_after(tree_levels(simd), plan.pipeline_every)
        c.reg += pe * leaf_bits * (int(plan.register_tree_inputs) + int(first_level))
    elif binary:
        # Leaves x_i or its ones' complement (XOR with the weight bit); the accumulators end
        # ones * zeros_j high, which the requantizer's offsets absorb.
        x_width = range_bits(0, x_max)
        lane_add, lane_reg = tree_counts([(1, 0, ones(x_max))] * simd, plan.pipeline_every)
        c.tree += pe * lane_add
        c.ftree += pe * lane_add
        c.reg += pe * lane_reg
        c.leaf += pe * simd * x_width
    else:
        bound = signed_max(weight_bits) * x_max
        leaf = (1, -bound, bound)
        lane_add, lane_reg = tree_counts([leaf] * simd, plan.pipeline_every)
        c.tree += pe * lane_add
        c.ftree += pe * lane_add
        c.reg += pe * lane_reg
        c.preg += pe * simd * range_bits(leaf[1], leaf[2])
        c.mul += pe * simd * b * weight_bits
        c.n_mul += pe * simd
    c.reg += plan.tree_latency * (1 + tag_width)
    # What a folded pipelined layer registers in front of its tree (pair leaves: above).
    tree = plan.unit.adder_tree if binary else "mac"
    if plan.register_tree_inputs and tree == "xor":
        c.reg += pe * simd * range_bits(0, x_max)  # the XOR leaves
    elif plan.register_tree_inputs and tree in ("relative", "mac"):
        c.reg += simd * b + plan.weight_word_bits  # the inputs and the weight word
    # Issue stage: counters, valid bits, the tag; with one neuron fold the input register,
    # with more the buffer and a read stage (valid, addresses, tag) in front of it.
    counters = counter_bits(nf) + counter_bits(sf) + counter_bits(nf * sf)
    c.add += counters
    c.reg += counters + 2 + tag_width
    if nf > 1:
        c.reg += 1 + counter_bits(sf) + counter_bits(nf * sf) + tag_width
    else:
        c.reg += simd * b
    if plan.tree_skid:  # between the tree and the accumulators: the sums and the tag
        c += _skid(pe * range_bits(*plan.lane_range) + tag_width)
    # Accumulators (clear on a fold's first beat), and the hand-over register to requantize.
    acc_width = plan.acc_width
    c.gate += pe * acc_width
    c.add += pe * acc_width
    c.reg += 2 * pe * acc_width + 1
    c.memories.append((nf * sf, plan.weight_word_bits, True, True))
    if nf > 1:
        c.memories.append((max(2, sf), simd * b, False, False))
    c += _requantizer(plan)
    c += _output_skid(plan)
    return c


def fifo_counts(width: int, depth: int) -> Counts:
    """``BeatFIFO``: Amaranth's SyncFIFOBuffered, a memory of ``depth - 1`` and an output
    register, with read and write pointers and a level counter."""
    p = counter_bits(depth)
    return Counts(add=3 * p, reg=width + 3 * p + 2, memories=[(depth - 1, width, False, False)])


def vector_buffer_counts(link: VectorBufferLink, width: int) -> Counts:
    """``VectorBuffer``: two banks of ``n`` registers, read through a multiplexer per lane."""
    n, in_beats, out_beats = link.n, link.in_beats, link.out_beats
    used = min(n, link.out_lanes * out_beats)
    return Counts(
        add=counter_bits(in_beats) + counter_bits(out_beats),
        reg=2 * n * width + counter_bits(in_beats) + counter_bits(out_beats) + 4,
        mux=used * width * 2 - link.out_lanes * width,  # 2 * out_beats inputs per lane, n values
    )


def argmax_counts(n: int, width: int, pipeline_every: int, scan: bool = False) -> Counts:
    """The argmax: a tree of ``n - 1`` comparators and multiplexers, registered per level when
    pipelined, or a scan (``ScanArgmax``): an ``n``-way multiplexer of the scores into one
    comparator, the running maximum and its index, the counter."""
    index = max(1, (n - 1).bit_length())
    if scan:
        return Counts(
            add=width + 2 * index,  # the comparator, the counter and its end
            mux=(n - 1) * width + width + index,  # the n-way read, the maximum's load
            reg=width + 2 * index + 2,
        )
    levels = registers_after(tree_levels(n), argmax_every(pipeline_every))
    c = Counts(add=(n - 1) * width, mux=(n - 1) * (width + index))
    # Each register level holds the surviving candidates and a copy of all scores.
    survivors, level = n, 0
    while survivors > 1:
        level += 1
        survivors = (survivors + 1) // 2
        if level in levels:
            c.reg += survivors * (width + index) + n * width + 1
    return c


def window_counts(stage: WindowStage) -> Counts:
    """``SlidingWindow``: a line buffer of ``k + 1`` rows (a RAM of ``(k + 1) * W`` pixels;
    counted as block RAM from 32 pixels deep, where Yosys put the blocks measured, else left
    to the family's mapping) whose output the beats are taken from; per output lane, a
    multiplexer over the values its phases send there; the gather register and its inputs;
    the padding's zero on each channel bit; the reader's counters and address arithmetic.
    Set against Yosys on window blocks alone (docs/estimates.md has the table: within 15 %
    of its LUTs on windows of 32 and 128 channels with SIMD up to a pixel, over where a beat
    gathers a whole window, under on small ones whose line buffer Yosys puts in LUT RAM)."""
    w, k, bits, c = stage.width, stage.kernel, stage.bits, stage.channels
    depth = (k + 1) * w
    addr = counter_bits(depth)
    rows, cols = counter_bits(stage.height + k + 1), counter_bits(w + k + 1)
    counters = (
        2 * counter_bits(w) + 3 * addr + 2 * counter_bits(stage.out_height)
        + 3 * counter_bits(k * k) + counter_bits(len(stage.phases)) + 2
    )  # fmt: skip
    sources: dict[int, set] = {}  # output lane -> values its phases send
    gather: dict[int, set] = {}  # gather lane -> values written into it
    for phase in stage.phases:
        for lane in range(phase.gathered + phase.take):
            source = ("g", lane) if lane < phase.gathered else phase.offset + lane - phase.gathered
            sources.setdefault(lane, set()).add(source)
            if not phase.full and lane >= phase.gathered:
                gather.setdefault(lane, set()).add(source)
    choices = sum(len(v) - 1 for v in sources.values()) + sum(len(v) for v in gather.values())
    return Counts(
        add=counters + 4 * addr + 4 * rows + 4 * cols,  # counters, wraps, compares, row/col
        mux=(choices + c) * bits,
        # The gather register, and the write-through bypass of the line buffer's read port
        # (a pixel wide) that Yosys adds to a block RAM.
        reg=(stage.gather_lanes + c) * bits + counters,
        memories=[(max(2, depth), c * bits, False, depth >= 32)],
    )


def pool_counts(stage: PoolStage) -> Counts:
    """``MaxPool``: a RAM of one row of block maxima, read transparently (a forwarding
    multiplexer per bit), a comparator and a multiplexer per channel, the arriving pixel's and
    the read maxima's registers, and the counters (about 4.5 multiplexer bits per channel bit,
    measured on pooling blocks alone)."""
    c, bits = stage.channels, stage.bits
    wo = stage.width // stage.size
    counters = (
        2 * counter_bits(stage.width)
        + 2 * counter_bits(stage.height)
        + 2 * counter_bits(stage.size)
    )
    return Counts(
        add=c * bits + counters,
        mux=(9 * c * bits) // 2,
        reg=2 * c * bits + counters + counter_bits(wo) + 4,
        memories=[(max(2, wo), c * bits, False, False)],
    )


def conv_design_counts(plan: ConvDesignPlan) -> list[dict[str, Any]]:
    """Counts per part of a convolutional design: per convolution or dense layer its engine
    (``layer k``) and the streaming blocks around it (``layer k streams``: its window, and the
    gather, pooling and flatten after it), then the output (argmax). The streaming parts have
    no multiplier in either design: :func:`resources` prices them with the LUT-only costs in
    both flows (the DSP flow's costs, fitted on MLP engines, do not see their multiplexers)."""
    engines: list[Counts] = []
    streams: list[Counts] = [Counts()]  # streams[k]: the window before engine k, links after
    bits = plan.model.input_bits
    for stage in plan.stages:
        if isinstance(stage, ArgmaxStage):
            break
        if isinstance(stage, LayerPlan):
            engines.append(layer_counts(stage))
            streams.append(Counts())
            bits = stage.layer.output_bits
            continue
        if isinstance(stage, WindowStage):
            streams[-1] += window_counts(stage)  # before the next engine
            bits = stage.bits
            continue
        if isinstance(stage, PoolStage):
            c = pool_counts(stage)
        elif isinstance(stage, FifoLink):
            c = fifo_counts(stage.lanes * bits, stage.depth)
        else:
            c = vector_buffer_counts(stage, bits)
        # After an engine: its own streams (a leading pool: the first engine's).
        streams[max(0, len(engines) - 1)] += c
    streams.pop()  # the entry opened after the last engine: no window follows it
    parts: list[dict[str, Any]] = []
    for k, engine in enumerate(engines):
        parts.append({"part": f"layer {k}", **engine.as_dict()})
        if streams[k].as_dict() != Counts().as_dict():
            parts.append(
                {"part": f"layer {k} streams", "multiplier_free": True, **streams[k].as_dict()}
            )
    last, argmax = plan.model.layers[-1], plan.stages[-1]
    out = argmax_counts(argmax.classes, last.output_bits, plan.pipeline_every, argmax.scan)
    parts.append({"part": "output", **out.as_dict()})
    return parts


def design_counts(plan: DesignPlan | ConvDesignPlan) -> list[dict[str, Any]]:
    """Counts per part of the whole design: one entry per layer (its engine and the link after
    it), then the output (collector and argmax)."""
    if isinstance(plan, ConvDesignPlan):
        return conv_design_counts(plan)
    parts = []
    for index, layer in enumerate(plan.layers):
        c = layer_counts(layer)
        if index < len(plan.links):
            link = plan.links[index]
            bits = layer.layer.output_bits
            if isinstance(link, FifoLink):
                c += fifo_counts(link.lanes * bits, link.depth)
            else:
                c += vector_buffer_counts(link, bits)
        parts.append({"part": f"layer {index}", **c.as_dict()})
    last, classes = plan.model.layers[-1], plan.model.num_classes
    out = argmax_counts(classes, last.output_bits, plan.pipeline_every, plan.argmax_scan)
    if plan.collector is not None:
        out += vector_buffer_counts(plan.collector, last.output_bits)
    parts.append({"part": "output", **out.as_dict()})
    return parts


# -- from counts to resources -------------------------------------------------------------------


# Memory cells per family: block RAM configurations and LUT-RAM cells as [depth, width], or
# [depth, width, cost] where a family has two sizes of block (Yosys picks the cheapest mapping,
# the fewer cells on a tie). The thresholds below which Yosys keeps a memory out of block RAM
# are fitted (coefficients.json).
GEOMETRY: dict[str, dict[str, Any]] = {
    "ice40": {  # SB_RAM40_4K; no LUT RAM
        "bram_shapes": [[256, 16], [512, 8], [1024, 4], [2048, 2]],
        "lutram_shapes": [],
        "dsp_per_mul": 1,  # SB_MAC16: 16 x 16
    },
    "ecp5": {  # DP16KD / PDPW16KD; TRELLIS_DPR16X4
        "bram_shapes": [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2], [16384, 1]],
        "lutram_shapes": [[16, 4]],
        "lutram_banks": True,
        "dsp_per_mul": 1,  # MULT18X18D
    },
    "xc7": {  # RAMB18E1 / RAMB36E1; RAM32M, RAM64M
        # RAMB36E1 (cost 2) and RAMB18E1 (cost 1), simple dual port; each counts as one block.
        "bram_shapes": [
            *([d, w, 2] for d, w in [[512, 72], [1024, 36], [2048, 18], [4096, 9], [8192, 4]]),
            *([d, w, 1] for d, w in [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2]]),
        ],
        "lutram_shapes": [[32, 6], [64, 3]],
        "lutram_banks": True,
        "dsp_per_mul": 1,  # DSP48E1: 25 x 18
    },
    "gowin": {  # SDPB / DPB; RAM16SDP4
        "bram_shapes": [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2], [16384, 1]],
        "lutram_shapes": [[16, 4]],
        "dsp_per_mul": 1,  # MULT18X18
    },
}


def _cheapest(depth: int, width: int, shapes: list[list[int]]) -> tuple[int, int]:
    """``(cost, cells)`` of the cheapest configuration that holds the memory (``[depth,
    width]`` or ``[depth, width, cost]`` each; the fewer cells where two cost the same)."""
    options = []
    for shape in shapes:
        d, w, cost = (*shape, 1) if len(shape) == 2 else shape
        cells = math.ceil(depth / d) * math.ceil(width / w)
        options.append((cells * cost, cells))
    return min(options)


def _blocks(depth: int, width: int, shapes: list[list[int]]) -> int:
    """Cells of the cheapest configuration that holds the memory."""
    return _cheapest(depth, width, shapes)[1]


def map_memories(memories: list, family: dict[str, Any]) -> dict[str, int]:
    """Where each memory goes, as Yosys's memory mapping puts it: block RAM where the generator
    asks for it (the weights) or where the memory is deep enough (``min_rom_depth`` for ROMs,
    ``min_ram_depth`` for RAMs) and fills its blocks well enough (``min_bits_per_block``), else
    LUT RAM (writable, where the family has it), else logic (ROM bits become LUT functions of
    the address; RAM bits become registers and multiplexers). The thresholds are fitted per
    family (ECP5's RAM thresholds measured, ``benchmarks/fit_estimates.py``); a 7-series RAM
    goes where it costs less (``ram_choice_costs``, measured: :func:`_lutram_costs_more`)."""
    out = {"bram": 0, "bram_cost": 0, "lutram": 0, "rom": 0, "ram": 0, "mem_reg": 0}
    choice = family.get("ram_choice_costs")
    for depth, width, rom, block in memories:
        cost, blocks = _cheapest(depth, width, family["bram_shapes"])
        if choice and not rom:
            to_block = _lutram_costs_more(depth, width, cost, choice, family["lutram_shapes"])
        else:
            deep = depth >= family["min_rom_depth" if rom else "min_ram_depth"]
            to_block = deep and depth * width >= family["min_bits_per_block"] * blocks
        if block or to_block:
            out["bram"] += blocks
            out["bram_cost"] += cost  # a 7-series RAMB36 costs 2, a RAMB18 1; else 1 a block
            continue
        # The synchronous read port's register: its data, except in LUT RAM, which reads
        # asynchronously, so Yosys registers the read address instead where it can (the input
        # buffer, read from a register's address).
        read_register = width
        if rom:
            out["rom"] += depth * width
        elif family["lutram_shapes"] and (
            family.get("lutram_banks") or depth <= max(d for d, _ in family["lutram_shapes"])
        ):
            # Deeper than one LUT-RAM cell, Yosys stacks cells in banks behind a multiplexer
            # (ECP5: 48 x 128 bits in 96 TRELLIS_DPR16X4, tests/estimate/test_analytic.py);
            # modelled so where the calibration measured it ("lutram_banks").
            read_register = max(1, (depth - 1).bit_length())
            out["lutram"] += _blocks(depth, width, family["lutram_shapes"])
        else:
            out["ram"] += depth * width
        out["mem_reg"] += read_register
    return out


def _lutram_costs_more(
    depth: int, width: int, bram_cost: int, costs: dict[str, float], lutram_shapes: list
) -> bool:
    """Whether Yosys puts a RAM in block RAM rather than LUT RAM, by costs as its memory
    mapping weighs them (7-series): LUT RAM per bit of each bank of cells, plus a read
    multiplexer per bit for each bank past the first, against block RAM per cost unit (a
    RAMB18 one, a RAMB36 two). Fitted to 21 bare memories synthesized by Yosys, from 32 x 64
    to 4096 x 1 (tests/estimate/test_analytic.py checks some): 1024 x 2, 256 x 8 and 96 x 16
    stay in LUT RAM, 2048 x 1, 512 x 8 and 65 x 64 go to block RAM."""
    banks = math.ceil(depth / max(d for d, _ in lutram_shapes))
    lutram = width * banks * costs["lutram_bit"] + width * (banks - 1) * costs["bank_mux_bit"]
    return lutram > bram_cost * costs["bram_unit"]


def features(part: dict[str, Any], family: dict[str, Any]) -> dict[str, float]:
    """The quantities a family's per-primitive costs multiply: the counts, the memory bits
    left to logic, and one per part (control)."""
    mapped = map_memories(part["memories"], family)
    out = {k: float(part[k]) for k in PRIMITIVES}
    out.update(
        rom=float(mapped["rom"]),
        ram=float(mapped["ram"]),
        mem_reg=float(mapped["mem_reg"]),
        one=1.0,
    )
    return out


def load_coefficients(path: Path | Traversable = COEFFICIENTS_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def resources(
    parts: list[dict[str, Any]], family: str, dsp: bool, coefficients: dict[str, Any]
) -> dict[str, Any]:
    """LUT, FF, carry, LUT RAM, block RAM and DSP of each part and in total.

    ``dsp``: multipliers go to DSP blocks (the family's default flow), else to LUTs.
    """
    fam = coefficients["families"][family]
    # A design without multipliers (the binary one) maps the same in both flows.
    has_multipliers = any(p["n_mul"] or p["cmul"] for p in parts)
    on_dsp = dsp and fam["dsp_per_mul"] > 0 and has_multipliers
    mode = "dsp" if on_dsp else "nodsp"
    per_part = []
    for part in parts:
        x = features(part, fam)
        mapped = map_memories(part["memories"], fam)
        row = {"part": part["part"]}
        part_mode = "nodsp" if part.get("multiplier_free") else mode
        plain = part.get("multiplier_free") or not has_multipliers
        for resource in ("lut", "ff", "carry"):
            # Logic without multipliers has costs of its own where the family's fit has them.
            weights = fam[resource].get("binary") if plain else None
            weights = weights or fam[resource][part_mode]
            fixed = x["rom_lut"] if resource == "lut" else 0.0  # counted, not fitted
            row[resource] = max(0, round(fixed + sum(w * x[k] for k, w in weights.items())))
        row["lutram"] = mapped["lutram"]
        row["bram"] = mapped["bram"]
        row["bram_cost"] = mapped["bram_cost"]
        constant = sum(
            n for w, n in part.get("cmul_widths", {}).items() if int(w) >= fam["dsp_min_width"]
        )
        row["dsp"] = fam["dsp_per_mul"] * (part["n_mul"] + constant) if on_dsp else 0
        per_part.append(row)
    total = {key: sum(p[key] for p in per_part) for key in (*RESOURCES, "bram_cost")}
    return {"total": total, "parts": per_part}
