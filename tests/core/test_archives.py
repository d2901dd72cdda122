"""The user's own data: Keras-style .npz archives, checked in one line, and equal in every
command to the built-in data set they hold."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest

from bchw.core import intmodel
from bchw.core.data import load_archive
from bchw.errors import BchwError
from tests.commands import assert_one_line_error, cli
from tests.conftest import DIGITS


def write_archive(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def digits_archive(tmp_path_factory, digits):
    """The digits split as an archive: images 8 x 8 (N x H x W), explicit validation split."""
    shape = (-1, 8, 8)
    return write_archive(
        tmp_path_factory.mktemp("archive") / "digits.npz",
        x_train=digits.train.images.reshape(shape),
        y_train=digits.train.labels,
        x_val=digits.validation.images.reshape(shape),
        y_val=digits.validation.labels,
        x_test=digits.test.images.reshape(shape),
        y_test=digits.test.labels,
    )


def test_an_archive_of_the_digits_is_the_digits(digits_archive, digits):
    data = load_archive(digits_archive)
    for part in ("train", "validation", "test"):
        assert np.array_equal(data.split(part).images, digits.split(part).images)
        assert np.array_equal(data.split(part).labels, digits.split(part).labels)
        assert data.split(part).images.dtype == np.uint8
    assert (data.pixel_max, data.input_scale, data.num_classes) == (16, 1 / 16, 10)
    assert data.image_shape == (8, 8) and len(data.sha256) == 64


def test_layouts_and_the_default_validation_split(tmp_path, digits):
    images, labels = digits.train.images, digits.train.labels
    flat = load_archive(
        write_archive(
            tmp_path / "flat.npz",
            x_train=images,
            y_train=labels,
            x_test=images[:9],
            y_test=labels[:9],
        )  # fmt: skip
    )
    # No x_val: the last tenth of the training set validates.
    n_val = len(images) // 10
    assert np.array_equal(flat.validation.images, images[-n_val:])
    assert np.array_equal(flat.train.images, images[:-n_val])
    # Channels last, labels as N x 1 (Keras's CIFAR style), 16-bit pixels, a declared range.
    colour = np.arange(4 * 3 * 2 * 3, dtype=np.uint16).reshape(4, 3, 2, 3) * 900
    data = load_archive(
        write_archive(
            tmp_path / "colour.npz",
            x_train=np.concatenate([colour] * 5),
            y_train=np.arange(20).reshape(20, 1) % 3,
            x_test=colour,
            y_test=np.array([0, 1, 2, 0]),
            pixel_max=np.uint16(65535),
        )  # fmt: skip
    )
    assert data.image_shape == (3, 2, 3) and data.num_features == 18
    assert np.array_equal(data.test.images[1], colour[1].reshape(-1))  # channels innermost
    assert data.pixel_max == 65535 and data.num_classes == 3 and data.test.images.dtype == np.uint16


def good(**changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 4, 4)).astype(np.uint8),
        "y_train": rng.integers(0, 3, 30),
        "x_test": rng.integers(0, 256, (6, 4, 4)).astype(np.uint8),
        "y_test": rng.integers(0, 3, 6),
    }
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        (good(x_test=None), "lacks x_test"),
        (good(X_train=np.zeros((2, 2))), "unexpected arrays X_train"),
        (good(x_val=np.zeros((2, 4, 4), np.uint8)), "only one of x_val and y_val"),
        (good(x_train=np.zeros((30, 4, 4), np.float32)), "x_train holds float32 values"),
        (good(x_test=np.full((6, 4, 4), -1, np.int16)), "x_test holds the pixel -1"),
        (good(x_test=np.full((6, 4, 4), 70000, np.int64)), "at most 16 bits"),
        (good(x_test=np.zeros((6, 5, 4), np.uint8)), "x_test images are 5 x 4, x_train's 4 x 4"),
        (good(x_train=np.zeros((30,), np.uint8)), "x_train has shape [30]"),
        (good(y_test=np.zeros(5, np.int64)), "x_test holds 6 images but y_test holds 5"),
        (good(y_train=np.full(30, -2)), "y_train holds the label -2"),
        (good(y_train=np.full(30, 0.5)), "y_train holds float64 values"),
        (good(y_train=np.zeros(30, np.int64), y_test=np.zeros(6, np.int64)), "every label is 0"),
        (good(pixel_max=np.uint8(100)), "above its pixel_max 100"),
        (
            good(x_train=np.zeros((30, 4, 4), np.uint8), x_test=np.zeros((6, 4, 4), np.uint8)),
            "every pixel is 0",
        ),  # fmt: skip
        (good(x_train=np.array([[1, 2]], object)), "holds Python objects"),
    ],
)
def test_bad_archives_are_one_line_errors(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BchwError, match=re.escape(fragment)) as info:
        load_archive(path)
    assert str(path) in str(info.value)
    assert_one_line_error(cli("eval", DIGITS, "--dataset", path), fragment)


def test_corrupt_and_missing_archives(tmp_path):
    path = write_archive(tmp_path / "good.npz", **good())
    data = bytearray(path.read_bytes())
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    flipped = tmp_path / "flipped.npz"
    with zipfile.ZipFile(path) as zf:
        member = zf.infolist()[0]
    data[member.header_offset + 30 + len(member.filename) + 100] ^= 0xFF  # inside x_train
    flipped.write_bytes(bytes(data))
    npy = tmp_path / "array.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    npy.write_bytes(buffer.getvalue())
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    for bad, fragment in (
        (corrupt, "not a readable .npz archive"),
        (tmp_path / "text.npz", "not a zip file"),
        (flipped, "not a readable .npz archive"),
        (npy, "a single .npy array"),
        (tmp_path / "none.npz", "does not exist"),
        (tmp_path, "is a folder"),
    ):
        with pytest.raises(BchwError, match=fragment):
            load_archive(bad)


def test_an_archive_that_does_not_fit_the_model(tmp_path):
    path = write_archive(tmp_path / "small.npz", **good())
    assert_one_line_error(
        cli("eval", DIGITS, "--dataset", path), "16 pixels (4x4) but the model takes 64 inputs"
    )
    wide = write_archive(
        tmp_path / "wide.npz",
        **good(
            x_train=np.full((30, 8, 8), 300, np.uint16), x_test=np.full((6, 8, 8), 300, np.uint16)
        ),  # fmt: skip
    )
    assert_one_line_error(cli("eval", DIGITS, "--dataset", wide), "pixels reach 300")
    many = np.arange(30) % 12
    classes = write_archive(
        tmp_path / "classes.npz",
        **good(
            x_train=np.ones((30, 8, 8), np.uint8),
            x_test=np.ones((6, 8, 8), np.uint8),
            y_train=many,
            y_test=many[:6],
        ),  # fmt: skip
    )
    assert_one_line_error(cli("eval", DIGITS, "--dataset", classes), "the model has 10 classes")


def test_every_command_gives_the_digits_results_on_the_archive(tmp_path, digits_archive):
    """train, export, eval and estimate on the archive equal the same commands on digits."""
    runs = {}
    for name, dataset in (("digits", "digits"), ("archive", str(digits_archive))):
        out = tmp_path / name
        train = cli("train", "--dataset", dataset, "--arch", "64-32-10", "--epochs", "3",
                    "--threads", "1", "--out", out / "run", "--quiet", "--json")  # fmt: skip
        assert train.returncode == 0, train.stderr
        # export finds the archive the checkpoint names; eval the one the model names.
        export = cli("export", out / "run" / "checkpoint.pt", "-o", out / "m.bchw", "--json")
        assert export.returncode == 0, export.stderr
        evaluate = cli("eval", out / "m.bchw", "--dump", out / "dump.npz", "--json")
        assert evaluate.returncode == 0, evaluate.stderr
        estimate = cli("estimate", out / "m.bchw", "--analytic", "--dataset", dataset,
                       "-o", out / "est", "--json")  # fmt: skip
        assert estimate.returncode == 0, estimate.stderr
        runs[name] = (train.json(), export.json(), evaluate.json(), estimate.json(), out)
    (t1, x1, e1, s1, o1), (t2, x2, e2, s2, o2) = runs["digits"], runs["archive"]
    for key in ("best_epoch", "validation_error", "test_error"):
        assert t1[key] == t2[key]
    assert x1["layers"] == x2["layers"]  # the same integer model but for its provenance
    m1, m2 = (intmodel.load(o / "m.bchw") for o in (o1, o2))
    for a, b in zip(m1.layers, m2.layers, strict=True):
        assert np.array_equal(a.weights, b.weights) and np.array_equal(a.offset, b.offset)
    assert m2.provenance["dataset"] == str(digits_archive)
    assert (e1["accuracy"], e1["saturation"]) == (e2["accuracy"], e2["saturation"])
    with np.load(o1 / "dump.npz") as d1, np.load(o2 / "dump.npz") as d2:
        assert np.array_equal(d1["scores"], d2["scores"])
    assert s1["accuracy"]["correct"] == s2["accuracy"]["correct"]
    assert s1["binary"] == s2["binary"]


@pytest.mark.cosim
@pytest.mark.slow
def test_cosim_on_the_archive(tmp_path, digits_archive):
    """The same design through the same build: the archive's images give the digits' outputs
    (the demo on an archive: tests/test_demo.py)."""
    out = tmp_path / "cosim"
    a = cli(
        "cosim", DIGITS, "--limit", "40", "-o", out, "--pe", "8,8,1", "--simd", "8,8,8", "--json"
    )
    b = cli(
        "cosim",
        DIGITS,
        "--dataset",
        digits_archive,
        "--limit",
        "40",
        "-o",
        out,
        "--pe",
        "8,8,1",
        "--simd",
        "8,8,8",
        "--json",
    )
    assert a.returncode == b.returncode == 0, b.stderr
    for key in ("images", "mismatches", "accuracy", "latency_cycles"):
        assert a.json()[key] == b.json()[key]
    assert "generated earlier" in b.stdout  # one design, one build


def test_archives_with_empty_or_foreign_members(tmp_path):
    empty = write_archive(tmp_path / "empty.npz", **good(x_train=np.zeros((30, 0), np.uint8)))
    with pytest.raises(BchwError, match=re.escape("x_train holds no pixels (shape [30, 0])")):
        load_archive(empty)
    # A member named like an array whose bytes are not .npy data.
    foreign = tmp_path / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("x_train.npy", b"not numpy at all")
    with pytest.raises(BchwError, match="not a readable .npz archive|not a numpy array"):
        load_archive(foreign)


def test_a_model_recording_no_usable_dataset(tmp_path, shipped_digits):
    """Provenance that names no data set as a string is refused in one line."""
    import dataclasses

    for recorded in (5, ["digits"], None):
        provenance = dict(shipped_digits.provenance, dataset=recorded)
        path = tmp_path / "odd.bchw"
        intmodel.save(dataclasses.replace(shipped_digits, provenance=provenance), path)
        assert_one_line_error(cli("eval", path), "does not name its dataset: pass --dataset")
        assert cli("eval", path, "--dataset", "digits").returncode == 0


def npy_member(header: str, data: bytes = b"") -> bytes:
    """A .npy file (format 1.0) with the header text given, padded as numpy pads it."""
    text = header.encode("latin1")
    text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "x_train, fragment",
    [
        # numpy parses the header with ast: a tokenizer error, an expression, a huge promise
        (npy_member("{'descr': '|u1', 'fortran_order': False, 'shape': ((30, 4, 4), }"),
         "its member x_train has no valid .npy header"),
        (npy_member("{'descr': '|u1', 'fortran_order': False, 'shape': (10**9, 4), }"),
         "its member x_train has no valid .npy header"),
        (npy_member("{'descr': '|u1', 'fortran_order': False, 'shape': (10000000000000, 8, 8), }",
                    b"x" * 100),
         "header promises 640,000,000,000,000 bytes of data, the member holds 100"),
        (npy_bytes(np.ones((30, 4, 4), np.uint8))[:-10],
         "header promises 480 bytes of data, the member holds 470"),
        (npy_member("{'descr': '|O', 'fortran_order': False, 'shape': (30, 4, 4), }"),
         "holds Python objects"),
    ],
)  # fmt: skip
def test_hostile_members_are_refused_before_numpy_reads_them(tmp_path, x_train, fragment):
    path = tmp_path / "hostile.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in good().items():
            zf.writestr(f"{key}.npy", x_train if key == "x_train" else npy_bytes(value))
    with pytest.raises(BchwError, match=re.escape(fragment)):
        load_archive(path)
    assert_one_line_error(cli("eval", DIGITS, "--dataset", path), fragment, str(path))


def test_an_empty_file_and_arrays_larger_than_memory(tmp_path, monkeypatch):
    from bchw.core import data

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert_one_line_error(cli("eval", DIGITS, "--dataset", empty), "is empty, not an .npz")
    # A compressed archive can promise more than the machine holds: refused before reading.
    path = write_archive(tmp_path / "good.npz", **good())
    monkeypatch.setattr(data, "physical_memory", lambda: 500)  # the arrays take 864 bytes
    with pytest.raises(BchwError, match="more than this machine's"):
        load_archive(path)


def test_data_on_another_pixel_scale_than_the_model_was_trained_on(tmp_path, digits):
    """The digits model takes pixels 0..16: the same images scaled to 0..240, or an archive
    that states 0..255, would run without error but mean something else."""
    shape = (-1, 8, 8)
    arrays = dict(
        x_train=digits.train.images.reshape(shape), y_train=digits.train.labels,
        x_test=digits.test.images.reshape(shape), y_test=digits.test.labels,
    )  # fmt: skip
    scaled = write_archive(
        tmp_path / "scaled.npz", **{k: v * 15 if k[0] == "x" else v for k, v in arrays.items()}
    )
    assert_one_line_error(
        cli("eval", DIGITS, "--dataset", scaled), "pixels of up to 240", "pixels of 0..16"
    )
    stated = write_archive(tmp_path / "stated.npz", **arrays, pixel_max=np.uint8(255))
    assert_one_line_error(
        cli("eval", DIGITS, "--dataset", stated), "holds pixels of 0..255", "pixels of 0..16"
    )
    same = write_archive(tmp_path / "same.npz", **arrays, pixel_max=np.uint8(16))
    assert cli("eval", DIGITS, "--dataset", same).returncode == 0
    dim = write_archive(tmp_path / "dim.npz", **{k: v // 2 for k, v in arrays.items()})
    assert cli("eval", DIGITS, "--dataset", dim).returncode == 0  # no pixel_max: 0..8 fits


def test_export_calibrates_only_on_data_of_the_checkpoints_scale(tmp_path, short_run, digits):
    scaled = write_archive(
        tmp_path / "scaled.npz",
        x_train=digits.train.images * 15, y_train=digits.train.labels,
        x_test=digits.test.images * 15, y_test=digits.test.labels,
    )  # fmt: skip
    result = cli("export", short_run.checkpoint, "-o", tmp_path / "m.bchw", "--dataset", scaled)
    assert_one_line_error(result, "the checkpoint was trained on pixels of 0..16")
    assert not (tmp_path / "m.bchw").exists()


def test_a_model_naming_a_file_that_is_no_archive(tmp_path, shipped_digits):
    import dataclasses

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK broken")
    for recorded, fragment in (
        (str(text), "neither a built-in one (digits, mnist, cifar10, svhn) nor an .npz archive"),
        (str(broken), f"names the archive it was trained on, but {broken} is not a readable"),
    ):
        provenance = dict(shipped_digits.provenance, dataset=recorded, dataset_sha256="")
        path = tmp_path / "odd.bchw"
        intmodel.save(dataclasses.replace(shipped_digits, provenance=provenance), path)
        assert_one_line_error(cli("eval", path), fragment, f"the model {path}")
