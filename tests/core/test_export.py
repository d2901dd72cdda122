"""Export: batch-norm folding within the derived bound, signed-power-of-two scales, formats."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bchw.core import intmodel, reference
from bchw.core.export import (
    FLOW,
    approximate_spt,
    best_frac_bits,
    build_integer_model,
    calibration_images,
    draft_from_checkpoint,
    export_checkpoint,
)
from bchw.core.intmodel import output_range
from bchw.core.options import ExportOptions
from bchw.errors import BchwError


def _layer_inputs(model, images):
    """The integer inputs of every layer, from the integer model itself."""
    x = images.astype(np.int64)
    inputs = []
    for layer in model.layers:
        inputs.append(x)
        x, _ = reference.layer_forward(layer, x)
    return inputs


def assert_within_the_bound(layer, linear, norm, acc, h, s_in, where):
    """docs/integer-model.md's bound between the integer layer's ``v`` (and ``y``) and the
    float layer's output ``h`` on the same inputs, in output units, for every output; returns
    the integer outputs ``y``."""
    out_unit = 2.0**layer.output_frac_bits
    big_h = h * out_unit
    gain = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().numpy()
    center = ((norm.running_mean - linear.bias) / s_in).detach().numpy()
    exact_scale = gain * s_in * out_unit
    approx_scale = (layer.scale_sign * np.ldexp(1.0, layer.scale_shift - layer.requant_shift)).sum(
        1
    )
    v = reference.requantize(layer, acc)
    bound = (
        0.5
        + np.abs(exact_scale - approx_scale) * np.abs(acc - center)
        + 2.0 ** -(layer.requant_shift + 1)
    )
    float_error = 1e-9 * (1 + np.abs(big_h))  # float64 evaluation of H, not of the model
    assert np.all(np.abs(v - big_h) <= bound + float_error), where
    lo, hi = output_range(layer.output_bits, layer.output_signed)
    y, _ = reference.saturate(layer, v)
    assert np.all(np.abs(y - np.clip(big_h, lo, hi)) <= bound + float_error), where
    return y


@pytest.mark.parametrize("scale_terms", [1, 2, 3])
def test_integer_layers_agree_with_float_layers_within_the_derived_bound(
    short_checkpoint, digits, scale_terms
):
    """docs/integer-model.md: |v - H| <= 1/2 + |A - A'| |acc - m/s_in| + 2^-(R+1), every neuron.

    H is the PyTorch layer (binary weights, batch norm in eval mode, float64) applied to the same
    integer inputs, expressed in output units; A, m come from the checkpoint, not from export.
    """
    model = export_checkpoint(
        short_checkpoint, digits.train.images, ExportOptions(scale_terms=scale_terms)
    )
    float_model = copy.deepcopy(short_checkpoint.model).double().eval()
    images = digits.test.images
    s_in = digits.input_scale
    for index, (layer, x) in enumerate(
        zip(model.layers, _layer_inputs(model, images), strict=True)
    ):
        linear, norm = float_model.linears[index], float_model.norms[index]
        with torch.no_grad():
            h = norm(linear(torch.from_numpy(x.astype(np.float64) * s_in))).numpy()
        acc = reference.accumulate(layer, x)
        assert_within_the_bound(layer, linear, norm, acc, h, s_in, f"layer {index}")
        s_in = 2.0**-layer.output_frac_bits


def test_integer_accuracy_close_to_float(short_checkpoint, short_model, digits):
    from bchw.core.train import error_rate

    float_acc = 1 - error_rate(short_checkpoint.model, digits.test, digits.input_scale)
    int_acc = np.mean(
        reference.run(short_model, digits.test.images).predicted == digits.test.labels
    )
    assert abs(int_acc - float_acc) <= 0.02


def test_export_is_deterministic(short_checkpoint, digits):
    a = export_checkpoint(short_checkpoint, digits.train.images, ExportOptions())
    b = export_checkpoint(short_checkpoint, digits.train.images, ExportOptions())
    assert intmodel.to_bytes(a) == intmodel.to_bytes(b)


def test_options_shape_the_model(short_checkpoint, digits):
    options = ExportOptions(act_bits=5, out_bits=12, scale_terms=3, frac_bits=(3, 2, 1))
    model = export_checkpoint(short_checkpoint, digits.train.images, options)
    assert [layer.output_bits for layer in model.layers] == [5, 5, 12]
    assert [layer.output_frac_bits for layer in model.layers] == [3, 2, 1]
    assert all(layer.scale_terms == 3 for layer in model.layers)
    assert model.layers[1].input_bits == 5 and model.input_bits == 8
    assert model.provenance["export"]["frac_bits_override"] == [3, 2, 1]


@pytest.mark.parametrize(
    "options, message",
    [
        (ExportOptions(act_bits=0), "activation bits"),
        (ExportOptions(act_bits=17), "activation bits"),
        (ExportOptions(out_bits=1), "output bits"),
        (ExportOptions(scale_terms=0), "scale terms"),
        (ExportOptions(scale_terms=9), "scale terms"),
        (ExportOptions(frac_bits=(1, 2)), "one per layer"),
        (ExportOptions(input_bits=4), "does not fit"),
        (ExportOptions(input_bits=0), "input bits"),
    ],
)
def test_impossible_options_are_refused(short_checkpoint, digits, options, message):
    with pytest.raises(BchwError, match=message):
        export_checkpoint(short_checkpoint, digits.train.images, options)


def test_float_weight_checkpoints_do_not_export(short_checkpoint, digits):
    checkpoint = copy.copy(short_checkpoint)
    object.__setattr__(checkpoint, "model", copy.deepcopy(short_checkpoint.model))
    checkpoint.model.binarization = "none"
    with pytest.raises(BchwError, match="float weights"):
        export_checkpoint(checkpoint, digits.train.images, ExportOptions())


def test_weights_export_as_the_sign_of_the_real_weights(short_checkpoint, short_model):
    for linear, layer in zip(short_checkpoint.model.linears, short_model.layers, strict=True):
        expected = np.where(linear.weight.detach().numpy() >= 0, 1, -1)
        assert np.array_equal(layer.weights, expected)


def test_calibration_picks_the_format_that_covers_the_range():
    values = np.linspace(0, 3.9, 1000)
    assert best_frac_bits(values, bits=8, signed=False) == 6  # 0 .. 255/64 = 3.98
    assert best_frac_bits(values - 1.9, bits=8, signed=True) == 6  # -2 .. 1.98
    assert best_frac_bits(values * 100, bits=8, signed=False) == -1  # 0 .. 510 in steps of 2


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=2.0**-20, max_value=2.0**10), st.booleans())
def test_signed_power_of_two_error_bounds(magnitude, negative):
    value = -magnitude if negative else magnitude
    errors = []
    for terms, relative_bound in ((1, 1 / 3), (2, 1 / 11), (3, 1 / 43)):
        signs, exps = approximate_spt(np.array([value]), terms, -30)
        approx = float((signs * np.ldexp(1.0, exps)).sum())
        assert np.count_nonzero(signs) <= terms
        error = abs(approx - value)
        assert error <= relative_bound * magnitude * (1 + 1e-12)
        errors.append(error)
    assert errors[0] >= errors[1] >= errors[2]


@pytest.mark.parametrize(
    "value, terms",
    [(0.75 * 2**-5, 2), (7.0, 2), (1.0, 1), (-0.125, 1), (11.0, 3), (2**-30, 1), (0.0, 2)],
)
def test_sums_of_powers_of_two_are_found_exactly(value, terms):
    signs, exps = approximate_spt(np.array([value]), terms, -30)
    assert float((signs * np.ldexp(1.0, exps)).sum()) == value
    assert np.all(exps[signs == 0] == 0)


def test_exponents_respect_the_floor():
    signs, exps = approximate_spt(np.array([2.0**-40, 3 * 2.0**-31]), 2, -30)
    assert np.all(exps[signs != 0] >= -30)
    assert not signs[0].any()  # too small to represent: no term at all
    assert math.isclose(float((signs[1] * np.ldexp(1.0, exps[1])).sum()), 2.0**-30)


def test_each_flow_step_fills_what_the_next_reads(short_checkpoint, digits):
    """The steps run one by one: each fills its own fields of every layer draft and leaves the
    others; together they give export_checkpoint's model."""
    options = ExportOptions()
    calibration = calibration_images(digits.train.images, options.calibration_images)
    draft = draft_from_checkpoint(short_checkpoint, calibration, options)
    filled = {
        "fold_batch_norm": ("gain", "center", "beta"),
        "calibrate_formats": ("frac_bits",),
        "quantize_scales": ("scale", "scale_sign", "scale_exp"),
        "compute_offsets": ("requant_shift", "offset"),
    }
    assert [step.__name__ for step in FLOW] == list(filled)
    for step in FLOW:
        fields = filled[step.__name__]
        assert all(getattr(layer, f) is None for layer in draft.layers for f in fields)
        draft = step(draft)
        assert all(getattr(layer, f) is not None for layer in draft.layers for f in fields)
    model = build_integer_model(draft, {})
    exported = export_checkpoint(short_checkpoint, digits.train.images, options)
    for a, b in zip(model.layers, exported.layers, strict=True):
        assert np.array_equal(a.offset, b.offset) and np.array_equal(a.weights, b.weights)
        assert np.array_equal(a.scale_shift, b.scale_shift) and a.requant_shift == b.requant_shift


