"""What an agent image build tells its user: `ImageBuildError` (one line saying what to do) and
condensed progress lines (`Ticker`: at most one line every few seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class ImageBuildError(RuntimeError):
    """The agent image could not be found or built; the message (one line) says what to do."""


def build_failed(progress: Callable[[str], None], tail: Iterable[str], message: str) -> ImageBuildError:
    """Show the last lines of the failed step's output (`tail`) and make the error to raise."""
    for line in tail:
        progress("      | " + line)
    return ImageBuildError(message)


def fmt_secs(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def megabytes(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


class Ticker:
    """Emits condensed progress: at most one line per ``interval`` seconds unless forced."""

    def __init__(self, progress: Callable[[str], None], interval: float = 5.0, indent: str = "      "):
        self.progress = progress
        self.interval = interval
        self.indent = indent
        self._last = 0.0
        self._last_text = ""

    def __call__(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if text == self._last_text:
            return
        if force or now - self._last >= self.interval:
            self._last, self._last_text = now, text
            self.progress(self.indent + text)
