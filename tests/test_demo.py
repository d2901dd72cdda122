"""``bchw demo``: the hardware chain on the shipped digits model, the reproducibility report of
its training, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bchw.core import intmodel
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS


@pytest.mark.cosim
@pytest.mark.slow
def test_demo_runs_the_chain_on_the_shipped_model_and_reports_the_retraining(tmp_path, monkeypatch):
    # --analytic keeps Yosys out of this test (tests/estimate covers synthesis).
    out = tmp_path / "demo"
    result = cli("demo", "--analytic", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = result.json()
    shipped = intmodel.load(DIGITS)
    assert summary["model_sha256"] == shipped.sha256 and summary["model"] == "models/digits.bchw"
    cosim = summary["cosim"]
    assert cosim["passed"] and cosim["images"] == 360 and cosim["mismatches"] == 0
    assert cosim["latency_cycles"] == cosim["predicted_latency_cycles"]
    assert summary["integer_accuracy"] >= 0.94 and summary["float_accuracy"] >= 0.94
    assert list(summary["resources"]) == ["ecp5"]
    for target in summary["resources"]:
        entry = summary["resources"][target]
        assert entry["binary"]["dsp"] == 0 and entry["mac"]["dsp"] > 0
        lut_only = entry["analytic_lut_only"]
        assert lut_only["mac"] > 2 * lut_only["binary"]
    assert summary["resource_source"] == "analytic"
    for path in [summary["outputs"]["verilog"], summary["outputs"]["report"]]:
        assert Path(path).is_file()
    # The retraining is a report: identical or not, the demo succeeds and says how they compare.
    repro = summary["reproduction"]
    retrained = intmodel.load(repro["model"])
    assert repro["identical"] == (retrained.sha256 == shipped.sha256)
    assert repro["retrained"]["sha256"] == retrained.sha256 and repro["threads"] == 2
    differing = sum(
        int((a.weights != b.weights).sum())
        for a, b in zip(retrained.layers, shipped.layers, strict=True)
    )
    assert repro["weight_bits_differing"] == differing
    assert repro["weight_bits"] == sum(layer.weights.size for layer in shipped.layers)
    assert repro["shipped"]["integer_accuracy"] == summary["integer_accuracy"]
    if repro["identical"]:
        assert "identical to models/digits.bchw" in result.stdout and differing == 0
    else:
        assert "differs from models/digits.bchw" in result.stdout
        assert f"{differing:,} of {repro['weight_bits']:,} weight bits differ" in result.stdout
    # The closing table is printed with the same figures.
    assert "360 of 360 bit-exact, 0 mismatches" in result.stdout
    assert f"{summary['integer_accuracy']:.4f}" in result.stdout
    # The user's own data: an archive of the digits gives the same figures (the same design,
    # so the same simulator build in the same folder).
    archive = tmp_path / "digits.npz"
    write_digits_archive(archive)
    again = cli("demo", "--dataset", archive, "--model", "digits", "--analytic", "--limit", "40",
                "-o", out, "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    other = again.json()
    assert other["reproduction"] is None and other["cosim"]["passed"]
    assert other["cosim"]["images"] == 40 and other["dataset"] == str(archive)
    assert other["integer_accuracy"] == summary["integer_accuracy"]
    assert other["resources"] == summary["resources"]
    # A retraining that fails is reported, and the demo still succeeds.
    import bchw.demo

    def broken(*args):
        raise RuntimeError("no memory left for training")

    monkeypatch.setattr(bchw.demo, "_reproduce_digits", broken)
    failed = cli("demo", "--analytic", "--limit", "40", "-o", out, "--json")
    assert failed.returncode == 0, failed.stderr
    assert failed.json()["reproduction"] == {"error": "RuntimeError: no memory left for training"}
    assert "not done: RuntimeError: no memory left for training" in failed.stdout


def write_digits_archive(path):
    import numpy as np

    from bchw.core.data import load_digits

    d = load_digits()
    np.savez(path, x_train=d.train.images, y_train=d.train.labels, x_val=d.validation.images,
             y_val=d.validation.labels, x_test=d.test.images, y_test=d.test.labels)  # fmt: skip


def test_demo_errors_are_one_line(tmp_path):
    missing = tmp_path / "no-such-folder"
    assert_one_line_error(
        cli("demo", "--dataset", "mnist", "--data-dir", missing, "-o", tmp_path / "o"),
        str(missing),
    )
    assert not (tmp_path / "o").exists()
    bad = cli("demo", "--limit", "0", "-o", tmp_path / "o")
    assert bad.returncode == 2 and "--limit" in bad.stderr
    archive = tmp_path / "data.npz"
    archive.write_bytes(b"not a zip")
    assert_one_line_error(cli("demo", "--dataset", archive, "-o", tmp_path / "o"), "--model")
    assert_one_line_error(
        cli("demo", "--dataset", archive, "--model", "digits", "-o", tmp_path / "o"),
        "not a zip file, not an .npz archive",
    )
    assert_one_line_error(
        cli("demo", "--model", tmp_path / "none.bchw", "-o", tmp_path / "o"), "does not exist"
    )
    assert not (tmp_path / "o").exists()
