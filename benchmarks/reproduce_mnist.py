"""Reproduce the paper's permutation-invariant MNIST MLP (Courbariaux et al. 2015, Table 2).

For every binarization and seed: ``bchw train`` (784-1024-1024-1024-10, batch norm, square hinge
loss, Adam with exponential decay, best-validation checkpoint), ``bchw export`` (8-bit
activations, K = 2) and ``bchw eval`` on the 10,000 test images, all through the command line so
that docs/reproduction.md can quote the exact commands. Runs already finished in ``--out`` are
reused. Then: a table of test errors (float model with binary weights, stochastic also with real
weights, integer model) with mean and standard deviation over seeds beside the paper's, and the
learning curves of every run in one PNG.

    .venv/bin/python benchmarks/reproduce_mnist.py --data-dir ../shared/data/mnist --threads 1

On this project's 2-core CPU machines an epoch takes about 8 s with both cores (12 s with
one); ``--threads`` sets the torch threads of the training processes. Where a GPU exists,
``--device cuda --parallel N`` trains N runs at once on it (each a process of its own):

    python benchmarks/reproduce_mnist.py --data-dir DIR --device cuda --parallel 5 \
        --seeds 3,4 --stochastic-seeds 0,1,2 --out build/repro-gpu
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BCHW = [sys.executable, "-m", "bchw"]
PAPER = {  # Table 2, test error (%), mean ± std
    "deterministic": (1.29, 0.08),
    "stochastic": (1.18, 0.04),
    "none": (1.30, 0.04),
}
SHORT = {"deterministic": "det", "stochastic": "sto", "none": "float"}


def announce(cmd: list) -> None:
    """Print a ``[python, -m, bchw, ...]`` command as the ``bchw`` command line it runs."""
    print(f"$ bchw {' '.join(str(c) for c in cmd[3:])}", flush=True)


def run(cmd: list, env: dict[str, str]) -> str:
    announce(cmd)
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def train_all(jobs: list[tuple[list, Path, Path]], env: dict[str, str], parallel: int) -> None:
    """Run the training commands, ``parallel`` at a time; mark each finished run ``done``.

    After a failure no new run starts, the running ones finish (and are marked), then the
    script stops naming every failed run; an interrupt stops the running trainings too.
    """
    waiting, running, failed = list(jobs), [], []
    try:
        while running or (waiting and not failed):
            while waiting and not failed and len(running) < parallel:
                cmd, run_dir, log = waiting.pop(0)
                announce(cmd)
                handle = log.open("w")
                process = subprocess.Popen(
                    [str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, env=env,
                    cwd=REPO,
                )  # fmt: skip
                running.append((process, run_dir, log, handle))
            time.sleep(1)
            for job in [job for job in running if job[0].poll() is not None]:
                running.remove(job)
                process, run_dir, log, handle = job
                handle.close()
                if process.returncode == 0:
                    (run_dir / "done").write_text("")
                else:
                    tail = log.read_text().strip().splitlines()[-1:]
                    failed.append(f"{run_dir.name} ({process.returncode}): {tail}")
    finally:
        for process, _, _, handle in running:  # only left on an interrupt or an error here
            process.terminate()
            process.wait()
            handle.close()
    if failed:
        sys.exit("training failed: " + "; ".join(failed))


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="build/repro", type=Path)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the deterministic runs")
    parser.add_argument(
        "--stochastic-seeds", default="0", help="seeds of the stochastic runs ('' for none)"
    )
    parser.add_argument("--threads", type=int, help="torch threads per training (default: all)")
    parser.add_argument("--device", default="cpu", help="bchw train --device (default: cpu)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="training runs at a time (default: 1; on the CPU each gets cores / N threads "
        "unless --threads says otherwise)",
    )
    args = parser.parse_args()
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    env = dict(os.environ)
    threads = args.threads
    if not threads and args.parallel > 1 and args.device == "cpu":
        threads = max(1, (os.cpu_count() or 1) // args.parallel)  # no oversubscription
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    args.out.mkdir(parents=True, exist_ok=True)
    seeds_of = {
        "deterministic": [int(s) for s in args.seeds.split(",") if s],
        "stochastic": [int(s) for s in args.stochastic_seeds.split(",") if s],
    }
    modes = [mode for mode, seeds in seeds_of.items() if seeds]
    data = ["--data-dir", args.data_dir]
    runs = [(mode, seed, args.out / f"{SHORT[mode]}-s{seed}") for mode in modes
            for seed in seeds_of[mode]]  # fmt: skip
    jobs = [
        ([*BCHW, "train", "--dataset", "mnist", *data, "--binarization", mode, "--epochs",
          args.epochs, "--seed", seed, "--device", args.device, "-o", run_dir, "--json"],
         run_dir, args.out / f"{run_dir.name}.log")
        for mode, seed, run_dir in runs
        if not (run_dir / "done").is_file()
    ]  # fmt: skip
    train_all(jobs, env, args.parallel)
    rows = []
    for mode, seed, run_dir in runs:
        model = run_dir / "mnist.bchw"
        run([*BCHW, "export", run_dir / "checkpoint.pt", "-o", model, *data], env)
        ev = last_json(
            run([*BCHW, "eval", model, *data, "--checkpoint", run_dir / "checkpoint.pt",
                 "--json"], env)
        )  # fmt: skip
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        best = min(log, key=lambda r: (r["validation_error"], r["epoch"]))
        rows.append(
            {
                "mode": mode,
                "seed": seed,
                "epochs": len(log),
                "best_epoch": best["epoch"],
                "seconds_per_epoch": statistics.mean(r["epoch_seconds"] for r in log),
                "float_error": 100 * (1 - ev["float_accuracy"]),
                "float_error_real": (
                    100 * (1 - ev["float_accuracy_real_weights"])
                    if "float_accuracy_real_weights" in ev
                    else None
                ),
                "integer_error": 100 * (1 - ev["accuracy"]),
                "model_sha256": ev["model_sha256"],
                "checkpoint": str(run_dir / "checkpoint.pt"),
            }
        )
    summary = {"runs": rows, "modes": {}}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        agg = {}
        for key in ("float_error", "float_error_real", "integer_error"):
            values = [r[key] for r in mine if r[key] is not None]
            if values:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                agg[key] = {"mean": statistics.mean(values), "std": spread, "n": len(values)}
        agg["paper"] = {"mean": PAPER[mode][0], "std": PAPER[mode][1]}
        summary["modes"][mode] = agg
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = markdown(summary)
    (args.out / "summary.md").write_text(table)
    print(table)
    curves(rows, args.out / "learning_curves.png", args.out)
    print(f"summary   {args.out / 'summary.md'}, {args.out / 'summary.json'}")
    print(f"curves    {args.out / 'learning_curves.png'}")
    return 0


def markdown(summary: dict) -> str:
    def cell(agg: dict | None) -> str:
        if not agg:
            return "-"
        if agg["n"] == 1:
            return f"{agg['mean']:.2f} % (n=1)"
        return f"{agg['mean']:.2f} ± {agg['std']:.2f} % (n={agg['n']})"

    lines = [
        "| binarization | float, binary weights | float, real weights | integer (hardware) | "
        "paper |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, agg in summary["modes"].items():
        paper = agg["paper"]
        lines.append(
            f"| {mode} | {cell(agg.get('float_error'))} | {cell(agg.get('float_error_real'))} | "
            f"{cell(agg.get('integer_error'))} | {paper['mean']:.2f} ± {paper['std']:.2f} % |"
        )
    lines += ["", "| run | best epoch | s/epoch | float | float (real w.) | integer |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in summary["runs"]:
        real = "-" if r["float_error_real"] is None else f"{r['float_error_real']:.2f} %"
        lines.append(
            f"| {r['mode']} seed {r['seed']} | {r['best_epoch']} of {r['epochs']} | "
            f"{r['seconds_per_epoch']:.1f} | {r['float_error']:.2f} % | {real} | "
            f"{r['integer_error']:.2f} % |"
        )
    return "\n".join(lines) + "\n"


def curves(rows: list[dict], path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = {"deterministic": "tab:blue", "stochastic": "tab:orange", "none": "tab:green"}
    styles = ["-", "--", ":"]
    for r in rows:
        log_path = out / f"{SHORT[r['mode']]}-s{r['seed']}" / "train_log.jsonl"
        log = [json.loads(line) for line in log_path.read_text().splitlines()]
        epochs = [e["epoch"] for e in log]
        style = dict(color=colors[r["mode"]], linestyle=styles[r["seed"] % 3], linewidth=1)
        label = f"{r['mode']} seed {r['seed']}"
        ax_val.plot(epochs, [100 * e["validation_error"] for e in log], label=label, **style)
        ax_test.plot(epochs, [100 * e["test_error_binary"] for e in log], label=label, **style)
        if r["mode"] == "stochastic":  # the paper's test-time choice: real weights
            real = dict(style, linestyle="-.")
            ax_test.plot(
                epochs, [100 * e["test_error"] for e in log], label=f"{label}, real w.", **real
            )
    for mode, (mean, _) in PAPER.items():
        if any(r["mode"] == mode for r in rows):
            ax_test.axhline(
                mean, color=colors[mode], alpha=0.4, linewidth=3, label=f"paper, {mode}"
            )
    ax_val.set(
        title="validation error (stochastic: real weights)",
        xlabel="epoch",
        ylabel="error (%)",
        ylim=(0.8, 3.0),
    )
    ax_test.set(title="test error (binary weights unless marked)", xlabel="epoch")
    ax_test.legend(fontsize=7)
    for ax in (ax_val, ax_test):
        ax.grid(True, alpha=0.3)
    fig.suptitle("BinaryConnect 784-1024-1024-1024-10 on MNIST")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    path.write_bytes(buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
