"""Fold to a chip (``--fit``): the device table, the search against an exhaustive one, what
binds, what happens when nothing fits, and the commands that take ``--fit``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest

from bchw.core import intmodel
from bchw.errors import BchwError
from bchw.estimate.analytic import load_coefficients
from bchw.estimate.devices import DEVICE_TABLE, devices_markdown, fit_device
from bchw.estimate.fit import (
    NoFitError,
    _design_total,
    fit,
    limits,
    overflow,
    predicted_interval,
    usage,
)
from rtl_gen.baseline import mac_model
from rtl_gen.conv_plan import plan_conv_design
from rtl_gen.manifest import Manifest
from rtl_gen.plan import DotProduct, LayerFolding, candidates, folding_text, plan_design
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS, MNIST, REPO
from tests.streams import random_model

COEFFICIENTS = load_coefficients()


def _shrunk(key: str, fraction: float):
    """A device of the table with a fraction of its resources: small models then bind."""
    d = fit_device(key)
    return dataclasses.replace(
        d,
        key=f"{key}-small",
        lut=max(50, int(d.lut * fraction)),
        ff=max(50, int(d.ff * fraction)),
        bram=max(1, int(d.bram * fraction)),
    )


def _exhaustive(model, device, margin=0.15):
    """The shortest interval of every folding (powers of two and full sizes) that fits."""
    allowed = limits(device, margin)
    best = None
    layer_options = [
        [(p, s) for p in candidates(layer.out_features) for s in candidates(layer.in_features)]
        for layer in model.layers
    ]
    for combo in itertools.product(*layer_options):
        plan = plan_design(model, [LayerFolding(p, s) for p, s in combo])
        use = usage(_design_total(plan, device, False, COEFFICIENTS), device)
        if max(overflow(use, allowed).values()) <= 1:
            best = min(best or plan.initiation_interval, plan.initiation_interval)
    return best


def test_device_table_is_in_the_docs_and_complete():
    docs = (REPO / "docs" / "estimates.md").read_text()
    for line in devices_markdown():
        assert line in docs, line
    keys = {d.key for d in DEVICE_TABLE}
    wanted = {"ice40-up5k", "ice40-hx8k", "ecp5-25k", "ecp5-45k", "ecp5-85k"}
    assert wanted | {"xc7a35t", "xc7a100t", "xc7z020"} <= keys
    for d in DEVICE_TABLE:
        assert d.placeable == (d.key in wanted or d.key == "ice40-u4k")
        assert d.lut > 0 and d.ff >= d.lut and d.bram > 0 and d.clock_mhz > 0


@pytest.mark.parametrize(
    ("sizes", "key", "fraction"),
    [
        ([32, 16, 10], "ecp5-25k", 0.1),
        ([32, 16, 10], "xc7a35t", 0.08),
        ([64, 24, 10], "ecp5-25k", 0.1),
        ([64, 24, 10], "xc7a35t", 0.1),
        ([100, 20, 10], "xc7a35t", 0.08),
        ([100, 20, 10], "ecp5-25k", 0.3),
    ],
)
def test_fit_finds_the_fastest_folding_that_fits(sizes, key, fraction):
    """Against every folding of the same candidates, priced by the same model."""
    model = random_model(sizes, seed=len(sizes), input_bits=8, act_bits=8, out_bits=8)
    device = _shrunk(key, fraction)
    result = fit(model, device)
    assert result.interval == _exhaustive(model, device)
    plan = plan_design(model, result.folding)
    assert plan.initiation_interval == result.interval
    assert result.usage == usage(_design_total(plan, device, False, COEFFICIENTS), device)
    assert all(result.usage[k] <= result.limits[k] for k in result.limits)
    assert result.images_per_second == round(device.clock_mhz * 1e6 / result.interval)
    # What binds is a resource the next faster folding overflows.
    assert re.match(r"(LUTs|flip-flops|block RAMs|DSP blocks): needs [\d,.]+ of", result.binding)


def test_target_fps_takes_the_smallest_folding_that_meets_it():
    model = intmodel.load(DIGITS)
    device = fit_device("ecp5-25k")
    fastest = fit(model, device)
    rate = fastest.images_per_second / 5
    slower = fit(model, device, target_fps=rate)
    assert slower.images_per_second >= rate
    assert slower.interval > fastest.interval
    assert slower.usage["lut"] < fastest.usage["lut"]
    with pytest.raises(BchwError, match="no folding reaches .* the fastest that fits gives"):
        fit(model, device, target_fps=fastest.images_per_second * 2)


def test_nothing_fits_names_the_resource_and_the_smallest_device_that_fits():
    model = intmodel.load(MNIST)  # 2.9 Mbit of weights: far more block RAM than a UP5K has
    with pytest.raises(NoFitError) as caught:
        fit(model, fit_device("ice40-up5k"))
    message = str(caught.value)
    assert "does not fit the iCE40UP5K at any folding" in message
    assert "block RAMs: needs" in message
    smallest = message.rsplit("fits it: ", 1)[1]
    assert fit(model, fit_device(smallest)).usage["bram"] <= fit_device(smallest).bram
    # The next smaller chip (by LUTs) does not fit it either.
    smaller = max(
        (d for d in DEVICE_TABLE if d.lut < fit_device(smallest).lut), key=lambda d: d.lut
    )
    with pytest.raises(NoFitError):
        fit(model, smaller)
    assert caught.value.smallest is not None  # the folding a report can show


def test_a_design_that_fits_only_without_pipeline_registers_is_named():
    """The digits model fits an iCE40UP5K within the default margin only without pipeline
    registers: the error says so, and that folding does fit at --pipeline-every 0; it also
    names the smaller margin with which the pipelined design fits."""
    model = intmodel.load(DIGITS)
    device = fit_device("ice40-up5k")
    with pytest.raises(NoFitError) as caught:
        fit(model, device)
    message = str(caught.value)
    assert "\n" not in message and "without pipeline registers, --pipeline-every 0" in message
    light = fit(model, device, pipeline_every=0)
    assert f"PE/SIMD {folding_text(light.folding, compact=True)} fits, at a lower" in message
    assert light.usage["lut"] <= light.limits["lut"] and light.usage["bram"] <= device.bram
    # And the smaller margin with which the pipelined design fits, which does.
    named = re.search(r"with --margin ([0-9.]+), PE/SIMD (\S+(?:, \S+)*) fits", message)
    assert named is not None, message
    tight = fit(model, device, margin=float(named.group(1)))
    assert folding_text(tight.folding, compact=True) == named.group(2)
    assert tight.usage["lut"] <= tight.limits["lut"] and tight.usage["bram"] <= device.bram


def test_a_chip_full_in_logic_and_block_ram_still_gets_the_folding_that_fits(monkeypatch):
    """Pipelined digits on an iCE40UP5K with a 4 % margin: the foldings cheapest in logic need
    32 of its 30 block RAMs, those cheapest in block RAM overflow the logic, and reweighing
    swings between them. The search within every resource finds 2/16, 1/2, 10/1 (placed: 4,834
    of 5,280 cells, 42.7 MHz; docs/benchmarks.md), which the whole-design model confirms."""
    import bchw.estimate.fit as fit_module

    model = intmodel.load(DIGITS)
    device = fit_device("ice40-up5k")
    chosen = fit(model, device, margin=0.04)
    assert [(f.pe, f.simd) for f in chosen.folding] == [(2, 16), (1, 2), (10, 1)]
    use = usage(_design_total(chosen.plan, device, False, load_coefficients()), device)
    assert max(overflow(use, limits(device, 0.04)).values()) <= 1
    # Without it, the reweighing alone finds nothing: the test exercises the fallback.
    monkeypatch.setattr(fit_module, "_choose_mlp_within", lambda *args: None)
    with pytest.raises(NoFitError):
        fit(model, device, margin=0.04)


def test_mac_fit_uses_dsp_blocks_within_the_chip():
    model = random_model([64, 32, 10], seed=3, input_bits=8, act_bits=8, out_bits=8)
    mac = mac_model(model, 8)
    device = fit_device("xc7a35t")
    result = fit(mac, device, DotProduct.mac(8))
    assert result.design == "mac"
    assert result.usage["dsp"] <= device.dsp
    if result.multipliers_in_dsp:
        assert result.usage["dsp"] > 0
    binary = fit(model, device)
    assert binary.interval <= result.interval  # no multiplier: at least as fast


def test_cnn_fit_reports_the_cycle_models_interval():
    from tests.conftest import CNN_DIGITS

    model = random_model_cnn(CNN_DIGITS)
    result = fit(model, _shrunk("ecp5-25k", 0.6))
    plan = plan_conv_design(model, result.folding)
    assert plan.initiation_interval == result.interval  # the cycle model's, to the cycle
    # The search's prediction (the slowest stage alone) never promises more than that.
    assert predicted_interval(plan) <= result.interval


def random_model_cnn(arch: str):
    from bchw.core.synthetic import random_network

    return random_network(arch, seed=2)


def test_margin_and_target_fps_are_checked():
    model = intmodel.load(DIGITS)
    with pytest.raises(BchwError, match="--margin must lie in 0..1"):
        fit(model, fit_device("ecp5-25k"), margin=1.5)
    with pytest.raises(BchwError, match="--target-fps must be a positive"):
        fit(model, fit_device("ecp5-25k"), target_fps=-3)


# -- the commands -------------------------------------------------------------------------------


def test_generate_fit_writes_the_chosen_folding(tmp_path):
    result = cli("generate", DIGITS, "--fit", "ecp5-25k", "-o", tmp_path / "rtl", "--json")
    assert result.returncode == 0, result.stderr
    summary = result.json()
    chosen = fit(intmodel.load(DIGITS), fit_device("ecp5-25k"))
    manifest = Manifest.load(tmp_path / "rtl")
    assert [(f.pe, f.simd) for f in manifest.folding] == [(f.pe, f.simd) for f in chosen.folding]
    assert summary["fit"]["device"] == "ecp5-25k"
    assert summary["fit"]["initiation_interval_cycles"] == manifest.initiation_interval_cycles
    assert "fit       binds:" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--fit", "ice40-up9k"], ["unknown device 'ice40-up9k'", "ecp5-85k"]),
        (["--target-fps", "100"], ["--target-fps and --margin go with --fit"]),
        (["--fit", "ecp5-25k", "--pe", "1,1,1", "--simd", "1,1,1"], ["choose one of"]),
        (["--fit", "ecp5-25k", "--margin", "2"], ["--margin must lie in 0..1"]),
        (["--fit", "ecp5-25k", "--target-fps", "1e12"], ["no folding reaches"]),
    ],
)
def test_generate_fit_refusals_write_nothing(tmp_path, args, fragments):
    out = tmp_path / "rtl"
    assert_one_line_error(cli("generate", DIGITS, *args, "-o", out), *fragments)
    assert not out.exists()


def test_generate_fit_too_big_names_resource_and_device(tmp_path):
    out = tmp_path / "rtl"
    result = cli("generate", MNIST, "--fit", "ecp5-25k", "-o", out)
    assert_one_line_error(result, "does not fit the LFE5U-25F", "block RAMs", "fits it: ")
    assert not out.exists()


def test_estimate_fit_reports_both_designs_on_the_same_chip(tmp_path):
    result = cli(
        "estimate", DIGITS, "--fit", "ecp5-25k", "--analytic", "-o", tmp_path / "e", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["fit"]["binary"]["device"] == "ecp5-25k"
    for name in ("binary", "mac"):
        entry = report[name]["ecp5"]
        assert {"images_per_second", "fits", "lut", "bram", "dsp", "folding"} <= set(entry)
        assert entry["folding"] == report["fit"][name]["folding"]
        assert entry["fits"] is True
        assert entry["images_per_second"] == report["fit"][name]["images_per_second"]
    assert report["mac"]["ecp5"]["dsp"] <= fit_device("ecp5-25k").dsp
    assert (
        report["binary"]["ecp5"]["images_per_second"] > report["mac"]["ecp5"]["images_per_second"]
    )
    assert "MAC 8b" in result.stdout and "fit       binary" in result.stdout
    json.dumps(report)


def test_estimate_fit_a_mac_design_that_fits_nowhere_is_a_result(tmp_path):
    """The MNIST MLP's 8-bit weights (23 Mbit) fit no chip of the table: the binary design is
    estimated, the MAC baseline reported as not fitting, with its smallest design's needs."""
    result = cli(
        "estimate", MNIST, "--fit", "xc7z020", "--analytic", "-o", tmp_path / "e", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["binary"]["xc7"]["fits"] is True
    assert report["mac"]["xc7"]["fits"] is False
    assert "block RAMs: needs" in report["fit"]["mac"]["reason"]
    assert report["mac"]["xc7"]["bram"] > fit_device("xc7z020").bram * 2  # RAMB18 halves


def test_report_of_a_placed_binary_design_beside_a_mac_design_that_fits_nowhere(tmp_path):
    """With --pnr, the binary design is placed and the MAC design, fitting no folding, is not:
    the Markdown report shows both (it used to stop on the MAC design's missing device)."""
    from bchw.estimate.report import markdown

    result = cli(
        "estimate", MNIST, "--fit", "xc7z020", "--analytic", "-o", tmp_path / "e", "--json"
    )
    report = result.json()
    placed = {"device": "iCE40UP5K", "fmax_mhz": 42.6, "images_per_second": 1302, "fits": True}
    report["binary"]["xc7"] |= placed
    text = markdown(report)
    assert "| device | iCE40UP5K | - | |" in text and "| fmax (MHz) | 42.60 | - | |" in text
    assert "The MAC design 784-1024-1024-1024-10 does not fit the XC7Z020" in text
    assert "both designs have the same interval" not in text  # their foldings differ


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--fit", "xc7z020", "--pnr"], "synthesis estimates only"),
        (["--fit", "ecp5-25k", "--target", "ice40"], "drop --target"),
        (["--fit", "ecp5-25k", "--device", "ecp5=85k"], "drop --device"),
    ],
)
def test_estimate_fit_refusals(tmp_path, args, fragment):
    assert_one_line_error(cli("estimate", DIGITS, *args, "-o", tmp_path / "e"), fragment)


