"""``python -m splatsr``: the same as the ``splatsr`` command."""

from splatsr.cli import main

main(prog_name="splatsr")
