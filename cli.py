"""Entry point of the ``splatsr`` command; the command itself is :mod:`splatsr.cli`.

Installed as the module ``splatsr_cli.cli`` (see pyproject.toml) so that it never shadows
another distribution's top-level ``cli`` module; ``python cli.py ...`` also works from a
checkout.
"""

import os
import signal
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP): on a
# busy machine spinning threads starve the working ones; a 2-thread fit ran ~30x slower
# (docs/performance.md). An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _spawned() -> bool:
    """True while multiprocessing re-runs the main script in a child it spawned.

    It runs the script as a temporary ``__mp_main__`` module; in the command itself
    ``__mp_main__`` is absent or an alias of ``__main__``.
    """
    mp_main = sys.modules.get("__mp_main__")
    return mp_main is not None and mp_main is not sys.modules.get("__main__")


# A process spawned from the command (a Dask worker of a tiled fit) ignores Ctrl-C, which
# reaches the whole process group: the command handles it and shuts the workers down
# quietly (no traceback from each worker that is still importing).
if _spawned():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> None:
    """Run the ``splatsr`` command; Ctrl-C while it loads exits 130 without a traceback."""
    try:
        from splatsr.cli import main as command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    command(prog_name="splatsr")


if __name__ == "__main__":
    main()