def test_cnn_layers_agree_with_float_layers_within_the_derived_bound(cnn_checkpoint, digits):
    """The bound of docs/integer-model.md for every channel at every position of every
    convolution and every unit of the dense layers, the float layers (PyTorch's convolution in
    its own NCHW layout) fed the integer model's own inputs: the kernel order, the padding
    and the flattening of the integer model are PyTorch's."""
    from bchw.core.intmodel import ConvLayer, MaxPoolLayer

    model = export_checkpoint(cnn_checkpoint, digits.train.images, ExportOptions())
    assert model.arch() == cnn_checkpoint.model.arch
    float_model = copy.deepcopy(cnn_checkpoint.model).double().eval()
    x = digits.test.images.astype(np.int64).reshape(-1, 8, 8, 1)
    s_in = digits.input_scale
    weighted = iter(zip(float_model.linears, float_model.norms, strict=True))
    for index, layer in enumerate(model.layers):
        if isinstance(layer, MaxPoolLayer):
            x, _ = reference.layer_forward(layer, x)
            continue
        linear, norm = next(weighted)
        real = torch.from_numpy(x.astype(np.float64) * s_in)
        with torch.no_grad():
            if isinstance(layer, ConvLayer):
                h = norm(linear(real.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).numpy()
                acc = reference.convolve(layer, x)
            else:
                flat = x.reshape(len(x), -1)
                h = norm(linear(torch.from_numpy(flat.astype(np.float64) * s_in))).numpy()
                acc = reference.accumulate(layer, flat)
        x = assert_within_the_bound(layer, linear, norm, acc, h, s_in, f"layer {index}")
        s_in = 2.0**-layer.output_frac_bits
    assert np.array_equal(x, reference.run(model, digits.test.images).scores)


def test_cnn_integer_accuracy_close_to_float(cnn_checkpoint, cnn_model, digits):
    from bchw.core.train import error_rate

    float_acc = 1 - error_rate(cnn_checkpoint.model, digits.test, digits.input_scale)
    result = reference.run(cnn_model, digits.test.images)
    assert float_acc > 0.5  # it learned
    assert abs(np.mean(result.predicted == digits.test.labels) - float_acc) <= 0.03
