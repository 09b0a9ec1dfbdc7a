"""What every benchmark shares: where the data and results live, and the machine record.

Benchmarks run as scripts (``python benchmarks/<name>.py``), so this folder is on ``sys.path``
and they import this module as ``_common``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
RESULTS = ROOT / "benchmarks" / "results"
TEXTURE_384 = ROOT / "benchmarks" / "data" / "s2_green_384.npz"  # one 384 px green band
TEXTURE_CROPS = ROOT / "tests" / "data" / "s2_green_crops.npy"  # three 256 px crops (DN)
# larger open data sets, outside the repository (see benchmarks/data/README.md)
SHARED = Path(os.environ.get("SPLATSR_SHARED_DATA", ROOT.parent / "shared" / "data"))
AROSICS = SHARED / "arosics_s2_coreg" / "ref_S2A_20160608T153121_T33UUU_sub.jp2"
EOLEARN = SHARED / "eolearn_testeopatch"


def git(*args: str) -> str:
    """Output of ``git ARGS`` in the repository ("unknown" when git is not available)."""
    try:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return run.stdout.strip()


def machine() -> dict[str, str]:
    """Date (UTC), machine, CPUs, torch and its threads, GPU, commit, for the record.

    ``dirty`` is "yes" when tracked files have uncommitted changes.
    """
    import torch

    info = dict(date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                uname=" ".join(platform.uname()), nproc=str(os.cpu_count()),
                torch=torch.__version__, threads=str(torch.get_num_threads()),
                commit=git("rev-parse", "HEAD"),
                dirty="yes" if git("status", "--porcelain", "--untracked-files=no") else "no")
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
