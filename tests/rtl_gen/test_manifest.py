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
        (lambda m: m.update(version=2), "version 2 is not supported"),
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
