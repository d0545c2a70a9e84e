"""The `continuum` command (typer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Continuum: run, seed and inspect the suite.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo("continuum 0.1.0")
