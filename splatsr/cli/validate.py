"""``splatsr validate``: options -> :func:`splatsr.evaluate.registration.validate_shifts`."""

from __future__ import annotations

import click

from splatsr.cli.group import main


@main.command("validate")
@click.argument("stack_dir", type=click.Path(path_type=str))
@click.argument("shifts_csv", type=click.Path(path_type=str))
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False),
              help="Write the report as JSON here.")
@click.option("--upsample", default=100, show_default=True, type=click.IntRange(min=1),
              help="Phase-correlation precision: 1/UPSAMPLE of a pixel.")
def validate_cmd(stack_dir: str, shifts_csv: str, out: str | None, upsample: int) -> None:
    """Check SHIFTS_CSV (from fit) against independent phase-correlation shift estimates."""
    from splatsr.evaluate.registration import (
        format_table,
        validate_shifts,
        write_validation,
    )

    report = validate_shifts(stack_dir, shifts_csv, upsample_factor=upsample)
    click.echo(format_table(report))
    if out is not None:
        click.echo(f"wrote {write_validation(report, out)}")
