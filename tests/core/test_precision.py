"""``bchw sweep-bits``: every point equals the model ``bchw export`` writes, and its accuracy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bchw.core import intmodel, reference
from bchw.core.export import export_checkpoint
from bchw.core.options import ExportOptions
from bchw.core.precision import check_grid, markdown_table, sweep_bits
from bchw.errors import BchwError
from tests.commands import assert_one_line_error, bchw


def test_points_are_the_exported_models(short_checkpoint, digits):
    split = digits.test.head(120)
    points = sweep_bits(short_checkpoint, digits.train.images, split, bits=(6, 4), terms=(2, 1))
    # Ordered by K, then bits, whatever order the caller gave.
    assert [(p.scale_terms, p.act_bits) for p in points] == [(1, 4), (1, 6), (2, 4), (2, 6)]
    for point in points:
        options = ExportOptions(act_bits=point.act_bits, scale_terms=point.scale_terms)
        model = export_checkpoint(short_checkpoint, digits.train.images, options)
        assert hashlib.sha256(intmodel.to_bytes(model)).hexdigest() == point.sha256
        assert model.layers[0].output_bits == point.act_bits
        predicted = reference.run(model, split.images).predicted
        assert point.correct == int(np.count_nonzero(predicted == split.labels))
        assert point.images == 120
    assert len({p.sha256 for p in points}) == 4


def test_table_has_a_row_per_width_and_a_column_per_k(short_checkpoint, digits):
    points = sweep_bits(
        short_checkpoint, digits.train.images, digits.test.head(50), bits=(3, 5), terms=(1, 3)
    )
    text = markdown_table(points, 0.9)
    assert "| activation bits | K = 1 | K = 3 |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 3 ", "| 5 "))]
    assert len(rows) == 2
    assert "Float model (binary weights): 10.00 %" in text


@pytest.mark.parametrize(
    ("bits", "terms", "message"),
    [
        ((1,), (1,), "activation bits must lie in 2..16, got 1"),
        ((17,), (1,), "got 17"),
        ((8,), (0,), "scale terms K must lie in 1..8, got 0"),
        ((), (1,), "at least one"),
    ],
)
def test_impossible_grids_are_refused(bits, terms, message):
    with pytest.raises(BchwError, match=message):
        check_grid(bits, terms)


def test_command_writes_table_json_and_plot(tmp_path, short_run):
    out = tmp_path / "sweep"
    result = bchw(
        "sweep-bits",
        short_run.checkpoint,
        "--bits",
        "4-5",
        "-K",
        "1,2",
        "--limit",
        "60",
        "-o",
        out,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(p["scale_terms"], p["act_bits"]) for p in summary["points"]] == [
        (1, 4),
        (1, 5),
        (2, 4),
        (2, 5),
    ]
    assert summary["images"] == 60 and 0 <= summary["float_accuracy"] <= 1
    assert json.loads((out / "precision.json").read_text()) == summary
    assert (out / "precision.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 5 |" in (out / "precision.md").read_text()


def test_command_errors_are_one_line(tmp_path, short_run):
    assert_one_line_error(
        bchw("sweep-bits", tmp_path / "missing.pt", "-o", tmp_path / "o"), "does not exist"
    )
    assert_one_line_error(
        bchw("sweep-bits", "models/digits.bchw", "-o", tmp_path / "o"), "integer model"
    )
    assert_one_line_error(
        bchw("sweep-bits", short_run.checkpoint, "--bits", "0-3", "-o", tmp_path / "o"),
        "activation bits must lie in 2..16",
    )
    bad = bchw("sweep-bits", short_run.checkpoint, "--bits", "8-4", "-o", tmp_path / "o")
    assert bad.returncode == 2 and "range LO-HI" in bad.stderr
    assert not (tmp_path / "o").exists()
