"""The ``splatsr`` command: a thin layer that converts options and calls one library function."""

from splatsr.cli.app import main

__all__ = ["main"]
