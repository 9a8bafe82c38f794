"""File names from outside (a platform, an upload, the agent) made safe to show and to write.

A name keeps its letters (any script), digits, spaces and ``._-()+,@=``; path separators, control
characters, quotes and the like become ``_``; it cannot be ``.``/``..`` or start with a dot (no
hidden files, no ``../../x``), and is at most ``MAX_NAME`` bytes of UTF-8 with its extension kept."""

from __future__ import annotations

import unicodedata

from .sniff import extension_for

MAX_NAME = 120
_KEEP = set("._-()+,@= ")


def _ok(ch: str) -> bool:
    if ch in _KEEP:
        return True
    cat = unicodedata.category(ch)
    return cat[0] in ("L", "N") or cat in ("Mn", "Mc")


def safe_name(raw: str | None, mime: str = "", *, fallback: str = "file") -> str:
    """A safe file name for ``raw`` (the platform's name, maybe None); one made from ``fallback`` and
    the type's extension when nothing usable is left."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # only the last part of a path
    name = "".join(ch if _ok(ch) else "_" for ch in name)
    name = " ".join(name.split())  # no runs of spaces, none at the ends
    name = name.lstrip(". _") or ""
    if not name.strip("._- ") or name.strip("_") == "":
        name = f"{fallback}.{extension_for(mime)}" if mime else fallback
    if len(name.encode()) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        if not dot or len(ext) > 10:
            stem, ext = name, ""
        budget = MAX_NAME - (len(ext.encode()) + 1 if ext else 0)
        cut = stem.encode()[:budget].decode("utf-8", "ignore").rstrip()
        name = f"{cut}.{ext}" if ext else cut
    return name
