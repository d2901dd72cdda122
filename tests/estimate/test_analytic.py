"""The analytical model's counts against the generator, the energy table, the sweep's foldings
and the Pareto front; and the model within its documented error on a design it was not fitted
on (Yosys)."""

from __future__ import annotations

import pytest

from bchw.core import intmodel
from bchw.estimate import analytic, energy
from bchw.estimate.calibration import CALIBRATION_DESIGNS
from bchw.estimate.run import pareto, sweep_foldings
from rtl_gen.baseline import mac_model
from rtl_gen.plan import (
    SHALLOW_ROM_DEPTH,
    DotProduct,
    LayerFolding,
    default_folding,
    plan_design,
    unrolled_folding,
)
from rtl_gen.ranges import constants_bits
from tests.conftest import DIGITS
from tests.streams import elaborate, generate_design, random_model


def design_plan(model, folding, mac=None, pipeline_every=2):
    unit = DotProduct.mac(mac) if mac else DotProduct.binary()
    return plan_design(model, [LayerFolding(*f) for f in folding], pipeline_every, unit)


# -- analytical model -----------------------------------------------------------------------------


def test_tree_counts_follow_the_generator_widths():
    # Four leaves of 0..255, all +1: two 9-bit adds, one 10-bit add; registers after level 2.
    assert analytic.tree_counts([(1, 0, 255)] * 4, pipeline_every=2) == (9 + 9 + 10, 10)
    # Signs mix: +x - y spans -255..255 (9 bits signed); an all-negative lane negates at the end.
    assert analytic.tree_counts([(1, 0, 255), (-1, 0, 255)], 0) == (9, 0)
    # 0..510 unsigned, then -510..0
    assert analytic.tree_counts([(-1, 0, 255), (-1, 0, 255)], 0) == (9 + 10, 0)


def test_relative_tree_counts_follow_the_generator():
    # Four leaves of 0..255: two 9-bit subtractions (-255..255), then one of 10 bits
    # (-510..511); complement gates on the right operands (8, 8, 9 bits) and the root's 10; a
    # register after level 2 holds the root and its flip.
    add, leaf, reg = analytic.relative_tree_counts(4, (0, 255), 2)
    assert (add, leaf, reg) == (9 + 9 + 10, 8 + 8 + 9 + 10, 10 + 1)


def test_paired_tree_counts_follow_the_generator():
    # Four leaves of 0..255 in two pairs: each pair's sum and difference (9 bits each) once per
    # layer; per lane two 9-bit leaves (0..511) and one 10-bit add. The pairs are adder level
    # 1, so the register after level 2 follows that add: tree_counts numbers it from level 2.
    assert analytic.tree_counts([(1, 0, 511)] * 2, 2, first_level=2) == (10, 10)
    assert analytic.tree_counts([(1, 0, 511)] * 2, 1, first_level=2) == (10, 10)
    assert analytic.tree_counts([(1, 0, 511)] * 2, 3, first_level=2) == (10, 0)
    model = random_model([8, 4, 3], seed=2, input_bits=8, act_bits=8, out_bits=8)
    unit = {tree: DotProduct.binary(tree) for tree in ("xor", "pair")}
    plans = {
        tree: plan_design(model, [LayerFolding(2, 4), LayerFolding(1, 2)], 2, u)
        for tree, u in unit.items()
    }
    xor, pair = (analytic.layer_counts(plans[t].layers[0]) for t in ("xor", "pair"))
    x_width = model.layers[0].input_bits
    # XOR: per lane 4 leaves of x_width bits and a tree of 2 + 1 adds; pairs: 2 x 2 shared
    # adds of x_width + 1 bits, per lane 2 leaves of x_width + 1 bits and one add.
    assert xor.leaf == 2 * 4 * x_width and pair.leaf == 2 * 2 * (x_width + 1)
    assert pair.tree == 2 * 2 * (x_width + 1) + 2 * (x_width + 2)
    assert xor.tree == 2 * (2 * (x_width + 1) + (x_width + 2))
    assert plans["pair"].layers[0].tree_latency == plans["xor"].layers[0].tree_latency


