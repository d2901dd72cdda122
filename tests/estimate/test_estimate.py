"""``bchw estimate``: the analytical model, the energy table, the sweep, the report, and the
figures it reports checked against Yosys and nextpnr runs of the Verilog it wrote."""

from __future__ import annotations

import json

import pytest

from bchw.core import intmodel

from bchw.estimate import analytic

from bchw.estimate import energy
from bchw.estimate.run import CALIBRATION_DESIGNS, pareto, sweep_foldings
from rtl_gen import generate as gen
from rtl_gen.adder_tree import AdderTree
from rtl_gen.mac import mac_model

from .conftest import REPO
from .streams import random_model
from .test_cli import assert_one_line_error, bchw

DIGITS = REPO / "models" / "digits.bchw"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-layer model small enough to synthesize and place in seconds."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.bchw"
    intmodel.save(random_model([16, 8, 4], seed=5, input_bits=8, act_bits=8, out_bits=8), path)
    return path


# -- analytical model -----------------------------------------------------------------------------


def test_tree_counts_follow_the_generator_widths():
    # Four leaves of 0..255, all +1: two 9-bit adds, one 10-bit add; registers after level 2.
    add, reg, latency = analytic.tree_counts([(1, 0, 255)] * 4, pipeline_every=2)
    assert (add, reg, latency) == (9 + 9 + 10, 10, 1)
    # Signs mix: +x - y spans -255..255 (9 bits signed); an all-negative lane negates at the end.
    assert analytic.tree_counts([(1, 0, 255), (-1, 0, 255)], 0) == (9, 0, 0)
    assert analytic.tree_counts([(-1, 0, 255), (-1, 0, 255)], 0) == (
        9 + 10,
        0,
        0,
    )  # 0..510 unsigned, then -510..0


def test_relative_tree_counts_follow_the_generator():
    # Four leaves of 0..255: two 9-bit subtractions (-255..255), then one of 10 bits
    # (-510..511); complement gates on the right operands (8, 8, 9 bits) and the root's 10; a
    # register after level 2 holds the root and its flip.
    add, leaf, reg, latency, lane = analytic.relative_tree_counts(4, (0, 255), 2)
    assert (add, leaf, reg, latency) == (9 + 9 + 10, 8 + 8 + 9 + 10, 10 + 1, 1)
    assert lane == (-512, 511)
    for n in (1, 5, 16, 37):
        tree = AdderTree(2, n, (0, 255), None, 2, sign_bits=True, relative=True)
        tree._MustUse__silence = True  # built for its ranges only, never elaborated
        assert analytic.relative_tree_counts(n, (0, 255), 2)[4] == tree.lane_ranges[0]
        assert analytic.relative_tree_counts(n, (0, 255), 2)[3] == tree.latency


def test_counts_scale_with_folding_and_weights():
    model = random_model([64, 32, 10], seed=1, input_bits=8, act_bits=8, out_bits=8)
    narrow = analytic.design_counts(model, [gen.LayerFolding(2, 8), gen.LayerFolding(2, 4)], 2)
    wide = analytic.design_counts(model, [gen.LayerFolding(8, 32), gen.LayerFolding(2, 4)], 2)
    assert wide[0]["add"] > 3 * narrow[0]["add"]
    assert narrow[0]["mul"] == 0 and narrow[0]["n_mul"] == 0
    mac = analytic.design_counts(
        mac_model(model, 8), [gen.LayerFolding(2, 8), gen.LayerFolding(2, 4)], 2, 8
    )
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
    from rtl_gen.mac import MacLayerEngine

    model = random_model([37, 20, 6], seed=4, input_bits=8, act_bits=8, out_bits=8)
    if weight_bits > 1:
        model = mac_model(model, weight_bits)
    engine_class = LayerEngine if weight_bits == 1 else MacLayerEngine
    for layer, (pe, simd) in zip(model.layers, [(4, 8), (3, 5)], strict=True):
        counted = analytic.layer_counts(layer, pe, simd, 2, weight_bits).memories
        engine = engine_class(layer, pe, simd, 2)
        words = engine.nf * engine.sf
        assert counted[0] == (words, engine.weight_word_bits, True, True)
        rq = engine.requantizer
        consts_bits = rq.units * rq.consts_layout.size
        assert counted[2] == (rq.constant_depth, consts_bits, True, True)


