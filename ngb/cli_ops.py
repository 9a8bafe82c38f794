"""Moved to ngb/cli/ops.py (kept for the tests that import it from here)."""

from .cli.ops import add_ops_commands  # noqa: F401
