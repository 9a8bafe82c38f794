"""Moved to ngb/cli/chat.py (kept for tests/test_core.py, which imports it from here)."""

from .cli.chat import send_and_wait  # noqa: F401
