"""opensr-test's metrics (Aybar et al., 2024) for one (lr, sr, hr) triple: a benchmark helper.

Not library code: it needs the optional extra ``pip install -e ".[eval]"`` (see
``docs/field_metrics.md`` for how to install it without replacing your torch). Two calls:

* :func:`opensr_metrics` ``(lr, sr, hr, *, scale)`` -> consistency (reflectance, spectral,
  spatial), synthesis, improvement / omission / hallucination, as opensr-test's
  ``Metrics().compute`` reports them with its defaults and a 2 px border;
* :func:`score_against` ``(ref_hr, sr, lr, *, scale)``: the same, reference first, for
  ``real_series.py``.

Our data are adapted honestly (:func:`prepare`): invalid (NaN) pixels are cropped away (the
bounding box of the valid low-resolution pixels) and the few left inside are filled with the
same value in all three images, so they carry no distance; a single band (NDVI) is
replicated to 3 channels (opensr-test's distances are channel means, so they are unchanged;
its spectral angle is then 0 by construction and reported as NaN) and a normalised index in
[-1, 1] is mapped to (x + 1) / 2, a positive value like a reflectance (opensr-test's
normalised difference ``|x - y| / |x + y|`` needs positive values).

``python benchmarks/field_metrics.py --demo`` runs one real-series window (Wald's protocol of
``real_series.py``, the asked date in the stack): splatsr's ``target_date`` fit against
bicubic of that date's own 10 m observation.
"""

from __future__ import annotations

import contextlib
import random
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

INSTALL = 'pip install -e ".[eval]"'
# opensr-test's keys -> ours (the group each metric belongs to in its paper)
KEYS = {"reflectance": "consistency_reflectance", "spectral": "consistency_spectral",
        "spatial": "consistency_spatial", "synthesis": "synthesis",
        "im_metric": "improvement", "om_metric": "omission", "ha_metric": "hallucination"}


