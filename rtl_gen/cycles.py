"""The cycle model: a design's valid/ready handshakes, cycle by cycle, in plain Python.

A convolutional design's timing depends on back-pressure between its blocks (a window waits
for rows, an engine holds its window, a line buffer fills), so a closed formula would be exact
only for some foldings. This model is exact for all of them: each block below keeps the
registers of its Amaranth counterpart that decide a handshake (counters, valid bits, bank
flags; no data), and computes the same ``valid`` and ``ready`` from them. A chain of blocks is
stepped cycle by cycle with the input always valid and the output always ready, which is how
the manifest's latency and initiation interval are defined and how the cosimulation measures
them without ``--stall``. The tests compare every block's handshakes with ``amaranth.sim`` and
whole designs with the simulated circuit, to the cycle.

Conventions (the Amaranth blocks'): no block's ``valid`` looks at its output's ``ready``; a
``ready`` may look at the output's ``ready`` and at the block's own input ``valid``. So a
cycle computes the valids from the input forward, the readies from the output backward, and
then clocks every block with its two handshakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rtl_gen.plan import REQUANT_ROM_STAGES, FifoLink, LayerPlan, VectorBufferLink


class Block:
    """One block's handshake state (the registers that decide ``valid`` and ``ready``)."""

    def valid(self, v_in: bool) -> bool:
        raise NotImplementedError

    def ready(self, r_out: bool, v_in: bool) -> bool:
        raise NotImplementedError

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        raise NotImplementedError


class StallPipeline(Block):
    """``rtl_gen.pipeline.stall_pipeline``: ``stages`` valid bits that move together; with no
    stages, valid and ready pass straight through. ``tags`` travel with the valid bits (the
    adder tree's first/last flags)."""

    def __init__(self, stages: int) -> None:
        self.stages = stages
        self.valids = [False] * stages
        self.tags: list[object] = [None] * stages
        self.tag_in: object = None  # what enters with the next beat
        self.advance = False

    def valid(self, v_in: bool) -> bool:
        return self.valids[-1] if self.stages else v_in

    def tag_out(self) -> object:
        return self.tags[-1] if self.stages else self.tag_in

    def ready(self, r_out: bool, v_in: bool = False) -> bool:
        return (not self.valids[-1] or r_out) if self.stages else r_out

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        if self.stages and r_in:  # r_in is ``advance``
            self.valids = [v_in, *self.valids[:-1]]
            self.tags = [self.tag_in, *self.tags[:-1]]


