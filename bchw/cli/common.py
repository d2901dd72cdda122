"""What every command shares: the parser class, option types, the data, folding, jobs and JSON
options, the progress bars, and the checks of inputs and output folders.

Nothing here imports PyTorch, Amaranth or numpy at import time: ``--help`` reads the options
dataclasses' defaults and answers at once; the heavy imports wait inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from bchw.core.options import BUILTIN_DATASETS, DATA_DIR_ENV, ExportOptions
from bchw.errors import BchwError
from rtl_gen import (
    ADDER_TREES,
    DEFAULT_ADDER_TREE,
    DEFAULT_PIPELINE_EVERY,
    DEFAULT_SYNAPSES_PER_CYCLE,
)

EPILOG = (
    "Data: digits (scikit-learn's 8x8 digits) needs no download; mnist reads the four IDX files "
    f"from --data-dir DIR or ${DATA_DIR_ENV}; cifar10 and svhn read their distributed files "
    "from --data-dir DIR; a path ending in .npz is a Keras-style archive "
    "(x_train, y_train, x_test, y_test, optionally x_val, y_val and pixel_max, else the "
    "largest pixel). Errors print one line and "
    "exit with status 2 (set BCHW_DEBUG=1 for a traceback)."
)
FOLDING_EPILOG = (
    "Folding: --pe and --simd take one value per layer (e.g. --pe 16,16,10 --simd "
    '49,16,16), or --folding FILE with {"layers": [{"pe": P, "simd": S}, ...]}, or '
    f"--unroll. Default: every layer folded to meet one common interval at about "
    f"{DEFAULT_SYNAPSES_PER_CYCLE} synapses per cycle in total, each layer's PE equal to the "
    "next layer's SIMD where possible (FIFO links). A CNN names its convolution and dense "
    "layers (pooling has no folding); its default interval is never shorter than its slowest "
    "sliding window's (k*k cycles per output pixel: a line-buffer read per pixel)."
)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit status 2, as argparse's are)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- option types -------------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not integers separated by commas, such as 5,4,3"
        ) from None


def int_range(text: str) -> tuple[int, ...]:
    """``4-12`` or ``4,6,8`` (or a mix: ``2,4-6``)."""
    values: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            if dash:
                lo, hi = int(low), int(high)
                if lo > hi:
                    raise ValueError
                values.extend(range(lo, hi + 1))
            else:
                values.append(int(low))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of integers or a range LO-HI"
            ) from None
    return tuple(values)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def device_pair(text: str) -> tuple[str, str]:
    family, sep, name = text.partition("=")
    if not sep or not family or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FAMILY=DEVICE, such as ice40=hx8k")
    return family.strip(), name.strip()


def dataset_name(text: str) -> str:
    if text in BUILTIN_DATASETS or text.endswith(".npz"):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a data set: use {', '.join(BUILTIN_DATASETS)} or a .npz archive's path"
    )


# -- shared options -----------------------------------------------------------------------------


def add_data_options(
    parser: argparse.ArgumentParser, default: str | None = "digits", purpose: str = ""
) -> None:
    """``--dataset`` and ``--data-dir``; ``purpose`` says what the data are for where that is
    not the command's whole job."""
    parser.add_argument(
        "--dataset",
        type=dataset_name,
        default=default,
        metavar="NAME|PATH.npz",
        help=(purpose + ": " if purpose else "")
        + "digits, mnist, cifar10, svhn or a Keras-style .npz archive "
        + ("(default: %(default)s)" if default else "(default: the one the model was trained on)"),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"folder with MNIST's four IDX files, raw or .gz (default: ${DATA_DIR_ENV}); "
        "with CIFAR-10's binary batches (data_batch_1.bin .. test_batch.bin); or with SVHN's "
        "train_32x32.mat and test_32x32.mat (and extra_32x32.mat, which joins training)",
    )


def add_width_options(parser: argparse.ArgumentParser) -> None:
    """The integer model's widths: ``--act-bits``, ``--out-bits``, ``--input-bits`` and
    ``--scale-terms`` (bchw export, bchw random)."""
    defaults = ExportOptions()
    parser.add_argument(
        "--act-bits",
        type=int,
        default=defaults.act_bits,
        help="bits of hidden activations, unsigned after ReLU (default: %(default)s)",
    )
    parser.add_argument(
        "--out-bits", type=int, help="bits of the signed output scores (default: --act-bits)"
    )
    parser.add_argument(
        "--input-bits",
        type=int,
        default=defaults.input_bits,
        help="bits of the unsigned input pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--scale-terms",
        "-K",
        type=int,
        default=defaults.scale_terms,
        help="signed powers of two per neuron's or channel's scale (default: %(default)s)",
    )


