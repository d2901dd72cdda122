"""The numpy reference against straightforward Python-integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bchw.core import reference
from bchw.core.intmodel import IntegerLayer, IntegerModel
from bchw.errors import BchwError


def python_requantize(acc: int, signs, shifts, offset: int, r: int, bits: int, signed: bool) -> int:
    """The docs' formula in plain Python integers (floor division, powers, no shifts)."""
    t = sum(s * acc * 2**h for s, h in zip(signs, shifts, strict=True)) + offset
    if r > 0:
        t += 2 ** (r - 1)
    v = t // 2**r
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return min(max(v, lo), hi)


@st.composite
def requant_cases(draw):
    n_in = draw(st.integers(1, 64))
    in_bits = draw(st.integers(1, 12))
    terms = draw(st.integers(1, 4))
    n_out = draw(st.integers(1, 6))
    r = draw(st.integers(0, 30))
    signed = draw(st.booleans())
    out_bits = draw(st.integers(2 if signed else 1, 16))
    signs = np.array(
        draw(
            st.lists(
                st.lists(st.integers(-1, 1), min_size=terms, max_size=terms),
                min_size=n_out,
                max_size=n_out,
            )
        ),
        dtype=np.int8,
    )
    shifts = np.array(
        draw(
            st.lists(
                st.lists(st.integers(0, 24), min_size=terms, max_size=terms),
                min_size=n_out,
                max_size=n_out,
            )
        ),
        dtype=np.int64,
    )
    shifts[signs == 0] = 0
    offsets = np.array(
        draw(st.lists(st.integers(-(2**40), 2**40), min_size=n_out, max_size=n_out)), dtype=np.int64
    )
    layer = IntegerLayer(
        weights=np.ones((n_out, n_in), dtype=np.int8),
        scale_sign=signs,
        scale_shift=shifts,
        offset=offsets,
        requant_shift=r,
        input_bits=in_bits,
        output_bits=out_bits,
        activation="none" if signed else "relu",
        output_frac_bits=0,
    )
    bound = layer.acc_bound
    acc = np.array(
        draw(
            st.lists(
                st.lists(st.integers(-bound, bound), min_size=n_out, max_size=n_out),
                min_size=1,
                max_size=5,
            )
        ),
        dtype=np.int64,
    )
    return layer, acc


@settings(max_examples=300, deadline=None)
@given(requant_cases())
def test_requantization_matches_python_integers(case):
    layer, acc = case
    v = reference.requantize(layer, acc)
    y, _ = reference.saturate(layer, v)
    for n in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            expected = python_requantize(
                int(acc[n, j]),
                layer.scale_sign[j].tolist(),
                layer.scale_shift[j].tolist(),
                int(layer.offset[j]),
                layer.requant_shift,
                layer.output_bits,
                layer.output_signed,
            )
            assert int(y[n, j]) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 9),
    st.integers(1, 16),
    st.integers(0, 2**32 - 1),
)
def test_accumulation_is_exact(n_out, n_in, in_bits, seed):
    rng = np.random.default_rng(seed)
    weights = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_out, n_in))
    layer = IntegerLayer(
        weights,
        np.zeros((n_out, 1), np.int8),
        np.zeros((n_out, 1), np.int64),
        np.zeros(n_out, np.int64),
        0,
        in_bits,
        8,
        "relu",
        0,
    )
    x = rng.integers(0, 2**in_bits, size=(7, n_in))
    x[0] = 2**in_bits - 1  # all maximum: drives acc to its bound for some neurons
    expected = [
        [sum(int(w) * int(v) for w, v in zip(row, xs, strict=True)) for row in weights] for xs in x
    ]
    assert reference.accumulate(layer, x).tolist() == expected


