"""Seconds per BinaryConnect training step with one and with two torch threads, for networks
from the digits model to MNIST's: what ``bchw train``'s thread choice (bchw/core/threads.py)
is about. Run it on a quiet machine and beside another job (docs/benchmarks.md)::

    .venv/bin/python benchmarks/train_threads.py
    python3 -c 'while True: pass' & .venv/bin/python benchmarks/train_threads.py; kill %1
"""

from __future__ import annotations

import argparse
import time

import torch

from bchw.core.nn import BinaryConnectMLP, square_hinge_loss

NETWORKS = ("64-256-256-10", "64-1024-1024-10", "784-256-256-10", "784-512-512-10",
            "784-1024-1024-1024-10")  # fmt: skip


def seconds_per_step(sizes: list[int], threads: int, steps: int, batch: int = 100) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BinaryConnectMLP(sizes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    x = torch.rand(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))
    start = 0.0
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()
        optimizer.zero_grad()
        square_hinge_loss(model(x), y).backward()
        optimizer.step()
        model.clip_()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    for network in NETWORKS:
        sizes = [int(s) for s in network.split("-")]
        times = {n: seconds_per_step(sizes, n, args.steps) for n in counts}
        cells = ", ".join(
            f"{n} thread{'s' if n > 1 else ''}: {1e3 * t:.1f} ms" for n, t in times.items()
        )
        print(f"{network:>24}  {cells}", flush=True)


if __name__ == "__main__":
    main()
