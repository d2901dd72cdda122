"""Exact value ranges and the widths they need, in plain Python (no Amaranth).

The generator sizes every signal from the exact range of values it can hold; the plan
(:mod:`rtl_gen.plan`) and the analytical model need the same widths without building a circuit.
Both take them from here, so the bookkeeping exists once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bchw.core.intmodel import IntegerLayer, signed_bits

Range = tuple[int, int]


def range_width(lo: int, hi: int) -> tuple[int, bool]:
    """``(width, signed)`` of the narrowest two's-complement or unsigned integer holding every
    value in [lo, hi]: unsigned (at least one bit) when ``lo >= 0``."""
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if lo >= 0:
        return max(1, hi.bit_length()), False
    return signed_bits(lo, hi), True


def width(lo: int, hi: int) -> int:
    """Bits of :func:`range_width`."""
    return range_width(lo, hi)[0]


def ones(x_max: int) -> int:
    """All ones over the width of an unsigned ``0..x_max``: the ones' complement of 0, and the
    largest value of a folded binary tree's XOR leaf (``x`` or ``ones - x``)."""
    return (1 << width(0, x_max)) - 1


def signed_max(bits: int) -> int:
    """The largest ``bits``-bit two's-complement value (a MAC weight's magnitude bound)."""
    return (1 << (bits - 1)) - 1


def product_range(weight: int, x_max: int) -> Range:
    """Range of ``weight * x`` for ``x`` in 0..x_max."""
    return min(0, int(weight) * x_max), max(0, int(weight) * x_max)


def counter_bits(n: int) -> int:
    """Bits of a counter over ``n`` states, at least one (a single state would need none)."""
    return max(1, (max(2, n) - 1).bit_length())


def tree_levels(n_inputs: int) -> int:
    """Adder levels of a balanced tree over ``n_inputs`` leaves."""
    return max(0, (n_inputs - 1).bit_length())


def registers_after(levels: int, every: int) -> list[int]:
    """The tree levels after which a pipeline register goes: every ``every`` levels (0: none)."""
    if every <= 0:
        return []
    return list(range(every, levels + 1, every))


def tree_latency(n_inputs: int, pipeline_every: int) -> int:
    """Pipeline registers of a balanced tree over ``n_inputs`` leaves."""
    return len(registers_after(tree_levels(n_inputs), pipeline_every))


