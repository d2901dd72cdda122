"""Datasets: scikit-learn's bundled 8x8 digits (the default), MNIST from IDX files, CIFAR-10
from its binary version, SVHN from its MATLAB files, and the user's own data as Keras-style
``.npz`` archives.

Images are flattened row by row with their channels innermost (``H x W x C``; an MLP sees a
permutation-invariant vector, a CNN reshapes it) and kept as unsigned integers; the model
scales them (``Dataset.input_scale``) so that the integer model can take the raw pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bchw.core.machine import physical_memory
from bchw.core.options import BUILTIN_DATASETS, DATA_DIR_ENV, FOLDER_DATASETS
from bchw.errors import BchwError

DATASETS = BUILTIN_DATASETS
ARCHIVE_SUFFIX = ".npz"
ARCHIVE_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
ARCHIVE_OPTIONAL = ("x_val", "y_val", "pixel_max")
ARCHIVE_VALIDATION_SHARE = 10  # without x_val: the last 1/10 of the training set validates
MAX_PIXEL = (1 << 16) - 1

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

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SUBFOLDER = "cifar-10-batches-bin"  # what cifar-10-binary.tar.gz unpacks to
CIFAR10_SIDE = 32
CIFAR10_RECORD = 1 + 3 * CIFAR10_SIDE * CIFAR10_SIDE  # label byte, then R, G, B planes
CIFAR10_VALIDATION_SIZE = 5_000  # the last 5,000 training images, as in the paper's code
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_VALIDATION_SIZE = 6_000  # the last 6,000 images of train_32x32.mat
MAX_CLASSES = 1 << 16


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
    image_shape: tuple[int, ...] = ()  # one image before flattening (H, W) or (H, W, C)
    sha256: str = ""  # of the archive file, for .npz data sets
    pixel_max_stated: bool = True  # False: an archive's largest pixel, not a stated maximum

    @property
    def num_features(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def chw(self) -> tuple[int, int, int] | None:
        """One image as (channels, height, width), None for flat vectors. Images are stored
        flattened row by row with their channels innermost (H x W x C), whatever the shape."""
        if len(self.image_shape) == 2:
            return (1, *self.image_shape)  # type: ignore[return-value]
        if len(self.image_shape) == 3:
            h, w, c = self.image_shape
            return (c, h, w)
        return None

    def split(self, name: str) -> Split:
        if name not in ("train", "validation", "test"):
            raise BchwError(f"unknown split {name!r}: use train, validation or test")
        return getattr(self, name)

    def check_model(self, model) -> None:
        """Refuse, in one line, images or labels that an integer model cannot take."""
        self.check_input(model.input_shape, "the model")
        top = (1 << model.input_bits) - 1
        if self.pixel_max > top:
            raise BchwError(
                f"{self.name} pixels reach {self.pixel_max}, but the model's "
                f"{model.input_bits}-bit inputs take 0..{top}"
            )
        if self.num_classes > model.num_classes:
            raise BchwError(
                f"{self.name} has labels up to {self.num_classes - 1}, but the model has "
                f"{model.num_classes} classes"
            )
        if model.provenance.get("dataset"):  # a trained model: its data had a pixel scale
            self.check_pixel_scale(1 / model.input_scale, "the model")

    def check_input(self, shape: tuple[int, ...], owner: str) -> None:
        """Refuse, in one line, images that do not fit ``owner``'s input (a network, a model,
        a checkpoint): ``shape`` is ``(C, H, W)`` for images or ``(features,)``."""
        wanted = "x".join(map(str, shape))
        if len(shape) == 3:
            if self.chw is None:
                raise BchwError(
                    f"{owner} takes {wanted} images, but {self.name} holds flat vectors of "
                    f"{self.num_features} values: give an archive of N x H x W (x C) images"
                )
            if self.chw != shape:
                raise BchwError(
                    f"{owner} takes {wanted} images but {self.name} images are "
                    f"{'x'.join(map(str, self.chw))} (channels x height x width)"
                )
        features = math.prod(shape)
        if self.num_features != features:
            held = "x".join(map(str, self.image_shape)) or str(self.num_features)
            raise BchwError(
                f"{self.name} images have {self.num_features} pixels ({held}) but {owner} "
                f"takes {features} inputs"
            )

    def check_pixel_scale(self, trained_pixel_max: float, owner: str) -> None:
        """Refuse pixels on another scale than ``owner`` was trained on (pixels of 0 up to
        ``trained_pixel_max``, the inverse of its input scale): pixels above it, or a stated
        maximum that differs. An archive without ``pixel_max`` whose largest pixel is lower is
        accepted (its images need not hold the brightest value)."""
        tolerance = 1e-9 * trained_pixel_max  # the scale went through a float division
        if self.pixel_max > trained_pixel_max + tolerance or (
            self.pixel_max_stated and abs(self.pixel_max - trained_pixel_max) > tolerance
        ):
            held = f"0..{self.pixel_max}" if self.pixel_max_stated else f"up to {self.pixel_max}"
            raise BchwError(
                f"{self.name} holds pixels of {held}, but {owner} was trained on pixels of "
                f"0..{trained_pixel_max:g}: scale the data alike (an archive states its scale as "
                "pixel_max)"
            )


def is_archive(name: str) -> bool:
    """Whether a ``--dataset`` value names an archive file rather than a built-in data set."""
    return name not in DATASETS


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set: ``digits``, ``mnist`` (from ``data_dir`` or ``$BCHW_DATA_DIR``) or the
    path of a Keras-style ``.npz`` archive (:func:`load_archive`)."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist(resolve_data_dir(data_dir))
    if name in FOLDER_DATASETS:
        if not data_dir:
            raise BchwError(f"the {name} dataset needs its folder: pass --data-dir DIR")
        folder = Path(data_dir)
        if not folder.is_dir():
            raise BchwError(f"{name} data folder {folder} does not exist or is not a folder")
        return load_cifar10(folder) if name == "cifar10" else load_svhn(folder)
    if not name.endswith(ARCHIVE_SUFFIX):
        raise BchwError(
            f"unknown dataset {name!r}: choose {', '.join(DATASETS)} or a .npz archive's path"
        )
    return load_archive(name)


def resolve_dataset(
    requested: str | None,
    recorded: str | None,
    data_dir: str | os.PathLike[str] | None,
    owner: str,
    recorded_sha256: str = "",
) -> Dataset:
    """The data set asked for (``--dataset``), else the one ``owner`` (a model, a checkpoint)
    records it was trained on; one-line errors when neither can be loaded."""
    if requested:
        return load_dataset(requested, data_dir)
    if not isinstance(recorded, str) or not recorded or recorded == "None":
        raise BchwError(f"{owner} does not name its dataset: pass --dataset")
    if not isinstance(recorded_sha256, str):
        recorded_sha256 = ""  # a malformed record names no archive to hold it to
    if not is_archive(recorded):
        return load_dataset(recorded, data_dir)
    if not recorded.endswith(ARCHIVE_SUFFIX):
        raise BchwError(
            f"{owner} records the data set {recorded[:200]!r}, neither a built-in one "
            f"({', '.join(DATASETS)}) nor an .npz archive: pass --dataset"
        )
    if not Path(recorded).is_file():
        raise BchwError(
            f"{owner} was trained on the archive {recorded}, which is not there: pass "
            "--dataset PATH.npz"
        )
    try:
        dataset = load_archive(recorded)
    except BchwError as exc:
        raise BchwError(f"{owner} names the archive it was trained on, but {exc}") from None
    if recorded_sha256 and dataset.sha256 != recorded_sha256:
        raise BchwError(
            f"the archive {recorded} has changed since {owner} was trained on it (SHA-256 "
            f"{dataset.sha256[:12]}, recorded {recorded_sha256[:12]}): pass --dataset PATH.npz"
        )
    return dataset


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
        image_shape=(8, 8),
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
        image_shape=(MNIST_SIDE, MNIST_SIDE),
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


# -- CIFAR-10 and SVHN in their distributed formats ---------------------------------------------


def load_cifar10(data_dir: Path) -> Dataset:
    """CIFAR-10 from its binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin`` in ``data_dir`` (or in its ``cifar-10-batches-bin`` subfolder).

    Each record is a label byte (0..9) and 3,072 pixel bytes: the red, green and blue 32 x 32
    planes, each row by row. Images become ``32 x 32 x 3`` (channels innermost), pixels 0..255
    as they are (no whitening: the integer model takes raw pixels). Validation: the last 5,000
    training images (a tenth, for files of 10,000 images or fewer).
    """
    folder = data_dir / CIFAR10_SUBFOLDER if (data_dir / CIFAR10_SUBFOLDER).is_dir() else data_dir
    missing = [n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / n).is_file()]
    if missing:
        hint = ""
        if (data_dir / "cifar-10-binary.tar.gz").is_file():
            hint = " (unpack cifar-10-binary.tar.gz first)"
        raise BchwError(f"CIFAR-10 file(s) {', '.join(missing)} missing from {folder}{hint}")
    train = [_read_cifar10(folder / n) for n in CIFAR10_TRAIN_FILES]
    train_x = np.concatenate([images for images, _ in train])
    train_y = np.concatenate([labels for _, labels in train])
    test_x, test_y = _read_cifar10(folder / CIFAR10_TEST_FILE)
    n_val = (
        CIFAR10_VALIDATION_SIZE
        if len(train_y) > 2 * CIFAR10_VALIDATION_SIZE
        else len(train_y) // 10
    )
    if n_val == 0:
        raise BchwError(f"CIFAR-10 files in {folder} hold too few images to split off validation")
    return Dataset(
        name="cifar10",
        train=Split(train_x[:-n_val], train_y[:-n_val]),
        validation=Split(train_x[-n_val:], train_y[-n_val:]),
        test=Split(test_x, test_y),
        input_scale=1.0 / 255.0,
        pixel_max=255,
        image_shape=(CIFAR10_SIDE, CIFAR10_SIDE, 3),
    )


def _read_cifar10(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BchwError(f"cannot read {path}: {exc.strerror}") from None
    if not raw or len(raw) % CIFAR10_RECORD:
        raise BchwError(
            f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records of "
            f"{CIFAR10_RECORD} bytes (truncated or not the binary version)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        raise BchwError(f"{path}: label {int(labels.max())} is outside 0..9")
    side = CIFAR10_SIDE
    planes = records[:, 1:].reshape(-1, 3, side, side)
    images = np.ascontiguousarray(planes.transpose(0, 2, 3, 1)).reshape(len(records), -1)
    return images, labels


def load_svhn(data_dir: Path) -> Dataset:
    """SVHN (cropped digits) from ``train_32x32.mat`` and ``test_32x32.mat`` in ``data_dir``;
    ``extra_32x32.mat``, where present, joins the training set (the paper trains on both).

    Each file holds ``X``, uint8 ``32 x 32 x 3 x N``, and ``y``, ``N x 1`` labels 1..10 where 10
    is the digit 0 (bchw's class 0). Images become ``32 x 32 x 3`` (channels innermost), pixels
    0..255. Validation: the last 6,000 images of ``train_32x32.mat`` (a tenth of a smaller one).
    """
    for part in ("train", "test"):
        if not (data_dir / SVHN_FILES[part]).is_file():
            raise BchwError(f"SVHN file {SVHN_FILES[part]} is missing from {data_dir}")
    train_x, train_y = _read_svhn(data_dir / SVHN_FILES["train"])
    test_x, test_y = _read_svhn(data_dir / SVHN_FILES["test"])
    n_val = SVHN_VALIDATION_SIZE if len(train_y) > 2 * SVHN_VALIDATION_SIZE else len(train_y) // 10
    if n_val == 0:
        raise BchwError(f"{SVHN_FILES['train']} holds too few images to split off validation")
    fit_x, fit_y = train_x[:-n_val], train_y[:-n_val]
    if (data_dir / SVHN_FILES["extra"]).is_file():
        extra_x, extra_y = _read_svhn(data_dir / SVHN_FILES["extra"])
        fit_x, fit_y = np.concatenate([fit_x, extra_x]), np.concatenate([fit_y, extra_y])
    return Dataset(
        name="svhn",
        train=Split(fit_x, fit_y),
        validation=Split(train_x[-n_val:], train_y[-n_val:]),
        test=Split(test_x, test_y),
        input_scale=1.0 / 255.0,
        pixel_max=255,
        image_shape=(32, 32, 3),
    )


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        with open(path, "rb") as handle:
            head = handle.read(128)
    except OSError as exc:
        raise BchwError(f"cannot read {path}: {exc.strerror}") from None
    if b"MATLAB 7.3" in head:
        raise BchwError(
            f"{path} is a MATLAB 7.3 (HDF5) file; SVHN's files are MATLAB 5, as distributed"
        )
    try:
        content = loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises many kinds for a truncated or foreign file
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise BchwError(f"{path} is not a readable MATLAB file ({reason})") from None
    if "X" not in content or "y" not in content:
        raise BchwError(f"{path} lacks X or y (SVHN's files hold both)")
    images, labels = content["X"], content["y"]
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise BchwError(
            f"{path}: X is {images.dtype} of shape {list(images.shape)}, expected uint8 "
            "32 x 32 x 3 x N"
        )
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != images.shape[3]:
        raise BchwError(f"{path}: X holds {images.shape[3]} images but y {len(labels)} labels")
    if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isin(labels, np.arange(1, 11))):
        raise BchwError(f"{path}: y must hold the labels 1..10 (10 for the digit 0)")
    flat = np.ascontiguousarray(images.transpose(3, 0, 1, 2)).reshape(images.shape[3], -1)
    return flat, (labels.astype(np.int64) % 10)


# -- Keras-style archives ------------------------------------------------------------------------


def load_archive(path: str | os.PathLike[str]) -> Dataset:
    """A data set from a Keras-style ``.npz`` archive.

    It holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``,
    ``y_val`` (else the last tenth of the training set validates) and ``pixel_max`` (else the
    largest pixel in the archive; the float model sees ``pixel / pixel_max``). Images are
    ``N x H x W`` (grayscale), ``N x H x W x C`` (channels last) or already flat ``N x F``,
    unsigned integer pixels of at most 16 bits, flattened in C order (row by row, channels
    innermost); labels are ``N`` (or ``N x 1``) integers from 0, the classes being 0 up to the
    largest label. Anything else is refused in one line naming the archive and the array.
    """
    path = Path(path)
    if path.is_dir():
        raise BchwError(f"data archive {path} is a folder, not an .npz file")
    if not path.is_file():
        raise BchwError(f"data archive {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BchwError(f"cannot read data archive {path}: {exc.strerror}") from None
    arrays = _read_archive(path, raw)
    missing = [key for key in ARCHIVE_REQUIRED if key not in arrays]
    if missing:
        raise BchwError(
            f"data archive {path} lacks {', '.join(missing)} (an archive holds "
            f"{', '.join(ARCHIVE_REQUIRED)}, optionally x_val, y_val and pixel_max)"
        )
    unknown = sorted(set(arrays) - set(ARCHIVE_REQUIRED) - set(ARCHIVE_OPTIONAL))
    if unknown:
        raise BchwError(
            f"data archive {path} holds unexpected arrays {', '.join(unknown)} (known: "
            f"{', '.join(ARCHIVE_REQUIRED + ARCHIVE_OPTIONAL)})"
        )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise BchwError(f"data archive {path} holds only one of x_val and y_val")
    parts = ["train", "test"] + (["val"] if "x_val" in arrays else [])
    images = {part: _archive_images(path, f"x_{part}", arrays[f"x_{part}"]) for part in parts}
    labels = {part: _archive_labels(path, f"y_{part}", arrays[f"y_{part}"]) for part in parts}
    shape = images["train"].shape[1:]
    for part in parts:
        if images[part].shape[1:] != shape:
            raise BchwError(
                f"data archive {path}: x_{part} images are {_shape(images[part].shape[1:])}, "
                f"x_train's {_shape(shape)}"
            )
        if len(images[part]) != len(labels[part]):
            raise BchwError(
                f"data archive {path}: x_{part} holds {len(images[part])} images but y_{part} "
                f"holds {len(labels[part])} labels"
            )
    largest = max(int(images[part].max()) for part in parts)
    pixel_max = largest
    if "pixel_max" in arrays:
        pixel_max = _archive_scalar(path, arrays["pixel_max"])
        if pixel_max < largest:
            raise BchwError(
                f"data archive {path}: a pixel is {largest}, above its pixel_max {pixel_max}"
            )
    if pixel_max < 1:
        raise BchwError(f"data archive {path}: every pixel is 0")
    num_classes = max(int(labels[part].max()) for part in parts) + 1
    if num_classes < 2:
        raise BchwError(f"data archive {path}: every label is 0; a classifier needs 2 classes")
    dtype = np.uint8 if pixel_max <= 0xFF else np.uint16
    flat = {part: images[part].reshape(len(images[part]), -1).astype(dtype) for part in parts}
    train = Split(flat["train"], labels["train"])
    if "val" in flat:
        validation = Split(flat["val"], labels["val"])
    else:
        n_val = len(train) // ARCHIVE_VALIDATION_SHARE
        if n_val == 0 or n_val == len(train):
            raise BchwError(
                f"data archive {path}: x_train holds {len(train)} images, too few to split off "
                "a validation tenth (add x_val and y_val)"
            )
        train, validation = (
            Split(train.images[:-n_val], train.labels[:-n_val]),
            Split(train.images[-n_val:], train.labels[-n_val:]),
        )
    return Dataset(
        name=str(path),
        train=train,
        validation=validation,
        test=Split(flat["test"], labels["test"]),
        input_scale=1.0 / pixel_max,
        pixel_max=pixel_max,
        num_classes=num_classes,
        image_shape=tuple(int(d) for d in shape),
        sha256=hashlib.sha256(raw).hexdigest(),
        pixel_max_stated="pixel_max" in arrays,
    )


def _read_archive(path: Path, raw: bytes) -> dict[str, np.ndarray]:
    """Every array of the archive, read (so that a corrupt member is found now). Each member's
    header is checked against its size before numpy allocates anything for it."""
    import io

    if not raw:
        raise BchwError(f"{path} is empty, not an .npz archive")
    if not raw.startswith(b"PK"):  # every zip file, and so every .npz, starts so
        kind = "a single .npy array" if raw.startswith(b"\x93NUMPY") else "not a zip file"
        raise BchwError(f"{path} is {kind}, not an .npz archive")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            needed = sum(_check_member(path, archive, info) for info in archive.infolist())
        memory = physical_memory()
        if memory and needed > memory:  # a compressed archive can promise anything
            raise BchwError(
                f"{path}: its arrays take {needed / 2**30:,.1f} GiB, more than this machine's "
                f"{memory / 2**30:,.1f} GiB of memory"
            )
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except BchwError:
        raise
    except MemoryError:
        raise BchwError(f"{path}: its arrays do not fit in memory") from None
    except Exception as exc:  # a user's file: whatever zipfile or numpy trips over, named
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if "allow_pickle" in reason or "Object arrays" in reason:
            reason = "it holds Python objects, not plain arrays"
        raise BchwError(f"{path} is not a readable .npz archive ({reason})") from None
    return arrays  # every member is .npy data (_check_member), so every value an array


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Refuse a member that is not plain ``.npy`` data whose header agrees with its size;
    return the bytes its array takes."""
    key = info.filename.removesuffix(".npy")
    if not info.filename.endswith(".npy"):
        raise BchwError(f"{path}: its member {info.filename} is not a numpy array")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"format {version}")
        except Exception:  # numpy parses the header with ast: any error means a bad header
            raise BchwError(
                f"{path} is not a readable .npz archive (its member {key} has no valid .npy header)"
            ) from None
        header = member.tell()
    if dtype.hasobject:
        raise BchwError(
            f"{path} is not a readable .npz archive (it holds Python objects, not plain arrays)"
        )
    size = dtype.itemsize
    for dim in shape:
        size *= dim
    if header + size != info.file_size:
        raise BchwError(
            f"{path} is not a readable .npz archive (its member {key}'s header promises "
            f"{size:,} bytes of data, the member holds {max(info.file_size - header, 0):,})"
        )
    return size


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) or "scalars"


