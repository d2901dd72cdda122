"""Energy per inference, estimated from per-operation energies (not measured on an FPGA).

The table is the one commonly quoted from M. Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014, for a 45 nm process at 0.9 V: 8-bit integer add 0.03 pJ, 32-bit
add 0.1 pJ, 8-bit multiply 0.2 pJ, 32-bit multiply 3.1 pJ; a 64-bit SRAM read 10 pJ from 8 KB,
20 pJ from 32 KB, 100 pJ from 1 MB. Between those points: an add's energy is interpolated
linearly in its width, a multiply's in the product of its operand widths (8 x 8 -> 0.2 pJ,
32 x 32 -> 3.2 pJ, close to the quoted 3.1), an SRAM read's linearly in log2 of the memory's
size. An FPGA spends more per operation than an ASIC (routing, LUTs); the estimate compares the
binary and MAC designs under one consistent model, it does not predict a board's power.
"""

from __future__ import annotations

import math
from typing import Any

from rtl_gen.conv_plan import ConvDesignPlan
from rtl_gen.plan import DesignPlan

SOURCE = (
    "per-operation energies of Horowitz, ISSCC 2014 (45 nm, 0.9 V): an estimate, not a measurement"
)
ADD_PJ = {8: 0.03, 32: 0.1}
MUL_8X8_PJ = 0.2
SRAM_64BIT_READ_PJ = {8 * 1024: 10.0, 32 * 1024: 20.0, 1024 * 1024: 100.0}


def add_pj(bits: int) -> float:
    """One ``bits``-wide integer add."""
    return ADD_PJ[8] + (ADD_PJ[32] - ADD_PJ[8]) * (bits - 8) / 24


def multiply_pj(a_bits: int, b_bits: int) -> float:
    return MUL_8X8_PJ * a_bits * b_bits / 64


def sram_read_pj(memory_bytes: int) -> float:
    """One 64-bit read from an SRAM of ``memory_bytes`` (8 KB at least, as quoted)."""
    points = sorted(SRAM_64BIT_READ_PJ.items())
    size = max(memory_bytes, points[0][0])
    for (s0, e0), (s1, e1) in zip(points, points[1:], strict=False):
        if size <= s1:
            return e0 + (e1 - e0) * math.log2(size / s0) / math.log2(s1 / s0)
    (s0, e0), (s1, e1) = points[-2], points[-1]
    return e1 + (e1 - e0) * math.log2(size / s1) / math.log2(s1 / s0)


def energy_per_inference(plan: DesignPlan | ConvDesignPlan) -> dict[str, Any]:
    """Picojoules for one image of ``plan``'s design: the synapses' adds (and multiplies, for
    the MAC baseline's ``weight_bits``-bit weights), the requantization, and the weight reads
    of folded layers (unrolled layers keep their weights in logic and read nothing)."""
    arithmetic = memory = requant = 0.0
    weight_bits = plan.unit.weight_bits
    for layer_plan in plan.layers:
        layer = layer_plan.layer
        # A convolution computes its dense layer once per output pixel.
        positions = layer.positions
        synapses = layer.in_features * layer.out_features * positions
        # The width as charged since this model was written: the MAC layer's accumulator
        # (acc_bits already holds the weights' magnitude) plus weight_bits - 1 (see
        # docs/estimates.md, "Energy per inference").
        acc_bits = layer.acc_bits + (weight_bits - 1 if weight_bits > 1 else 0)
        arithmetic += synapses * add_pj(acc_bits)
        if weight_bits > 1:
            arithmetic += synapses * multiply_pj(layer.input_bits, weight_bits)
        if not layer_plan.unrolled:
            weight_bytes = math.ceil(layer.in_features * layer.out_features * weight_bits / 8)
            memory += math.ceil(synapses * weight_bits / 64) * sram_read_pj(weight_bytes)
        requant += (
            positions * layer.out_features * (layer.scale_terms + 3) * add_pj(layer.requant_bits)
        )
    total = arithmetic + memory + requant
    return {
        "total_pj": round(total, 3),
        "arithmetic_pj": round(arithmetic, 3),
        "weight_reads_pj": round(memory, 3),
        "requantization_pj": round(requant, 3),
    }
