"""``bchw sweep-bits``: what each activation bit and each scale term costs in accuracy.

The integer model is exported again from the float checkpoint for every pair (activation bits B,
scale terms K) and run with the bit-exact reference on a split. Export and reference are the
ones ``bchw export`` and ``bchw eval`` use, so a row of the table is exactly the accuracy of the
model ``bchw export --act-bits B --scale-terms K`` would write.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bchw.core import intmodel, reference
from bchw.core.checkpoint import Checkpoint
from bchw.core.data import Split
from bchw.core.export import ExportOptions, calibration_images, export_checkpoint
from bchw.core.intmodel import MAX_HIDDEN_BITS, MAX_SCALE_TERMS
from bchw.errors import BchwError
from bchw.outputs import write_bytes_atomic

DEFAULT_BITS = tuple(range(4, 13))
DEFAULT_TERMS = (1, 2, 3)


@dataclass(frozen=True)
class PrecisionPoint:
    """One exported model's accuracy."""

    act_bits: int
    scale_terms: int
    correct: int
    images: int
    sha256: str

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "act_bits": self.act_bits,
            "scale_terms": self.scale_terms,
            "correct": self.correct,
            "images": self.images,
            "accuracy": self.accuracy,
            "error_percent": round(100 * (1 - self.accuracy), 4),
            "model_sha256": self.sha256,
        }


def check_grid(bits: Sequence[int], terms: Sequence[int]) -> None:
    """Refuse bit widths and term counts the integer model cannot hold."""
    if not bits or not terms:
        raise BchwError("give at least one activation width and one scale-term count")
    bad_bits = [b for b in bits if not 2 <= b <= MAX_HIDDEN_BITS]
    if bad_bits:
        # Output scores are signed with as many bits as the activations: one bit is no score.
        raise BchwError(f"activation bits must lie in 2..{MAX_HIDDEN_BITS}, got {bad_bits[0]}")
    bad_terms = [k for k in terms if not 1 <= k <= MAX_SCALE_TERMS]
    if bad_terms:
        raise BchwError(f"scale terms K must lie in 1..{MAX_SCALE_TERMS}, got {bad_terms[0]}")


def precision_point(
    checkpoint: Checkpoint,
    calibration: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    input_bits: int,
    act_bits: int,
    scale_terms: int,
) -> PrecisionPoint:
    """One (bits, terms) pair: export, run the reference, count (a job of
    :func:`bchw.jobs.run_jobs`: it runs in a worker process)."""
    import multiprocessing

    import torch

    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)  # workers run side by side: one thread each
    options = ExportOptions(act_bits=act_bits, scale_terms=scale_terms, input_bits=input_bits)
    model = export_checkpoint(checkpoint, calibration, options)
    result = reference.run(model, images)
    correct = int(np.count_nonzero(result.predicted == labels))
    # The hash of the file `bchw export` would write: the point names its model.
    digest = hashlib.sha256(intmodel.to_bytes(model)).hexdigest()
    return PrecisionPoint(act_bits, scale_terms, correct, len(labels), digest)


def _point_key(checkpoint: Checkpoint, calibration, split: Split, input_bits, b, k) -> str:
    """What a point depends on: the checkpoint, the calibration and test images, the widths."""
    digest = hashlib.sha256(b"bchw-precision-point-1")
    digest.update(checkpoint.sha256.encode())
    for array in (calibration, split.images, split.labels):
        digest.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    digest.update(f"{input_bits},{b},{k}".encode())
    return digest.hexdigest()[:24]


