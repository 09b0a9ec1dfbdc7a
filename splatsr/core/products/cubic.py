"""Cubic convolution (bicubic interpolation) from the pixel grid to an output grid.

The anchors of :mod:`~splatsr.core.products.consensus` live at the 10 m pixel grid, in each band's
observed frame; they are brought to the output grid here. One axis at a time: a sparse
``(n_out, n_in)`` matrix with 4 taps per row (Keys 1981, ``a = -0.5``), edges replicated,
and each band sampled at its band offset.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

KEYS_A = -0.5  # cubic convolution kernel parameter (Keys 1981; bicubic interpolation)


def keys_kernel(x: np.ndarray) -> np.ndarray:
    """Cubic convolution weights at distances ``x`` (in input pixels)."""
    x = np.abs(x)
    a = KEYS_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def sample_positions(*, pixel_m: float, resolution_m: float, extent_m: float,
                     at_m: float = 0.0) -> np.ndarray:
    """(n_out,) where each output pixel centre of ``resolution_m`` over ``extent_m`` samples
    the input, ``at_m`` further along the axis, in input pixel indices (0 = first centre)."""
    n_out = round(extent_m / resolution_m)
    return ((np.arange(n_out) + 0.5) * resolution_m + at_m) / pixel_m - 0.5


def cubic_matrix(n_in: int, *, pixel_m: float, resolution_m: float, extent_m: float,
                 at_m: float = 0.0) -> sparse.csr_matrix:
    """(n_out, n_in) sparse cubic interpolation from pixel centres of ``pixel_m`` to those of
    ``resolution_m`` over ``extent_m``, sampling the input ``at_m`` further along the axis
    (edges replicated; rows sum to 1; 4 entries per row)."""
    pos = sample_positions(pixel_m=pixel_m, resolution_m=resolution_m, extent_m=extent_m,
                           at_m=at_m)
    j = np.floor(pos).astype(int)[:, None] + np.arange(-1, 3)[None]  # (n_out, 4)
    rows = np.repeat(np.arange(len(pos)), 4)
    vals = keys_kernel(pos[:, None] - j).ravel()
    # duplicates (replicated edges) are summed by the conversion
    return sparse.coo_matrix((vals, (rows, np.clip(j, 0, n_in - 1).ravel())),
                             shape=(len(pos), n_in)).tocsr()


def nearest_index(n_in: int, *, pixel_m: float, resolution_m: float, extent_m: float,
                  at_m: float = 0.0) -> np.ndarray:
    """(n_out,) the input pixel that contains each output pixel's sample point (clipped)."""
    pos = sample_positions(pixel_m=pixel_m, resolution_m=resolution_m, extent_m=extent_m,
                           at_m=at_m)
    return np.clip(np.floor(pos + 0.5).astype(int), 0, n_in - 1)


def axis_operators(shape: tuple[int, int], *, pixel_m: float, resolution_m: float,
                   offset_m: tuple[float, float] = (0.0, 0.0)
                   ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """(my, mx): the row (H', H) and column (W', W) cubic matrices of an (H, W) pixel grid for
    a band whose content sits ``offset_m`` = (dx_m east, dy_m north) from the output frame."""
    (H, at_y), (W, at_x) = axis_offsets(shape, offset_m)
    my = cubic_matrix(H, pixel_m=pixel_m, resolution_m=resolution_m, extent_m=H * pixel_m,
                      at_m=at_y)
    mx = cubic_matrix(W, pixel_m=pixel_m, resolution_m=resolution_m, extent_m=W * pixel_m,
                      at_m=at_x)
    return my, mx


def axis_nearest(shape: tuple[int, int], *, pixel_m: float, resolution_m: float,
                 offset_m: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(near_y (H',), near_x (W',)): the pixel row and column under each output row and
    column, for the same grid and band offset as :func:`axis_operators`."""
    (H, at_y), (W, at_x) = axis_offsets(shape, offset_m)
    return (nearest_index(H, pixel_m=pixel_m, resolution_m=resolution_m, extent_m=H * pixel_m,
                          at_m=at_y),
            nearest_index(W, pixel_m=pixel_m, resolution_m=resolution_m, extent_m=W * pixel_m,
                          at_m=at_x))


def axis_offsets(shape: tuple[int, int], offset_m: tuple[float, float]
                 ) -> tuple[tuple[int, float], tuple[int, float]]:
    """((H, at_y_m), (W, at_x_m)): each axis's length and where it samples its input. Rows
    grow southwards: content ``dy_m`` north is sampled ``dy_m`` towards smaller rows."""
    return (shape[0], -offset_m[1]), (shape[1], offset_m[0])


def upsample(image: np.ndarray, *, pixel_m: float, resolution_m: float,
             band_offsets_m: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W) at the pixel grid -> (B, H', W') on the ``resolution_m`` grid.

    Band ``b`` lives in that band's observed frame, displaced by its band offset
    ``(dx_m, dy_m)`` (east, north) from the output frame: it is sampled there.
    """
    B = len(image)
    off = np.zeros((B, 2)) if band_offsets_m is None else np.asarray(band_offsets_m)
    out = []
    for b in range(B):
        my, mx = axis_operators(image.shape[1:], pixel_m=pixel_m, resolution_m=resolution_m,
                                offset_m=tuple(off[b]))
        out.append(my @ (mx @ image[b].astype(np.float64).T).T)  # (H', W')
    return np.stack(out).astype(np.float32)
