"""The analytical resource model: closed-form counts per layer, no synthesis.

For every block the generator builds (adder or multiply tree, accumulators, requantizer, issue
stage, weight and constant memories, links between layers, argmax), :func:`layer_counts` counts
family-independent primitives from the integer model, the folding and the widths alone:

``tree``
    adder bits of the dot-product trees (every node a kept, carry-chain add);
``add``
    bits of the other two-input adders, subtractors and comparators (accumulators,
    requantizers, counters, the argmax), which Yosys may merge into multi-operand adds;
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
    block RAM (the weights and the requantizers' constants: ``rom_style = "block"``).

:func:`estimate` turns counts into LUT, FF, carry, LUT-RAM, block-RAM and DSP figures per
FPGA family with per-primitive costs (``COEFFICIENTS``), fitted once by
``benchmarks/fit_estimates.py`` to Yosys runs on the designs ``bchw.estimate.run`` lists; the
error against Yosys on held-out designs is measured and written in docs/estimates.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bchw.core.intmodel import IntegerLayer, IntegerModel
from rtl_gen.adder_tree import flip_node_range, flipped_range, pair_up, tree_levels
from rtl_gen.pipeline import range_shape, registers_after
from rtl_gen.requantizer import constants_layout, requant_width, shift_ranges

PRIMITIVES = ("tree", "leaf", "add", "gate", "mux", "reg", "preg", "mul", "cmul", "n_mul")
RESOURCES = ("lut", "ff", "carry", "lutram", "bram", "dsp")
COEFFICIENTS_PATH = Path(__file__).with_name("coefficients.json")


@dataclass
class Counts:
    """Primitive counts of one part of a design."""

    tree: int = 0
    add: int = 0
    leaf: int = 0
    gate: int = 0
    mux: int = 0
    reg: int = 0
    preg: int = 0
    mul: int = 0
    cmul: int = 0
    n_mul: int = 0
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
            "add": self.add,
            "leaf": self.leaf,
            "gate": self.gate,
            "mux": self.mux,
            "reg": self.reg,
            "preg": self.preg,
            "mul": self.mul,
            "cmul": self.cmul,
            "n_mul": self.n_mul,
            "memories": [list(m) for m in self.memories],
            "cmul_widths": dict(self.cmul_widths),
        }


def _width(lo: int, hi: int) -> int:
    return range_shape(lo, hi).width


def _bits(n: int) -> int:
    """Bits of a counter over ``n`` states (at least one, as the generator makes them)."""
    return max(1, (max(2, n) - 1).bit_length())


def _combine(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    """Range of a tree node from two children ``(sign, lo, hi)``, as rtl_gen.adder_tree does."""
    sa, la, ha = a
    sb, lb, hb = b
    if sa == sb:
        return sa, la + lb, ha + hb
    if sa > 0:
        return 1, la - hb, ha - lb
    return 1, lb - ha, hb - la


def tree_counts(leaves: list[tuple[int, int, int]], pipeline_every: int) -> tuple[int, int, int]:
    """Adder bits and register bits of one balanced tree, and its latency in registers."""
    register_levels = registers_after(tree_levels(len(leaves)), pipeline_every)
    add = reg = level = 0
    terms = leaves
    while len(terms) > 1:
        level += 1
        paired = [_combine(terms[k], terms[k + 1]) for k in range(0, len(terms) - 1, 2)]
        add += sum(_width(lo, hi) for _, lo, hi in paired)
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
        if level in register_levels:
            reg += sum(_width(lo, hi) for _, lo, hi in terms)
    if terms and terms[0][0] < 0:  # an all-negative lane ends with one negation
        add += _width(-terms[0][2], -terms[0][1])
    return add, reg, len(register_levels)


def relative_tree_counts(
    n_inputs: int, input_range: tuple[int, int], pipeline_every: int
) -> tuple[int, int, int, int, tuple[int, int]]:
    """Adder bits, complement-gate bits, register bits and latency of one lane of a
    relative-sign tree (``AdderTree`` with ``relative``), and its output range."""
    register_levels = registers_after(tree_levels(n_inputs), pipeline_every)
    totals = {"add": 0, "leaf": 0, "reg": 0}

    def combine(a, b, *_):
        node = flip_node_range(a, b)
        totals["add"] += _width(*node)
        totals["leaf"] += _width(*b)
        return node

    def registers(nodes, level):
        if level in register_levels:
            totals["reg"] += sum(_width(*node) + 1 for node in nodes)  # value and flip
        return nodes

    root = pair_up([input_range] * n_inputs, combine, registers)
    totals["leaf"] += _width(*root)  # the root's complement, in front of the accumulator
    lane = flipped_range(*root)
    return totals["add"], totals["leaf"], totals["reg"], len(register_levels), lane


def _csd_digits(value: int) -> int:
    """Nonzero digits of ``value`` in canonical signed-digit form."""
    value, digits = abs(int(value)), 0
    while value:
        if value & 1:
            digits += 1
            value -= 2 - (value & 3)  # +1 or -1 digit, whichever leaves a run of zeros
        value >>= 1
    return digits


def _requantizer(
    layer: IntegerLayer, lanes: int, acc_width: int, share: int, layout=None
) -> Counts:
    """Requantizer of ``lanes`` neurons; ``share`` 0: constants fixed in the circuit, else
    per-beat constants (``layout``) from its ROM with ``ceil(lanes / share)`` time-shared
    units (rtl_gen.requantizer)."""
    t = requant_width(layer)
    v = t - layer.requant_shift
    c = Counts()
    if not share:
        # Per neuron: one add per nonzero scale term (the offset and rounding fold into them).
        c.add += t * int((layer.scale_sign[:lanes] != 0).sum())
        units = lanes
    else:
        k = layer.scale_terms
        shift_stages = sum(bits for _, bits in shift_ranges(layer))
        units = -(-lanes // share)
        steps = -(-lanes // units)
        # Per unit: K barrel shifters, K terms gated (XOR for the sign, AND for a zero term)
        # and K adds onto the ROM's offset; shared units pick their lane's accumulator with a
        # steps-way multiplexer.
        c.mux += units * t * shift_stages
        c.gate += units * k * t
        c.add += units * k * t
        # The constants ROM: one word of ``units`` constants per step of each neuron fold,
        # read in order (an address counter and a primed bit), in block RAM.
        words = max(2, -(-layer.out_features // lanes) * steps)
        c.memories.append((words, units * layout.size, True, True))
        c.add += _bits(words)
        c.reg += _bits(words) + 1
        if steps > 1:
            c.mux += units * (steps - 1) * acc_width
            c.reg += _bits(steps)
            c.add += _bits(steps)
    c.add += units * 2 * v  # clamp: two comparisons
    c.mux += units * 2 * layer.output_bits
    c.reg += lanes * layer.output_bits + 1
    return c


def layer_counts(
    layer: IntegerLayer,
    pe: int,
    simd: int,
    pipeline_every: int,
    weight_bits: int = 1,
    adder_tree: str = "xor",
) -> Counts:
    """Primitive counts of one layer engine (``weight_bits`` 1: binary, its folded tree
    ``adder_tree``; else the MAC baseline)."""
    n_in, n_out, b, x_max = layer.in_features, layer.out_features, layer.input_bits, layer.input_max
    nf, sf = math.ceil(n_out / pe), math.ceil(n_in / simd)
    c = Counts()
    w_max = (1 << (weight_bits - 1)) - 1
    if nf == 1 and sf == 1:
        # Unrolled: constant weights, one tree per neuron over all inputs.
        for j in range(n_out):
            row = layer.weights[j]
            if weight_bits == 1:
                leaves = [(int(s), 0, x_max) for s in row]
            else:
                leaves = [(1, min(0, int(w) * x_max), max(0, int(w) * x_max)) for w in row]
                c.cmul += sum((_csd_digits(w) - 1) * (b + int(abs(w)).bit_length()) for w in row)
                for (_, lo, hi), w in zip(leaves, row, strict=True):
                    if abs(int(w)) & (abs(int(w)) - 1):  # a power of two is a shift
                        width = _width(lo, hi)
                        c.cmul_widths[width] = c.cmul_widths.get(width, 0) + 1
                c.preg += sum(_width(lo, hi) for _, lo, hi in leaves)  # product registers
            add, reg, latency = tree_counts(leaves, pipeline_every)
            c.tree += add
            c.reg += reg
        stages = latency + (weight_bits > 1)
        c.reg += stages  # valid bits
        c += _requantizer(layer, n_out, layer.acc_bits, share=0)
        return c

    tag_width = 2  # first, last
    if weight_bits == 1 and adder_tree == "relative":
        # Subtractions whose right operand is complemented or not (a gate per bit, counted as
        # a leaf: the same XOR in front of an adder), node flips registered with the values.
        lane_add, lane_leaf, lane_reg, latency, (lane_lo, lane_hi) = relative_tree_counts(
            simd, (0, x_max), pipeline_every
        )
        c.tree += pe * lane_add
        c.leaf += pe * lane_leaf
        c.reg += pe * lane_reg
        acc_width = _width(sf * lane_lo, sf * lane_hi)
        layout = constants_layout(layer)
        stages = latency
    elif weight_bits == 1:
        # Leaves x_i or its ones' complement (XOR with the weight bit); the accumulators end
        # ones * zeros_j high, which the requantizer's offsets absorb.
        x_width = _width(0, x_max)
        ones = (1 << x_width) - 1
        lane_add, lane_reg, latency = tree_counts([(1, 0, ones)] * simd, pipeline_every)
        c.tree += pe * lane_add
        c.reg += pe * lane_reg
        c.leaf += pe * simd * x_width
        acc_width = _width(0, sf * simd * ones)
        layout = constants_layout(layer)
        stages = latency
    else:
        acc_bound = n_in * x_max * w_max
        acc_width = _width(-acc_bound, acc_bound)
        layout = constants_layout(layer)
        leaf = (1, -w_max * x_max, w_max * x_max)
        lane_add, lane_reg, latency = tree_counts([leaf] * simd, pipeline_every)
        c.tree += pe * lane_add
        c.reg += pe * lane_reg
        c.preg += pe * simd * _width(leaf[1], leaf[2])
        c.mul += pe * simd * b * weight_bits
        c.n_mul += pe * simd
        stages = latency + 1
    c.reg += stages * (1 + tag_width)
    # Issue stage: counters, valid bits, the tag; with one neuron fold the input register,
    # with more the buffer and a read stage (valid, addresses, tag) in front of it.
    counters = _bits(nf) + _bits(sf) + _bits(nf * sf)
    c.add += counters
    c.reg += counters + 2 + tag_width
    if nf > 1:
        c.reg += 1 + _bits(sf) + _bits(nf * sf) + tag_width
    else:
        c.reg += simd * b
    # Accumulators (clear on a fold's first beat), and the hand-over register to requantize.
    c.gate += pe * acc_width
    c.add += pe * acc_width
    c.reg += 2 * pe * acc_width + 1
    c.memories.append((nf * sf, pe * simd * weight_bits, True, True))
    if nf > 1:
        c.memories.append((max(2, sf), simd * b, False, False))
    c += _requantizer(layer, pe, acc_width, share=0 if nf == 1 else min(sf, pe), layout=layout)
    return c


def fifo_counts(width: int, depth: int) -> Counts:
    """``BeatFIFO``: Amaranth's SyncFIFOBuffered, a memory of ``depth - 1`` and an output
    register, with read and write pointers and a level counter."""
    p = _bits(depth)
    return Counts(add=3 * p, reg=width + 3 * p + 2, memories=[(depth - 1, width, False, False)])


def vector_buffer_counts(n: int, width: int, in_lanes: int, out_lanes: int) -> Counts:
    """``VectorBuffer``: two banks of ``n`` registers, read through a multiplexer per lane."""
    in_beats, out_beats = math.ceil(n / in_lanes), math.ceil(n / out_lanes)
    used = min(n, out_lanes * out_beats)
    return Counts(
        add=_bits(in_beats) + _bits(out_beats),
        reg=2 * n * width + _bits(in_beats) + _bits(out_beats) + 4,
        mux=used * width * 2 - out_lanes * width,  # 2 * out_beats inputs per lane, n values
    )


def argmax_counts(n: int, width: int, pipeline_every: int) -> Counts:
    index = max(1, (n - 1).bit_length())
    levels = registers_after(tree_levels(n), pipeline_every)
    c = Counts(add=(n - 1) * width, mux=(n - 1) * (width + index))
    # Each register level holds the surviving candidates and a copy of all scores.
    survivors, level = n, 0
    while survivors > 1:
        level += 1
        survivors = (survivors + 1) // 2
        if level in levels:
            c.reg += survivors * (width + index) + n * width + 1
    return c


def design_counts(
    model: IntegerModel,
    folding: list,
    pipeline_every: int,
    weight_bits: int = 1,
    adder_tree: str = "xor",
) -> list[dict[str, Any]]:
    """Counts per part of the whole design: one entry per layer (its engine and the link after
    it), then the output (collector and argmax)."""
    parts = []
    layers = model.layers
    for index, (layer, f) in enumerate(zip(layers, folding, strict=True)):
        c = layer_counts(layer, f.pe, f.simd, pipeline_every, weight_bits, adder_tree)
        nf = math.ceil(layer.out_features / f.pe)
        if index + 1 < len(layers):
            nxt = folding[index + 1]
            if f.pe == nxt.simd:
                c += fifo_counts(f.pe * layer.output_bits, nf + 2)
            else:
                c += vector_buffer_counts(layer.out_features, layer.output_bits, f.pe, nxt.simd)
        parts.append({"part": f"layer {index}", **c.as_dict()})
    last, classes = layers[-1], model.num_classes
    out = argmax_counts(classes, last.output_bits, pipeline_every)
    if folding[-1].pe != classes:
        out += vector_buffer_counts(classes, last.output_bits, folding[-1].pe, classes)
    parts.append({"part": "output", **out.as_dict()})
    return parts


# -- from counts to resources -------------------------------------------------------------------


# Memory cells per family: block RAM configurations and LUT-RAM cells as [depth, width], or
# [depth, width, cost] where a family has two sizes of block (Yosys picks the cheapest mapping,
# the fewer cells on a tie). The thresholds below which Yosys keeps a memory out of block RAM
# are fitted (analytic_coefficients).
GEOMETRY: dict[str, dict[str, Any]] = {
    "ice40": {  # SB_RAM40_4K; no LUT RAM
        "bram_shapes": [[256, 16], [512, 8], [1024, 4], [2048, 2]],
        "lutram_shapes": [],
        "dsp_per_mul": 1,  # SB_MAC16: 16 x 16
    },
    "ecp5": {  # DP16KD / PDPW16KD; TRELLIS_DPR16X4
        "bram_shapes": [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2], [16384, 1]],
        "lutram_shapes": [[16, 4]],
        "dsp_per_mul": 1,  # MULT18X18D
    },
    "xc7": {  # RAMB18E1 / RAMB36E1; RAM32M, RAM64M
        # RAMB36E1 (cost 2) and RAMB18E1 (cost 1), simple dual port; each counts as one block.
        "bram_shapes": [
            *([d, w, 2] for d, w in [[512, 72], [1024, 36], [2048, 18], [4096, 9], [8192, 4]]),
            *([d, w, 1] for d, w in [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2]]),
        ],
        "lutram_shapes": [[32, 6], [64, 3]],
        "dsp_per_mul": 1,  # DSP48E1: 25 x 18
    },
    "gowin": {  # SDPB / DPB; RAM16SDP4
        "bram_shapes": [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2], [16384, 1]],
        "lutram_shapes": [[16, 4]],
        "dsp_per_mul": 1,  # MULT18X18
    },
}


def _blocks(depth: int, width: int, shapes: list[list[int]]) -> int:
    """Cells of the cheapest configuration that holds the memory (``[depth, width]`` or
    ``[depth, width, cost]`` each; the fewer cells where two cost the same)."""
    options = []
    for shape in shapes:
        d, w, cost = (*shape, 1) if len(shape) == 2 else shape
        cells = math.ceil(depth / d) * math.ceil(width / w)
        options.append((cells * cost, cells))
    return min(options)[1]


def map_memories(memories: list, family: dict[str, Any]) -> dict[str, int]:
    """Where each memory goes, as Yosys's memory mapping puts it: block RAM where the generator
    asks for it (the weights) or where the memory is deep enough (``min_rom_depth`` for ROMs,
    ``min_ram_depth`` for RAMs) and fills its blocks well enough (``min_bits_per_block``), else
    LUT RAM (writable, shallow enough), else logic (ROM bits become LUT functions of the
    address; RAM bits become registers and multiplexers). The thresholds are fitted per
    family."""
    out = {"bram": 0, "lutram": 0, "rom": 0, "ram": 0, "mem_reg": 0}
    for depth, width, rom, block in memories:
        blocks = _blocks(depth, width, family["bram_shapes"])
        deep = depth >= family["min_rom_depth" if rom else "min_ram_depth"]
        if block or deep and depth * width >= family["min_bits_per_block"] * blocks:
            out["bram"] += blocks
            continue
        # The synchronous read port's register: its data, except in LUT RAM, which reads
        # asynchronously, so Yosys registers the read address instead where it can (the input
        # buffer, read from a register's address).
        read_register = width
        if rom:
            out["rom"] += depth * width
        elif family["lutram_shapes"] and depth <= max(d for d, _ in family["lutram_shapes"]):
            read_register = max(1, (depth - 1).bit_length())
            out["lutram"] += _blocks(depth, width, family["lutram_shapes"])
        else:
            out["ram"] += depth * width
        out["mem_reg"] += read_register
    return out


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


def load_coefficients(path: Path = COEFFICIENTS_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


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
        for resource in ("lut", "ff", "carry"):
            weights = fam[resource][mode]
            row[resource] = max(0, round(sum(w * x[k] for k, w in weights.items())))
        row["lutram"] = mapped["lutram"]
        row["bram"] = mapped["bram"]
        constant = sum(
            n for w, n in part.get("cmul_widths", {}).items() if int(w) >= fam["dsp_min_width"]
        )
        row["dsp"] = fam["dsp_per_mul"] * (part["n_mul"] + constant) if on_dsp else 0
        per_part.append(row)
    total = {key: sum(p[key] for p in per_part) for key in RESOURCES}
    return {"total": total, "parts": per_part}
