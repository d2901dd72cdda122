"""A non-editable install holds everything the commands need: run from an empty folder, with
the checkout out of reach, it finds the shipped models and the fitted coefficients as package
data, and writes only where it is told."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_a_wheel_installed_apart_runs_from_an_empty_folder(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to know which files a clean clone holds")
    source = tmp_path / "source"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:  # the committed files only: what a clean clone holds
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (target / "bchw" / "models" / "digits.bchw").is_file()
    assert (target / "bchw" / "estimate" / "coefficients.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    script = (
        "import bchw, rtl_gen, sim, sys\n"
        "assert all(m.__file__.startswith(sys.argv[1]) for m in (bchw, rtl_gen, sim))\n"
        "from bchw.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    for args in (
        ["eval", "--help"],
        ["estimate", "--help"],
        ["demo", "--help"],
    ):
        run = subprocess.run(
            [sys.executable, "-c", script, str(target), *args],
            cwd=empty, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
    check = (
        "import sys\n"
        "from bchw.models import load_shipped\n"
        "from bchw.estimate.analytic import load_coefficients\n"
        "from bchw.core.data import load_digits\n"
        "from bchw.core.evaluate import evaluate\n"
        "model = load_shipped('digits')\n"
        "assert load_coefficients()['families']\n"
        "report, _ = evaluate(model, load_digits().test, dataset='digits', split_name='test')\n"
        "print(model.sha256, report.accuracy)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], cwd=empty, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    sha, accuracy = run.stdout.split()
    assert (
        sha
        == __import__("hashlib").sha256((REPO / "models" / "digits.bchw").read_bytes()).hexdigest()
    )
    assert float(accuracy) > 0.94
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing written where it runs