def test_critical_path_in_words():
    from bchw.estimate.pnr import critical_path

    def segment(kind, delay, source, sink):
        return {"type": kind, "delay": delay, "from": {"cell": source}, "to": {"cell": sink}}

    ram = "dut.layer1.requantizer.constants.0.1"
    out = "dut.layer1.requantizer.o__payload[3]_TRELLIS_FF_Q_2"
    report = {
        "critical_paths": [
            {"from": "<async>", "to": "posedge clk", "path": [segment("source", 30.0, "a", "b")]},
            {
                "from": "posedge clk",
                "to": "posedge clk",
                "path": [
                    segment("clk-to-q", 5.8, ram, ram),
                    segment("routing", 1.5, ram, out + "_LUT4_Z"),
                    segment("logic", 0.4, out + "_LUT4_Z", out + "_LUT4_Z"),
                    segment("logic", 0.4, out + "_LUT4_Z", out + "_LUT4_Z"),
                    segment("routing", 1.0, out + "_LUT4_Z", out),
                    segment("setup", 0.3, out, out),
                ],
            },
        ]
    }
    path = critical_path(report)
    assert path["from"] == "layer1.requantizer.constants"  # the memory, not its block index
    assert path["to"] == "layer1.requantizer.o__payload[3]"
    assert path["ns"] == 9.4 and path["logic_cells"] == 2 and path["block_ram_read"]
    assert "(a block RAM read)" in path["words"] and "keep it registered" in path["words"]
    assert critical_path({"critical_paths": []}) is None
    # A block RAM read into a register through one LUT: the memory bounds the path, and the
    # advice says so instead of asking for more registers.
    del report["critical_paths"][1]["path"][3]
    path = critical_path(report)
    assert path["logic_cells"] == 1 and "in 1 logic cell," in path["words"]
    assert "clock-to-out and the routing from it bound" in path["words"]
    assert "keep it registered" not in path["words"]


