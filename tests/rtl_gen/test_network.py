"""The whole network in amaranth.sim: bit-exact against the reference, cycle counts as the
timing model (and so the manifest) predicts."""

from __future__ import annotations

import numpy as np
import pytest

from bchw.core import reference
from rtl_gen.network import Network
from rtl_gen.plan import LayerFolding, default_folding, plan_design, unrolled_folding
from tests.streams import beats_of, random_model, simulate


def run_network(model, folding, images, *, gap=0.0, stall=0.0, pipeline_every=2, seed=0):
    net = Network(plan_design(model, folding, pipeline_every))
    beats = beats_of(images, folding[0].simd, fill=(1 << model.input_bits) - 1)
    outs, out_cycles, in_cycles = simulate(net, beats, len(images), gap=gap, stall=stall, seed=seed)
    classes = np.array([int(o.index) for o in outs])
    scores = np.array([[int(v) for v in o.scores] for o in outs])
    return net, classes, scores, out_cycles, in_cycles


def assert_bit_exact(model, images, classes, scores):
    expected = reference.run(model, images)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.predicted)


def assert_timing(net, out_cycles, in_cycles):
    """First result exactly the plan's ``latency`` cycles after the first beat; then one per
    interval."""
    assert out_cycles[0] - in_cycles[0] == net.plan.latency
    gaps = np.diff(out_cycles)
    assert set(gaps[1:].tolist()) == {net.plan.initiation_interval}


@pytest.mark.slow
def test_shipped_digits_model_bit_exact_on_test_images(digits, shipped_digits):
    """The first 40 test images in amaranth.sim (about 290 cycles/s); the whole split runs
    through the emitted Verilog in tests/sim/test_cosim.py."""
    model = shipped_digits
    folding = default_folding(model)
    images, labels = digits.test.images[:40], digits.test.labels[:40]
    net, classes, scores, out_cycles, in_cycles = run_network(model, folding, images)
    assert_bit_exact(model, images, classes, scores)
    assert_timing(net, out_cycles, in_cycles)
    assert np.mean(classes == labels) >= 0.94


@pytest.mark.slow
def test_shipped_digits_model_under_stalls(digits, shipped_digits):
    model = shipped_digits
    folding = [LayerFolding(16, 16), LayerFolding(16, 16), LayerFolding(3, 32)]
    images = digits.test.images[:40]
    _, classes, scores, _, _ = run_network(model, folding, images, gap=0.3, stall=0.5)
    assert_bit_exact(model, images, classes, scores)


ODD_MODELS = [
    # sizes, folding per layer (pe, simd)
    ([37, 3, 5], [(2, 5), (5, 3)]),
    ([37, 3, 5], [(3, 37), (5, 3)]),  # unrolled
    ([5, 1, 3], [(1, 2), (1, 1)]),
    ([11, 37, 2], [(4, 3), (2, 4)]),  # PE 4 feeds SIMD 4: a FIFO link
    ([3, 7, 7, 4], [(7, 1), (3, 7), (1, 2)]),
    ([1, 1, 1], [(1, 1), (1, 1)]),
    ([5, 3], [(2, 2)]),  # a single layer
    ([9, 4, 1], [(4, 9), (1, 4)]),  # one class
]


@pytest.mark.parametrize("pipeline_every", [0, 2])
@pytest.mark.parametrize("sizes, folding", ODD_MODELS)
def test_odd_shapes_bit_exact_with_exact_timing(sizes, folding, pipeline_every):
    model = random_model(sizes, seed=sum(sizes))
    rng = np.random.default_rng(len(sizes))
    top = (1 << model.input_bits) - 1
    images = np.concatenate(
        [
            np.zeros((1, sizes[0])),
            np.full((1, sizes[0]), top),
            rng.integers(0, top + 1, size=(10, sizes[0])),
        ]
    ).astype(np.int64)
    fold = [LayerFolding(p, s) for p, s in folding]
    net, classes, scores, out_cycles, in_cycles = run_network(
        model, fold, images, pipeline_every=pipeline_every
    )
    assert_bit_exact(model, images, classes, scores)
    assert_timing(net, out_cycles, in_cycles)
    _, classes, scores, _, _ = run_network(
        model, fold, images, gap=0.4, stall=0.4, seed=5, pipeline_every=pipeline_every
    )
    assert_bit_exact(model, images, classes, scores)


def test_unrolled_small_network_takes_an_image_every_cycle():
    model = random_model([6, 5, 3], seed=9)
    images = np.random.default_rng(0).integers(0, 256, size=(12, 6))
    net, classes, scores, out_cycles, in_cycles = run_network(
        model, unrolled_folding(model), images
    )
    assert net.plan.initiation_interval == 1
    assert_bit_exact(model, images, classes, scores)
    assert_timing(net, out_cycles, in_cycles)
