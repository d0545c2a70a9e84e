"""``python -m continuum_cli``: the `continuum` command."""

from continuum_cli.main import app

app(prog_name="continuum")
