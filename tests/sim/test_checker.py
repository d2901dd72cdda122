"""The testbench's pieces without a simulator: beat packing, manifest reading, the log checker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bchw.core import reference
from bchw.errors import BchwError
from rtl_gen.manifest import Field, Manifest
from sim.checker import LogReader, StreamChecker, describe
from sim.harness import check_port_widths, harness_verilog, pack_outputs, write_beats
from sim.runner import Stimulus, patience_cycles
from tests.streams import generate_design, random_model


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """A small generated design (37-5-3, folded) and its model."""
    model = random_model((37, 5, 3), seed=4, input_bits=5, act_bits=3, out_bits=6)
    folder = tmp_path_factory.mktemp("design")
    generate_design(model, [(2, 8), (3, 2)], folder)
    return model, folder


def test_beats_pack_pixels_lane_by_lane(design, tmp_path):
    model, folder = design
    manifest = Manifest.load(folder)
    assert (manifest.lanes, manifest.lane_bits, manifest.beats_per_image) == (8, 5, 5)
    images = np.random.default_rng(0).integers(0, 32, size=(3, 37))
    write_beats(tmp_path / "beats.hex", images, manifest)
    lines = (tmp_path / "beats.hex").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 3 * 5 + 1
    for image in range(3):
        for beat in range(5):
            value = int(lines[image * 5 + beat], 16)
            assert len(lines[image * 5 + beat]) == 10  # 40 bits
            for lane in range(8):
                pixel = beat * 8 + lane
                expected = images[image, pixel] if pixel < 37 else 0
                assert (value >> (5 * lane)) & 31 == expected


def test_expected_payloads_decode_to_the_reference(design):
    model, folder = design
    manifest = Manifest.load(folder)
    images = np.random.default_rng(1).integers(0, 32, size=(20, 37))
    ref = reference.run(model, images)
    payloads = pack_outputs(ref.scores, ref.predicted, manifest)
    for payload, scores, cls in zip(payloads, ref.scores, ref.predicted, strict=True):
        assert manifest.index_field.extract(payload) == cls
        assert [f.extract(payload) for f in manifest.score_fields] == list(scores)


def test_field_sign_extension():
    field = Field("scores[0]", lsb=4, width=6, signed=True)
    assert field.extract(0b111111_0000) == -1
    assert field.extract(0b011111_1111) == 31
    assert Field("index", 0, 4, False).extract(0xFF) == 15


def test_harness_is_deterministic_and_names_the_top(design):
    _, folder = design
    manifest = Manifest.load(folder)
    text = harness_verilog(manifest)
    assert text == harness_verilog(manifest)
    assert "bchw_network dut (" in text and f"localparam IN_W = {manifest.input_width};" in text


def _checker(design, count=4):
    model, folder = design
    manifest = Manifest.load(folder)
    images = np.random.default_rng(2).integers(0, 32, size=(count, 37))
    ref = reference.run(model, images)
    return manifest, pack_outputs(ref.scores, ref.predicted, manifest)


def test_checker_passes_matching_outputs_and_measures_cycles(design):
    manifest, expected = _checker(design)
    checker = StreamChecker(manifest, expected)
    checker.feed([f"i {10 + 7 * k}" for k in range(4)])
    checker.feed([f"o {30 + 7 * k} {p:x}" for k, p in enumerate(expected)])
    result = checker.result(cycle=100, stalled=False, beats_taken=20)
    assert result["passed"] and result["mismatches"] == 0
    assert result["latency_cycles"] == 20 and result["initiation_interval_cycles"] == 7
    assert result["cycles_per_image"] == (51 - 10 + 1) / 4


def test_checker_names_the_first_mismatching_field(design):
    manifest, expected = _checker(design)
    checker = StreamChecker(manifest, expected)
    score = manifest.score_fields[1]
    wrong = expected[2] ^ (1 << score.lsb)  # one bit of scores[1] of image 2
    lines = [f"o {k} {p:x}" for k, p in enumerate(expected)]
    lines[2] = f"o 2 {wrong:x}"
    checker.feed(lines)
    result = checker.result(cycle=10, stalled=False, beats_taken=20)
    assert not result["passed"] and result["mismatches"] == 1
    first = result["first_mismatch"]
    assert first["image"] == 2 and [f["name"] for f in first["fields"]] == ["scores[1]"]
    assert first["fields"][0]["expected"] == score.extract(expected[2])
    assert first["fields"][0]["actual"] == score.extract(wrong)
    assert "image 2: scores[1] expected" in describe(first)


def test_checker_reports_unknown_missing_extra_and_garbled(design):
    manifest, expected = _checker(design)
    checker = StreamChecker(manifest, expected)
    checker.feed(["o 1 xx", "o 2 zz"])
    result = checker.result(cycle=5, stalled=True, beats_taken=3)
    assert result["mismatches"] == 2 and result["missing_outputs"] == 2
    assert result["first_mismatch"]["fields"][0]["actual"] == "xx"
    assert "never came" in result["summary"]

    checker = StreamChecker(manifest, expected[:1])
    checker.feed([f"o 1 {expected[0]:x}", f"o 2 {expected[0]:x}", "garbage"])
    result = checker.result(cycle=5, stalled=False, beats_taken=5)
    assert result["extra_outputs"] == 1 and not result["passed"]
    assert "unreadable log lines" in result["summary"]


def test_log_reader_keeps_partial_lines(tmp_path):
    path = tmp_path / "log.txt"
    reader = LogReader(path)
    assert reader.new_lines() == []
    path.write_bytes(b"i 1\no 5 a")
    assert reader.new_lines() == ["i 1"]
    with open(path, "ab") as f:
        f.write(b"b\n")
    assert reader.new_lines() == ["o 5 ab"]


def test_patience_grows_with_stalls(design):
    _, folder = design
    manifest = Manifest.load(folder)
    calm = Stimulus(np.zeros((1, 37)), [0])
    stalled = dataclasses.replace(calm, gap=0.5, backpressure=0.5)
    assert patience_cycles(manifest, stalled) - 1000 == 4 * (patience_cycles(manifest, calm) - 1000)
    bursty = dataclasses.replace(calm, backpressure=0.5, burst=100)
    assert patience_cycles(manifest, bursty) > 100 * patience_cycles(manifest, calm) // 2
    tiny = dataclasses.replace(manifest, latency_cycles=1, initiation_interval_cycles=1)
    assert patience_cycles(tiny, calm) >= 1000


def test_port_widths_must_match_the_manifest(design, tmp_path):
    _, folder = design
    manifest = Manifest.load(folder)
    verilog = folder / "bchw_network.v"
    check_port_widths(verilog, manifest)
    text = verilog.read_text()
    declaration = f"input [{manifest.input_width - 1}:0] i__payload;"
    assert declaration in text
    edited = tmp_path / "edited.v"
    edited.write_text(
        text.replace(declaration, f"input [{manifest.input_width - 2}:0] i__payload;")
    )
    with pytest.raises(
        BchwError, match=f"declares i__payload with {manifest.input_width - 1} bits"
    ):
        check_port_widths(edited, manifest)
    edited.write_text(text.replace("o__payload;", "o__payload_renamed;"))
    with pytest.raises(BchwError, match="declares no output o__payload"):
        check_port_widths(edited, manifest)
