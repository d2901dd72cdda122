"""CIFAR-10 (binary version) and SVHN (MATLAB files) loaders, fed small files written here in
exactly their distributed formats, and images as a CNN sees them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from bchw.core.data import load_cifar10, load_dataset, load_svhn
from bchw.errors import BchwError


def write_cifar10(folder, counts=(12, 12, 12, 12, 12), test=7, seed=0):
    """Files of CIFAR-10's binary version: per record a label byte, then the red, green and
    blue 32 x 32 planes row by row. Returns the images as (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, count in zip(names, (*counts, test), strict=True):
        planes = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        records = np.concatenate([labels[:, None], planes.reshape(count, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        written[name] = (planes, labels)
    return written


def test_cifar10_records_become_images_with_channels_innermost(tmp_path):
    written = write_cifar10(tmp_path / "cifar-10-batches-bin")
    dataset = load_cifar10(tmp_path)  # finds the subfolder the archive unpacks to
    assert dataset.chw == (3, 32, 32) and dataset.pixel_max == 255
    planes = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    n_val = len(labels) // 10  # a tenth of a small training set validates
    expected = planes.transpose(0, 2, 3, 1).reshape(len(labels), -1)  # H x W x C
    assert np.array_equal(dataset.train.images, expected[:-n_val])
    assert np.array_equal(dataset.validation.images, expected[-n_val:])
    assert np.array_equal(dataset.train.labels, labels[:-n_val])
    test_planes, test_labels = written["test_batch.bin"]
    assert np.array_equal(dataset.test.images[3].reshape(32, 32, 3)[5, 7], test_planes[3, :, 5, 7])
    assert np.array_equal(dataset.test.labels, test_labels)
    assert load_dataset("cifar10", tmp_path / "cifar-10-batches-bin").name == "cifar10"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "data_batch_3.bin").unlink(), "data_batch_3.bin missing"),
        (lambda d: (d / "test_batch.bin").write_bytes(b"\0" * 3072), "not a whole number"),
        (lambda d: (d / "test_batch.bin").write_bytes(b""), "not a whole number"),
        (lambda d: (d / "data_batch_1.bin").write_bytes(b"\x0a" + b"\0" * 3072), "label 10"),
    ],
)
def test_damaged_cifar10_files_are_refused_in_one_line(tmp_path, damage, problem):
    write_cifar10(tmp_path)
    damage(tmp_path)
    with pytest.raises(BchwError) as info:
        load_cifar10(tmp_path)
    assert problem in str(info.value) and "\n" not in str(info.value)


