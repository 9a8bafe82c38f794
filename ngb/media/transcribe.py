"""Voice -> text through an OpenAI-compatible ``POST .../audio/transcriptions`` endpoint (hosted
Whisper, Groq, or a whisper server on the LAN): multipart ``file`` + ``model``, bearer key, JSON
``{"text": ...}`` back. ``transcribe_url`` is the API's base (``https://api.openai.com/v1``) or the
full endpoint. Any failure is a ``TranscriptionFailed`` whose text the prompt shows."""

from __future__ import annotations

from pathlib import Path

import httpx

from .limits import MediaLimits, megabytes


class TranscriptionFailed(Exception):
    pass


def endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/audio/transcriptions") else f"{url}/audio/transcriptions"


class Transcriber:
    def __init__(self, limits: MediaLimits) -> None:
        self.limits = limits
        self.done = 0
        self.failed = 0

    @property
    def configured(self) -> bool:
        return bool(self.limits.transcribe_url)

    async def transcribe(self, path: Path, name: str, mime: str) -> str:
        lim = self.limits
        if not lim.transcribe_url:
            raise TranscriptionFailed("no transcription service is set up (transcribe_url)")
        size = path.stat().st_size
        if size > lim.transcribe_max_bytes:
            raise TranscriptionFailed(f"too long to transcribe ({megabytes(size)} > {megabytes(lim.transcribe_max_bytes)})")
        headers = {"Authorization": f"Bearer {lim.transcribe_key}"} if lim.transcribe_key else {}
        try:
            async with httpx.AsyncClient(timeout=lim.transcribe_timeout) as client:
                with path.open("rb") as f:
                    response = await client.post(
                        endpoint(lim.transcribe_url), headers=headers,
                        data={"model": lim.transcribe_model, "response_format": "json"},
                        files={"file": (name, f, mime)},
                    )
        except httpx.HTTPError as exc:
            self.failed += 1
            raise TranscriptionFailed(f"the transcription service did not answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            self.failed += 1
            raise TranscriptionFailed(f"the transcription service answered HTTP {response.status_code}")
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError):
            self.failed += 1
            raise TranscriptionFailed("the transcription service sent no text") from None
        if not isinstance(text, str):
            self.failed += 1
            raise TranscriptionFailed("the transcription service sent no text")
        self.done += 1
        return text.strip()
