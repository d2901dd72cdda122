"""``bchw estimate``: the report, its options and errors, and the figures it reports checked
against Yosys and nextpnr runs of the Verilog it wrote."""

from __future__ import annotations

import json

import pytest

from bchw.core import intmodel
from bchw.estimate.synth import synthesize
from rtl_gen.baseline import mac_model
from rtl_gen.plan import DotProduct
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS
from tests.streams import generate_design, random_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-layer model small enough to synthesize and place in seconds."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.bchw"
    intmodel.save(random_model([16, 8, 4], seed=5, input_bits=8, act_bits=8, out_bits=8), path)
    return path


def test_estimate_analytic_report(tmp_path):
    out = tmp_path / "est"
    result = cli(
        "estimate", DIGITS, "--analytic", "--target", "ice40,ecp5", "--target", "xc7",
        "--target", "gowin", "--sweep", "-o", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
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
    assert "~" not in result.stdout  # all analytical: nothing to mark


def test_estimate_relative_adder_tree(tmp_path):
    """--adder-tree relative: the report says so; the analytical model counts its gates."""
    runs = {}
    for tree in ("xor", "relative"):
        out = tmp_path / tree
        result = cli(
            "estimate", DIGITS, "--analytic", "--target", "xc7", "--pe", "4,4,1",
            "--simd", "16,32,32", "--adder-tree", tree, "-o", out, "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs[tree] = result.json()
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
        (["--clock-mhz", "inf"], ["--clock-mhz must be positive and at most"]),
        (["--pe", "1,1,1"], ["--pe and --simd go together"]),
        (["--adder-tree", "wallace"], ["--adder-tree", "invalid choice: 'wallace'"]),
    ],
)
def test_estimate_bad_options(args, fragments, tmp_path):
    targets = [] if "--target" in args else ["--target", "ice40"]
    result = cli("estimate", DIGITS, *targets, *args, "-o", tmp_path / "x")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "x").exists()


def test_estimate_bad_model(tmp_path):
    broken = tmp_path / "broken.bchw"
    broken.write_bytes(DIGITS.read_bytes()[:100])
    assert_one_line_error(cli("estimate", broken, "--analytic", "-o", tmp_path / "x"), str(broken))
    assert not (tmp_path / "x").exists()


@pytest.mark.synth
@pytest.mark.slow
def test_estimate_matches_yosys_and_nextpnr_on_the_emitted_verilog(tiny, tmp_path):
    from bchw.estimate.pnr import DEVICES

    out = tmp_path / "est"
    args = ["estimate", tiny, "--pe", "2,2", "--simd", "4,4", "--target", "ice40", "-o", out]
    result = cli(*args, "--lut-only", "--pnr", "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
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
    # The critical path in words: its delay is the clock's period at fmax.
    path = binary["critical_path"]
    assert path["ns"] == pytest.approx(1000 / binary["fmax_mhz"], rel=0.02)
    assert path["from"] and path["to"] and path["logic_cells"] >= 1
    assert path["words"].startswith(f"{path['ns']:.1f} ns from ")
    assert "critical  ice40 binary: " in result.stdout
    assert not mac["fits"] and "ICESTORM_DSP 16 of 8" in mac["reason"]
    assert mac["fmax_mhz"] is None and mac["images_per_second"] is None
    assert "fmax" in result.stdout and "does not fit" in result.stdout
    # The analytical figures sit beside the synthesized ones.
    assert binary["analytic"]["lut_nodsp"] > 0 and len(binary["layers"]) == 3
    # A rerun is served from the cache.
    again = cli(*args, "--lut-only", "--pnr", "--json")
    assert again.returncode == 0
    rerun = again.json()["binary"]["ice40"]
    for key, value in report["binary"]["ice40"].items():
        assert rerun[key] == value, key


@pytest.mark.synth
@pytest.mark.slow  # two Yosys runs, 10 to 15 s
def test_by_default_the_lut_only_figures_are_analytical(tiny, tmp_path):
    out = tmp_path / "est"
    args = ["estimate", tiny, "--pe", "2,2", "--simd", "4,4", "--target", "ice40", "-o", out]
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
    # Two runs (binary and MAC with DSP blocks), none LUT only; the report says so with None.
    assert len(list((out / "synth" / "cache").glob("*.json"))) == 2
    assert report["lut_only_source"] == "analytic"
    for design in ("binary", "mac"):
        entry = report[design]["ice40"]
        assert entry["lut"] > 0 and entry["lut_nodsp"] is None and entry["ff_nodsp"] is None
        assert entry["analytic"]["lut_nodsp"] > 0
        # The table shows the analytical LUT-only figure, marked as such.
        assert f"~{entry['analytic']['lut_nodsp']:,}" in result.stdout
    assert "--lut-only synthesizes them" in result.stdout
    assert report["ratio"]["ice40"]["lut_nodsp"] is None and report["ratio"]["ice40"]["lut"] > 0
    assert "| LUTs (LUT only) | - | - | - |" in (out / "report.md").read_text()
    assert (out / "resources.png").read_bytes()[:8] == PNG


@pytest.mark.synth
@pytest.mark.slow
@pytest.mark.parametrize("family", ["ecp5", "xc7", "gowin"])
def test_every_family_synthesizes_both_designs(family, tiny, tmp_path):
    model = intmodel.load(tiny)
    folding = [(2, 4), (2, 4)]
    binary = generate_design(model, folding, tmp_path / "b").verilog
    mac = generate_design(mac_model(model, 8), folding, tmp_path / "m", unit=DotProduct.mac(8))
    mac = mac.verilog
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


def test_a_tool_that_dies_without_a_word_is_named_so():
    import subprocess

    from bchw.estimate.synth import error_line

    killed = subprocess.CompletedProcess(["yosys"], -7, stdout="", stderr="")
    assert error_line(killed) == "killed by signal 7 without a word"
    failed = subprocess.CompletedProcess(["yosys"], 1, stdout="", stderr="a\nERROR: no top\nb")
    assert error_line(failed) == "ERROR: no top"
