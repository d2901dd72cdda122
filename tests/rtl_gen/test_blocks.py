"""Each hardware block in amaranth.sim against its integer model, under random input gaps and
output back-pressure (no beat lost, duplicated or reordered)."""

from __future__ import annotations

import numpy as np
import pytest

from bchw.core import reference
from bchw.core.intmodel import output_range
from bchw.errors import BchwError
from rtl_gen import ADDER_TREES
from rtl_gen.adder_tree import AdderTree
from rtl_gen.argmax import Argmax, ScanArgmax
from rtl_gen.buffers import BeatFIFO, VectorBuffer
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.pipeline import range_shape
from rtl_gen.plan import DotProduct, FifoLink, VectorBufferLink, plan_layer
from rtl_gen.ranges import requant_width
from rtl_gen.requantizer import Requantizer, absorbed_offsets
from tests.streams import beats_of, random_layer, simulate

HANDSHAKES = [(0.0, 0.0), (0.3, 0.4)]


def extreme_vectors(n, top, count, seed):
    """All zero, all maximum, both alternations, then random."""
    rng = np.random.default_rng(seed)
    fixed = [np.zeros(n), np.full(n, top), np.arange(n) % 2 * top, (1 - np.arange(n) % 2) * top]
    rand = [rng.integers(0, top + 1, size=n) for _ in range(count)]
    return np.array(fixed + rand, dtype=np.int64)


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize("n_inputs", [1, 3, 37])
@pytest.mark.parametrize("pipeline_every", [0, 1, 3])
def test_adder_tree_constant_signs(n_inputs, pipeline_every, gap, stall):
    rng = np.random.default_rng(n_inputs)
    signs = rng.choice([-1, 1], size=(4, n_inputs))
    signs[0] = -1  # all subtractions
    signs[1] = 1
    dut = AdderTree(4, n_inputs, (0, 255), signs, pipeline_every, tag_shape=8)
    vectors = extreme_vectors(n_inputs, 255, 12, seed=1)
    beats = [{"x": [int(v) for v in x], "tag": k} for k, x in enumerate(vectors)]
    outs, _, _ = simulate(dut, beats, len(beats), gap=gap, stall=stall)
    assert [int(o.tag) for o in outs] == list(range(len(beats)))
    got = np.array([[int(v) for v in o.sum] for o in outs])
    assert np.array_equal(got, vectors @ signs.T)
    levels = (n_inputs - 1).bit_length()
    assert dut.latency == (levels // pipeline_every if pipeline_every else 0)


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize("n_inputs", [1, 5, 8, 37])
@pytest.mark.parametrize("tree", ["xor", "relative", "pair"])
def test_adder_tree_sign_bits(n_inputs, tree, gap, stall):
    """Per-beat sign bits (XOR leaves, a relative-sign tree or paired leaves): each lane's sum
    is the signed dot product plus an excess that depends on the weight bits alone (every vector
    here meets every weight word), the one ``excess`` states, within the declared range."""
    rng = np.random.default_rng(7)
    relative, paired = tree == "relative", tree == "pair"
    dut = AdderTree(3, n_inputs, (0, 12), None, 2, sign_bits=True, relative=relative, paired=paired)
    assert dut.ones == 15  # 12 needs 4 bits: the complement is taken in 4 bits
    vectors = extreme_vectors(n_inputs, 12, 10, seed=2)
    words = rng.integers(0, 2, size=(4, 3, n_inputs))
    words[0] = 1
    words[1] = 0
    bits = np.array([w for w in words for _ in vectors])  # each word with each vector
    xs = np.array([x for _ in words for x in vectors])
    lane_words = [
        [int(sum(int(b) << k for k, b in enumerate(lane))) for lane in beat] for beat in bits
    ]
    beats = [
        {"x": [int(v) for v in x], "sign": words} for x, words in zip(xs, lane_words, strict=True)
    ]
    outs, _, _ = simulate(dut, beats, len(beats), gap=gap, stall=stall)
    got = np.array([[int(v) for v in o.sum] for o in outs])
    excess = got - np.einsum("vli,vi->vl", 2 * bits - 1, xs)
    stated = np.array([[dut.excess(lane) for lane in beat] for beat in bits])
    assert np.array_equal(excess, stated)
    # One constant per weight word, whatever the inputs.
    per_word = excess.reshape(len(words), len(vectors), 3)
    assert (per_word == per_word[:, :1]).all()
    lo, hi = dut.lane_ranges[0]
    assert lo <= got.min() and got.max() <= hi
    assert range_shape(lo, hi).width == range_shape(0, 15 * n_inputs).width  # no wider
    if tree == "xor":  # 15 per -1 weight (~x = 15 - x)
        assert np.array_equal(excess, 15 * (bits == 0).sum(axis=2))
    if tree == "pair":  # and one more per pair whose first weight is -1
        first = (bits[:, :, 0 : n_inputs // 2 * 2 : 2] == 0).sum(axis=2)
        assert np.array_equal(excess, 15 * (bits == 0).sum(axis=2) + first)


def unsaturated_accs(layer, lanes: int, count: int) -> np.ndarray:
    """``count`` consecutive accumulator values per lane (neuron ``lane``) around where its
    output lies mid-range: random accumulators nearly always saturate, and so hide an
    off-by-one in ``t``; these cross rounding boundaries."""
    lo, hi = output_range(layer.output_bits, layer.output_signed)
    target = ((lo + hi) // 2) << layer.requant_shift
    columns = []
    gains = layer.gains()  # sum_k s_k 2^h_k per neuron
    for j in range(lanes):
        scale = int(gains[j])
        center = 0 if scale == 0 else (target - int(layer.offset[j]) - layer.rounding) // scale
        values = center + np.arange(-(count // 2), count - count // 2)
        columns.append(np.clip(values, -layer.acc_bound, layer.acc_bound))
    return np.stack(columns, axis=1)


# A signed (last-layer) output needs at least 2 bits, as the file format requires.
REQUANT_CASES = [(False, 1), (False, 4), (False, 8), (True, 2), (True, 4), (True, 8)]


@pytest.mark.parametrize("static, share", [(False, 1), (True, 1), (False, 2), (False, 5)])
@pytest.mark.parametrize("last, out_bits", REQUANT_CASES)
def test_requantizer(last, static, share, out_bits):
    layer = random_layer(37, 5, 8, out_bits, last, seed=out_bits, terms=3)
    bound = layer.acc_bound
    rng = np.random.default_rng(3)
    accs = [np.full(5, bound), np.full(5, -bound), np.zeros(5, np.int64)]
    accs += [rng.integers(-bound, bound + 1, size=5) for _ in range(20)]
    accs += list(unsaturated_accs(layer, 5, 160))
    acc_shape = range_shape(-bound, bound)
    lanes = 5
    if static:
        dut = Requantizer(layer, lanes, acc_shape, static_neurons=list(range(5)))
        beats = [{"acc": [int(a) for a in acc]} for acc in accs]
    else:
        dut = Requantizer(layer, lanes, acc_shape, share=share)
        # 5 lanes shared 2 ways: 3 units over 2 steps; 5 ways: 1 unit over 5 steps.
        assert (dut.units, dut.steps) == {1: (5, 1), 2: (3, 2), 5: (1, 5)}[share]
        # The constants come from the requantizer's own ROM, one word per step.
        assert dut.constant_depth == max(2, dut.steps)
        beats = [{"acc": [int(a) for a in acc]} for acc in accs]
    outs, _, _ = simulate(dut, beats, len(beats), gap=0.2, stall=0.3)
    got = np.array([[int(v) for v in o] for o in outs])
    expected, _ = reference.saturate(layer, reference.requantize(layer, np.array(accs)))
    assert np.array_equal(got, expected)
    # The scan crosses output boundaries (where the offset lets the lane reach mid-range).
    scan = expected[-160:]
    assert any(len(set(scan[:, lane].tolist())) > 1 for lane in range(5))
    # Unstalled, the first result is ``latency`` cycles after the first beat is taken, and the
    # results follow one every ``steps`` cycles. (Per-beat constants: a beat offered in the
    # first cycle after reset waits one cycle for the ROM's first word.)
    _, out_cycles, in_cycles = simulate(dut, beats[:4], 4)
    primed = 0 if static else 1
    assert in_cycles[0] == primed + dut.steps - 1
    assert out_cycles[0] == primed + dut.latency
    assert np.diff(out_cycles).tolist() == [dut.steps] * 3


@pytest.mark.parametrize("static, share", [(True, 1), (False, 1), (False, 5)])
@pytest.mark.parametrize("last, out_bits", [(False, 4), (True, 8)])
def test_requantizer_offsets_absorb_an_accumulator_excess(last, out_bits, static, share):
    """A folded binary layer's accumulators run ``ones * zeros_j`` high (XOR leaves): with the
    absorbed offsets the requantizer still gives the reference's outputs for the true sums."""
    layer = random_layer(37, 5, 8, out_bits, last, seed=out_bits + 7, terms=3)
    assert layer.input_max == 255 and layer.acc_bound == 37 * 255
    rng = np.random.default_rng(11)
    # Weights with zeros_j = 37, 0 and random counts of -1: the tree adds x or 255 - x.
    signs = np.where(rng.random((5, 37)) < 0.5, -1, 1)
    signs[0], signs[1] = -1, 1
    zeros = (signs < 0).sum(axis=1)
    excess = 255 * zeros
    xs = [np.zeros(37), np.full(37, 255)] + [rng.integers(0, 256, 37) for _ in range(20)]
    accs = [signs @ x.astype(np.int64) for x in xs]  # the true sums, within +-acc_bound
    held = [np.where(signs > 0, x, 255 - x).sum(axis=1) for x in xs]  # what the tree gives
    assert all(np.array_equal(h, a + excess) for h, a in zip(held, accs, strict=True))
    offsets = absorbed_offsets(layer, excess)
    acc_shape = range_shape(0, 37 * 255)
    if static:
        dut = Requantizer(layer, 5, acc_shape, list(range(5)), offsets=offsets)
        beats = [{"acc": [int(a) for a in h]} for h in held]
    else:
        dut = Requantizer(layer, 5, acc_shape, share=share, offsets=offsets)
        beats = [{"acc": [int(a) for a in h]} for h in held]
    # The offsets stay within the requantizer's own width (kept modulo 2^requant_width).
    width = requant_width(layer)
    assert all(-(1 << (width - 1)) <= o < 1 << (width - 1) for o in offsets)
    outs, _, _ = simulate(dut, beats, len(beats), gap=0.2, stall=0.3)
    got = np.array([[int(v) for v in o] for o in outs])
    expected, _ = reference.saturate(layer, reference.requantize(layer, np.array(accs)))
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("registered, share", [(False, 1), (True, 1), (True, 2), (True, 5)])
def test_requantizer_reads_the_neuron_folds_constants_in_order(registered, share):
    """12 neurons over 5 lanes: beats are folds 0, 1, 2 (two padding lanes), 0, 1, 2, ...; the
    requantizer's ROM must give each beat its own fold's constants, 0 on padding lanes."""
    layer = random_layer(23, 12, 8, 4, False, seed=5, terms=2)
    bound = layer.acc_bound
    dut = Requantizer(layer, 5, range_shape(-bound, bound), None, registered, share)
    assert dut.folds == 3 and dut.constant_depth == 3 * dut.steps
    rng = np.random.default_rng(8)
    vectors = rng.integers(-bound, bound + 1, size=(3, 15))
    beats = [{"acc": [int(a) for a in v[f * 5 : (f + 1) * 5]]} for v in vectors for f in range(3)]
    outs, _, _ = simulate(dut, beats, len(beats), gap=0.3, stall=0.3)
    got = np.array([[int(y) for y in o] for o in outs]).reshape(3, 15)
    expected, _ = reference.saturate(layer, reference.requantize(layer, vectors[:, :12]))
    assert np.array_equal(got[:, :12], expected)
    assert not got[:, 12:].any()


def test_requantizer_padding_lanes_give_zero():
    layer = random_layer(4, 2, 8, 8, False, seed=1)
    dut = Requantizer(layer, 3, range_shape(-layer.acc_bound, layer.acc_bound), [0, 1, None])
    outs, _, _ = simulate(dut, [{"acc": [5, -7, 123]}], 1)
    expected, _ = reference.saturate(layer, reference.requantize(layer, np.array([[5, -7]])))
    assert [int(v) for v in outs[0]] == expected[0].tolist() + [0]


@pytest.mark.parametrize(
    "n, pipeline_every",
    [(n, p) for n in (1, 3, 10, 37) for p in (0, 1)] + [(n, "scan") for n in (2, 3, 10, 37)],
)
def test_argmax_ties_to_the_lowest_index(n, pipeline_every):
    """Both argmaxes, the tree and the scan: the class and the scores it passes on, beat for
    beat under random stalls (and gaps); a scan's result ``n + 1`` cycles after its beat."""
    from amaranth.hdl import signed

    rng = np.random.default_rng(n)
    vectors = [np.zeros(n), np.full(n, -128), np.full(n, 127)]
    vectors += [rng.integers(-3, 3, size=n) for _ in range(30)]  # many ties
    vectors.append(np.arange(n))  # the last score the largest: the scan's final compare
    if pipeline_every == "scan":
        dut = ScanArgmax(n, signed(8))
    else:
        dut = Argmax(n, signed(8), pipeline_every)
    # The scan reads the scores where they stand: its source must hold a beat until it is
    # taken, as every block of a design does (this driver's gaps withdraw beats).
    gap = 0.0 if pipeline_every == "scan" else 0.3
    outs, _, _ = simulate(
        dut, [[int(v) for v in x] for x in vectors], len(vectors), gap=gap, stall=0.3
    )
    expected = reference.argmax_lowest(np.array(vectors, dtype=np.int64))
    assert [int(o.index) for o in outs] == expected.tolist()
    assert [[int(v) for v in o.scores] for o in outs] == [list(map(int, x)) for x in vectors]
    # Back to back from cycle 0: the first result after ``latency``, then one a vector's cycles.
    _, out_cycles, _ = simulate(dut, [[0] * n] * 3, 3)
    spacing = n + 2 if pipeline_every == "scan" else 1
    assert out_cycles == [dut.latency + k * spacing for k in range(3)]


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize(
    "n, in_lanes, out_lanes", [(1, 1, 1), (3, 2, 1), (37, 5, 8), (37, 37, 3), (10, 3, 10)]
)
def test_vector_buffer_rebeats_without_loss(n, in_lanes, out_lanes, gap, stall):
    from amaranth.hdl import unsigned

    rng = np.random.default_rng(n)
    vectors = rng.integers(1, 256, size=(6, n))
    dut = VectorBuffer(n, unsigned(8), in_lanes, out_lanes)
    beats = beats_of(vectors, in_lanes, fill=255)  # input padding must be dropped
    outs, out_cycles, in_cycles = simulate(
        dut, beats, len(vectors) * dut.out_beats, gap=gap, stall=stall
    )
    assert [[int(v) for v in o] for o in outs] == beats_of(vectors, out_lanes, fill=0)
    if gap == 0 and stall == 0:  # the plan's timing, to the cycle
        link = VectorBufferLink(n, in_lanes, out_lanes)
        assert out_cycles[: dut.out_beats] == link.output_times(in_cycles[: dut.in_beats])


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
def test_beat_fifo_keeps_order(gap, stall):
    from amaranth.hdl import unsigned
    from amaranth.lib import data

    dut = BeatFIFO(data.ArrayLayout(unsigned(5), 3), depth=4)
    beats = [[k % 32, (3 * k) % 32, (7 * k) % 32] for k in range(40)]
    outs, out_cycles, in_cycles = simulate(dut, beats, len(beats), gap=gap, stall=stall)
    assert [[int(v) for v in o] for o in outs] == beats
    if gap == 0 and stall == 0:  # the plan's timing, to the cycle
        assert out_cycles[:5] == FifoLink(3, 4, 5).output_times(in_cycles[:5])


LAYER_SHAPES = [
    # n_in, n_out, pe, simd
    (1, 1, 1, 1),
    (3, 3, 3, 3),  # unrolled
    (37, 3, 3, 37),  # unrolled, prime fan-in
    (37, 3, 2, 5),  # neither divides
    (3, 37, 5, 2),
    (3, 37, 37, 1),  # one neuron fold, three synapse folds
    (37, 37, 4, 37),  # synapse fold of one, ten neuron folds
    (5, 1, 1, 2),
]


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize("bits", [1, 4, 8])
@pytest.mark.parametrize("n_in, n_out, pe, simd", LAYER_SHAPES)
@pytest.mark.parametrize("adder_tree", ADDER_TREES)
def test_layer_engine(n_in, n_out, pe, simd, bits, adder_tree, gap, stall):
    last = (n_in + n_out + bits) % 2 == 0
    layer = random_layer(n_in, n_out, bits, 6, last, seed=n_in * 100 + n_out + bits)
    plan = plan_layer(layer, pe, simd, pipeline_every=1, unit=DotProduct.binary(adder_tree))
    dut = LayerEngine(plan)
    vectors = extreme_vectors(n_in, layer.input_max, 5, seed=bits)
    beats = beats_of(vectors, simd, fill=layer.input_max)  # padding lanes must be ignored
    outs, out_cycles, in_cycles = simulate(dut, beats, len(vectors) * dut.nf, gap=gap, stall=stall)
    got = np.array([[int(v) for v in o] for o in outs]).reshape(len(vectors), dut.nf * pe)
    expected, _ = reference.layer_forward(layer, vectors)
    assert np.array_equal(got[:, :n_out], expected)
    assert not got[:, n_out:].any()  # output padding lanes are 0
    if gap == 0 and stall == 0:
        first_vector_inputs = in_cycles[: dut.sf]
        assert out_cycles[: dut.nf] == plan.output_times(first_vector_inputs)
        steady = np.diff(out_cycles[:: dut.nf])
        assert set(steady[1:].tolist()) == {plan.cycles_per_vector}


def test_layer_engine_refuses_impossible_folding():
    layer = random_layer(5, 3, 4, 4, False, seed=0)
    with pytest.raises(ValueError, match="PE"):
        plan_layer(layer, 4, 1)
    with pytest.raises(ValueError, match="SIMD"):
        plan_layer(layer, 1, 0)
    with pytest.raises(BchwError, match="adder-tree must be one of xor, relative"):
        DotProduct.binary("wallace")
