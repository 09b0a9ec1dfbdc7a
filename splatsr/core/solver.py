"""Joint scene-and-shift solver: Adam warm-up, then L-BFGS (strong Wolfe), coarse to fine.

The data are normalised per band (valid pixels to zero mean, unit spread) so that the loss,
its gradients and the optimisers' tolerances do not depend on the reflectance scale; the
result is mapped back to reflectance exactly (a constant weight field renders to that
constant, so the affine map commutes with rendering).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm  # not tqdm.auto: its import warns in notebooks without ipywidgets

from splatsr.core.checks import MIN_OBSERVATIONS, check_stack_array
from splatsr.core.model import (
    SplatGrid,
    render_latent,
    render_observations,
    resample_weights,
)
from splatsr.core.robust import (
    MIN_SIGMA,
    apply_radiometry,
    check_loss,
    observation_weights,
    regauge,
    rho,
    robust_sigma,
)
from splatsr.errors import ConfigError, StackError

# The plain settings (``splatsr fit --plain``): least squares, no per-date radiometry, no date
# weights. The default is robust (Cauchy loss, a gain/offset per date and band, date
# weights): on stacks with haze, clouds and drift the plain fit loses 10-15 dB to it, while on
# clean stacks simulated from real texture the robust fit costs ~0.25 dB (+2.96 vs +3.21 dB
# over bicubic at 5 m, 3 crops, 16 dates; docs/quality.md).
PLAIN = dict(loss="l2", radiometry=False, reweight=False)


@dataclass
class FitConfig:
    """Settings of one fit. Every field has a default that works for Sentinel-2 10 m."""

    psf_sigma_m: float = 4.0  # Gaussian PSF width; S2's 10 m MTF suggests 3-4 m
    splat_spacing_m: float = 2.0  # distance between splat centres at the finest level
    splat_sigma_m: float | None = None  # splat width; None = 0.8 x the spacing
    coarse_levels: int = 1  # extra levels before the finest, each at twice the spacing
    adam_steps: int = 60  # Adam warm-up steps at the finest level (half at coarse levels)
    adam_lr: float = 0.3  # Adam step size of the splat weights (noise units)
    adam_lr_shifts_m: float = 0.05  # Adam step size of the shifts (m) and gains/offsets
    lbfgs_iters: int = 60  # L-BFGS iterations (at most) at the finest level, half at coarse
    lbfgs_history: int = 20  # L-BFGS memory (pairs of vectors)
    tv_weight: float = 0.05  # smoothed-TV weight, in units of the residual noise level; 0 = off
    fit_shifts: bool = True  # optimise the per-observation shifts (else keep the initial ones)
    loss: str = "cauchy"  # data term: robust "cauchy" (default) / "charbonnier", or "l2"
    robust_scale: float = 2.385  # loss scale in units of the residual noise level
    radiometry: bool = True  # fit a gain and an offset per observation and band
    reweight: bool = True  # down-weight observations whose residuals are unusually large
    noise_from_residuals: bool = True  # TV weight and loss scale in the residuals' noise level
    device: str = "auto"  # "auto", "cpu" or "cuda"
    seed: int = 0  # seeds torch for reproducible fits
    progress: bool = False  # show a progress bar on stderr

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range."""
        checks = [
            (self.psf_sigma_m >= 0, f"psf_sigma_m must be >= 0, got {self.psf_sigma_m}"),
            (self.splat_spacing_m > 0,
             f"splat_spacing_m must be > 0, got {self.splat_spacing_m}"),
            (self.coarse_levels >= 0, f"coarse_levels must be >= 0, got {self.coarse_levels}"),
            (self.adam_steps >= 0, f"adam_steps must be >= 0, got {self.adam_steps}"),
            (self.lbfgs_iters >= 0, f"lbfgs_iters must be >= 0, got {self.lbfgs_iters}"),
            (self.adam_lr > 0, f"adam_lr must be > 0, got {self.adam_lr}"),
            (self.adam_lr_shifts_m > 0,
             f"adam_lr_shifts_m must be > 0, got {self.adam_lr_shifts_m}"),
            (self.tv_weight >= 0, f"tv_weight must be >= 0, got {self.tv_weight}"),
            (self.robust_scale > 0, f"robust_scale must be > 0, got {self.robust_scale}"),
            (self.device in ("auto", "cpu", "cuda"),
             f"device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        check_loss(self.loss)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but torch sees no CUDA device; "
                              "use --device cpu or install a CUDA build of torch")


@dataclass
class FitResult:
    """What a fit found: the scene, the shifts and how it got there."""

    weights: np.ndarray  # (B, Ky, Kx) splat weights in reflectance units
    shifts_m: np.ndarray  # (T, 2) (dx_m, dy_m): content displacement, east/north, mean zero
    grid: SplatGrid  # the finest splat lattice
    config: FitConfig
    band_names: tuple[str, ...]
    residual_rms: np.ndarray  # (T,) RMS misfit per observation, reflectance
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per logged step
    seconds: float = 0.0  # wall time of the fit
    gains: np.ndarray | None = None  # (T, B) radiometric gain per observation (median date 1)
    offsets: np.ndarray | None = None  # (T, B) radiometric offset per observation, reflectance
    obs_weights: np.ndarray | None = None  # (T,) weight of each observation in the fit (0-1]
    outlier_fraction: np.ndarray | None = None  # (T,) share of pixels the loss treats as outliers
    noise_level: np.ndarray | None = None  # (B,) noise sigma the fit worked in, reflectance

    def render(self, resolution_m: float = 2.5) -> np.ndarray:
        """The latent scene over the stack's extent at ``resolution_m``: (B, H', W')."""
        w = torch.from_numpy(self.weights.astype(np.float64))
        with torch.no_grad():
            return render_latent(w, grid=self.grid, resolution_m=resolution_m).numpy() \
                .astype(np.float32)

    def predict(self) -> np.ndarray:
        """The observations as the model predicts them: (T, B, H, W), reflectance."""
        w = torch.from_numpy(self.weights.astype(np.float64))
        s = torch.from_numpy(self.shifts_m.astype(np.float64))
        with torch.no_grad():
            pred = render_observations(w, s, grid=self.grid,
                                       psf_sigma_m=self.config.psf_sigma_m).numpy()
        if self.gains is not None:
            pred = pred * self.gains[:, :, None, None]
        if self.offsets is not None:
            pred = pred + self.offsets[:, :, None, None]
        return pred.astype(np.float32)

    def per_observation(self) -> dict[str, Any]:
        """Columns of the shifts CSV besides the shifts: misfit, weight, radiometry."""
        cols: dict[str, Any] = {"residual_rms": self.residual_rms}
        if self.obs_weights is not None:
            cols["weight"] = self.obs_weights
        if self.outlier_fraction is not None:
            cols["outlier_fraction"] = self.outlier_fraction
        for name, arr in (("gain", self.gains), ("offset", self.offsets)):
            if arr is not None:
                for b, band in enumerate(self.band_names):
                    cols[f"{name}_{band}"] = arr[:, b]
        return {k: [float(x) for x in v] for k, v in cols.items()}


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _tv(w: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """Smoothed isotropic total variation of (B, Ky, Kx), summed over splats.

    ``w`` is in noise units, so ``eps`` (the smoothing) is a tenth of the noise level.
    """
    gx = w[:, :-1, 1:] - w[:, :-1, :-1]
    gy = w[:, 1:, :-1] - w[:, :-1, :-1]
    return torch.sqrt(gx * gx + gy * gy + eps * eps).sum()


def noise_sigma(band: np.ndarray) -> float:
    """Robust noise level of a band stack (T, H, W), NaN-aware.

    The median absolute deviation of the diagonal second difference
    ``(x[i,j] - x[i,j+1] - x[i+1,j] + x[i+1,j+1]) / 2``, which for white noise of standard
    deviation s has standard deviation s, and which suppresses the smooth (PSF-blurred)
    signal. Texture at the pixel scale still leaks in, so this is an upper estimate.
    """
    d = 0.5 * (band[:, :-1, :-1] - band[:, :-1, 1:] - band[:, 1:, :-1] + band[:, 1:, 1:])
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 1.0
    mad = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    spread = float(np.std(d))
    return mad if mad > 1e-8 else (spread if spread > 1e-8 else 1.0)


def _initial_weights(y: np.ndarray, valid: np.ndarray, grid: SplatGrid) -> np.ndarray:
    """Each splat takes the median of the observations at the pixel under its centre."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels become 0 below
        comp = np.nanmedian(np.where(valid, y, np.nan), axis=0)  # (B, H, W)
    comp = np.nan_to_num(comp, nan=0.0)
    rows = np.clip(np.floor(grid.centres_m(grid.ny).numpy() / grid.pixel_m).astype(int), 0,
                   grid.height - 1)
    cols = np.clip(np.floor(grid.centres_m(grid.nx).numpy() / grid.pixel_m).astype(int), 0,
                   grid.width - 1)
    return comp[:, rows][:, :, cols]


_DIVERGED = ("the fit diverged (non-finite loss or shifts); try a smaller adam_lr or a "
             "positive tv_weight")


def _segments(n: int, restart: int) -> list[tuple[int, int]]:
    """L-BFGS iterations ``[0, n)`` split at ``restart`` (when 0 < restart < n)."""
    cuts = [0] + ([restart] if 0 < restart < n else []) + [n]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


# Loss evaluations per L-BFGS iteration, on average (torch's default budget). In noise units
# the unit step is nearly always accepted at once; the strong-Wolfe search spends the rest
# where it is not. L-BFGS stops early if the budget runs out or the line search finds no
# decrease (at the finest level typically after 5-30 iterations: converged to float32).
LBFGS_EVALS_PER_ITER = 1.25


def _run_lbfgs(params: list[torch.Tensor],
               loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]], *, n_iter: int,
               history: int, log: Callable[[int, torch.Tensor, torch.Tensor], None],
               bar: Any) -> None:
    """``n_iter`` L-BFGS iterations (strong Wolfe) in one optimiser call.

    One call, not ``n_iter`` calls of one iteration: each call re-evaluates the loss at its
    starting point (two evaluations per iteration instead of about 1.15). ``log(iteration, loss,
    data_term)`` is called at every evaluation; the bar advances by iterations.
    """
    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=n_iter,
                              max_eval=math.ceil(LBFGS_EVALS_PER_ITER * n_iter) + 1,
                              history_size=history, tolerance_grad=0.0, tolerance_change=0.0,
                              line_search_fn="strong_wolfe")
    state = lbfgs.state[params[0]]
    done = [0]

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss, data_term = loss_fn()
        loss.backward()
        it = state.get("n_iter", 0)  # iterations begun so far
        log(it, loss.detach(), data_term.detach())
        bar.update(it - done[0])
        done[0] = it
        return loss

    lbfgs.step(closure)
    bar.update(n_iter - done[0])


def fit_arrays(data: np.ndarray, *, pixel_m: float, config: FitConfig | None = None,
               band_names: tuple[str, ...] | None = None,
               init_shifts_m: np.ndarray | None = None) -> FitResult:
    """Fit the splat scene and the per-observation shifts to a stack held in memory.

    Parameters
    ----------
    data
        (T, B, H, W) reflectance, NaN where invalid.
    pixel_m
        Pixel size of ``data`` in metres.
    config
        Solver settings; defaults to :class:`FitConfig()`.
    band_names
        Names of the B bands (default ``band1`` ...).
    init_shifts_m
        (T, 2) starting shifts ``(dx_m, dy_m)``; default zeros.

    Returns
    -------
    FitResult
    """
    cfg = config or FitConfig()
    cfg.validate()
    data = check_stack_array(data)
    T, B, H, W = data.shape
    valid = np.isfinite(data)
    if not valid.any():
        raise StackError("no valid pixels: every value in the stack is NaN")
    per_obs = valid.reshape(T, -1).any(axis=1)
    if per_obs.sum() < MIN_OBSERVATIONS:
        raise StackError(f"only {int(per_obs.sum())} observation(s) have valid pixels; "
                         f"at least {MIN_OBSERVATIONS} are needed")
    band_names = tuple(band_names or (f"band{i + 1}" for i in range(B)))

    # Per band: centre on the mean of valid pixels and scale by the noise level, so that a
    # fit down to the noise has a data term of ~0.5 per pixel whatever the reflectance scale.
    mean = np.array([data[:, b][valid[:, b]].mean() if valid[:, b].any() else 0.0
                     for b in range(B)])
    scale = np.array([noise_sigma(data[:, b]) for b in range(B)])
    y_np = np.where(valid, (data - mean[None, :, None, None]) / scale[None, :, None, None], 0.0)

    torch.manual_seed(cfg.seed)
    dev = _device(cfg.device)
    dt = torch.float32
    y = torch.from_numpy(y_np.astype(np.float32)).to(dev)
    mask = torch.from_numpy(valid.astype(np.float32)).to(dev)  # (T, B, H, W)
    n_valid = float(valid.sum())

    theta = torch.zeros(T, 2, dtype=dt, device=dev)
    if init_shifts_m is not None:
        init = np.asarray(init_shifts_m, np.float64)
        if init.shape != (T, 2) or not np.isfinite(init).all():
            raise ConfigError(f"initial shifts must be a finite (T={T}, 2) array, "
                              f"got shape {init.shape}")
        theta = torch.from_numpy(init - init.mean(0)).to(dev, dt)
    theta.requires_grad_(cfg.fit_shifts)
    # radiometry: log-gain and offset per (observation, band), mean-zero over observations
    log_gain = torch.zeros(T, B, dtype=dt, device=dev, requires_grad=cfg.radiometry)
    offset = torch.zeros(T, B, dtype=dt, device=dev, requires_grad=cfg.radiometry)
    # robust state: noise level (in units of `scale`), loss scale, observation weights
    state = dict(sigma=1.0, c=float("inf"), obs_w=torch.ones(T, dtype=dt, device=dev))

    spacings = [cfg.splat_spacing_m * 2 ** k for k in range(cfg.coarse_levels, -1, -1)]
    # (Adam steps, L-BFGS iterations) per level: coarse levels get half the budget
    budgets = [(cfg.adam_steps // 2, cfg.lbfgs_iters // 2)] * cfg.coarse_levels + \
        [(cfg.adam_steps, cfg.lbfgs_iters)]
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=sum(a + b for a, b in budgets), disable=not cfg.progress, desc="fit",
               unit="it", leave=False)

    w = grid = None
    for level, (spacing, (n_adam, n_lbfgs)) in enumerate(zip(spacings, budgets)):
        sigma = None if cfg.splat_sigma_m is None else \
            cfg.splat_sigma_m * spacing / cfg.splat_spacing_m
        new_grid = SplatGrid.for_raster(height=H, width=W, pixel_m=pixel_m,
                                        spacing_m=spacing, sigma_m=sigma,
                                        psf_sigma_m=cfg.psf_sigma_m)
        if w is None:
            w0 = torch.from_numpy(_initial_weights(y_np, valid, new_grid)).to(dev, dt)
        else:
            with torch.no_grad():
                w0 = resample_weights(w.detach(), src=grid, dst=new_grid)
        grid = new_grid
        w = w0.contiguous().clone().requires_grad_(True)
        lev_grid = grid

        def residuals() -> torch.Tensor:
            if not bool(torch.isfinite(theta).all()):
                raise ConfigError(_DIVERGED)
            shifts = theta - theta.mean(0)
            pred = render_observations(w, shifts, grid=lev_grid, psf_sigma_m=cfg.psf_sigma_m)
            if cfg.radiometry:
                pred = apply_radiometry(pred, log_gain, offset)
            return (pred - y) * mask  # (T, B, H, W), noise units

        def loss_fn() -> tuple[torch.Tensor, torch.Tensor]:
            r = residuals()
            s = state["sigma"]
            pen = rho(r / s, loss=cfg.loss, scale=state["c"]) * (s * s)
            data_term = (pen * state["obs_w"][:, None, None, None]).sum() / n_valid
            loss = data_term + cfg.tv_weight * s * _tv(w) / n_valid if cfg.tv_weight \
                else data_term
            if not math.isfinite(float(loss.detach())):
                raise ConfigError(_DIVERGED)
            return loss, data_term

        def update_robust(first: bool, weights: bool = True) -> None:
            """Re-estimate the noise level (first level only), loss scale and date weights."""
            with torch.no_grad():
                r = residuals()
                if first and cfg.noise_from_residuals:
                    state["sigma"] = max(float(robust_sigma(r, mask)), MIN_SIGMA)
                if cfg.loss != "l2":
                    state["c"] = cfg.robust_scale
                if cfg.reweight and weights:
                    state["obs_w"] = observation_weights(r, mask)

        def log(stage: str, step: int, loss: torch.Tensor, data_term: torch.Tensor) -> None:
            history.append(dict(level=level, spacing_m=spacing, stage=stage, step=step,
                                loss=float(loss), data_loss=float(data_term),
                                time_s=time.perf_counter() - t0))

        params = [w] + ([theta] if cfg.fit_shifts else []) + \
            ([log_gain, offset] if cfg.radiometry else [])
        if level == 0 and cfg.loss != "l2":
            # the initial (blocky) scene's residuals are far from noise: start with a wide
            # loss scale and narrow it once the scene has formed
            with torch.no_grad():
                state["c"] = max(cfg.robust_scale,
                                 cfg.robust_scale * float(robust_sigma(residuals(), mask)))
        if n_adam:
            opt = torch.optim.Adam([dict(params=[w], lr=cfg.adam_lr)] +
                                   ([dict(params=params[1:], lr=cfg.adam_lr_shifts_m)]
                                    if len(params) > 1 else []))
            for step in range(n_adam):
                if level == 0 and step == n_adam // 2:
                    update_robust(first=True, weights=False)  # narrow the loss early
                opt.zero_grad(set_to_none=True)
                loss, data_term = loss_fn()
                loss.backward()
                opt.step()
                log("adam", step, loss.detach(), data_term.detach())
                bar.update(1)
        update_robust(first=level == 0)
        # the date weights are re-estimated half-way through the last level's L-BFGS (the
        # shifts have converged by then), and L-BFGS restarts for the changed objective
        restart = n_lbfgs // 2 if cfg.reweight and level == len(spacings) - 1 else -1
        for start, stop in _segments(n_lbfgs, restart):
            if start:
                update_robust(first=False)
            _run_lbfgs(params, loss_fn, n_iter=stop - start, history=cfg.lbfgs_history,
                       log=lambda it, loss, data_term, s0=start: log("lbfgs", s0 + it, loss,
                                                                     data_term),
                       bar=bar)
    bar.close()

    with torch.no_grad():
        r = residuals()
        z = (r / state["sigma"]).abs()
        out_frac = ((z > 3 * state["c"]) & (mask > 0)).float().sum((1, 2, 3)) / \
            mask.sum((1, 2, 3)).clamp(min=1)
        shifts = (theta - theta.mean(0)).double().cpu().numpy()
        w_n = w.detach().double().cpu().numpy()
        a_np = log_gain.detach().double().cpu().numpy()
        o_np = offset.detach().double().cpu().numpy()
    # back to reflectance: the offsets scale with the data, the gains are unit-free
    w_n, gains, offs = regauge(w_n, a_np, o_np)
    w_phys = w_n * scale[:, None, None] + mean[:, None, None]
    offs = offs * scale[None] + mean[None] * (1.0 - gains)
    result = FitResult(weights=w_phys.astype(np.float32), shifts_m=shifts, grid=grid,
                       config=cfg, band_names=band_names,
                       residual_rms=np.zeros(T), history=history,
                       seconds=time.perf_counter() - t0,
                       gains=gains if cfg.radiometry else None,
                       offsets=offs if cfg.radiometry else None,
                       obs_weights=state["obs_w"].double().cpu().numpy(),
                       outlier_fraction=out_frac.double().cpu().numpy(),
                       noise_level=state["sigma"] * scale)
    pred = result.predict()
    with np.errstate(invalid="ignore"):
        result.residual_rms = np.sqrt(np.nanmean(((pred - data) ** 2).reshape(T, -1), axis=1))
    return result
