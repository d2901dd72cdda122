"""Training: accuracy of a short run, reproducibility, the outputs it writes, the schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bchw.core.checkpoint import load_checkpoint
from bchw.core.options import TrainConfig
from bchw.core.reference import run
from bchw.core.train import error_rate, lr_at_epoch, resolve_device, train
from bchw.errors import BchwError
from tests.conftest import SHORT_TRAINING


def test_short_digits_training_reaches_90_percent(short_run, short_checkpoint, short_model, digits):
    float_accuracy = 1 - error_rate(short_checkpoint.model, digits.test, digits.input_scale)
    assert float_accuracy >= 0.90
    assert 1 - short_run.test_error == pytest.approx(float_accuracy)
    integer = run(short_model, digits.test.images)
    assert np.mean(integer.predicted == digits.test.labels) >= 0.90


def test_outputs_log_curve_and_checkpoint(short_run):
    lines = short_run.log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == list(range(1, SHORT_TRAINING.epochs + 1))
    for key in ("lr", "train_loss", "validation_error", "test_error", "epoch_seconds"):
        assert all(key in r for r in records)
    best = min(records, key=lambda r: (r["validation_error"], r["epoch"]))
    assert short_run.best_epoch == best["epoch"]
    assert short_run.curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = load_checkpoint(short_run.checkpoint)
    assert checkpoint.epoch == best["epoch"]


def test_same_seed_gives_the_same_model(tmp_path, digits, short_checkpoint):
    config = TrainConfig(**vars(SHORT_TRAINING))
    result = train(config, digits, tmp_path, progress=False)
    again = load_checkpoint(result.checkpoint)
    for (name, a), b in zip(
        short_checkpoint.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_bytes_do_not_depend_on_string_identity(tmp_path, short_checkpoint):
    # The same training reached from the command line (strings from argv) or from Python
    # (interned literals) must write the same file: pickle would otherwise share equal strings
    # that are one object and repeat those that are not.
    from bchw.core.checkpoint import save_checkpoint

    config = dict(short_checkpoint.config)
    shared = "digits"
    separate = "".join(["dig", "its"])
    assert separate == shared and separate is not shared
    paths = []
    for name, dataset in (("a", shared), ("b", separate)):
        path = tmp_path / f"{name}.pt"
        save_checkpoint(
            path,
            short_checkpoint.model,
            config | {"dataset": shared},
            dataset=dataset,
            input_scale=short_checkpoint.input_scale,
            pixel_max=16,
            epoch=1,
            metrics={"test_error": 0.5},
        )
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_stochastic_training_logs_both_test_time_modes(tmp_path, digits):
    config = TrainConfig(arch="64-32-10", binarization="stochastic", epochs=2, seed=1)
    train(config, digits, tmp_path, progress=False)
    record = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[-1])
    assert {"validation_error_binary", "test_error_binary"} <= set(record)


def test_learning_rate_decays_exponentially_from_start_to_end():
    config = TrainConfig(epochs=10, lr_start=1e-3, lr_end=1e-5)
    assert lr_at_epoch(config, 0) == pytest.approx(1e-3)
    assert lr_at_epoch(config, 5) == pytest.approx(1e-4)
    assert lr_at_epoch(config, 10) == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arch": "65-10"}, "takes 65 inputs"),
        ({"arch": "64-7"}, "ends in 7 outputs"),
        ({"epochs": -1}, "epochs"),
        ({"threads": -2}, "threads"),
        ({"lr_start": -1.0}, "lr-start"),
        ({"binarization": "ternary"}, "binarization"),
        ({"loss": "mse"}, "loss"),
    ],
)
def test_bad_configurations_are_refused(tmp_path, digits, changes, message):
    config = TrainConfig(**{**vars(SHORT_TRAINING), **changes})
    with pytest.raises(BchwError, match=message):
        train(config, digits, tmp_path, progress=False)


@pytest.mark.parametrize(
    "name, message",
    [("tpu", "not a PyTorch device"), ("meta", "not supported"), ("cuda:99", "CUDA device")],
)
def test_unusable_devices_are_refused_before_anything_is_written(tmp_path, digits, name, message):
    out = tmp_path / "run"
    with pytest.raises(BchwError, match=message):
        train(TrainConfig(**vars(SHORT_TRAINING)), digits, out, progress=False, device=name)
    assert not out.exists()


def test_cuda_is_refused_with_the_reason_where_pytorch_sees_none():
    # On a machine with a GPU the same call must succeed; the test asserts either way.
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(BchwError, match=r"sees no CUDA device .*use --device cpu"):
            resolve_device("cuda")


def test_an_explicit_cpu_device_changes_nothing(tmp_path, digits, short_checkpoint):
    config = TrainConfig(**vars(SHORT_TRAINING))
    result = train(config, digits, tmp_path, progress=False, device="cpu:1")
    assert load_checkpoint(result.checkpoint).sha256 == short_checkpoint.sha256
    # A CPU checkpoint records no device: its bytes stay what they were before devices existed.
    assert "device" not in torch.load(result.checkpoint, weights_only=True)


def test_cuda_indices_and_unusable_gpus_are_refused(monkeypatch):
    # Pretend PyTorch sees one GPU: an index past it is refused by name, and plain "cuda" is
    # probed with an allocation, which fails on a machine without one: a one-line error too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(BchwError, match=r"there are 1 CUDA device\(s\)"):
        resolve_device("cuda:1")
    real_empty = torch.empty

    def failing_empty(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable")
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", failing_empty)
    with pytest.raises(BchwError, match="'cuda' cannot be used: CUDA error: all CUDA-capable"):
        resolve_device("cuda")


def test_a_gpu_checkpoint_records_its_device_and_loads_on_the_cpu(tmp_path, short_checkpoint):
    from bchw.core.checkpoint import save_checkpoint

    path = tmp_path / "gpu.pt"
    save_checkpoint(
        path,
        short_checkpoint.model,
        short_checkpoint.config,
        device="cuda:0 (NVIDIA H200)",
        dataset=short_checkpoint.dataset,
        input_scale=short_checkpoint.input_scale,
        pixel_max=short_checkpoint.pixel_max,
        epoch=short_checkpoint.epoch,
        metrics=short_checkpoint.metrics,
    )
    assert torch.load(path, weights_only=True)["device"] == "cuda:0 (NVIDIA H200)"
    loaded = load_checkpoint(path)
    for a, b in zip(
        loaded.model.state_dict().values(),
        short_checkpoint.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_a_cnn_trains_checkpoints_and_loads(cnn_checkpoint):
    assert cnn_checkpoint.model.arch == "1x8x8-8C3-12C3p0-MP2-6C1-24-10"
    assert cnn_checkpoint.config["arch"] == cnn_checkpoint.model.arch
    assert len(cnn_checkpoint.model.linears) == 5


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("1x28x28-8C3-10", "takes 1x28x28 images but digits images are 1x8x8"),
        ("1x8x8-8C3-MP2-7", "ends in 7 outputs"),
    ],
)
def test_cnn_architectures_must_fit_the_images(tmp_path, digits, arch, message):
    config = TrainConfig(dataset="digits", arch=arch, epochs=1, threads=1)
    with pytest.raises(BchwError, match=message):
        train(config, digits, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