class Engine(Block):
    """``rtl_gen.layer_engine.LayerEngine`` with its tree and requantizer."""

    def __init__(self, plan: LayerPlan) -> None:
        self.plan = plan
        self.unrolled = plan.unrolled
        self.nf, self.sf = plan.neuron_folds, plan.synapse_folds
        self.tree = StallPipeline(plan.tree_latency)
        static = plan.unrolled or plan.static_constants
        # The requantizer: a stall pipeline (per-neuron constants are wiring), combinational
        # with a constants ROM, or stepped over time-shared units.
        if static:
            self.requant_kind = "pipeline"
        elif plan.requant_latency > 0:
            self.requant_kind = "stepped"
        else:
            self.requant_kind = "rom"
        self.rq = StallPipeline(plan.requant_latency if static else 0)
        self.steps = plan.requant_steps
        self.step = 0
        self.o_valid = False
        # The stepped requantizer's stages: (valid, step) per register before the output.
        self.rq_stages = [(False, 0)] * REQUANT_ROM_STAGES
        self.primed = False
        # Issue stage of a folded engine.
        self.fold = self.beat = 0
        self.valid_r, self.tag_r = False, (False, False)
        self.valid_a, self.tag_a = False, (False, False)
        self.acc_valid = False  # the accumulators' hand-over register holds a result
        # The skid buffer between the tree and the accumulators: full, and its beat's last flag.
        self.tree_skid = plan.tree_skid
        self.skid_full = self.skid_last = False

    # -- the requantizer: its input is the accumulators' hand-over (or the unrolled tree) --

    def _rq_valid(self, v: bool) -> bool:
        if self.requant_kind == "pipeline":
            return self.rq.valid(v)
        if self.requant_kind == "stepped":
            return self.o_valid
        return v and self.primed

    def _rq_advance(self, r_out: bool) -> bool:
        return not self.rq_stages[-1][0] or not self.o_valid or r_out

    def _rq_go(self, v: bool, r_out: bool) -> bool:
        return v and self.primed and self._rq_advance(r_out)

    def _rq_ready(self, r_out: bool, v: bool) -> bool:
        if self.requant_kind == "pipeline":
            return self.rq.ready(r_out)
        if self.requant_kind == "stepped":
            return self._rq_go(v, r_out) and self.step == self.steps - 1
        return r_out and self.primed

    def _rq_tick(self, v: bool, r: bool, r_out: bool) -> None:
        if self.requant_kind == "pipeline":
            self.rq.tick(v, r, False, False)
        elif self.requant_kind == "stepped":
            go, advance = self._rq_go(v, r_out), self._rq_advance(r_out)
            if self.o_valid and r_out:
                self.o_valid = False
            if advance:
                if self.rq_stages[-1] == (True, self.steps - 1):
                    self.o_valid = True
                self.rq_stages = [(go, self.step), *self.rq_stages[:-1]]
            if go:
                self.step = 0 if self.step == self.steps - 1 else self.step + 1
        self.primed = True  # the constants ROM's first word is read in the first cycle

    # -- the engine ---------------------------------------------------------------------------

    def _unrolled_parts(self, r_out: bool, v_in: bool) -> tuple[bool, bool, bool]:
        tree_v = self.tree.valid(v_in)
        rq_r = self._rq_ready(r_out, tree_v)
        return tree_v, rq_r, self.tree.ready(rq_r)

    def _sums(self) -> tuple[bool, bool, bool, bool]:
        """(tree output valid, its last flag, the accumulators' input valid, its last flag):
        the accumulators read the tree skid buffer's beat when it holds one."""
        tree_v = self.tree.valid(self.valid_a)
        tree_last = tree_v and self.tree.tag_out()[1]
        if self.skid_full:
            return tree_v, tree_last, True, self.skid_last
        return tree_v, tree_last, tree_v, tree_last

    def _folded_parts(self, r_out: bool) -> tuple[bool, bool, bool, bool, bool]:
        """(requantizer ready, accumulators ready, tree output ready, tree input ready,
        advance)."""
        rq_r = self._rq_ready(r_out, self.acc_valid)
        self.tree.tag_in = self.tag_a
        _, _, _, last = self._sums()
        acc_r = not last or not self.acc_valid or rq_r
        tree_o_r = not self.skid_full if self.tree_skid else acc_r
        tree_i_r = self.tree.ready(tree_o_r)
        return rq_r, acc_r, tree_o_r, tree_i_r, (not self.valid_a) or tree_i_r

    def valid(self, v_in: bool) -> bool:
        if self.unrolled:
            return self._rq_valid(self.tree.valid(v_in))
        return self._rq_valid(self.acc_valid)

    def ready(self, r_out: bool, v_in: bool) -> bool:
        if self.unrolled:
            return self._unrolled_parts(r_out, v_in)[2]
        # The chain asks for ready, then clocks the block with the same r_out: keep the parts.
        self._parts = self._folded_parts(r_out)
        return self._parts[4] and self.fold == 0

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        if self.unrolled:
            tree_v, rq_r, tree_r = self._unrolled_parts(r_out, v_in)
            self._rq_tick(tree_v, rq_r, r_out)
            self.tree.tick(v_in, tree_r, False, False)
            return
        rq_r, acc_r, tree_o_r, tree_i_r, advance = self._parts
        tree_v, tree_last, sums_v, last = self._sums()
        self._rq_tick(self.acc_valid, rq_r, r_out)
        if self.acc_valid and rq_r:
            self.acc_valid = False
        if sums_v and acc_r and last:
            self.acc_valid = True
        if self.tree_skid:  # rtl_gen.pipeline.skid_buffer between the tree and accumulators
            if self.skid_full:
                self.skid_full = not acc_r
            elif tree_v and not acc_r:
                self.skid_full, self.skid_last = True, tree_last
        self.tree.tick(self.valid_a, tree_i_r, False, False)
        fire = advance and (self.fold != 0 or v_in)
        tag = (self.beat == 0, self.beat == self.sf - 1)
        if advance:
            if self.nf > 1:
                self.valid_a, self.tag_a = self.valid_r, self.tag_r
                self.valid_r, self.tag_r = fire, tag
            else:
                self.valid_a, self.tag_a = fire, tag
        if fire:
            if self.beat == self.sf - 1:
                self.beat = 0
                self.fold = 0 if self.fold == self.nf - 1 else self.fold + 1
            else:
                self.beat += 1


