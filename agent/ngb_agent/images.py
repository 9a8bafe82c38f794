"""The images of an ``input`` frame as image blocks of the user turn: each read from the group's
folder (the host prepared it: a supported type, within the API's limits) and base64-encoded. A path
outside the folder, or a file that is gone, is skipped with a line for the host's log."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from .protocol import ImageRef

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def image_blocks(images: list[ImageRef], folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    blocks: list[dict[str, Any]] = []
    problems: list[str] = []
    root = folder.resolve()
    for ref in images:
        path = Path(ref.path)
        try:
            real = path.resolve(strict=True)
            if not real.is_relative_to(root) or not real.is_file():
                problems.append(f"image {ref.path}: not a file of the group folder; skipped")
                continue
            if ref.media_type not in MEDIA_TYPES:
                problems.append(f"image {ref.path}: type {ref.media_type} is not one the model takes; skipped")
                continue
            data = real.read_bytes()
        except OSError as exc:
            problems.append(f"image {ref.path}: {exc}; skipped")
            continue
        if len(data) > MAX_IMAGE_BYTES:
            problems.append(f"image {ref.path}: {len(data)} bytes is over the model's limit; skipped")
            continue
        blocks.append({"type": "image", "source": {"type": "base64", "media_type": ref.media_type,
                                                   "data": base64.b64encode(data).decode("ascii")}})
    return blocks, problems