def width_options(args: argparse.Namespace, **more: Any) -> ExportOptions:
    """The :class:`ExportOptions` of :func:`add_width_options`' arguments (and ``more``)."""
    return ExportOptions(
        act_bits=args.act_bits,
        out_bits=args.out_bits,
        input_bits=args.input_bits,
        scale_terms=args.scale_terms,
        **more,
    )


def add_folding_options(parser: argparse.ArgumentParser) -> None:
    from bchw.estimate.devices import DEFAULT_MARGIN, DEVICES_BY_KEY

    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--unroll", action="store_true", help="fully unroll every layer")
    choice.add_argument("--folding", metavar="FILE", help="folding JSON file")
    choice.add_argument(
        "--fit",
        metavar="DEVICE",
        help="fold for a chip: the per-layer PE and SIMD with the most images per second "
        "that fit DEVICE by the analytical model (block RAMs counted as synthesis builds "
        f"them), one of {', '.join(DEVICES_BY_KEY)}; docs/estimates.md has the devices",
    )
    parser.add_argument(
        "--target-fps",
        type=float,
        metavar="N",
        help="with --fit: the smallest folding that reaches N images per second at the "
        "device's target clock, instead of the fastest",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="F",
        help="with --fit: the fraction of the chip's LUTs and flip-flops left free for "
        "placement and routing (default: %(default)s; block RAM and DSP blocks may be used "
        "to the last)",
    )
    parser.add_argument(
        "--pe", type=int_list, metavar="P[,P...]", help="neurons per cycle, one per layer"
    )
    parser.add_argument(
        "--simd", type=int_list, metavar="S[,S...]", help="inputs per cycle, one per layer"
    )
    parser.add_argument(
        "--pipeline-every",
        type=int,
        default=DEFAULT_PIPELINE_EVERY,
        metavar="N",
        help="a pipeline register after every N adder levels; 0 for none (default: %(default)s)",
    )
    parser.add_argument(
        "--adder-tree",
        choices=ADDER_TREES,
        default=DEFAULT_ADDER_TREE,
        help="how a folded binary layer's tree applies its weight bits: pair (inputs in pairs, "
        "each pair's sum and difference added once for all neurons, then one LUT per bit picks "
        "one or its complement; smallest on every family measured), xor (each input or its "
        "complement, then adds) or relative (a relative-sign tree of subtractions) "
        "(default: %(default)s)",
    )


def has_folding(args: argparse.Namespace) -> bool:
    return bool(
        args.unroll or args.folding or args.fit or args.pe is not None or args.simd is not None
    )


def folding_from_args(args: argparse.Namespace, model) -> list:
    """The folding the options name (the default folding without any), checked. With --fit,
    the search's result is also kept as ``args.fit_result`` for the command's report."""
    from rtl_gen import plan
    from rtl_gen.conv_plan import network_folding

    if (args.pe is None) != (args.simd is None):
        raise BchwError("--pe and --simd go together: give one value per layer to each")
    if args.pe is not None and (args.unroll or args.folding or args.fit):
        raise BchwError("choose one of --pe/--simd, --folding, --fit or --unroll")
    if not args.fit and (args.target_fps is not None or args.margin != _default_margin()):
        raise BchwError("--target-fps and --margin go with --fit DEVICE")
    if args.fit:
        result = fit_from_args(args, model)
        return result.folding
    if args.unroll:
        return plan.unrolled_folding(model)
    if args.folding:
        return plan.folding_from_file(model, args.folding)
    if args.pe is not None:
        return plan.folding_from_lists(model, list(args.pe), list(args.simd))
    return network_folding(model)


def _default_margin() -> float:
    from bchw.estimate.devices import DEFAULT_MARGIN

    return DEFAULT_MARGIN