def test_resources_are_the_sum_of_the_parts():
    coefficients = analytic.load_coefficients()
    model = intmodel.load(DIGITS)
    parts = analytic.design_counts(model, gen.default_folding(model), 2)
    for family in coefficients["families"]:
        for dsp in (True, False):
            result = analytic.resources(parts, family, dsp, coefficients)
            for key in analytic.RESOURCES:
                assert result["total"][key] == sum(p[key] for p in result["parts"])
            assert result["total"]["lut"] > 0 and result["total"]["dsp"] == 0


def test_coefficients_were_fitted_on_the_listed_designs():
    coefficients = analytic.load_coefficients()
    roles = {spec["name"]: spec["role"] for spec in CALIBRATION_DESIGNS}
    for role in ("fit", "check"):
        assert coefficients["designs"][role] == sorted(n for n, r in roles.items() if r == role)
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
    folded = [gen.LayerFolding(2, 4), gen.LayerFolding(2, 4)]
    binary = energy.energy_per_inference(model, folded, 1)
    mac = energy.energy_per_inference(mac_model(model, 8), folded, 8)
    assert 0 < binary["total_pj"] < mac["total_pj"]
    assert mac["weight_reads_pj"] > binary["weight_reads_pj"] > 0
    unrolled = energy.energy_per_inference(model, gen.unrolled_folding(model), 1)
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
    intervals = [gen.design_timing(model, f)[0] for f in foldings]
    assert intervals == sorted(intervals, reverse=True) and len(set(intervals)) == len(intervals)


# -- the command ----------------------------------------------------------------------------------


def test_estimate_analytic_report(tmp_path):
    out = tmp_path / "est"
    result = bchw(
        "estimate", DIGITS, "--analytic", "--target", "ice40,ecp5", "--target", "xc7",
        "--target", "gowin", "--sweep", "-o", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for design in ("binary", "mac"):
        assert set(report[design]) == {"ice40", "ecp5", "xc7", "gowin"}
        for target, entry in report[design].items():
            assert {"lut", "ff", "bram", "dsp", "lut_nodsp", "logic_nodsp"} <= set(entry)
            # The LUTs inside carry cells: two per ECP5 CCU2C, one per Gowin ALU, none apart
            # from the counted LUTs on iCE40 and 7-series.
            in_carry = {"ecp5": 2, "gowin": 1}.get(target, 0) * entry["carry_nodsp"]
            assert entry["logic_nodsp"] == entry["lut_nodsp"] + in_carry
            assert entry["carry_nodsp"] > 0
    assert report["source"] == "analytic"
    assert all(
        report["mac"][t]["lut_nodsp"] > report["binary"][t]["lut_nodsp"] for t in report["mac"]
    )
    assert report["mac"]["ice40"]["dsp"] > 0 and report["binary"]["ice40"]["dsp"] == 0
    assert report["energy"]["ratio"] > 1
    assert len(report["sweep"]) >= 4
    for name in ("resources.png", "layers.png", "sweep.png"):
        assert (out / name).read_bytes().startswith(PNG)
    text = (out / "report.md").read_text()
    assert "## Folding sweep" in text and "Energy per inference" in text
    assert json.loads((out / "report.json").read_text())["binary"] == report["binary"]


def test_estimate_relative_adder_tree(tmp_path):
    """--adder-tree relative: the report says so; the analytical model counts its gates."""
    runs = {}
    for tree in ("xor", "relative"):
        out = tmp_path / tree
        result = bchw(
            "estimate", DIGITS, "--analytic", "--target", "xc7", "--pe", "4,4,1",
            "--simd", "16,32,32", "--adder-tree", tree, "-o", out, "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs[tree] = json.loads(result.stdout.strip().splitlines()[-1])
        assert runs[tree]["adder_tree"] == tree
        assert f"--adder-tree {tree}" in (out / "report.md").read_text()
    assert runs["relative"]["mac"] == runs["xor"]["mac"]  # the MAC baseline has no such tree
    assert runs["relative"]["binary"]["xc7"] != runs["xor"]["binary"]["xc7"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--target", "xc9"], ["unknown target 'xc9'"]),
        (["--weight-bits", "3"], ["--weight-bits must be one of"]),
        (["--analytic", "--pnr"], ["--pnr", "--analytic"]),
        (["--pnr", "--target", "xc7"], ["--pnr needs an ice40 or ecp5 target"]),
        (["--device", "ice40=lp1k"], ["unknown ice40 device 'lp1k'"]),
        (["--device", "ecp5=85k"], ["ecp5 is not a --target"]),
        (["--clock-mhz", "0"], ["--clock-mhz must be positive"]),
        (["--pe", "1,1,1"], ["--pe and --simd go together"]),
        (["--adder-tree", "wallace"], ["--adder-tree", "invalid choice: 'wallace'"]),
    ],
)
def test_estimate_bad_options(args, fragments, tmp_path):
    targets = [] if "--target" in args else ["--target", "ice40"]
    result = bchw("estimate", DIGITS, *targets, *args, "-o", tmp_path / "x")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "x").exists()


