"""The `ngb` command line (pyproject: `ngb = "ngb.cli:main"`; `python -m ngb`): the parser and
entry point in main.py, one module per family of commands (groups, tasks, ops, chat), their
shared pieces in support.py. It sits on top: it imports the daemon and the layers below, and
nothing imports it."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
