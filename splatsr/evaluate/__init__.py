"""Evidence that a result can be trusted: known truth, independent shifts, scores, figures.

:mod:`~splatsr.evaluate.simulate` observes a high-resolution truth with the sensor model
(known shifts, PSF, noise); :mod:`~splatsr.evaluate.registration` estimates shifts
independently by phase correlation and compares them with a fit's; :mod:`~splatsr.evaluate.
metrics` scores an output against a reference image; :mod:`~splatsr.evaluate.sweep` runs PSF
and number-of-dates ablations; :mod:`~splatsr.evaluate.report` draws the figures.
"""

_HOMES = {"cpsnr": "splatsr.evaluate.metrics",
          **dict.fromkeys(("compare_shifts", "phasecorr_seed", "phasecorr_shifts",
                           "validate_shifts"), "splatsr.evaluate.registration"),
          **dict.fromkeys(("read_truth", "simulate", "simulate_stack"),
                          "splatsr.evaluate.simulate")}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:  # lazy: importing the package stays cheap
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
