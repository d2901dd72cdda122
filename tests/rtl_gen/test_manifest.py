"""The manifest's one owner: written from the plan, read back equal, malformed files refused
in one line naming the file and the field."""

from __future__ import annotations

import json

import pytest

from bchw.errors import BchwError
from rtl_gen.manifest import Manifest
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS
from tests.streams import generate_design, random_model


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    model = random_model((37, 5, 3), seed=4, input_bits=5, act_bits=3, out_bits=6)
    folder = tmp_path_factory.mktemp("design")
    return generate_design(model, [(2, 8), (3, 2)], folder)


def test_written_and_read_back_equal(design):
    manifest = Manifest.load(design.folder)
    assert manifest == design.manifest
    assert Manifest.from_json(json.loads(manifest.to_bytes())) == manifest
    assert manifest.to_bytes() == design.manifest_path.read_bytes()
    assert (manifest.lanes, manifest.lane_bits, manifest.beats_per_image) == (8, 5, 5)
    assert [(f.pe, f.simd) for f in manifest.folding] == [(2, 8), (3, 2)]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="other"), "not a bchw hardware manifest"),
        (lambda m: m.update(version=3), "version 3 is not supported"),
        (lambda m: m.update(version=2), r"layers\[0\]: field 'kind' is missing"),
        (lambda m: m.pop("ports"), "field 'ports' is missing"),
        (lambda m: m["ports"].pop(), "o__ready missing"),
        (lambda m: m["ports"][2].update(width="16"), "field 'width' must be an integer"),
        (lambda m: m["ports"][2].update(width=True), "field 'width' must be an integer"),
        (lambda m: m["output"].update(fields=[]), "an index and one score per class"),
        (lambda m: m["input"].update(lanes=3), "lanes x lane_bits"),
        (lambda m: m.update(adder_tree="wallace"), "adder_tree 'wallace' is not one of"),
        (lambda m: m["layers"][0].update(pe=-1), "pe = -1 is outside"),
        (lambda m: m.update(links=[]), "2 layers need 1 links"),
        (lambda m: m["model"].pop("sha256"), "model: field 'sha256' is missing"),
    ],
)
def test_malformed_manifests_are_refused(design, tmp_path, edit, message):
    document = json.loads(design.manifest_path.read_text())
    edit(document)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    with pytest.raises(BchwError, match=message) as info:
        Manifest.load(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def conv_design(tmp_path_factory):
    from bchw.core.synthetic import random_network
    from rtl_gen.conv_plan import plan_conv_design
    from rtl_gen.generate import generate
    from rtl_gen.plan import LayerFolding

    model = random_network("2x7x6-3C3-MP2-4C1-5-3", seed=5, act_bits=4)
    folding = [LayerFolding(pe, simd) for pe, simd in [(2, 5), (4, 3), (5, 12), (1, 5)]]
    return generate(plan_conv_design(model, folding), tmp_path_factory.mktemp("cnn"))


def test_a_cnns_manifest_is_version_2_and_reads_back_equal(conv_design):
    manifest = Manifest.load(conv_design.folder)
    assert manifest == conv_design.manifest
    assert manifest.to_bytes() == conv_design.manifest_path.read_bytes()
    document = json.loads(manifest.to_bytes())
    assert document["version"] == 2 and document["model"]["input_shape"] == [2, 7, 6]
    # A pixel per beat, its channels in the lanes: the MLP's packing rule over H x W x C.
    assert (manifest.lanes, manifest.beats_per_image, manifest.input_size) == (2, 42, 84)
    assert [layer.kind for layer in manifest.layers] == ["conv", "conv", "dense", "dense"]
    assert [layer.positions for layer in manifest.layers] == [42, 9, 1, 1]
    kinds = [stage.kind for stage in manifest.stages]
    assert kinds[:4] == ["window", "engine", "vector_buffer", "maxpool"]
    assert kinds[-1] == "argmax"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["model"].pop("input_shape"), "input_shape must be"),
        (lambda m: m["model"].update(input_shape=[2, 7]), "input_shape must be"),
        (lambda m: m["model"].update(input_shape=[2, 7, 7]), "do not carry a 2x7x7 image"),
        (lambda m: m["stages"][0].update(kind="conv"), "kind 'conv' is not one of"),
        (lambda m: m["stages"].pop(1), "4 layers but 3 engine stages"),
        (lambda m: m["stages"][0].update(kernel=-3), "kernel = -3 is outside"),
        (lambda m: m["layers"][0].update(kind="pool"), "kind 'pool' is not one of"),
        (lambda m: m.pop("stages"), "field 'stages' is missing"),
        (lambda m: m["stages"][0].pop("simd"), r"stages\[0\]: field 'simd' is missing"),
        (lambda m: m["stages"][0].update(depth=3), "a window stage has no field 'depth'"),
        (lambda m: m["stages"][1].update(layer=2), "name layers \\[2, 1, 2, 3\\]"),
        (lambda m: m.update(links=[{"after_layer": 0, "kind": "fifo"}]), "under 'stages'"),
    ],
)
def test_malformed_cnn_manifests_are_refused(conv_design, tmp_path, edit, message):
    document = json.loads(conv_design.manifest_path.read_text())
    edit(document)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    with pytest.raises(BchwError, match=message) as info:
        Manifest.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000, "nests too deeply"),
        (b'{"format": ' + b"7" * 5001 + b"}", "5001 digits"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "is not a JSON object"),
    ],
)
def test_garbage_is_refused(tmp_path, text, message):
    path = tmp_path / "manifest.json"
    path.write_bytes(text)
    with pytest.raises(BchwError, match=message):
        Manifest.load(path)


def test_cosim_refuses_a_bad_manifest_in_one_line_leaving_no_folder(design, tmp_path):
    folder = tmp_path / "design"
    folder.mkdir()
    (folder / "bchw_network.v").write_bytes(design.verilog.read_bytes())
    document = json.loads(design.manifest_path.read_text())
    document["adder_tree"] = "wallace"
    (folder / "manifest.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    assert_one_line_error(cli("cosim", DIGITS, "--design", folder, "-o", out), "wallace")
    assert not out.exists()