class Skid(Block):
    """``rtl_gen.pipeline.skid_buffer`` behind ``inner``: one held beat, ``ready`` a register."""

    def __init__(self, inner: Block) -> None:
        self.inner = inner
        self.full = False

    def valid(self, v_in: bool) -> bool:
        return self.full or self.inner.valid(v_in)

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return self.inner.ready(not self.full, v_in)

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        inner_v = self.inner.valid(v_in)  # before the inner block's clock edge
        self.inner.tick(v_in, r_in, inner_v, not self.full)
        if self.full:
            self.full = not r_out
        else:
            self.full = inner_v and not r_out


class VectorBuffer(Block):
    """``rtl_gen.buffers.VectorBuffer``: two banks, one filling while the other drains."""

    def __init__(self, in_beats: int, out_beats: int) -> None:
        self.in_beats, self.out_beats = in_beats, out_beats
        self.full = [False, False]
        self.w_bank = self.r_bank = 0
        self.w_beat = self.r_beat = 0

    def valid(self, v_in: bool) -> bool:
        return self.full[self.r_bank]

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return not self.full[self.w_bank]

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        if v_in and r_in:
            if self.w_beat == self.in_beats - 1:
                self.full[self.w_bank] = True
                self.w_beat, self.w_bank = 0, 1 - self.w_bank
            else:
                self.w_beat += 1
        if v_out and r_out:
            if self.r_beat == self.out_beats - 1:
                self.full[self.r_bank] = False
                self.r_beat, self.r_bank = 0, 1 - self.r_bank
            else:
                self.r_beat += 1


class Fifo(Block):
    """``rtl_gen.buffers.BeatFIFO`` (Amaranth's ``SyncFIFOBuffered``: a memory of ``depth - 1``
    beats and an output register)."""

    def __init__(self, depth: int) -> None:
        self.inner_depth = depth - 1
        self.inner_level = 0
        self.r_rdy = False

    def valid(self, v_in: bool) -> bool:
        return self.r_rdy

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return self.inner_level != self.inner_depth

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        write = v_in and r_in
        inner_read = self.inner_level != 0 and (not self.r_rdy or r_out)
        self.inner_level += int(write) - int(inner_read)
        if inner_read:
            self.r_rdy = True
        elif r_out:
            self.r_rdy = False


