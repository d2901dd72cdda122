"""The hardware manifest: what the generator promises about a design, typed and validated.

``manifest.json`` beside the Verilog gives the ports, the payload packing, the folding, the
widths and the latency and initiation interval in cycles. This module owns it: the generator
writes it (:meth:`Manifest.from_plan`, :meth:`Manifest.write`), and the cosimulation, the
estimator, the command line and the demo read it (:meth:`Manifest.load`), all through
:class:`Manifest`; a malformed file is refused in one line naming the file and the field.
Plain Python (no Amaranth): the payload fields are computed from the plan, and the tests
check them against the generated circuit's layouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bchw import jsondoc
from bchw.errors import BchwError
from bchw.outputs import write_bytes_atomic
from rtl_gen import ADDER_TREES
from rtl_gen.conv_plan import ConvDesignPlan, PoolStage, WindowStage
from rtl_gen.plan import DesignPlan, FifoLink, LayerFolding, LayerPlan, VectorBufferLink

FORMAT = "bchw-hardware-manifest"
# Version 1 describes an MLP; version 2 a convolutional network (an input shape, the layers'
# kinds and the chain of stages). An MLP's manifest is still written as version 1.
VERSION = 1
CONV_VERSION = 2
TOP_NAME = "bchw_network"
VERILOG_NAME = f"{TOP_NAME}.v"
MANIFEST_NAME = "manifest.json"
PACKING = (
    "pixel b*lanes+k of an image travels in beat b, lane k, at bits "
    "[k*lane_bits, (k+1)*lane_bits); lanes past the last pixel are ignored"
)
STREAM_PORTS = ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready")
LINK_KINDS = ("fifo", "vector_buffer")
STAGE_KINDS = ("window", "engine", "vector_buffer", "fifo", "maxpool", "argmax")
MAX_JSON_BYTES = 1 << 26


class ManifestError(BchwError):
    """A manifest that is missing, unreadable or malformed."""


@dataclass(frozen=True)
class Field:
    """One named bit field of a payload."""

    name: str
    lsb: int
    width: int
    signed: bool

    def extract(self, payload: int) -> int:
        value = (payload >> self.lsb) & ((1 << self.width) - 1)
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value

    def insert(self, value: int) -> int:
        """``value`` (two's complement when signed) placed at this field's bits."""
        return (int(value) & ((1 << self.width) - 1)) << self.lsb


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input" or "output"
    width: int


@dataclass(frozen=True)
class LayerInfo:
    """One layer engine as generated (``acc_bits`` is the integer model's accumulator width;
    ``requant_bits`` the requantizer's ``t``)."""

    index: int
    in_features: int
    out_features: int
    pe: int
    simd: int
    neuron_folds: int
    synapse_folds: int
    unrolled: bool
    cycles_per_image: int
    pipeline_depth: int
    input_bits: int
    acc_bits: int
    requant_bits: int
    requantizer_units: int
    output_bits: int
    output_signed: bool
    weight_bits: int
    weight_memory_bits: int
    # Version 2 only: a convolution is a dense layer over each of ``positions`` windows.
    kind: str = "dense"
    kernel: int = 0
    padding: int = 0
    positions: int = 1


CONV_LAYER_FIELDS = ("kind", "kernel", "padding", "positions")


@dataclass(frozen=True)
class Stage:
    """One block of a convolutional design's chain, in stream order: its kind and the numbers
    that size it (``layer`` for an engine)."""

    kind: str
    sizes: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.sizes)}


@dataclass(frozen=True)
class Link:
    after_layer: int
    kind: str  # "fifo" or "vector_buffer"