def test_estimate_bad_model(tmp_path):
    broken = tmp_path / "broken.bchw"
    broken.write_bytes(DIGITS.read_bytes()[:100])
    assert_one_line_error(bchw("estimate", broken, "--analytic", "-o", tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.synth
@pytest.mark.slow
def test_estimate_matches_yosys_and_nextpnr_on_the_emitted_verilog(tiny, tmp_path):
    from bchw.estimate.synth import DEVICES, synthesize

    out = tmp_path / "est"
    args = ["estimate", tiny, "--pe", "2,2", "--simd", "4,4", "--target", "ice40", "-o", out]
    result = bchw(*args, "--pnr", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The checker's own Yosys run on the emitted Verilog gives the same counts.
    for design in ("binary", "mac"):
        verilog = out / "designs" / design / "bchw_network.v"
        for dsp, suffix in ((True, ""), (False, "_nodsp")):
            own = synthesize(verilog, "bchw_network", "ice40", dsp, tmp_path / "own")
            assert not own["cached"]
            entry = report[design]["ice40"]
            assert entry[f"lut{suffix}"] == own["lut"] and entry[f"ff{suffix}"] == own["ff"]
            if not suffix:
                assert (entry["bram"], entry["dsp"]) == (own["bram"], own["dsp"])
            else:
                assert entry["logic_nodsp"] == own["lut"]  # iCE40: carry cells hold no LUT
    binary, mac = report["binary"]["ice40"], report["mac"]["ice40"]
    assert binary["dsp"] == 0 and mac["dsp"] == 2 * 4 + 2 * 4
    assert mac["lut_nodsp"] > 2 * binary["lut_nodsp"]
    # Place and route on the UP5K: the binary design fits, the MAC one needs 16 of 8 DSPs.
    interval = report["initiation_interval_cycles"]
    assert binary["fits"] and binary["fmax_mhz"] > 5
    assert binary["images_per_second"] == round(binary["fmax_mhz"] * 1e6 / interval)
    assert binary["device"] == DEVICES["ice40"]["up5k"].name
    assert not mac["fits"] and "ICESTORM_DSP 16 of 8" in mac["reason"]
    assert mac["fmax_mhz"] is None and mac["images_per_second"] is None
    assert "fmax" in result.stdout and "does not fit" in result.stdout
    # The analytical figures sit beside the synthesized ones.
    assert binary["analytic"]["lut_nodsp"] > 0 and len(binary["layers"]) == 3
    # A rerun is served from the cache.
    again = bchw(*args, "--pnr", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["binary"] == report["binary"]


@pytest.mark.synth
def test_skip_lut_only_runs_half_the_syntheses(tiny, tmp_path):
    out = tmp_path / "est"
    args = ["estimate", tiny, "--pe", "2,2", "--simd", "4,4", "--target", "ice40", "-o", out]
    result = bchw(*args, "--skip-lut-only", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Two runs (binary and MAC with DSP blocks), none LUT only; the report says so with None.
    assert len(list((out / "synth" / "cache").glob("*.json"))) == 2
    for design in ("binary", "mac"):
        entry = report[design]["ice40"]
        assert entry["lut"] > 0 and entry["lut_nodsp"] is None and entry["ff_nodsp"] is None
        assert entry["analytic"]["lut_nodsp"] > 0
    assert report["ratio"]["ice40"]["lut_nodsp"] is None and report["ratio"]["ice40"]["lut"] > 0
    assert "| LUTs (LUT only) | - | - | - |" in (out / "report.md").read_text()
    assert (out / "resources.png").read_bytes()[:8] == PNG


@pytest.mark.synth
@pytest.mark.slow
@pytest.mark.parametrize("family", ["ecp5", "xc7", "gowin"])
def test_every_family_synthesizes_both_designs(family, tiny, tmp_path):
    from bchw.estimate.synth import synthesize

    model = intmodel.load(tiny)
    folding = [gen.LayerFolding(2, 4), gen.LayerFolding(2, 4)]
    binary = gen.generate(model, folding, tmp_path / "b").verilog
    mac = gen.generate(mac_model(model, 8), folding, tmp_path / "m").verilog
    work = tmp_path / "synth"
    b = synthesize(binary, "bchw_network", family, True, work)
    b_nodsp = synthesize(binary, "bchw_network", family, False, work)
    m = synthesize(mac, "bchw_network", family, True, work)
    m_nodsp = synthesize(mac, "bchw_network", family, False, work)
    # No multiplier in the binary design: no DSP block in either flow, and nearly the same
    # LUTs (the flows' scripts differ in more than DSP inference, by a few LUTs).
    assert b["dsp"] == b_nodsp["dsp"] == 0 and abs(b["lut"] - b_nodsp["lut"]) <= 0.02 * b["lut"]
    assert m["dsp"] == 16 and m_nodsp["dsp"] == 0
    assert m_nodsp["lut"] > 2 * b["lut"] > 0


@pytest.mark.synth
@pytest.mark.slow
def test_analytic_model_within_its_documented_error(tmp_path):
    """A design outside the calibration set: the model's LUT and FF error on iCE40 stays within
    the worst error measured on the held-out designs."""
    from bchw.estimate.synth import synthesize

    coefficients = analytic.load_coefficients()
    worst = coefficients["error"]["ice40"]["check"]
    model = random_model([72, 24, 10], seed=77, input_bits=8, act_bits=6, out_bits=6)
    folding = [gen.LayerFolding(6, 12), gen.LayerFolding(2, 6)]
    for bits, m in ((1, model), (8, mac_model(model, 8))):
        verilog = gen.generate(m, folding, tmp_path / str(bits)).verilog
        parts = analytic.design_counts(m, folding, 2, bits)
        for dsp in (True, False) if bits > 1 else (True,):
            truth = synthesize(verilog, "bchw_network", "ice40", dsp, tmp_path / "synth")
            est = analytic.resources(parts, "ice40", dsp, coefficients)["total"]
            for key in ("lut", "ff"):
                error = abs(est[key] - truth[key]) / truth[key]
                assert error <= worst[key]["worst"], (bits, dsp, key, est[key], truth[key])
            assert est["dsp"] == truth["dsp"]
