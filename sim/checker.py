"""Checking the harness's handshake log against the reference, output by output.

Pure Python (no simulator), so the testbench's logic is tested on its own: feed it log text,
read back mismatches, missing and extra outputs, and the measured cycle counts.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rtl_gen.manifest import Manifest

MAX_LISTED_MISMATCHES = 1000


class LogReader:
    """Reads the lines appended to a growing file; keeps a partial last line for next time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *lines, self.partial = data.split(b"\n")
        return [line.decode("ascii", "replace") for line in lines if line.strip()]


class StreamChecker:
    """Compares logged output payloads, in order, with the expected ones.

    ``expected``: one payload (integer) per image, in input order. The log's ``i CYCLE`` lines
    mark each image's first input beat, ``o CYCLE HEX`` lines each output beat.
    """

    def __init__(self, manifest: Manifest, expected: list[int], log_path: str | Path | None = None):
        self.manifest = manifest
        self.expected = expected
        self.images = len(expected)
        self.reader = LogReader(log_path) if log_path is not None else None
        self.in_cycles: list[int] = []
        self.out_cycles: list[int] = []
        self.classes: list[int | None] = []
        self.mismatches = 0
        self.mismatched_images: list[int] = []
        self.first_mismatch: dict[str, Any] | None = None
        self.extra_outputs = 0
        self.bad_lines: list[str] = []

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StreamChecker:
        manifest = Manifest.from_json(config["manifest"])
        text = Path(config["expected_file"]).read_text(encoding="ascii")
        expected = [int(line, 16) for line in text.split()]
        return cls(manifest, expected, config["log_file"])

    @property
    def outputs(self) -> int:
        return len(self.out_cycles)

    def read_log(self) -> None:
        assert self.reader is not None
        self.feed(self.reader.new_lines())

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            parts = line.split()
            try:
                if parts[0] == "i" and len(parts) == 2:
                    self.in_cycles.append(int(parts[1]))
                    continue
                if parts[0] == "o" and len(parts) == 3:
                    self._output(int(parts[1]), parts[2])
                    continue
            except (IndexError, ValueError):
                pass
            self.bad_lines.append(line)

    def _output(self, cycle: int, text: str) -> None:
        image = len(self.out_cycles)
        self.out_cycles.append(cycle)
        if image >= self.images:
            self.extra_outputs += 1
            self.classes.append(None)
            return
        expected = self.expected[image]
        try:
            actual: int | None = int(text, 16)
        except ValueError:  # x or z digits from a four-state simulator
            actual = None
        self.classes.append(None if actual is None else self.manifest.index_field.extract(actual))
        if actual == expected:
            return
        self.mismatches += 1
        if len(self.mismatched_images) < MAX_LISTED_MISMATCHES:
            self.mismatched_images.append(image)
        if self.first_mismatch is None:
            self.first_mismatch = {
                "image": image,
                "cycle": cycle,
                "input_cycle": self.in_cycles[image] if image < len(self.in_cycles) else None,
                "fields": self._differences(expected, actual, text),
            }

    def _differences(self, expected: int, actual: int | None, text: str) -> list[dict[str, Any]]:
        if actual is None:
            return [{"name": "payload", "expected": f"{expected:x}", "actual": text}]
        out = []
        for field in self.manifest.output_fields:
            e, a = field.extract(expected), field.extract(actual)
            if e != a:
                out.append({"name": field.name, "expected": e, "actual": a})
        return out or [{"name": "payload", "expected": f"{expected:x}", "actual": text}]

    # -- reports ---------------------------------------------------------------------------------

    def progress(self, cycle: int) -> dict[str, Any]:
        return {
            "outputs": min(self.outputs, self.images),
            "images": self.images,
            "mismatches": self.mismatches,
            "cycle": cycle,
        }

    def timing(self) -> dict[str, Any]:
        """Measured cycles: latency of the first image (the pipeline was empty), spacing of the
        results and cycles per image over the whole stream."""
        n = min(self.outputs, self.images, len(self.in_cycles))
        if n == 0:
            return {
                "latency_cycles": None,
                "initiation_interval_cycles": None,
                "cycles_per_image": None,
                "max_latency_cycles": None,
            }
        latencies = [self.out_cycles[k] - self.in_cycles[k] for k in range(n)]
        gaps = [b - a for a, b in zip(self.out_cycles[: n - 1], self.out_cycles[1:n], strict=True)]
        span = self.out_cycles[n - 1] - self.in_cycles[0] + 1
        return {
            "latency_cycles": latencies[0],
            "max_latency_cycles": max(latencies),
            "initiation_interval_cycles": int(statistics.median(gaps)) if gaps else None,
            "min_interval_cycles": min(gaps) if gaps else None,
            "cycles_per_image": span / n,
        }

    def result(
        self, cycle: int, stalled: bool, beats_taken: int, ended_early: bool = False
    ) -> dict[str, Any]:
        """``ended_early``: the testbench stopped the run on purpose (first mismatch, end of a
        waveform window), so outputs not seen yet are not counted missing."""
        missing = 0 if ended_early else max(0, self.images - self.outputs)
        problems = []
        if self.mismatches:
            first = self.first_mismatch
            assert first is not None
            problems.append(f"{self.mismatches} mismatching outputs, first {describe(first)}")
        if missing:
            problems.append(
                f"{missing} of {self.images} outputs never came (stream stopped at cycle "
                f"{cycle}, {beats_taken} of "
                f"{self.images * self.manifest.beats_per_image} input beats taken)"
            )
        if self.extra_outputs:
            problems.append(f"{self.extra_outputs} outputs more than images sent")
        if self.bad_lines:
            problems.append(
                f"{len(self.bad_lines)} unreadable log lines, first {self.bad_lines[0]!r}"
            )
        return {
            "passed": not problems,
            "summary": "; ".join(problems) if problems else "all outputs match",
            "images": self.images,
            "outputs": min(self.outputs, self.images),
            "mismatches": self.mismatches,
            "mismatched_images": self.mismatched_images,
            "first_mismatch": self.first_mismatch,
            "missing_outputs": missing,
            "extra_outputs": self.extra_outputs,
            "stalled": stalled,
            "cycles": cycle,
            "beats_taken": beats_taken,
            "classes": self.classes[: self.images],
            "in_cycles": self.in_cycles[: self.images],
            "out_cycles": self.out_cycles[: self.images],
            **self.timing(),
        }


def describe(first: dict[str, Any], shown: int = 3) -> str:
    """``image 12 (digits test image 12): scores[3] expected -5, got -4 (cycle 1234)``; the
    first ``shown`` differing fields, then how many more."""
    fields = first["fields"]
    text = ", ".join(
        f"{f['name']} expected {f['expected']}, got {f['actual']}" for f in fields[:shown]
    )
    if len(fields) > shown:
        text += f" and {len(fields) - shown} more fields"
    name = f" ({first['input']})" if first.get("input") else ""
    return f"image {first['image']}{name}: {text} (cycle {first['cycle']})"