class Window(Block):
    """``rtl_gen.window.SlidingWindow``: the line buffer's row count, the reader's position
    (window and pixel) and the sender's step over the pixel at the memory's output."""

    def __init__(self, stage) -> None:
        self.h, self.w, self.k, self.p = stage.height, stage.width, stage.kernel, stage.padding
        self.ho, self.wo = stage.out_height, stage.out_width
        self.rows, self.phases = stage.kernel + 1, stage.phases
        self.in_x = self.ahead = self.out_y = self.out_x = self.reads = 0
        self.held, self.position, self.phase = False, 0, 0

    def _emits(self) -> bool:
        return self.phases[self.phase].full or self.position == self.k * self.k - 1

    def valid(self, v_in: bool) -> bool:
        return self.held and self._emits()

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return self.ahead < self.rows + max(0, self.out_y - self.p)

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        k, p, h, w = self.k, self.p, self.h, self.w
        last_row = min(self.out_y + k - 1 - p, h - 1)
        last_col = min(self.out_x + k - 1 - p, w - 1)
        there = self.ahead > last_row or (self.ahead == last_row and self.in_x > last_col)
        take_in = v_in and r_in
        row_done = take_in and self.in_x == w - 1
        if take_in:
            self.in_x = 0 if self.in_x == w - 1 else self.in_x + 1
        phase, last_pixel = self.phases[self.phase], self.position == k * k - 1
        step = self.held and (not self._emits() or r_out)
        free = not self.held or (step and phase.pixel_done)
        issue = free and there
        if step:
            self.phase = 0 if not phase.full and last_pixel else phase.next
            if phase.pixel_done:
                self.position = 0 if last_pixel else self.position + 1
        self.held = issue or (self.held and not (step and phase.pixel_done))
        image_done = False
        if issue:
            self.reads += 1
            if self.reads == k * k:  # the window's last pixel is read: on to the next window
                self.reads = 0
                if self.out_x == self.wo - 1:
                    self.out_x = 0
                    image_done = self.out_y == self.ho - 1
                    self.out_y = 0 if image_done else self.out_y + 1
                else:
                    self.out_x += 1
        self.ahead += int(row_done) - (h if image_done else 0)


class ScanArgmax(Block):
    """``rtl_gen.argmax.ScanArgmax``: from a beat, a cycle to read each of the ``classes``
    scores, each compared on the next; then done until the output takes the result and, with
    it, the input's beat."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.busy = self.read = self.done = False
        self.k = self.read_index = 0

    def valid(self, v_in: bool) -> bool:
        return self.done

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return self.done and r_out

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        last = self.classes - 1
        start = v_in and not (self.busy or self.read or self.done)
        done = (self.done and not r_out) or (self.read and self.read_index == last)
        if self.busy or start:
            self.read, self.read_index = True, self.k
            self.busy, self.k = (False, 0) if self.k == last else (True, self.k + 1)
        else:
            self.read = False
        self.done = done


class MaxPool(Block):
    """``rtl_gen.window.MaxPool``: a two-stage pipeline that holds a finished block until the
    output takes it."""

    def __init__(self, stage) -> None:
        self.h, self.w, self.s = stage.height, stage.width, stage.size
        self.wo, self.hb = stage.width // stage.size, stage.height // stage.size
        self.x = self.y = self.bx = self.by = self.dx = self.dy = 0
        self.valid2 = self.end2 = self.keep2 = False

    def _out(self) -> bool:
        return self.valid2 and self.keep2 and self.end2

    def valid(self, v_in: bool) -> bool:
        return self._out()

    def ready(self, r_out: bool, v_in: bool) -> bool:
        return not (self._out() and not r_out)

    def tick(self, v_in: bool, r_in: bool, v_out: bool, r_out: bool) -> None:
        if not r_in:  # hold
            return
        s = self.s
        self.valid2 = v_in
        self.end2 = self.dx == s - 1 and self.dy == s - 1
        self.keep2 = self.bx < self.wo and self.by < self.hb
        if not v_in:
            return
        if self.x == self.w - 1:
            self.x = self.bx = self.dx = 0
            if self.y == self.h - 1:
                self.y = self.by = self.dy = 0
            else:
                self.y += 1
                if self.dy == s - 1:
                    self.dy, self.by = 0, self.by + 1
                else:
                    self.dy += 1
        else:
            self.x += 1
            if self.dx == s - 1:
                self.dx, self.bx = 0, self.bx + 1
            else:
                self.dx += 1


def block_model(stage) -> Block:
    """The handshake model of one stage of a design plan."""
    if isinstance(stage, LayerPlan):
        return Skid(Engine(stage)) if stage.output_skid else Engine(stage)
    if isinstance(stage, VectorBufferLink):
        return VectorBuffer(stage.in_beats, stage.out_beats)
    if isinstance(stage, FifoLink):
        return Fifo(stage.depth)
    kind = getattr(stage, "kind", None)
    if kind == "window":
        return Window(stage)
    if kind == "maxpool":
        return MaxPool(stage)
    if kind == "argmax":
        return ScanArgmax(stage.classes) if stage.scan else StallPipeline(stage.latency)
    raise TypeError(f"no cycle model for {stage!r}")


@dataclass(frozen=True)
class Timing:
    """Cycles of a run: when each input beat was taken and each result left."""

    beats_per_image: int
    beat_cycles: tuple[int, ...]
    out_cycles: tuple[int, ...]

    @property
    def in_cycles(self) -> tuple[int, ...]:
        """When each image's first beat was taken."""
        return self.beat_cycles[:: self.beats_per_image]

    @property
    def latency(self) -> int:
        return self.out_cycles[0] - self.beat_cycles[0]

    @property
    def gaps(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.out_cycles, self.out_cycles[1:], strict=False))