def sweep_bits(
    checkpoint: Checkpoint,
    train_images: np.ndarray,
    split: Split,
    bits: Sequence[int] = DEFAULT_BITS,
    terms: Sequence[int] = DEFAULT_TERMS,
    *,
    input_bits: int = 8,
    progress: Callable[[int, int, str], None] | None = None,
    runner: Any = None,
    cache_dir: Path | None = None,
) -> list[PrecisionPoint]:
    """Export and evaluate every (bits, terms) pair; rows ordered by terms, then bits.

    The pairs run on ``runner`` (a :class:`bchw.jobs.Runner`: local processes or a Dask
    cluster; in this process when None). With ``cache_dir`` each point is written there as it
    finishes and read back on a rerun, so an interrupted sweep resumes where it stopped."""
    from bchw.jobs import Runner, run_jobs

    check_grid(bits, terms)
    pairs = [(b, k) for k in sorted(set(terms)) for b in sorted(set(bits))]
    # The calibration subset is the same for every pair; pick it once.
    calibration = calibration_images(train_images, ExportOptions().calibration_images)
    found: dict[tuple[int, int], PrecisionPoint] = {}
    paths = {}
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for b, k in pairs:
            key = _point_key(checkpoint, calibration, split, input_bits, b, k)
            paths[b, k] = Path(cache_dir) / f"point-{key}.json"
            cached = _read_point(paths[b, k])
            if cached is not None:
                found[b, k] = cached
    todo = [pair for pair in pairs if pair not in found]
    total = len(pairs)

    def done(index: int, point: PrecisionPoint) -> None:
        found[todo[index]] = point
        if cache_dir is not None:
            write_bytes_atomic(paths[todo[index]], json.dumps(point.to_json()).encode())
        if progress is not None:
            progress(len(found), total, f"{point.act_bits} bits, K = {point.scale_terms}")

    if progress is not None:
        progress(len(found), total, "from the cache" if found else "starting")
    common = (checkpoint, calibration, split.images, split.labels, input_bits)
    run_jobs(precision_point, common, todo, runner or Runner(), done)
    if progress is not None:
        progress(total, total, "done")
    return [found[pair] for pair in pairs]


def _read_point(path: Path) -> PrecisionPoint | None:
    """A cached point, or None (absent, or written by something else: computed again)."""
    try:
        data = json.loads(path.read_text())
        return PrecisionPoint(
            int(data["act_bits"]),
            int(data["scale_terms"]),
            int(data["correct"]),
            int(data["images"]),
            str(data["model_sha256"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def markdown_table(points: Sequence[PrecisionPoint], float_accuracy: float | None) -> str:
    """Test error (%) with one row per activation width and one column per K."""
    bits = sorted({p.act_bits for p in points})
    terms = sorted({p.scale_terms for p in points})
    cell = {(p.act_bits, p.scale_terms): p for p in points}
    lines = [
        "| activation bits | " + " | ".join(f"K = {k}" for k in terms) + " |",
        "|---:|" + "---:|" * len(terms),
    ]
    for b in bits:
        row = [f"{100 * (1 - cell[b, k].accuracy):.2f} %" for k in terms]
        lines.append(f"| {b} | " + " | ".join(row) + " |")
    text = "Integer-model test error (bit-exact reference):\n\n" + "\n".join(lines) + "\n"
    if float_accuracy is not None:
        text += f"\nFloat model (binary weights): {100 * (1 - float_accuracy):.2f} %\n"
    return text


def plot(points: Sequence[PrecisionPoint], float_accuracy: float | None, path: Path, title: str):
    """Error against activation bits, one line per K, the float model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k in sorted({p.scale_terms for p in points}):
        row = sorted((p for p in points if p.scale_terms == k), key=lambda p: p.act_bits)
        ax.plot(
            [p.act_bits for p in row],
            [100 * (1 - p.accuracy) for p in row],
            marker="o",
            label=f"integer, K = {k}",
        )
    if float_accuracy is not None:
        ax.axhline(
            100 * (1 - float_accuracy), color="grey", linestyle="--", label="float (binary weights)"
        )
    ax.set(xlabel="activation bits", ylabel="test error (%)", title=title)
    ax.set_xticks(sorted({p.act_bits for p in points}))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def write_report(
    points: Sequence[PrecisionPoint],
    float_accuracy: float | None,
    out_dir: Path,
    title: str,
    summary: dict[str, Any],
) -> dict[str, Path]:
    """precision.md, precision.json and precision.png in ``out_dir``."""
    paths = {
        "markdown": out_dir / "precision.md",
        "json": out_dir / "precision.json",
        "plot": out_dir / "precision.png",
    }
    text = f"# {title}\n\n" + markdown_table(points, float_accuracy)
    write_bytes_atomic(paths["markdown"], text.encode())
    write_bytes_atomic(paths["json"], (json.dumps(summary, indent=1) + "\n").encode())
    plot(points, float_accuracy, paths["plot"], title)
    return paths


__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_TERMS",
    "PrecisionPoint",
    "check_grid",
    "markdown_table",
    "plot",
    "sweep_bits",
    "write_report",
]
