"""``bchw eval``: the integer model's accuracy, the float model's beside it, and dumps."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bchw.core import reference
from bchw.core.data import Split
from bchw.core.intmodel import IntegerModel
from bchw.errors import BchwError
from bchw.outputs import write_bytes_atomic

DUMP_FORMAT = "bchw-eval-dump"
DUMP_VERSION = 1


@dataclass(frozen=True)
class EvalReport:
    """What ``bchw eval --json`` prints."""

    model_sha256: str
    dataset: str
    split: str
    images: int
    correct: int
    seconds: float
    saturation: tuple[reference.LayerSaturation, ...]
    float_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_sha256": self.model_sha256,
            "dataset": self.dataset,
            "split": self.split,
            "images": self.images,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "seconds": round(self.seconds, 4),
            "saturation": [
                {"layer": i, "high": s.high, "low": s.low, "outputs": s.outputs}
                for i, s in enumerate(self.saturation)
            ],
        }
        if "binary" in self.float_accuracy:
            out["float_accuracy"] = self.float_accuracy["binary"]
        if "real" in self.float_accuracy:
            out["float_accuracy_real_weights"] = self.float_accuracy["real"]
        return out


def evaluate(
    model: IntegerModel,
    split: Split,
    *,
    dataset: str,
    split_name: str,
    checkpoint: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalReport, reference.ReferenceResult]:
    """Run the reference on ``split``; with a checkpoint, the float model too. ``progress``:
    the reference's ``(done, total)`` images, after each chunk."""
    start = time.perf_counter()
    result = reference.run(model, split.images, progress)
    seconds = time.perf_counter() - start
    floats: dict[str, float] = {}
    if checkpoint is not None:
        floats = float_accuracies(model, checkpoint, split)
    report = EvalReport(
        model_sha256=model.sha256,
        dataset=dataset,
        split=split_name,
        images=len(split),
        correct=int(np.count_nonzero(result.predicted == split.labels)),
        seconds=seconds,
        saturation=result.saturation,
        float_accuracy=floats,
    )
    return report, result


def float_accuracies(model: IntegerModel | None, checkpoint: Any, split: Split) -> dict[str, float]:
    """The float model's accuracy with binary weights (and real weights when stochastic), on
    pixels scaled as in its training (the checkpoint's ``input_scale``: data whose largest
    pixel is lower than the training data's are still on that scale).

    With an integer model, the checkpoint is first checked against it.
    """
    from bchw.core.train import predict

    float_model = checkpoint.model
    if model is not None:
        _check_checkpoint(model, checkpoint)
    scale = checkpoint.input_scale
    modes = ["binary"] + (["real"] if float_model.binarization == "stochastic" else [])
    out = {}
    for mode in modes:
        float_model.set_test_weights(mode)
        out[mode] = float(np.mean(predict(float_model, split, scale) == split.labels))
    float_model.set_test_weights("binary")
    return out


def _check_checkpoint(model: IntegerModel, checkpoint: Any) -> None:
    if checkpoint.model.arch != model.arch():
        raise BchwError(
            f"checkpoint architecture {checkpoint.model.arch} does not match the integer "
            f"model's {model.arch()}"
        )
    if model.provenance.get("checkpoint_sha256") not in (None, checkpoint.sha256):
        print(
            "bchw: note: this checkpoint is not the one the integer model was exported from",
            file=sys.stderr,
        )


def write_dump(
    path: str | os.PathLike[str],
    model: IntegerModel,
    result: reference.ReferenceResult,
    labels: np.ndarray,
) -> None:
    """Write every image's scores and class as ``.npz`` (no pickled objects; see the docs)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(DUMP_FORMAT),
        version=np.array(DUMP_VERSION, dtype=np.int64),
        model_sha256=np.array(model.sha256),
        index=np.arange(len(labels), dtype=np.int64),
        scores=result.scores.astype(np.int64),
        predicted=result.predicted.astype(np.int64),
        labels=np.asarray(labels, dtype=np.int64),
    )
    write_bytes_atomic(path, buffer.getvalue())
