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
        (8, 4, 5, 3, 1, 2),  # 36 beats, four per pixel
        (5, 6, 4, 3, 1, 3),  # beats that span two pixels, and two in one
        (6, 5, 5, 3, 1, 4),  # SIMD divides neither C nor the window
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
        # docs/hardware.md: one step per cycle: one per beat, in the pixel where the beat
        # ends, and one more per pixel whose last values only gather for the next beat; once
        # the window's pixels are there (longer only where it waits for the input).
        total = kernel * kernel * channels
        ends = {min(b * simd + simd, total) - 1 for b in range(dut.beats)}
        steps = dut.beats + sum(
            (pixel + 1) * channels - 1 not in ends for pixel in range(kernel * kernel)
        )
        assert dut.stage.cycles_per_window == steps
        starts = np.diff(out_cycles[:: dut.beats])
        assert min(starts.tolist()) == steps


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


@pytest.mark.parametrize("pixels", [1, 9, 25])
def test_window_phases_send_every_value_once_in_order(pixels):
    """Replaying the planned steps as the hardware does (a pixel at the memory's output, the
    gather register, the last pixel's padded beat) gives the window's values in order."""
    from rtl_gen.conv_plan import window_phases

    for channels in range(1, 10):
        for simd in range(1, 21):
            phases, steps = window_phases(channels, simd, pixels)
            sent, gathered, phase, position = [], {}, 0, 0
            for _ in range(steps):
                ph = phases[phase]
                last = position == pixels - 1
                pixel = [position * channels + ch for ch in range(channels)]
                lanes = [gathered[j] for j in range(ph.gathered)]
                lanes += pixel[ph.offset : ph.offset + ph.take]
                if ph.full or last:
                    sent.append(lanes + [None] * (simd - len(lanes)))
                else:
                    gathered.update(enumerate(lanes))
                phase = 0 if not ph.full and last else ph.next
                position += ph.pixel_done
            total = pixels * channels
            assert position == pixels and phase == 0
            assert sum(sent, []) == list(range(total)) + [None] * (len(sent) * simd - total)
            assert len(sent) == -(-total // simd)