def run(
    stages: Sequence[object],
    beats_per_image: int,
    images: int,
    max_cycles: int,
    progress: Callable[[int], None] | None = None,
    offer: Callable[[], bool] | None = None,
    accept: Callable[[], bool] | None = None,
    until_steady: bool = False,
) -> Timing:
    """Step the chain of ``stages`` with ``images`` images on its input until every result has
    left: by default the input is always valid and the output always ready; ``offer`` and
    ``accept``, asked once per cycle in that order (``offer`` only while beats remain), can
    withhold them, as a testbench does.

    ``until_steady`` ends the run early, once three results have left with the same spacing
    twice in a row (later images cannot change the earlier ones' timing: a pipeline keeps
    order). ``max_cycles`` bounds the run (``RuntimeError`` past it: a design that never
    finishes is a generator bug, not a user's mistake); ``progress`` is told the cycle every
    2^20 cycles.
    """
    blocks = [block_model(stage) for stage in stages]
    n = len(blocks)
    total = images * beats_per_image
    beat_cycles: list[int] = []
    out_cycles: list[int] = []
    v = [False] * (n + 1)
    r = [True] * (n + 1)
    valids = [block.valid for block in blocks]
    readies = [block.ready for block in blocks]
    ticks = [block.tick for block in blocks]
    backward = list(range(n - 1, -1, -1))
    cycle = 0
    while len(out_cycles) < images:
        if cycle >= max_cycles:
            raise RuntimeError(f"the cycle model ran {max_cycles} cycles without finishing")
        v[0] = len(beat_cycles) < total and (offer is None or offer())
        r[n] = accept is None or accept()
        for k in range(n):
            v[k + 1] = valids[k](v[k])
        for k in backward:
            r[k] = readies[k](r[k + 1], v[k])
        for k in range(n):
            ticks[k](v[k], r[k], v[k + 1], r[k + 1])
        if v[0] and r[0]:
            beat_cycles.append(cycle)
        if v[n] and r[n]:
            out_cycles.append(cycle)
            if (
                until_steady
                and len(out_cycles) >= 3
                and out_cycles[-1] - out_cycles[-2] == out_cycles[-2] - out_cycles[-3]
            ):
                break
        cycle += 1
        if progress is not None and cycle % (1 << 20) == 0:
            progress(cycle)
    return Timing(beats_per_image, tuple(beat_cycles), tuple(out_cycles))
