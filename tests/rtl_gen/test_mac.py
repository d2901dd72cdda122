"""The multiply-accumulate baseline: its integer model, its multiply tree, its whole design
cosimulated bit-exact against its own reference (Verilator), and its multipliers in Yosys."""

from __future__ import annotations

import numpy as np
import pytest

from bchw.core import intmodel, reference
from bchw.errors import BchwError
from rtl_gen.baseline import MacLayer, mac_model
from rtl_gen.mac import MultiplyTree
from rtl_gen.plan import DotProduct, plan_design
from rtl_gen.tools import yosys
from sim.cosim import cosimulate
from sim.options import CosimOptions
from sim.stimuli import stress_vectors
from tests.conftest import DIGITS
from tests.streams import generate_design, mac_unit, random_model, simulate


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
    manifest = generate_design(mac, folding, design, unit=DotProduct.mac(bits)).manifest
    assert [layer.weight_bits for layer in manifest.layers] == [bits] * len(folding)
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
    folding = [(2, 4), (2, 4)]
    counts = {}
    for name, model in (("binary", binary), ("mac", mac_model(binary, 8))):
        unit = mac_unit(model) if name == "mac" else None
        generate_design(model, folding, tmp_path / name, unit=unit)
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


def test_count_cells_sorts_cell_types_into_resources():
    from bchw.estimate.synth import FAMILIES, count_cells

    cells = {"SB_LUT4": 10, "SB_DFFE": 3, "SB_DFF": 2, "SB_CARRY": 4, "SB_MAC16": 1, "X": 9}
    counts = count_cells(cells, FAMILIES["ice40"].kinds)
    assert counts == {"lut": 10, "ff": 5, "carry": 4, "lutram": 0, "bram": 0, "dsp": 1}
    ecp5 = count_cells({"LUT4": 7, "TRELLIS_FF": 2, "MULT18X18D": 3}, FAMILIES["ecp5"].kinds)
    assert (ecp5["lut"], ecp5["ff"], ecp5["dsp"]) == (7, 2, 3)


@pytest.mark.synth
@pytest.mark.slow
def test_synthesis_counts_dsp_blocks_only_in_the_mac_design(tmp_path):
    from bchw.estimate.synth import synthesize

    binary = random_model((16, 8, 4), seed=2, input_bits=8, act_bits=4, out_bits=6)
    folding = [(2, 4), (2, 4)]
    results = {}
    for name, model in (("binary", binary), ("mac", mac_model(binary, 8))):
        unit = mac_unit(model) if name == "mac" else None
        design = generate_design(model, folding, tmp_path / name, unit=unit)
        for dsp in (True, False):
            results[name, dsp] = synthesize(
                design.verilog, "bchw_network", "ice40", dsp, tmp_path / "synth"
            )
    assert results["binary", True]["dsp"] == 0 and results["mac", True]["dsp"] > 0
    assert results["mac", False]["dsp"] == 0
    assert results["mac", False]["lut"] > 2 * results["binary", False]["lut"]
    assert all(r["lut"] > 0 and r["ff"] > 0 and not r["cached"] for r in results.values())
    again = synthesize(
        tmp_path / "mac" / "bchw_network.v", "bchw_network", "ice40", True, tmp_path / "synth"
    )
    assert again["cached"] and again["lut"] == results["mac", True]["lut"]
    with pytest.raises(BchwError, match="unknown FPGA family 'xc9'"):
        synthesize(tmp_path / "mac" / "bchw_network.v", "bchw_network", "xc9", True, tmp_path)


def test_the_unit_must_match_the_weights(shipped_digits):
    """The dot-product unit is chosen, not inferred: a binary model on a MAC unit, or a MAC
    model on the binary unit, is refused in one line."""
    folding = [(8, 8), (8, 8), (1, 8)]
    from rtl_gen.plan import LayerFolding

    fold = [LayerFolding(*f) for f in folding]
    with pytest.raises(BchwError, match="1-bit weights; the mac unit takes 8-bit weights"):
        plan_design(shipped_digits, fold, 2, DotProduct.mac(8))
    with pytest.raises(BchwError, match="8-bit weights; the binary unit takes 1-bit weights"):
        plan_design(mac_model(shipped_digits, 8), fold, 2)
    with pytest.raises(BchwError, match="MAC weights must be one of"):
        DotProduct.mac(3)