def load_opensr_test() -> types.ModuleType:
    """Import opensr-test, or raise one line that says how to install it.

    opensr-test imports ``satalign``, whose ``__init__`` imports its LightGlue aligner and so
    torchvision. A torchvision built for another torch (e.g. PyPI's CUDA build beside a CPU
    torch) fails to import; then that aligner alone is left out (opensr-test's default
    aligner, phase correlation, does not use it).
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing or built for another torch: satalign's LightGlue goes
        for name in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.modules.setdefault("satalign.lgm", _no_lightglue())
    try:
        import opensr_test
    except ImportError as err:
        raise ImportError(f"opensr-test is not installed ({err}); install the extra: "
                          f"{INSTALL} (docs/field_metrics.md)") from None
    return opensr_test


def _no_lightglue() -> types.ModuleType:
    """A stand-in for ``satalign.lgm`` whose aligner says why it is missing."""
    mod = types.ModuleType("satalign.lgm")

    class LGM:  # noqa: D401 - the name satalign imports
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("satalign's LightGlue aligner needs a torchvision matching "
                              "your torch; use spatial_method='pcc' (the default)")

    mod.LGM = LGM
    return mod


@dataclass(frozen=True)
class Triple:
    """(lr, sr, hr) ready for opensr-test: (C, h, w), (C, H, W), (C, H, W) float32, no NaN."""

    lr: np.ndarray
    sr: np.ndarray
    hr: np.ndarray
    crop_lr_px: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1 of the input lr
    filled_frac: float  # share of the cropped lr pixels filled (invalid inside the crop)
    replicated: bool  # one band replicated to 3 channels


def prepare(lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, scale: int,
            index: bool = False) -> Triple:
    """Crop and fill NaNs, replicate a single band, map an index to [0, 1].

    Parameters
    ----------
    lr, sr, hr
        (B, h, w), (B, H, W), (B, H, W) (or without B) with H = h * scale, W = w * scale;
        reflectance (or an index with ``index``), NaN where invalid.
    scale
        The integer resolution ratio.
    index
        The bands are normalised indices in [-1, 1] (NDVI): mapped to (x + 1) / 2.

    Returns
    -------
    Triple
        A low-resolution pixel is valid when it and its scale x scale high-resolution pixels
        in sr and hr are finite in every band. The crop is the bounding box of the valid
        pixels; invalid pixels inside it get the band's median of the valid lr pixels in lr
        and in their blocks of sr and hr (equal images: zero distance there).
    """
    lr, sr, hr = (np.asarray(a, np.float64) for a in (lr, sr, hr))
    lr, sr, hr = (a[None] if a.ndim == 2 else a for a in (lr, sr, hr))
    B, h, w = lr.shape
    if sr.shape != hr.shape or sr.shape != (B, h * scale, w * scale):
        raise ValueError(f"sr and hr must be (B, h*scale, w*scale) = {(B, h * scale, w * scale)}"
                         f" for lr {lr.shape} and scale {scale}; got {sr.shape}, {hr.shape}")
    blocks = [np.isfinite(a).all(0).reshape(h, scale, w, scale).all((1, 3)) for a in (sr, hr)]
    ok = np.isfinite(lr).all(0) & blocks[0] & blocks[1]  # (h, w)
    if not ok.any():
        raise ValueError("no pixel is valid in all of lr, sr and hr")
    rows, cols = np.flatnonzero(ok.any(1)), np.flatnonzero(ok.any(0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    ok = ok[r0:r1, c0:c1]
    lr = lr[:, r0:r1, c0:c1].copy()
    sr = sr[:, r0 * scale:r1 * scale, c0 * scale:c1 * scale].copy()
    hr = hr[:, r0 * scale:r1 * scale, c0 * scale:c1 * scale].copy()
    bad_hr = np.repeat(np.repeat(~ok, scale, 0), scale, 1)
    for b in range(B):
        fill = np.median(lr[b][ok])
        lr[b][~ok] = fill
        sr[b][bad_hr] = fill
        hr[b][bad_hr] = fill
    if index:
        lr, sr, hr = ((a + 1.0) / 2.0 for a in (lr, sr, hr))
    replicated = B == 1
    if replicated:  # opensr-test squeezes a (1, H, W) image to (H, W) and fails
        lr, sr, hr = (np.repeat(a, 3, 0) for a in (lr, sr, hr))
    return Triple(*(a.astype(np.float32) for a in (lr, sr, hr)), crop_lr_px=(r0, r1, c0, c1),
                  filled_frac=float(1 - ok.mean()), replicated=replicated)


def rgb_indices(bands: Sequence[str] | None, n_bands: int) -> list[int]:
    """Indices of B04, B03, B02 in ``bands`` (red, green, blue), else the first three."""
    if bands and {"B04", "B03", "B02"} <= set(bands):
        return [list(bands).index(b) for b in ("B04", "B03", "B02")]
    return [0, 1, 2] if n_bands >= 3 else [0, 0, 0]


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """opensr-test seeds every RNG (42) and sets cuDNN flags: restore them after."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[3:]


