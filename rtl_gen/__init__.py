"""Amaranth generators for the multiplier-free datapath (one module per hardware block).

The generators read only the integer model (:mod:`bchw.intmodel`); its semantics are in
``docs/integer-model.md``. The blocks themselves arrive with the RTL-generation work.
"""
