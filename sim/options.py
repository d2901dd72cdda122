"""What ``bchw cosim`` runs: :class:`CosimOptions`, light so that ``--help`` reads it at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bchw.errors import BchwError

SIMULATORS = ("verilator", "icarus")
DEFAULT_SIMULATOR = "verilator"
MAX_STALL = 0.95
MAX_BURST = 1 << 20


@dataclass(frozen=True)
class CosimOptions:
    sim: str = DEFAULT_SIMULATOR
    stall: float = 0.0  # probability of an input gap and of output back-pressure per cycle
    stall_in: float | None = None  # the input's own probability (None: stall)
    stall_out: float | None = None  # the output's own probability (None: stall)
    burst: int = 1  # cycles each gap or back-pressure event lasts
    seed: int = 1
    waves: bool = False  # a waveform of the whole run
    waves_on_mismatch: bool = True  # replay up to the first mismatch with a waveform of it
    stop_at_first_mismatch: bool = False
    jobs: int = 1  # simulator processes side by side, each on a contiguous share of the images

    @property
    def gap(self) -> float:
        return self.stall if self.stall_in is None else self.stall_in

    @property
    def backpressure(self) -> float:
        return self.stall if self.stall_out is None else self.stall_out

    def stimulus(self, images, expected: list[int], **settings: Any):
        """The run of ``images`` with these handshake settings (and ``settings`` besides)."""
        from sim.runner import Stimulus

        return Stimulus(
            images=images,
            expected=expected,
            gap=self.gap,
            backpressure=self.backpressure,
            burst=self.burst,
            seed=self.seed,
            **settings,
        )

    def check(self) -> None:
        for name, value in (
            ("--stall", self.stall),
            ("--stall-in", self.gap),
            ("--stall-out", self.backpressure),
        ):
            if not 0.0 <= value <= MAX_STALL:  # also refuses nan
                raise BchwError(f"{name} must lie in 0..{MAX_STALL}, got {value}")
        if not 1 <= self.burst <= MAX_BURST:
            raise BchwError(f"--stall-burst must lie in 1..{MAX_BURST}, got {self.burst}")
        if not 0 <= self.seed < 1 << 32:
            raise BchwError(f"--seed must lie in 0..2^32-1, got {self.seed}")