@pytest.mark.parametrize("n_in, in_bits", [(1024, 8), (1024, 16), (65536, 8)])
def test_float_accumulation_exact_at_the_bound(n_in, in_bits):
    """All +1 weights and all-maximum inputs: acc = n * x_max exactly, in float32 or float64."""
    weights = np.ones((2, n_in), dtype=np.int8)
    weights[1] = -1
    weights[1, 0] = 1
    layer = IntegerLayer(
        weights,
        np.zeros((2, 1), np.int8),
        np.zeros((2, 1), np.int64),
        np.zeros(2, np.int64),
        0,
        in_bits,
        8,
        "relu",
        0,
    )
    top = 2**in_bits - 1
    x = np.full((3, n_in), top, dtype=np.int64)
    x[1, 1:] = top - 1
    acc = reference.accumulate(layer, x)
    assert acc[0].tolist() == [n_in * top, -(n_in - 2) * top]
    assert acc[1].tolist() == [top + (n_in - 1) * (top - 1), top - (n_in - 1) * (top - 1)]


def test_worked_example_from_the_docs():
    def layer_with(offset):
        return IntegerLayer(
            weights=np.ones((1, 1), np.int8),
            scale_sign=np.array([[1, -1]], np.int8),
            scale_shift=np.array([[3, 0]], np.int64),
            offset=np.array([offset], np.int64),
            requant_shift=4,
            input_bits=8,
            output_bits=8,
            activation="relu",
            output_frac_bits=0,
        )

    acc = np.array([[-37]])
    assert reference.requantize(layer_with(50), acc).tolist() == [[-13]]
    assert reference.saturate(layer_with(50), np.array([[-13]]))[0].tolist() == [[0]]
    assert reference.requantize(layer_with(400), acc).tolist() == [[9]]


def test_argmax_ties_go_to_the_lowest_index():
    scores = np.array([[3, 7, 7, 1], [5, 5, 5, 5], [-2, -9, -2, -3], [0, 0, 0, 1]])
    assert reference.argmax_lowest(scores).tolist() == [1, 0, 0, 3]


def test_saturation_counts():
    layer = IntegerLayer(
        np.ones((2, 1), np.int8),
        np.zeros((2, 1), np.int8),
        np.zeros((2, 1), np.int64),
        np.zeros(2, np.int64),
        0,
        8,
        4,
        "none",
        0,
    )
    y, counts = reference.saturate(layer, np.array([[9, -9], [7, -8], [8, 0]]))
    assert y.tolist() == [[7, -8], [7, -8], [7, 0]]
    assert (counts.high, counts.low, counts.outputs) == (2, 1, 6)


def _one_layer_model(in_bits=4):
    layer = IntegerLayer(
        np.ones((2, 3), np.int8),
        np.zeros((2, 1), np.int8),
        np.zeros((2, 1), np.int64),
        np.zeros(2, np.int64),
        0,
        in_bits,
        4,
        "none",
        0,
    )
    return IntegerModel(input_size=3, input_bits=in_bits, input_scale=1.0, layers=(layer,))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 4), np.uint8), "shape"),
        (np.zeros(3, np.uint8), "shape"),
        (np.zeros((2, 3), np.float32), "integers"),
        (np.full((2, 3), 16), "0..15"),
        (np.full((2, 3), -1), "0..15"),
    ],
)
def test_bad_images_are_refused(images, message):
    with pytest.raises(BchwError, match=message):
        reference.run(_one_layer_model(), images)


def test_extreme_inputs_on_a_trained_model(short_model):
    """All zero, all maximum and alternating inputs agree with the independent implementation."""
    from bchw.core import intmodel
    from tests import independent

    top = 2**short_model.input_bits - 1
    n = short_model.input_size
    images = np.stack(
        [
            np.zeros(n, np.int64),
            np.full(n, top),
            np.arange(n) % 2 * top,
            (1 - np.arange(n) % 2) * top,
        ]
    )
    scores, predicted = independent.run(intmodel.to_bytes(short_model), images)
    result = reference.run(short_model, images)
    assert np.array_equal(result.scores, scores) and np.array_equal(result.predicted, predicted)


def test_empty_batch(short_model):
    result = reference.run(short_model, np.zeros((0, short_model.input_size), np.uint8))
    assert result.scores.shape == (0, short_model.num_classes) and result.predicted.shape == (0,)
