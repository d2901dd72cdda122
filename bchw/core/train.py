"""BinaryConnect training: Adam with per-layer learning-rate scales, exponential decay,
clipping after every step, and the best-validation-epoch checkpoint."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bchw.core.checkpoint import save_checkpoint
from bchw.core.data import Dataset, Split
from bchw.core.nn import LOSSES, BinaryConnectNet
from bchw.core.options import TrainConfig
from bchw.core.threads import ThreadChoice, choose_threads
from bchw.errors import BchwError, first_line
from bchw.outputs import make_output_dir, write_bytes_atomic

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
CURVE_NAME = "learning_curve.png"


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    validation_error: float
    test_error: float
    test_error_binary: float
    seconds_per_epoch: float
    checkpoint: Path
    log: Path
    curve: Path
    config: TrainConfig  # as run: architecture, epochs and threads resolved
    threads: ThreadChoice


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names (``cpu``, ``cuda``, ``cuda:N``), checked to be usable."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BchwError(
            f"device {name!r} is not a PyTorch device: use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")  # one CPU device: an index (cpu:1) means nothing more
    if device.type != "cuda":
        raise BchwError(f"device {name!r} is not supported: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise BchwError(
            f"device {name!r}: this PyTorch ({torch.__version__}) sees no CUDA device "
            "(a CPU-only build, or no GPU or driver); use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise BchwError(f"device {name!r}: there are {count} CUDA device(s), numbered from 0")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    try:  # a GPU that is visible can still be busy (exclusive mode), broken or full
        torch.empty(1, device=device)
    except RuntimeError as exc:
        raise BchwError(f"device {name!r} cannot be used: {first_line(exc)}") from None
    return device


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """``lr_start * (lr_end / lr_start) ** (epoch / epochs)``, as the original code decays it."""
    decay = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    return config.lr_start * decay**epoch


def to_model_input(images: np.ndarray, input_scale: float) -> torch.Tensor:
    """Raw uint8 pixels -> the float model's input (``pixel * input_scale``)."""
    return torch.from_numpy(images.astype(np.float32) * np.float32(input_scale))