def opensr_metrics(lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, *, scale: int,
                   border_px: int = 2, bands: Sequence[str] | None = None,
                   index: bool = False, **config: Any) -> dict[str, float]:
    """opensr-test's ``Metrics(...).compute(lr, sr, hr)`` on one triple of our arrays.

    Parameters
    ----------
    lr, sr, hr
        (B, h, w) input, (B, H, W) super-resolved, (B, H, W) reference (H = h * scale),
        reflectance 0-1 (or an index with ``index``), NaN where invalid (see :func:`prepare`).
    scale
        The integer resolution ratio H / h.
    border_px
        opensr-test's ``border_mask``: high-resolution pixels left out at every edge (and
        border_px / scale low-resolution ones); a multiple of ``scale``.
    bands
        Band names (``B02 B03 B04 B08``): B04, B03, B02 are opensr-test's RGB.
    index
        The bands are normalised indices in [-1, 1] (NDVI).
    **config
        Other fields of ``opensr_test.Config`` (its defaults otherwise).

    Returns
    -------
    dict
        ``consistency_reflectance`` (L1 of lr and sr downsampled), ``consistency_spectral``
        (spectral angle, degrees; NaN for one band), ``consistency_spatial`` (phase-correlation
        shift, lr px), ``synthesis`` (L1 of sr and lr upsampled), ``improvement``,
        ``omission``, ``hallucination`` (shares summing to 1), ``filled_frac``,
        ``valid_px`` (lr pixels scored before the border).
    """
    if border_px < 0 or border_px % scale:
        raise ValueError(f"border_px must be a multiple of scale ({scale}) >= 0, got "
                         f"{border_px} (opensr-test crops border_px // scale lr pixels)")
    osr = load_opensr_test()
    t = prepare(lr, sr, hr, scale=scale, index=index)
    if min(t.lr.shape[1:]) <= 2 * (border_px // scale) + 2:
        raise ValueError(f"the valid region {t.lr.shape[1:]} (lr px) is too small for a "
                         f"{border_px} px border")
    cfg = dict(device="cpu", border_mask=border_px,
               rgb_bands=rgb_indices(bands, t.lr.shape[0])) | config
    with _rng_kept(), torch.no_grad():
        got = osr.Metrics(**cfg).compute(lr=torch.from_numpy(t.lr), sr=torch.from_numpy(t.sr),
                                         hr=torch.from_numpy(t.hr))
    out = {KEYS.get(k, k): float(v) for k, v in got.items()}
    if t.replicated:
        out["consistency_spectral"] = float("nan")
    out["filled_frac"] = t.filled_frac
    out["valid_px"] = int(t.lr.shape[1] * t.lr.shape[2])
    return out


def score_against(ref_hr: np.ndarray, sr: np.ndarray, lr: np.ndarray, *, scale: int,
                  **kwargs: Any) -> dict[str, float]:
    """:func:`opensr_metrics` with the reference first: ``score_against(ref, img, lr, ...)``.

    For ``real_series.py``: ``lr`` is the asked date's own (simulated) low-resolution
    observation, ``ref_hr`` the real date at the output resolution, ``sr`` any method's output
    (a splatsr fit, bicubic of ``lr``, ...). Keyword arguments as :func:`opensr_metrics`.
    """
    return opensr_metrics(lr, sr, ref_hr, scale=scale, **kwargs)


def bar_figure(groups: dict[str, list[dict]], path: str, *, note: str = "") -> None:
    """Stacked bars of improvement / omission / hallucination: one panel per group, one bar
    per row (``row["method"]``); the shares sum to 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = (("improvement", "tab:blue"), ("omission", "tab:green"),
             ("hallucination", "tab:red"))
    fig, axs = plt.subplots(len(groups), 1, squeeze=False,
                            figsize=(7, 0.5 + sum(0.35 * len(r) + 0.6 for r in groups.values())),
                            gridspec_kw=dict(height_ratios=[len(r) for r in groups.values()]))
    for ax, (title, rows) in zip(axs[:, 0], groups.items()):
        names = [r["method"] for r in rows]
        left = np.zeros(len(rows))
        for key, color in parts:
            v = np.array([r[key] for r in rows])
            ax.barh(names, v, left=left, color=color, label=key)
            for y, (x0, x) in enumerate(zip(left, v)):
                if x > 0.06:
                    ax.text(x0 + x / 2, y, f"{x:.2f}", ha="center", va="center", fontsize=7,
                            color="white")
            left += v
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.legend(*axs[0, 0].get_legend_handles_labels(), ncol=3, fontsize=8,
               loc="upper center")
    axs[-1, 0].set_xlabel("opensr-test share of the scored pixels" + (f" ({note})" if note
                                                                       else ""), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # python benchmarks/field_metrics.py --demo [...]: field_demo.py
    from field_demo import main

    main([a for a in sys.argv[1:] if a != "--demo"])
