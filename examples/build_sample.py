"""Rebuild the sample stack bundled in ``splatsr/data/sample`` from the eo-learn test patch.

Source: sentinel-hub/eo-learn @ 303e75855880531d519264f847e7c6b2fb97104d (MIT),
``example_data/TestEOPatch`` + ``REFERENCE_SCENES.npy``. Contains modified Copernicus
Sentinel data. Run from a checkout that has the project's ``../shared/data`` beside it::

    python examples/build_sample.py ../shared/data/eolearn_testeopatch splatsr/data/sample
"""

import json
import sys
from pathlib import Path

import numpy as np
from affine import Affine

from splatsr.io.stack import write_stack

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
ref = np.load(src / "REFERENCE_SCENES.npy")  # (5, 101, 100, 13) reflectance, L1C
stamps = json.loads((src / "TestEOPatch" / "timestamps.json").read_text())
clear = [2, 3, 4]  # k = 2, 3, 4 are the clear scenes; k <-> timestamp index (2, 1, 4, 3, 0)[k]
bands = ["B02", "B03", "B04", "B08"]
data = ref[clear][..., [1, 2, 3, 7]].transpose(0, 3, 1, 2)  # (3, 4, 101, 100)
# The patch's bbox is 999.48 x 1009.74 m for 100 x 101 px (~9.995 m, resampled by Sentinel
# Hub); we declare an exact 10 m grid anchored at its upper-left corner (error <= 0.5 m).
transform = Affine(10.0, 0, 465181.05, 0, -10.0, 5080254.63)
write_stack(dst, data, crs="EPSG:32633", transform=transform, bands=bands,
            ids=[f"eolearn_{stamps[(2, 1, 4, 3, 0)[k]][:10]}" for k in clear],
            datetimes=[stamps[(2, 1, 4, 3, 0)[k]] + "Z" for k in clear],
            source="eo-learn TestEOPatch REFERENCE_SCENES (MIT); contains modified Copernicus "
                   "Sentinel data; Sentinel-2 L1C top-of-atmosphere reflectance",
            note="grid declared as exact 10 m at the patch's upper-left corner")
print("wrote", dst)
