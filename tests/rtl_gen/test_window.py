"""The sliding window and max pooling blocks in amaranth.sim, against the integer model's
semantics (the reference's own functions), over several images, with odd sizes, kernels of 1,
3 and 5, channel counts that SIMD does not divide, and random gaps and stalls."""

from __future__ import annotations

import numpy as np
import pytest

from bchw.core import reference
from bchw.core.intmodel import MaxPoolLayer
from bchw.errors import BchwError
from rtl_gen.window import MaxPool, SlidingWindow
from tests.streams import beats_of, simulate

HANDSHAKES = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.4), (0.4, 0.5)]
IMAGES = 3


def expected_windows(images, kernel, padding):
    """Every window of every image in raster order, ordered by kernel row, kernel column and
    channel, zero padded: the integer model's window (docs/integer-model.md)."""
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    views = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(1, 2))
    n, ho, wo = views.shape[:3]
    return views.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1)


def pixel_beats(images):
    return [[int(v) for v in pixel] for pixel in images.reshape(-1, images.shape[-1])]


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize(
    "channels, height, width, kernel, padding, simd",
    [
        (1, 5, 7, 3, 1, 9),  # one beat per window
        (3, 6, 5, 3, 1, 4),  # 27 values in beats of 4: the last padded
        (2, 7, 7, 5, 2, 7),  # kernel 5, SIMD divides nothing
        (2, 7, 6, 5, 0, 10),  # no padding
        (3, 4, 5, 1, 0, 2),  # kernel 1
        (1, 3, 3, 3, 1, 1),  # one value per beat, image as small as the kernel
        (4, 5, 9, 3, 0, 36),  # a whole window per beat
        (1, 9, 5, 5, 1, 3),  # padding below the size-keeping one
        (8, 4, 5, 3, 1, 2),  # 36 beats: the reader waits for a free window register
    ],
)
def test_sliding_window_gives_every_window_in_order(
    channels, height, width, kernel, padding, simd, gap, stall
):
    rng = np.random.default_rng(channels * 100 + height * 10 + width + kernel)
    images = rng.integers(1, 32, size=(IMAGES, height, width, channels))  # 0 only as padding
    dut = SlidingWindow(channels, height, width, kernel, padding, bits=5, simd=simd)
    windows = expected_windows(images, kernel, padding)
    expected = beats_of(windows, simd, fill=0)
    outs, out_cycles, _ = simulate(dut, pixel_beats(images), len(expected), gap=gap, stall=stall)
    assert [[int(v) for v in beat] for beat in outs] == expected
    if gap == 0 and stall == 0:
        # docs/hardware.md: a window every max(k*k + 2, beats) cycles once its pixels are there
        # (longer only where it waits for the input, at most one pixel per cycle here).
        starts = np.diff(out_cycles[:: dut.beats])
        assert min(starts.tolist()) == max(kernel * kernel + 2, dut.beats)


@pytest.mark.parametrize("gap, stall", HANDSHAKES)
@pytest.mark.parametrize(
    "channels, height, width, size",
    [(1, 4, 4, 2), (3, 5, 7, 2), (2, 9, 8, 3), (5, 2, 3, 2), (1, 6, 6, 6)],
)
def test_max_pool_takes_each_blocks_largest_and_drops_partial_blocks(
    channels, height, width, size, gap, stall
):
    rng = np.random.default_rng(channels * 100 + height * 10 + width + size)
    images = rng.integers(0, 16, size=(IMAGES, height, width, channels))
    layer = MaxPoolLayer(channels, height, width, size, bits=4)
    expected, _ = reference.layer_forward(layer, images)
    dut = MaxPool(channels, height, width, size, bits=4)
    outs, _, _ = simulate(dut, pixel_beats(images), expected[..., 0].size, gap=gap, stall=stall)
    assert [[int(v) for v in beat] for beat in outs] == pixel_beats(expected)


def test_blocks_refuse_impossible_shapes():
    with pytest.raises(BchwError, match="padding"):
        SlidingWindow(1, 5, 5, 3, 2, 8, 1)
    with pytest.raises(BchwError, match="does not fit"):
        SlidingWindow(1, 2, 5, 5, 0, 8, 1)
    with pytest.raises(BchwError, match="does not fit"):
        MaxPool(1, 3, 5, 4, 8)


CNNS = [
    # arch, folding (pe, simd) per convolution and dense layer
    ("1x6x7-3C3-MP2-4-3", [(3, 9), (2, 9), (3, 2)]),
    ("2x7x6-3C3-MP2-4C1-5-3", [(2, 5), (4, 3), (5, 12), (1, 5)]),
    ("3x5x5-4C5p0-3", [(1, 75), (3, 4)]),
    ("1x8x8-2C3p0-MP3-3C3-4", [(1, 4), (3, 18), (2, 3)]),
]


@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.3, 0.5)])
@pytest.mark.parametrize("arch, folding", CNNS)
def test_a_whole_cnn_matches_the_reference_bit_for_bit(arch, folding, gap, stall):
    from bchw.core import intmodel
    from bchw.core.synthetic import random_network
    from rtl_gen.cnn import ConvNetwork
    from rtl_gen.conv_plan import plan_conv_design
    from rtl_gen.plan import LayerFolding

    model = intmodel.from_bytes(intmodel.to_bytes(random_network(arch, seed=5, act_bits=4)))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(4, model.input_size))
    plan = plan_conv_design(model, [LayerFolding(pe, simd) for pe, simd in folding], 1)
    dut = ConvNetwork(plan)
    c = model.input_shape[0]
    beats = [[int(v) for v in pixel] for pixel in images.reshape(-1, c)]
    outs, _, _ = simulate(dut, beats, len(images), gap=gap, stall=stall)
    result = reference.run(model, images)
    assert [int(o["index"]) for o in outs] == result.predicted.tolist()
    scores = [[int(v) for v in o["scores"]] for o in outs]
    assert scores == result.scores.tolist()
