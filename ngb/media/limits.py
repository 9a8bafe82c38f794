"""The media settings as one record: ngb/config fills it (docs/media.md lists every key)."""

from __future__ import annotations

from typing import Any

import attrs

MB = 1024 * 1024


@attrs.frozen
class MediaLimits:
    max_file_bytes: int = 20 * MB  # one file in (a platform's own limit may be lower)
    max_files: int = 10  # per message; the rest become one note
    group_quota_bytes: int = 1024 * MB  # stored per chat (inbound and sent), inside the retention
    retention_days: int = 30  # files older than this are removed (0: kept for ever)
    download_timeout: float = 60.0  # seconds for one file from a platform
    send_max_bytes: int = 50 * MB  # one file the agent sends
    sends_per_turn: int = 10  # files the agent may send per turn
    images_per_turn: int = 20  # images handed to the model per batch; more are named by path only
    transcribe_url: str | None = None  # OpenAI-compatible base URL (".../v1") or the full endpoint
    transcribe_model: str = "whisper-1"
    transcribe_key: str | None = attrs.field(default=None, repr=False)
    transcribe_timeout: float = 120.0
    transcribe_max_bytes: int = 25 * MB  # what such endpoints take


def megabytes(size: int) -> str:
    """``31 MB``, ``2.5 MB``, ``300 KB``: sizes in notes the user reads."""
    if size >= 10 * MB:
        return f"{size / MB:.0f} MB"
    if size >= MB:
        return f"{size / MB:.1f} MB".replace(".0 MB", " MB")
    return f"{max(1, round(size / 1024))} KB"


def limits_from_config(config: Any) -> MediaLimits:
    """The limits a ``Config`` sets (ngb/config/settings.py, the ``media_*`` and ``transcribe_*`` keys)."""
    quota = config.media_quota_mb * MB if config.media_quota_mb else 1 << 62
    return MediaLimits(
        max_file_bytes=config.media_max_file_mb * MB,
        max_files=config.media_max_files,
        group_quota_bytes=quota,
        retention_days=config.media_retention_days,
        download_timeout=config.media_download_timeout,
        send_max_bytes=config.media_send_max_mb * MB,
        sends_per_turn=config.media_sends_per_turn,
        transcribe_url=config.transcribe_url,
        transcribe_model=config.transcribe_model,
        transcribe_key=config.transcribe_api_key,
        transcribe_timeout=config.transcribe_timeout,
    )
