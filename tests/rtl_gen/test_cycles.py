"""The cycle model (rtl_gen/cycles.py) against the simulated circuit, handshake by handshake."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bchw.core.synthetic import random_network
from rtl_gen import DEFAULT_SYNAPSES_PER_CYCLE, cycles
from rtl_gen.conv_plan import (
    ArgmaxStage,
    conv_stages,
    default_conv_folding,
    flatten_links,
    plan_conv_design,
)
from rtl_gen.plan import FifoLink, LayerFolding, VectorBufferLink, plan_design
from tests.streams import random_model, simulate

# arch, folding: windows that wait for rows, engines slower than their windows, unrolled and
# folded dense layers, every way of flattening (SIMD = C with a FIFO, a divisor of C, a
# multiple of C, the whole vector), kernels 1, 3 and 5 with and without padding.
DESIGNS = [
    ("1x6x7-3C3-MP2-4-3", [(3, 9), (2, 9), (3, 2)]),
    ("2x7x6-3C3-MP2-4C1-5-3", [(2, 5), (4, 3), (5, 12), (1, 5)]),
    ("3x5x5-4C5p0-3", [(1, 75), (3, 4)]),
    ("1x8x8-2C3p0-MP3-3C3-4", [(1, 4), (3, 18), (2, 3)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(1, 1), (2, 3), (3, 5), (5, 6), (3, 5)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(1, 1), (2, 36), (6, 48), (5, 6), (3, 5)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(4, 18), (3, 36), (2, 3), (5, 6), (3, 5)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(4, 18), (3, 36), (2, 1), (5, 6), (3, 5)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(4, 18), (3, 36), (2, 6), (5, 6), (3, 5)]),
    ("2x9x9-4C3-MP2-3C3-6-5-3", [(2, 2), (3, 7), (2, 5), (2, 3), (1, 2)]),
    ("3x7x9-5C5-MP2-4C3p0-3", [(5, 75), (2, 45), (1, 2)]),
    ("1x2x2-8C1-3", [(8, 1), (3, 32)]),  # 4 cycles per image: the tree argmax, not the scan
]


def _plan(arch, folding, pipeline_every=1):
    model = random_network(arch, seed=5, act_bits=4)
    if folding is None:
        folding = default_conv_folding(model)
    else:
        folding = [LayerFolding(pe, simd) for pe, simd in folding]
    return plan_conv_design(model, folding, pipeline_every)


def _run_circuit(plan, images, seed=0, gap=0.0, stall=0.0):
    from rtl_gen.cnn import ConvNetwork

    c = plan.model.input_shape[0]
    beats = [[int(v) for v in pixel] for pixel in images.reshape(-1, c)]
    _, out_cycles, in_cycles = simulate(
        ConvNetwork(plan), beats, len(images), seed=seed, gap=gap, stall=stall
    )
    return in_cycles, out_cycles


@pytest.mark.parametrize("arch, folding", DESIGNS)
def test_every_handshake_matches_the_circuit_under_gaps_and_back_pressure(arch, folding):
    """Random input gaps and output stalls, the same draws for both: every beat taken and
    every result given on the same cycle."""
    plan = _plan(arch, folding)
    images = np.random.default_rng(3).integers(0, 256, size=(3, plan.model.input_size))
    gap, stall = 0.3, 0.5
    in_cycles, out_cycles = _run_circuit(plan, images, seed=7, gap=gap, stall=stall)
    rng = random.Random(7)
    timing = cycles.run(
        plan.stages,
        plan.input_beats,
        len(images),
        10**7,
        offer=lambda: rng.random() >= gap,
        accept=lambda: rng.random() >= stall,
    )
    assert list(timing.beat_cycles) == in_cycles
    assert list(timing.out_cycles) == out_cycles


@pytest.mark.parametrize("pipeline_every", [0, 2])
@pytest.mark.parametrize(
    "arch, folding",
    [DESIGNS[1], DESIGNS[4], DESIGNS[6], DESIGNS[-1], ("2x9x9-4C3-MP2-3C3-6-5-3", None)],
)
def test_the_plans_latency_and_interval_are_the_circuits(arch, folding, pipeline_every):
    """Back-to-back images, the output always ready: the first image's latency and the steady
    spacing of results are the plan's, to the cycle."""
    plan = _plan(arch, folding, pipeline_every)
    images = np.random.default_rng(4).integers(0, 256, size=(5, plan.model.input_size))
    in_cycles, out_cycles = _run_circuit(plan, images)
    assert out_cycles[0] - in_cycles[0] == plan.latency
    gaps = [b - a for a, b in zip(out_cycles, out_cycles[1:], strict=False)]
    assert gaps[-2:] == [plan.initiation_interval] * 2


