"""The ``spotrun`` command line."""

from spotrun.cli.main import main

__all__ = ["main"]