@dataclass(frozen=True)
class Manifest:
    """A generated design's manifest (``docs/hardware.md``, "Integrating the Verilog")."""

    top: str
    verilog: str
    model_sha256: str
    arch: str
    input_bits: int
    classes: int
    ports: tuple[Port, ...]
    lanes: int
    lane_bits: int
    beats_per_image: int
    input_fields: tuple[Field, ...]
    output_fields: tuple[Field, ...]
    layers: tuple[LayerInfo, ...]
    links: tuple[Link, ...]
    pipeline_every: int
    adder_tree: str
    latency_cycles: int
    initiation_interval_cycles: int
    tools: dict[str, str] = field(default_factory=dict)
    fault: str | None = None  # a deliberate bug (the cosimulation self-check), else None
    input_shape: tuple[int, ...] = ()  # version 2: (C, H, W); version 1: empty
    stages: tuple[Stage, ...] = ()  # version 2 only

    @property
    def version(self) -> int:
        return CONV_VERSION if self.input_shape else VERSION

    # -- derived -------------------------------------------------------------------------------

    def width(self, port: str) -> int:
        return next(p.width for p in self.ports if p.name == port)

    @property
    def input_width(self) -> int:
        return self.width("i__payload")

    @property
    def output_width(self) -> int:
        return self.width("o__payload")

    @property
    def input_size(self) -> int:
        """Values per image: a flat input's size, or C x H x W."""
        if self.input_shape:
            c, h, w = self.input_shape
            return c * h * w
        return self.layers[0].in_features

    @property
    def folding(self) -> list[LayerFolding]:
        return [LayerFolding(layer.pe, layer.simd) for layer in self.layers]

    @property
    def index_field(self) -> Field:
        return next(f for f in self.output_fields if f.name == "index")

    @property
    def score_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.output_fields if f.name.startswith("scores["))

    # -- writing -------------------------------------------------------------------------------

    @classmethod
    def from_plan(cls, plan: DesignPlan | ConvDesignPlan, tools: dict[str, str]) -> Manifest:
        """What the generator promises for ``plan``."""
        model = plan.model
        conv = isinstance(plan, ConvDesignPlan)
        in_width = plan.input_lanes * model.input_bits
        last = model.layers[-1]
        assert last.output_signed  # the validator's rule: scores are signed
        index_width = max(1, (model.num_classes - 1).bit_length())
        score_width = last.output_bits
        output_fields = (Field("index", 0, index_width, False),) + tuple(
            Field(f"scores[{k}]", index_width + k * score_width, score_width, True)
            for k in range(model.num_classes)
        )
        out_width = index_width + model.num_classes * score_width
        ports = (
            Port("clk", "input", 1),
            Port("rst", "input", 1),
            Port("i__payload", "input", in_width),
            Port("i__valid", "input", 1),
            Port("i__ready", "output", 1),
            Port("o__payload", "output", out_width),
            Port("o__valid", "output", 1),
            Port("o__ready", "input", 1),
        )
        layers = tuple(
            LayerInfo(
                index=index,
                in_features=lp.layer.in_features,
                out_features=lp.layer.out_features,
                pe=lp.pe,
                simd=lp.simd,
                neuron_folds=lp.neuron_folds,
                synapse_folds=lp.synapse_folds,
                unrolled=lp.unrolled,
                cycles_per_image=lp.cycles_per_vector * lp.layer.positions,
                pipeline_depth=lp.pipeline_depth,
                input_bits=lp.layer.input_bits,
                acc_bits=lp.layer.acc_bits,
                requant_bits=lp.requant_width,
                requantizer_units=lp.requant_units,
                output_bits=lp.layer.output_bits,
                output_signed=lp.layer.output_signed,
                weight_bits=lp.unit.weight_bits,
                weight_memory_bits=lp.weight_memory_bits,
                **(_conv_layer_fields(lp) if conv else {}),
            )
            for index, lp in enumerate(plan.layers)
        )
        return cls(
            top=TOP_NAME,
            verilog=VERILOG_NAME,
            model_sha256=model.sha256,
            arch=model.arch(),
            input_bits=model.input_bits,
            classes=model.num_classes,
            ports=ports,
            lanes=plan.input_lanes,
            lane_bits=model.input_bits,
            beats_per_image=plan.input_beats,
            input_fields=tuple(
                Field(f"[{k}]", k * model.input_bits, model.input_bits, False)
                for k in range(plan.input_lanes)
            ),
            output_fields=output_fields,
            layers=layers,
            links=() if conv else tuple(Link(k, link.kind) for k, link in enumerate(plan.links)),
            pipeline_every=plan.pipeline_every,
            adder_tree=plan.adder_tree,
            latency_cycles=plan.latency,
            initiation_interval_cycles=plan.initiation_interval,
            tools=dict(tools),
            input_shape=tuple(model.input_shape) if conv else (),
            stages=tuple(_stage(stage, plan) for stage in plan.stages) if conv else (),
        )

    def to_json(self) -> dict[str, Any]:
        """The document, its keys in the order the file has always had."""
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "top": self.top,
            "verilog": self.verilog,
            "model": {
                "sha256": self.model_sha256,
                "arch": self.arch,
                "input_bits": self.input_bits,
                "classes": self.classes,
            },
            "clock": {"port": "clk", "edge": "rising"},
            "reset": {"port": "rst", "active": "high", "synchronous": True},
            "ports": [
                {"name": p.name, "direction": p.direction, "width": p.width} for p in self.ports
            ],
            "input": {
                "payload": "i__payload",
                "valid": "i__valid",
                "ready": "i__ready",
                "lanes": self.lanes,
                "lane_bits": self.lane_bits,
                "beats_per_image": self.beats_per_image,
                "packing": PACKING,
                "fields": [
                    {"lsb": f.lsb, "width": f.width, "signed": f.signed, "lane": lane}
                    for lane, f in enumerate(self.input_fields)
                ],
            },
            "output": {
                "payload": "o__payload",
                "valid": "o__valid",
                "ready": "o__ready",
                "beats_per_image": 1,
                "fields": [
                    {"name": f.name, "lsb": f.lsb, "width": f.width, "signed": f.signed}
                    for f in self.output_fields
                ],
            },
            "layers": [self._layer_json(layer) for layer in self.layers],
            "links": [{"after_layer": link.after_layer, "kind": link.kind} for link in self.links],
            "pipeline_every": self.pipeline_every,
            "adder_tree": self.adder_tree,
            "latency_cycles": self.latency_cycles,
            "initiation_interval_cycles": self.initiation_interval_cycles,
            "tools": dict(self.tools),
        }
        if self.input_shape:
            document["model"]["input_shape"] = list(self.input_shape)
            document["stages"] = [stage.to_json() for stage in self.stages]
        if self.fault is not None:
            document["fault"] = self.fault
        return document

    def _layer_json(self, layer: LayerInfo) -> dict[str, Any]:
        fields = dict(vars(layer))
        if not self.input_shape:  # version 1 has no layer kinds
            for name in CONV_LAYER_FIELDS:
                del fields[name]
        return fields

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()

    def write(self, folder: str | Path) -> Path:
        """Write ``manifest.json`` into ``folder`` (atomically); return its path."""
        path = Path(folder) / MANIFEST_NAME
        write_bytes_atomic(path, self.to_bytes())
        return path

    def with_fault(self, description: str) -> Manifest:
        return replace(self, fault=description)

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest file (or the ``manifest.json`` of a design folder)."""
        path = Path(path)
        if path.is_dir():
            if not (path / MANIFEST_NAME).is_file():
                raise ManifestError(
                    f"{path} has no {MANIFEST_NAME}: generate the design with bchw generate"
                )
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path} does not exist: generate the design with bchw generate")
        try:
            size = path.stat().st_size
            if size > MAX_JSON_BYTES:
                raise ManifestError(f"manifest {path} is {size} bytes, too large for a manifest")
            document = jsondoc.parse(path.read_bytes())
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
        except jsondoc.JsonProblem as exc:
            raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_json(document)
        except _Invalid as exc:
            raise ManifestError(f"manifest {path}: {exc}") from None

    @classmethod
    def from_json(cls, document: Any) -> Manifest:
        """Validate a parsed manifest (raises ``_Invalid`` naming the field)."""
        doc = _Reader(document, "the document")
        if doc.str("format") != FORMAT:
            raise _Invalid(f"not a bchw hardware manifest (format {doc.raw('format')!r})")
        version = doc.int("version", 0)
        if version not in (VERSION, CONV_VERSION):
            raise _Invalid(
                f"version {doc.raw('version')!r} is not supported (this bchw reads 1 and 2)"
            )
        conv = version == CONV_VERSION
        model = doc.obj("model")
        ports = tuple(
            Port(p.str("name"), p.choice("direction", ("input", "output")), p.int("width", 1))
            for p in doc.list("ports")
        )
        names = {p.name for p in ports}
        missing = [name for name in ("clk", "rst", *STREAM_PORTS) if name not in names]
        if missing:
            raise _Invalid(f"ports: {', '.join(missing)} missing")
        inp, out = doc.obj("input"), doc.obj("output")
        input_fields = tuple(
            Field(f"[{k}]", f.int("lsb", 0), f.int("width", 1), f.bool("signed"))
            for k, f in enumerate(inp.list("fields"))
        )
        output_fields = tuple(
            Field(f.str("name"), f.int("lsb", 0), f.int("width", 1), f.bool("signed"))
            for f in out.list("fields")
        )
        layers = tuple(
            LayerInfo(
                **{
                    name: (entry.bool(name) if kind is bool else entry.int(name, 0))
                    for name, kind in _LAYER_FIELDS.items()
                    if name not in CONV_LAYER_FIELDS
                },
                **(
                    {
                        "kind": entry.choice("kind", ("conv", "dense")),
                        "kernel": entry.int("kernel", 0),
                        "padding": entry.int("padding", 0),
                        "positions": entry.int("positions", 1),
                    }
                    if conv
                    else {}
                ),
            )
            for entry in doc.list("layers")
        )
        input_shape: tuple[int, ...] = ()
        stages: tuple[Stage, ...] = ()
        if conv:
            shape = model.value.get("input_shape")
            if (
                not isinstance(shape, list)
                or len(shape) != 3
                or not all(type(v) is int and v >= 1 for v in shape)
            ):
                raise _Invalid("model: input_shape must be [C, H, W] of positive integers")
            input_shape = tuple(shape)
            stages = tuple(_read_stage(entry) for entry in doc.list("stages"))
        if not layers:
            raise _Invalid("layers: the design has no layers")
        links = tuple(
            Link(entry.int("after_layer", 0), entry.choice("kind", LINK_KINDS))
            for entry in doc.list("links")
        )
        tools = doc.obj("tools", required=False)
        manifest = cls(
            top=doc.str("top"),
            verilog=doc.str("verilog"),
            model_sha256=model.str("sha256"),
            arch=model.str("arch"),
            input_bits=model.int("input_bits", 1),
            classes=model.int("classes", 1),
            ports=ports,
            lanes=inp.int("lanes", 1),
            lane_bits=inp.int("lane_bits", 1),
            beats_per_image=inp.int("beats_per_image", 1),
            input_fields=input_fields,
            output_fields=output_fields,
            layers=layers,
            links=links,
            pipeline_every=doc.int("pipeline_every", 0),
            # Manifests written before the option existed describe XOR-leaf trees.
            adder_tree=doc.choice("adder_tree", ADDER_TREES, default="xor"),
            latency_cycles=doc.int("latency_cycles", 0),
            initiation_interval_cycles=doc.int("initiation_interval_cycles", 1),
            tools={} if tools is None else {k: str(v) for k, v in tools.value.items()},
            fault=doc.str("fault") if "fault" in doc.value else None,
            input_shape=input_shape,
            stages=stages,
        )
        manifest._check()
        return manifest

    def _check(self) -> None:
        if self.input_width != self.lanes * self.lane_bits:
            raise _Invalid(
                f"input width {self.input_width} is not lanes x lane_bits "
                f"({self.lanes} x {self.lane_bits})"
            )
        if len(self.score_fields) != self.classes or not any(
            f.name == "index" for f in self.output_fields
        ):
            raise _Invalid("the output needs an index and one score per class")
        for f in self.output_fields:
            if f.lsb + f.width > self.output_width:
                raise _Invalid(
                    f"output field {f.name} lies outside the {self.output_width}-bit payload"
                )
        if self.input_shape:
            if self.beats_per_image * self.lanes != self.input_size:
                raise _Invalid(
                    f"input: {self.beats_per_image} beats of {self.lanes} lanes do not carry "
                    f"a {'x'.join(map(str, self.input_shape))} image"
                )
            engines = [dict(s.sizes)["layer"] for s in self.stages if s.kind == "engine"]
            if len(engines) != len(self.layers):
                raise _Invalid(f"{len(self.layers)} layers but {len(engines)} engine stages")
            if engines != list(range(len(engines))):
                raise _Invalid(f"the engine stages name layers {engines}, not 0, 1, ... in order")
            if self.links:
                raise _Invalid("links: a version-2 manifest lists its blocks under 'stages'")
        elif len(self.links) != len(self.layers) - 1:
            raise _Invalid(f"{len(self.layers)} layers need {len(self.layers) - 1} links")


def _conv_layer_fields(layer: LayerPlan) -> dict[str, Any]:
    lay = layer.layer
    if lay.kind != "conv":
        return {"kind": "dense"}
    return {
        "kind": "conv",
        "kernel": lay.kernel,
        "padding": lay.padding,
        "positions": lay.positions,
    }


def _stage(stage: object, plan: ConvDesignPlan) -> Stage:
    if isinstance(stage, LayerPlan):
        return Stage("engine", (("layer", plan.layers.index(stage)),))
    if isinstance(stage, WindowStage):
        names = ("channels", "height", "width", "kernel", "padding", "simd", "beats")
    elif isinstance(stage, PoolStage):
        names = ("channels", "height", "width", "size")
    elif isinstance(stage, VectorBufferLink):
        names = ("n", "in_lanes", "out_lanes")
    elif isinstance(stage, FifoLink):
        names = ("lanes", "depth")
    else:
        names = ("classes", "latency")
    return Stage(stage.kind, tuple((name, getattr(stage, name)) for name in names))


STAGE_SIZES = {
    "window": ("channels", "height", "width", "kernel", "padding", "simd", "beats"),
    "engine": ("layer",),
    "vector_buffer": ("n", "in_lanes", "out_lanes"),
    "fifo": ("lanes", "depth"),
    "maxpool": ("channels", "height", "width", "size"),
    "argmax": ("classes", "latency"),
}


def _read_stage(entry: _Reader) -> Stage:
    """A stage and exactly the sizes its kind has, each a whole number."""
    kind = entry.choice("kind", STAGE_KINDS)
    extra = sorted(set(entry.value) - {"kind", *STAGE_SIZES[kind]})
    if extra:
        raise _Invalid(f"{entry.where}: a {kind} stage has no field '{extra[0]}'")
    return Stage(kind, tuple((name, entry.int(name, 0)) for name in STAGE_SIZES[kind]))


_LAYER_FIELDS = {
    name: (bool if name in ("unrolled", "output_signed") else int)
    for name in LayerInfo.__dataclass_fields__
}


class _Invalid(Exception):
    """A validation failure; :meth:`Manifest.load` prefixes the file name."""


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object",
               list: "an array"}  # fmt: skip


@dataclass(frozen=True)
class _Reader:
    """Typed access to one JSON object, with errors that name the field."""

    value: Any
    where: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, dict):
            raise _Invalid(f"{self.where} is not a JSON object")

    def raw(self, key: str) -> Any:
        return self.value.get(key)

    def _get(self, key: str, kind: type) -> Any:
        if key not in self.value:
            raise _Invalid(f"{self.where}: field '{key}' is missing")
        value = self.value[key]
        # bool is an int in Python; a JSON true must not pass for a width.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Invalid(
                f"{self.where}: field '{key}' must be {_KIND_NAMES[kind]}, found {value!r:.60}"
            )
        return value

    def str(self, key: str) -> str:
        return self._get(key, str)

    def bool(self, key: str) -> bool:
        return self._get(key, bool)

    def int(self, key: str, lo: int, hi: int = 1 << 40) -> int:
        value = self._get(key, int)
        if not lo <= value <= hi:
            raise _Invalid(f"{self.where}: {key} = {value} is outside {lo}..{hi}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        if default is not None and key not in self.value:
            return default
        value = self.str(key)
        if value not in options:
            raise _Invalid(f"{self.where}: {key} {value!r} is not one of {', '.join(options)}")
        return value

    def obj(self, key: str, required: bool = True) -> _Reader | None:
        if not required and key not in self.value:
            return None
        return _Reader(self._get(key, dict), key)

    def list(self, key: str) -> list[_Reader]:
        items = self._get(key, list)
        return [_Reader(item, f"{key}[{k}]") for k, item in enumerate(items)]
