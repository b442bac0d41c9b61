"""The ``nightshift`` command line and the one-machine launcher."""

from nightshift.cli import build_parser, main

__all__ = ["build_parser", "main"]
