"""Convolutional integer models: the architecture notation, version 2 of the file format, the
validator on malformed convolution fields, and the reference against an independent
implementation of docs/integer-model.md."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bchw.core import intmodel, reference
from bchw.core.arch import parse_network
from bchw.core.synthetic import random_network
from bchw.errors import BchwError
from tests import independent
from tests.core.test_intmodel import rewrite

CNN = "1x12x10-5C3-MP2-6C1-7-4"


@pytest.mark.parametrize(
    ("arch", "canonical", "shapes"),
    [
        ("784-1024-10", "784-1024-10", [(784,), (1024,), (10,)]),
        ("1x28x28-32c3-mp2-10", "1x28x28-32C3-MP2-10",
         [(1, 28, 28), (32, 28, 28), (32, 14, 14), (10,)]),
        ("3x9x9-4C5p0-MP3-2", "3x9x9-4C5p0-MP3-2", [(3, 9, 9), (4, 5, 5), (4, 1, 1), (2,)]),
        ("1x7x7-2C5p1-3", "1x7x7-2C5p1-3", [(1, 7, 7), (2, 5, 5), (3,)]),
        ("2x5x5-MP2-3", "2x5x5-MP2-3", [(2, 5, 5), (2, 2, 2), (3,)]),
        ("1x28x28-512-10", "1x28x28-512-10", [(1, 28, 28), (512,), (10,)]),
    ],
)  # fmt: skip
def test_architectures_parse_to_their_shapes(arch, canonical, shapes):
    network = parse_network(arch)
    assert network.text() == canonical
    assert network.shapes() == shapes
    assert parse_network(canonical) == network


@pytest.mark.parametrize(
    ("arch", "problem"),
    [
        ("1x28x28-32C4-10", "odd"),
        ("1x28x28-32C3p2-10", "padding 2 exceeds 1"),
        ("784-32C3-10", "on a flat input"),
        ("1x28x28-10-32C3-10", "after a dense layer"),
        ("1x28x28-32C3", "must end in the class count"),
        ("1x28x28-32C3-MP2", "must end in the class count"),
        ("1x5x5-MP6-10", "MP6"),
        ("1x3x3-4C5p0-10", "does not fit"),
        ("1x28x28-x-10", "'x' is not a layer"),
        ("28x28-10", "neither a size"),
        ("0x3x3-10", "channels"),
        ("1x28x28-0C3-10", "0 channels"),
        ("3x256x256-128C3-10", "more than 65536"),
        ("1x28x28", "needs an input and a class count"),
        ("1x28x28--10", "needs an input and a class count"),
        ("784-10²", "'10²' is not a layer"),  # a superscript is a digit to str.isdigit
        ("784-" + "9" * 5000 + "-10", "is too large"),
        ("784-1000000000-10", "the number 1000000000... is too large"),
        ("1x28x28-" + "x" * 300 + "-10", "'xxxxxxxxxxxxxxxxxxxx...' is not a layer"),
    ],
)
def test_bad_architectures_are_refused_in_one_line(arch, problem):
    with pytest.raises(BchwError) as info:
        parse_network(arch)
    assert problem in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_a_cnn_is_written_as_version_2_and_an_mlp_as_version_1():
    cnn = intmodel.to_bytes(random_network(CNN, seed=1))
    mlp = intmodel.to_bytes(random_network("20-7-3", seed=1))

    def header(data):
        return intmodel.jsondoc.parse(data[12 : 12 + int.from_bytes(data[8:12], "little")])

    assert header(cnn)["version"] == 2 and header(cnn)["input"]["shape"] == [1, 12, 10]
    assert [layer["kind"] for layer in header(cnn)["layers"]] == [
        "conv",
        "maxpool",
        "conv",
        "dense",
        "dense",
    ]
    assert header(mlp)["version"] == 1 and "kind" not in header(mlp)["layers"][0]
    model = intmodel.from_bytes(cnn)
    assert model.arch() == CNN and model.input_shape == (1, 12, 10)
    assert intmodel.to_bytes(model) == cnn


def test_random_models_are_reproducible_and_not_degenerate():
    a = intmodel.to_bytes(random_network("1x28x28-8C3-MP2-16C3-MP2-32-10", seed=3))
    b = intmodel.to_bytes(random_network("1x28x28-8C3-MP2-16C3-MP2-32-10", seed=3))
    c = intmodel.to_bytes(random_network("1x28x28-8C3-MP2-16C3-MP2-32-10", seed=4))
    assert a == b and a != c
    images = np.random.default_rng(0).integers(0, 256, size=(200, 784))
    result = reference.run(intmodel.from_bytes(a), images)
    assert len(set(result.predicted.tolist())) >= 3  # the scores depend on the image
    for saturation in result.saturation:
        assert saturation.high < saturation.outputs // 2 or saturation.outputs == 0


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 3),
    height=st.integers(3, 11),
    width=st.integers(3, 11),
    kernel=st.sampled_from([1, 3, 5]),
    valid=st.booleans(),
    filters=st.integers(1, 7),
    pool=st.sampled_from([0, 2, 3]),
    act_bits=st.integers(1, 8),
    out_bits=st.integers(2, 12),
    terms=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_reference_matches_the_independent_implementation(
    channels, height, width, kernel, valid, filters, pool, act_bits, out_bits, terms, seed
):
    side = min(height, width)
    padding = 0 if valid else (kernel - 1) // 2
    if side + 2 * padding - kernel + 1 < max(1, pool):
        return
    tokens = [f"{channels}x{height}x{width}", f"{filters}C{kernel}" + ("p0" if valid else "")]
    tokens += [f"MP{pool}"] if pool else []
    tokens += ["5", "3"]
    model = random_network(
        "-".join(tokens), seed=seed, act_bits=act_bits, out_bits=out_bits, scale_terms=terms
    )
    data = intmodel.to_bytes(model)
    images = np.random.default_rng(seed).integers(0, 256, size=(17, model.input_size))
    ours = reference.run(intmodel.from_bytes(data), images)
    scores, predicted = independent.run(data, images)
    assert np.array_equal(ours.scores, scores)
    assert np.array_equal(ours.predicted, predicted)


def test_pooling_the_accumulators_first_counts_saturation_as_layer_by_layer():
    """run() pools accumulators before requantizing (exact by monotonicity, negative gains
    included); its saturation counts equal the step-by-step evaluation's."""
    model = random_network("2x9x9-6C3-MP2-5C3-MP3-4", seed=7, act_bits=3)
    flipped = list(model.layers)
    for index in (0, 2):  # negative gains on every other channel
        layer = flipped[index]
        sign = layer.scale_sign.copy()
        sign[::2] *= -1
        flipped[index] = dataclasses.replace(layer, scale_sign=sign, offset=-layer.offset)
    model = dataclasses.replace(model, layers=tuple(flipped))
    assert any(g < 0 for g in model.layers[0].gains())
    images = np.random.default_rng(1).integers(0, 256, size=(30, model.input_size))
    fast = reference.run(model, images)
    x = images.reshape(30, 9, 9, 2)
    counts = []
    for layer in model.layers:
        x, saturation = reference.layer_forward(layer, x)
        counts.append((saturation.high, saturation.low, saturation.outputs))
    assert [(s.high, s.low, s.outputs) for s in fast.saturation] == counts
    assert np.array_equal(fast.scores, x)
    assert sum(c[0] for c in counts) > 0  # the counts were put to the test