def test_estimate_runs_no_tool_on_a_mac_design_that_fits_nowhere(monkeypatch, tmp_path):
    from bchw.estimate import run as estimate_run
    from bchw.estimate.options import EstimateOptions
    from rtl_gen.plan import default_folding

    model = random_model([12, 6, 4], seed=3, input_bits=8, act_bits=8, out_bits=8)
    ran = []

    def fake(job, *args):
        ran.append(job.design)
        return dict.fromkeys(("lut", "ff", "carry", "lutram", "bram", "dsp"), 1) | {
            "script": "synth",
            "seconds": 0.0,
            "cached": False,
        }

    monkeypatch.setattr(estimate_run, "run_tool", fake)
    options = EstimateOptions(mac_tools=False)
    report = estimate_run.estimate(model, default_folding(model), 2, options, tmp_path)
    assert ran == ["binary"]
    assert report["binary"]["ecp5"]["lut"] == 1  # the tool's figure
    assert report["mac"]["ecp5"]["lut"] == report["mac"]["ecp5"]["analytic"]["lut"]


@pytest.mark.parametrize(
    "family, name, router", [("ecp5", "85k", "router2"), ("ice40", None, None)]
)
def test_nextpnr_router_per_family(tmp_path, monkeypatch, family, name, router):
    """ECP5 is routed with router2 (router1 did not route the MNIST MLP at its fit in 2.5
    hours); iCE40 keeps nextpnr's default. The command is read, nextpnr not run."""
    import subprocess

    from bchw.estimate import pnr

    seen = []

    def fake_run(command, **_):
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: not run here")

    monkeypatch.setattr(pnr.subprocess, "run", fake_run)
    monkeypatch.setattr(pnr, "_nextpnr", lambda fam: f"nextpnr-{fam}")
    monkeypatch.setattr(pnr, "_nextpnr_version", lambda fam: "test")
    netlist = tmp_path / "netlist.json"
    netlist.write_text("{}")
    with pytest.raises(BchwError, match="not run here"):
        pnr.place_and_route(netlist, pnr.device(family, name), tmp_path)
    (command,) = seen
    routers = [command[k + 1] for k, arg in enumerate(command) if arg == "--router"]
    assert routers == ([router] if router else [])
