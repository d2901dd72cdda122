"""``bchw demo``: the whole chain on the embedded digits model, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bchw.core import intmodel

from .conftest import REPO
from .test_cli import assert_one_line_error, bchw


@pytest.mark.cosim
def test_demo_runs_the_chain_and_reproduces_the_shipped_model(tmp_path):
    # --analytic keeps Yosys out of this test (tests/test_estimate.py covers synthesis).
    out = tmp_path / "demo"
    result = bchw("demo", "--analytic", "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    shipped = intmodel.load(REPO / "models" / "digits.bchw")
    assert summary["identical_to_shipped"] and summary["model_sha256"] == shipped.sha256
    assert (out / "digits.bchw").read_bytes() == (REPO / "models" / "digits.bchw").read_bytes()
    cosim = summary["cosim"]
    assert cosim["passed"] and cosim["images"] == 360 and cosim["mismatches"] == 0
    assert summary["integer_accuracy"] >= 0.94 and summary["float_accuracy"] >= 0.94
    for target in ("ice40", "ecp5"):
        entry = summary["resources"][target]
        # With DSP blocks the MAC design may need fewer LUTs than the binary one (Yosys agrees
        # on ECP5 at small foldings); without them its multipliers cost LUTs.
        assert entry["binary"]["dsp"] == 0 and entry["mac"]["dsp"] > 0
        lut_only = entry["analytic_lut_only"]
        assert lut_only["mac"] > 2 * lut_only["binary"]
    assert summary["resource_source"] == "analytic"
    for path in [summary["outputs"]["verilog"], summary["outputs"]["report"]]:
        assert Path(path).is_file()
    # The closing table is printed with the same figures.
    assert "360 of 360 bit-exact, 0 mismatches" in result.stdout
    assert f"{summary['integer_accuracy']:.4f}" in result.stdout


def test_demo_errors_are_one_line(tmp_path):
    missing = tmp_path / "no-such-folder"
    assert_one_line_error(
        bchw("demo", "--dataset", "mnist", "--data-dir", missing, "-o", tmp_path / "o"),
        str(missing),
    )
    assert not (tmp_path / "o").exists()
    bad = bchw("demo", "--limit", "0", "-o", tmp_path / "o")
    assert bad.returncode == 2 and "--limit" in bad.stderr
