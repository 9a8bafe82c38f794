"""An image as the model takes it: PNG, JPEG, GIF or WebP, at most ``MAX_EDGE`` pixels on its long
side and ``MAX_BYTES`` encoded (the Messages API refuses larger ones and scales anything past
~1.15 megapixels down anyway, so sending more only costs upload time and tokens).

A file over ``PASS_THROUGH_BYTES`` is re-encoded (JPEG, or PNG where it has transparency), since a
session resends its images with every request. A GIF gives its first frame; WebP, BMP and TIFF are converted; a HEIC/HEIF photo is converted when
the pillow-heif plugin is installed and refused with a note otherwise; a file Pillow cannot read
(corrupt, truncated, a decompression bomb) is refused with a note. Runs in a worker thread."""

from __future__ import annotations

import io
from pathlib import Path

import attrs

MAX_EDGE = 1568  # the long side the API recommends; larger images are scaled down there anyway
MAX_PIXELS = 60_000_000  # past this Pillow's decompression-bomb guard refuses the file
MAX_BYTES = 5 * 1024 * 1024  # the API's limit per image (base64 adds a third on the wire)
# An image is sent as it is only up to this size; a larger one is re-encoded. The session resends
# every image with each request, which the model proxy bounds (model_max_body_bytes, 8 MB).
PASS_THROUGH_BYTES = 1024 * 1024
PASS_THROUGH = frozenset({"image/png", "image/jpeg", "image/webp"})


class ImageProblem(Exception):
    """Why an image cannot be shown to the model (the prompt says so instead)."""


@attrs.frozen
class ModelImage:
    data: bytes
    media_type: str
    width: int
    height: int


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def prepare_image(path: Path, mime: str) -> ModelImage:
    """The model's version of the image at ``path`` (sniffed as ``mime``); ImageProblem when none."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    if mime in ("image/heic", "image/heif", "image/avif") and not _register_heif():
        raise ImageProblem(f"{mime.split('/')[1].upper()} photos are not supported here (send it as JPEG or PNG)")
    try:
        with Image.open(path) as img:
            img.seek(0)  # an animation: its first frame
            width, height = img.size
            fits = max(width, height) <= MAX_EDGE
            small = path.stat().st_size <= PASS_THROUGH_BYTES
            if mime in PASS_THROUGH and fits and small and not getattr(img, "is_animated", False):
                img.verify()  # a truncated or corrupt file fails here, not at the API
                return ModelImage(path.read_bytes(), mime, width, height)
            frame = ImageOps.exif_transpose(img.copy()) or img.copy()
    except Image.DecompressionBombError:
        raise ImageProblem("the image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"the image cannot be read ({type(exc).__name__})") from None
    frame.thumbnail((MAX_EDGE, MAX_EDGE))
    alpha = frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info)
    out = io.BytesIO()
    if alpha:
        frame.convert("RGBA").save(out, "PNG", optimize=True)
        media_type = "image/png"
    else:
        frame.convert("RGB").save(out, "JPEG", quality=82)
        media_type = "image/jpeg"
    data = out.getvalue()
    if len(data) > MAX_BYTES:  # a huge-entropy PNG: JPEG it
        out = io.BytesIO()
        frame.convert("RGB").save(out, "JPEG", quality=75)
        data, media_type = out.getvalue(), "image/jpeg"
    return ModelImage(data, media_type, frame.width, frame.height)
