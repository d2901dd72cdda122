"""Datasets: the digits split and the IDX loader (synthetic files; real MNIST when present)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from bchw.core.data import DATA_DIR_ENV, MNIST_FILES, load_dataset, load_digits, load_mnist
from bchw.errors import BchwError


def test_digits_split_is_fixed_disjoint_and_complete():
    a, b = load_digits(), load_digits()
    assert (len(a.train), len(a.validation), len(a.test)) == (1257, 180, 360)
    assert np.array_equal(a.test.images, b.test.images)
    assert a.train.images.dtype == np.uint8 and a.train.images.shape[1] == 64
    assert a.train.images.max() == 16 and a.input_scale == 1 / 16
    rows = [
        tuple(r) + (int(y),)
        for s in (a.train, a.validation, a.test)
        for r, y in zip(s.images, s.labels, strict=True)
    ]
    assert len(rows) == 1797
    assert set(np.unique(a.test.labels)) == set(range(10))


def write_idx(path, array, magic, gz, count=None):
    dims = array.shape if count is None else (count, *array.shape[1:])
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def fake_mnist(folder, n_train=60, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    parts = {
        "train_images": (rng.integers(0, 256, (n_train, 28, 28)), 0x803),
        "train_labels": (rng.integers(0, 10, n_train), 0x801),
        "test_images": (rng.integers(0, 256, (n_test, 28, 28)), 0x803),
        "test_labels": (rng.integers(0, 10, n_test), 0x801),
    }
    for key, (array, magic) in parts.items():
        name = MNIST_FILES[key] + (".gz" if gz else "")
        write_idx(folder / name, array, magic, gz)
    return {k: v for k, (v, _) in parts.items()}


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_raw_and_gzip(tmp_path, gz):
    truth = fake_mnist(tmp_path, gz=gz)
    ds = load_mnist(tmp_path)
    assert ds.train.images.shape == (50, 784) and ds.validation.images.shape == (10, 784)
    assert np.array_equal(ds.validation.images, truth["train_images"][-10:].reshape(10, 784))
    assert np.array_equal(ds.test.labels, truth["test_labels"])
    assert ds.train.images.dtype == np.uint8 and ds.input_scale == 1 / 255


def _replace(folder, key, array, magic, count=None):
    path = folder / (MNIST_FILES[key] + ".gz")
    write_idx(path, array, magic, gz=True, count=count)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / (MNIST_FILES["test_labels"] + ".gz")).unlink(), "missing"),
        (lambda d: _replace(d, "train_images", np.zeros((60, 28, 28)), 0x801), "magic"),
        (
            lambda d: _replace(d, "train_images", np.zeros((60, 28, 28)), 0x803, count=61),
            "promises",
        ),
        (lambda d: _replace(d, "test_images", np.zeros((20, 27, 29)), 0x803), "28x28"),
        (lambda d: _replace(d, "test_labels", np.zeros(19), 0x801), "19 labels"),
        (lambda d: _replace(d, "train_labels", np.full(60, 10), 0x801), "outside 0..9"),
        (
            lambda d: (d / (MNIST_FILES["train_labels"] + ".gz")).write_bytes(b"\x1f\x8b\x08junk"),
            "decompress",
        ),
    ],
)
def test_idx_loader_names_the_problem(tmp_path, damage, message):
    fake_mnist(tmp_path)
    damage(tmp_path)
    with pytest.raises(BchwError, match=message):
        load_mnist(tmp_path)


def test_mnist_needs_a_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(BchwError, match="--data-dir"):
        load_dataset("mnist")
    with pytest.raises(BchwError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    fake_mnist(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(load_dataset("mnist").test) == 20


def test_unknown_dataset():
    with pytest.raises(BchwError, match="unknown dataset"):
        load_dataset("cifar")


@pytest.mark.data
def test_real_mnist(mnist_dir):
    ds = load_mnist(mnist_dir)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.train.images.shape[1] == 784 and ds.train.images.dtype == np.uint8
    test_counts = np.bincount(ds.test.labels, minlength=10).tolist()
    assert test_counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    all_train = np.concatenate([ds.train.labels, ds.validation.labels])
    assert np.bincount(all_train).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]


@pytest.mark.data
def test_mnist_train_export_eval_end_to_end(mnist_dir, tmp_path):
    """A small MLP, one epoch on real MNIST, exported and run bit-exactly by two implementations."""
    from bchw.core import intmodel, reference
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.export import export_checkpoint
    from bchw.core.options import ExportOptions, TrainConfig
    from bchw.core.train import train
    from tests import independent

    ds = load_mnist(mnist_dir)
    config = TrainConfig(dataset="mnist", arch="784-128-10", epochs=1, seed=0)
    result = train(config, ds, tmp_path, progress=False)
    assert result.test_error < 0.10
    model = export_checkpoint(load_checkpoint(result.checkpoint), ds.train.images, ExportOptions())
    images = ds.test.images[:2000]
    integer = reference.run(model, images)
    assert np.mean(integer.predicted == ds.test.labels[:2000]) >= 0.88
    scores, predicted = independent.run(intmodel.to_bytes(model), images)
    assert np.array_equal(scores, integer.scores) and np.array_equal(predicted, integer.predicted)