def fit_from_args(args: argparse.Namespace, model, unit=None):
    """The --fit search for ``model`` (the binary unit of --adder-tree unless ``unit`` says),
    told on stdout; kept as ``args.fit_result``."""
    from bchw.estimate.devices import fit_device
    from bchw.estimate.fit import fit
    from rtl_gen.plan import DotProduct

    device = fit_device(args.fit)
    unit = unit or DotProduct.binary(args.adder_tree)
    result = fit(model, device, unit, args.margin, args.target_fps, args.pipeline_every)
    for line in fit_lines(result):
        print(line, flush=True)
    args.fit_result = result
    return result


def fit_lines(result) -> list[str]:
    """What --fit chose, in three lines: folding and rate, use of the chip, what binds."""
    from bchw.estimate.fit import LABELS
    from rtl_gen.plan import folding_text

    d = result.device
    use = ", ".join(
        f"{LABELS[k]} {result.usage[k]:,.0f} of {result.limits[k]:,.0f}"
        + (f" ({d.capacity[k]:,} less {result.margin:.0%})" if k in ("lut", "ff") else "")
        for k in ("lut", "ff", "bram", "dsp")
    )
    return [
        f"fit       {d.key} ({d.name}), {result.design}: PE/SIMD "
        f"{folding_text(result.folding, compact=True)}; {result.interval:,} cycles per image, "
        f"{result.images_per_second:,} images/s at {result.clock_mhz:g} MHz (predicted)",
        f"fit       uses {use} (analytical model; LUTs: logic cells as placed, with carry, "
        "LUT-RAM and packing)",
        f"fit       binds: {result.binding}",
    ]


def plan_from_args(args: argparse.Namespace, model):
    """The binary design the folding options describe (an MLP's or a CNN's). A large CNN's
    cycle model takes a while: it says how far it has got on stderr."""
    from rtl_gen.conv_plan import plan_network
    from rtl_gen.plan import DotProduct

    return plan_network(
        model,
        folding_from_args(args, model),
        args.pipeline_every,
        DotProduct.binary(args.adder_tree),
        cycle_model_progress,
    )


def cycle_model_progress(cycle: int) -> None:
    """How far a large CNN's cycle model has got, on stderr."""
    print(f"timing    cycle model at {cycle:,} cycles", file=sys.stderr, flush=True)


def add_jobs(parser: argparse.ArgumentParser, what: str = "synthesis runs") -> None:
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help=f"{what} in parallel (default: %(default)s, this machine's cores up to 4)",
    )


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the jobs on the Dask cluster whose scheduler is at ADDRESS "
        "(tcp://HOST:8786) instead of --jobs local processes; the workers need bchw installed "
        "and the output folder on a filesystem they share (docs/estimates.md)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary as the last line of stdout"
    )


def emit_json(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(summary, sort_keys=True))


# -- describing a model ---------------------------------------------------------------------------


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def layer_lines(model) -> list[str]:
    """A table of the model's layers: shapes, widths, requantization (bchw export, random)."""
    lines = ["layer  kind          in -> out                input  acc  requant   R  output"]
    shape = model.input_shape
    for index, layer in enumerate(model.layers):
        shapes = f"{_shape_text(shape)} -> {_shape_text(layer.output_shape)}"
        kind = f"{layer.kind} {layer.token()}" if layer.kind == "conv" else layer.kind
        if layer.kind == "maxpool":
            lines.append(
                f"{index:>5}  {kind:<12}  {shapes:<23}  u{layer.input_bits:<4}"
                f"{'':>19}u{layer.output_bits} (max of {layer.size}x{layer.size})"
            )
        else:
            sign = "signed" if layer.output_signed else "relu"
            lines.append(
                f"{index:>5}  {kind:<12}  {shapes:<23}  u{layer.input_bits:<4}"
                f"{layer.acc_bits:>4}  {layer.requant_bits:>7}  {layer.requant_shift:>2}  "
                f"{sign} {layer.output_bits} bits, {layer.output_frac_bits} fractional"
            )
        shape = layer.output_shape
    return lines


def save_and_describe(args: argparse.Namespace, model, output: Path, what: str) -> None:
    """Write ``model`` to ``output``, print its hash and layer table, and the ``--json``
    summary (bchw export, bchw random)."""
    from bchw.core import intmodel

    digest = intmodel.save(model, output)
    print(f"{what} {output} (sha256 {digest}), {model.arch()}")
    for line in layer_lines(model):
        print(line)
    summary = {"model": str(output), "sha256": digest, "arch": model.arch()}
    emit_json(args, {**summary, "layers": layer_summaries(model)})


