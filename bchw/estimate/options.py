"""What ``bchw estimate`` runs: :class:`EstimateOptions`, its defaults and its checks.

Light on purpose (no Amaranth, no tool runs), so that the command line reads the defaults for
``--help`` at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bchw.errors import BchwError
from rtl_gen import DEFAULT_ADDER_TREE, DEFAULT_MAC_WEIGHT_BITS, MAC_WEIGHT_BITS

# One family by default: the digits model at its default folding synthesizes for ECP5 in about
# three minutes; the same designs take iCE40's flow some fourteen (docs/benchmarks.md).
DEFAULT_TARGETS = ("ecp5",)
DEFAULT_CLOCK_MHZ = 100.0
MAX_CLOCK_MHZ = 10_000.0  # no FPGA fabric clocks faster than a few GHz


@dataclass
class EstimateOptions:
    """What ``bchw estimate`` runs.

    Attributes
    ----------
    targets:
        FPGA families to synthesize for (``ice40``, ``ecp5``, ``xc7``, ``gowin``).
    weight_bits:
        Weight bits of the multiply-accumulate (MAC) baseline: 4, 8 or 16.
    synth:
        Synthesize with Yosys (True) or answer from the analytical model alone (False).
    lut_only:
        Also synthesize both designs with DSP blocks forbidden. Without it (the default), the
        LUT-only figures are the analytical model's: the MAC design's LUT-only synthesis is the
        long run (tens of minutes for the digits model at its default folding).
    pnr:
        Also place and route both designs with nextpnr (iCE40 and ECP5 targets).
    devices:
        A family's device for place and route, overriding its default (``{"ice40": "hx8k"}``).
    clock_mhz:
        The clock that gives images per second where place and route measured no fmax.
    jobs:
        Tool runs in parallel (local processes).
    scheduler:
        The address of a Dask scheduler to run the tool runs on instead (``tcp://HOST:8786``).
    adder_tree:
        The binary design's folded trees (``pair``, the default, ``xor`` or ``relative``).
    mac_dsp:
        Synthesize (and place) the MAC design with DSP blocks allowed, the default; False
        when ``--fit`` put its multipliers in LUTs, so that its main figures are that flow's.
    mac_tools:
        Run the tools on the MAC design; False when ``--fit`` found that it fits the chip at
        no folding (its figures are then the analytical model's: Yosys's WebAssembly build
        runs out of memory on the MNIST MLP's 23 Mbit of 8-bit weights).
    """

    targets: tuple[str, ...] = DEFAULT_TARGETS
    weight_bits: int = DEFAULT_MAC_WEIGHT_BITS
    synth: bool = True
    lut_only: bool = False
    pnr: bool = False
    devices: dict[str, str] = field(default_factory=dict)
    clock_mhz: float = DEFAULT_CLOCK_MHZ
    jobs: int = 1
    scheduler: str | None = None
    adder_tree: str = DEFAULT_ADDER_TREE
    mac_dsp: bool = True
    mac_tools: bool = True

    @property
    def runner(self):
        from bchw.jobs import Runner

        return Runner(self.jobs, self.scheduler)

    def check(self) -> None:
        from bchw.estimate.pnr import DEVICES, device
        from bchw.estimate.synth import FAMILIES
        from rtl_gen.plan import DotProduct

        if not self.targets:
            raise BchwError("name at least one --target")
        for target in self.targets:
            if target not in FAMILIES:
                raise BchwError(f"unknown target {target!r}: choose from {', '.join(FAMILIES)}")
        if self.weight_bits not in MAC_WEIGHT_BITS:
            raise BchwError(
                f"--weight-bits must be one of {MAC_WEIGHT_BITS}, got {self.weight_bits}"
            )
        if self.pnr and not self.synth:
            raise BchwError("--pnr places synthesized netlists: it cannot go with --analytic")
        if self.lut_only and not self.synth:
            raise BchwError("--lut-only synthesizes: it cannot go with --analytic")
        if self.pnr and not any(t in DEVICES for t in self.targets):
            raise BchwError("--pnr needs an ice40 or ecp5 target (nextpnr for those families)")
        for family_name, name in self.devices.items():
            if family_name not in self.targets:
                raise BchwError(f"--device {family_name}={name}: {family_name} is not a --target")
            device(family_name, name)
        if not 0 < self.clock_mhz <= MAX_CLOCK_MHZ:  # also refuses nan and infinity
            raise BchwError(
                f"--clock-mhz must be positive and at most {MAX_CLOCK_MHZ:g}, got {self.clock_mhz}"
            )
        if self.jobs < 1:
            raise BchwError(f"--jobs must be at least 1, got {self.jobs}")
        DotProduct.binary(self.adder_tree)  # refuses an unknown tree
