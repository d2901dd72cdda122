"""Generated designs synthesize with Yosys to netlists without multipliers, and pass
``verilator --lint-only -Wall`` with the waivers of rtl_gen/verilator.vlt."""

from __future__ import annotations

import pytest

from rtl_gen.manifest import TOP_NAME
from rtl_gen.plan import default_folding, unrolled_folding
from rtl_gen.tools import lint, yosys
from tests.streams import generate_design, random_model

pytestmark = pytest.mark.synth

# Before technology mapping: a multiplication anywhere shows as a $mul cell here.
COARSE = (
    "read_verilog {v}; hierarchy -top {top}; proc; flatten; opt -full; wreduce; tee -o {out} stat"
)
ICE40 = "read_verilog {v}; synth_ice40 -dsp -top {top}; tee -o {out} stat"
ECP5 = "read_verilog {v}; synth_ecp5 -top {top}; tee -o {out} stat"
MULTIPLIER_CELLS = {
    "coarse": ["$mul", "$macc"],
    "ice40": ["SB_MAC16"],
    "ecp5": ["MULT18X18D", "ALU54B"],
}
FLOWS = {"coarse": COARSE, "ice40": ICE40, "ecp5": ECP5}

CONTROL = """
module control(input clk, input [7:0] a, input [7:0] b, output reg [15:0] y);
  always @(posedge clk) y <= a * b;
endmodule
"""


def synthesize(verilog, top, flow):
    """Run a flow in the Verilog's folder (YoWASP's Yosys sees only its working folder)."""
    out = f"stat_{flow}.txt"
    result = yosys(FLOWS[flow].format(v=verilog.name, top=top, out=out), verilog.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return (verilog.parent / out).read_text()


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    """A folded and an unrolled design of a small model with odd sizes."""
    model = random_model([13, 7, 5], seed=4)
    root = tmp_path_factory.mktemp("designs")
    folded = generate_design(model, [(3, 5), (2, 3)], root / "folded")
    unrolled = generate_design(model, unrolled_folding(model), root / "unrolled")
    return {"folded": folded.verilog, "unrolled": unrolled.verilog}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_checker_sees_a_multiplier(tmp_path, flow):
    source = tmp_path / "control.v"
    source.write_text(CONTROL)
    stat = synthesize(source, "control", flow)
    assert any(cell in stat for cell in MULTIPLIER_CELLS[flow])


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("kind", ["folded", "unrolled"])
def test_no_multiplier_in_generated_designs(designs, kind, flow):
    stat = synthesize(designs[kind], TOP_NAME, flow)
    for cell in MULTIPLIER_CELLS[flow]:
        assert cell not in stat, f"{cell} in the {flow} netlist of the {kind} design"
    if flow == "ice40":
        assert "SB_LUT4" in stat  # it did synthesize logic


@pytest.mark.parametrize("kind", ["folded", "unrolled"])
def test_lint_clean(designs, kind):
    result = lint(designs[kind], TOP_NAME)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%Warning" not in result.stderr + result.stdout


def test_lint_clean_on_the_shipped_model(tmp_path, shipped_digits):
    design = generate_design(shipped_digits, default_folding(shipped_digits), tmp_path)
    result = lint(design.verilog, TOP_NAME)
    assert result.returncode == 0, result.stderr[-3000:]


def test_lint_checker_catches_a_defect(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output y);\n  wire [-1:0] w;\n  assign y = a;\nendmodule\n")
    result = lint(bad, "bad")
    assert result.returncode != 0 and "ASCRANGE" in result.stderr


@pytest.fixture(scope="module")
def cnn_verilog(tmp_path_factory):
    """A small CNN top (windows, conv engines, gathers, pooling, flatten, dense) as Verilog."""
    from bchw.core.synthetic import random_network
    from rtl_gen.conv_plan import plan_conv_design
    from rtl_gen.generate import generate
    from rtl_gen.plan import LayerFolding

    model = random_network("2x7x6-3C3-MP2-4C1-5-3", seed=5, act_bits=4)
    folding = [LayerFolding(pe, simd) for pe, simd in [(2, 5), (4, 3), (5, 12), (1, 5)]]
    folder = tmp_path_factory.mktemp("cnn")
    return generate(plan_conv_design(model, folding), folder).verilog


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_no_multiplier_in_a_cnn(cnn_verilog, flow):
    """The sliding window counts its addresses, the pooling compares: no multiplier anywhere."""
    stat = synthesize(cnn_verilog, TOP_NAME, flow)
    for cell in MULTIPLIER_CELLS[flow]:
        assert cell not in stat, f"{cell} in the {flow} netlist of the CNN"


def test_lint_clean_cnn(cnn_verilog):
    result = lint(cnn_verilog, TOP_NAME)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%Warning" not in result.stderr + result.stdout