def write_svhn(path, count, seed, label_dtype=np.uint8):
    """An SVHN file: X uint8 32 x 32 x 3 x N, y N x 1 with 10 for the digit 0 (MATLAB 5)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
    labels = rng.integers(1, 11, size=(count, 1)).astype(label_dtype)
    savemat(path, {"X": images, "y": labels}, format="5")
    return images, labels


@pytest.mark.parametrize("label_dtype", [np.uint8, np.float64])
def test_svhn_files_become_images_and_ten_becomes_zero(tmp_path, label_dtype):
    images, labels = write_svhn(tmp_path / "train_32x32.mat", 40, 1, label_dtype)
    test_images, test_labels = write_svhn(tmp_path / "test_32x32.mat", 9, 2, label_dtype)
    dataset = load_svhn(tmp_path)
    assert dataset.chw == (3, 32, 32) and dataset.name == "svhn"
    flat = images.transpose(3, 0, 1, 2).reshape(40, -1)
    assert np.array_equal(dataset.train.images, flat[:36])
    assert np.array_equal(dataset.validation.images, flat[36:])
    assert np.array_equal(dataset.train.labels, labels[:36, 0].astype(int) % 10)
    assert 0 in np.concatenate([dataset.train.labels, dataset.test.labels]).tolist()
    assert np.array_equal(dataset.test.images[4].reshape(32, 32, 3), test_images[:, :, :, 4])
    assert np.array_equal(dataset.test.labels, test_labels[:, 0].astype(int) % 10)
    extra, _ = write_svhn(tmp_path / "extra_32x32.mat", 5, 3, label_dtype)
    with_extra = load_svhn(tmp_path)
    assert len(with_extra.train) == 36 + 5 and len(with_extra.validation) == 4
    assert np.array_equal(with_extra.train.images[-1].reshape(32, 32, 3), extra[:, :, :, 4])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:300]), "not a readable MATLAB file"),
        (lambda p: p.write_bytes(b"MATLAB 7.3 MAT-file" + b"\0" * 200), "MATLAB 7.3"),
        (lambda p: savemat(p, {"X": np.zeros((32, 32, 3, 4), np.uint8)}), "lacks X or y"),
        (
            lambda p: savemat(p, {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))}),
            "expected uint8 32 x 32 x 3 x N",
        ),
        (
            lambda p: savemat(p, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.zeros((4, 1))}),
            "labels 1..10",
        ),
        (
            lambda p: savemat(p, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))}),
            "4 images but y 3 labels",
        ),
        (lambda p: p.unlink(), "test_32x32.mat is missing"),
    ],
)
def test_damaged_svhn_files_are_refused_in_one_line(tmp_path, damage, problem):
    write_svhn(tmp_path / "train_32x32.mat", 20, 1)
    write_svhn(tmp_path / "test_32x32.mat", 4, 2)
    damage(tmp_path / "test_32x32.mat")
    with pytest.raises(BchwError) as info:
        load_svhn(tmp_path)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_folder_datasets_need_their_folder(tmp_path):
    with pytest.raises(BchwError, match="needs its folder: pass --data-dir"):
        load_dataset("cifar10", None)
    with pytest.raises(BchwError, match="does not exist"):
        load_dataset("svhn", tmp_path / "nowhere")


def test_builtin_images_have_their_shapes(digits):
    assert digits.chw == (1, 8, 8)


def test_a_cnn_trains_on_cifar10_files_with_the_papers_recipe(tmp_path):
    """bchw train on CIFAR-10's format: the paper's batch, learning rates and batch-norm
    momentum where not given; the arch on the command line."""
    import json

    from tests.commands import cli

    write_cifar10(tmp_path / "data", counts=(40, 40, 40, 40, 40), test=20)
    result = cli(
        "train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
        "--arch", "3x32x32-4C3-MP4-8C3-MP2-10", "--epochs", "1", "--threads", "1",
        "-o", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["best_epoch"] == 1
    from bchw.core.checkpoint import load_checkpoint

    config = load_checkpoint(tmp_path / "run" / "checkpoint.pt").config
    assert (config["batch_size"], config["lr_start"], config["lr_end"]) == (50, 3e-3, 2e-6)
    assert config["bn_momentum"] == 0.1 and config["epochs"] == 1


def test_a_flat_archive_cannot_feed_a_cnn(tmp_path):
    from bchw.core.data import load_archive
    from bchw.core.options import TrainConfig

    path = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 64), dtype=np.uint8),
        y_train=np.arange(30) % 3,
        x_test=rng.integers(0, 256, (5, 64), dtype=np.uint8),
        y_test=np.arange(5) % 3,
    )
    dataset = load_archive(path)
    with pytest.raises(BchwError, match="holds flat vectors"):
        TrainConfig(dataset=str(path), arch="1x8x8-4C3-3").check(dataset)
    colour = tmp_path / "colour.npz"
    np.savez(
        colour,
        x_train=rng.integers(0, 256, (30, 6, 5, 3), dtype=np.uint8),
        y_train=np.arange(30) % 3,
        x_test=rng.integers(0, 256, (5, 6, 5, 3), dtype=np.uint8),
        y_test=np.arange(5) % 3,
    )
    assert load_archive(colour).chw == (3, 6, 5)
    TrainConfig(dataset=str(colour), arch="3x6x5-4C3-3").check(load_archive(colour))
