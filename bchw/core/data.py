"""Datasets: scikit-learn's bundled 8x8 digits (the default) and MNIST from IDX files.

Images are flattened (permutation-invariant) and kept as unsigned 8-bit integers; the model
scales them (``Dataset.input_scale``) so that the integer model can take the raw pixels.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bchw.errors import BchwError

DATASETS = ("digits", "mnist")
DATA_DIR_ENV = "BCHW_DATA_DIR"

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360
DIGITS_VALIDATION_SIZE = 180

MNIST_VALIDATION_SIZE = 10_000
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension
MNIST_SIDE = 28
NUM_CLASSES = 10


@dataclass(frozen=True)
class Split:
    """Images as ``uint8[N, features]`` and labels as ``int64[N]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> Split:
        """The first ``limit`` images (all of them when ``limit`` is None)."""
        if limit is None:
            return self
        return Split(self.images[:limit], self.labels[:limit])


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into train, validation and test.

    ``input_scale`` maps a raw pixel to the float model's input: ``x_real = pixel * input_scale``.
    ``pixel_max`` is the largest raw pixel value the data set can hold.
    """

    name: str
    train: Split
    validation: Split
    test: Split
    input_scale: float
    pixel_max: int
    num_classes: int = NUM_CLASSES

    @property
    def num_features(self) -> int:
        return int(self.train.images.shape[1])

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise BchwError(f"unknown split {name!r}: use train, validation or test")
        return getattr(self, name)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set by name; MNIST reads ``data_dir`` or ``$BCHW_DATA_DIR``."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist(resolve_data_dir(data_dir))
    raise BchwError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The MNIST folder: the explicit argument, else ``$BCHW_DATA_DIR``, else an error."""
    chosen = data_dir if data_dir else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise BchwError(
            f"the mnist dataset needs its folder: pass --data-dir DIR or set {DATA_DIR_ENV}"
        )
    path = Path(chosen)
    if not path.is_dir():
        raise BchwError(f"MNIST data folder {path} does not exist or is not a folder")
    return path


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), split by a fixed seed.

    360 test and 180 validation images; the remaining 1,257 train.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.asarray(bunch.data, dtype=np.float64)
    if images.min() < 0 or images.max() > 16 or not np.all(images == np.round(images)):
        raise BchwError("scikit-learn's digits data are not integers in 0..16 as expected")
    images = images.astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    test = order[:DIGITS_TEST_SIZE]
    validation = order[DIGITS_TEST_SIZE : DIGITS_TEST_SIZE + DIGITS_VALIDATION_SIZE]
    train = order[DIGITS_TEST_SIZE + DIGITS_VALIDATION_SIZE :]
    return Dataset(
        name="digits",
        train=Split(images[train], labels[train]),
        validation=Split(images[validation], labels[validation]),
        test=Split(images[test], labels[test]),
        input_scale=1.0 / 16.0,
        pixel_max=16,
    )


def load_mnist(data_dir: Path) -> Dataset:
    """MNIST from the four standard IDX files (raw or gzip-compressed) in ``data_dir``.

    The validation set is the last 10,000 training images, as in the paper (the last sixth when
    the training file holds 10,000 images or fewer).
    """
    arrays = {key: _read_idx(_find_idx_file(data_dir, stem)) for key, stem in MNIST_FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        stem_i, stem_l = MNIST_FILES[f"{part}_images"], MNIST_FILES[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (MNIST_SIDE, MNIST_SIDE):
            raise BchwError(
                f"{stem_i}: expected images of {MNIST_SIDE}x{MNIST_SIDE} with 3 dimensions, "
                f"found shape {list(images.shape)}"
            )
        if labels.ndim != 1:
            raise BchwError(f"{stem_l}: expected 1 dimension, found shape {list(labels.shape)}")
        if len(images) != len(labels):
            raise BchwError(
                f"{stem_i} holds {len(images)} images but {stem_l} holds {len(labels)} labels"
            )
        if len(labels) == 0:
            raise BchwError(f"{stem_l} holds no labels")
        if labels.max() >= NUM_CLASSES:
            raise BchwError(f"{stem_l}: label {int(labels.max())} is outside 0..9")
    train_x = arrays["train_images"].reshape(len(arrays["train_images"]), -1)
    train_y = arrays["train_labels"].astype(np.int64)
    test_x = arrays["test_images"].reshape(len(arrays["test_images"]), -1)
    test_y = arrays["test_labels"].astype(np.int64)
    n_val = MNIST_VALIDATION_SIZE if len(train_y) > MNIST_VALIDATION_SIZE else len(train_y) // 6
    if n_val == 0:
        raise BchwError(
            f"{MNIST_FILES['train_images']} holds too few images to split off validation"
        )
    return Dataset(
        name="mnist",
        train=Split(train_x[:-n_val], train_y[:-n_val]),
        validation=Split(train_x[-n_val:], train_y[-n_val:]),
        test=Split(test_x, test_y),
        input_scale=1.0 / 255.0,
        pixel_max=255,
    )


def _find_idx_file(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise BchwError(f"MNIST file {stem} (or {stem}.gz) is missing from {data_dir}")


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file, checking its magic number, dimensions and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BchwError(f"{path}: cannot read or decompress ({exc})") from None
    expected_magic = IDX_MAGIC_IMAGES if "images" in path.name else IDX_MAGIC_LABELS
    if len(raw) < 4:
        raise BchwError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise BchwError(
            f"{path}: IDX magic number is 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BchwError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise BchwError(
            f"{path}: header promises {' x '.join(map(str, dims))} = {count} bytes of data, "
            f"file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
