"""What image a fit renders: the products and their 1-sigma maps (arrays in, arrays out).

One fit (:func:`splatsr.core.solver.fit_arrays`) holds a shared fine scene, every date's
shift, radiometry and change layer. A product is what is rendered from it:

* the season's **consensus** (no target date): the shared scene, its 10 m-scale content moved
  to the per-pixel median of the dates (:class:`~.consensus.DateMedianAnchor`);
* the scene **at a target date** that is not an acquisition: the time-weighted fit, its 10 m
  content moved to a time-weighted robust location of the dates
  (:func:`~.consensus.target_correction`, :class:`~.consensus.PixelAnchor`);
* the **observed-date** scene of an acquisition (a target date that is one, and every date of
  the series product): the shared scene corrected until that date's sensor view reproduces
  its own observation to within the noise (:mod:`~.observed`);
* the **1-sigma map** of the rendered scene (:mod:`~.uncertainty`).

:mod:`~.cubic` brings pixel-grid corrections to the output grid. Writing products to files is
the I/O layer's (:mod:`splatsr.io.export`, :mod:`splatsr.io.series`); choosing them per run is
the workflow's (:class:`splatsr.workflow.StackFit`).
"""
