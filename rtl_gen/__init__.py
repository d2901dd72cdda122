"""Amaranth generators for the multiplier-free datapath (one module per hardware block).

The generators read only the integer model (:mod:`bchw.core.intmodel`); its semantics are in
``docs/integer-model.md``. The blocks themselves arrive with the RTL-generation work.
"""

# How a folded binary layer's tree applies its weight bits (AdderTree's sign-bit modes): here,
# free of Amaranth, so that the command line can offer them without importing the generator.
ADDER_TREES = ("xor", "relative")
