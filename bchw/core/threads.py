"""How many PyTorch CPU threads a training run uses: measured, unless the user says.

Beside another job, threads that wait for each other at every operation lose their turn:
on the project's 2-core machines two threads took 5 times as long per step as one for the
digits model, twice as long for MNIST's, while on a quiet machine two are up to 1.4 times as
fast for large models (docs/benchmarks.md, "Training threads"). No fixed rule is right for
both, so a run measures a few training steps of its own model with one thread and with every
core it may use, and takes every core only where that is clearly (15 %) faster; ``--threads
N`` (or ``OMP_NUM_THREADS``) is the user's own choice. Float training is bit for bit only at
the same thread count: the choice is printed and recorded in the training log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from bchw.core.arch import Network
from bchw.core.nn import LOSSES, BinaryConnectNet

PROBE_STEPS = 6
PROBE_WARMUP = 2
PROBE_SEED = 12345
CLEAR_MARGIN = 0.15  # every core must be this much faster than one thread


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    measured: dict[int, float]  # threads -> seconds per step; empty when the user chose
    source: str = "as asked"

    def describe(self) -> str:
        if not self.measured:
            return f"{self.threads} torch thread{'s' if self.threads > 1 else ''} ({self.source})"
        times = ", ".join(f"{n}: {1e3 * s:.1f} ms" for n, s in sorted(self.measured.items()))
        plural = "s" if self.threads > 1 else ""
        return f"{self.threads} torch thread{plural} (measured per step, threads {times})"


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _seconds_per_step(arch: Network | list[int], batch: int, loss: str, threads: int) -> float:
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    with torch.random.fork_rng(devices=[]):
        model = BinaryConnectNet(arch)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    x = torch.rand(batch, model.network.input_features, generator=generator)
    y = torch.randint(0, model.network.num_classes, (batch,), generator=generator)
    loss_fn = LOSSES[loss]
    start = 0.0
    for step in range(PROBE_WARMUP + PROBE_STEPS):
        if step == PROBE_WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        model.clip_()
    return (time.perf_counter() - start) / PROBE_STEPS


def choose_threads(
    arch: Network | list[int], batch: int, loss: str, requested: int = 0
) -> ThreadChoice:
    """``requested`` threads, else ``$OMP_NUM_THREADS`` when set, else (0) the faster of one
    thread and every available core for a few steps of this model; sets PyTorch's thread count
    to the choice. The probe uses its own random generators and leaves PyTorch's global one as
    it was."""
    if requested:
        torch.set_num_threads(requested)
        return ThreadChoice(requested, {})
    from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment.isdigit() and int(from_environment) > 0:
        torch.set_num_threads(int(from_environment))
        return ThreadChoice(int(from_environment), {}, "from OMP_NUM_THREADS")
    cores = available_cores()
    if cores == 1:
        torch.set_num_threads(1)
        return ThreadChoice(1, {}, "the one core this process may use")
    measured = {n: _seconds_per_step(arch, batch, loss, n) for n in (1, cores)}
    # More threads only where clearly faster: near a tie one thread costs nothing, loses no
    # turn at a barrier beside another job, and a noisy probe does not flip the choice (and
    # so the model) from one run to the next.
    best = cores if measured[cores] < (1 - CLEAR_MARGIN) * measured[1] else 1
    torch.set_num_threads(best)
    return ThreadChoice(best, measured)
