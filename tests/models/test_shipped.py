"""The models shipped in models/ (the package bchw.models): hashes as documented, accuracy as
promised, found as package data."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from bchw.core import intmodel, reference
from bchw.core.data import load_digits
from tests.conftest import REPO

MODELS = REPO / "models"


def documented_hashes() -> dict[str, str]:
    text = (MODELS / "README.md").read_text()
    return dict(re.findall(r"`([\w.-]+\.bchw)`[^\n]*?`([0-9a-f]{64})`", text))


def documented_accuracy(name: str) -> float:
    """The integer test accuracy stated in the model's own section of models/README.md (the
    introduction names every model, so a search from the top would read another's figure)."""
    text = (MODELS / "README.md").read_text()
    section = re.search(rf"^## `{re.escape(name)}`\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"models/README.md has no section for {name}"
    figure = re.search(r"integer test accuracy ([0-9.]+)", section.group(1))
    assert figure, f"the {name} section states no integer test accuracy"
    return float(figure.group(1))


def test_every_shipped_model_is_documented_with_its_hash():
    hashes = documented_hashes()
    shipped = sorted(p.name for p in MODELS.glob("*.bchw"))
    assert shipped and sorted(hashes) == shipped
    for name, digest in hashes.items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest
        assert intmodel.load(MODELS / name).sha256 == digest


def test_digits_model_accuracy():
    model = intmodel.load(MODELS / "digits.bchw")
    digits = load_digits()
    result = reference.run(model, digits.test.images)
    accuracy = float(np.mean(result.predicted == digits.test.labels))
    assert accuracy >= 0.94
    assert documented_accuracy("digits.bchw") == round(accuracy, 4)


def assert_mnist_accuracy(mnist_dir, name: str, arch: str, floor: float) -> None:
    """The shipped model ``name`` has ``arch``, reaches ``floor`` on all 10,000 MNIST test
    images, and its measured accuracy is the documented one."""
    from bchw.core.data import load_mnist

    model = intmodel.load(MODELS / name)
    assert model.arch() == arch
    test = load_mnist(mnist_dir).test
    result = reference.run(model, test.images)
    accuracy = float(np.mean(result.predicted == test.labels))
    assert len(test) == 10_000 and accuracy >= floor
    assert documented_accuracy(name) == round(accuracy, 4)


def test_mnist_model_accuracy(mnist_dir):
    # The hardware model of the MNIST reproduction: the paper's 784-1024-1024-1024-10 MLP. The
    # floor is 1.5 % test error (the paper's deterministic 1.29 +- 0.08 % plus about three
    # standard deviations); the measured figure must be the documented one.
    assert_mnist_accuracy(mnist_dir, "mnist.bchw", "784-1024-1024-1024-10", 0.985)


def test_mnist_cnn_model_accuracy(mnist_dir):
    # The binary-weight CNN of issue 16: integer test error at most 0.7 %.
    assert_mnist_accuracy(mnist_dir, "mnist-cnn.bchw", "1x28x28-32C3-MP2-64C3-MP2-512-10", 0.993)


def test_shipped_models_are_package_data_and_their_recipes_match():
    from bchw.models import RECIPES, SHIPPED, load_shipped

    for name in SHIPPED:
        model = load_shipped(name)
        assert model.sha256 == intmodel.load(MODELS / f"{name}.bchw").sha256
        assert model.provenance["seed"] == RECIPES[name].seed
        assert model.provenance["dataset"] == RECIPES[name].dataset


def test_an_unknown_shipped_model_is_a_one_line_error():
    import pytest
    from bchw.models import load_shipped

    from bchw.errors import BchwError

    with pytest.raises(BchwError, match="no shipped model 'cifar'"):
        load_shipped("cifar")


def test_the_shipped_models_package_imports_only_the_core():
    """bchw.models sits just above the core (docs/architecture.md). It is installed from
    models/, where import-linter does not look, so this test keeps its imports in place."""
    import ast
    import sys

    allowed = ("bchw.core", "bchw.errors")
    for source in MODELS.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith(allowed), (source, name)
