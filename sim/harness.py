"""The HDL side of cosimulation: a Verilog harness that streams beats from a file into the design.

Per-beat work stays in the simulator: the harness reads input beats with ``$fscanf``, throttles
them with a pseudo-random gap generator, applies pseudo-random back-pressure to the output and
logs every handshake with its cycle number (``$fwrite``). Python (the cocotb testbench) only
polls a counter every few thousand cycles and checks the log. Everything the harness needs at run
time comes from plusargs, so one build serves any number of images, any stall rate and seed.

Plusargs
--------
``+bchw_beats=FILE``   input beats, one hexadecimal payload per line (``write_beats``).
``+bchw_log=FILE``     handshake log: ``i CYCLE`` when an image's first beat is taken,
                       ``o CYCLE PAYLOAD`` when an output beat is taken (hex payload).
``+bchw_gap=T``        a gap (``i__valid`` withheld from a beat that is ready) starts on a cycle
                       when the input generator's 16-bit draw is below ``T``: the probability
                       times 65536 (0: never);
``+bchw_backpressure=T`` the same for ``o__ready`` low, from the output generator;
``+bchw_burst=B``      each gap or back-pressure event lasts ``B`` cycles (default 1);
``+bchw_seed=S``       seed of both generators (xorshift32; 0 is replaced by 1).
``+bchw_waves=FILE``   dump a waveform (VCD, or FST where the simulator writes it) ...
``+bchw_waves_from=C`` ... from cycle ``C`` (optional: from the start); the testbench ends a run
                       with a waveform window at its last cycle (``end_cycle`` in its config).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bchw.errors import BchwError
from rtl_gen.manifest import Manifest

HARNESS_TOP = "bchw_cosim_harness"
STALL_ONE = 1 << 16  # the stall threshold that means "always"
PATH_CHARS = 1024  # longest file name a plusarg may carry


def check_port_widths(verilog: Path, manifest: Manifest) -> None:
    """The payload ports the Verilog declares must have the manifest's widths: the harness
    connects them by the manifest, and a mismatch would be silently truncated."""
    text = Path(verilog).read_text(encoding="utf-8", errors="replace")
    for direction, name, width in (
        ("input", "i__payload", manifest.input_width),
        ("output", "o__payload", manifest.output_width),
    ):
        found = re.search(rf"\b{direction}\s+(?:wire\s+|reg\s+)?(\[(\d+):0\]\s*)?{name}\s*;", text)
        if found is None:
            raise BchwError(f"{verilog} declares no {direction} {name}")
        declared = int(found.group(2)) + 1 if found.group(2) is not None else 1
        if declared != width:
            raise BchwError(
                f"{verilog} declares {name} with {declared} bits, the manifest says {width}"
            )


def harness_verilog(manifest: Manifest) -> str:
    """The harness module around ``manifest.top``; deterministic text for one manifest."""
    bpi = manifest.beats_per_image
    return f"""\
