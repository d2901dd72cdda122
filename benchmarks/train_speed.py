"""Seconds per training epoch: BinaryConnect against a plain float MLP of the same shape.

Both train on the same MNIST training split (50,000 images, batch 100, Adam, square hinge loss,
batch norm after every layer) in one process, one after the other, for ``--epochs`` epochs
each; the first epoch of each is a warm-up and not counted. The float baseline is a plain
``torch.nn.Sequential`` (Linear, BatchNorm1d, ReLU) with no clipping and no binarization: what
BinaryConnect costs over ordinary training. Deterministic and stochastic BinaryConnect run
bchw's own training step (binarize, forward, backward, Adam with per-layer learning-rate scale,
clip). Usage (from the repository root)::

    .venv/bin/python benchmarks/train_speed.py --data-dir ../shared/data/mnist

Prints one line per model and the ratios; ``--json`` adds a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bchw.core.data import load_dataset  # noqa: E402
from bchw.core.nn import BinaryConnectMLP, square_hinge_loss  # noqa: E402
from bchw.core.options import parse_arch  # noqa: E402
from bchw.core.train import to_model_input  # noqa: E402

ARCH = "784-1024-1024-1024-10"


def plain_mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, eps=1e-4, momentum=0.15)]
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def epoch_seconds(kind: str, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int):
    torch.manual_seed(0)
    sizes = parse_arch(ARCH)
    if kind == "float":
        model = plain_mlp(sizes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        clip = None
    else:
        model = BinaryConnectMLP(sizes, kind, 0.15, 1e-4)
        optimizer = torch.optim.Adam(model.param_groups(1e-3))
        clip = model.clip_
    model.train()
    n_batches = len(y) // batch
    times = []
    for _ in range(epochs):
        order = torch.randperm(len(y))
        start = time.perf_counter()
        for b in range(n_batches):
            idx = order[b * batch : (b + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            loss = square_hinge_loss(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            if clip is not None:
                clip()
        times.append(time.perf_counter() - start)
    return times[1:] if len(times) > 1 else times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="MNIST folder (four IDX files)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model, first not counted")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dataset = load_dataset("mnist", args.data_dir)
    x = to_model_input(dataset.train.images, dataset.input_scale)
    y = torch.from_numpy(dataset.train.labels)
    print(
        f"{ARCH}, {len(y)} training images, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    results = {}
    for kind in ("float", "deterministic", "stochastic"):
        times = epoch_seconds(kind, x, y, args.epochs, args.batch_size)
        results[kind] = {"median_s": statistics.median(times), "epochs_s": times}
        label = "plain float MLP" if kind == "float" else f"BinaryConnect {kind}"
        print(f"{label:<28} {statistics.median(times):6.2f} s per epoch (median of {len(times)})")
    base = results["float"]["median_s"]
    for kind in ("deterministic", "stochastic"):
        results[kind]["ratio_to_float"] = round(results[kind]["median_s"] / base, 3)
        print(f"{kind} / float {results[kind]['ratio_to_float']:.2f}x")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