def _edit_layer(index, **changes):
    def edit(header):
        header["layers"][index].update(changes)

    return edit


GOOD = intmodel.to_bytes(random_network(CNN, seed=2))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_edit_layer(0, kernel=4), "kernel = 4 must be odd"),
        (_edit_layer(0, kernel=17), "kernel = 17 is outside"),
        (_edit_layer(0, padding=2), "padding = 2 is outside 0..1"),
        (_edit_layer(0, in_channels=2), "in_channels = 2 but the previous stage gives 1"),
        (_edit_layer(0, in_height=11), "in_height = 11"),
        (_edit_layer(0, out_width=9), "out_width = 9"),
        (_edit_layer(0, kind="pool"), "kind 'pool' is not one of"),
        (_edit_layer(0, in_features=9), "unknown field(s) 'in_features'"),
        (_edit_layer(1, size=1), "size = 1 is outside"),
        (_edit_layer(1, bits=4), "bits = 4 but the previous stage"),
        (_edit_layer(1, out_height=5), "out_height = 5"),
        (_edit_layer(3, in_features=100), "in_features = 100 but the previous stage gives 180"),
        (lambda h: h["input"].update(shape=[1, 12]), "input: shape [1, 12]"),
        (lambda h: h["input"].update(size=120), "unknown field(s) 'size'"),
        (lambda h: h["layers"].insert(4, dict(h["layers"][1])), "cannot come after a dense"),
        (lambda h: h["layers"].__setitem__(-1, dict(h["layers"][1])), "last layer must be dense"),
        (lambda h: h.update(version=1), "unknown field(s) 'shape'"),
    ],
)
def test_malformed_convolution_fields_are_refused(edit, problem):
    with pytest.raises(BchwError) as info:
        intmodel.from_bytes(rewrite(GOOD, edit))
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_a_flat_input_in_version_2_is_refused():
    mlp = intmodel.to_bytes(random_network("20-7-3", seed=1))

    def to_v2(header):
        header["version"] = 2
        header["input"]["shape"] = [header["input"].pop("size")]
        for layer in header["layers"]:
            layer["kind"] = "dense"

    with pytest.raises(BchwError, match=r"must be \[channels, height, width\]"):
        intmodel.from_bytes(rewrite(mlp, to_v2))


def test_commands_that_take_mlps_only_refuse_a_cnn_in_one_line(tmp_path):
    from rtl_gen.plan import default_folding

    with pytest.raises(BchwError, match="MLP models only"):
        default_folding(random_network(CNN, seed=1))


def test_the_reference_refuses_a_model_whose_one_image_exceeds_the_memory(monkeypatch):
    model = random_network("1x12x12-16C3-MP2-10", seed=0)
    monkeypatch.setattr(reference, "physical_memory", lambda: reference.image_bytes(model))
    with pytest.raises(BchwError, match="more than half this machine's"):
        reference.run(model, np.zeros((1, 144), dtype=np.uint8))


def test_random_refuses_a_negative_seed():
    with pytest.raises(BchwError, match="seed must be a whole number"):
        random_network("20-3", seed=-1)
