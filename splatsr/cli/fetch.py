"""``splatsr fetch``: options -> :func:`splatsr.io.fetch.fetch_stack`."""

from __future__ import annotations

from typing import Any

import click

from splatsr.cli.group import main
from splatsr.cli.options import (
    progress_option,
    query_options,
    show_progress,
    stac_query,
)


@main.command("fetch")
@query_options(required=True)
@progress_option("Progress bar")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Stack directory to write (re-running resumes).")
def fetch_cmd(progress: bool | None, out_dir: str, **opts: Any) -> None:
    """Fetch a cloud-screened Sentinel-2 L2A stack (one tile, native 10 m grid)."""
    from splatsr.io.fetch import fetch_stack

    stack = fetch_stack(**stac_query(opts), out_dir=out_dir, progress=show_progress(progress))
    click.echo(f"wrote {len(stack.observations)} observations of tile "
               f"{stack.meta.get('tile')} ({stack.crs}, {stack.width}x{stack.height} px at "
               f"{stack.pixel_m:g} m) to {stack.root}; {len(stack.meta.get('dropped', []))} "
               "scenes dropped (reasons in stack.json)")
