"""Entry point of the ``splatsr`` command; the command itself is :mod:`splatsr.cli`.

Installed as the module ``splatsr_cli.cli`` (see pyproject.toml) so that it never shadows
another distribution's top-level ``cli`` module; ``python cli.py ...`` also works from a
checkout.
"""

import os

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP): on a
# busy machine spinning threads starve the working ones; a 2-thread fit ran ~30x slower
# (docs/performance.md). An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from splatsr.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
