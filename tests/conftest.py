"""Shared fixtures: the digits data set, a short trained model, the shipped models and the
MNIST folder."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bchw.core.checkpoint import Checkpoint, load_checkpoint
from bchw.core.data import Dataset, load_digits
from bchw.core.export import export_checkpoint
from bchw.core.intmodel import IntegerModel
from bchw.core.options import DATA_DIR_ENV, ExportOptions, TrainConfig
from bchw.core.train import TrainResult, train

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits.bchw"
MNIST = REPO / "models" / "mnist.bchw"
SHORT_TRAINING = TrainConfig(dataset="digits", arch="64-96-96-10", epochs=20, seed=3, threads=1)
# Kernels 3 and 1, padding and none, pooling that drops a row (5 // 2), a dense layer between.
CNN_DIGITS = "1x8x8-8C3-12C3p0-MP2-6C1-24-10"


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def shipped_digits() -> IntegerModel:
    from bchw.models import load_shipped

    return load_shipped("digits")


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> TrainResult:
    """A deterministic BinaryConnect model trained for 20 epochs on digits (about 1 s)."""
    return train(SHORT_TRAINING, digits, tmp_path_factory.mktemp("short_run"), progress=False)


@pytest.fixture(scope="session")
def short_checkpoint(short_run: TrainResult) -> Checkpoint:
    return load_checkpoint(short_run.checkpoint)


@pytest.fixture(scope="session")
def short_model(short_checkpoint: Checkpoint, digits: Dataset) -> IntegerModel:
    return export_checkpoint(short_checkpoint, digits.train.images, ExportOptions())


@pytest.fixture(scope="session")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory, digits: Dataset) -> Checkpoint:
    """A small binary CNN trained for 30 epochs on digits as 1x8x8 images (about 4 s)."""
    config = replace(SHORT_TRAINING, arch=CNN_DIGITS, epochs=30, batch_size=50, lr_start=3e-3)
    run = train(config, digits, tmp_path_factory.mktemp("cnn_run"), progress=False)
    return load_checkpoint(run.checkpoint)


@pytest.fixture(scope="session")
def cnn_model(cnn_checkpoint: Checkpoint, digits: Dataset) -> IntegerModel:
    return export_checkpoint(cnn_checkpoint, digits.train.images, ExportOptions())


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST folder from $BCHW_DATA_DIR; tests that need it skip, saying why, without it."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        pytest.skip(f"MNIST tests need {DATA_DIR_ENV} (CI sets it to ../shared/data/mnist)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{DATA_DIR_ENV}={value} is not a folder")
    return path
