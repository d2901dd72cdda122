"""Streaming blocks of a convolutional network: the sliding window in front of a convolution's
layer engine, and max pooling.

Both take a feature map as a stream of pixels in raster order, one pixel of ``C`` values per
beat (channels innermost, the integer model's order), and handle one image after another
without a gap. Their semantics are the integer model's (docs/integer-model.md): zero padding,
the window ordered by kernel row, kernel column and channel, pooling blocks of ``s x s`` with a
last partial row or column dropped.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bchw.errors import BchwError
from rtl_gen.conv_plan import WindowStage


def _refuse(block: wiring.Component, problem: str) -> None:
    """Raise ``problem`` (if any) for a block that will never be elaborated, silencing
    Amaranth's warning about an unused elaboratable for it."""
    if problem:
        block._MustUse__silence = True  # the block was refused, not forgotten
        raise BchwError(problem)


class SlidingWindow(wiring.Component):
    """Turn a stream of ``height x width`` pixels of ``channels`` values into the stream of
    ``k x k`` windows (stride 1, ``padding`` zeros each side) a convolution engine consumes.

    A line buffer of ``k + 1`` rows of pixels (one memory, one write and one read port) holds
    the rows the current windows need and the row being written, so the input runs up to one
    row ahead of the windows. The windows are sent straight from the memory, as FINN's sliding
    window does: a window's pixels are read one after another (zero where the window leaves the
    image: the padding costs no memory), and each stays at the memory's output while its
    channels go out in beats of ``simd`` values, in the integer model's window order. A beat
    that spans pixels gathers the earlier pixels' values in a register of less than ``simd``
    values; a window's last beat is padded with zeros. One step per cycle: a window every
    ``WindowStage.cycles_per_window`` cycles (``ceil(k * k * channels / simd)`` beats, at
    least one cycle per pixel) when its pixels are there and nothing stalls, with no gap
    between windows. Input and output proceed at once; a new image's rows enter as soon as the
    windows still to be read no longer need the rows they overwrite.

    Ports
    -----
    i : stream of one pixel (``channels`` values) per beat, raster order, image after image.
    o : stream of ``simd`` values per beat, window after window in raster order.
    """

    def __init__(
        self, channels: int, height: int, width: int, kernel: int, padding: int, bits: int,
        simd: int,
    ) -> None:  # fmt: skip
        problem = ""
        if kernel % 2 == 0 or not 0 <= padding <= (kernel - 1) // 2:
            problem = f"a {kernel}x{kernel} window cannot have padding {padding}"
        elif min(height, width) + 2 * padding - kernel + 1 < 1:
            problem = f"a {kernel}x{kernel} window does not fit {height}x{width}"
        elif simd < 1:
            problem = f"SIMD must be 1 or more, got {simd}"
        _refuse(self, problem)
        self.stage = WindowStage(channels, height, width, kernel, padding, bits, simd)
        self.channels, self.height, self.width = channels, height, width
        self.kernel, self.padding, self.bits, self.simd = kernel, padding, bits, simd
        self.out_height, self.out_width = self.stage.out_height, self.stage.out_width
        self.beats = self.stage.beats
        self.rows = kernel + 1  # line buffer rows
        # Deliberate bugs for the cosimulation self-check (rtl_gen/faults.py): every window
        # shifted this many pixels to the right; padding read as this value instead of 0.
        self.fault_shift = 0
        self.fault_pad_value = 0
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(unsigned(bits), channels))),
                "o": Out(stream.Signature(data.ArrayLayout(unsigned(bits), simd))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        c, h, w, k, p = self.channels, self.height, self.width, self.kernel, self.padding
        rows, ho, wo, bits, simd = self.rows, self.out_height, self.out_width, self.bits, self.simd
        depth = rows * w  # row r of the stream (counted over images) lives at (r mod rows) * w
        m.submodules.lines = lines = Memory(shape=unsigned(c * bits), depth=max(2, depth), init=[])
        wr = lines.write_port()
        # The reader never reads the pixel being written (below; a padding position reads
        # address 0, whatever is written there, and discards it), so the two ports' collision
        # rule does not matter. Transparent is the cheaper to synthesize: Yosys emulates
        # read-before-write across the ports with two registers per data bit, write-through
        # with one.
        rd = lines.read_port(transparent_for=(wr,))

        def wrap(value, step):
            """``(value + step) mod depth`` for 0 <= value < depth, 0 <= step <= depth."""
            return Mux(value + step >= depth, value + step - depth, value + step)

        # -- input side: pixels go to consecutive addresses (row slots follow each other).
        in_x = Signal(range(max(2, w)), name="in_x")
        wr_addr = Signal(range(max(2, depth)), name="wr_addr")
        # The input's row relative to the read window's image's first row: 0 .. h + rows.
        ahead = Signal(range(h + rows + 2), name="ahead")
        out_y = Signal(range(max(2, ho)), name="out_y")  # the window being read
        out_x = Signal(range(max(2, wo)), name="out_x")
        first_needed = Signal(range(h + 1), name="first_needed")  # max(0, out_y - p)
        m.d.comb += first_needed.eq(Mux(out_y > p, out_y - p, 0))

        # A row may be written once the row it overwrites (rows earlier) is needed no more:
        # pixels already read wait at the memory's output, not in it.
        m.d.comb += self.i.ready.eq(ahead < rows + first_needed)
        take_in = Signal(name="take_in")
        m.d.comb += [
            take_in.eq(self.i.valid & self.i.ready),
            wr.addr.eq(wr_addr),
            wr.data.eq(self.i.payload.as_value()),
            wr.en.eq(take_in),
        ]
        row_done = Signal(name="row_done")
        m.d.comb += row_done.eq(take_in & (in_x == w - 1))
        with m.If(take_in):
            m.d.sync += [
                in_x.eq(Mux(in_x == w - 1, 0, in_x + 1)),
                wr_addr.eq(wrap(wr_addr, 1)),
            ]

        # -- the reader: pixel (ky, kx) of window (out_y, out_x), once the input has passed
        # the last pixel the window needs.
        last_row = Signal(range(h + k), name="last_row")
        last_col = Signal(range(w + k), name="last_col")
        m.d.comb += [
            last_row.eq(Mux(out_y + k - 1 - p < h, out_y + k - 1 - p, h - 1)),
            last_col.eq(Mux(out_x + k - 1 - p < w, out_x + k - 1 - p, w - 1)),
        ]
        window_there = Signal(name="window_there")
        m.d.comb += window_there.eq((ahead > last_row) | ((ahead == last_row) & (in_x > last_col)))
        # Slots (multiples of w) of input rows out_y - p and out_y - p + ky.
        first_slot = (depth - p * w) % depth
        win_base = Signal(range(max(2, depth)), name="win_base", init=first_slot)
        read_base = Signal(range(max(2, depth)), name="read_base", init=first_slot)
        ky = Signal(range(max(2, k)), name="ky")
        kx = Signal(range(max(2, k)), name="kx")
        row = Signal(range(-p, h + k), name="row")
        col = Signal(range(-p, w + k), name="col")
        inside = Signal(name="inside")
        m.d.comb += [
            row.eq(out_y - p + ky),
            col.eq(out_x - p + kx + self.fault_shift),
            # Without padding every window lies inside the image (and the test would be
            # a constant comparison, which lint rightly flags).
            inside.eq((row >= 0) & (row < h) & (col >= 0) & (col < w) if p else 1),
            rd.addr.eq(Mux(inside, read_base + col.as_unsigned(), 0)),
        ]

        # -- the sender: the pixel at the memory's output (``held``), step by step.
        phases = self.stage.phases
        held = Signal(name="held")  # a pixel of the window is at the memory's output
        held_pad = Signal(name="held_pad")  # ... and it lies in the padding
        position = Signal(range(max(2, k * k)), name="position")  # its index in the window
        phase = Signal(range(max(2, len(phases))), name="phase")
        pixel = Signal(data.ArrayLayout(unsigned(bits), c), name="pixel")
        for ch in range(c):
            m.d.comb += pixel[ch].eq(
                Mux(held_pad, self.fault_pad_value, rd.data[ch * bits : (ch + 1) * bits])
            )
        gather_lanes = self.stage.gather_lanes
        gathered = Signal(data.ArrayLayout(unsigned(bits), max(1, gather_lanes)), name="gathered")
        last_pixel = Signal(name="last_pixel")
        full, pixel_done = Signal(name="full"), Signal(name="pixel_done")
        next_phase = Signal.like(phase, name="next_phase")
        m.d.comb += last_pixel.eq(position == k * k - 1)
        out = self.o.payload
        emits, step_go = Signal(name="emits"), Signal(name="step_go")
        with m.Switch(phase):
            for index, ph in enumerate(phases):
                with m.Default() if index == len(phases) - 1 else m.Case(index):
                    m.d.comb += [
                        full.eq(ph.full),
                        pixel_done.eq(ph.pixel_done),
                        next_phase.eq(ph.next),
                    ]
                    for lane in range(simd):
                        if lane < ph.gathered:
                            m.d.comb += out[lane].eq(gathered[lane])
                        elif lane < ph.gathered + ph.take:
                            m.d.comb += out[lane].eq(pixel[ph.offset + lane - ph.gathered])
                    if not ph.full:
                        with m.If(step_go & ~emits):  # gather the pixel's rest for the next beat
                            for j in range(ph.take):
                                m.d.sync += gathered[ph.gathered + j].eq(pixel[ph.offset + j])
        m.d.comb += [emits.eq(full | last_pixel), self.o.valid.eq(held & emits)]
        m.d.comb += step_go.eq(held & (~emits | self.o.ready))
        free = Signal(name="free")  # the memory's output may take the next pixel
        issue = Signal(name="issue")
        m.d.comb += [
            free.eq(~held | (step_go & pixel_done)),
            issue.eq(free & window_there),
            rd.en.eq(issue),
        ]
        with m.If(step_go):
            m.d.sync += phase.eq(Mux(~full & last_pixel, 0, next_phase))
            with m.If(pixel_done):
                m.d.sync += position.eq(Mux(last_pixel, 0, position + 1))
        m.d.sync += held.eq(issue | (held & ~(step_go & pixel_done)))

        # -- the reader moves on with each read: next pixel, next row, next window.
        image_done = Signal(name="image_done")
        next_base = Signal.like(win_base, name="next_base")  # the next window's first row slot
        with m.If(out_x != wo - 1):
            m.d.comb += next_base.eq(win_base)
        with m.Elif(out_y == ho - 1):  # the next image's row 0 follows this image's row h - 1
            m.d.comb += next_base.eq(wrap(win_base, ((h - ho + 1) % rows) * w))
        with m.Else():
            m.d.comb += next_base.eq(wrap(win_base, w))
        with m.If(issue):
            m.d.sync += held_pad.eq(~inside)
            with m.If(kx == k - 1):
                m.d.sync += kx.eq(0)
                with m.If(ky == k - 1):
                    m.d.sync += [
                        ky.eq(0),
                        win_base.eq(next_base),
                        read_base.eq(next_base),
                        out_x.eq(Mux(out_x == wo - 1, 0, out_x + 1)),
                    ]
                    with m.If(out_x == wo - 1):
                        m.d.sync += out_y.eq(Mux(out_y == ho - 1, 0, out_y + 1))
                        m.d.comb += image_done.eq(out_y == ho - 1)
                with m.Else():
                    m.d.sync += [ky.eq(ky + 1), read_base.eq(wrap(read_base, w))]
            with m.Else():
                m.d.sync += kx.eq(kx + 1)
        # The input's row counter relative to the read window's image: +1 per row in, -h per
        # image read.
        m.d.sync += ahead.eq(ahead + row_done - Mux(image_done, h, 0))
        return m


class MaxPool(wiring.Component):
    """``size x size`` max pooling, stride ``size``, on a stream of ``height x width`` pixels of
    ``channels`` values; a last row or column that fills no block is consumed and dropped.

    One memory of ``width div size`` pixels holds the running maxima of the current row of
    blocks (read the cycle before it is updated, with the write forwarded to a read of the
    same block); a block's maximum leaves the cycle after its last pixel arrives. A pixel per
    cycle when the output is not held back.

    Ports
    -----
    i : stream of one pixel (``channels`` values) per beat, raster order, image after image.
    o : stream of one pooled pixel per beat, raster order.
    """

    def __init__(self, channels: int, height: int, width: int, size: int, bits: int) -> None:
        if not 2 <= size <= min(height, width):
            _refuse(self, f"pooling of {size}x{size} does not fit {height}x{width}")
        self.channels, self.height, self.width, self.size, self.bits = (
            channels, height, width, size, bits,
        )  # fmt: skip
        self.out_height, self.out_width = height // size, width // size
        layout = data.ArrayLayout(unsigned(bits), channels)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform) -> Module:
        m = Module()
        c, h, w, s, bits = self.channels, self.height, self.width, self.size, self.bits
        wo = self.out_width
        layout = data.ArrayLayout(unsigned(bits), c)
        m.submodules.maxima = maxima = Memory(shape=unsigned(c * bits), depth=max(2, wo), init=[])
        wr = maxima.write_port()
        rd = maxima.read_port(transparent_for=(wr,))

        x = Signal(range(max(2, w)), name="x")
        y = Signal(range(max(2, h)), name="y")
        bx = Signal(range(max(2, wo + 1)), name="block_x")  # x // s
        dx = Signal(range(max(2, s)), name="dx")
        dy = Signal(range(max(2, s)), name="dy")
        by = Signal(range(max(2, h // s + 1)), name="block_y")

        # Stage 2: the pixel taken last cycle, with its block's running maximum read for it.
        valid2 = Signal(name="valid2")
        pixel2 = Signal(layout, name="pixel2")
        start2, end2, keep2 = Signal(name="start2"), Signal(name="end2"), Signal(name="keep2")
        addr2 = Signal(range(max(2, wo)), name="addr2")
        merged = Signal(layout, name="merged")
        running = Signal(layout, name="running")
        m.d.comb += running.eq(rd.data)
        for ch in range(c):
            a, b = pixel2[ch], running[ch]
            m.d.comb += merged[ch].eq(Mux(start2 | (a > b), a, b))
        hold = Signal(name="hold")  # a finished block waits for the output
        m.d.comb += [
            hold.eq(valid2 & keep2 & end2 & ~self.o.ready),
            self.o.valid.eq(valid2 & keep2 & end2),
            self.o.payload.eq(merged),
            wr.addr.eq(addr2),
            wr.data.eq(merged.as_value()),
            wr.en.eq(valid2 & keep2 & ~hold),
        ]
        take = Signal(name="take")
        m.d.comb += [self.i.ready.eq(~hold), take.eq(self.i.valid & ~hold)]
        # Stage 1: read the running maximum of the arriving pixel's block.
        m.d.comb += [rd.addr.eq(Mux(bx < wo, bx, 0)), rd.en.eq(~hold)]
        with m.If(~hold):
            m.d.sync += [
                valid2.eq(take),
                pixel2.eq(self.i.payload),
                start2.eq((dx == 0) & (dy == 0)),
                end2.eq((dx == s - 1) & (dy == s - 1)),
                keep2.eq((bx < wo) & (by < h // s)),
                addr2.eq(Mux(bx < wo, bx, 0)),
            ]
        with m.If(take):
            with m.If(x == w - 1):
                m.d.sync += [x.eq(0), bx.eq(0), dx.eq(0)]
                with m.If(y == h - 1):
                    m.d.sync += [y.eq(0), by.eq(0), dy.eq(0)]
                with m.Else():
                    m.d.sync += y.eq(y + 1)
                    with m.If(dy == s - 1):
                        m.d.sync += [dy.eq(0), by.eq(by + 1)]
                    with m.Else():
                        m.d.sync += dy.eq(dy + 1)
            with m.Else():
                m.d.sync += x.eq(x + 1)
                with m.If(dx == s - 1):
                    m.d.sync += [dx.eq(0), bx.eq(bx + 1)]
                with m.Else():
                    m.d.sync += dx.eq(dx + 1)
        return m
