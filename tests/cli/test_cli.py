"""The command line: help, JSON summaries, one-line errors with status 2, no partial outputs.

Most tests call :func:`bchw.cli.main` in this process; a few run the real command in a
subprocess, as a user would (the entry point, a fresh interpreter's imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bchw.cli import COMMANDS
from bchw.core import intmodel
from bchw.errors import BchwError
from tests.commands import assert_one_line_error, bchw, cli
from tests.conftest import DIGITS

COMMAND_NAMES = [
    "train",
    "export",
    "eval",
    "random",
    "generate",
    "cosim",
    "estimate",
    "sweep-bits",
    "demo",
]


@pytest.mark.parametrize("command", [[]] + [[name] for name in COMMAND_NAMES])
def test_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: bchw" in result.stdout
    if command:
        assert "--json" in result.stdout


def test_every_command_has_its_module():
    assert len(COMMANDS) == len(COMMAND_NAMES)
    names = sorted(name for name in COMMAND_NAMES)
    result = cli("--help")
    for name in names:
        assert name in result.stdout


def test_help_imports_neither_torch_nor_amaranth():
    """``bchw --help`` and every ``bchw COMMAND --help`` read the options' defaults without the
    heavy libraries (docs/benchmarks.md times them)."""
    script = (
        "import sys\n"
        "from bchw.cli import main\n"
        f"for command in {[[]] + [[n] for n in COMMAND_NAMES]!r}:\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'amaranth', 'cocotb', 'sklearn', 'matplotlib', 'numpy')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]


def test_train_export_eval_chain(tmp_path, digits):
    run = tmp_path / "run"
    result = cli("train", "--arch", "64-32-10", "--epochs", "3", "--out", run, "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["threads"] >= 1 and "torch thread" in result.stdout
    model_path = tmp_path / "m.bchw"
    assert cli("export", run / "checkpoint.pt", "-o", model_path).returncode == 0
    dump = tmp_path / "dump.npz"
    result = cli(
        "eval", model_path, "--checkpoint", run / "checkpoint.pt", "--dump", dump, "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = result.json()
    assert summary["images"] == 360 and 0 <= summary["accuracy"] <= 1
    assert "float_accuracy" in summary and len(summary["saturation"]) == 2
    model = intmodel.load(model_path)
    assert summary["model_sha256"] == model.sha256
    with np.load(dump) as data:
        assert str(data["model_sha256"]) == model.sha256
        assert data["scores"].shape == (360, 10)
        assert np.mean(data["predicted"] == data["labels"]) == summary["accuracy"]
        assert np.array_equal(data["predicted"], np.argmax(data["scores"], axis=1))


def test_eval_limit_and_split():
    result = cli("eval", DIGITS, "--split", "validation", "--limit", "50", "--json")
    assert result.returncode == 0, result.stderr
    summary = result.json()
    assert summary["images"] == 50 and summary["split"] == "validation"


def test_errors_are_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.bchw"
    data = bytearray(DIGITS.read_bytes())
    data[-40] ^= 1  # inside the payload
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.bchw"
    truncated.write_bytes(data[:1000])
    not_a_checkpoint = tmp_path / "ckpt.pt"
    not_a_checkpoint.write_bytes(b"hello")
    assert_one_line_error(cli("eval", corrupt), str(corrupt), "integrity")
    assert_one_line_error(cli("eval", truncated), "truncated")
    assert_one_line_error(cli("eval", tmp_path / "missing.bchw"), "does not exist")
    assert_one_line_error(cli("export", not_a_checkpoint, "-o", tmp_path / "x.bchw"), "checkpoint")
    assert_one_line_error(
        cli("train", "--arch", "64-x-10", "--out", tmp_path / "r"), "architecture"
    )
    assert_one_line_error(cli("train", "--arch", "784-10", "--out", tmp_path / "r"), "64 pixels")
    assert_one_line_error(
        cli("eval", DIGITS, "--dataset", "mnist", "--data-dir", tmp_path / "nowhere"),
        "does not exist",
    )
    assert_one_line_error(cli("eval", DIGITS, "--limit", "0"), "at least 1")
    assert_one_line_error(cli("eval", DIGITS, "--dataset", "cifar"), "not a data set")
    assert_one_line_error(cli("train", "--epochs", "ten", "--out", tmp_path / "r"), "integer")
    assert_one_line_error(cli("train", "--threads", "0", "--out", tmp_path / "r"), "at least 1")
    assert_one_line_error(cli("train", "--device", "tpu", "--out", tmp_path / "r"), "'tpu'")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(cli("frobnicate"), "invalid choice")


def test_mnist_without_data_dir_names_the_flag_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("BCHW_DATA_DIR", raising=False)
    result = cli("train", "--dataset", "mnist", "--out", tmp_path / "r")
    assert_one_line_error(result, "--data-dir", "BCHW_DATA_DIR")


def test_failed_export_leaves_the_previous_file_untouched(tmp_path, short_run):
    target = tmp_path / "model.bchw"
    target.write_bytes(b"previous")
    result = cli("export", short_run.checkpoint, "-o", target, "--act-bits", "99")
    assert_one_line_error(result, "activation bits")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bchw"]


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("pixel_max", "x", "pixel_max is of type str, not an integer in 1..65535"),
        ("pixel_max", 0, "pixel_max is 0, not an integer in 1..65535"),
        ("pixel_max", 70000, "pixel_max is 70000, not an integer in 1..65535"),
        ("epoch", [1], "epoch is of type list, not an integer"),
        ("metrics", [1], "metrics are list, not a mapping"),
        ("metrics", {"test_error": "abc"}, "metric 'test_error' is not a named finite number"),
        ("metrics", {"test_error": float("nan")}, "metric 'test_error' is not a named finite"),
    ],
    ids=["text", "zero", "large", "list", "metrics", "metric", "nan"],
)
def test_malformed_checkpoint_fields_are_one_line_errors(tmp_path, short_run, field, value,
                                                         fragment):  # fmt: skip
    import torch

    payload = torch.load(short_run.checkpoint, weights_only=True)
    payload[field] = value
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    result = cli("export", bad, "-o", tmp_path / "m.bchw", "--frac-bits", "4")
    assert_one_line_error(result, str(bad), fragment)
    assert not (tmp_path / "m.bchw").exists()


def test_an_output_folder_that_cannot_be_written(tmp_path):
    # /proc exists but takes no new files (a read-only folder or file system alike): refused
    # before the work, in one line.
    result = cli("eval", DIGITS, "--limit", "5", "--dump", "/proc/scores.npz")
    assert_one_line_error(result, "cannot write into the folder /proc")
    from bchw.outputs import write_bytes_atomic

    with pytest.raises(BchwError, match="cannot write /proc/x"):
        write_bytes_atomic("/proc/x", b"1")


def test_export_json_names_the_file_and_its_hash(tmp_path, short_run):
    target = tmp_path / "model.bchw"
    result = cli("export", short_run.checkpoint, "-o", target, "--json")
    assert result.returncode == 0, result.stderr
    summary = result.json()
    assert summary["sha256"] == intmodel.load(target).sha256
    assert [layer["out_features"] for layer in summary["layers"]] == [96, 96, 10]


def test_the_installed_command_runs_as_a_user_would(tmp_path):
    """The entry point in a fresh interpreter: its output, its JSON and its exit status."""
    result = bchw("eval", DIGITS, "--limit", "20", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["images"] == 20
    assert_one_line_error(bchw("eval", tmp_path / "missing.bchw"), "does not exist")


def test_a_shipped_model_by_name(tmp_path, monkeypatch):
    """digits and mnist name the shipped models where no file has that name (an installed
    bchw holds them as package data)."""
    monkeypatch.chdir(tmp_path)
    result = cli("eval", "digits", "--limit", "20", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["model_sha256"] == intmodel.load(DIGITS).sha256
    from bchw.cli.common import load_model

    (tmp_path / "mnist").mkdir()  # a folder of that name (MNIST's files, say) does not count
    assert load_model("mnist").sha256 == intmodel.load(DIGITS.with_name("mnist.bchw")).sha256
    (tmp_path / "digits").write_bytes(b"not a model")  # a file of that name comes first
    assert_one_line_error(cli("eval", "digits"), "digits")


def test_random_writes_a_valid_model_and_eval_runs_it(tmp_path):
    path = tmp_path / "cnn.bchw"
    arch = "1x8x8-4C3-MP2-6C3p0-5-10"
    result = cli("random", arch, "-o", str(path), "--seed", "3", "--act-bits", "5", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    model = intmodel.load(path)
    assert summary["arch"] == model.arch() == arch
    assert summary["sha256"] == model.sha256
    assert [layer["kind"] for layer in summary["layers"]] == [
        "conv",
        "maxpool",
        "conv",
        "dense",
        "dense",
    ]
    assert model.layers[0].output_bits == 5 and model.provenance["random"]["seed"] == 3
    again = tmp_path / "again.bchw"
    assert cli("random", arch, "-o", str(again), "--seed", "3", "--act-bits", "5").returncode == 0
    assert again.read_bytes() == path.read_bytes()
    evaluated = cli("eval", str(path), "--dataset", "digits", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["images"] == 360


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["1x8x8-4C4-10"], "kernel size must be odd"),
        (["1x8x8-4C3-10", "--act-bits", "0"], "activation bits must lie in 1..16"),
        (["1x8x8-4C3-10", "--scale-terms", "9"], "scale terms K must lie in 1..8"),
        (["1x8x8-4C3-10", "--input-bits", "17"], "input bits must lie in 1..16"),
    ],
)
def test_random_refuses_bad_arguments_in_one_line(tmp_path, args, problem):
    path = tmp_path / "m.bchw"
    result = cli("random", *args, "-o", str(path))
    assert_one_line_error(result, problem)
    assert not path.exists()


def test_estimate_takes_a_cnn_and_its_sweep_refuses_one_in_one_line(tmp_path):
    path = tmp_path / "cnn.bchw"
    assert cli("random", "1x8x8-4C3-MP2-10", "-o", str(path)).returncode == 0
    result = cli("estimate", str(path), "--analytic", "-o", str(tmp_path / "e"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["binary"]["ecp5"]["lut"] > 0 and report["mac"]["ecp5"]["dsp"] > 0
    assert report["binary"]["ecp5"]["dsp"] == 0
    result = cli("estimate", str(path), "--analytic", "--sweep", "-o", str(tmp_path / "s"))
    assert_one_line_error(result, "--sweep handles MLP models only so far")
    assert not (tmp_path / "s").exists()


def test_generate_writes_a_cnn_and_its_manifest(tmp_path):
    path = tmp_path / "cnn.bchw"
    assert cli("random", "1x8x8-4C3-MP2-6-10", "-o", str(path)).returncode == 0
    out = tmp_path / "design"
    result = cli("generate", str(path), "-o", str(out), "--pe", "2,3,5", "--simd", "9,4,6")
    assert result.returncode == 0, result.stderr
    assert "layer 0 PE 2 SIMD 9, layer 1 PE 3 SIMD 4, layer 2 PE 5 SIMD 6" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["input"]["beats_per_image"] == 64
    assert f"latency {manifest['latency_cycles']} cycles" in result.stdout


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--pe", "2,3", "--simd", "9,4"], "the model has 3 convolution and dense layers"),
        (["--pe", "5,3,5", "--simd", "9,4,6"], "layer 0 (4C3): PE 5 must lie in 1..4 (its output"),
        (["--pe", "2,3,5", "--simd", "10,4,6"], "SIMD 10 must lie in 1..9 (its window values)"),
    ],
)
def test_generate_refuses_a_cnn_folding_it_cannot_build(tmp_path, args, problem):
    path = tmp_path / "cnn.bchw"
    assert cli("random", "1x8x8-4C3-MP2-6-10", "-o", str(path)).returncode == 0
    result = cli("generate", str(path), "-o", str(tmp_path / "d"), *args)
    assert_one_line_error(result, problem)
    assert not (tmp_path / "d").exists()


def test_demo_names_what_it_cannot_run(tmp_path):
    result = cli(
        "demo", "--dataset", "cifar10", "--data-dir", str(tmp_path), "-o", str(tmp_path / "d")
    )
    assert_one_line_error(result, "bchw ships no model for cifar10", "pass --model FILE")
    cnn = tmp_path / "cnn.bchw"
    assert cli("random", "1x8x8-4C3-MP2-10", "-o", str(cnn)).returncode == 0
    result = cli("demo", "--model", str(cnn), "-o", str(tmp_path / "d"))
    assert_one_line_error(result, "bchw demo handles MLP models only")
    assert not (tmp_path / "d").exists()
