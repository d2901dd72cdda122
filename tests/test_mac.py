"""The multiply-accumulate baseline: its integer model, its multiply tree, its whole design
cosimulated bit-exact against its own reference (Verilator), and its multipliers in Yosys."""

from __future__ import annotations

import numpy as np
import pytest

from bchw import intmodel, reference
from bchw.errors import BchwError
from rtl_gen import generate as gen
from rtl_gen.mac import MacLayer, MultiplyTree, mac_model
from rtl_gen.tools import yosys
from sim.cosim import CosimOptions, cosimulate
from sim.stimuli import stress_vectors

from .conftest import REPO
from .streams import random_model, simulate

DIGITS = REPO / "models" / "digits.bchw"


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_mac_model_keeps_signs_and_uses_the_range(bits):
    model = intmodel.load(DIGITS)
    mac = mac_model(model, bits)
    top = (1 << (bits - 1)) - 1
    for binary, layer in zip(model.layers, mac.layers, strict=True):
        assert isinstance(layer, MacLayer) and layer.weight_bits == bits
        assert (np.sign(layer.weights) == binary.weights).all()
        magnitudes = np.abs(layer.weights)
        assert magnitudes.min() >= 1 and top - top // 64 <= magnitudes.max() <= top
        assert layer.requant_shift == binary.requant_shift + bits - 1
        assert layer.acc_bound == binary.acc_bound * top
    again = mac_model(model, bits)
    assert all(
        (a.weights == b.weights).all() for a, b in zip(mac.layers, again.layers, strict=True)
    )
    # The reference runs it, exactly: compare with a plain int64 computation.
    images = np.random.default_rng(0).integers(0, 17, size=(50, 64))
    x = images.astype(np.int64)
    for layer in mac.layers:
        acc = x @ layer.weights.astype(np.int64).T
        x, _ = reference.saturate(layer, reference.requantize(layer, acc))
    assert (reference.run(mac, images).scores == x).all()


def test_mac_model_refuses_other_widths():
    with pytest.raises(BchwError, match="MAC weights must be one of"):
        mac_model(intmodel.load(DIGITS), 3)


@pytest.mark.parametrize("constant", [True, False])
def test_multiply_tree_matches_numpy(constant):
    rng = np.random.default_rng(3)
    lanes, n, bits = 3, 5, 4
    weights = rng.integers(-7, 8, size=(lanes, n))
    tree = MultiplyTree(
        lanes, n, (0, 15), bits, weights=weights if constant else None, pipeline_every=1
    )
    xs = rng.integers(0, 16, size=(12, n))
    beats = []
    for x in xs:
        beat = {"x": [int(v) for v in x]}
        if not constant:
            beat["w"] = [[int(v) for v in row] for row in weights]
        beats.append(beat)
    outputs, _, _ = simulate(tree, beats, len(xs), gap=0.3, stall=0.3, seed=2)
    for x, out in zip(xs, outputs, strict=True):
        assert [int(out.sum[j]) for j in range(lanes)] == list(weights @ x)


MAC_DESIGNS = [
    ((37, 5, 3), [(2, 8), (3, 2)], 8),  # folded, PE/SIMD not dividing
    ((11, 13, 7, 4), [(13, 3), (3, 13), (1, 3)], 4),  # FIFO and vector-buffer links
    ((9, 6, 4), [(6, 9), (4, 6)], 16),  # unrolled: constant multipliers
]


@pytest.mark.cosim
@pytest.mark.slow
@pytest.mark.parametrize("sizes, folding, bits", MAC_DESIGNS, ids=lambda v: str(v))
def test_mac_design_is_bit_exact_against_its_reference(tmp_path, sizes, folding, bits):
    binary = random_model(sizes, seed=sizes[0], input_bits=6, act_bits=4, out_bits=6)
    mac = mac_model(binary, bits)
    design = tmp_path / "design"
    summary = gen.generate(mac, [gen.LayerFolding(p, s) for p, s in folding], design).summary
    assert [layer["weight_bits"] for layer in summary["layers"]] == [bits] * len(folding)
    vectors = stress_vectors(mac, random_count=30)
    for stall in (0.0, 0.4):
        report = cosimulate(mac, design, vectors.images, None, tmp_path, CosimOptions(stall=stall))
        assert report.passed, report.summary
        if stall == 0.0:
            assert report.latency_cycles == report.predicted_latency_cycles
            assert report.initiation_interval_cycles == report.predicted_initiation_interval_cycles


@pytest.mark.synth
def test_mac_design_multiplies_and_binary_design_does_not(tmp_path):
    binary = random_model((16, 8, 4), seed=1, input_bits=8, act_bits=4, out_bits=6)
    folding = [gen.LayerFolding(2, 4), gen.LayerFolding(2, 4)]
    counts = {}
    for name, model in (("binary", binary), ("mac", mac_model(binary, 8))):
        gen.generate(model, folding, tmp_path / name)
        done = yosys(
            f"read_verilog {name}/bchw_network.v; hierarchy -top bchw_network; proc; flatten; "
            f"opt; wreduce; tee -o {name}.stat stat",
            tmp_path,
        )
        assert done.returncode == 0, done.stderr
        stat = (tmp_path / f"{name}.stat").read_text()
        # Yosys prints the design's totals last ("  16   $mul"): count each cell once.
        lines = [line.split() for line in stat.splitlines() if line.strip().endswith("$mul")]
        counts[name] = int(lines[-1][0]) if lines else 0
    assert counts["binary"] == 0
    assert counts["mac"] == 2 * 4 + 2 * 4  # one multiplier per synapse lane (PE x SIMD)
