"""What a file is, from its first bytes: the name and the platform's word are hints at most.

``sniff(head, name)`` returns a mime type; ``kind_of(mime, hint)`` the ``AttachmentKind``. Container
formats whose bytes say only "zip" or "ftyp" are refined by the name's extension among the types
that container really holds (a ``.docx`` is a zip; a ``.exe`` named ``.docx`` is not a zip)."""

from __future__ import annotations

from ..records import AttachmentKind

HEAD_BYTES = 4096  # how much of a file sniffing reads
UNKNOWN = "application/octet-stream"

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"#!AMR", "audio/amr"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"{\\rtf", "application/rtf"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),  # old .doc/.xls/.ppt
)
_EXECUTABLE = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xca\xfe\xba\xbe")
_FTYP = {
    b"heic": "image/heic", b"heix": "image/heic", b"heim": "image/heic", b"heis": "image/heic",
    b"mif1": "image/heif", b"msf1": "image/heif", b"avif": "image/avif",
    b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"qt  ": "video/quicktime",
}
_ZIP_BY_EXT = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "epub": "application/epub+zip",
}
_OLE_BY_EXT = {"doc": "application/msword", "xls": "application/vnd.ms-excel", "ppt": "application/vnd.ms-powerpoint"}
_TEXT_BY_EXT = {
    "csv": "text/csv", "tsv": "text/tab-separated-values", "md": "text/markdown", "json": "application/json",
    "html": "text/html", "htm": "text/html", "xml": "application/xml", "svg": "image/svg+xml",
    "yaml": "application/yaml", "yml": "application/yaml", "ics": "text/calendar", "srt": "application/x-subrip",
}


def _ext(name: str | None) -> str:
    return name.rsplit(".", 1)[-1].lower() if name and "." in name else ""


def is_executable(head: bytes) -> bool:
    return head.startswith(_EXECUTABLE)


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the head
            return False
    return True


def sniff(head: bytes, name: str | None = None) -> str:
    """The mime type of a file whose first bytes are ``head`` (``UNKNOWN`` when none fits)."""
    ext = _ext(name)
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12], UNKNOWN)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP:
            return _FTYP[brand]
        return "audio/mp4" if ext in ("m4a", "aac") else "video/mp4"
    for offset, magic, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if mime == "application/zip":
                return _ZIP_BY_EXT.get(ext, mime)
            if mime == "application/x-ole-storage":
                return _OLE_BY_EXT.get(ext, mime)
            if mime == "video/webm" and ext in ("mkv",):
                return "video/x-matroska"
            return mime
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "audio/mpeg"  # an MPEG audio frame without an ID3 tag
    if is_executable(head):
        return "application/x-executable"
    if _looks_like_text(head):
        if head.lstrip().startswith(b"<svg") or ext == "svg":
            return "image/svg+xml"
        return _TEXT_BY_EXT.get(ext, "text/plain")
    return UNKNOWN


def kind_of(mime: str, hint: AttachmentKind | None = None) -> AttachmentKind:
    """The kind of a sniffed mime type; ``hint`` (the platform's word) only tells voice from audio."""
    top = mime.split("/", 1)[0]
    if mime == "image/svg+xml":  # a document: it is text, and never shown inline
        return AttachmentKind.DOCUMENT
    if top == "image":
        return AttachmentKind.IMAGE
    if top == "audio" or (mime == "video/webm" and hint in (AttachmentKind.VOICE, AttachmentKind.AUDIO)):
        return AttachmentKind.VOICE if hint is AttachmentKind.VOICE else AttachmentKind.AUDIO
    if top == "video":
        return AttachmentKind.VIDEO
    if mime in (UNKNOWN, "application/x-executable"):
        return AttachmentKind.OTHER
    return AttachmentKind.DOCUMENT


def extension_for(mime: str) -> str:
    """A file name extension for a type (for names a platform did not give)."""
    table = {
        "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "image/bmp": "bmp",
        "image/tiff": "tif", "image/heic": "heic", "image/heif": "heif", "image/avif": "avif",
        "audio/ogg": "ogg", "audio/mpeg": "mp3", "audio/wav": "wav", "audio/mp4": "m4a", "audio/flac": "flac",
        "audio/amr": "amr", "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov",
        "application/pdf": "pdf", "text/plain": "txt", "application/zip": "zip",
    }
    table.update({v: k for k, v in _ZIP_BY_EXT.items()})
    table.update({v: k for k, v in _OLE_BY_EXT.items()})
    table.update({v: k for k, v in _TEXT_BY_EXT.items() if k not in ("htm", "yml")})
    return table.get(mime, "bin")