`timescale 1ns/1ps
// bchw cosimulation harness (written by sim/harness.py; see its docstring for the plusargs).
// Streams beats from a file into {manifest.top} with pseudo-random input gaps and output
// back-pressure, and logs every handshake with its cycle number.
module {HARNESS_TOP} (
    input wire clk /*verilator public_flat_rw*/,
    input wire rst /*verilator public_flat_rw*/
);
    localparam IN_W = {manifest.input_width};
    localparam OUT_W = {manifest.output_width};
    localparam BEATS_PER_IMAGE = {bpi};

    reg  [IN_W-1:0]  i_payload;
    reg              i_valid;
    wire             i_ready;
    wire [OUT_W-1:0] o_payload;
    wire             o_valid;
    reg              o_ready;

    {manifest.top} dut (
        .clk(clk), .rst(rst),
        .i__payload(i_payload), .i__valid(i_valid), .i__ready(i_ready),
        .o__payload(o_payload), .o__valid(o_valid), .o__ready(o_ready)
    );

    // Counters the testbench polls.
    reg [63:0] cycle /*verilator public_flat_rd*/;
    reg [31:0] beats_taken /*verilator public_flat_rd*/;
    reg [31:0] outputs_taken /*verilator public_flat_rd*/;
    reg        input_done /*verilator public_flat_rd*/;
    // Cycles the generators held back a beat that was ready to go, and refused an output.
    reg [63:0] gap_cycles /*verilator public_flat_rd*/;
    reg [63:0] backpressure_cycles /*verilator public_flat_rd*/;
    // Cycles the design refused an offered input beat (its buffers were full).
    reg [63:0] input_refused_cycles /*verilator public_flat_rd*/;

    reg [8*{PATH_CHARS}-1:0] beats_path, log_path, waves_path;
    integer beats_fd, log_fd, got;
    reg [IN_W-1:0] pending;  // the next beat from the file, when have_pending
    reg            have_pending;
    reg [31:0] gap_threshold, bp_threshold, burst, seed, gen_in, gen_out;
    reg [31:0] gap_hold, bp_hold;  // cycles left in the current gap / back-pressure burst
    wire gap_start = gen_in[15:0] < gap_threshold;
    wire bp_start = gen_out[15:0] < bp_threshold;
    wire gap_now = gap_hold != 0 || gap_start;
    wire bp_next = bp_hold != 0 || bp_start;
    reg [63:0] waves_from;
    reg        waves, dumping;

    function [31:0] xorshift32(input [31:0] x);
        reg [31:0] y;
        begin
            y = x ^ (x << 13);
            y = y ^ (y >> 17);
            xorshift32 = y ^ (y << 5);
        end
    endfunction

    initial begin
        if (!$value$plusargs("bchw_beats=%s", beats_path)) begin
            $display("bchw harness: +bchw_beats=FILE is missing");
            $finish;
        end
        if (!$value$plusargs("bchw_log=%s", log_path)) begin
            $display("bchw harness: +bchw_log=FILE is missing");
            $finish;
        end
        if (!$value$plusargs("bchw_gap=%d", gap_threshold)) gap_threshold = 0;
        if (!$value$plusargs("bchw_backpressure=%d", bp_threshold)) bp_threshold = 0;
        if (!$value$plusargs("bchw_burst=%d", burst)) burst = 1;
        if (burst == 0) burst = 1;
        if (!$value$plusargs("bchw_seed=%d", seed)) seed = 1;
        if (seed == 0) seed = 1;
        beats_fd = $fopen(beats_path, "r");
        log_fd = $fopen(log_path, "w");
        if (beats_fd == 0 || log_fd == 0) begin
            $display("bchw harness: cannot open the beats or the log file");
            $finish;
        end
        got = $fscanf(beats_fd, "%h\\n", pending);
        have_pending = (got == 1);
        waves = $value$plusargs("bchw_waves=%s", waves_path);
        if (!$value$plusargs("bchw_waves_from=%d", waves_from)) waves_from = 0;
        dumping = 1'b0;
        if (waves && waves_from == 0) begin
            $dumpfile(waves_path);
            $dumpvars(0, {HARNESS_TOP});
            dumping = 1'b1;
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            i_valid <= 1'b0;
            o_ready <= 1'b0;
            cycle <= 64'd0;
            beats_taken <= 32'd0;
            outputs_taken <= 32'd0;
            input_done <= 1'b0;
            gap_cycles <= 64'd0;
            backpressure_cycles <= 64'd0;
            input_refused_cycles <= 64'd0;
            gen_in <= seed;
            gen_out <= xorshift32(seed ^ 32'h9E3779B9);
            gap_hold <= 32'd0;
            bp_hold <= 32'd0;
        end else begin
            cycle <= cycle + 64'd1;
            gen_in <= xorshift32(gen_in);
            gen_out <= xorshift32(gen_out);
            // The dump starts at waves_from; the testbench ends the run at the window's end
            // (end_cycle in its config), since Verilator does not honour $dumpoff.
            if (waves && !dumping && cycle == waves_from) begin
                $dumpfile(waves_path);
                $dumpvars(0, {HARNESS_TOP});
                dumping = 1'b1;
            end
            // Each generator starts a burst of `burst` blocked cycles with its probability.
            gap_hold <= gap_hold != 0 ? gap_hold - 32'd1 : (gap_start ? burst - 32'd1 : 32'd0);
            bp_hold <= bp_hold != 0 ? bp_hold - 32'd1 : (bp_start ? burst - 32'd1 : 32'd0);
            o_ready <= !bp_next;
            if (o_valid && !o_ready) backpressure_cycles <= backpressure_cycles + 64'd1;
            if (i_valid && !i_ready) input_refused_cycles <= input_refused_cycles + 64'd1;
            if (i_valid && i_ready) begin
                if (beats_taken % BEATS_PER_IMAGE == 0) begin
                    $fwrite(log_fd, "i %0d\\n", cycle);
                end
                beats_taken <= beats_taken + 32'd1;
            end
            // A beat once offered stays until taken; a new one may be offered after that.
            if (!i_valid || i_ready) begin
                if (have_pending && !gap_now) begin
                    i_payload <= pending;
                    i_valid <= 1'b1;
                    got = $fscanf(beats_fd, "%h\\n", pending);
                    have_pending = (got == 1);
                end else begin
                    i_valid <= 1'b0;
                    input_done <= !have_pending;
                    if (have_pending) gap_cycles <= gap_cycles + 64'd1;
                end
            end
            if (o_valid && o_ready) begin
                $fwrite(log_fd, "o %0d %h\\n", cycle, o_payload);
                $fflush(log_fd);
                outputs_taken <= outputs_taken + 32'd1;
            end
        end
    end
endmodule
"""


def image_beats(images: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Pixels to beats: ``uint8[N * beats_per_image, lanes]``, padding lanes zero."""
    n = len(images)
    padded = np.zeros((n, manifest.beats_per_image * manifest.lanes), dtype=np.uint64)
    padded[:, : manifest.input_size] = images
    return padded.reshape(n * manifest.beats_per_image, manifest.lanes)


def write_beats(path: Path, images: np.ndarray, manifest: Manifest) -> None:
    """One hexadecimal line per beat; lane k at bits [k*lane_bits, (k+1)*lane_bits)."""
    beats = image_beats(images, manifest)
    digits = -(-manifest.input_width // 4)
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(manifest.lane_bits, dtype=np.uint64)
    with open(path, "wb") as out:
        for start in range(0, len(beats), 2048):
            chunk = beats[start : start + 2048]
            # Bits, least significant first, then nibbles, most significant first.
            bits = ((chunk[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
            bits = bits.reshape(len(chunk), manifest.input_width)
            bits = np.pad(bits, ((0, 0), (0, digits * 4 - manifest.input_width)))
            nibbles = bits.reshape(len(chunk), digits, 4) @ np.array([1, 2, 4, 8], np.uint8)
            text = hex_digits[nibbles[:, ::-1]]
            newline = np.full((len(chunk), 1), ord("\n"), dtype=np.uint8)
            out.write(np.hstack([text, newline]).tobytes())


def pack_outputs(scores: np.ndarray, predicted: np.ndarray, manifest: Manifest) -> list[int]:
    """The output payloads the reference expects, as integers."""
    payloads = []
    index = manifest.index_field
    for row, cls in zip(scores, predicted, strict=True):
        value = index.insert(cls)
        for field, score in zip(manifest.score_fields, row, strict=True):
            value |= field.insert(score)
        payloads.append(value)
    return payloads
