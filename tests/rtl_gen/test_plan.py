"""The design plan: foldings, their checks, and the plan's numbers against the circuit's.

The plan's cycle counts are checked against simulation to the cycle in test_blocks.py (each
layer engine, FIFO and vector buffer) and test_network.py (whole networks); here its widths
and counts against the Amaranth blocks it describes.
"""

from __future__ import annotations

import json

import pytest

from bchw.core import intmodel
from bchw.errors import BchwError
from rtl_gen import DEFAULT_SYNAPSES_PER_CYCLE
from rtl_gen.baseline import mac_model
from rtl_gen.plan import (
    DotProduct,
    LayerFolding,
    check_design,
    default_folding,
    folding_from_file,
    plan_design,
)
from tests.streams import elaborate, random_model


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    model = random_model([13, 7, 5], seed=4)
    path = tmp_path_factory.mktemp("model") / "small.bchw"
    intmodel.save(model, path)
    return intmodel.load(path)


def test_default_folding_balances_the_layers(shipped_digits):
    model = shipped_digits
    folding = default_folding(model)
    plan = plan_design(model, folding)
    synapses = sum(lay.in_features * lay.out_features for lay in model.layers)
    target = -(-synapses // DEFAULT_SYNAPSES_PER_CYCLE)
    assert max(layer.cycles_per_vector for layer in plan.layers) <= target
    assert plan.synapses_per_cycle <= 2 * DEFAULT_SYNAPSES_PER_CYCLE
    # Each PE feeds the next SIMD where it can: FIFO links.
    assert all(link.kind == "fifo" for link in plan.links)


def test_folding_file(tmp_path, small_model):
    path = tmp_path / "folding.json"
    path.write_text(json.dumps({"layers": [{"pe": 7, "simd": 13}, {"pe": 1, "simd": 1}]}))
    assert folding_from_file(small_model, path) == [LayerFolding(7, 13), LayerFolding(1, 1)]
    for bad in (
        '{"layers": [{"pe": 7}]}',
        '{"layers": [{"pe": 1.5, "simd": 1}, {"pe": 1, "simd": 1}]}',
        '{"layers": [{"pe": true, "simd": 1}, {"pe": 1, "simd": 1}]}',
    ):
        path.write_text(bad)
        with pytest.raises(BchwError, match="pe' and 'simd"):
            folding_from_file(small_model, path)
    path.write_text('{"layers": [{"pe": 1, "simd": 1}]}')
    with pytest.raises(BchwError, match="folding file .* gives 1 PE values; the model has 2"):
        folding_from_file(small_model, path)
    for garbage in (b"\xff\xfe{", b"[" * 100_000, b'{"layers": ' + b"9" * 5001 + b"}"):
        path.write_bytes(garbage)
        with pytest.raises(BchwError, match="not valid JSON"):
            folding_from_file(small_model, path)


@pytest.mark.parametrize(
    "folding, message",
    [
        ([LayerFolding(8, 5), LayerFolding(1, 1)], "PE 8 must lie in 1..7"),
        ([LayerFolding(1, 14), LayerFolding(1, 1)], "SIMD 14"),
        ([LayerFolding(0, 1), LayerFolding(1, 1)], "PE 0"),
        ([LayerFolding(1, 1)], "names 1 layers; the model has 2"),
    ],
)
def test_impossible_folding_is_refused(small_model, folding, message):
    with pytest.raises(BchwError, match=message):
        check_design(small_model, folding)
    with pytest.raises(BchwError, match=message):
        plan_design(small_model, folding)


@pytest.mark.parametrize("unit", ["xor", "relative", "pair", "mac4", "mac16"])
@pytest.mark.parametrize(
    "sizes, folding",
    [
        ([37, 3, 5], [(2, 5), (5, 3)]),
        ([37, 3, 5], [(3, 37), (5, 3)]),  # unrolled first layer
        ([11, 37, 2], [(4, 3), (2, 4)]),  # a FIFO link
        ([3, 7, 7, 4], [(7, 1), (3, 7), (1, 2)]),
    ],
)
def test_plan_numbers_are_the_circuits(sizes, folding, unit):
    """Every width and count the plan states is the one the Amaranth blocks build (the blocks
    assert the ranges themselves; here the numbers the manifest and the estimate report)."""
    from rtl_gen.network import Network
    from rtl_gen.pipeline import range_shape

    model = random_model(sizes, seed=sum(sizes))
    if unit.startswith("mac"):
        bits = int(unit[3:])
        model, dot = mac_model(model, bits), DotProduct.mac(bits)
    else:
        dot = DotProduct.binary(unit)
    plan = plan_design(model, [LayerFolding(*f) for f in folding], 1, dot)
    net = elaborate(Network(plan))
    for lp, engine in zip(plan.layers, net.engines, strict=True):
        assert (lp.neuron_folds, lp.synapse_folds) == (engine.nf, engine.sf)
        assert engine.acc_shape == range_shape(*lp.acc_range)
        assert engine.tree.latency == lp.tree_latency
        assert engine.requantizer.units == lp.requant_units
        assert engine.requantizer.steps == lp.requant_steps
        assert engine.requantizer.latency == lp.requant_latency
        if not lp.unrolled:
            assert len(engine.unit.weight_words()) == lp.cycles_per_vector
            assert max(engine.unit.weight_words()) < 1 << lp.weight_word_bits
    assert len(net.links) == len(plan.links)
    assert (net.collector is None) == (plan.collector is None)
    assert net.argmax.latency == plan.argmax_latency
