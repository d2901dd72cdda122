"""Time the numpy reference on a data split: ``python benchmarks/reference_speed.py MODEL``.

Loads the model and the data once, then runs the reference ``--repeat`` times over the whole
split and prints the best and median wall time (the figure in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bchw.core import intmodel, reference
from bchw.core.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    model = intmodel.load(args.model)
    split = load_dataset(args.dataset, args.data_dir).split(args.split)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = reference.run(model, split.images)
        times.append(time.perf_counter() - start)
    accuracy = float((result.predicted == split.labels).mean())
    print(
        json.dumps(
            {
                "model": model.arch(),
                "images": len(split),
                "accuracy": accuracy,
                "best_s": round(min(times), 4),
                "median_s": round(statistics.median(times), 4),
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