def _archive_images(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if array.ndim not in (2, 3, 4):
        raise BchwError(
            f"data archive {path}: {key} has shape {list(array.shape)}; images are N x H x W, "
            "N x H x W x C or N x F"
        )
    if array.size == 0:
        raise BchwError(f"data archive {path}: {key} holds no pixels (shape {list(array.shape)})")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise BchwError(
            f"data archive {path}: {key} holds {array.dtype} values; pixels must be unsigned "
            "integers (uint8 0..255, say)"
        )
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise BchwError(f"data archive {path}: {key} holds the pixel {low}; pixels are unsigned")
    if high > MAX_PIXEL:
        raise BchwError(
            f"data archive {path}: {key} holds the pixel {high}; pixels have at most 16 bits"
        )
    return array


def _archive_labels(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:  # Keras's CIFAR style: N x 1
        array = array[:, 0]
    if array.ndim != 1:
        raise BchwError(
            f"data archive {path}: {key} has shape {list(array.shape)}; labels are N integers"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise BchwError(f"data archive {path}: {key} holds {array.dtype} values, not integers")
    if len(array) and int(array.min()) < 0:
        raise BchwError(f"data archive {path}: {key} holds the label {int(array.min())}")
    if len(array) and int(array.max()) >= MAX_CLASSES:
        raise BchwError(
            f"data archive {path}: {key} holds the label {int(array.max())} (at most "
            f"{MAX_CLASSES} classes)"
        )
    return array.astype(np.int64)


def _archive_scalar(path: Path, array: np.ndarray) -> int:
    if array.shape != () or not np.issubdtype(array.dtype, np.integer):
        raise BchwError(f"data archive {path}: pixel_max must be one integer")
    value = int(array)
    if not 1 <= value <= MAX_PIXEL:
        raise BchwError(f"data archive {path}: pixel_max {value} is outside 1..{MAX_PIXEL}")
    return value
