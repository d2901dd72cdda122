"""Estimation: what the binary design costs on an FPGA, against a multiply-accumulate design.

- :mod:`bchw.estimate.options`: :class:`~bchw.estimate.options.EstimateOptions` (no heavy
  imports, so ``bchw estimate --help`` reads its defaults at once);
- :mod:`bchw.estimate.run`: ``bchw estimate`` as functions (:func:`~bchw.estimate.run.estimate`,
  :func:`~bchw.estimate.run.sweep`), running the tool jobs;
- :mod:`bchw.estimate.synth`: Yosys synthesis per FPGA family and the cells it counts;
- :mod:`bchw.estimate.pnr`: nextpnr place and route, the devices and their capacities;
- :mod:`bchw.estimate.analytic`: the analytical model (closed-form counts, fitted costs in
  ``coefficients.json``) and :mod:`bchw.estimate.calibration`, the designs it is fitted on;
- :mod:`bchw.estimate.energy`: energy per inference (an estimate from per-operation energies);
- :mod:`bchw.estimate.report`: report.md and the plots beside report.json.
"""
