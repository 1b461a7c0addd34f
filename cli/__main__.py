"""`python -m cli …` runs the `xiezhi` command line (the demo starts its services this way)."""

from cli.main import app

app()