def test_counts_scale_with_folding_and_weights():
    model = random_model([64, 32, 10], seed=1, input_bits=8, act_bits=8, out_bits=8)
    narrow = analytic.design_counts(design_plan(model, [(2, 8), (2, 4)]))
    wide = analytic.design_counts(design_plan(model, [(8, 32), (2, 4)]))
    assert wide[0]["add"] > 3 * narrow[0]["add"]
    assert narrow[0]["mul"] == 0 and narrow[0]["n_mul"] == 0
    mac = analytic.design_counts(design_plan(mac_model(model, 8), [(2, 8), (2, 4)], mac=8))
    assert mac[0]["n_mul"] == 2 * 8 and mac[0]["mul"] == 2 * 8 * 8 * 8
    # The weight memory is k times wider in the MAC design, the same depth.
    (depth_b, width_b, _, block_b), (depth_m, width_m, _, block_m) = (
        narrow[0]["memories"][0],
        mac[0]["memories"][0],
    )
    assert depth_b == depth_m == (32 // 2) * (64 // 8) and width_m == 8 * width_b == 8 * 16
    assert block_b and block_m  # both designs ask for block RAM for their weights


@pytest.mark.parametrize("weight_bits", [1, 8])
def test_counted_memories_are_the_generated_ones(weight_bits):
    """The model's weight and constants memories have the engine's shapes (the binary
    constants hold the absorbed offsets, whose width differs from the layer's)."""
    from rtl_gen.layer_engine import LayerEngine

    model = random_model([37, 20, 6], seed=4, input_bits=8, act_bits=8, out_bits=8)
    mac = weight_bits if weight_bits > 1 else None
    if mac:
        model = mac_model(model, weight_bits)
    # Layer 0's constants ROM is 20 words deep either way (20 folds of 1 neuron; 5 folds of
    # 4 lanes, time-shared over 4 steps): block RAM. Layer 1's is 2 or 3 words: logic.
    in_logic = []
    for folding in ([(1, 8), (3, 5)], [(4, 8), (2, 5)]):
        plan = design_plan(model, folding, mac=mac)
        for layer_plan in plan.layers:
            counted = analytic.layer_counts(layer_plan).memories
            engine = elaborate(LayerEngine(layer_plan))
            words = engine.nf * engine.sf
            assert counted[0] == (words, layer_plan.weight_word_bits, True, True)
            assert len(engine.unit.weight_words()) == words
            rq = engine.requantizer
            consts_bits = rq.units * rq.consts_layout.size
            in_logic.append(rq.constants_in_logic)
            assert rq.constants_in_logic == (rq.constant_depth <= SHALLOW_ROM_DEPTH)
            consts = (rq.constant_depth, consts_bits, True, True)
            assert (consts in counted) != rq.constants_in_logic
            # In logic it is priced as counted LUTs instead: one per bit per 16 words.
            rom_luts = analytic.layer_counts(layer_plan).rom_lut
            assert rom_luts == (consts_bits if rq.constants_in_logic else 0)
    assert in_logic == [False, True, False, True]


def test_resources_are_the_sum_of_the_parts():
    coefficients = analytic.load_coefficients()
    model = intmodel.load(DIGITS)
    parts = analytic.design_counts(plan_design(model, default_folding(model)))
    for family in coefficients["families"]:
        for dsp in (True, False):
            result = analytic.resources(parts, family, dsp, coefficients)
            for key in analytic.RESOURCES:
                assert result["total"][key] == sum(p[key] for p in result["parts"])
            assert result["total"]["lut"] > 0 and result["total"]["dsp"] == 0


def test_coefficients_were_fitted_on_the_listed_designs():
    coefficients = analytic.load_coefficients()
    roles = {spec["name"]: spec["role"] for spec in CALIBRATION_DESIGNS}
    assert set(coefficients["designs"]) == set(coefficients["families"])
    for family, designs in coefficients["designs"].items():
        for role in ("fit", "check"):  # a family may predate the latest designs
            assert set(designs[role]) <= {n for n, r in roles.items() if r == role}, family
            assert len(designs[role]) >= 5, family
    for family, errors in coefficients["error"].items():
        assert set(errors["check"]) >= {"lut", "ff", "bram", "dsp"}, family


# -- energy, sweep, Pareto -------------------------------------------------------------------------


def test_energy_table_points():
    assert energy.add_pj(8) == pytest.approx(0.03) and energy.add_pj(32) == pytest.approx(0.1)
    assert energy.multiply_pj(8, 8) == pytest.approx(0.2)
    assert energy.multiply_pj(32, 32) == pytest.approx(3.2)  # quoted: 3.1
    assert energy.sram_read_pj(8 * 1024) == pytest.approx(10)
    assert energy.sram_read_pj(32 * 1024) == pytest.approx(20)
    assert energy.sram_read_pj(1 << 20) == pytest.approx(100)
    assert energy.sram_read_pj(100) == pytest.approx(10)  # below the table: its smallest entry


def test_energy_binary_below_mac_and_unrolled_reads_nothing():
    model = random_model([16, 8, 4], seed=5, input_bits=8, act_bits=8, out_bits=8)
    folded = [LayerFolding(2, 4), LayerFolding(2, 4)]
    binary = energy.energy_per_inference(plan_design(model, folded))
    mac = energy.energy_per_inference(
        plan_design(mac_model(model, 8), folded, 2, DotProduct.mac(8))
    )
    assert 0 < binary["total_pj"] < mac["total_pj"]
    assert mac["weight_reads_pj"] > binary["weight_reads_pj"] > 0
    unrolled = energy.energy_per_inference(plan_design(model, unrolled_folding(model)))
    assert unrolled["weight_reads_pj"] == 0
    # 16*8 + 8*4 synapses, one add each at the accumulator width.
    expected = 128 * energy.add_pj(model.layers[0].acc_bits) + 32 * energy.add_pj(
        model.layers[1].acc_bits
    )
    assert binary["arithmetic_pj"] == pytest.approx(expected, abs=1e-3)


def test_pareto_front():
    points = [(100, 1.0), (50, 1.0), (200, 4.0), (300, 3.0), (50, 0.5)]
    assert pareto(points) == [False, True, True, False, False]


def test_sweep_foldings_are_distinct_and_get_faster():
    model = intmodel.load(DIGITS)
    foldings = sweep_foldings(model)
    assert len(foldings) >= 4
    intervals = [plan_design(model, f).initiation_interval for f in foldings]
    assert intervals == sorted(intervals, reverse=True) and len(set(intervals)) == len(intervals)


@pytest.mark.synth
@pytest.mark.slow
def test_analytic_model_within_its_documented_error(tmp_path):
    """A design outside the calibration set: the model's LUT and FF error on iCE40 stays within
    the worst error measured on the held-out designs."""
    from bchw.estimate.synth import synthesize

    coefficients = analytic.load_coefficients()
    worst = coefficients["error"]["ice40"]["check"]
    model = random_model([72, 24, 10], seed=77, input_bits=8, act_bits=6, out_bits=6)
    folding = [(6, 12), (2, 6)]
    for bits, m in ((1, model), (8, mac_model(model, 8))):
        plan = design_plan(m, folding, mac=bits if bits > 1 else None)
        verilog = generate_design(m, folding, tmp_path / str(bits), unit=plan.unit).verilog
        parts = analytic.design_counts(plan)
        for dsp in (True, False) if bits > 1 else (True,):
            truth = synthesize(verilog, "bchw_network", "ice40", dsp, tmp_path / "synth")
            est = analytic.resources(parts, "ice40", dsp, coefficients)["total"]
            for key in ("lut", "ff"):
                error = abs(est[key] - truth[key]) / truth[key]
                assert error <= worst[key]["worst"], (bits, dsp, key, est[key], truth[key])
            assert est["dsp"] == truth["dsp"]


def test_constants_bits_is_the_rom_layout(shipped_digits):
    from rtl_gen.requantizer import constants_layout

    for layer in shipped_digits.layers:
        assert constants_bits(layer) == constants_layout(layer).size


def test_a_cnns_counts_hold_its_windows_pools_and_engines():
    """One part per convolution and dense layer; the line buffers, pooling rows, engine buffers
    and weights are the generated memories' shapes."""
    from bchw.core.synthetic import random_network
    from rtl_gen.cnn import ConvNetwork
    from rtl_gen.conv_plan import plan_conv_design
    from rtl_gen.plan import LayerFolding

    model = random_network("2x9x9-4C3-MP2-3C3-6-5", seed=1, act_bits=4)
    folding = [LayerFolding(*f) for f in [(2, 9), (3, 12), (2, 3), (5, 6)]]
    plan = plan_conv_design(model, folding)
    parts = analytic.design_counts(plan)
    names = [p["part"] for p in parts]
    assert names == [
        "layer 0",
        "layer 0 streams",
        "layer 1",
        "layer 1 streams",
        "layer 2",
        "layer 2 streams",
        "layer 3",
        "output",
    ]  # fmt: skip (PE 5 gives all five scores at once: no collector after layer 3)
    assert all(bool(p.get("multiplier_free")) == p["part"].endswith("streams") for p in parts)
    net = elaborate(ConvNetwork(plan))
    line_buffers = [((w.kernel + 1) * w.width, w.channels * w.bits) for w in net.windows]
    counted = [tuple(m[:2]) for p in parts for m in p["memories"]]
    for memory in line_buffers:
        assert memory in counted
    assert (9 // 2, 4 * 4) in counted  # the pooling's row of maxima: 4 blocks of 4 channels
    # A convolution's energy is its dense layer's once per output pixel.
    energy_pj = energy.energy_per_inference(plan)
    per_pixel = sum(
        lp.layer.in_features * lp.layer.out_features * (81 if k == 0 else 16)
        for k, lp in enumerate(plan.layers[:2])
    )
    assert energy_pj["arithmetic_pj"] > per_pixel * 0.03  # every add at least an 8-bit add's


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, depth, width",
    [
        *(("ecp5", d, w) for d, w in [(48, 128), (56, 128), (128, 8), (192, 8)]),
        *(("xc7", d, w) for d, w in [(1024, 2), (2048, 1), (256, 8), (512, 8), (64, 64), (65, 64)]),
    ],
)
def test_ram_mapping_is_yosys(tmp_path, family, depth, width):
    """A writable memory goes to block RAM or LUT RAM as Yosys puts it, the shapes on either
    side of the rule: on ECP5 its thresholds (48 and 56 words of 128 bits, 128 and 192 words of
    8), on 7-series its costs (1024 x 2 in LUT RAM, 2048 x 1 in block RAM; 256 x 8 and 512 x 8;
    64 and 65 words of 64 bits)."""
    from bchw.estimate import synth

    verilog = tmp_path / "ram.v"
    verilog.write_text(
        f"module ram(input clk, input we, input [{depth.bit_length() - 1}:0] wa, ra,\n"
        f"           input [{width - 1}:0] wd, output reg [{width - 1}:0] rd);\n"
        f"  reg [{width - 1}:0] mem [0:{depth - 1}];\n"
        "  always @(posedge clk) begin if (we) mem[wa] <= wd; rd <= mem[ra]; end\n"
        "endmodule\n"
    )
    built = synth.synthesize(verilog, "ram", family, True, tmp_path / "synth")
    costs = analytic.load_coefficients()["families"][family]
    mapped = analytic.map_memories([(depth, width, False, False)], costs)
    assert (mapped["bram"], mapped["lutram"]) == (built["bram"], built["lutram"])