def layer_summaries(model) -> list[dict[str, Any]]:
    """The layers for ``--json``: an MLP's dense layers as before, with ``kind`` and shapes."""
    out = []
    for layer in model.layers:
        entry: dict[str, Any] = {"kind": layer.kind, "output_shape": list(layer.output_shape)}
        if layer.kind == "maxpool":
            entry.update(size=layer.size, bits=layer.bits)
        else:
            entry.update(
                in_features=layer.in_features,
                out_features=layer.out_features,
                input_bits=layer.input_bits,
                acc_bits=layer.acc_bits,
                requant_bits=layer.requant_bits,
                requant_shift=layer.requant_shift,
                output_bits=layer.output_bits,
                output_frac_bits=layer.output_frac_bits,
            )
            if layer.kind == "conv":
                entry.update(kernel=layer.kernel, padding=layer.padding)
        out.append(entry)
    return out


# -- inputs and outputs -------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output path that is a file (the folder is made later)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BchwError(f"output path {out} exists and is not a folder")
    return out


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="integer model file written by bchw export, or digits, mnist or mnist-cnn for a "
        "shipped model (where no file has that name)",
    )


def load_model(name: str, mlp_only: str = ""):
    """The integer model ``name``: a file, else the shipped model of that name (which an
    installed bchw holds as package data). ``mlp_only``: the command that handles MLPs only
    so far, which refuses a convolutional model in one line."""
    from bchw.core import intmodel
    from bchw.models import SHIPPED, load_shipped

    if name in SHIPPED and not Path(name).is_file():  # a folder named mnist is common
        model = load_shipped(name)
    else:
        model = intmodel.load(name)
    if mlp_only:
        intmodel.require_mlp(model, mlp_only)
    return model


def model_dataset(args: argparse.Namespace, model):
    """``--dataset`` (else the one the model was trained on), checked against the model."""
    from bchw.core.data import resolve_dataset

    provenance = model.provenance
    dataset = resolve_dataset(
        args.dataset,
        provenance.get("dataset"),
        args.data_dir,
        f"the model {args.model}",
        str(provenance.get("dataset_sha256", "")),
    )
    dataset.check_model(model)
    return dataset


def checkpoint_dataset(args: argparse.Namespace, checkpoint, checkpoint_path):
    """``--dataset`` (else the one the checkpoint was trained on), checked against it."""
    from bchw.core.data import resolve_dataset

    dataset = resolve_dataset(
        args.dataset,
        checkpoint.dataset,
        args.data_dir,
        f"the checkpoint {checkpoint_path}",
        checkpoint.dataset_sha256,
    )
    dataset.check_input(checkpoint.model.network.input_shape, "the checkpoint")
    dataset.check_pixel_scale(checkpoint.pixel_max, "the checkpoint")
    return dataset


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """The progress bars of every command: one bar per task (on stderr, only on a terminal
    unless asked), each replaced when its total changes, all closed before a line is printed.

    Use as a context manager; :meth:`say` prints a line between bars.
    """

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def update(
        self,
        task: str,
        done: int,
        total: int,
        unit: str,
        note: str = "",
        seconds_left: float | None = None,
    ) -> None:
        from tqdm import tqdm

        bar = self.bars.get(task)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = self.bars[task] = tqdm(
                total=total,
                unit=unit,
                desc=task,
                dynamic_ncols=True,
                leave=False,
                disable=None,  # no bars when stderr is not a terminal (logs, CI)
            )
        if seconds_left is not None:
            eta = f"about {_duration(seconds_left)} left"
            note = f"{note}; {eta}" if note else eta
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.n = done
        bar.refresh()

    def runs(self, task: str = "estimate"):
        """A callback for tool runs: ``(message, done, total, seconds_left)``."""

        def tell(message: str, done: int, total: int, seconds_left: float | None = None) -> None:
            self.update(task, done, total, "run", message, seconds_left)

        return tell

    def images(self, task: str = "cosim"):
        """A callback for the cosimulation's progress documents."""

        def tell(state: dict[str, Any]) -> None:
            note = f"mismatches={state['mismatches']}" if state.get("mismatches") else ""
            self.update(task, state["outputs"], state["images"], "img", note)

        return tell

    def say(self, line: str) -> None:
        self.close()
        print(line, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
