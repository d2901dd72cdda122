"""The core: everything up to and including the integer model, free of any hardware.

- :mod:`bchw.core.data`: data sets (scikit-learn's digits, MNIST IDX files, ``.npz`` archives);
- :mod:`bchw.core.options`: the training and export options (no PyTorch import);
- :mod:`bchw.core.nn`, :mod:`bchw.core.train`, :mod:`bchw.core.threads`,
  :mod:`bchw.core.checkpoint`: BinaryConnect training in PyTorch;
- :mod:`bchw.core.export`: a checkpoint to an integer model;
- :mod:`bchw.core.intmodel`: the integer model and its file format, the contract with the
  hardware (``docs/integer-model.md``);
- :mod:`bchw.core.reference`: the bit-exact numpy reference; :mod:`bchw.core.evaluate` and
  :mod:`bchw.core.precision` (``bchw eval``, ``bchw sweep-bits``);
- :mod:`bchw.core.synthetic`: random integer models of any shape.

Nothing here imports :mod:`rtl_gen`, :mod:`sim` or the layers above (``lint-imports`` checks).
"""