@pytest.mark.parametrize(
    "sizes, folding",
    [
        ([20, 12, 8, 5], [(12, 20), (8, 12), (5, 8)]),  # unrolled
        ([20, 12, 8, 5], [(4, 5), (2, 4), (1, 2)]),  # FIFO links
        ([20, 12, 8, 5], [(3, 7), (8, 5), (2, 3)]),  # vector buffers, a collector
    ],
)
@pytest.mark.parametrize("pipeline_every", [0, 1, 2])
def test_the_cycle_model_agrees_with_the_mlp_formulas(sizes, folding, pipeline_every):
    """The MLP's closed formulas (checked against its circuit elsewhere) and the cycle model,
    which shares no code with them, give the same latency and interval."""
    model = random_model(sizes, seed=2)
    plan = plan_design(model, [LayerFolding(*f) for f in folding], pipeline_every)
    stages: list[object] = []
    for index, layer in enumerate(plan.layers):
        stages.append(layer)
        if index < len(plan.links):
            stages.append(plan.links[index])
    if plan.collector is not None:
        stages.append(plan.collector)
    stages.append(ArgmaxStage(model.num_classes, plan.argmax_latency, plan.argmax_scan))
    timing = cycles.run(stages, plan.input_beats, 6, 10**6)
    assert timing.latency == plan.latency
    assert timing.gaps[-1] == plan.initiation_interval


def test_the_scan_argmax_is_used_only_where_it_cannot_slow_the_design():
    """A scanning argmax takes classes + 2 cycles per image: it is chosen only where the
    design's interval is at least twice that, and the interval is the tree argmax's."""
    for arch, folding in DESIGNS:
        plan = _plan(arch, folding)
        argmax = plan.stages[-1]
        tree_stages = (*plan.stages[:-1], ArgmaxStage(argmax.classes, 0))
        interval = cycles.run(tree_stages, plan.input_beats, 5, 10**7).gaps[-1]
        if argmax.scan:  # decided on a bound from below of this interval
            assert interval >= 2 * (argmax.classes + 2), arch
        assert plan.initiation_interval == interval, arch
    assert not _plan(*DESIGNS[-1]).stages[-1].scan


def test_flattening_needs_no_whole_vector_buffer_when_simd_fits_the_pixels():
    model = random_network("2x9x9-4C3-MP2-3C3-6-5-3", seed=5, act_bits=4)
    folding = [LayerFolding(4, 18), LayerFolding(3, 36), None, LayerFolding(5, 6)]
    for simd, pe, expected in [
        (3, 2, [FifoLink]),  # the pixels are the beats; a FIFO while the engine folds
        (3, 6, []),  # one neuron fold: the engine takes every beat as it comes
        (1, 2, [VectorBufferLink, FifoLink]),  # a pixel re-beaten
        (6, 2, [VectorBufferLink, FifoLink]),  # two pixels gathered
        (5, 2, [VectorBufferLink]),  # the whole vector
    ]:
        folding[2] = LayerFolding(pe, simd)
        engines, _ = conv_stages(model, [*folding, LayerFolding(3, 5)], 1)
        links = flatten_links(3, 16, engines[2])
        assert [type(link) for link in links] == expected
        sizes = [link.n for link in links if isinstance(link, VectorBufferLink)]
        assert all(n < 48 for n in sizes) or simd == 5


def test_the_default_folding_meets_its_interval_without_racing_the_windows():
    """MNIST's CNN: every engine within the slowest window's interval, the flatten cheap."""
    model = random_network("1x28x28-32C3-MP2-64C3-MP2-512-10", seed=1)
    folding = default_conv_folding(model)
    plan = plan_conv_design(model, folding)
    window_floor = 28 * 28 * 3 * 3  # a pixel read per cycle
    assert plan.initiation_interval == window_floor
    for engine in plan.layers:
        lay = engine.layer
        positions = lay.out_height * lay.out_width if lay.kind == "conv" else 1
        assert positions * engine.cycles_per_vector <= window_floor
    assert not any(isinstance(stage, VectorBufferLink) and stage.n == 3136 for stage in plan.stages)


@pytest.mark.parametrize("arch", ["3x16x16-1C3-1C3-10", "3x16x16-4C3-4C3-10", "3x12x10-8C5-MP2-6"])
def test_the_default_folding_meets_its_target_with_few_input_channels(arch):
    """A window whose SIMD divides neither its channels nor the window takes more than k*k
    cycles per output pixel: the default folding counts those steps."""
    model = random_network(arch, seed=2)
    layers = model.weighted_layers()
    work = sum(lay.positions * lay.in_features * lay.out_features for lay in layers)
    floor = max(lay.positions * lay.kernel**2 for lay in layers if lay.kind == "conv")
    target = max(-(-work // DEFAULT_SYNAPSES_PER_CYCLE), floor)
    plan = plan_conv_design(model, default_conv_folding(model))
    assert plan.initiation_interval <= target