def pair_up(nodes: list, combine: Callable, after_level: Callable | None = None):
    """Pair nodes level by level into one (``combine(a, b, level, k)``; an odd last node moves up
    unchanged); ``after_level(nodes, level)`` may replace a level's nodes (pipeline registers).
    The one pairing order every tree here uses, in hardware and in the offsets' bookkeeping."""
    level = 0
    while len(nodes) > 1:
        level += 1
        paired = [
            combine(nodes[k], nodes[k + 1], level, k // 2) for k in range(0, len(nodes) - 1, 2)
        ]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired if after_level is None else after_level(paired, level)
    return nodes[0]


def sum_range(signs: np.ndarray, lo: int, hi: int) -> Range:
    """Exact range of ``sum_i signs[i] * x_i`` for x_i in [lo, hi]."""
    pos = int(np.count_nonzero(signs > 0))
    neg = int(np.count_nonzero(signs < 0))
    return pos * lo - neg * hi, pos * hi - neg * lo


def signed_node(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(sign, lo, hi)`` of a constant-sign tree's node from its children's: one add where
    the signs agree, else one subtraction (positive minus negative), which counts as positive.
    A node contributes ``sign * value`` with ``value`` in [lo, hi]."""
    sa, la, ha = a
    sb, lb, hb = b
    if sa == sb:
        return sa, la + lb, ha + hb
    if sa > 0:
        return 1, la - hb, ha - lb
    return 1, lb - ha, hb - la


# -- relative-sign trees ------------------------------------------------------------------------


def not_constant(lo: int, hi: int) -> int:
    """``K`` with ``~v = K - v`` for ``v`` held in the narrowest shape of [lo, hi]."""
    bits, signed = range_width(lo, hi)
    return -1 if signed else (1 << bits) - 1


def flipped_range(lo: int, hi: int) -> Range:
    """Every value of ``v`` or ``~v`` for ``v`` in [lo, hi]."""
    k = not_constant(lo, hi)
    return min(lo, k - hi), max(hi, k - lo)


def flip_node_range(a: Range, b: Range) -> Range:
    """Range of a node ``a - (b or ~b)``."""
    y_lo, y_hi = flipped_range(*b)
    return a[0] - y_hi, a[1] - y_lo


def flip_correction(flip_a: int, a: Range, b: Range) -> int:
    """What a relative-sign node of ``a`` and ``b`` contributes less than its two children
    together: ``K_b`` where ``a`` does not flip, else ``K_a - K_node``."""
    if not flip_a:
        return not_constant(*b)
    return not_constant(*a) - not_constant(*flip_node_range(a, b))


def relative_root_range(n_inputs: int, input_range: Range) -> Range:
    """Range of a relative-sign tree's root over ``n_inputs`` leaves in ``input_range``."""
    return pair_up([input_range] * n_inputs, lambda a, b, *_: flip_node_range(a, b))


def paired_lane_range(n_inputs: int, ones_: int) -> Range:
    """One lane's range of a paired-leaf tree over ``n_inputs`` inputs whose ones' complement
    is ``ones_``: a pair's leaf lies in ``0..2 * ones_ + 1`` (``w + 1`` bits), the odd input's
    in ``0..ones_``."""
    return 0, (n_inputs // 2) * (2 * ones_ + 1) + (n_inputs % 2) * ones_


def paired_excess(plus, ones_: int) -> int:
    """How far a paired-leaf lane lies above its dot product, for weight bits ``plus`` (true:
    +1): per pair ``(a, b)`` nothing for ``S = a + b``, ``ones_`` for ``D = a - b + ones_``,
    ``ones_ + 1`` for ``~D`` and ``2 * ones_ + 1`` for ``~S`` (complements over ``w + 1``
    bits), that is ``ones_`` per -1 weight plus one per pair whose first weight is -1; the odd
    input an XOR leaf's ``ones_`` where its weight is -1."""
    plus = [bool(p) for p in plus]
    pairs = plus[: len(plus) // 2 * 2]
    return ones_ * sum(1 for p in plus if not p) + sum(1 for p in pairs[0::2] if not p)


# -- the requantizer ----------------------------------------------------------------------------


def requant_width(layer: IntegerLayer) -> int:
    """Signed width of ``t`` for every neuron and for padding lanes (all-zero constants)."""
    lo, hi = layer.requant_range()
    return signed_bits(min(lo, layer.rounding), max(hi, layer.rounding))


def shift_ranges(layer: IntegerLayer) -> list[tuple[int, int]]:
    """Per scale term ``k``: ``(h_min, bits)``, its smallest shift over the neurons where it is
    used and the bits of ``h - h_min``. A term's shifts span a few values (the digits model's
    first term: 8 or 9), so its shifter needs ``bits`` stages, the fixed ``h_min`` being
    wiring."""
    out = []
    for k in range(layer.scale_terms):
        used = layer.scale_shift[:, k][layer.scale_sign[:, k] != 0]
        lo = int(used.min()) if used.size else 0
        hi = int(used.max()) if used.size else 0
        out.append((lo, (hi - lo).bit_length()))
    return out


def shift_field_bits(layer: IntegerLayer) -> int:
    """Bits of each scale term's shift in a requantizer's ROM: the widest term's
    :func:`shift_ranges` bits, at least one."""
    return max(1, max(bits for _, bits in shift_ranges(layer)))


def constants_bits(layer: IntegerLayer) -> int:
    """Bits of one neuron's constants in a requantizer's ROM: K two-bit signs, K shifts of
    :func:`shift_field_bits` and the offset, ``t``'s width."""
    return layer.scale_terms * (2 + shift_field_bits(layer)) + requant_width(layer)


def wrap_signed(value: int, bits: int) -> int:
    """``value`` modulo ``2^bits``, as a signed ``bits``-bit number."""
    half = 1 << (bits - 1)
    return (int(value) + half) % (2 * half) - half
