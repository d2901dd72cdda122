"""The command line: help, JSON summaries, one-line errors with status 2, no partial outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bchw.core import intmodel
from bchw.cli import main

from .conftest import REPO


def bchw(*args, env=None):
    """Run the real command in a subprocess (as a user would) and capture everything."""
    return subprocess.run(
        [sys.executable, "-m", "bchw", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [[], ["train"], ["export"], ["eval"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: bchw" in out
    if command:
        assert "--json" in out


def test_train_export_eval_chain(tmp_path, digits):
    run = tmp_path / "run"
    code = main(
        ["train", "--arch", "64-32-10", "--epochs", "3", "--out", str(run), "--quiet", "--json"]
    )
    assert code == 0
    model_path = tmp_path / "m.bchw"
    assert main(["export", str(run / "checkpoint.pt"), "-o", str(model_path)]) == 0
    dump = tmp_path / "dump.npz"
    result = bchw(
        "eval", model_path, "--checkpoint", run / "checkpoint.pt", "--dump", dump, "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images"] == 360 and 0 <= summary["accuracy"] <= 1
    assert "float_accuracy" in summary and len(summary["saturation"]) == 2
    model = intmodel.load(model_path)
    assert summary["model_sha256"] == model.sha256
    with np.load(dump) as data:
        assert str(data["model_sha256"]) == model.sha256
        assert data["scores"].shape == (360, 10)
        assert np.mean(data["predicted"] == data["labels"]) == summary["accuracy"]
        assert np.array_equal(data["predicted"], np.argmax(data["scores"], axis=1))


def test_eval_limit_and_split(tmp_path):
    result = bchw("eval", "models/digits.bchw", "--split", "validation", "--limit", "50", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images"] == 50 and summary["split"] == "validation"


def test_errors_are_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.bchw"
    data = bytearray((REPO / "models" / "digits.bchw").read_bytes())
    data[-40] ^= 1  # inside the payload
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.bchw"
    truncated.write_bytes(data[:1000])
    not_a_checkpoint = tmp_path / "ckpt.pt"
    not_a_checkpoint.write_bytes(b"hello")
    assert_one_line_error(bchw("eval", corrupt), str(corrupt), "integrity")
    assert_one_line_error(bchw("eval", truncated), "truncated")
    assert_one_line_error(bchw("eval", tmp_path / "missing.bchw"), "does not exist")
    assert_one_line_error(bchw("export", not_a_checkpoint, "-o", tmp_path / "x.bchw"), "checkpoint")
    assert_one_line_error(
        bchw("train", "--arch", "64-x-10", "--out", tmp_path / "r"), "architecture"
    )
    assert_one_line_error(bchw("train", "--arch", "784-10", "--out", tmp_path / "r"), "64 pixels")
    assert_one_line_error(
        bchw(
            "eval", "models/digits.bchw", "--dataset", "mnist", "--data-dir", tmp_path / "nowhere"
        ),
        "does not exist",
    )
    assert_one_line_error(bchw("eval", "models/digits.bchw", "--limit", "0"), "at least 1")
    assert_one_line_error(bchw("train", "--epochs", "ten", "--out", tmp_path / "r"), "integer")
    assert_one_line_error(bchw("train", "--device", "tpu", "--out", tmp_path / "r"), "'tpu'")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(bchw("frobnicate"), "invalid choice")


def test_mnist_without_data_dir_names_the_flag_and_variable(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "BCHW_DATA_DIR"}
    result = bchw("train", "--dataset", "mnist", "--out", tmp_path / "r", env=env)
    assert_one_line_error(result, "--data-dir", "BCHW_DATA_DIR")


def test_failed_export_leaves_the_previous_file_untouched(tmp_path, short_run):
    target = tmp_path / "model.bchw"
    target.write_bytes(b"previous")
    result = bchw("export", short_run.checkpoint, "-o", target, "--act-bits", "99")
    assert_one_line_error(result, "activation bits")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bchw"]


def test_export_json_names_the_file_and_its_hash(tmp_path, short_run):
    target = tmp_path / "model.bchw"
    result = bchw("export", short_run.checkpoint, "-o", target, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sha256"] == intmodel.load(target).sha256
    assert [layer["out_features"] for layer in summary["layers"]] == [96, 96, 10]