@torch.no_grad()
def predict(
    model: BinaryConnectNet, split: Split, input_scale: float, batch: int = 2000
) -> np.ndarray:
    """Class predictions of the float model in evaluation mode."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(split), batch):
        x = to_model_input(split.images[start : start + batch], input_scale).to(device)
        out.append(model(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def error_rate(model: BinaryConnectNet, split: Split, input_scale: float) -> float:
    return float(np.mean(predict(model, split, input_scale) != split.labels))


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    progress: bool = True,
    device: str = "cpu",
) -> TrainResult:
    """Train a BinaryConnect MLP; write the checkpoint, log and learning curve to ``out_dir``.

    The checkpoint holds the model of the epoch with the lowest validation error. For stochastic
    binarization, the validation error that selects it uses the paper's real test-time weights
    and the log records the binary-weight errors beside it.

    ``device`` (``cpu``, ``cuda``, ``cuda:N``) is where the model trains. The initial weights
    and the shuffling come from CPU generators whatever the device, so a GPU run starts from
    the same weights and sees the same batches as a CPU run with the same seed; its sums are
    ordered differently, so its weights drift apart within the first epochs, and stochastic
    binarization draws from the device's own random stream (the checkpoint records the
    device). Nothing is written before the model and the data are on the device. On the CPU,
    ``config.threads`` PyTorch threads, or (0) the count :func:`~bchw.core.threads.choose_threads`
    measures; the training log records the count used.
    """
    network = config.check(dataset)
    where = resolve_device(device)
    threads = (
        choose_threads(network, config.batch_size, config.loss, config.threads)
        if where.type == "cpu"
        else ThreadChoice(torch.get_num_threads(), {})
    )
    config = replace(
        config,
        # The canonical string for convolutional networks (32c3 -> 32C3); an MLP's as given.
        arch=config.resolved_arch(dataset) if network.is_mlp else network.text(),
        epochs=config.resolved_epochs(),
        threads=threads.threads,
    )
    torch.manual_seed(config.seed)
    model = BinaryConnectNet(network, config.binarization, config.bn_momentum, config.bn_eps)
    n_train = len(dataset.train)
    if n_train < config.batch_size:
        raise BchwError(f"batch size {config.batch_size} exceeds the {n_train} training images")
    try:
        model.to(where)
        train_x = to_model_input(dataset.train.images, dataset.input_scale).to(where)
        train_y = torch.from_numpy(dataset.train.labels).to(where)
    except RuntimeError as exc:  # out of GPU memory, say
        raise BchwError(f"device {where}: {first_line(exc)}") from None
    out = make_output_dir(out_dir)
    shuffle_gen = torch.Generator().manual_seed(config.seed + 1)
    # Stochastic binarization samples on the device, so its generator lives there (a GPU's
    # random stream is not the CPU's: stochastic runs differ from the first step).
    sample_gen = torch.Generator(device=where).manual_seed(config.seed + 2)
    for linear in model.linears:
        linear.generator = sample_gen
    # On a GPU, the fused Adam kernel: one launch per step instead of several per parameter,
    # which is most of a small MLP's step time there. The CPU keeps PyTorch's default.
    optimizer = torch.optim.Adam(
        model.param_groups(config.lr_start), fused=True if where.type == "cuda" else None
    )
    loss_fn = LOSSES[config.loss]
    paper_mode = "real" if config.binarization == "stochastic" else "binary"

    # Drop the last partial batch: batch norm on a handful of images is noise.
    n_batches = n_train // config.batch_size

    log_path, ckpt_path, curve_path = out / LOG_NAME, out / CHECKPOINT_NAME, out / CURVE_NAME
    records: list[dict] = []
    best: dict | None = None
    started = time.perf_counter()
    for epoch in range(config.epochs):
        lr = lr_at_epoch(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n_train, generator=shuffle_gen).to(where)
        # Summed on the device in float64 (what adding loss.item() to a Python float did), so
        # that a GPU step never waits for the host to read the loss back.
        loss_sum = torch.zeros((), dtype=torch.float64, device=where)
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=not progress or not sys.stderr.isatty(),
            file=sys.stderr,
            unit="batch",
        )
        for b in bar:
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(train_x[idx]), train_y[idx])
            loss.backward()
            optimizer.step()
            model.clip_()
            loss_sum += loss.detach()
            if not bar.disable and (b % 50 == 49 or b == n_batches - 1):
                bar.set_postfix(loss=f"{loss_sum.item() / (b + 1):.4f}")
        total_loss = loss_sum.item()
        train_seconds = time.perf_counter() - start
        if not math.isfinite(total_loss):
            raise BchwError(f"training diverged at epoch {epoch + 1} (loss is not finite)")

        record = {
            "epoch": epoch + 1,
            "threads": config.threads,
            "lr": lr,
            "train_loss": total_loss / n_batches,
            "epoch_seconds": train_seconds,
        }
        model.set_test_weights(paper_mode)
        record["validation_error"] = error_rate(model, dataset.validation, dataset.input_scale)
        record["test_error"] = error_rate(model, dataset.test, dataset.input_scale)
        if paper_mode != "binary":
            model.set_test_weights("binary")
            record["validation_error_binary"] = error_rate(
                model, dataset.validation, dataset.input_scale
            )
            record["test_error_binary"] = error_rate(model, dataset.test, dataset.input_scale)
            model.set_test_weights(paper_mode)
        else:
            record["test_error_binary"] = record["test_error"]
        improved = best is None or record["validation_error"] < best["validation_error"]
        record["best"] = improved
        records.append(record)
        if improved:
            best = record
            model.set_test_weights("binary")
            save_checkpoint(
                ckpt_path,
                model,
                # Without the thread count: the checkpoint of a recipe stays the same file
                # whoever chose its threads (the log records them).
                {k: v for k, v in asdict(config).items() if k != "threads"},
                device=None if where.type == "cpu" else device_description(where),
                dataset=dataset.name,
                dataset_sha256=dataset.sha256,
                input_scale=dataset.input_scale,
                pixel_max=dataset.pixel_max,
                epoch=epoch + 1,
                metrics={k: v for k, v in record.items() if k.endswith("error")},
            )
        write_bytes_atomic(log_path, "".join(json.dumps(r) + "\n" for r in records).encode())
        if progress:
            left = (time.perf_counter() - started) / (epoch + 1) * (config.epochs - epoch - 1)
            print(
                f"epoch {epoch + 1:>3}/{config.epochs}  loss {record['train_loss']:.4f}  "
                f"val err {100 * record['validation_error']:.2f} %  "
                f"test err {100 * record['test_error']:.2f} %  lr {lr:.2e}  "
                f"{train_seconds:.1f} s{_time_left(left)}{'  *best' if improved else ''}",
                file=sys.stderr,
                flush=True,
            )
    assert best is not None
    plot_learning_curve(
        records, curve_path, title=f"{dataset.name} {config.arch} ({config.binarization})"
    )
    return TrainResult(
        best_epoch=best["epoch"],
        validation_error=best["validation_error"],
        test_error=best["test_error"],
        test_error_binary=best["test_error_binary"],
        seconds_per_epoch=float(np.mean([r["epoch_seconds"] for r in records])),
        checkpoint=ckpt_path,
        log=log_path,
        curve=curve_path,
        config=config,
        threads=threads,
    )


def _time_left(seconds: float) -> str:
    """How long the remaining epochs take at the pace so far (nothing after the last)."""
    if seconds == 0:
        return ""
    if seconds < 120:
        return f"  {max(seconds, 1):.0f} s left"
    return f"  {seconds / 60:.0f} min left"


def plot_learning_curve(records: list[dict], path: Path, title: str) -> None:
    """Training loss and validation/test error per epoch, best epoch marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], color="tab:blue")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss", yscale="log")
    ax_err.plot(epochs, [100 * r["validation_error"] for r in records], label="validation")
    ax_err.plot(epochs, [100 * r["test_error"] for r in records], label="test")
    if any("validation_error_binary" in r for r in records):
        ax_err.plot(
            epochs,
            [100 * r["test_error_binary"] for r in records],
            label="test (binary weights)",
            linestyle="--",
        )
    best = min(records, key=lambda r: (r["validation_error"], r["epoch"]))
    ax_err.axvline(best["epoch"], color="grey", linestyle=":", label=f"best epoch {best['epoch']}")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    ax_err.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
