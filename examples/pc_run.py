"""A real run on Planetary Computer: fetch a season, fit, validate, report. Needs internet.

Usage (from the repository root; a few minutes on a CPU for the default 2.56 km area)::

    python examples/pc_run.py --out pc-run [--aoi 5.100,52.060,5.137,52.083] \\
        [--start 2025-04-01 --end 2025-10-31] [--psf-sigma 4]

Writes into ``--out``: ``stack/`` (the fetched stack, reused when re-run), ``sr.tif`` (the
2.5 m COG), ``sr.shifts.csv``, ``validate.json`` (the fit's shifts against phase correlation,
the source's table printed too) and ``report/`` (panels, convergence, shifts figures).
The same from the command line::

    splatsr fetch --aoi W,S,E,N --start 2025-04-01 --end 2025-10-31 --out pc-run/stack
    splatsr fit pc-run/stack --out pc-run/sr.tif --init-shifts phasecorr --report pc-run/report
    splatsr validate pc-run/stack pc-run/sr.shifts.csv --out pc-run/validate.json

Not run by the tests (the project is developed offline); no output of it is recorded here.
Setting ``PC_SDK_SUBSCRIPTION_KEY`` raises Planetary Computer's rate limits. Keep the area
small and flat: one global shift per date suits a few kilometres, not a mountain valley.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import splatsr
from splatsr.evaluate.registration import (
    format_table,
    phasecorr_seed,
    phasecorr_shifts,
    shift_from_seed_m,
    validate_shifts,
    write_validation,
)
from splatsr.evaluate.report import write_report
from splatsr.io.fetch import fetch_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--aoi", default="5.100,52.060,5.137,52.083",
                    help="W,S,E,N in degrees (default: a flat 2.5 km patch near Utrecht)")
    ap.add_argument("--start", default="2025-04-01")
    ap.add_argument("--end", default="2025-10-31")
    ap.add_argument("--max-cloud", type=float, default=0.1)
    ap.add_argument("--psf-sigma", type=float, default=splatsr.FitConfig().psf_sigma_m)
    args = ap.parse_args()

    out = Path(args.out)
    root = out / "stack"
    if (root / "stack.json").is_file():
        stack = splatsr.read_stack(root)
        print(f"reusing {root}")
    else:
        stack = fetch_stack(aoi=args.aoi, start=args.start, end=args.end, out_dir=root,
                            max_cloud=args.max_cloud)
    print(f"{len(stack.observations)} observations, {stack.width} x {stack.height} px, "
          f"{stack.crs}")

    data = stack.load()
    pc = phasecorr_shifts(data, pixel_m=stack.pixel_m)  # (T, 2), NaN if not registered
    seed = phasecorr_seed(data, pixel_m=stack.pixel_m)  # NaN rows start at 0
    result = splatsr.fit(stack, init_shifts_m=seed, psf_sigma_m=args.psf_sigma,
                         progress=True)
    cog = result.save(out / "sr.tif", resolution_m=2.5)
    print(f"wrote {cog}; fit {result.seconds:.0f} s; mean shift from the phase-correlation "
          f"seed {shift_from_seed_m(result.shifts_m, seed):.2f} m")

    report = validate_shifts(stack, out / "sr.shifts.csv", pc_shifts_m=pc)
    print(format_table(report))
    write_validation(report, out / "validate.json")
    figs = write_report(result, out / "report", stack_data=data, pc_shifts=pc)
    print("figures:", ", ".join(str(p) for p in figs.values()))


if __name__ == "__main__":
    main()
