"""The `xiezhi` command line: one module per role, sharing `cli.common`; assembled in `cli.main`."""
